// The control protocol's messages (docs/control-protocol.md) as types: what outpostd and
// outpost-control say to each other on the tunnel's streams, each with one writer (to_json) and
// one reader, used by the agent, the control plane and the tests alike. Every document read here
// is untrusted input: a reader refuses a malformed one whole, with a message naming the field at
// fault, and ignores fields it does not know, so that either side may add fields without a
// version bump. No torch, no ZeroMQ, no Asio.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "protocol/worker_protocol.h"

namespace outpost::protocol {

// The largest control message either side reads (a predict body is not one: it has its own).
inline constexpr size_t kMaxControlMessage = 1024 * 1024;

// --- errors: {"error": {"code": "<name>", "message": "..."}}, the one error form of every stream.

nlohmann::json error_document(const Error& error);
// The Error in an {"error": ...} answer, or nothing when the document is not one. An unknown code
// reads as internal; a bare {"error": "text"} as internal with that text.
std::optional<Error> error_in(const nlohmann::json& document);

// --- the metadata each stream opens with ---

// Agent -> control plane: {"method": "node.enroll" | "node.sync" | "node.report" |
// "artifact.fetch", "sha256": "..." (artifact.fetch only)}.
struct CallMetadata {
  std::string method;
  std::string sha256;
};
nlohmann::json to_json(const CallMetadata& metadata);
Result<CallMetadata> parse_call_metadata(std::string_view text);

// How a predict call's messages are written (docs/control-protocol.md, "Predict bodies"):
// JSON documents with tensor bytes in base64, which every agent reads, or envelopes (a JSON
// header with the bytes as binary parts, encode_envelope), which an agent reads when its HELLO
// announces kFeaturePredictEnvelope. Nothing is base64'd between the control plane's REST edge
// and the worker on the envelope path.
enum class BodyEncoding { kJson, kEnvelope };
inline constexpr uint64_t kFeaturePredictEnvelope = uint64_t{1} << 32;

// Control plane -> agent: {"method": "predict", "deployment_id", "model_method", "shape",
// "request_id", "replica_id" (a hint that breaks a tie between equally loaded replicas),
// "body": "envelope" (absent: JSON)}.
struct PredictMetadata {
  std::string deployment_id;
  std::string model_method = "predict";
  CallShape shape = CallShape::kUnary;
  std::string request_id;
  std::string replica_hint;
  BodyEncoding body = BodyEncoding::kJson;
};
nlohmann::json to_json(const PredictMetadata& metadata);
// invalid_argument for an unknown shape or a missing deployment_id.
Result<PredictMetadata> parse_predict_metadata(const nlohmann::json& metadata);
// The encoding a predict's answer goes back in, read even from metadata that
// parse_predict_metadata refuses, so that the refusal reaches the caller in the form it reads
// (anything but "envelope" reads as JSON).
BodyEncoding answer_encoding(const nlohmann::json& metadata);

// --- predict bodies: {"inputs": Value} one way; {"outputs": Value}, {"chunk": Value} or an
// error the other. Values are the control protocol's (base64) in JSON bodies and the worker
// protocol's ({"part": i}) in envelopes; a body is at most the tunnel stream's message limit.

// The control plane's side. `inputs` is in the worker form (the REST edge moved its base64 into
// parts, move_bytes_to_parts); JSON writes the parts back as base64, and refuses a Value that
// refers to a part it lacks (an envelope carries it, and the worker refuses it).
Result<std::string> encode_predict_request(const WireValue& inputs, BodyEncoding encoding);
// The agent's answer as one document in the control form: {"outputs": ...}, {"chunk": ...} or
// {"error": ...}. Refuses a malformed one (the caller reports it as data_loss).
Result<nlohmann::json> decode_predict_answer(std::string_view message, BodyEncoding encoding);

// The agent's side. The request's inputs in the worker form (bytes as parts, the form the
// worker takes); refuses what is not {"inputs": {...}} with invalid_argument.
Result<WireValue> decode_predict_request(std::string_view message, BodyEncoding encoding);
// {key: value} ("outputs" or "chunk") from the worker's form. JSON refuses a Value that refers to
// a part it lacks; an envelope carries it as it is, and decode_predict_answer refuses it.
Result<std::string> encode_predict_answer(std::string_view key, const WireValue& value,
                                          BodyEncoding encoding);
std::string encode_predict_error(const Error& error, BodyEncoding encoding);

// --- node.enroll: {"name", "inventory"} -> {"node_id", "credential"} ---

struct EnrollRequest {
  std::string name;
  nlohmann::json inventory = nlohmann::json::object();
};
nlohmann::json to_json(const EnrollRequest& request);
Result<EnrollRequest> parse_enroll_request(std::string_view text);
// An Inventory document: an object with optional cpu_cores, memory_bytes, agent_version, gpus[].
Status check_inventory(const nlohmann::json& inventory);

// --- node.report: the agent's replicas as they are ---

struct ReplicaStatus {
  std::string replica_id;
  std::string state;  // pending, fetching, loading, ready, failed, stopping
  std::string message;
  std::string deployment_id;
  std::string model_version_id;
  std::string device;
  std::string worker;
  int64_t ongoing_requests = 0;
  int64_t memory_bytes = 0;
  bool operator==(const ReplicaStatus&) const = default;
};
struct NodeReport {
  int64_t applied_version = 0;
  std::optional<nlohmann::json> inventory;
  std::vector<ReplicaStatus> replicas;
};
nlohmann::json to_json(const ReplicaStatus& status);
nlohmann::json to_json(const NodeReport& report);
Result<NodeReport> parse_node_report(std::string_view text);

// --- node.desired (pushed) and node.sync's answer: the replicas this node should run ---

struct ArtifactRef {
  std::string name;  // "model.pt", "config.yaml"
  std::string sha256;
  uint64_t size = 0;
  bool operator==(const ArtifactRef&) const = default;
};

struct DesiredReplica {
  std::string replica_id;
  std::string deployment_id;
  std::string user_id;
  std::string model_id;
  std::string model_version_id;
  std::vector<ArtifactRef> artifacts;
  uint64_t cpu_millicores = 0;            // inference_compute_info.cpu_limit
  uint64_t memory_bytes = 0;              // inference_compute_info.cpu_memory
  int num_accelerators = 0;               // inference_compute_info.num_accelerators
  uint64_t accelerator_memory_bytes = 0;  // per accelerator
  bool disable_packing = false;
  // The same replica to run: ids, artifacts (names and hashes) and resources. user_id and
  // model_id are labels.
  bool operator==(const DesiredReplica& other) const;
};

struct DesiredState {
  uint64_t version = 0;
  std::vector<DesiredReplica> replicas;
};
nlohmann::json to_json(const DesiredState& state);
Result<DesiredState> parse_desired_state(const nlohmann::json& document);

// Pieces of a desired replica as the control plane stores them: an artifact
// {"name", "sha256", "size"}, and Clarifai's inference_compute_info (cpu_limit, cpu_memory,
// num_accelerators, accelerator_memory; quantities such as "500m" and "1Gi" or numbers) read into
// the replica's resources. `where` names the value in errors.
Result<ArtifactRef> parse_artifact(const nlohmann::json& artifact, const std::string& where);
Status read_compute_info(const nlohmann::json& info, const std::string& where,
                         DesiredReplica& replica);

}  // namespace outpost::protocol
