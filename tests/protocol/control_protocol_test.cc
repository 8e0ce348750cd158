// The control protocol's messages (protocol/control_protocol.h), as both sides use them: what
// one side writes the other reads back unchanged, what is malformed is refused naming the field,
// and what is unknown is ignored.
#include "protocol/control_protocol.h"

#include <gtest/gtest.h>

#include "common/base64.h"

namespace outpost::protocol {
namespace {

using nlohmann::json;

constexpr const char* kSha = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

nlohmann::json replica(const std::string& id) {
  return {{"replica_id", id},
          {"deployment_id", "dep-1"},
          {"model_version_id", "v1"},
          {"artifacts",
           nlohmann::json::array({{{"name", "model.pt"}, {"sha256", kSha}, {"size", 11}}})},
          {"inference_compute_info",
           {{"cpu_limit", "500m"},
            {"cpu_memory", "1Gi"},
            {"num_accelerators", 1},
            {"accelerator_memory", "2Gi"}}},
          {"disable_packing", true}};
}

TEST(DesiredStateTest, ParsesTheDocumentedShape) {
  const auto state = protocol::parse_desired_state(
      {{"version", 7}, {"replicas", nlohmann::json::array({replica("a"), replica("b")})}});
  ASSERT_TRUE(state.ok()) << state.error().message();
  EXPECT_EQ(state->version, 7u);
  ASSERT_EQ(state->replicas.size(), 2u);
  const auto& first = state->replicas[0];
  EXPECT_EQ(first.cpu_millicores, 500u);
  EXPECT_EQ(first.memory_bytes, 1ull << 30);
  EXPECT_EQ(first.num_accelerators, 1);
  EXPECT_EQ(first.accelerator_memory_bytes, 2ull << 30);
  EXPECT_TRUE(first.disable_packing);
  EXPECT_EQ(first.artifacts[0].size, 11u);
}

TEST(DesiredStateTest, RefusesMalformedDocumentsNamingTheField) {
  const auto refused = [](const nlohmann::json& doc) {
    auto state = protocol::parse_desired_state(doc);
    return state.ok() ? std::string("accepted") : state.error().message();
  };
  EXPECT_NE(refused(nlohmann::json::array()).find("JSON object"), std::string::npos);
  EXPECT_NE(refused({{"version", -1}, {"replicas", nlohmann::json::array()}}).find("version"),
            std::string::npos);
  auto bad = replica("a");
  bad["artifacts"][0]["name"] = "../escape";
  EXPECT_NE(refused({{"version", 1}, {"replicas", nlohmann::json::array({bad})}})
                .find("artifacts[0].name"),
            std::string::npos);
  EXPECT_NE(
      refused({{"version", 1}, {"replicas", nlohmann::json::array({replica("a"), replica("a")})}})
          .find("repeated"),
      std::string::npos);
  bad = replica("a");
  bad["inference_compute_info"]["cpu_memory"] = "lots";
  EXPECT_NE(
      refused({{"version", 1}, {"replicas", nlohmann::json::array({bad})}}).find("cpu_memory"),
      std::string::npos);
  bad = replica("a");
  bad.erase("model_version_id");
  EXPECT_NE(refused({{"version", 1}, {"replicas", nlohmann::json::array({bad})}})
                .find("model_version_id is missing"),
            std::string::npos);
}

TEST(DesiredStateTest, WhatTheControlPlaneWritesTheAgentReadsBackUnchanged) {
  DesiredReplica replica;
  replica.replica_id = "dep-1/np/0";
  replica.deployment_id = "dep-1";
  replica.user_id = "alice";
  replica.model_id = "m";
  replica.model_version_id = "v1";
  replica.artifacts = {{"model.pt", kSha, 11}, {"config.yaml", kSha, 3}};
  replica.cpu_millicores = 1500;
  replica.memory_bytes = 3ull << 30;
  replica.num_accelerators = 2;
  replica.accelerator_memory_bytes = 5ull << 30;
  replica.disable_packing = true;
  DesiredReplica bare;  // no resources asked for
  bare.replica_id = "dep-2/np/0";
  bare.deployment_id = "dep-2";
  bare.model_version_id = "v9";
  bare.artifacts = {{"model.pt2", kSha, 1}};
  const DesiredState written{42, {replica, bare}};
  // Through text, as on the tunnel.
  const auto read = parse_desired_state(json::parse(to_json(written).dump()));
  ASSERT_TRUE(read.ok()) << read.error().message();
  EXPECT_EQ(read->version, 42u);
  ASSERT_EQ(read->replicas.size(), 2u);
  EXPECT_EQ(read->replicas[0], replica);
  EXPECT_EQ(read->replicas[0].user_id, "alice");
  EXPECT_EQ(read->replicas[1], bare);
  EXPECT_EQ(read->replicas[1].cpu_millicores, 0u);
}

TEST(DesiredStateTest, ComputeInfoQuantitiesReadIntoResources) {
  DesiredReplica replica;
  ASSERT_TRUE(
      read_compute_info(json{{"cpu_limit", "2"}, {"cpu_memory", "512Mi"}}, "info", replica).ok());
  EXPECT_EQ(replica.cpu_millicores, 2000u);
  EXPECT_EQ(replica.memory_bytes, 512ull << 20);
  const Status refused = read_compute_info(json{{"num_accelerators", 65}}, "info", replica);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("info.num_accelerators"), std::string::npos);
}

TEST(NodeReportTest, ReportsAreCheckedAndUnknownFieldsIgnored) {
  auto report = parse_node_report(
      R"({"applied_version": 3, "future_field": 1,
          "replicas": [{"replica_id": "d/np/0", "state": "ready", "ongoing_requests": 2}]})");
  ASSERT_TRUE(report.ok()) << report.error().message();
  EXPECT_EQ(report->applied_version, 3);
  EXPECT_EQ(report->replicas[0].ongoing_requests, 2);
  EXPECT_FALSE(report->inventory.has_value());
  const auto refused = [](std::string_view text) {
    auto parsed = parse_node_report(text);
    return parsed.ok() ? std::string("accepted") : parsed.error().message();
  };
  EXPECT_NE(refused(R"({"replicas": [{"replica_id": "x", "state": "dancing"}]})").find("dancing"),
            std::string::npos);
  EXPECT_NE(refused(R"({"applied_version": "7"})").find("applied_version"), std::string::npos);
  EXPECT_NE(refused(R"({"replicas": [{"state": "ready"}]})").find("replica_id"), std::string::npos);
  EXPECT_NE(refused(R"({"inventory": {"gpus": 3}})").find("inventory.gpus"), std::string::npos);
}

TEST(NodeReportTest, WhatTheAgentWritesTheControlPlaneReadsBackUnchanged) {
  ReplicaStatus status;
  status.replica_id = "d/np/0";
  status.state = "loading";
  status.message = "loading into worker cpu";
  status.deployment_id = "d";
  status.model_version_id = "v1";
  status.device = "cpu";
  status.worker = "cpu";
  status.ongoing_requests = 4;
  status.memory_bytes = 1 << 20;
  NodeReport written;
  written.applied_version = 9;
  written.inventory = json{{"cpu_cores", 8}, {"memory_bytes", 1 << 30}};
  written.replicas = {status};
  const auto read = parse_node_report(to_json(written).dump());
  ASSERT_TRUE(read.ok()) << read.error().message();
  EXPECT_EQ(read->applied_version, 9);
  EXPECT_EQ(read->inventory, written.inventory);
  EXPECT_EQ(read->replicas, written.replicas);
}

TEST(EnrollTest, ANameAndAnInventoryGoAcrossAndBadOnesAreRefused) {
  const EnrollRequest written{"gpu-box-1", json{{"cpu_cores", 4}, {"gpus", json::array()}}};
  const auto read = parse_enroll_request(to_json(written).dump());
  ASSERT_TRUE(read.ok()) << read.error().message();
  EXPECT_EQ(read->name, "gpu-box-1");
  EXPECT_EQ(read->inventory, written.inventory);
  EXPECT_FALSE(parse_enroll_request(R"({"name": "", "inventory": {}})").ok());
  EXPECT_FALSE(parse_enroll_request(R"({"name": "ab"})").ok());
  EXPECT_FALSE(parse_enroll_request(R"({"inventory": {"gpus": 3}})").ok());
  EXPECT_EQ(parse_enroll_request("{}")->name, "node");  // the default name
}

TEST(MetadataTest, EachStreamsMetadataGoesAcross) {
  const auto fetch = parse_call_metadata(to_json(CallMetadata{"artifact.fetch", kSha}).dump());
  ASSERT_TRUE(fetch.ok());
  EXPECT_EQ(fetch->method, "artifact.fetch");
  EXPECT_EQ(fetch->sha256, kSha);
  EXPECT_FALSE(parse_call_metadata("not json").ok());
  EXPECT_FALSE(parse_call_metadata(R"({"sha256": "x"})").ok());  // no method

  for (const CallShape shape : {CallShape::kUnary, CallShape::kGenerate, CallShape::kStream}) {
    PredictMetadata written;
    written.deployment_id = "d";
    written.model_method = "generate";
    written.shape = shape;
    written.request_id = "r-1";
    written.replica_hint = "d/np/1";
    const json sent = to_json(written);
    EXPECT_EQ(sent["method"], "predict");  // the stream's method, beside the model's
    const auto read = parse_predict_metadata(sent);
    ASSERT_TRUE(read.ok()) << read.error().message();
    EXPECT_EQ(read->deployment_id, "d");
    EXPECT_EQ(read->model_method, "generate");
    EXPECT_EQ(read->shape, shape);
    EXPECT_EQ(read->request_id, "r-1");
    EXPECT_EQ(read->replica_hint, "d/np/1");
    EXPECT_EQ(read->body, BodyEncoding::kJson);
    EXPECT_FALSE(sent.contains("body"));  // what an older agent reads as it always did
    written.body = BodyEncoding::kEnvelope;
    EXPECT_EQ(parse_predict_metadata(to_json(written))->body, BodyEncoding::kEnvelope);
  }
  EXPECT_NE(parse_predict_metadata(json{{"deployment_id", "d"}, {"body", "protobuf"}})
                .error()
                .message()
                .find("unknown predict body encoding 'protobuf'"),
            std::string::npos);
  // Defaults, a wrong type read as missing, and what is refused.
  const auto minimal = parse_predict_metadata(json{{"deployment_id", "d"}, {"request_id", 7}});
  ASSERT_TRUE(minimal.ok());
  EXPECT_EQ(minimal->model_method, "predict");
  EXPECT_EQ(minimal->shape, CallShape::kUnary);
  EXPECT_EQ(minimal->request_id, "");
  EXPECT_EQ(parse_predict_metadata(json{{"shape", "unary"}}).error().message(),
            "predict needs deployment_id");
  // A refusal goes back in the encoding the caller reads, even when the rest is refused.
  const json refused{{"body", "envelope"}, {"shape", "batch"}};
  EXPECT_FALSE(parse_predict_metadata(refused).ok());
  EXPECT_EQ(answer_encoding(refused), BodyEncoding::kEnvelope);
  EXPECT_EQ(answer_encoding(json{{"body", 1}}), BodyEncoding::kJson);
  EXPECT_EQ(answer_encoding(json::array()), BodyEncoding::kJson);
  EXPECT_NE(parse_predict_metadata(json{{"deployment_id", "d"}, {"shape", "batch"}})
                .error()
                .message()
                .find("unknown call shape 'batch'"),
            std::string::npos);
}

TEST(ErrorDocumentTest, EveryCodeGoesAcrossWithItsMessage) {
  for (const ErrorCode code :
       {ErrorCode::kInvalidArgument, ErrorCode::kNotFound, ErrorCode::kAlreadyExists,
        ErrorCode::kPermissionDenied, ErrorCode::kUnauthenticated, ErrorCode::kResourceExhausted,
        ErrorCode::kFailedPrecondition, ErrorCode::kUnavailable, ErrorCode::kDeadlineExceeded,
        ErrorCode::kCancelled, ErrorCode::kDataLoss, ErrorCode::kInternal}) {
    const auto read = error_in(json::parse(error_document(Error(code, "why")).dump()));
    ASSERT_TRUE(read.has_value());
    EXPECT_EQ(read->code(), code);
    EXPECT_EQ(read->message(), "why");
  }
  EXPECT_FALSE(error_in(json{{"outputs", 1}}).has_value());  // an answer, not an error
  EXPECT_FALSE(error_in(json::array()).has_value());
  // From a newer peer or a sloppy one: still an error, never an answer.
  EXPECT_EQ(error_in(json{{"error", {{"code", "brand_new"}, {"message", "m"}}}})->code(),
            ErrorCode::kInternal);
  EXPECT_EQ(error_in(json{{"error", "plain text"}})->message(), "plain text");
}

// Inputs as the REST edge holds them once it moved a client's base64 into parts: a float
// tensor, a byte string, and plain values beside them.
WireValue client_inputs(const std::string& tensor_bytes) {
  WireValue inputs;
  inputs.value = {
      {"x", {{"dtype", "float32"}, {"shape", {2}}, {"data_b64", base64_encode(tensor_bytes)}}},
      {"raw", {{"bytes_b64", base64_encode(std::string("\0\xff\x01", 3))}}},
      {"labels", {"a", "b"}},
      {"k", 3}};
  EXPECT_TRUE(move_bytes_to_parts(inputs.value, inputs.parts).ok());
  return inputs;
}

TEST(PredictBodyTest, InputsReachTheWorkerTheSameWayInBothEncodings) {
  const std::string tensor("\x00\x00\x80\x3f\x00\x00\x00\x40", 8);  // 1.0f, 2.0f
  for (const BodyEncoding encoding : {BodyEncoding::kJson, BodyEncoding::kEnvelope}) {
    const auto message = encode_predict_request(client_inputs(tensor), encoding);
    ASSERT_TRUE(message.ok()) << message.error().message();
    const auto inputs = decode_predict_request(*message, encoding);
    ASSERT_TRUE(inputs.ok()) << inputs.error().message();
    // The worker's form: the bytes as parts, referred to from the Value.
    ASSERT_EQ(inputs->parts.size(), 2u);
    const json& x = inputs->value["x"];
    EXPECT_EQ(inputs->parts.at(x["part"].get<size_t>()), tensor);
    EXPECT_FALSE(x.contains("data_b64"));
    EXPECT_EQ(inputs->parts.at(inputs->value["raw"]["part"].get<size_t>()),
              std::string("\0\xff\x01", 3));
    EXPECT_EQ(inputs->value["labels"], json({"a", "b"}));
    EXPECT_EQ(inputs->value["k"], 3);
  }
  // An envelope carries the bytes as they are: no base64 in it.
  const auto envelope = encode_predict_request(client_inputs(tensor), BodyEncoding::kEnvelope);
  EXPECT_EQ(envelope->find(base64_encode(tensor)), std::string::npos);
  EXPECT_NE(envelope->find(tensor), std::string::npos);
}

TEST(PredictBodyTest, AnswersReachTheControlPlaneUnchangedInBothEncodings) {
  WireValue outputs;
  outputs.parts = {std::string("\x01\x02\x03\x04", 4), "text bytes"};
  outputs.value = {{"y", {{"dtype", "int32"}, {"shape", {1}}, {"part", 0}}},
                   {"blob", {{"part", 1}}},
                   {"score", 0.5}};
  const json expected = {
      {"outputs",
       {{"y", {{"dtype", "int32"}, {"shape", {1}}, {"data_b64", base64_encode(outputs.parts[0])}}},
        {"blob", {{"bytes_b64", base64_encode("text bytes")}}},
        {"score", 0.5}}}};
  for (const BodyEncoding encoding : {BodyEncoding::kJson, BodyEncoding::kEnvelope}) {
    const auto message = encode_predict_answer("outputs", outputs, encoding);
    ASSERT_TRUE(message.ok()) << message.error().message();
    const auto read = decode_predict_answer(*message, encoding);
    ASSERT_TRUE(read.ok()) << read.error().message();
    EXPECT_EQ(*read, expected);

    const auto error = decode_predict_answer(
        encode_predict_error(invalid_argument("missing input 'x'"), encoding), encoding);
    ASSERT_TRUE(error.ok());
    ASSERT_TRUE(error_in(*error).has_value());
    EXPECT_EQ(error_in(*error)->code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(error_in(*error)->message(), "missing input 'x'");
  }
  // A Value that refers to a part the worker did not send is refused, not sent half-made.
  WireValue dangling;
  dangling.value = {{"y", {{"part", 3}}}};
  EXPECT_FALSE(encode_predict_answer("chunk", dangling, BodyEncoding::kJson).ok());
  const auto carried = encode_predict_answer("chunk", dangling, BodyEncoding::kEnvelope);
  ASSERT_TRUE(carried.ok());  // an envelope carries it as it is; the reader refuses it
  EXPECT_NE(decode_predict_answer(*carried, BodyEncoding::kEnvelope)
                .error()
                .message()
                .find("binary part 3, which the message does not have"),
            std::string::npos);
}

TEST(PredictBodyTest, MalformedBodiesAreRefusedNamingTheProblem) {
  const auto refused = [](std::string_view message, BodyEncoding encoding) {
    auto read = decode_predict_request(message, encoding);
    return read.ok() ? std::string("accepted") : read.error().message();
  };
  EXPECT_EQ(refused("[1]", BodyEncoding::kJson),
            "the request must be {\"inputs\": {...named arguments...}}");
  EXPECT_EQ(refused("{", BodyEncoding::kJson), "the request is not JSON");
  const std::string good =
      encode_predict_request(client_inputs("abcdefgh"), BodyEncoding::kEnvelope).value();
  EXPECT_EQ(refused(good, BodyEncoding::kEnvelope), "accepted");
  // Cut anywhere, or with bytes after the last part: refused, never read past the end.
  for (size_t cut = 0; cut < good.size(); ++cut) {
    EXPECT_NE(refused(good.substr(0, cut), BodyEncoding::kEnvelope).find("ends inside"),
              std::string::npos)
        << cut;
  }
  EXPECT_NE(refused(good + "x", BodyEncoding::kEnvelope).find("1 bytes after its last part"),
            std::string::npos);
  // A part count far beyond the bytes is refused before anything is allocated for it.
  std::string huge_count = encode_envelope("{}", {});
  huge_count.replace(6, 4, "\x00\x00\x10\x00");  // 4096 parts, none present
  EXPECT_NE(refused(huge_count, BodyEncoding::kEnvelope).find("ends inside"), std::string::npos);
  huge_count.replace(6, 4, "\xff\xff\xff\xff");
  EXPECT_NE(refused(huge_count, BodyEncoding::kEnvelope).find("over the limit of 4096"),
            std::string::npos);
  // The inputs inside an envelope are checked as in JSON.
  EXPECT_EQ(refused(encode_envelope(R"({"outputs": {}})", {}), BodyEncoding::kEnvelope),
            "the request must be {\"inputs\": {...named arguments...}}");
  // A JSON body cannot carry a reference to a part that is not there.
  WireValue dangling;
  dangling.value = {{"x", {{"part", 0}}}};
  EXPECT_FALSE(encode_predict_request(dangling, BodyEncoding::kJson).ok());
}

}  // namespace
}  // namespace outpost::protocol
