// bench_gpu (run by scripts/gpu-check): the GPU features of outpost-worker, shown on a device and
// measured against direct libtorch on the same device, in one run. Prints one JSON object as its
// last line. Nothing here passes or fails on timing; the checks that must hold are listed in
// "failed" (empty when all held).
//
//   bench_gpu MODELS_DIR [DEVICE]   DEVICE: cuda:0 (default), or cpu for a dry run of the logic
//
// MODELS_DIR holds the example packages (scripts/make-example-models) with their AOTInductor
// packages compiled for DEVICE (scripts/gpu-check makes them) and reference/*.json.
//   outputs    classifier (TorchScript) and classifier_aoti on DEVICE against PyTorch's own
//              outputs computed on the CPU: the largest difference
//   resnet     ResNet-18 through the worker at concurrency 1 and 8 against direct batches
//   packing    the light classifier's p50/p99 alone, then while the heavy model saturates the
//              device: in one worker (the fair scheduler between them) and in two workers
//   fraction   a worker capped at a share of the device smaller than `big` needs: `big` is
//              refused at load, and the classifier beside it still answers (CUDA only)
//   generate   16 concurrent generate calls of the character model, batched into steps: chunks
//              per second, and whether each equals the same call alone
//   unload     the device memory the worker's allocator holds before a load of `big`, after it,
//              and after its unload
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/runtime/direct_libtorch.h"
#include "bench/runtime/worker_load.h"
#include "protocol/worker_client.h"
#include "tests/support/test_pki.h"

namespace {

using namespace outpost;
using namespace outpost::protocol;
using nlohmann::json;
using outpost::bench::DirectModel;
using outpost::bench::quantile;
using outpost::bench::random_tensor_input;
using outpost::bench::worker_latencies_us;
using outpost::bench::worker_rps;
using Clock = std::chrono::steady_clock;

std::string g_models;
std::string g_device;
std::vector<std::string> g_failed;  // the checks that did not hold

void check(bool held, const std::string& what) {
  if (!held) g_failed.push_back(what);
}

// A worker on the device with `models`, and a client to it.
struct Worker {
  outpost::testing::TempDir dir;
  std::unique_ptr<WorkerProcess> process;
  std::unique_ptr<WorkerClient> client;
};

std::unique_ptr<Worker> start_worker(const std::vector<std::string>& models,
                                     const std::string& slice_mode = "none",
                                     double fraction = 1.0) {
  auto worker = std::make_unique<Worker>();
  WorkerProcess::Options options;
  options.binary = OUTPOST_WORKER_BINARY;
  options.spec.worker_id = "gpu-check";
  options.spec.endpoint = "ipc://" + worker->dir.file("worker.sock");
  options.spec.device = g_device;
  options.spec.slice.mode = slice_mode;
  options.spec.slice.fraction = fraction;
  for (const auto& name : models) {
    ModelSpec& model = options.spec.models.emplace_back();
    model.package = g_models + "/" + name;
  }
  options.log_file = worker->dir.file("worker.log");
  auto started = outpost::bench::start_worker(options);
  if (!started.ok()) {
    std::fprintf(stderr, "%s\n", started.error().to_string().c_str());
    return nullptr;
  }
  worker->process = std::move(started->process);
  worker->client = std::move(started->client);
  return worker;
}

// The reference inputs of `model`, as a call's inputs.
WireValue reference_inputs(const json& reference) {
  WireValue value;
  value.value = json::object();
  for (const auto& [name, tensor] : reference.at("inputs").items()) {
    const auto data = tensor.at("values").get<std::vector<float>>();
    value.parts.emplace_back(reinterpret_cast<const char*>(data.data()),
                             data.size() * sizeof(float));
    value.value[name] = {
        {"dtype", "float32"}, {"shape", tensor.at("shape")}, {"part", value.parts.size() - 1}};
  }
  return value;
}

// The largest absolute difference between the float outputs and PyTorch's (labels must match).
double output_difference(WorkerClient& client, const std::string& model) {
  std::ifstream in(g_models + "/reference/" + model + ".json");
  const json reference = json::parse(in, nullptr, false);
  if (reference.is_discarded()) return INFINITY;
  auto out = client.unary(model, "predict", reference_inputs(reference)).get();
  if (!out.ok()) {
    std::fprintf(stderr, "%s: %s\n", model.c_str(), out.error().to_string().c_str());
    return INFINITY;
  }
  double worst = 0;
  for (const auto& [name, expected] : reference.at("outputs").items()) {
    const json& got = out->value.at(name);
    const std::string& bytes = out->parts.at(got.at("part").get<size_t>());
    if (expected.at("dtype") == "int64") {
      std::vector<int64_t> values(bytes.size() / sizeof(int64_t));
      std::memcpy(values.data(), bytes.data(), bytes.size());
      if (values != expected.at("values").get<std::vector<int64_t>>()) return INFINITY;
      continue;
    }
    std::vector<float> values(bytes.size() / sizeof(float));
    std::memcpy(values.data(), bytes.data(), bytes.size());
    const auto want = expected.at("values").get<std::vector<float>>();
    if (values.size() != want.size()) return INFINITY;
    for (size_t i = 0; i < values.size(); ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(values[i] - want[i])));
    }
  }
  return worst;
}

json device_memory(WorkerClient& client) {
  auto health = client.health().get();
  return health.ok() ? health->value("device", json::object()) : json::object();
}

// The light model's latencies while `heavy_client` keeps the heavy model busy.
json light_under_load(WorkerClient& light_client, WorkerClient& heavy_client) {
  const WireValue light = random_tensor_input({1, 256}, 3);
  const WireValue heavy = random_tensor_input({1, 512}, 4);
  std::atomic<bool> stop{false};
  std::vector<std::thread> loaders;
  loaders.reserve(4);
  for (int i = 0; i < 4; ++i) {
    loaders.emplace_back([&] {
      while (!stop) (void)heavy_client.unary("heavy", "predict", heavy).get();
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto latencies = worker_latencies_us(light_client, "classifier", light, 300);
  stop = true;
  for (auto& thread : loaders) thread.join();
  return {{"p50_us", quantile(latencies, 0.5)}, {"p99_us", quantile(latencies, 0.99)}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_gpu MODELS_DIR [DEVICE]\n");
    return 2;
  }
  g_models = argv[1];
  g_device = argc > 2 ? argv[2] : "cuda:0";
  const bool cuda = g_device.rfind("cuda", 0) == 0;
  json out{{"device", g_device}};
  const auto started = Clock::now();

  // outputs
  {
    auto worker = start_worker({"classifier", "classifier_aoti"});
    if (!worker) return 1;
    out["outputs_max_abs_diff"] = {
        {"torchscript", output_difference(*worker->client, "classifier")},
        {"aoti", output_difference(*worker->client, "classifier_aoti")}};
    for (const auto& [format, diff] : out["outputs_max_abs_diff"].items()) {
      check(diff.get<double>() < 1e-4, "outputs: " + format + " differs from PyTorch's by " +
                                           std::to_string(diff.get<double>()));
    }
    out["device_name"] = device_memory(*worker->client).value("name", "");
  }

  // resnet, direct first with nothing else on the device
  {
    auto direct = DirectModel::load(g_models + "/resnet18", g_device);
    if (!direct.ok()) {
      std::fprintf(stderr, "%s\n", direct.error().to_string().c_str());
      return 1;
    }
    out["resnet_direct_b1_rps"] = (*direct)->rows_per_second("predict", {1, 3, 224, 224}, 4.0);
    out["resnet_direct_b8_rps"] = (*direct)->rows_per_second("predict", {8, 3, 224, 224}, 4.0);
    direct->reset();
    auto worker = start_worker({"resnet18"});
    if (!worker) return 1;
    const WireValue image = random_tensor_input({1, 3, 224, 224}, 2);
    out["resnet_c1_rps"] = worker_rps(*worker->client, "resnet18", image, 1, 4.0);
    out["resnet_c8_rps"] = worker_rps(*worker->client, "resnet18", image, 8, 4.0);
    out["resnet_c1_ratio"] =
        out["resnet_c1_rps"].get<double>() / out["resnet_direct_b1_rps"].get<double>();
    out["resnet_c8_ratio"] =
        out["resnet_c8_rps"].get<double>() / out["resnet_direct_b8_rps"].get<double>();
  }

  // packing
  {
    auto both = start_worker({"classifier", "heavy"});
    if (!both) return 1;
    auto idle =
        worker_latencies_us(*both->client, "classifier", random_tensor_input({1, 256}, 5), 300);
    out["packing_light_alone"] = {{"p50_us", quantile(idle, 0.5)},
                                  {"p99_us", quantile(idle, 0.99)}};
    out["packing_light_fair"] = light_under_load(*both->client, *both->client);
    both.reset();
    auto light = start_worker({"classifier"});
    auto heavy = start_worker({"heavy"});
    if (!light || !heavy) return 1;
    out["packing_light_two_workers"] = light_under_load(*light->client, *heavy->client);
  }

  // fraction
  if (cuda) {
    auto probe = start_worker({});
    if (!probe) return 1;
    const double total = device_memory(*probe->client).value("total_bytes", 0.0);
    probe.reset();
    const double cap = 24.0 * 1024 * 1024;  // less than big's 32 MiB of weights
    auto capped = start_worker({"classifier"}, "fraction", cap / std::max(total, 1.0));
    if (!capped) return 1;
    LoadRequest request;
    request.package = g_models + "/big";
    auto big = capped->client->load(request).get();
    auto neighbour =
        capped->client->unary("classifier", "predict", random_tensor_input({1, 256}, 6)).get();
    out["fraction"] = {{"cap_bytes", cap},
                       {"big_refused", !big.ok()},
                       {"big_refusal", big.ok() ? "" : big.error().message()},
                       {"neighbour_answered", neighbour.ok()}};
    check(!big.ok(), "fraction: big loaded past its cap");
    check(neighbour.ok(), "fraction: the classifier beside the refused model failed");
  }

  // generate
  {
    auto worker = start_worker({"chargen"});
    if (!worker) return 1;
    const auto run = [&](const std::string& prompt) {
      WireValue inputs;
      inputs.value = json{{"prompt", prompt}, {"max_tokens", 64}};
      auto promise = std::make_shared<std::promise<std::string>>();
      auto text = std::make_shared<std::string>();
      worker->client->generate("chargen", "generate", std::move(inputs),
                               CallHandlers{[text](int64_t, const WireValue& chunk) {
                                              if (chunk.value.is_string()) {
                                                *text += chunk.value.get<std::string>();
                                              }
                                            },
                                            [promise, text](const Status&, std::string_view) {
                                              promise->set_value(*text);
                                            }});
      return promise->get_future();
    };
    std::vector<std::string> alone;
    alone.reserve(16);
    for (int i = 0; i < 16; ++i) alone.push_back(run("prompt " + std::to_string(i)).get());
    const auto start = Clock::now();
    std::vector<std::future<std::string>> together;
    together.reserve(16);
    for (int i = 0; i < 16; ++i) together.push_back(run("prompt " + std::to_string(i)));
    bool equal = true;
    size_t chunks = 0;
    for (int i = 0; i < 16; ++i) {
      const std::string text = together[i].get();
      chunks += text.size();
      equal = equal && text == alone[i];
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    out["generate_chunks_per_s"] = static_cast<double>(chunks) / seconds;
    out["generate_batched_equal_alone"] = equal;
    check(equal, "generate: a batched call differs from the same call alone");
  }

  // unload
  {
    auto worker = start_worker({});
    if (!worker) return 1;
    const json before = device_memory(*worker->client);
    LoadRequest request;
    request.package = g_models + "/big";
    auto loaded = worker->client->load(request).get();
    const json after_load = device_memory(*worker->client);
    auto unloaded = worker->client->unload("big").get();
    const json after_unload = device_memory(*worker->client);
    out["unload"] = {{"allocated_before", before.value("allocated_bytes", 0)},
                     {"allocated_loaded", after_load.value("allocated_bytes", 0)},
                     {"allocated_after_unload", after_unload.value("allocated_bytes", 0)},
                     {"reply", unloaded.ok() ? *unloaded : json(unloaded.error().message())}};
    check(loaded.ok() && unloaded.ok(), "unload: big did not load and unload");
    if (cuda) {
      check(after_unload.value("allocated_bytes", 0) <=
                before.value("allocated_bytes", 0) + (2 << 20),
            "unload: the allocator holds more than before the load");
    }
  }

  out["seconds"] = std::chrono::duration<double>(Clock::now() - started).count();
  out["failed"] = g_failed;
  std::printf("%s\n", out.dump().c_str());
  return g_failed.empty() ? 0 : 1;
}
