// The worker protocol's parsers without a worker: message envelopes and their limits, tensor
// Values in every form, the control-protocol conversions, config.yaml and the worker spec.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/base64.h"
#include "protocol/model_config.h"
#include "protocol/tensor_wire.h"
#include "protocol/worker_protocol.h"
#include "protocol/worker_spec.h"

namespace outpost::protocol {
namespace {

using nlohmann::json;

Result<Message> decode(const std::vector<std::string>& frames, const Limits& limits = {}) {
  std::vector<std::string_view> views(frames.begin(), frames.end());
  return decode_message(views, limits);
}

TEST(Envelope, DecodesHeaderAndParts) {
  auto message = decode({R"({"type": "predict", "id": "r1"})", "abc", ""});
  ASSERT_TRUE(message.ok());
  EXPECT_EQ(message->type(), "predict");
  EXPECT_EQ(message->id(), "r1");
  EXPECT_EQ(message->parts, (std::vector<std::string>{"abc", ""}));
}

TEST(Envelope, RefusesWhatIsNotAMessage) {
  EXPECT_EQ(decode({}).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(decode({"[1, 2]"}).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(decode({"{bad json"}).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(decode({R"({"type": "x"})"}).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(decode({R"({"type": 3, "id": "a"})"}).error().code(), ErrorCode::kInvalidArgument);
  std::string id;
  Limits limits;
  limits.max_message_bytes = 100;
  std::vector<std::string_view> frames = {
      R"({"type": "x", "id": "big"})",
      std::string_view("012345678901234567890123456789012345678901234567890123456789012345678901234"
                       "5678901234567890123456789")};
  auto too_big = decode_message(frames, limits, &id);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(id, "big");  // the refusal can be addressed
  limits = Limits{};
  limits.max_parts = 1;
  EXPECT_EQ(decode({R"({"type": "x", "id": "a"})", "1", "2"}, limits).error().code(),
            ErrorCode::kResourceExhausted);
}

TEST(Envelope, ErrorsRoundTripTheirCode) {
  const json header = error_header("r9", Error(ErrorCode::kDataLoss, "hash mismatch"));
  EXPECT_EQ(header.at("code"), "data_loss");
  const Error error = error_from_header(header);
  EXPECT_EQ(error.code(), ErrorCode::kDataLoss);
  EXPECT_EQ(error.message(), "hash mismatch");
  EXPECT_EQ(error_from_header(json{{"code", "no_such_code"}}).code(), ErrorCode::kInternal);
  // Headers with strings that are not UTF-8 still encode.
  EXPECT_FALSE(encode_header(json{{"s", std::string("\xff\xfe")}}).empty());
}

TEST(TensorValues, EveryDataFormDecodes) {
  const float data[] = {1.5f, -2.0f};
  std::string bytes(sizeof(data), '\0');
  std::memcpy(bytes.data(), data, sizeof(data));
  const std::vector<std::string> parts = {bytes};
  auto from_part =
      decode_tensor(json{{"dtype", "float32"}, {"shape", {2}}, {"part", 0}}, parts, 1 << 20, "x");
  ASSERT_TRUE(from_part.ok()) << from_part.error().to_string();
  EXPECT_EQ(from_part->bytes(), bytes);
  auto from_b64 = decode_tensor(
      json{{"dtype", "float32"}, {"shape", {2}}, {"data_b64", "AADAPwAAAMA="}}, {}, 1 << 20, "x");
  ASSERT_TRUE(from_b64.ok()) << from_b64.error().to_string();
  EXPECT_EQ(from_b64->bytes(), bytes);
  auto from_values = decode_tensor(
      json{{"dtype", "int8"}, {"shape", {2, 1}}, {"values", {-128, 127}}}, {}, 1 << 20, "x");
  ASSERT_TRUE(from_values.ok());
  EXPECT_EQ(*from_values->int_values, (std::vector<int64_t>{-128, 127}));
  auto bools = decode_tensor(json{{"dtype", "bool"}, {"shape", {2}}, {"values", {true, 0}}}, {},
                             1 << 20, "x");
  ASSERT_TRUE(bools.ok());
  auto empty = decode_tensor(
      json{{"dtype", "float64"}, {"shape", {0, 3}}, {"values", json::array()}}, {}, 1 << 20, "x");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->float_values->empty());
}

TEST(TensorValues, RefusalsNameTheProblem) {
  const auto refused = [](const json& value, const std::string& says) {
    auto result = decode_tensor(value, {}, 1 << 20, "input 'x'");
    ASSERT_FALSE(result.ok()) << value.dump();
    EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(result.error().message().find(says), std::string::npos) << result.error().message();
    EXPECT_NE(result.error().message().find("input 'x'"), std::string::npos);
  };
  refused(json{{"dtype", "float32"}, {"shape", {2}}}, "needs its data");
  refused(json{{"dtype", "complex"}, {"shape", {2}}, {"values", {1, 2}}}, "unknown dtype");
  refused(json{{"dtype", "float32"}, {"shape", {2}}, {"values", {1}}}, "has 2 values, got 1");
  refused(json{{"dtype", "uint8"}, {"shape", {1}}, {"values", {256}}}, "does not fit in uint8");
  refused(json{{"dtype", "int32"}, {"shape", {1}}, {"values", {1.5}}}, "must be integers");
  refused(json{{"dtype", "float32"}, {"shape", "2"}, {"values", {1, 2}}}, "array of integers");
  refused(json{{"dtype", "float32"}, {"shape", {2}}, {"values", {1, 2}}, {"part", 0}},
          "exactly one of");
  refused(json{{"dtype", "float32"}, {"shape", {2}}, {"data", {1, 2}}}, "unknown tensor key");
  refused(json{{"dtype", "float32"}, {"shape", {1 << 20, 1 << 20}}, {"values", {}}},
          "larger than the limit");
  refused(json{{"dtype", "float32"},
               {"shape", json::array({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})},
               {"values", {1}}},
          "at most 16 dimensions");
  refused(json{{"dtype", "float32"}, {"shape", {1}}, {"part", 0}}, "does not exist");
  // int64 overflow in a shape product is caught, not wrapped.
  refused(json{{"dtype", "float32"}, {"shape", {4294967296LL, 4294967296LL}}, {"values", {}}},
          "larger than the limit");
}

// What a client that asks for values gets: the same numbers as the bytes held, for every dtype.
TEST(TensorValues, BytesComeBackAsNumbersOfEveryDtype) {
  const auto b64 = [](const auto& array) {
    return base64_encode(
        std::string(reinterpret_cast<const char*>(array.data()), array.size() * sizeof(array[0])));
  };
  const std::vector<float> floats = {1.5F, -2.25F, 0.0F, std::numeric_limits<float>::quiet_NaN()};
  const std::vector<int64_t> longs = {-3, 4'000'000'000LL};
  const std::vector<uint8_t> bools = {1, 0};
  // 1.0, -2.0, 65504 (the largest half), the smallest subnormal half (2^-24), -infinity.
  const std::vector<uint16_t> halves = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0xFC00};
  // bfloat16 keeps float32's upper half: 1.0 and -0.5.
  const std::vector<uint16_t> bfloats = {0x3F80, 0xBF00};
  const json outputs{
      {"probs", {{"dtype", "float32"}, {"shape", {2, 2}}, {"data_b64", b64(floats)}}},
      {"nested",
       {{{"dtype", "int64"}, {"shape", {2}}, {"data_b64", b64(longs)}},
        {{"dtype", "bool"}, {"shape", {2}}, {"data_b64", b64(bools)}}}},
      {"half", {{"dtype", "float16"}, {"shape", {5}}, {"data_b64", b64(halves)}}},
      {"bf", {{"dtype", "bfloat16"}, {"shape", {2}}, {"data_b64", b64(bfloats)}}},
      {"label", "cat"}};
  auto values = tensors_to_values(outputs, 1 << 20, 8);
  ASSERT_TRUE(values.ok()) << values.error().to_string();
  EXPECT_EQ(
      (*values)["probs"],
      json({{"dtype", "float32"}, {"shape", {2, 2}}, {"values", {1.5, -2.25, 0.0, nullptr}}}));
  EXPECT_EQ((*values)["nested"][0]["values"], json({-3, 4'000'000'000LL}));
  EXPECT_EQ((*values)["nested"][1]["values"], json({true, false}));
  EXPECT_EQ((*values)["half"]["values"], json({1.0, -2.0, 65504.0, std::ldexp(1.0, -24), nullptr}));
  EXPECT_EQ((*values)["bf"]["values"], json({1.0, -0.5}));
  EXPECT_EQ((*values)["label"], "cat");
  // A tensor whose bytes do not match its shape is refused, not guessed at.
  const json short_tensor{{"dtype", "float32"}, {"shape", {3}}, {"data_b64", b64(bools)}};
  EXPECT_EQ(tensors_to_values(short_tensor, 1 << 20, 8).error().code(),
            ErrorCode::kInvalidArgument);
}

TEST(ControlValues, Base64AndPartsConvertBothWays) {
  json value{{"image", {{"bytes_b64", "aGVsbG8="}}},
             {"nested", {{{"dtype", "uint8"}, {"shape", {2}}, {"data_b64", "AQI="}}}},
             {"text", "bytes_b64 in a string stays"}};
  std::vector<std::string> parts;
  ASSERT_TRUE(move_bytes_to_parts(value, parts).ok());
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0], "hello");
  EXPECT_EQ(value.at("image"), json({{"part", 0}}));
  EXPECT_EQ(value.at("nested")[0].at("part"), 1);
  auto back = parts_to_base64(value, parts);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->at("image"), json({{"bytes_b64", "aGVsbG8="}}));
  EXPECT_EQ(back->at("nested")[0].at("data_b64"), "AQI=");
  EXPECT_FALSE(parts_to_base64(json{{"part", 5}}, parts).ok());
  json bad{{"bytes_b64", "@@"}};
  EXPECT_FALSE(move_bytes_to_parts(bad, parts).ok());
  json deep = json::array();
  for (int i = 0; i < 100; ++i) deep = json::array({deep});
  EXPECT_FALSE(move_bytes_to_parts(deep, parts).ok());
}

TEST(ModelConfigFile, ReadsClarifaiShapeAndDefaults) {
  auto config = parse_model_config(R"(
model:
  id: "classifier"
  user_id: "alice"
inference_compute_info:
  cpu_limit: "1"
  num_accelerators: 0
build_info: {python_version: "3.12"}
checkpoints:
  type: torchscript
  file: weights.pt
  sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  size: 1234
batching:
  max_batch_size: 16
methods:
  predict:
    inputs:
      x: {dtype: float32, shape: [-1, 4]}
  generate:
    step_batchable: true
    max_steps: 10
    example: {prompt: "007", n: 7}
)");
  ASSERT_TRUE(config.ok()) << config.error().to_string();
  EXPECT_EQ(config->model_id, "classifier");
  EXPECT_EQ(config->file, "weights.pt");
  EXPECT_EQ(config->size, 1234u);
  EXPECT_EQ(config->instances, 1);
  EXPECT_EQ(config->batching.max_batch_size, 16);
  EXPECT_EQ(config->batching.max_queue_delay_us, 0);
  EXPECT_EQ(config->method("predict").inputs.at("x").shape, (std::vector<int64_t>{-1, 4}));
  EXPECT_EQ(config->method("predict").batching.max_batch_size, 16);
  EXPECT_FALSE(config->method("predict").batching_set);
  EXPECT_TRUE(config->method("generate").step_batchable);
  // Quoted scalars stay strings; plain ones are typed.
  EXPECT_EQ(config->method("generate").example->at("prompt"), "007");
  EXPECT_EQ(config->method("generate").example->at("n"), 7);
  EXPECT_EQ(config->method("other").batching.max_batch_size, 16);
  EXPECT_EQ(config->raw.at("build_info").at("python_version"), "3.12");
}

// A top-level key that is neither outpost's nor Clarifai's, and not a typo of outpost's, is
// kept, ignored and reported.
TEST(ModelConfigFile, UnknownTopLevelKeysAreWarnedAbout) {
  auto config = parse_model_config(
      "model: {id: a}\nbuild_info: {python_version: \"3.11\"}\nmy_notes: hello\n");
  ASSERT_TRUE(config.ok()) << config.error().to_string();
  EXPECT_EQ(config->warnings,
            std::vector<std::string>{"config.yaml: unknown top-level key my_notes is ignored"});
}

TEST(ModelConfigFile, RefusalsNameTheKey) {
  const auto refused = [](const std::string& yaml, const std::string& says) {
    auto config = parse_model_config(yaml);
    ASSERT_FALSE(config.ok()) << yaml;
    EXPECT_NE(config.error().message().find(says), std::string::npos) << config.error().message();
  };
  refused("model: [", "malformed YAML at line");
  refused("- a\n- b\n", "must be a YAML map");
  refused("inference_compute_info: {}\n", "needs a model");
  refused("model: {id: \"a b\"}\n", "model.id may hold");
  refused("model: {id: a}\nbatching: {max_batch: 3}\n", "unknown key batching.max_batch");
  refused("model: {id: a}\nbatchng: {max_batch_size: 8}\n",
          "unknown key batchng (did you mean batching?)");
  refused("model: {id: a}\nmethod: {}\n", "unknown key method (did you mean methods?)");
  refused("model: {id: a}\nbatching: {max_batch_size: -1}\n", "max_batch_size must be");
  refused("model: {id: a}\ncheckpoints: {type: huggingface}\n", "not one outpost can load");
  refused("model: {id: a}\ncheckpoints: {file: ../x.pt}\n", "checkpoints.file");
  refused("model: {id: a}\ncheckpoints: {sha256: abc}\n", "64 lower-case hex");
  refused("model: {id: a}\nmethods: {p: {kind: batch}}\n", "methods.p.kind");
  refused("model: {id: a}\nmethods: {p: {inputs: {x: {dtype: float32, shape: [-2]}}}}\n",
          "methods.p.inputs.x.shape");
  // Decoder methods (docs/models.md, "Decoder models").
  const std::string decoder = "model: {id: a}\nmethods: {g: {kind: generate, decoder: ";
  refused(decoder + "{layers: 2, kv_heads: 2, head_dim: 16}}}\n",
          "methods.g.decoder.max_context is required");
  refused(decoder + "{layers: 2, kv_heads: 2, head_dim: 16, max_context: 64, slot: 4}}}\n",
          "unknown key methods.g.decoder.slot");
  refused(decoder + "{layers: 2, kv_heads: 2, head_dim: 16, max_context: 64, tokenizer: gpt2}}}\n",
          "tokenizer must be bytes");
  refused(
      decoder + "{layers: 2, kv_heads: 2, head_dim: 16, max_context: 64, cache_dtype: int8}}}\n",
      "cache_dtype must be float32, float16 or bfloat16");
  refused(
      decoder + "{layers: 2, kv_heads: 2, head_dim: 16, max_context: 64, prefill_chunk: 65}}}\n",
      "prefill_chunk must be an integer from 1 to 64");
  refused(decoder + "{layers: 1024, kv_heads: 1024, head_dim: 4096, max_context: 1048576}}}\n",
          "the KV cache would take over 1 TiB");
  refused("model: {id: a}\nmethods: {g: {kind: stream, decoder: {layers: 1}}}\n",
          "decoder is for generate methods");
  refused(decoder +
              "{layers: 2, kv_heads: 2, head_dim: 16, max_context: 64, tokenizer: "
              "sentencepiece, tokenizer_file: ../secret}}}\n",
          "tokenizer_file must be a file name in the package folder");
}

TEST(ModelConfigFile, DecoderSectionIsRead) {
  auto config = parse_model_config(
      "model: {id: a}\nmethods:\n  g:\n    decoder: {layers: 2, kv_heads: 4, head_dim: 8, "
      "max_context: 32, slots: 3, cache_dtype: bfloat16, eos_token_ids: [2, 7], tokenizer: "
      "bytes}\n");
  ASSERT_TRUE(config.ok()) << config.error().to_string();
  const auto& decoder = config->methods.at("g").decoder;
  ASSERT_TRUE(decoder.has_value());
  EXPECT_EQ(decoder->prefill_chunk, 32);  // the default, 256, capped by the context
  EXPECT_EQ(decoder->eos_token_ids, (std::vector<int64_t>{2, 7}));
  EXPECT_EQ(decoder->tokenizer, "bytes");
  EXPECT_EQ(decoder->cache_bytes(), uint64_t{2} * 2 * 3 * 32 * 4 * 8 * 2);
}

TEST(WorkerSpecFile, ParsesAndChecksEveryField) {
  auto spec = parse_worker_spec(R"({"worker_id": "w1", "endpoint": "ipc:///run/outpost/w1.sock",
      "device": "cuda:1", "slice": {"mode": "mps", "mps_thread_percentage": 50,
      "mps_memory_limit": "4G"}, "threads": {"intra_op": 4, "inter_op": 2},
      "models": [{"package": "/m/a", "name": "a", "instances": 2}]})");
  ASSERT_TRUE(spec.ok()) << spec.error().to_string();
  EXPECT_EQ(spec->device_index(), 1);
  EXPECT_EQ(spec->models.at(0).instances, 2);
  EXPECT_EQ(slice_environment(*spec),
            (std::vector<std::string>{"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50",
                                      "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=1=4G"}));
  auto again = parse_worker_spec(worker_spec_to_json(*spec).dump());
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(worker_spec_to_json(*again), worker_spec_to_json(*spec));

  EXPECT_FALSE(parse_worker_spec(R"({"endpoint": "tcp://1.2.3.4:5"})").ok());
  EXPECT_FALSE(parse_worker_spec(R"({"endpoint": "ipc://relative"})").ok());
  EXPECT_FALSE(parse_worker_spec("{\"endpoint\": \"ipc:///" + std::string(120, 'a') + "\"}").ok());
  EXPECT_FALSE(parse_worker_spec(R"({"endpoint": "ipc:///a", "device": "gpu"})").ok());
  EXPECT_FALSE(
      parse_worker_spec(R"({"endpoint": "ipc:///a", "slice": {"mode": "fraction"}})").ok());
  EXPECT_FALSE(parse_worker_spec(R"({"endpoint": "ipc:///a", "colour": 1})").ok());
}

}  // namespace
}  // namespace outpost::protocol
