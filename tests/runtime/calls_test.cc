// The three call shapes against a real outpost-worker over ipc://, with the example models:
// unary (tensors, strings, every supported type), dynamic batching, generate (chunks as they
// exist, cancellation, iteration-level batching), and stream (order, state, window).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <future>
#include <numeric>
#include <random>
#include <thread>
#include <utility>

#include "tests/runtime/worker_harness.h"

namespace outpost::testing {
namespace {

using std::chrono::milliseconds;
using Model = WorkerHarness::Model;

WireValue json_inputs(json inputs) {
  WireValue value;
  value.value = std::move(inputs);
  return value;
}

Result<WireValue> call(WorkerClient& client, const std::string& model, const std::string& method,
                       WireValue inputs) {
  return client.unary(model, method, std::move(inputs)).get();
}

TEST(UnaryCalls, ClassifierReturnsProbabilitiesAndLabels) {
  WorkerHarness worker({Model(model_package("classifier"))});
  worker.ready();
  auto out = call(worker.client(), "classifier", "predict", classifier_input(3, 7));
  ASSERT_TRUE(out.ok()) << out.error().to_string();
  const auto probs = floats(*out, out->value.at("probs"));
  EXPECT_EQ(out->value.at("probs").at("shape"), json({3, 10}));
  ASSERT_EQ(probs.size(), 30u);
  for (int row = 0; row < 3; ++row) {
    const float sum =
        std::accumulate(probs.begin() + row * 10, probs.begin() + row * 10 + 10, 0.0f);
    EXPECT_NEAR(sum, 1.0f, 1e-4);
  }
  const auto labels = int64s(*out, out->value.at("label"));
  ASSERT_EQ(labels.size(), 3u);
  for (const int64_t label : labels) EXPECT_TRUE(label >= 0 && label < 10);
}

TEST(UnaryCalls, TextMethodTakesAndReturnsStrings) {
  WorkerHarness worker({Model(model_package("text"))});
  worker.ready();
  auto upper = call(worker.client(), "text", "predict", json_inputs({{"text", "hello outpost"}}));
  ASSERT_TRUE(upper.ok()) << upper.error().to_string();
  EXPECT_EQ(upper->value, "OUTPOST HELLO");
  auto lower = call(worker.client(), "text", "predict",
                    json_inputs({{"text", "hello outpost"}, {"upper", false}}));
  ASSERT_TRUE(lower.ok());
  EXPECT_EQ(lower->value, "outpost hello");
  auto counts =
      call(worker.client(), "text", "count_words", json_inputs({{"texts", {"a b a", "b c"}}}));
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->value, json({{"a", 2}, {"b", 2}, {"c", 1}}));
}

TEST(UnaryCalls, EveryTypeRoundTrips) {
  WorkerHarness worker({Model(model_package("types"))});
  worker.ready();
  WireValue inputs;
  inputs.value = json{{"s", "héllo"}, {"i", -42},        {"f", 2.5},
                      {"b", true},    {"li", {1, 2, 3}}, {"d", {{"x", 1.5}, {"y", -2.0}}}};
  inputs.value["t"] = add_tensor(inputs, {2, 2}, {1, 2, 3, 4});
  auto out = call(worker.client(), "types", "echo", inputs);
  ASSERT_TRUE(out.ok()) << out.error().to_string();
  const json& v = out->value;
  ASSERT_EQ(v.size(), 8u);
  EXPECT_EQ(v[0], "héllo");
  EXPECT_EQ(v[1], -42);
  EXPECT_EQ(v[2], 2.5);
  EXPECT_EQ(v[3], true);
  EXPECT_EQ(v[4].at("shape"), json({2, 2}));
  EXPECT_EQ(floats(*out, v[4]), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(v[5], json({1, 2, 3}));
  EXPECT_EQ(v[6], json({{"x", 1.5}, {"y", -2.0}}));
  EXPECT_TRUE(v[7].is_null());

  // The control protocol's forms: "values", "data_b64", "bytes_b64" and an Optional given.
  json control{{"s", {{"bytes_b64", "aGk="}}},
               {"i", 1},
               {"f", 1},
               {"b", false},
               {"t", {{"dtype", "int32"}, {"shape", {3}}, {"values", {7, 8, 9}}}},
               {"li", json::array()},
               {"d", json::object()},
               {"o", "given"}};
  auto control_out = call(worker.client(), "types", "echo", json_inputs(control));
  ASSERT_TRUE(control_out.ok()) << control_out.error().to_string();
  EXPECT_EQ(control_out->value[0], "hi");
  EXPECT_EQ(control_out->value[4].at("dtype"), "int32");
  EXPECT_EQ(control_out->value[7], "given");
  auto as_control = protocol::parts_to_base64(control_out->value, control_out->parts);
  ASSERT_TRUE(as_control.ok());
  // 7, 8, 9 as little-endian int32.
  EXPECT_EQ((*as_control)[4].at("data_b64"), "BwAAAAgAAAAJAAAA");

  json b64_inputs{{"tensors",
                   {{{"dtype", "float32"}, {"shape", {1, 2}}, {"data_b64", "AACAPwAAAEA="}},
                    {{"dtype", "uint8"}, {"shape", {3}}, {"values", {1, 2, 3}}}}}};
  WireValue moved = json_inputs(b64_inputs);
  ASSERT_TRUE(protocol::move_bytes_to_parts(moved.value, moved.parts).ok());
  EXPECT_EQ(moved.parts.size(), 1u);
  auto shapes = call(worker.client(), "types", "shapes", moved);
  ASSERT_TRUE(shapes.ok()) << shapes.error().to_string();
  EXPECT_EQ(shapes->value, json({{1, 2}, {3}}));
}

// The dynamic batcher: concurrent requests share executions, and every request gets exactly
// what it would get alone.
TEST(Batching, BatchedResultsEqualUnbatched) {
  TempDir packages;
  const std::string unbatched =
      copy_package(packages, "classifier", "classifier-unbatched", [](std::string text) {
        return replace(std::move(text), "max_batch_size: 32", "max_batch_size: 0");
      });
  WorkerHarness worker(
      {Model(model_package("classifier"), "batched"), Model(unbatched, "unbatched")});
  worker.ready();
  constexpr int kRequests = 96;
  std::vector<std::future<Result<WireValue>>> batched;
  std::vector<std::future<Result<WireValue>>> alone;
  batched.reserve(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    batched.push_back(worker.client().unary("batched", "predict", classifier_input(1 + i % 3, i)));
  }
  alone.reserve(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    alone.push_back(worker.client().unary("unbatched", "predict", classifier_input(1 + i % 3, i)));
  }
  for (int i = 0; i < kRequests; ++i) {
    expect_same_classification(batched[i].get(), alone[i].get(), 1 + i % 3, i);
  }
  const json batched_stats = worker.stats("batched");
  const json alone_stats = worker.stats("unbatched");
  EXPECT_EQ(alone_stats.at("executions"), kRequests);
  // Requests really were batched: fewer executions than requests.
  EXPECT_LT(batched_stats.at("executions").get<int>(), kRequests);
  EXPECT_EQ(batched_stats.at("requests"), kRequests);
}

TEST(Batching, FullQueueRefusesAndOthersSucceed) {
  TempDir packages;
  const std::string small_queue = copy_package(
      packages, "heavy", "heavy-small-queue",
      [](const std::string& text) { return text + "batching:\n  max_queue_size: 2\n"; });
  WorkerHarness worker({Model(small_queue)});
  worker.ready();
  std::vector<std::future<Result<WireValue>>> calls;
  for (int i = 0; i < 12; ++i) {
    WireValue value;
    value.value = json::object();
    value.value["x"] = add_tensor(value, {1, 512}, std::vector<float>(512, 0.1f));
    calls.push_back(worker.client().unary("heavy", "predict", std::move(value)));
  }
  int ok = 0;
  int refused = 0;
  for (auto& future : calls) {
    auto result = future.get();
    if (result.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(result.error().code(), ErrorCode::kResourceExhausted) << result.error().to_string();
      ++refused;
    }
  }
  EXPECT_GE(ok, 2);
  EXPECT_GE(refused, 1);
}

std::string joined_chunks(const Recorder& recorder) {
  std::string out;
  for (const auto& value : recorder.values()) out += value.value.get<std::string>();
  return out;
}

TEST(Generate, EmitsEveryChunkThenEnds) {
  WorkerHarness worker({Model(model_package("chargen"))});
  worker.ready();
  Recorder spell;
  worker.client().generate("chargen", "spell", json_inputs({{"text", "outpost"}}),
                           spell.handlers());
  ASSERT_TRUE(spell.wait_done());
  EXPECT_TRUE(spell.status().ok()) << spell.status().error().to_string();
  EXPECT_EQ(spell.reason(), "done");
  EXPECT_EQ(joined_chunks(spell), "outpost");
  EXPECT_EQ(spell.seqs(), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));

  Recorder generate;
  worker.client().generate("chargen", "generate",
                           json_inputs({{"prompt", "hello"}, {"max_tokens", 20}}),
                           generate.handlers());
  ASSERT_TRUE(generate.wait_done());
  EXPECT_TRUE(generate.status().ok());
  EXPECT_EQ(generate.reason(), "done");
  EXPECT_EQ(generate.value_count(), 20u);
}

TEST(Generate, MaxStepsEndsTheCall) {
  TempDir packages;
  const std::string capped =
      copy_package(packages, "chargen", "chargen-capped", [](std::string text) {
        return replace(std::move(text), "max_steps: 100000000", "max_steps: 5");
      });
  WorkerHarness worker({Model(capped)});
  worker.ready();
  Recorder recorder;
  worker.client().generate("chargen", "generate",
                           json_inputs({{"prompt", "x"}, {"max_tokens", 1000}}),
                           recorder.handlers());
  ASSERT_TRUE(recorder.wait_done());
  EXPECT_TRUE(recorder.status().ok());
  EXPECT_EQ(recorder.reason(), "max_steps");
  EXPECT_EQ(recorder.value_count(), 5u);
}

// A chunk reaches the client while the generation is still running: the runtime does not
// collect chunks until the end. Then cancel stops it between steps.
TEST(Generate, FirstChunkArrivesBeforeTheLastStepAndCancelStops) {
  WorkerHarness worker({Model(model_package("chargen"))});
  worker.ready();
  Recorder recorder;
  // A million steps: far more than run before the client sees its first chunk and cancels.
  auto call = worker.client().generate("chargen", "generate",
                                       json_inputs({{"prompt", "a"}, {"max_tokens", 1'000'000}}),
                                       recorder.handlers());
  ASSERT_TRUE(recorder.wait_values(1));
  // The worker still has the call between steps: it has not run its last step.
  const json during = worker.stats("chargen");
  EXPECT_EQ(during.at("generating"), 1) << during.dump();
  EXPECT_EQ(recorder.done_count(), 0);
  call->cancel();
  ASSERT_TRUE(recorder.wait_done());
  EXPECT_TRUE(recorder.status().ok());
  EXPECT_EQ(recorder.reason(), "cancelled");
  const size_t chunks = recorder.value_count();
  EXPECT_LT(chunks, 1'000'000u);
  // Nothing runs for it any more.
  const json after = worker.stats("chargen");
  EXPECT_EQ(after.at("generating"), 0);
  EXPECT_EQ(after.at("live_calls"), 0);
  const int64_t steps = after.at("step_rows").get<int64_t>();
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(worker.stats("chargen").at("step_rows").get<int64_t>(), steps);
  EXPECT_EQ(recorder.value_count(), chunks);
}

// Concurrent generate calls of one model share their steps (iteration-level batching), and
// each still gets exactly the text it gets alone.
TEST(Generate, ConcurrentCallsShareStepsAndMatchSoloRuns) {
  WorkerHarness worker({Model(model_package("chargen"))});
  worker.ready();
  const std::vector<std::string> prompts = {"the", "outpost", "q", "zebra", "42", "hello world"};
  std::vector<std::string> solo;
  for (const auto& prompt : prompts) {
    Recorder recorder;
    worker.client().generate("chargen", "generate",
                             json_inputs({{"prompt", prompt}, {"max_tokens", 40}}),
                             recorder.handlers());
    EXPECT_TRUE(recorder.wait_done());
    solo.push_back(joined_chunks(recorder));
  }
  const json before = worker.stats("chargen");
  std::vector<std::unique_ptr<Recorder>> recorders;
  for (const auto& prompt : prompts) {
    recorders.push_back(std::make_unique<Recorder>());
    worker.client().generate(
        "chargen", "generate",
        json_inputs(
            {{"prompt", prompt}, {"max_tokens", 40 + 10 * static_cast<int>(recorders.size())}}),
        recorders.back()->handlers());
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(recorders[i]->wait_done());
    EXPECT_EQ(recorders[i]->reason(), "done");
    EXPECT_EQ(joined_chunks(*recorders[i]).substr(0, 40), solo[i]) << prompts[i];
  }
  const json after = worker.stats("chargen");
  const int64_t steps =
      after.at("generate_steps").get<int64_t>() - before.at("generate_steps").get<int64_t>();
  const int64_t rows = after.at("step_rows").get<int64_t>() - before.at("step_rows").get<int64_t>();
  EXPECT_EQ(rows, 40 * 6 + 10 * (1 + 2 + 3 + 4 + 5 + 6));
  // Steps were shared: fewer executions than call-steps.
  EXPECT_LT(steps, rows);
}

TEST(Stream, ItemsKeepTheirOrderAndCarryState) {
  WorkerHarness worker({Model(model_package("accumulator"))});
  worker.ready();
  Recorder recorder;
  constexpr int kItems = 200;
  constexpr int64_t kWindow = 8;
  auto call = worker.client().stream("accumulator", "stream", recorder.handlers(), kWindow);
  int refused = 0;
  for (int i = 1; i <= kItems;) {
    WireValue item;
    item.value = json::object();
    item.value["x"] = add_tensor(item, {1}, {static_cast<float>(i)});
    const Status sent = call->send(std::move(item));
    if (sent.ok()) {
      ++i;
      continue;
    }
    // The window is full: outputs must come back before more items go out.
    ASSERT_EQ(sent.error().code(), ErrorCode::kResourceExhausted) << sent.error().to_string();
    ++refused;
    ASSERT_TRUE(recorder.wait_values(static_cast<size_t>(i - kWindow)))
        << "the call ended: "
        << (recorder.status().ok() ? recorder.reason() : recorder.status().error().to_string());
  }
  ASSERT_TRUE(call->close().ok());
  ASSERT_TRUE(recorder.wait_done());
  EXPECT_TRUE(recorder.status().ok()) << recorder.status().error().to_string();
  EXPECT_EQ(recorder.reason(), "done");
  const auto values = recorder.values();
  ASSERT_EQ(values.size(), static_cast<size_t>(kItems));
  for (int i = 0; i < kItems; ++i) {
    EXPECT_EQ(recorder.seqs()[i], i);
    // The running sum 1 + 2 + ... + (i + 1): the state went from item to item, in order.
    EXPECT_EQ(floats(values[i], values[i].value)[0], static_cast<float>((i + 1) * (i + 2)) / 2.0F)
        << i;
  }
  EXPECT_GT(refused, 0);
}

TEST(Stream, StatefulTextAndStatelessUnaryMethods) {
  WorkerHarness worker({Model(model_package("accumulator")), Model(model_package("text"))});
  worker.ready();
  Recorder words;
  auto call = worker.client().stream("accumulator", "words", words.handlers(), 4);
  size_t sent = 0;
  for (const char* text : {"one", "two three", "", "four five six"}) {
    ASSERT_TRUE(call->send(json_inputs({{"text", text}})).ok());
    ASSERT_TRUE(words.wait_values(++sent));
  }
  ASSERT_TRUE(call->close().ok());
  ASSERT_TRUE(words.wait_done());
  std::vector<int> counts;
  for (const auto& value : words.values()) counts.push_back(value.value.get<int>());
  EXPECT_EQ(counts, (std::vector<int>{1, 3, 3, 6}));

  // Any unary method can be called as a stream: items in, outputs out, in order.
  Recorder texts;
  auto text_call = worker.client().stream("text", "predict", texts.handlers(), 16);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(text_call->send(json_inputs({{"text", "item " + std::to_string(i)}})).ok());
  }
  ASSERT_TRUE(text_call->close().ok());
  ASSERT_TRUE(texts.wait_done());
  ASSERT_EQ(texts.value_count(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(texts.values()[i].value, std::to_string(i) + " ITEM");
  }
}

TEST(Stream, CancelEndsTheCallAndABadItemEndsItWithAnError) {
  WorkerHarness worker({Model(model_package("accumulator"))});
  worker.ready();
  Recorder cancelled;
  auto call = worker.client().stream("accumulator", "words", cancelled.handlers(), 4);
  ASSERT_TRUE(call->send(json_inputs({{"text", "a"}})).ok());
  ASSERT_TRUE(cancelled.wait_values(1));
  call->cancel();
  ASSERT_TRUE(cancelled.wait_done());
  EXPECT_EQ(cancelled.reason(), "cancelled");

  Recorder bad;
  auto bad_call = worker.client().stream("accumulator", "words", bad.handlers(), 4);
  ASSERT_TRUE(bad_call->send(json_inputs({{"text", "fine"}})).ok());
  ASSERT_TRUE(bad_call->send(json_inputs({{"text", 12}})).ok());
  ASSERT_TRUE(bad.wait_done());
  ASSERT_FALSE(bad.status().ok());
  EXPECT_EQ(bad.status().error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.status().error().message().find("item 1"), std::string::npos)
      << bad.status().error().message();
  EXPECT_EQ(worker.stats("accumulator").at("live_calls"), 0);
}

}  // namespace
}  // namespace outpost::testing
