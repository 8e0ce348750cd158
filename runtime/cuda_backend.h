// The worker's CUDA half, behind a torch-free interface (runtime/README.md, "CUDA"). It is built
// as its own shared module, liboutpost_cuda.so, beside outpost-worker, and opened only when a
// worker's spec names a CUDA device: outpost-worker itself links libtorch's CPU half alone, so
// the same binary starts on hosts that have no GPU and no CUDA libraries.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/result.h"

namespace outpost::runtime {

struct CudaMemory {
  uint64_t allocated = 0;  // bytes held by tensors (caching allocator)
  uint64_t reserved = 0;   // bytes the caching allocator holds from the driver
  uint64_t free = 0;       // free device memory (cudaMemGetInfo)
  uint64_t total = 0;      // device memory
};

// One execution instance's CUDA stream: made current around each execution and waited for
// before results leave.
class CudaStream {
 public:
  virtual ~CudaStream() = default;
  virtual void run(const std::function<void()>& body) = 0;
};

class CudaBackend {
 public:
  virtual ~CudaBackend() = default;
  // Devices this process sees (0 where the driver or a GPU is missing).
  virtual int64_t device_count() = 0;
  // Why device_count() is 0, when the driver said (empty otherwise).
  virtual std::string unavailable_reason() = 0;
  virtual std::string device_name(int64_t index) = 0;
  // major * 10 + minor (90 for Hopper); 0 when unknown.
  virtual int64_t compute_capability(int64_t index) = 0;
  // Caps the caching allocator of `index` at `fraction` of its memory (`fraction` slices).
  virtual Status set_memory_fraction(double fraction, int64_t index) = 0;
  virtual CudaMemory memory(int64_t index) = 0;
  // Returns cached, unused blocks to the driver.
  virtual void empty_cache() = 0;
  virtual std::unique_ptr<CudaStream> make_stream(int64_t index) = 0;
};

// The module's one exported symbol (extern "C", so dlsym finds it by this name).
inline constexpr const char* kCudaBackendSymbol = "outpost_cuda_backend";
using CudaBackendEntry = CudaBackend* (*)();

// The CUDA backend of this process, opening liboutpost_cuda.so (from the folder that holds the
// running outpost-worker) on first use. Errors say why: not built with CUDA, module missing, or
// the CUDA libraries it needs absent on this host (with the loader's own message).
Result<CudaBackend*> cuda_backend();

}  // namespace outpost::runtime
