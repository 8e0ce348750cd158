// The ModelLoaders over libtorch (docs/models.md), one per checkpoints.type:
//   torchscript  a `torch.jit.script`/`trace` + `save` archive: every exported method, with the
//                generate (NAME_init + NAME_step) and stream (NAME + NAME_init with a `state`
//                parameter) contracts;
//   aoti         an AOTInductor package (`torch.export.export` +
//                `torch._inductor.aoti_compile_and_package`): its model as the method `predict`,
//                with parameters and result from the package's call spec.
// Both load the file once per instance (never cloned), check config.yaml against the
// signatures, warm every instance up, and measure the weights; batching, generate and stream
// run the same way for both. Torch-free header; torch_loader.cc and aoti_program.cc are among
// the few files that include torch.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "runtime/model.h"

namespace outpost::runtime {

std::unique_ptr<ModelLoader> make_torchscript_loader();
std::unique_ptr<ModelLoader> make_aoti_loader();
// Every loader above.
std::vector<std::unique_ptr<ModelLoader>> make_loaders();
// The loader for a checkpoints.type, or null.
std::unique_ptr<ModelLoader> make_loader(std::string_view type);

}  // namespace outpost::runtime
