// Device helpers for runtime/'s torch files (include only from files that include torch).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <c10/core/Device.h>

#include "common/result.h"

namespace outpost::runtime {

// "cpu", "cuda", "cuda:N" as a c10::Device; CUDA is refused in builds without OUTPOST_CUDA.
Result<c10::Device> parse_device(const std::string& device);

// One execution instance's stream: on CUDA its own stream from the pool, made current around
// each execution and waited for before results leave; on the CPU nothing.
class InstanceStream {
 public:
  explicit InstanceStream(const c10::Device& device);
  ~InstanceStream();
  InstanceStream(const InstanceStream&) = delete;
  InstanceStream& operator=(const InstanceStream&) = delete;

  void run(const std::function<void()>& body);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::runtime
