#include "runtime/cuda_backend.h"

#include <mutex>
#include <string>

#include "common/log.h"
#include "common/worker_binary.h"
#include <dlfcn.h>

namespace outpost::runtime {
namespace {

Result<CudaBackend*> open_module() {
#ifndef OUTPOST_WITH_CUDA
  return Error(ErrorCode::kFailedPrecondition,
               "this outpost-worker was built without its CUDA module (configure with "
               "-DOUTPOST_CUDA=ON against a CUDA libtorch)");
#else
  const std::string path = beside_self("liboutpost_cuda.so");
  // RTLD_GLOBAL: libtorch_cuda, loaded with the module, registers CUDA with libtorch's
  // dispatcher and AOTInductor's runners for the whole process.
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    return unavailable("CUDA is not usable on this host: opening " + path +
                       " failed: " + (why != nullptr ? why : "unknown error") +
                       " (the CUDA libraries libtorch_cuda needs must be installed)");
  }
  auto* entry = reinterpret_cast<CudaBackendEntry>(::dlsym(handle, kCudaBackendSymbol));
  if (entry == nullptr) return internal_error(path + " has no " + kCudaBackendSymbol);
  LOG_INFO("worker.cuda", "CUDA module loaded from " << path);
  return entry();
#endif
}

}  // namespace

Result<CudaBackend*> cuda_backend() {
  static std::once_flag once;
  static Result<CudaBackend*> backend = Error(ErrorCode::kInternal, "not opened");
  std::call_once(once, [] { backend = open_module(); });
  return backend;
}

}  // namespace outpost::runtime
