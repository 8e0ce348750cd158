#include "controlplane/fleet/control_messages.h"

#include "controlplane/resources/document.h"
#include "controlplane/resources/object_reader.h"

namespace outpost::control {

using nlohmann::json;

namespace {

constexpr const char* kReplicaStates[] = {"pending", "fetching", "loading",
                                          "ready",   "failed",   "stopping"};

}  // namespace

Result<CallMetadata> parse_call_metadata(std::string_view text) {
  OUTPOST_ASSIGN_OR_RETURN(auto doc, parse_json(text));
  OUTPOST_ASSIGN_OR_RETURN(auto reader, ObjectReader::create(doc, "metadata"));
  CallMetadata out;
  OUTPOST_ASSIGN_OR_RETURN(out.method, reader.required_string("method"));
  OUTPOST_ASSIGN_OR_RETURN(auto sha, reader.optional_string("sha256"));
  out.sha256 = sha.value_or("");
  return out;
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
  out.replicas_doc = json::array();
  if (const json* replicas = reader.get("replicas")) {
    if (!replicas->is_array() || replicas->size() > 4096) {
      return invalid_argument("report.replicas: must be a list (at most 4096)");
    }
    for (size_t i = 0; i < replicas->size(); ++i) {
      OUTPOST_ASSIGN_OR_RETURN(
          auto replica,
          ObjectReader::create((*replicas)[i], "report.replicas[" + std::to_string(i) + "]"));
      ReplicaState state;
      OUTPOST_ASSIGN_OR_RETURN(state.replica_id, replica.required_string("replica_id"));
      OUTPOST_ASSIGN_OR_RETURN(state.state, replica.required_string("state"));
      bool known = false;
      for (const char* name : kReplicaStates) known = known || state.state == name;
      if (!known) {
        return invalid_argument(replica.path_of("state") + ": '" + state.state +
                                "' is not a replica state");
      }
      OUTPOST_ASSIGN_OR_RETURN(auto message, replica.optional_string("message"));
      state.message = message.value_or("");
      OUTPOST_ASSIGN_OR_RETURN(auto device, replica.optional_string("device"));
      state.device = device.value_or("");
      OUTPOST_ASSIGN_OR_RETURN(auto ongoing,
                               replica.optional_int("ongoing_requests", 0, INT64_MAX));
      state.ongoing_requests = ongoing.value_or(0);
      OUTPOST_ASSIGN_OR_RETURN(auto memory, replica.optional_int("memory_bytes", 0, INT64_MAX));
      state.memory_bytes = memory.value_or(0);
      out.replicas_doc.push_back({{"replica_id", state.replica_id},
                                  {"state", state.state},
                                  {"message", state.message},
                                  {"device", state.device},
                                  {"ongoing_requests", state.ongoing_requests},
                                  {"memory_bytes", state.memory_bytes}});
      out.replicas.push_back(std::move(state));
    }
  }
  return out;
}

std::string error_message(const Error& error) {
  return json{
      {"error",
       {{"code", std::string(error_code_name(error.code()))}, {"message", error.message()}}}}
      .dump();
}

std::optional<Error> agent_error(const json& message) {
  if (!message.is_object()) return std::nullopt;
  const auto it = message.find("error");
  if (it == message.end()) return std::nullopt;
  std::string code = "internal";
  std::string text = "the node reported an error";
  if (it->is_object()) {
    if (it->contains("code") && (*it)["code"].is_string()) code = (*it)["code"].get<std::string>();
    if (it->contains("message") && (*it)["message"].is_string()) {
      text = (*it)["message"].get<std::string>();
    }
  } else if (it->is_string()) {
    text = it->get<std::string>();
  }
  return Error(error_code_from_name(code).value_or(ErrorCode::kInternal), text);
}

}  // namespace outpost::control
