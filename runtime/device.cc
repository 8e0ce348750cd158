#include "runtime/device.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <utility>

#include <ATen/Parallel.h>

#include "common/log.h"
#include "runtime/cuda_backend.h"
#include "runtime/torch_device.h"
#include <dlfcn.h>
#include <malloc.h>
#include <sched.h>
#include <unistd.h>

namespace outpost::runtime {

bool cuda_built() {
#ifdef OUTPOST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int64_t usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? online : 1;
}

uint64_t process_rss_bytes() {
  FILE* file = std::fopen("/proc/self/statm", "r");
  if (file == nullptr) return 0;
  unsigned long long size = 0;
  unsigned long long resident = 0;
  const int read = std::fscanf(file, "%llu %llu", &size, &resident);
  std::fclose(file);
  if (read != 2) return 0;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

Result<c10::Device> parse_device(const std::string& device) {
  if (device == "cpu") return c10::Device(c10::kCPU);
  if (device.rfind("cuda", 0) != 0) return invalid_argument("unknown device \"" + device + "\"");
  const auto colon = device.find(':');
  const int64_t index = colon == std::string::npos ? 0 : std::stoll(device.substr(colon + 1));
  OUTPOST_ASSIGN_OR_RETURN(auto* cuda, cuda_backend());
  const int64_t count = cuda->device_count();
  if (index >= count) {
    std::string why = cuda->unavailable_reason();
    return unavailable("device " + device + " does not exist (" + std::to_string(count) +
                       " CUDA devices visible" + (why.empty() ? "" : "; " + why) + ")");
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

namespace {

// OpenBLAS, which a libtorch built against it calls for linear layers (Debian's did; PyPI's uses
// MKL, and this then finds nothing to limit), keeps a thread pool of its own
// (a thread per core) beside libtorch's, and its idle threads wait by spinning on
// sched_yield. In a worker those spins take the CPU that its I/O threads need: with one BLAS
// thread, scripts/bench runtime's small model at concurrency 32 went from 14-18 k to 24-28 k
// requests/s on 2 cores. Parallelism comes from batching and libtorch's own threads.
// OPENBLAS_NUM_THREADS, when set, still decides; other BLAS libraries are left alone.
void limit_blas_threads() {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) return;
  using SetThreads = void (*)(int);
  auto* set = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set == nullptr) return;
  set(1);
  LOG_DEBUG("worker.blas_threads",
            "OpenBLAS limited to 1 thread (set OPENBLAS_NUM_THREADS to choose otherwise)");
}

}  // namespace

Status configure_process(const WorkerSpec& spec) {
  const int64_t intra = spec.intra_op_threads > 0 ? spec.intra_op_threads : usable_cpus();
  try {
    at::set_num_interop_threads(static_cast<int>(spec.inter_op_threads));
    at::set_num_threads(static_cast<int>(intra));
  } catch (const std::exception& e) {
    return internal_error(std::string("setting torch threads: ") + e.what());
  }
  limit_blas_threads();
  OUTPOST_ASSIGN_OR_RETURN(const auto device, parse_device(spec.device));
  if (device.is_cuda()) {
    OUTPOST_ASSIGN_OR_RETURN(auto* cuda, cuda_backend());
    LOG_INFO("worker.device", spec.device << " is " << cuda->device_name(device.index()));
    if (spec.slice.mode == "fraction") {
      OUTPOST_RETURN_IF_ERROR(cuda->set_memory_fraction(spec.slice.fraction, device.index()));
      LOG_INFO("worker.slice",
               "caching allocator capped at " << spec.slice.fraction << " of " << spec.device);
    }
  }
  return {};
}

namespace {

// The CUDA backend when `device_name` is a usable CUDA device, and its index.
std::optional<std::pair<CudaBackend*, int64_t>> cuda_device(const std::string& device_name) {
  if (device_name.rfind("cuda", 0) != 0) return std::nullopt;
  const auto device = parse_device(device_name);
  if (!device.ok() || !device->is_cuda()) return std::nullopt;
  return std::make_pair(*cuda_backend(), static_cast<int64_t>(device->index()));
}

}  // namespace

DeviceMemory device_memory(const std::string& device_name) {
  DeviceMemory memory;
  if (const auto cuda = cuda_device(device_name)) {
    const CudaMemory figures = cuda->first->memory(cuda->second);
    memory.allocated = figures.allocated;
    memory.reserved = figures.reserved;
    memory.total = figures.total;
  }
  return memory;
}

void release_cached_memory(const std::string& device_name) {
  if (const auto cuda = cuda_device(device_name)) cuda->first->empty_cache();
  malloc_trim(0);
}

nlohmann::json device_json(const WorkerSpec& spec) {
  const auto memory = device_memory(spec.device);
  nlohmann::json out{{"device", spec.device},
                     {"slice", spec.slice.mode},
                     {"cuda_built", cuda_built()},
                     {"intra_op_threads", at::get_num_threads()},
                     {"inter_op_threads", at::get_num_interop_threads()}};
  if (spec.is_cuda()) {
    if (const auto cuda = cuda_device(spec.device))
      out["name"] = cuda->first->device_name(cuda->second);
    out["allocated_bytes"] = memory.allocated;
    out["reserved_bytes"] = memory.reserved;
    out["total_bytes"] = memory.total;
  }
  return out;
}

struct InstanceStream::Impl {
  std::unique_ptr<CudaStream> stream;
};

InstanceStream::InstanceStream(const c10::Device& device) : impl_(std::make_unique<Impl>()) {
  if (!device.is_cuda()) return;
  if (auto cuda = cuda_backend(); cuda.ok()) impl_->stream = (*cuda)->make_stream(device.index());
}

InstanceStream::~InstanceStream() = default;

void InstanceStream::run(const std::function<void()>& body) {
  if (impl_->stream) {
    impl_->stream->run(body);
    return;
  }
  body();
}

}  // namespace outpost::runtime
