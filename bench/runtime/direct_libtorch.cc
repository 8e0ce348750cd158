#include "bench/runtime/direct_libtorch.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <utility>

#include <ATen/Parallel.h>
#include <ATen/core/ivalue.h>  // before ops/ and jit/: under clang they need IValue complete
#include <ATen/ops/argmax.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/cuda.h>

#include <sched.h>

namespace outpost::bench {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration;

constexpr int kWarmUpCalls = 3;

double seconds_since(Clock::time_point start) {
  return duration<double>(Clock::now() - start).count();
}

}  // namespace

int bench_threads() {
  if (const char* value = std::getenv("OUTPOST_BENCH_THREADS")) {
    return std::max(1, std::atoi(value));
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof(set), &set);
  return CPU_COUNT(&set);
}

void set_torch_threads(int intra_op) {
  at::set_num_interop_threads(1);
  at::set_num_threads(intra_op);
}

struct DirectModel::Impl {
  c10::Device device = c10::Device(c10::kCPU);
  torch::jit::Module module;
  // An AOTInductor package (model.pt2) instead: its one function, called with flat tensors.
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package;

  // `method` of the module, or the package's function, on one tensor from host memory. On a
  // GPU, as a server must: the input copied to the device, and the call waited for.
  std::function<void(const at::Tensor&)> callable(const std::string& method) {
    std::function<void(const at::Tensor&)> call;
    if (package) {
      call = [this](const at::Tensor& x) { package->run({x}); };
    } else {
      auto bound = module.get_method(method);
      call = [bound](const at::Tensor& x) mutable { bound({x}); };
    }
    if (device.is_cpu()) return call;
    return [this, call](const at::Tensor& x) {
      call(x.to(device, /*non_blocking=*/true));
      torch::cuda::synchronize(device.index());
    };
  }
  // A host input for `callable`: pinned on a GPU host.
  at::Tensor host_input(const std::vector<int64_t>& shape) const {
    at::Tensor input = at::randn(shape);
    return device.is_cpu() ? input : input.pin_memory();
  }
};

DirectModel::DirectModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DirectModel::~DirectModel() = default;

Result<std::unique_ptr<DirectModel>> DirectModel::load(const std::string& package_dir,
                                                       const std::string& device) {
  auto impl = std::make_unique<Impl>();
  try {
    impl->device = c10::Device(device);
  } catch (const std::exception& e) {
    return invalid_argument("bad device " + device + ": " + e.what());
  }
  if (std::filesystem::exists(package_dir + "/model.pt2")) {
    try {
      impl->package = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          package_dir + "/model.pt2", "model", false, 1,
          impl->device.is_cuda() ? impl->device.index() : c10::DeviceIndex(-1));
    } catch (const std::exception& e) {
      return invalid_argument("cannot load " + package_dir + "/model.pt2: " + e.what());
    }
    return std::unique_ptr<DirectModel>(new DirectModel(std::move(impl)));
  }
  try {
    c10::InferenceMode guard;
    impl->module = torch::jit::load(package_dir + "/model.pt", impl->device);
    // As the worker loads it: inference mode for batch norm and dropout.
    impl->module.eval();
  } catch (const std::exception& e) {
    return invalid_argument("cannot load " + package_dir + "/model.pt: " + e.what());
  }
  return std::unique_ptr<DirectModel>(new DirectModel(std::move(impl)));
}

double DirectModel::rows_per_second(const std::string& method, const std::vector<int64_t>& shape,
                                    double seconds) {
  c10::InferenceMode guard;
  auto callable = impl_->callable(method);
  const at::Tensor input = impl_->host_input(shape);
  for (int i = 0; i < kWarmUpCalls; ++i) callable(input);
  int64_t calls = 0;
  const auto start = Clock::now();
  while (seconds_since(start) < seconds) {
    callable(input);
    ++calls;
  }
  return static_cast<double>(calls * shape[0]) / seconds_since(start);
}

std::vector<double> DirectModel::call_latencies_us(const std::string& method,
                                                   const std::vector<int64_t>& shape, int calls) {
  c10::InferenceMode guard;
  auto callable = impl_->callable(method);
  const at::Tensor input = impl_->host_input(shape);
  for (int i = 0; i < kWarmUpCalls; ++i) callable(input);
  std::vector<double> micros;
  micros.reserve(static_cast<size_t>(std::max(calls, 0)));
  for (int i = 0; i < calls; ++i) {
    const auto start = Clock::now();
    callable(input);
    micros.push_back(duration<double, std::micro>(Clock::now() - start).count());
  }
  return micros;
}

GenerateFigures DirectModel::generate(const std::string& prompt, int64_t max_tokens, int runs) {
  c10::InferenceMode guard;
  auto init = impl_->module.get_method("generate_init");
  auto step = impl_->module.get_method("generate_step");
  std::vector<double> ttft;
  double chunks = 0;
  double rest_seconds = 0;
  for (int run = -2; run < runs; ++run) {
    const auto start = Clock::now();
    c10::IValue state = init({prompt, max_tokens});
    Clock::time_point first;
    int64_t emitted = 0;
    bool done = false;
    while (!done) {
      const auto result = step({state});
      const auto& elements = result.toTupleRef().elements();
      // The chunk as the worker would send it: a string per call.
      const std::string chunk = elements[0].toListRef()[0].toStringRef();
      if (emitted++ == 0) first = Clock::now();
      state = elements[1];
      done = elements[2].toListRef()[0].toBool();
      // A broken example model, not a measurement: stop loudly.
      if (chunk.empty()) std::abort();
    }
    if (run < 0) continue;
    ttft.push_back(duration<double, std::micro>(first - start).count());
    chunks += static_cast<double>(emitted - 1);
    rest_seconds += seconds_since(first);
  }
  if (ttft.empty()) return {};
  std::sort(ttft.begin(), ttft.end());
  return {ttft[ttft.size() / 2], rest_seconds > 0 ? chunks / rest_seconds : 0};
}

struct DirectDecoder::Impl {
  torch::jit::Module module;
  DecoderGeometry geometry;
  at::Tensor k_cache;
  at::Tensor v_cache;

  at::Tensor tokens_tensor(const std::vector<int64_t>& values) {
    return at::tensor(values, at::TensorOptions().dtype(at::kLong));
  }
  // Prefills `prompt` into `slot`; the first token.
  int64_t prefill(const std::vector<int64_t>& prompt, int64_t slot) {
    auto method = module.get_method("generate_prefill");
    at::Tensor logits;
    const auto size = static_cast<int64_t>(prompt.size());
    for (int64_t begin = 0; begin < size; begin += geometry.prefill_chunk) {
      const int64_t end = std::min(size, begin + geometry.prefill_chunk);
      std::vector<int64_t> chunk(prompt.begin() + begin, prompt.begin() + end);
      logits = method({tokens_tensor(chunk), begin, slot, k_cache, v_cache}).toTensor();
    }
    return logits.argmax().item<int64_t>();
  }
};

DirectDecoder::DirectDecoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DirectDecoder::~DirectDecoder() = default;

Result<std::unique_ptr<DirectDecoder>> DirectDecoder::load(const std::string& package_dir,
                                                           const DecoderGeometry& geometry) {
  auto impl = std::make_unique<Impl>();
  impl->geometry = geometry;
  try {
    c10::InferenceMode guard;
    impl->module = torch::jit::load(package_dir + "/model.pt");
    impl->module.eval();
    const std::vector<int64_t> shape = {geometry.layers, geometry.slots, geometry.max_context,
                                        geometry.kv_heads, geometry.head_dim};
    impl->k_cache = at::zeros(shape);
    impl->v_cache = at::zeros(shape);
  } catch (const std::exception& e) {
    return invalid_argument("cannot load " + package_dir + "/model.pt: " + e.what());
  }
  return std::unique_ptr<DirectDecoder>(new DirectDecoder(std::move(impl)));
}

std::vector<double> DirectDecoder::prefill_us(const std::vector<int64_t>& prompt, int runs) {
  c10::InferenceMode guard;
  for (int i = 0; i < kWarmUpCalls; ++i) impl_->prefill(prompt, 0);
  std::vector<double> micros;
  micros.reserve(static_cast<size_t>(std::max(runs, 0)));
  for (int i = 0; i < runs; ++i) {
    const auto start = Clock::now();
    impl_->prefill(prompt, 0);
    micros.push_back(duration<double, std::micro>(Clock::now() - start).count());
  }
  return micros;
}

double DirectDecoder::tokens_per_s(int64_t n, const std::vector<int64_t>& prompt, int64_t tokens) {
  c10::InferenceMode guard;
  auto decode = impl_->module.get_method("generate_decode");
  const auto start = Clock::now();
  std::vector<int64_t> last(static_cast<size_t>(n));
  std::vector<int64_t> slots(static_cast<size_t>(n));
  std::vector<int64_t> positions(static_cast<size_t>(n), static_cast<int64_t>(prompt.size()));
  for (int64_t i = 0; i < n; ++i) {
    slots[static_cast<size_t>(i)] = i;
    last[static_cast<size_t>(i)] = impl_->prefill(prompt, i);
  }
  for (int64_t step = 1; step < tokens; ++step) {
    const at::Tensor logits = decode({impl_->tokens_tensor(last), impl_->tokens_tensor(positions),
                                      impl_->tokens_tensor(slots), impl_->k_cache, impl_->v_cache})
                                  .toTensor();
    const at::Tensor picks = logits.argmax(-1).contiguous();
    const int64_t* picked = picks.const_data_ptr<int64_t>();
    for (size_t i = 0; i < last.size(); ++i) {
      last[i] = picked[i];
      ++positions[i];
    }
  }
  return static_cast<double>(n * tokens) / seconds_since(start);
}

}  // namespace outpost::bench
