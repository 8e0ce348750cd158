// The two model formats (docs/models.md): TorchScript archives and AOTInductor packages, both
// made by the PyTorch 2 of the build, served by a real outpost-worker. Outputs are compared with
// the outputs PyTorch itself computed on the same inputs (OUTDIR/reference/NAME.json, written by
// scripts/make-example-models); an AOTInductor package batches like a TorchScript method, gets
// per-request errors for bad inputs, shows its call spec at inspect, and is refused where it
// cannot run. A CUDA device on this GPU-less host is a clear error, not a crash.
#include <cmath>
#include <cstring>
#include <fstream>
#include <future>
#include <utility>

#include "tests/runtime/worker_harness.h"

namespace outpost::testing {
namespace {

using Model = WorkerHarness::Model;

json read_reference(const std::string& model) {
  std::ifstream in(std::string(OUTPOST_MODELS_DIR) + "/reference/" + model + ".json");
  EXPECT_TRUE(in.good()) << "no reference outputs for " << model;
  return json::parse(in, nullptr, false);
}

// A float32 or int64 reference tensor (values inline) as a Value with its bytes in a part.
json reference_tensor(WireValue& value, const json& tensor) {
  const auto shape = tensor.at("shape").get<std::vector<int64_t>>();
  if (tensor.at("dtype") == "float32") {
    return add_tensor(value, shape, tensor.at("values").get<std::vector<float>>());
  }
  const auto data = tensor.at("values").get<std::vector<int64_t>>();
  std::string bytes(data.size() * sizeof(int64_t), '\0');
  std::memcpy(bytes.data(), data.data(), bytes.size());
  value.parts.push_back(std::move(bytes));
  return json{{"dtype", "int64"}, {"shape", shape}, {"part", value.parts.size() - 1}};
}

class MatchesPyTorch : public ::testing::TestWithParam<std::string> {};

// The worker's outputs are PyTorch's own, for a TorchScript archive and an AOTInductor package
// of the same network: values within float rounding, labels equal.
TEST_P(MatchesPyTorch, OutputsEqualWhatPyTorchComputed) {
  const std::string model = GetParam();
  const json reference = read_reference(model);
  WorkerHarness worker({Model(model_package(model))});
  worker.ready();
  WireValue inputs;
  inputs.value = json::object();
  for (const auto& [name, tensor] : reference.at("inputs").items()) {
    inputs.value[name] = reference_tensor(inputs, tensor);
  }
  auto out = worker.client().unary(model, reference.at("method"), std::move(inputs)).get();
  ASSERT_TRUE(out.ok()) << out.error().to_string();
  for (const auto& [name, expected] : reference.at("outputs").items()) {
    ASSERT_TRUE(out->value.contains(name)) << out->value.dump();
    const json& got = out->value.at(name);
    EXPECT_EQ(got.at("shape"), expected.at("shape")) << name;
    if (expected.at("dtype") == "int64") {
      EXPECT_EQ(int64s(*out, got), expected.at("values").get<std::vector<int64_t>>()) << name;
      continue;
    }
    const auto values = floats(*out, got);
    const auto want = expected.at("values").get<std::vector<float>>();
    ASSERT_EQ(values.size(), want.size()) << name;
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_NEAR(values[i], want[i], 1e-5 + 1e-4 * std::fabs(want[i])) << name << "[" << i << "]";
    }
  }
}

// rows2_aoti: a 1-row request to a package compiled for batches of 2 or more (padded by the
// worker, the extra row's output dropped).
INSTANTIATE_TEST_SUITE_P(BothFormats, MatchesPyTorch,
                         ::testing::Values("classifier", "classifier_aoti", "rows2_aoti"));

// Concurrent requests of 1-3 rows share executions of the AOTInductor package (its batch
// dimension is dynamic), and each gets what the TorchScript archive of the same weights gives.
TEST(Aoti, BatchesConcurrentRequestsAndEachGetsItsOwnRows) {
  WorkerHarness worker(
      {Model(model_package("classifier_aoti")), Model(model_package("classifier"), "script")});
  worker.ready();
  constexpr int kRequests = 64;
  std::vector<std::future<Result<WireValue>>> aoti;
  std::vector<std::future<Result<WireValue>>> script;
  aoti.reserve(kRequests);
  script.reserve(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    aoti.push_back(
        worker.client().unary("classifier_aoti", "predict", classifier_input(1 + i % 3, i)));
  }
  for (int i = 0; i < kRequests; ++i) {
    script.push_back(worker.client().unary("script", "predict", classifier_input(1 + i % 3, i)));
  }
  for (int i = 0; i < kRequests; ++i) {
    expect_same_classification(aoti[i].get(), script[i].get(), 1 + i % 3, i);
  }
  const json stats = worker.stats("classifier_aoti");
  EXPECT_EQ(stats.at("requests"), kRequests);
  EXPECT_LT(stats.at("executions").get<int>(), kRequests);
}

// A tensor the compiled model was not built for is that request's error, naming the input;
// requests beside it still succeed, and the worker stays up.
TEST(Aoti, BadInputsGetTheirOwnErrorsNamingTheInput) {
  WorkerHarness worker({Model(model_package("classifier_aoti"))});
  worker.ready();
  auto& client = worker.client();
  auto good_before = client.unary("classifier_aoti", "predict", classifier_input(2, 1));
  WireValue wrong_width;
  wrong_width.value = json::object();
  wrong_width.value["x"] = add_tensor(wrong_width, {2, 255}, std::vector<float>(510, 0.5f));
  auto width = client.unary("classifier_aoti", "predict", std::move(wrong_width));
  WireValue wrong_dtype;
  wrong_dtype.value = json{
      {"x", {{"dtype", "int64"}, {"shape", {1, 256}}, {"values", std::vector<int64_t>(256, 1)}}}};
  auto dtype = client.unary("classifier_aoti", "predict", std::move(wrong_dtype));
  WireValue unknown;
  unknown.value = json{{"y", 1}};
  auto name = client.unary("classifier_aoti", "predict", std::move(unknown));
  auto good_after = client.unary("classifier_aoti", "predict", classifier_input(1, 2));

  auto w = width.get();
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(w.error().message().find("'x'"), std::string::npos) << w.error().message();
  EXPECT_NE(w.error().message().find("256"), std::string::npos) << w.error().message();
  auto d = dtype.get();
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("float32"), std::string::npos) << d.error().message();
  auto n = name.get();
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.error().message().find("unknown input 'y'"), std::string::npos)
      << n.error().message();
  EXPECT_TRUE(good_before.get().ok());
  auto after = good_after.get();
  ASSERT_TRUE(after.ok()) << after.error().to_string();
  EXPECT_EQ(after->value.at("label").at("shape"), json({1}));
}

// Without shapes declared in config.yaml, the compiled model's own checks (which the worker
// turns on) refuse a tensor it was not built for: that request's error, naming the input.
TEST(Aoti, UndeclaredShapesAreCheckedByTheCompiledModel) {
  TempDir packages;
  const std::string undeclared =
      copy_package(packages, "classifier_aoti", "undeclared",
                   [](const std::string& text) { return text.substr(0, text.find("methods:")); });
  WorkerHarness worker({Model(undeclared)});
  worker.ready();
  WireValue wrong_width;
  wrong_width.value = json::object();
  wrong_width.value["x"] = add_tensor(wrong_width, {2, 255}, std::vector<float>(510, 0.5f));
  auto width = worker.client().unary("classifier_aoti", "predict", std::move(wrong_width)).get();
  ASSERT_FALSE(width.ok());
  EXPECT_EQ(width.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(width.error().message(),
            "method predict raised: input 'x': unmatched dim value at 1, expected: 256, but got: "
            "255");
  auto good = worker.client().unary("classifier_aoti", "predict", classifier_input(1, 3)).get();
  ASSERT_TRUE(good.ok()) << good.error().to_string();
  EXPECT_EQ(good->value.at("probs").at("shape"), json({1, 10}));
}

// Padding is for batched methods only, whose rows are independent: unbatched, the same package
// refuses a 1-row request with its guard's reason.
TEST(Aoti, ABatchBelowTheCompiledMinimumIsPaddedOnlyWhenBatched) {
  TempDir packages;
  // Its warm-up (1 row) would be refused too: no warm-up runs.
  const std::string unbatched =
      copy_package(packages, "rows2_aoti", "rows2-unbatched", [](std::string text) {
        return replace(std::move(text), "max_batch_size: 8", "max_batch_size: 0") +
               "warmup_runs: 0\n";
      });
  WorkerHarness worker({});
  worker.ready();
  protocol::LoadRequest request;
  request.package = unbatched;
  request.model = "cold";
  auto loaded = worker.client().load(request).get();
  ASSERT_TRUE(loaded.ok()) << loaded.error().to_string();
  WireValue one_row;
  one_row.value = json::object();
  one_row.value["x"] = add_tensor(one_row, {1, 4}, {0.1f, 0.2f, 0.3f, 0.4f});
  auto refused = worker.client().unary("cold", "predict", std::move(one_row)).get();
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("input 'x': dim value is too small at 0"),
            std::string::npos)
      << refused.error().message();
}

// inspect shows the package's own call spec (keyword input names, the dict it returns) with
// the dtype and shape config.yaml declares.
TEST(Aoti, InspectShowsTheCallSpecAndDeclaredShapes) {
  const auto result = run_command(std::string(OUTPOST_WORKER_BINARY) + " inspect " +
                                  model_package("classifier_aoti") + " 2>/dev/null");
  ASSERT_EQ(result.status, 0) << result.out;
  const json out = json::parse(result.out);
  ASSERT_EQ(out.at("methods").size(), 1u);
  const json& method = out.at("methods")[0];
  EXPECT_EQ(method.at("name"), "predict");
  EXPECT_EQ(method.at("kind"), "unary");
  EXPECT_EQ(method.at("returns"), "Dict[str, Tensor]");
  EXPECT_EQ(method.at("inputs"),
            json::parse(R"([{"name":"x","type":"Tensor","dtype":"float32","shape":[-1,256]}])"));
}

// What cannot run here is refused at load with what to do: a package compiled for CUDA, on a CPU
// worker (a FAKE package: its metadata edited, no GPU here to compile one), and a torch.save
// pickle in place of a TorchScript archive. The worker stays up and loads what it can run.
TEST(Formats, PackagesThatCannotRunHereAreRefusedAtLoadWithTheFix) {
  WorkerHarness worker({});
  worker.ready();
  const auto load = [&](const std::string& name) {
    protocol::LoadRequest request;
    request.package = model_package(name);
    request.model = name;
    return worker.client().load(request).get();
  };
  const auto cuda = load("fake_cuda_aoti");
  ASSERT_FALSE(cuda.ok());
  EXPECT_EQ(cuda.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(cuda.error().message().find("compiled for cuda and this worker's device is cpu"),
            std::string::npos)
      << cuda.error().message();
  EXPECT_NE(cuda.error().message().find("nodepool with GPUs"), std::string::npos);
  const auto pickled = load("pickled");
  ASSERT_FALSE(pickled.ok());
  EXPECT_EQ(pickled.error().code(), ErrorCode::kDataLoss);
  EXPECT_NE(pickled.error().message().find("torch.save checkpoint"), std::string::npos)
      << pickled.error().message();
  EXPECT_NE(pickled.error().message().find("torch.jit.script(model).save"), std::string::npos);
  EXPECT_TRUE(load("classifier_aoti").ok());
}

// A control plane has no GPU: inspect (what upload runs) takes a package compiled for CUDA with
// the signature config.yaml declares, says so in a warning, and without a declared signature
// says what to add.
TEST(Formats, InspectOnAHostWithoutAGpuReadsACudaPackagesDeclaredSignature) {
  TempDir packages;
  const std::string declared =
      copy_package(packages, "fake_cuda_aoti", "declared", [](const std::string& text) {
        return text +
               "methods:\n  predict:\n    inputs:\n      x: {dtype: float32, shape: [-1, 256]}\n";
      });
  const auto result =
      run_command(std::string(OUTPOST_WORKER_BINARY) + " inspect " + declared + " 2>/dev/null");
  ASSERT_EQ(result.status, 0) << result.out;
  const json out = json::parse(result.out);
  EXPECT_EQ(out.at("methods")[0].at("inputs"),
            json::parse(R"([{"name":"x","type":"Tensor","dtype":"float32","shape":[-1,256]}])"));
  ASSERT_EQ(out.at("warnings").size(), 1u);
  EXPECT_NE(out.at("warnings")[0].get<std::string>().find("compiled for cuda"), std::string::npos);
  const auto undeclared = run_command(std::string(OUTPOST_WORKER_BINARY) + " inspect " +
                                      model_package("fake_cuda_aoti") + " 2>&1 >/dev/null");
  EXPECT_NE(undeclared.status, 0);
  EXPECT_NE(undeclared.out.find("declare its inputs under methods.predict.inputs"),
            std::string::npos)
      << undeclared.out;
}

// The same outpost-worker on a host without a GPU: asking for cuda:0 ends that worker with an
// error that says so (after really loading libtorch's CUDA half), instead of crashing.
TEST(Devices, CudaOnAHostWithoutAGpuIsAClearError) {
  TempDir dir;
  const json spec{
      {"worker_id", "w"}, {"endpoint", "ipc://" + dir.file("w.sock")}, {"device", "cuda:0"}};
  const auto result = run_command(std::string(OUTPOST_WORKER_BINARY) + " serve --spec-json '" +
                                  spec.dump() + "' 2>&1");
  EXPECT_NE(result.status, 0);
  EXPECT_EQ(result.out.find("Segmentation"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("device cuda:0 does not exist (0 CUDA devices visible"),
            std::string::npos)
      << result.out;
}

}  // namespace
}  // namespace outpost::testing
