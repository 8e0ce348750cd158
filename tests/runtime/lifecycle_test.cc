// The worker's lifecycle and its refusals, against real outpost-worker processes: model files
// that are corrupt, truncated or not what was expected; inspect; bad inputs of every kind next to
// good requests; malformed and oversized messages; unload returning memory; reload; drain; a
// killed worker; and fairness between two packed models.
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include <zmq.hpp>

#include "runtime/model_package.h"
#include "tests/runtime/worker_harness.h"
#include "tests/support/sanitizers.h"
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace outpost::testing {
namespace {

using std::chrono::milliseconds;
using Model = WorkerHarness::Model;

WireValue json_inputs(json inputs) {
  WireValue value;
  value.value = std::move(inputs);
  return value;
}

WireValue tensor_inputs(const std::string& name, const std::vector<int64_t>& shape,
                        const std::vector<float>& data) {
  WireValue value;
  value.value = json::object();
  value.value[name] = add_tensor(value, shape, data);
  return value;
}

std::string inspect_command(const std::string& package) {
  return std::string(OUTPOST_WORKER_BINARY) + " inspect " + package;
}

TEST(Inspect, PrintsTheSignaturesAsOneJsonObject) {
  const auto result = run_command(inspect_command(model_package("chargen")) + " 2>/dev/null");
  ASSERT_EQ(result.status, 0);
  const json out = json::parse(result.out);
  EXPECT_EQ(out.at("model_id"), "chargen");
  EXPECT_EQ(out.at("file"), "model.pt");
  EXPECT_EQ(out.at("file_size"), out.at("config").at("checkpoints").at("size"));
  EXPECT_EQ(out.at("file_sha256"), out.at("config").at("checkpoints").at("sha256"));
  json generate;
  for (const auto& method : out.at("methods")) {
    if (method.at("name") == "generate") generate = method;
  }
  ASSERT_FALSE(generate.is_null()) << out.dump();
  EXPECT_EQ(generate.at("kind"), "generate");
  EXPECT_EQ(generate.at("returns"), "str");
  EXPECT_EQ(generate.at("inputs"), json::parse(R"([{"name": "prompt", "type": "str"},
                            {"name": "max_tokens", "type": "int", "default": 64}])"));
}

// A damaged model file is refused with a clear error, at load and at inspect.
TEST(ModelFiles, CorruptTruncatedAndWrongHashAreRefused) {
  TempDir packages;
  namespace fs = std::filesystem;
  const auto read_file = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const auto write_file = [](const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };
  const std::string original = read_file(model_package("classifier") + "/model.pt");
  const auto keep = [](std::string text) { return text; };

  const std::string truncated = copy_package(packages, "classifier", "truncated", keep);
  write_file(truncated + "/model.pt", original.substr(0, original.size() / 2));

  const std::string flipped = copy_package(packages, "classifier", "flipped", keep);
  std::string corrupt = original;
  corrupt[corrupt.size() / 3] = static_cast<char>(corrupt[corrupt.size() / 3] ^ 0x5a);
  write_file(flipped + "/model.pt", corrupt);

  // No hash or size in config.yaml: only TorchScript can notice.
  const std::string unchecked =
      copy_package(packages, "classifier", "unchecked", [](const std::string& text) {
        const auto at = text.find("  sha256:");
        return text.substr(0, at) + text.substr(text.find("batching:"));
      });
  write_file(unchecked + "/model.pt", std::string(4096, 'x'));

  const std::string wrong_hash =
      copy_package(packages, "classifier", "wrong-hash", [](std::string text) {
        const auto at = text.find("sha256: \"") + 9;
        text.replace(at, 64, std::string(64, '0'));
        return text;
      });

  WorkerHarness worker({});
  worker.ready();
  const auto load = [&](const std::string& package, protocol::LoadRequest request = {}) {
    request.package = package;
    request.model = fs::path(package).filename().string();
    return worker.client().load(request).get();
  };
  const auto expect_refused = [&](const Result<json>& result, ErrorCode code,
                                  const std::string& says) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().code(), code) << result.error().to_string();
    EXPECT_NE(result.error().message().find(says), std::string::npos) << result.error().to_string();
  };
  expect_refused(load(truncated), ErrorCode::kDataLoss, "bytes but config.yaml says");
  expect_refused(load(flipped), ErrorCode::kDataLoss, "has sha256");
  expect_refused(load(unchecked), ErrorCode::kDataLoss, "not a TorchScript archive");
  expect_refused(load(wrong_hash), ErrorCode::kDataLoss, "expects 0000");
  protocol::LoadRequest expected;
  expected.sha256 = std::string(64, 'a');
  expect_refused(load(model_package("classifier"), expected), ErrorCode::kDataLoss,
                 "the load request expects");
  expect_refused(load(packages.file("missing")), ErrorCode::kNotFound, "not a folder");

  // The refusals left the worker healthy, with the failures on record, and loads still work.
  const json health = worker.health();
  EXPECT_TRUE(health.at("ready"));
  for (const auto& model : health.at("models")) EXPECT_EQ(model.at("state"), "failed");
  auto good = load(model_package("classifier"));
  ASSERT_TRUE(good.ok()) << good.error().to_string();

  for (const auto& package : {truncated, flipped, unchecked, wrong_hash}) {
    const auto result = run_command(inspect_command(package) + " 2>&1 >/dev/null");
    EXPECT_NE(result.status, 0) << package;
    EXPECT_EQ(std::count(result.out.begin(), result.out.end(), '\n'), 1) << result.out;
    EXPECT_NE(result.out.find("data_loss"), std::string::npos) << result.out;
  }
}

TEST(ModelFiles, BadConfigIsRefusedWithTheKeyNamed) {
  TempDir packages;
  const std::string typo = copy_package(packages, "classifier", "typo", [](std::string text) {
    return replace(std::move(text), "max_queue_delay_us", "max_queue_delay");
  });
  const std::string wrong_kind = copy_package(packages, "text", "wrong-kind", [](std::string text) {
    return replace(std::move(text), "  predict:\n", "  predict:\n    kind: \"generate\"\n");
  });
  WorkerHarness worker({});
  worker.ready();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {typo, "unknown key batching.max_queue_delay"},
      {wrong_kind, "methods.predict.kind is generate"}};
  for (const auto& [package, says] : cases) {
    protocol::LoadRequest request;
    request.package = package;
    request.model = std::filesystem::path(package).filename().string();
    auto result = worker.client().load(request).get();
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(result.error().message().find(says), std::string::npos) << result.error().message();
  }
}

// Every kind of bad input gets its own error while good requests around it succeed.
TEST(BadInputs, EachGetsItsOwnErrorWhileOthersSucceed) {
  WorkerHarness worker({Model(model_package("classifier")), Model(model_package("types")),
                        Model(model_package("picky")), Model(model_package("chargen"))});
  worker.ready();
  auto& client = worker.client();
  struct Case {
    std::string what;
    std::future<Result<WireValue>> result;
    ErrorCode code;
    std::string says;
  };
  std::vector<Case> cases;
  std::vector<std::future<Result<WireValue>>> good;
  const auto good_request = [&] {
    good.push_back(client.unary("classifier", "predict",
                                tensor_inputs("x", {1, 256}, std::vector<float>(256, 0.5f))));
    good.push_back(client.unary("picky", "predict", tensor_inputs("x", {1, 4}, {1, 2, 3, 4})));
  };
  const auto add = [&](std::string what, const std::string& model, const std::string& method,
                       WireValue inputs, ErrorCode code, std::string says) {
    good_request();
    cases.push_back(
        {std::move(what), client.unary(model, method, std::move(inputs)), code, std::move(says)});
  };
  add("unknown model", "nope", "predict", json_inputs(json::object()), ErrorCode::kNotFound,
      "not loaded");
  add("unknown method", "classifier", "nope", json_inputs(json::object()), ErrorCode::kNotFound,
      "has no method");
  add("generate method called unary", "chargen", "generate", json_inputs({{"prompt", "a"}}),
      ErrorCode::kInvalidArgument, "generate method");
  add("unknown input name", "classifier", "predict",
      tensor_inputs("y", {1, 256}, std::vector<float>(256)), ErrorCode::kInvalidArgument,
      "unknown input 'y'");
  add("missing input", "classifier", "predict", json_inputs(json::object()),
      ErrorCode::kInvalidArgument, "missing input 'x'");
  add("string for a tensor", "classifier", "predict", json_inputs({{"x", "text"}}),
      ErrorCode::kInvalidArgument, "expected Tensor, got a string");
  add("float for an int", "types", "echo",
      json_inputs({{"s", "a"},
                   {"i", 1.5},
                   {"f", 1},
                   {"b", true},
                   {"t", {{"dtype", "float32"}, {"shape", {1}}, {"values", {1}}}},
                   {"li", json::array()},
                   {"d", json::object()}}),
      ErrorCode::kInvalidArgument, "input 'i': expected int");
  add("wrong list element", "types", "echo",
      json_inputs({{"s", "a"},
                   {"i", 1},
                   {"f", 1},
                   {"b", true},
                   {"t", {{"dtype", "float32"}, {"shape", {1}}, {"values", {1}}}},
                   {"li", {1, "two"}},
                   {"d", json::object()}}),
      ErrorCode::kInvalidArgument, "input 'li'[1]");
  add("wrong dtype", "classifier", "predict",
      json_inputs(
          {{"x",
            {{"dtype", "float64"}, {"shape", {1, 256}}, {"values", std::vector<double>(256)}}}}),
      ErrorCode::kInvalidArgument, "expected dtype float32");
  add("wrong shape", "classifier", "predict", tensor_inputs("x", {1, 255}, std::vector<float>(255)),
      ErrorCode::kInvalidArgument, "expected shape [*, 256]");
  {
    WireValue short_bytes = tensor_inputs("x", {1, 256}, std::vector<float>(256));
    short_bytes.parts[0].resize(1000);
    add("bytes shorter than the shape", "classifier", "predict", std::move(short_bytes),
        ErrorCode::kInvalidArgument, "has 1024 bytes, got 1000");
  }
  add("bad base64", "classifier", "predict",
      json_inputs({{"x", {{"dtype", "float32"}, {"shape", {1, 256}}, {"data_b64", "!!!"}}}}),
      ErrorCode::kInvalidArgument, "not valid base64");
  add("missing part", "classifier", "predict",
      json_inputs({{"x", {{"dtype", "float32"}, {"shape", {1, 256}}, {"part", 3}}}}),
      ErrorCode::kInvalidArgument, "\"part\" 3 does not exist");
  add("unknown dtype", "classifier", "predict",
      json_inputs({{"x", {{"dtype", "float8"}, {"shape", {1, 256}}, {"values", json::array()}}}}),
      ErrorCode::kInvalidArgument, "unknown dtype \"float8\"");
  add("negative shape", "classifier", "predict",
      json_inputs({{"x", {{"dtype", "float32"}, {"shape", {-1, 256}}, {"values", json::array()}}}}),
      ErrorCode::kInvalidArgument, "must not be negative");
  add("too many rows for the batch", "classifier", "predict",
      tensor_inputs("x", {33, 256}, std::vector<float>(33 * 256)), ErrorCode::kInvalidArgument,
      "takes at most 32");
  add("inputs not an object", "classifier", "predict", json_inputs(json::array()),
      ErrorCode::kInvalidArgument, "inputs must be an object");
  add("model raises", "types", "fail", json_inputs({{"message", "boom"}}),
      ErrorCode::kInvalidArgument, "failing on purpose: boom");
  // Batched with good requests of the same shape: only this one fails.
  for (int i = 0; i < 6; ++i) {
    add("model raises inside a batch", "picky", "predict",
        tensor_inputs("x", {1, 4}, {1, -2, 3, 4}), ErrorCode::kInvalidArgument, "negative input");
  }
  good_request();

  for (auto& c : cases) {
    auto result = c.result.get();
    ASSERT_FALSE(result.ok()) << c.what;
    EXPECT_EQ(result.error().code(), c.code) << c.what << ": " << result.error().to_string();
    EXPECT_NE(result.error().message().find(c.says), std::string::npos)
        << c.what << ": " << result.error().message();
  }
  for (auto& future : good) {
    auto result = future.get();
    EXPECT_TRUE(result.ok()) << result.error().to_string();
  }
  const json health = worker.health();
  EXPECT_TRUE(health.at("healthy"));
  EXPECT_TRUE(health.at("ready"));
}

// A peer speaking the protocol badly: each message gets a clean refusal (or is dropped when it
// has no id to answer), and the same connection keeps working.
TEST(BadInputs, MalformedAndOversizedMessagesAreRefusedCleanly) {
  WorkerHarness worker({Model(model_package("classifier"))}, [](WorkerSpec& spec) {
    spec.limits.max_message_bytes = 1 << 20;
    spec.limits.max_parts = 4;
  });
  worker.ready();
  zmq::context_t context;
  zmq::socket_t peer(context, zmq::socket_type::dealer);
  peer.set(zmq::sockopt::linger, 0);
  peer.set(zmq::sockopt::rcvtimeo, 30'000);
  peer.connect(worker.spec().endpoint);
  const auto exchange = [&](const std::vector<std::string>& frames) {
    for (size_t i = 0; i < frames.size(); ++i) {
      peer.send(zmq::buffer(frames[i]),
                i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
    zmq::message_t reply;
    EXPECT_TRUE(peer.recv(reply, zmq::recv_flags::none));
    while (reply.more()) {
      zmq::message_t rest;
      EXPECT_TRUE(peer.recv(rest, zmq::recv_flags::none));
    }
    return json::parse(reply.to_string_view(), nullptr, false);
  };
  const auto expect_error = [](const json& reply, const std::string& id, const std::string& code) {
    EXPECT_EQ(reply.value("type", ""), "error") << reply.dump();
    EXPECT_EQ(reply.value("id", "?"), id) << reply.dump();
    EXPECT_EQ(reply.value("code", ""), code) << reply.dump();
  };
  expect_error(exchange({"not json"}), "", "invalid_argument");
  expect_error(exchange({R"({"type": "health"})"}), "", "invalid_argument");
  expect_error(exchange({R"({"id": "1"})"}), "1", "invalid_argument");
  expect_error(exchange({R"({"type": "launch", "id": "2"})"}), "2", "invalid_argument");
  expect_error(exchange({R"({"type": "predict", "id": "3", "model": "classifier"})"}), "3",
               "invalid_argument");
  // Over the worker's 1 MiB limit (but under ZeroMQ's hard limit): refused, not disconnected.
  expect_error(
      exchange(
          {R"({"type": "predict", "id": "4", "shape": "unary", "model": "classifier", "method": "predict"})",
           std::string(1 << 20, 'x')}),
      "4", "resource_exhausted");
  // A field of the wrong JSON type is refused, and the worker neither drains nor dies.
  expect_error(exchange({R"({"type": "drain", "id": "6", "exit": 1})"}), "6", "invalid_argument");
  // One binary part more than max_parts is refused, not cut down to the limit and accepted.
  const std::string predict =
      R"({"type": "predict", "id": "7", "shape": "unary", "model": "classifier", "method": "predict"})";
  expect_error(exchange({predict, "a", "b", "c", "d", "e"}), "7", "resource_exhausted");
  // A message with an id but unknown fields is still answered.
  const json hello = exchange({R"({"type": "hello", "id": "5", "extra": [1, 2]})"});
  EXPECT_EQ(hello.value("type", ""), "hello");
  EXPECT_EQ(hello.value("id", ""), "5");

  // The client refuses locally what the worker would refuse.
  auto oversized = worker.client()
                       .unary("classifier", "predict",
                              tensor_inputs("x", {1024, 256}, std::vector<float>(1024 * 256)))
                       .get();
  ASSERT_FALSE(oversized.ok());
  EXPECT_EQ(oversized.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(worker.health().at("healthy"));
}

// An output bigger than the client accepts ends that call with a clear error; before, the
// client dropped the reply and the call never finished.
TEST(BadInputs, AnOutputOverTheMessageLimitIsAnErrorNotAHang) {
  WorkerHarness worker({Model(model_package("types"))},
                       [](WorkerSpec& spec) { spec.limits.max_message_bytes = 64 * 1024; });
  worker.ready();
  // echo returns its inputs. A tensor given as "values" costs 2 bytes per zero on the way in
  // and 4 (float32) on the way out: 16,000 zeros and a 2,000-byte string make a 34 kB request
  // and a 66 kB answer.
  const auto echo = [](int64_t zeros) {
    WireValue input;
    input.value = json{{"s", std::string(2000, 's')},
                       {"i", 1},
                       {"f", 1.0},
                       {"b", true},
                       {"t",
                        {{"dtype", "float32"},
                         {"shape", {zeros}},
                         {"values", std::vector<int>(static_cast<size_t>(zeros), 0)}}},
                       {"li", json::array()},
                       {"d", json::object()}};
    return input;
  };
  auto& client = worker.client();
  auto big = client.unary("types", "echo", echo(16'000));
  ASSERT_EQ(big.wait_for(std::chrono::seconds(60)), std::future_status::ready)
      << "the call never finished";
  const auto refused = big.get();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(refused.error().message().find("message limit"), std::string::npos)
      << refused.error().message();
  // The model, the worker and the connection go on.
  const auto small = client.unary("types", "echo", echo(100)).get();
  ASSERT_TRUE(small.ok()) << small.error().to_string();
  EXPECT_TRUE(worker.health().at("healthy"));
}

// Unload drains the model, frees its weights, and the process's memory really goes down.
TEST(Unload, ReturnsTheMemory) {
  if (kUnderAsan) {
    // ASan keeps freed memory in its quarantine by design (to catch use after free): with it off,
    // the worker's RSS shows what the worker itself gave back. Inherited by the worker started
    // here.
    const char* options = std::getenv("ASAN_OPTIONS");
    const std::string asan_options =
        std::string(options != nullptr ? options : "") + ":quarantine_size_mb=0";
    ::setenv("ASAN_OPTIONS", asan_options.c_str(), 1);
  }
  WorkerHarness worker({Model(model_package("text"))});
  worker.ready();
  const uint64_t baseline = rss_bytes(worker.process().pid());
  protocol::LoadRequest request;
  request.package = model_package("big");
  auto loaded = worker.client().load(request).get();
  ASSERT_TRUE(loaded.ok()) << loaded.error().to_string();
  const uint64_t weights = 2 * (2048 * 2048 + 2048) * sizeof(float);
  EXPECT_EQ(loaded->at("memory_bytes").get<uint64_t>(), weights);
  auto out =
      worker.client()
          .unary("big", "predict", tensor_inputs("x", {1, 2048}, std::vector<float>(2048, 1)))
          .get();
  ASSERT_TRUE(out.ok()) << out.error().to_string();
  const uint64_t loaded_rss = rss_bytes(worker.process().pid());
  EXPECT_GE(loaded_rss, baseline + weights * 9 / 10);

  auto unloaded = worker.client().unload("big").get();
  ASSERT_TRUE(unloaded.ok()) << unloaded.error().to_string();
  EXPECT_TRUE(unloaded->at("memory_returned").get<bool>()) << unloaded->dump();
  EXPECT_EQ(unloaded->at("freed_bytes").get<uint64_t>(), weights);
  const uint64_t after = rss_bytes(worker.process().pid());
  EXPECT_LE(after + weights * 9 / 10, loaded_rss)
      << "rss: baseline " << baseline << ", loaded " << loaded_rss << ", after unload " << after;
  const json health = worker.health();
  EXPECT_TRUE(health.at("healthy"));
  EXPECT_EQ(health.at("models").size(), 1u);
  auto gone = worker.client()
                  .unary("big", "predict", tensor_inputs("x", {1, 2048}, std::vector<float>(2048)))
                  .get();
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);
}

TEST(Reload, AFailedReloadKeepsTheOldModelAndAGoodOneSwaps) {
  TempDir packages;
  const std::string broken = copy_package(packages, "text", "broken", [](std::string text) {
    return replace(std::move(text), "size: ", "size: 1");
  });
  WorkerHarness worker({Model(model_package("text"))});
  worker.ready();
  protocol::LoadRequest request;
  request.model = "text";
  request.package = broken;
  auto failed = worker.client().reload(request).get();
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), ErrorCode::kDataLoss);
  auto still = worker.client().unary("text", "predict", json_inputs({{"text", "a b"}})).get();
  ASSERT_TRUE(still.ok()) << still.error().to_string();
  EXPECT_EQ(still->value, "B A");

  const std::string lower =
      copy_package(packages, "text", "lower", [](std::string text) { return text; });
  request.package = lower;
  auto swapped = worker.client().reload(request).get();
  ASSERT_TRUE(swapped.ok()) << swapped.error().to_string();
  EXPECT_TRUE(swapped->at("previous").at("memory_returned").get<bool>());
  auto after = worker.client().unary("text", "predict", json_inputs({{"text", "c d"}})).get();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->value, "D C");
  const json health = worker.health();  // kept: the loop reads into it
  for (const auto& model : health.at("models")) EXPECT_EQ(model.at("package"), lower);
}

// Drain lets the calls in flight finish, refuses new ones, and the process exits cleanly.
TEST(Drain, FinishesCallsInFlightThenExits) {
  WorkerHarness worker({Model(model_package("heavy"))});
  worker.ready();
  std::vector<std::future<Result<WireValue>>> calls;
  calls.reserve(4);
  for (int i = 0; i < 4; ++i) {
    calls.push_back(worker.client().unary(
        "heavy", "predict", tensor_inputs("x", {1, 512}, std::vector<float>(512, 0.1f))));
  }
  // Wait until the worker has them all.
  for (int tries = 0; tries < 1000 && worker.stats("heavy").at("live_calls").get<int>() +
                                              worker.stats("heavy").at("requests").get<int>() <
                                          4;
       ++tries) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  auto drained = worker.client().drain(std::chrono::seconds(60), true);
  std::this_thread::sleep_for(milliseconds(20));
  auto refused = worker.client().unary("heavy", "predict",
                                       tensor_inputs("x", {1, 512}, std::vector<float>(512)));
  for (auto& call : calls) {
    auto result = call.get();
    EXPECT_TRUE(result.ok()) << result.error().to_string();
  }
  auto drained_reply = drained.get();
  EXPECT_TRUE(drained_reply.ok()) << drained_reply.error().to_string();
  auto refused_result = refused.get();
  ASSERT_FALSE(refused_result.ok());
  EXPECT_EQ(refused_result.error().code(), ErrorCode::kUnavailable);
  const auto status = worker.process().wait(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, 0);
}

// A worker that dies ends its open calls with unavailable instead of leaving them hanging.
TEST(Faults, AKilledWorkerEndsOpenCalls) {
  WorkerHarness worker({Model(model_package("chargen"))});
  worker.ready();
  Recorder recorder;
  worker.client().generate("chargen", "generate",
                           json_inputs({{"prompt", "a"}, {"max_tokens", 1'000'000}}),
                           recorder.handlers());
  ASSERT_TRUE(recorder.wait_values(1));
  worker.process().kill(SIGKILL);
  ASSERT_TRUE(recorder.wait_done());
  ASSERT_FALSE(recorder.status().ok());
  EXPECT_EQ(recorder.status().error().code(), ErrorCode::kUnavailable);
  auto after = worker.client().health().get();
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code(), ErrorCode::kUnavailable);
}

// What each open descriptor of `pid` links to ("socket:[4711]", "pipe:[12]", a path), by number.
std::map<int, std::string> descriptor_targets(pid_t pid) {
  std::map<int, std::string> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code link_ec;
    out[std::stoi(it->path().filename().string())] =
        std::filesystem::read_symlink(it->path(), link_ec).string();
  }
  return out;
}

// A worker runs a model's code: it must hold none of its parent's descriptors but stdin, stdout
// and stderr. The agent's sockets are Asio's, which are not close-on-exec; a socket and a pipe
// made the same way stand for them here.
TEST(Spawn, TheWorkerHoldsNoneOfItsParentsDescriptors) {
  const int socket_fd = ::socket(AF_INET, SOCK_STREAM, 0);  // no SOCK_CLOEXEC, as Asio makes it
  ASSERT_GE(socket_fd, 0);
  std::array<int, 2> pipe_fds{-1, -1};
  ASSERT_EQ(::pipe(pipe_fds.data()), 0);
  const auto mine = descriptor_targets(::getpid());
  std::set<std::string> ours;  // every socket, pipe and anonymous inode the test process holds
  for (const auto& [fd, target] : mine) {
    if (target.find(":[") != std::string::npos) ours.insert(target);
  }
  ASSERT_TRUE(ours.count(mine.at(socket_fd)) == 1 && ours.count(mine.at(pipe_fds[0])) == 1);

  WorkerHarness worker({Model(model_package("text"))});
  worker.ready();
  const auto theirs = descriptor_targets(worker.process().pid());
  ASSERT_GT(theirs.size(), 3u);  // its own: the ZeroMQ socket, libzmq's eventfds, ...
  for (const auto& [fd, target] : theirs) {
    if (fd <= STDERR_FILENO) continue;  // stdin is inherited; stdout and stderr are its log
    EXPECT_EQ(ours.count(target), 0u) << "the worker's fd " << fd << " is its parent's " << target;
  }
  ::close(socket_fd);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

// Two models packed in one worker share the device fairly: while a heavy model has a backlog,
// a light model's requests keep running instead of waiting behind it.
TEST(Packing, AHeavyModelCannotStarveALightOne) {
  TempDir packages;
  const std::string light = copy_package(packages, "classifier", "light", [](std::string text) {
    return replace(std::move(text), "max_batch_size: 32", "max_batch_size: 0");
  });
  WorkerHarness worker({Model(model_package("heavy")), Model(light, "light")});
  worker.ready();
  auto& client = worker.client();
  std::mutex mutex;
  std::vector<char> order;  // 'H' or 'L' as results come back
  std::condition_variable changed;
  constexpr int kHeavy = 8;
  constexpr int kLight = 200;
  for (int i = 0; i < kHeavy; ++i) {
    WireValue x = tensor_inputs("x", {1, 512}, std::vector<float>(512, 0.1f));
    client.unary("heavy", "predict", std::move(x),
                 CallHandlers{nullptr, [&](const Status& status, std::string_view) {
                                EXPECT_TRUE(status.ok());
                                std::lock_guard lock(mutex);
                                order.push_back('H');
                                changed.notify_all();
                              }});
  }
  // The light model's requests run at concurrency 32 (a backlog): one more each time one
  // finishes.
  std::atomic<int> started{0};
  std::function<void()> start_light = [&] {
    if (started.fetch_add(1) >= kLight) return;
    client.unary("light", "predict", tensor_inputs("x", {1, 256}, std::vector<float>(256, 0.3f)),
                 CallHandlers{nullptr, [&](const Status& status, std::string_view) {
                                EXPECT_TRUE(status.ok());
                                {
                                  std::lock_guard lock(mutex);
                                  order.push_back('L');
                                  changed.notify_all();
                                }
                                start_light();
                              }});
  };
  for (int i = 0; i < 32; ++i) start_light();
  std::unique_lock lock(mutex);
  ASSERT_TRUE(changed.wait_for(lock, std::chrono::seconds(120), [&] {
    return order.size() == static_cast<size_t>(kHeavy + kLight);
  }));
  const auto last_light = std::find(order.rbegin(), order.rend(), 'L');
  const auto heavy_before_last_light = std::count(last_light, order.rend(), 'H');
  // Fair sharing gives the light model as much device time as the heavy one, so all its
  // requests finish within a few heavy executions; first-come-first-served would interleave
  // them one for one and finish the last light request after every heavy one.
  EXPECT_LE(heavy_before_last_light, kHeavy / 2) << std::string(order.begin(), order.end());
}

}  // namespace
}  // namespace outpost::testing
