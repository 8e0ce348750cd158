// The decoder contract through a real outpost-worker (docs/models.md, "Decoder models"): the
// example llama and gpt2 packages are transformers' own architectures with random weights, and
// build/models/reference/NAME.json holds the tokens transformers' greedy generate() gives for
// their prompts. The worker owns the KV cache, prefills in chunks, decodes every running
// sequence in one call, samples, stops, and keeps each sequence independent of the others.
#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/utf8.h"
#include "tests/runtime/worker_harness.h"

namespace outpost::testing {
namespace {

using Model = WorkerHarness::Model;

struct Reference {
  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::vector<int64_t>> greedy;
};

Reference reference(const std::string& model) {
  std::ifstream in(std::string(OUTPOST_MODELS_DIR) + "/reference/" + model + ".json");
  const json doc = json::parse(in);
  return {doc.at("prompts").get<std::vector<std::vector<int64_t>>>(),
          doc.at("greedy").get<std::vector<std::vector<int64_t>>>()};
}

// What a decoder call sent: its tokens and text over all chunks, and its last chunk's
// finish_reason and usage.
struct Generation {
  std::vector<int64_t> tokens;
  std::string text;
  std::string finish_reason;
  json usage;
  size_t chunks = 0;
  bool every_text_valid = true;
};

Generation collect(const Recorder& recorder) {
  Generation out;
  for (const auto& value : recorder.values()) {
    ++out.chunks;
    const json& chunk = value.value;
    for (const auto& token : chunk.at("token_ids")) out.tokens.push_back(token.get<int64_t>());
    if (chunk.contains("text")) {
      const auto& text = chunk.at("text").get_ref<const std::string&>();
      out.every_text_valid = out.every_text_valid && valid_utf8(text);
      out.text += text;
    }
    if (chunk.contains("finish_reason")) {
      out.finish_reason = chunk.at("finish_reason");
      out.usage = chunk.at("usage");
    }
  }
  return out;
}

// Starts a call; the recorder gets its chunks.
std::shared_ptr<protocol::WorkerCall> start(WorkerHarness& worker, const std::string& model,
                                            json inputs, Recorder& recorder) {
  WireValue value;
  value.value = std::move(inputs);
  return worker.client().generate(model, "generate", std::move(value), recorder.handlers());
}

Generation run(WorkerHarness& worker, const std::string& model, json inputs) {
  Recorder recorder;
  start(worker, model, std::move(inputs), recorder);
  EXPECT_TRUE(recorder.wait_done());
  EXPECT_TRUE(recorder.status().ok()) << recorder.status().error().to_string();
  return collect(recorder);
}

std::vector<int64_t> head(const std::vector<int64_t>& tokens, size_t n) {
  return {tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(std::min(n, tokens.size()))};
}

class DecoderTest : public ::testing::TestWithParam<std::string> {};

// Alone, each prompt (one of 40 tokens is prefilled in three chunks of at most 16) gives the
// tokens transformers' greedy generate() gives, and the last chunk says why it ended and how
// many tokens it took.
TEST_P(DecoderTest, GreedyTokensMatchTransformers) {
  const std::string model = GetParam();
  const Reference ref = reference(model);
  WorkerHarness worker({Model(model_package(model))});
  worker.ready();
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    const auto max_tokens = static_cast<int64_t>(ref.greedy[i].size());
    const Generation got =
        run(worker, model, json{{"prompt_tokens", ref.prompts[i]}, {"max_tokens", max_tokens}});
    EXPECT_EQ(got.tokens, ref.greedy[i]) << model << " prompt " << i;
    EXPECT_EQ(got.finish_reason, "length");
    EXPECT_EQ(got.usage,
              (json{{"prompt_tokens", ref.prompts[i].size()}, {"completion_tokens", max_tokens}}));
  }
}

// Eight calls on four cache slots, with different prompt lengths and different lengths of
// output: the ones beyond four wait for a slot and join the running batch as others leave.
// Each still gets exactly its greedy tokens, and decode calls were shared.
TEST_P(DecoderTest, SequencesJoiningAndLeavingMidFlightMatchTheirSoloTokens) {
  const std::string model = GetParam();
  const Reference ref = reference(model);
  WorkerHarness worker({Model(model_package(model))});
  worker.ready();
  const json before = worker.stats(model);
  const std::vector<int64_t> lengths = {24, 5, 17, 9, 24, 3, 12, 20};
  std::vector<std::unique_ptr<Recorder>> recorders;
  for (size_t i = 0; i < lengths.size(); ++i) {
    recorders.push_back(std::make_unique<Recorder>());
    start(worker, model,
          json{{"prompt_tokens", ref.prompts[i % ref.prompts.size()]}, {"max_tokens", lengths[i]}},
          *recorders.back());
  }
  int64_t tokens = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    ASSERT_TRUE(recorders[i]->wait_done());
    ASSERT_TRUE(recorders[i]->status().ok()) << recorders[i]->status().error().to_string();
    const Generation got = collect(*recorders[i]);
    EXPECT_EQ(got.tokens, head(ref.greedy[i % ref.prompts.size()], lengths[i])) << "call " << i;
    tokens += lengths[i];
  }
  const json after = worker.stats(model);
  const int64_t steps =
      after.at("generate_steps").get<int64_t>() - before.at("generate_steps").get<int64_t>();
  // Every token after each call's first came from a decode step, and steps were shared.
  EXPECT_LT(steps, tokens - static_cast<int64_t>(lengths.size()));
  EXPECT_EQ(after.at("live_calls"), 0);
}

// A sampled sequence depends on its seed only: the same seed gives the same tokens alone and
// among other sampled sequences; another seed gives others.
TEST_P(DecoderTest, SeededSamplingIsReproducibleAndIndependentOfTheBatch) {
  const std::string model = GetParam();
  const Reference ref = reference(model);
  WorkerHarness worker({Model(model_package(model))});
  worker.ready();
  const auto sampled = [&](int64_t seed) {
    return json{{"prompt_tokens", ref.prompts[0]},
                {"max_tokens", 24},
                {"temperature", 0.9},
                {"top_k", 50},
                {"top_p", 0.95},
                {"seed", seed}};
  };
  const Generation alone = run(worker, model, sampled(42));
  EXPECT_EQ(alone.tokens.size(), 24u);
  EXPECT_NE(alone.tokens, ref.greedy[0]);  // sampling, not greedy
  EXPECT_EQ(run(worker, model, sampled(42)).tokens, alone.tokens);
  std::vector<std::unique_ptr<Recorder>> recorders;
  for (const int64_t seed : {7, 42, 8}) {
    recorders.push_back(std::make_unique<Recorder>());
    start(worker, model, sampled(seed), *recorders.back());
  }
  for (auto& recorder : recorders) ASSERT_TRUE(recorder->wait_done());
  EXPECT_EQ(collect(*recorders[1]).tokens, alone.tokens);
  EXPECT_NE(collect(*recorders[0]).tokens, alone.tokens);
  EXPECT_NE(collect(*recorders[0]).tokens, collect(*recorders[2]).tokens);
}

// Cancelling one sequence ends it at once and gives its slot back; the others in its batch go
// on to exactly their tokens, and four new calls then fit the four slots.
TEST_P(DecoderTest, CancellingOneLeavesTheOthersIntact) {
  const std::string model = GetParam();
  const Reference ref = reference(model);
  WorkerHarness worker({Model(model_package(model))});
  worker.ready();
  Recorder endless;
  auto call =
      start(worker, model, json{{"prompt_tokens", ref.prompts[2]}, {"max_tokens", 1000}}, endless);
  std::vector<std::unique_ptr<Recorder>> others;
  for (size_t i : {0, 1, 3}) {
    others.push_back(std::make_unique<Recorder>());
    start(worker, model, json{{"prompt_tokens", ref.prompts[i]}, {"max_tokens", 24}},
          *others.back());
  }
  ASSERT_TRUE(endless.wait_values(3));
  call->cancel();
  ASSERT_TRUE(endless.wait_done());
  EXPECT_EQ(endless.reason(), "cancelled");
  EXPECT_LT(collect(endless).tokens.size(), 127u);
  const size_t refs[] = {0, 1, 3};
  for (size_t k = 0; k < others.size(); ++k) {
    ASSERT_TRUE(others[k]->wait_done());
    EXPECT_EQ(collect(*others[k]).tokens, ref.greedy[refs[k]]);
  }
  std::vector<std::unique_ptr<Recorder>> next;
  for (size_t i = 0; i < 4; ++i) {
    next.push_back(std::make_unique<Recorder>());
    start(worker, model, json{{"prompt_tokens", ref.prompts[i]}, {"max_tokens", 4}}, *next.back());
  }
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(next[i]->wait_done());
    EXPECT_EQ(collect(*next[i]).tokens, head(ref.greedy[i], 4));
  }
}

// A sequence that reaches the end of the context ends with "length" after the last position.
TEST_P(DecoderTest, TheContextEndsASequence) {
  const std::string model = GetParam();
  const Reference ref = reference(model);
  WorkerHarness worker({Model(model_package(model))});
  worker.ready();
  std::vector<int64_t> prompt(120, 5);
  const Generation got = run(worker, model, json{{"prompt_tokens", prompt}, {"max_tokens", 64}});
  // 120 prompt positions; tokens 1..8 are fed at positions 120..127, and the ninth, from the
  // last position's logits, has no room to be fed.
  EXPECT_EQ(got.tokens.size(), 9u);
  EXPECT_EQ(got.finish_reason, "length");
  EXPECT_EQ(got.usage.at("completion_tokens"), 9);
}

// Bad controls and prompts are refused with what is wrong, for that call only; a good call
// beside them still gets its tokens.
TEST_P(DecoderTest, BadInputsAreRefusedAlone) {
  const std::string model = GetParam();
  const Reference ref = reference(model);
  WorkerHarness worker({Model(model_package(model))});
  worker.ready();
  Recorder good;
  start(worker, model, json{{"prompt_tokens", ref.prompts[1]}, {"max_tokens", 24}}, good);
  const std::vector<std::pair<json, std::string>> bad = {
      {json{{"prompt_tokens", {1, 5000}}}, "5000 is not a token id (the vocabulary has 260)"},
      {json{{"prompt_tokens", std::vector<int64_t>(129, 1)}},
       "the prompt has 129 tokens; the model's context holds 128"},
      {json{{"prompt_tokens", json::array()}}, "the prompt is empty"},
      {json{{"prompt_tokens", {1}}, {"temperature", -1.0}}, "temperature must be 0"},
      {json{{"prompt_tokens", {1}}, {"top_p", 0.0}}, "top_p must be more than 0"},
      {json{{"prompt_tokens", {1}}, {"max_tokens", 0}}, "max_tokens must be at least 1"},
      {json{{"max_tokens", 3}}, "prompt"},
      {json{{"prompt_tokens", {1}}, {"temprature", 1.0}}, "unknown input 'temprature'"},
  };
  for (const auto& [inputs, message] : bad) {
    Recorder recorder;
    start(worker, model, inputs, recorder);
    ASSERT_TRUE(recorder.wait_done());
    ASSERT_FALSE(recorder.status().ok()) << inputs.dump();
    EXPECT_EQ(recorder.status().error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(recorder.status().error().message().find(message), std::string::npos)
        << recorder.status().error().message();
    EXPECT_EQ(recorder.value_count(), 0u);
  }
  ASSERT_TRUE(good.wait_done());
  EXPECT_EQ(collect(good).tokens, ref.greedy[1]);
}

INSTANTIATE_TEST_SUITE_P(Architectures, DecoderTest, ::testing::Values("llama", "gpt2"));

// The llama example has the bytes tokenizer: a text prompt is its bytes, chunks carry text that
// is always whole UTF-8, stop strings and stop token ids end the sequence.
TEST(DecoderText, TextPromptStopStringsAndStopIds) {
  const Reference ref = reference("llama");
  WorkerHarness worker({Model(model_package("llama"))});
  worker.ready();
  // Prompt 3 is the bytes of "Once upon a time".
  const Generation text =
      run(worker, "llama", json{{"prompt", "Once upon a time"}, {"max_tokens", 24}});
  EXPECT_EQ(text.tokens, ref.greedy[3]);
  EXPECT_TRUE(text.every_text_valid);
  EXPECT_TRUE(valid_utf8(text.text));

  // A stop token id: the sequence ends with it (it is in token_ids, not in the text).
  const std::vector<int64_t>& greedy = ref.greedy[0];
  const int64_t stop_id = greedy[5];
  const size_t first = std::find(greedy.begin(), greedy.end(), stop_id) - greedy.begin();
  const Generation stopped = run(
      worker, "llama",
      json{{"prompt_tokens", ref.prompts[0]}, {"max_tokens", 24}, {"stop_token_ids", {stop_id}}});
  EXPECT_EQ(stopped.tokens, head(greedy, first + 1));
  EXPECT_EQ(stopped.finish_reason, "stop");

  // A stop string: the first printable ASCII byte the greedy tokens make after the first two.
  const auto printable = std::find_if(greedy.begin() + 2, greedy.end(),
                                      [](int64_t t) { return t >= 0x21 && t <= 0x7e; });
  ASSERT_NE(printable, greedy.end()) << "the reference has no printable token to stop at";
  const std::string stop(1, static_cast<char>(*printable));
  const size_t at = std::find(greedy.begin(), greedy.end(), *printable) - greedy.begin();
  const Generation cut =
      run(worker, "llama",
          json{{"prompt_tokens", ref.prompts[0]}, {"max_tokens", 24}, {"stop", {stop}}});
  EXPECT_EQ(cut.finish_reason, "stop");
  EXPECT_EQ(cut.tokens, head(greedy, at + 1));
  EXPECT_EQ(cut.text.find(stop), std::string::npos) << cut.text;
  EXPECT_TRUE(cut.every_text_valid);
}

// llama_sp carries a SentencePiece model (trained by make-example-models) and an end token: the
// worker encodes a text prompt as SentencePiece's Python does, generates transformers' greedy
// tokens (ending at </s> if the model says it), and its text is what SentencePiece decodes.
TEST(DecoderText, SentencePieceEncodesAndDecodesAsSentencePieceDoes) {
  std::ifstream in(std::string(OUTPOST_MODELS_DIR) + "/reference/llama_sp.json");
  const json ref = json::parse(in);
  WorkerHarness worker({Model(model_package("llama_sp"))});
  worker.ready();
  const int64_t eos = ref.at("eos");
  for (size_t i = 0; i < ref.at("texts").size(); ++i) {
    const std::string text = ref.at("texts").at(i);
    const Generation got = run(worker, "llama_sp", json{{"prompt", text}, {"max_tokens", 24}});
    const auto greedy = ref.at("greedy").at(i).get<std::vector<int64_t>>();
    EXPECT_EQ(got.usage.at("prompt_tokens"), ref.at("prompts").at(i).size()) << text;
    EXPECT_EQ(got.tokens, greedy) << text;
    EXPECT_EQ(got.finish_reason, greedy.back() == eos ? "stop" : "length") << text;
    EXPECT_EQ(got.text, ref.at("continuations").at(i).get<std::string>()) << text;
    EXPECT_TRUE(got.every_text_valid);
  }
}

// gpt2 has no tokenizer: a text prompt and stop strings are refused with what to send instead.
TEST(DecoderText, WithoutATokenizerTextIsRefused) {
  WorkerHarness worker({Model(model_package("gpt2"))});
  worker.ready();
  for (const json& inputs :
       {json{{"prompt", "hello"}}, json{{"prompt_tokens", {1}}, {"stop", {"x"}}}}) {
    Recorder recorder;
    start(worker, "gpt2", inputs, recorder);
    ASSERT_TRUE(recorder.wait_done());
    ASSERT_FALSE(recorder.status().ok());
    EXPECT_NE(recorder.status().error().message().find("tokenizer"), std::string::npos)
        << recorder.status().error().message();
  }
}

// With one slot, calls beyond it wait for it in order (and then get exactly their tokens); the
// waiting line is bounded by batching.max_queue_size, and a call beyond it is refused at once.
TEST(DecoderQueue, CallsBeyondTheFreeSlotsWaitAndTheLineIsBounded) {
  const Reference ref = reference("gpt2");
  TempDir packages;
  const std::string one_slot =
      copy_package(packages, "gpt2", "gpt2-one-slot", [](std::string text) {
        text = replace(std::move(text), "slots: 4", "slots: 1");
        return replace(std::move(text), "kind: \"generate\"",
                       "kind: \"generate\"\n    batching:\n      max_queue_size: 2");
      });
  WorkerHarness worker({Model(one_slot)});
  worker.ready();
  Recorder running;
  auto first =
      start(worker, "gpt2", json{{"prompt_tokens", ref.prompts[2]}, {"max_tokens", 1000}}, running);
  ASSERT_TRUE(running.wait_values(1));  // it holds the slot
  // A bad call is refused as it arrives, not after waiting for the slot.
  Recorder bad;
  start(worker, "gpt2", json{{"prompt_tokens", std::vector<int64_t>(129, 1)}}, bad);
  ASSERT_TRUE(bad.wait_done());
  EXPECT_EQ(bad.status().error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(running.done_count(), 0);  // the slot was still taken
  Recorder second;
  Recorder third;
  Recorder refused;
  start(worker, "gpt2", json{{"prompt_tokens", ref.prompts[0]}, {"max_tokens", 24}}, second);
  start(worker, "gpt2", json{{"prompt_tokens", ref.prompts[1]}, {"max_tokens", 24}}, third);
  start(worker, "gpt2", json{{"prompt_tokens", ref.prompts[3]}, {"max_tokens", 24}}, refused);
  ASSERT_TRUE(refused.wait_done());
  ASSERT_FALSE(refused.status().ok());
  EXPECT_EQ(refused.status().error().code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(worker.stats("gpt2").at("starting"), 2);
  EXPECT_EQ(second.value_count(), 0u);  // still waiting for the slot
  first->cancel();
  ASSERT_TRUE(second.wait_done());
  ASSERT_TRUE(third.wait_done());
  EXPECT_EQ(collect(second).tokens, ref.greedy[0]);
  EXPECT_EQ(collect(third).tokens, ref.greedy[1]);
}

// A model that exports the pair without config.yaml's decoder section, a decoder section for a
// model without the pair, and a tokenizer file that is not one are refused at load, saying so.
TEST(DecoderLoad, BrokenPackagesAreRefusedWithWhatIsMissing) {
  TempDir packages;
  const std::string no_geometry = copy_package(
      packages, "gpt2", "no-geometry",
      [](const std::string& text) { return text.substr(0, text.find("    decoder:")); });
  const std::string not_a_decoder =
      copy_package(packages, "chargen", "not-a-decoder", [](std::string text) {
        return replace(std::move(text), "step_batchable: true",
                       "step_batchable: true\n    decoder: {layers: 1, kv_heads: 1, head_dim: 1, "
                       "max_context: 8}");
      });
  const std::string bad_tokenizer =
      copy_package(packages, "llama_sp", "bad-tokenizer", [](std::string text) { return text; });
  std::ofstream(bad_tokenizer + "/tokenizer.model", std::ios::trunc) << "not a model";
  WorkerHarness worker({});
  worker.ready();
  const auto load = [&](const std::string& package) {
    protocol::LoadRequest request;
    request.package = package;
    request.model = "m";
    return worker.client().load(request).get();
  };
  const auto no_geometry_load = load(no_geometry);
  ASSERT_FALSE(no_geometry_load.ok());
  EXPECT_NE(
      no_geometry_load.error().message().find("config.yaml must give methods.generate.decoder"),
      std::string::npos)
      << no_geometry_load.error().to_string();
  const auto not_a_decoder_load = load(not_a_decoder);
  ASSERT_FALSE(not_a_decoder_load.ok());
  EXPECT_NE(not_a_decoder_load.error().message().find(
                "methods.generate.decoder is set, but model.pt exports no generate_prefill"),
            std::string::npos)
      << not_a_decoder_load.error().to_string();
  const auto bad_tokenizer_load = load(bad_tokenizer);
  ASSERT_FALSE(bad_tokenizer_load.ok());
  EXPECT_NE(bad_tokenizer_load.error().message().find(
                "decoder.tokenizer_file tokenizer.model is not a SentencePiece model"),
            std::string::npos)
      << bad_tokenizer_load.error().to_string();
  // The worker goes on: a good package still loads after the refusals.
  EXPECT_TRUE(load(model_package("llama_sp")).ok());
}

// Two instances, each with its own cache of four slots: eight sequences run at once, each
// stepped only by the instance that holds its slot, and each gets exactly its greedy tokens.
TEST(DecoderInstances, EachSequenceStaysWithTheInstanceThatHoldsItsCache) {
  const Reference ref = reference("gpt2");
  TempDir packages;
  const std::string two = copy_package(packages, "gpt2", "gpt2-two", [](const std::string& text) {
    return text + "instances: 2\n";
  });
  WorkerHarness worker({Model(two)});
  const json health = worker.ready();
  EXPECT_EQ(health.at("models").at(0).at("instances"), 2);
  // Keys and values of 2 layers x 4 slots x 128 positions x 4 heads x 16 dims, per instance.
  EXPECT_EQ(health.at("models").at(0).at("cache_bytes"), 2 * (2 * 2 * 4 * 128 * 4 * 16 * 4));
  std::vector<std::unique_ptr<Recorder>> recorders;
  for (size_t i = 0; i < 12; ++i) {
    recorders.push_back(std::make_unique<Recorder>());
    start(worker, "gpt2",
          json{{"prompt_tokens", ref.prompts[i % ref.prompts.size()]},
               {"max_tokens", 6 + static_cast<int64_t>(i % 4) * 6}},
          *recorders.back());
  }
  for (size_t i = 0; i < recorders.size(); ++i) {
    ASSERT_TRUE(recorders[i]->wait_done());
    ASSERT_TRUE(recorders[i]->status().ok()) << recorders[i]->status().error().to_string();
    EXPECT_EQ(collect(*recorders[i]).tokens,
              head(ref.greedy[i % ref.prompts.size()], 6 + (i % 4) * 6))
        << "call " << i;
  }
}

// The counter fixture counts up from the prompt's last token and raises in decode when fed 13,
// in prefill when the prompt holds 14. A sequence it raises on fails alone, with what the model
// said, after the tokens it had; the others in its decode batch go on to their last token, and
// the failed one's slot is free again.
TEST(DecoderFaults, ASequenceTheModelRaisesOnFailsAloneInItsBatch) {
  WorkerHarness worker({Model(model_package("counter"))});
  worker.ready();
  Recorder fails;
  Recorder refused;
  Recorder first;
  Recorder second;
  start(worker, "counter", json{{"prompt_tokens", {20}}, {"max_tokens", 20}}, first);
  start(worker, "counter", json{{"prompt_tokens", {9, 10}}, {"max_tokens", 20}}, fails);
  start(worker, "counter", json{{"prompt_tokens", {3, 14}}, {"max_tokens", 20}}, refused);
  start(worker, "counter", json{{"prompt_tokens", {30}}, {"max_tokens", 20}}, second);
  const auto counting = [](int64_t from, int64_t count) {
    std::vector<int64_t> out;
    for (int64_t i = 0; i < count; ++i) out.push_back((from + i) % 64);
    return out;
  };
  ASSERT_TRUE(fails.wait_done());
  ASSERT_FALSE(fails.status().ok());
  EXPECT_NE(fails.status().error().message().find("method generate_decode raised"),
            std::string::npos)
      << fails.status().error().message();
  EXPECT_NE(fails.status().error().message().find("decode cannot take token 13"), std::string::npos)
      << fails.status().error().message();
  EXPECT_EQ(collect(fails).tokens, counting(11, 3));  // 11, 12, 13: then 13 was fed
  ASSERT_TRUE(refused.wait_done());
  ASSERT_FALSE(refused.status().ok());
  EXPECT_NE(refused.status().error().message().find("method generate_prefill raised"),
            std::string::npos)
      << refused.status().error().message();
  EXPECT_EQ(refused.value_count(), 0u);
  ASSERT_TRUE(first.wait_done());
  ASSERT_TRUE(second.wait_done());
  EXPECT_TRUE(first.status().ok()) << first.status().error().to_string();
  EXPECT_TRUE(second.status().ok()) << second.status().error().to_string();
  EXPECT_EQ(collect(first).tokens, counting(21, 20));
  EXPECT_EQ(collect(second).tokens, counting(31, 20));
  // Four slots: all free again.
  std::vector<std::unique_ptr<Recorder>> next;
  for (int64_t i = 0; i < 4; ++i) {
    next.push_back(std::make_unique<Recorder>());
    start(worker, "counter", json{{"prompt_tokens", {40 + i}}, {"max_tokens", 3}}, *next.back());
  }
  for (int64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(next[static_cast<size_t>(i)]->wait_done());
    EXPECT_EQ(collect(*next[static_cast<size_t>(i)]).tokens, counting(41 + i, 3));
  }
}

// The cache is the runtime's: health reports its bytes in the model's footprint.
TEST(DecoderMemory, TheCacheIsInTheFootprint) {
  WorkerHarness worker({Model(model_package("llama"))});
  const json health = worker.ready();
  const json& model = health.at("models").at(0);
  // keys and values: 2 layers x 4 slots x 128 positions x 2 heads x 16 dims x 4 bytes, twice.
  EXPECT_EQ(model.at("cache_bytes"), 2 * 2 * 4 * 128 * 2 * 16 * 4);
  EXPECT_EQ(model.at("memory_bytes").get<uint64_t>(),
            model.at("weights_bytes").get<uint64_t>() + model.at("cache_bytes").get<uint64_t>());
}

}  // namespace
}  // namespace outpost::testing
