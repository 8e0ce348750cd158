// The TorchScript ModelLoader (docs/models.md): loads a `torch.jit.script`/`trace` + `save`
// file once per instance (never cloned), reads the TorchScript schema of every exported
// method, resolves the generate (NAME_init + NAME_step) and stream (NAME + NAME_init with a
// `state` parameter) contracts, checks config.yaml against the signatures, warms every
// instance up, and measures the weights. Torch-free header; torchscript_loader.cc is one of the
// few files that include torch.
#pragma once

#include <memory>

#include "runtime/model.h"

namespace outpost::runtime {

std::unique_ptr<ModelLoader> make_torchscript_loader();

}  // namespace outpost::runtime
