// liboutpost_cuda.so: the CudaBackend over libtorch's CUDA half (c10_cuda, torch_cuda). Opening
// this module loads libtorch_cuda, whose static initialisers register CUDA with the dispatcher,
// so that tensors, TorchScript modules and AOTInductor packages can then move to CUDA devices.
#include <exception>
#include <optional>
#include <string>

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "runtime/cuda_backend.h"
#include <cuda_runtime_api.h>

namespace outpost::runtime {
namespace {

class TorchCudaStream final : public CudaStream {
 public:
  explicit TorchCudaStream(int64_t index)
      : stream_(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(index))) {}

  void run(const std::function<void()>& body) override {
    const c10::cuda::CUDAStreamGuard guard(stream_);
    body();
    stream_.synchronize();
  }

 private:
  c10::cuda::CUDAStream stream_;
};

class TorchCudaBackend final : public CudaBackend {
 public:
  int64_t device_count() override { return c10::cuda::device_count(); }

  std::string unavailable_reason() override {
    int count = 0;
    const cudaError_t error = cudaGetDeviceCount(&count);
    if (error == cudaSuccess) return count == 0 ? "the driver reports no CUDA device" : "";
    (void)cudaGetLastError();  // clear the sticky error for later calls
    return std::string("CUDA driver: ") + cudaGetErrorString(error);
  }

  std::string device_name(int64_t index) override {
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, static_cast<int>(index)) != cudaSuccess) return "";
    return properties.name;
  }

  int64_t compute_capability(int64_t index) override {
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, static_cast<int>(index)) != cudaSuccess) return 0;
    return properties.major * 10 + properties.minor;
  }

  Status set_memory_fraction(double fraction, int64_t index) override {
    try {
      c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction,
                                                         static_cast<c10::DeviceIndex>(index));
    } catch (const std::exception& e) {
      return internal_error(std::string("capping the CUDA allocator: ") + e.what());
    }
    return {};
  }

  CudaMemory memory(int64_t index) override {
    CudaMemory memory;
    const auto device = static_cast<c10::DeviceIndex>(index);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
    memory.allocated = static_cast<uint64_t>(stats.allocated_bytes[0].current);
    memory.reserved = static_cast<uint64_t>(stats.reserved_bytes[0].current);
    const c10::cuda::CUDAGuard guard(device);
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      memory.free = free_bytes;
      memory.total = total_bytes;
    }
    return memory;
  }

  void empty_cache() override { c10::cuda::CUDACachingAllocator::emptyCache(); }

  std::unique_ptr<CudaStream> make_stream(int64_t index) override {
    return std::make_unique<TorchCudaStream>(index);
  }
};

}  // namespace
}  // namespace outpost::runtime

extern "C" __attribute__((visibility("default"))) outpost::runtime::CudaBackend*
outpost_cuda_backend() {
  static outpost::runtime::TorchCudaBackend backend;
  return &backend;
}
