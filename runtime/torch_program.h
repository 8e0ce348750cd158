// What one model instance executes, whatever the package's format: named methods with
// TorchScript schemas, called with IValues. torchscript_loader.cc wraps a TorchScript module;
// aoti_program.cc an AOTInductor package, whose one method gets a schema made from the package's
// call spec. Internal to runtime/'s torch files (see runtime/README.md).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/core/function_schema.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include "common/result.h"
#include "protocol/model_config.h"

namespace outpost::runtime {

using namespace protocol;  // as in model.h

class TorchProgram {
 public:
  virtual ~TorchProgram() = default;
  // Every method by name; each schema's first argument is `self`, as in TorchScript.
  virtual std::map<std::string, c10::FunctionSchema> schemas() const = 0;
  // Runs a method with inputs already on the program's device. Throws what the model raised.
  virtual c10::IValue call(const std::string& method, std::vector<c10::IValue> args) = 0;
  // The tensors that hold the program's weights (for measuring them and checking their release).
  virtual std::vector<at::Tensor> weights() const = 0;
};

// The method an AOTInductor package's model is called by (its forward).
inline constexpr const char* kAotiMethod = "predict";

// Opens the AOTInductor package at `path` (config.yaml's checkpoints.file) for `device`.
// Refuses, saying so, a package compiled for another device type, CPU, machine or GPU
// architecture than this worker's, and a call spec outpost cannot serve. When config.yaml
// batches its method, a batch smaller than the compiled model's smallest (PyTorch compiles
// guards from 2 rows for some exports) is padded with copies of its last row, whose outputs
// are dropped: batched rows are independent.
Result<std::unique_ptr<TorchProgram>> open_aoti_program(const std::string& path,
                                                        const ModelConfig& config,
                                                        const c10::Device& device);

}  // namespace outpost::runtime
