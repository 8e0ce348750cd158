#include "protocol/control_protocol.h"

#include <cstdint>
#include <set>
#include <utility>

#include "common/json_fields.h"
#include "common/json_reader.h"
#include "common/quantity.h"

namespace outpost::protocol {

using nlohmann::json;

namespace {

constexpr const char* kReplicaStates[] = {"pending", "fetching", "loading",
                                          "ready",   "failed",   "stopping"};
constexpr size_t kMaxReportedReplicas = 4096;
constexpr size_t kMaxDesiredReplicas = 10000;

// A string of at most 256 characters, or "" when optional and absent.
Result<std::string> text_field(const json& object, const char* key, const std::string& where,
                               bool required = true) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    if (required) return invalid_argument(where + "." + key + " is missing");
    return std::string();
  }
  if (!it->is_string()) return invalid_argument(where + "." + key + " must be a string");
  std::string value = it->get<std::string>();
  if (value.size() > 256) return invalid_argument(where + "." + key + " is longer than 256");
  return value;
}

// compute_info values may be quantities ("1Gi") or numbers.
Result<std::string> quantity_text(const json& value, const std::string& where) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_unsigned() || value.is_number_integer()) {
    return std::to_string(value.get<int64_t>());
  }
  if (value.is_number_float()) return std::to_string(value.get<double>());
  return invalid_argument(where + " must be a quantity such as \"1Gi\"");
}

}  // namespace

// --- errors ---

json error_document(const Error& error) {
  return {{"error",
           {{"code", std::string(error_code_name(error.code()))}, {"message", error.message()}}}};
}

std::optional<Error> error_in(const json& document) {
  if (!document.is_object()) return std::nullopt;
  const auto it = document.find("error");
  if (it == document.end()) return std::nullopt;
  if (it->is_string()) return Error(ErrorCode::kInternal, it->get<std::string>());
  const std::string code = string_field_or(*it, "code", "internal");
  return Error(error_code_from_name(code).value_or(ErrorCode::kInternal),
               string_field_or(*it, "message", "the other side reported an error"));
}

// --- stream metadata ---

json to_json(const CallMetadata& metadata) {
  json out{{"method", metadata.method}};
  if (!metadata.sha256.empty()) out["sha256"] = metadata.sha256;
  return out;
}

Result<CallMetadata> parse_call_metadata(std::string_view text) {
  OUTPOST_ASSIGN_OR_RETURN(auto doc, parse_json(text));
  OUTPOST_ASSIGN_OR_RETURN(auto reader, ObjectReader::create(doc, "metadata"));
  CallMetadata out;
  OUTPOST_ASSIGN_OR_RETURN(out.method, reader.required_string("method"));
  OUTPOST_ASSIGN_OR_RETURN(auto sha, reader.optional_string("sha256"));
  out.sha256 = sha.value_or("");
  return out;
}

json to_json(const PredictMetadata& metadata) {
  json out{{"method", "predict"},
           {"deployment_id", metadata.deployment_id},
           {"model_method", metadata.model_method},
           {"shape", std::string(call_shape_name(metadata.shape))},
           {"request_id", metadata.request_id}};
  if (!metadata.replica_hint.empty()) out["replica_id"] = metadata.replica_hint;
  if (metadata.body == BodyEncoding::kEnvelope) out["body"] = "envelope";
  return out;
}

Result<PredictMetadata> parse_predict_metadata(const json& metadata) {
  // Fields of the wrong type read as missing: a malformed request is refused, never thrown.
  PredictMetadata out;
  const std::string shape = string_field_or(metadata, "shape", "unary");
  const auto known = call_shape_from_name(shape);
  if (!known) return invalid_argument("unknown call shape '" + shape + "'");
  out.shape = *known;
  out.deployment_id = string_field_or(metadata, "deployment_id", "");
  if (out.deployment_id.empty()) return invalid_argument("predict needs deployment_id");
  out.model_method = string_field_or(metadata, "model_method", "predict");
  out.request_id = string_field_or(metadata, "request_id", "");
  out.replica_hint = string_field_or(metadata, "replica_id", "");
  const std::string body = string_field_or(metadata, "body", "json");
  if (body == "envelope") {
    out.body = BodyEncoding::kEnvelope;
  } else if (body != "json") {
    return invalid_argument("unknown predict body encoding '" + body + "'");
  }
  return out;
}

BodyEncoding answer_encoding(const json& metadata) {
  return string_field_or(metadata, "body", "json") == "envelope" ? BodyEncoding::kEnvelope
                                                                 : BodyEncoding::kJson;
}

// --- predict bodies ---

namespace {

// The limits of a predict body's envelope: the tunnel's message limit bounds its size.
Limits envelope_limits() {
  Limits limits;
  limits.max_message_bytes = SIZE_MAX;
  return limits;
}

// An envelope's header parsed, with its parts copied out (the worker's message owns its bytes).
Result<std::pair<json, std::vector<std::string>>> open_envelope(std::string_view message) {
  OUTPOST_ASSIGN_OR_RETURN(auto envelope, decode_envelope(message, envelope_limits()));
  OUTPOST_ASSIGN_OR_RETURN(auto header, parse_json(envelope.header));
  std::vector<std::string> parts(envelope.parts.begin(), envelope.parts.end());
  return std::pair{std::move(header), std::move(parts)};
}

}  // namespace

Result<std::string> encode_predict_request(const WireValue& inputs, BodyEncoding encoding) {
  if (encoding == BodyEncoding::kJson) {
    OUTPOST_ASSIGN_OR_RETURN(auto converted, parts_to_base64(inputs.value, inputs.parts));
    return json_text(json{{"inputs", std::move(converted)}});
  }
  return encode_envelope(json_text(json{{"inputs", inputs.value}}), inputs.parts);
}

Result<json> decode_predict_answer(std::string_view message, BodyEncoding encoding) {
  if (encoding == BodyEncoding::kJson) {
    OUTPOST_ASSIGN_OR_RETURN(auto document, parse_json(message));
    if (!document.is_object()) return invalid_argument("an answer must be a JSON object");
    return document;
  }
  OUTPOST_ASSIGN_OR_RETURN(auto opened, open_envelope(message));
  if (!opened.first.is_object()) return invalid_argument("an answer must be a JSON object");
  return parts_to_base64(opened.first, opened.second);
}

Result<WireValue> decode_predict_request(std::string_view message, BodyEncoding encoding) {
  json document;
  WireValue inputs;
  if (encoding == BodyEncoding::kJson) {
    document = json::parse(message, nullptr, false);
    if (document.is_discarded()) return invalid_argument("the request is not JSON");
  } else {
    OUTPOST_ASSIGN_OR_RETURN(auto opened, open_envelope(message));
    document = std::move(opened.first);
    inputs.parts = std::move(opened.second);
  }
  if (!document.is_object() || !document.contains("inputs") || !document["inputs"].is_object()) {
    return invalid_argument("the request must be {\"inputs\": {...named arguments...}}");
  }
  inputs.value = std::move(document["inputs"]);
  // A JSON body's base64 becomes parts here; an envelope's already are (the worker still takes
  // any inline form it may hold).
  if (encoding == BodyEncoding::kJson) {
    OUTPOST_RETURN_IF_ERROR(move_bytes_to_parts(inputs.value, inputs.parts));
  }
  return inputs;
}

Result<std::string> encode_predict_answer(std::string_view key, const WireValue& value,
                                          BodyEncoding encoding) {
  if (encoding == BodyEncoding::kJson) {
    OUTPOST_ASSIGN_OR_RETURN(auto converted, parts_to_base64(value.value, value.parts));
    return json_text(json{{std::string(key), std::move(converted)}});
  }
  return encode_envelope(json_text(json{{std::string(key), value.value}}), value.parts);
}

std::string encode_predict_error(const Error& error, BodyEncoding encoding) {
  std::string document = json_text(error_document(error));
  if (encoding == BodyEncoding::kJson) return document;
  return encode_envelope(document, {});
}

// --- node.enroll ---

json to_json(const EnrollRequest& request) {
  return {{"name", request.name}, {"inventory", request.inventory}};
}

Status check_inventory(const json& inventory) {
  OUTPOST_ASSIGN_OR_RETURN(auto reader, ObjectReader::create(inventory, "inventory"));
  OUTPOST_RETURN_IF_ERROR(reader.optional_int("cpu_cores", 0, 1 << 20).status());
  OUTPOST_RETURN_IF_ERROR(reader.optional_int("memory_bytes", 0, INT64_MAX).status());
  OUTPOST_RETURN_IF_ERROR(reader.optional_string("agent_version").status());
  if (const json* gpus = reader.get("gpus")) {
    if (!gpus->is_array() || gpus->size() > 64) {
      return invalid_argument("inventory.gpus: must be a list of at most 64 GPUs");
    }
    for (size_t i = 0; i < gpus->size(); ++i) {
      OUTPOST_ASSIGN_OR_RETURN(
          auto gpu, ObjectReader::create((*gpus)[i], "inventory.gpus[" + std::to_string(i) + "]"));
      OUTPOST_RETURN_IF_ERROR(gpu.optional_int("index", 0, 1024).status());
      OUTPOST_RETURN_IF_ERROR(gpu.optional_string("name").status());
      OUTPOST_RETURN_IF_ERROR(gpu.optional_int("memory_bytes", 0, INT64_MAX).status());
    }
  }
  return {};
}

Result<EnrollRequest> parse_enroll_request(std::string_view text) {
  OUTPOST_ASSIGN_OR_RETURN(auto doc, parse_json(text));
  OUTPOST_ASSIGN_OR_RETURN(auto reader, ObjectReader::create(doc, "enroll"));
  EnrollRequest out;
  OUTPOST_ASSIGN_OR_RETURN(auto name, reader.optional_string("name"));
  out.name = name.value_or("node");
  if (out.name.empty() || out.name.size() > 128) {
    return invalid_argument("enroll.name: must be 1 to 128 characters");
  }
  for (const char c : out.name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return invalid_argument("enroll.name: must not hold control characters");
    }
  }
  const json* inventory = reader.get("inventory");
  out.inventory = inventory != nullptr ? *inventory : json::object();
  OUTPOST_RETURN_IF_ERROR(check_inventory(out.inventory));
  return out;
}

// --- node.report ---

json to_json(const ReplicaStatus& status) {
  return {{"replica_id", status.replica_id},
          {"state", status.state},
          {"message", status.message},
          {"deployment_id", status.deployment_id},
          {"model_version_id", status.model_version_id},
          {"device", status.device},
          {"worker", status.worker},
          {"ongoing_requests", status.ongoing_requests},
          {"memory_bytes", status.memory_bytes}};
}

json to_json(const NodeReport& report) {
  json replicas = json::array();
  for (const auto& status : report.replicas) replicas.push_back(to_json(status));
  json out{{"applied_version", report.applied_version}, {"replicas", std::move(replicas)}};
  if (report.inventory) out["inventory"] = *report.inventory;
  return out;
}

Result<NodeReport> parse_node_report(std::string_view text) {
  OUTPOST_ASSIGN_OR_RETURN(auto doc, parse_json(text));
  OUTPOST_ASSIGN_OR_RETURN(auto reader, ObjectReader::create(doc, "report"));
  NodeReport out;
  OUTPOST_ASSIGN_OR_RETURN(auto version, reader.optional_int("applied_version", 0, INT64_MAX));
  out.applied_version = version.value_or(0);
  if (const json* inventory = reader.get("inventory")) {
    OUTPOST_RETURN_IF_ERROR(check_inventory(*inventory));
    out.inventory = *inventory;
  }
  const json* replicas = reader.get("replicas");
  if (replicas == nullptr) return out;
  if (!replicas->is_array() || replicas->size() > kMaxReportedReplicas) {
    return invalid_argument("report.replicas: must be a list (at most 4096)");
  }
  for (size_t i = 0; i < replicas->size(); ++i) {
    OUTPOST_ASSIGN_OR_RETURN(
        auto replica,
        ObjectReader::create((*replicas)[i], "report.replicas[" + std::to_string(i) + "]"));
    ReplicaStatus status;
    OUTPOST_ASSIGN_OR_RETURN(status.replica_id, replica.required_string("replica_id"));
    OUTPOST_ASSIGN_OR_RETURN(status.state, replica.required_string("state"));
    bool known = false;
    for (const char* name : kReplicaStates) known = known || status.state == name;
    if (!known) {
      return invalid_argument(replica.path_of("state") + ": '" + status.state +
                              "' is not a replica state");
    }
    const auto text = [&](const char* key, std::string& field) -> Status {
      OUTPOST_ASSIGN_OR_RETURN(auto value, replica.optional_string(key));
      field = value.value_or("");
      return {};
    };
    OUTPOST_RETURN_IF_ERROR(text("message", status.message));
    OUTPOST_RETURN_IF_ERROR(text("deployment_id", status.deployment_id));
    OUTPOST_RETURN_IF_ERROR(text("model_version_id", status.model_version_id));
    OUTPOST_RETURN_IF_ERROR(text("device", status.device));
    OUTPOST_RETURN_IF_ERROR(text("worker", status.worker));
    OUTPOST_ASSIGN_OR_RETURN(auto ongoing, replica.optional_int("ongoing_requests", 0, INT64_MAX));
    status.ongoing_requests = ongoing.value_or(0);
    OUTPOST_ASSIGN_OR_RETURN(auto memory, replica.optional_int("memory_bytes", 0, INT64_MAX));
    status.memory_bytes = memory.value_or(0);
    out.replicas.push_back(std::move(status));
  }
  return out;
}

// --- node.desired ---

Result<ArtifactRef> parse_artifact(const json& item, const std::string& where) {
  if (!item.is_object()) return invalid_argument(where + " must be an object");
  ArtifactRef ref;
  OUTPOST_ASSIGN_OR_RETURN(ref.name, text_field(item, "name", where));
  OUTPOST_ASSIGN_OR_RETURN(ref.sha256, text_field(item, "sha256", where));
  const auto size = item.find("size");
  if (size == item.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
    return invalid_argument(where + ".size must be a non-negative integer");
  }
  ref.size = size->get<uint64_t>();
  if (ref.name.empty() || ref.name.find('/') != std::string::npos || ref.name[0] == '.') {
    return invalid_argument(where + ".name must be a plain file name");
  }
  return ref;
}

Status read_compute_info(const json& info, const std::string& where, DesiredReplica& replica) {
  if (const auto cpu = info.find("cpu_limit"); cpu != info.end()) {
    OUTPOST_ASSIGN_OR_RETURN(const std::string text, quantity_text(*cpu, where + ".cpu_limit"));
    OUTPOST_ASSIGN_OR_RETURN(replica.cpu_millicores,
                             parse_cpu_quantity(text, where + ".cpu_limit"));
  }
  if (const auto memory = info.find("cpu_memory"); memory != info.end()) {
    OUTPOST_ASSIGN_OR_RETURN(const std::string text, quantity_text(*memory, where + ".cpu_memory"));
    OUTPOST_ASSIGN_OR_RETURN(replica.memory_bytes,
                             parse_memory_quantity(text, where + ".cpu_memory"));
  }
  if (const auto count = info.find("num_accelerators"); count != info.end()) {
    if (!count->is_number_integer() || count->get<int64_t>() < 0 || count->get<int64_t>() > 64) {
      return invalid_argument(where + ".num_accelerators must be 0..64");
    }
    replica.num_accelerators = count->get<int>();
  }
  if (const auto memory = info.find("accelerator_memory"); memory != info.end()) {
    OUTPOST_ASSIGN_OR_RETURN(const std::string text,
                             quantity_text(*memory, where + ".accelerator_memory"));
    OUTPOST_ASSIGN_OR_RETURN(replica.accelerator_memory_bytes,
                             parse_memory_quantity(text, where + ".accelerator_memory"));
  }
  return {};
}

bool DesiredReplica::operator==(const DesiredReplica& other) const {
  return replica_id == other.replica_id && deployment_id == other.deployment_id &&
         model_version_id == other.model_version_id && artifacts == other.artifacts &&
         cpu_millicores == other.cpu_millicores && memory_bytes == other.memory_bytes &&
         num_accelerators == other.num_accelerators &&
         accelerator_memory_bytes == other.accelerator_memory_bytes &&
         disable_packing == other.disable_packing;
}

json to_json(const DesiredState& state) {
  json replicas = json::array();
  for (const auto& replica : state.replicas) {
    json artifacts = json::array();
    for (const auto& artifact : replica.artifacts) {
      artifacts.push_back(
          {{"name", artifact.name}, {"sha256", artifact.sha256}, {"size", artifact.size}});
    }
    json compute = json::object();
    if (replica.cpu_millicores > 0) {
      compute["cpu_limit"] = std::to_string(replica.cpu_millicores) + "m";
    }
    if (replica.memory_bytes > 0) compute["cpu_memory"] = std::to_string(replica.memory_bytes);
    if (replica.num_accelerators > 0) compute["num_accelerators"] = replica.num_accelerators;
    if (replica.accelerator_memory_bytes > 0) {
      compute["accelerator_memory"] = std::to_string(replica.accelerator_memory_bytes);
    }
    replicas.push_back({{"replica_id", replica.replica_id},
                        {"deployment_id", replica.deployment_id},
                        {"user_id", replica.user_id},
                        {"model_id", replica.model_id},
                        {"model_version_id", replica.model_version_id},
                        {"artifacts", std::move(artifacts)},
                        {"inference_compute_info", std::move(compute)},
                        {"disable_packing", replica.disable_packing}});
  }
  return {{"version", state.version}, {"replicas", std::move(replicas)}};
}

Result<DesiredState> parse_desired_state(const json& document) {
  if (!document.is_object()) return invalid_argument("desired state must be a JSON object");
  DesiredState state;
  const auto version = document.find("version");
  if (version == document.end() || !version->is_number_integer() || version->get<int64_t>() < 0) {
    return invalid_argument("desired state: version must be a non-negative integer");
  }
  state.version = version->get<uint64_t>();
  const auto replicas = document.find("replicas");
  if (replicas == document.end() || !replicas->is_array()) {
    return invalid_argument("desired state: replicas must be an array");
  }
  if (replicas->size() > kMaxDesiredReplicas) {
    return invalid_argument("desired state: too many replicas");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < replicas->size(); ++i) {
    const auto& item = (*replicas)[i];
    const std::string where = "replicas[" + std::to_string(i) + "]";
    if (!item.is_object()) return invalid_argument(where + " must be an object");
    DesiredReplica replica;
    OUTPOST_ASSIGN_OR_RETURN(replica.replica_id, text_field(item, "replica_id", where));
    OUTPOST_ASSIGN_OR_RETURN(replica.deployment_id, text_field(item, "deployment_id", where));
    OUTPOST_ASSIGN_OR_RETURN(replica.user_id, text_field(item, "user_id", where, false));
    OUTPOST_ASSIGN_OR_RETURN(replica.model_id, text_field(item, "model_id", where, false));
    OUTPOST_ASSIGN_OR_RETURN(replica.model_version_id, text_field(item, "model_version_id", where));
    if (replica.replica_id.empty() || !seen.insert(replica.replica_id).second) {
      return invalid_argument(where + ".replica_id is empty or repeated");
    }
    const auto artifacts = item.find("artifacts");
    if (artifacts == item.end() || !artifacts->is_array() || artifacts->empty()) {
      return invalid_argument(where + ".artifacts must be a non-empty array");
    }
    for (size_t a = 0; a < artifacts->size(); ++a) {
      OUTPOST_ASSIGN_OR_RETURN(
          auto artifact,
          parse_artifact((*artifacts)[a], where + ".artifacts[" + std::to_string(a) + "]"));
      replica.artifacts.push_back(std::move(artifact));
    }
    if (const auto info = item.find("inference_compute_info");
        info != item.end() && info->is_object()) {
      OUTPOST_RETURN_IF_ERROR(read_compute_info(*info, where + ".inference_compute_info", replica));
    }
    if (const auto packing = item.find("disable_packing"); packing != item.end()) {
      if (!packing->is_boolean()) {
        return invalid_argument(where + ".disable_packing must be a boolean");
      }
      replica.disable_packing = packing->get<bool>();
    }
    state.replicas.push_back(std::move(replica));
  }
  return state;
}

}  // namespace outpost::protocol
