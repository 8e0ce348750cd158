#include "agent/desired_state.h"

#include <set>

#include "common/quantity.h"

namespace outpost::agent {
namespace {

Result<std::string> text_field(const nlohmann::json& object, const char* key,
                               const std::string& where, bool required = true) {
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
Result<std::string> quantity_text(const nlohmann::json& value, const std::string& where) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_unsigned() || value.is_number_integer()) {
    return std::to_string(value.get<int64_t>());
  }
  if (value.is_number_float()) return std::to_string(value.get<double>());
  return invalid_argument(where + " must be a quantity such as \"1Gi\"");
}

}  // namespace

bool DesiredReplica::operator==(const DesiredReplica& other) const {
  if (artifacts.size() != other.artifacts.size()) return false;
  for (size_t i = 0; i < artifacts.size(); ++i) {
    if (artifacts[i].sha256 != other.artifacts[i].sha256 ||
        artifacts[i].name != other.artifacts[i].name) {
      return false;
    }
  }
  return replica_id == other.replica_id && deployment_id == other.deployment_id &&
         model_version_id == other.model_version_id && cpu_millicores == other.cpu_millicores &&
         memory_bytes == other.memory_bytes && num_accelerators == other.num_accelerators &&
         accelerator_memory_bytes == other.accelerator_memory_bytes &&
         disable_packing == other.disable_packing;
}

Result<DesiredState> DesiredState::from_json(const nlohmann::json& json) {
  if (!json.is_object()) return invalid_argument("desired state must be a JSON object");
  DesiredState state;
  const auto version = json.find("version");
  if (version == json.end() || !version->is_number_integer() || version->get<int64_t>() < 0) {
    return invalid_argument("desired state: version must be a non-negative integer");
  }
  state.version = version->get<uint64_t>();
  const auto replicas = json.find("replicas");
  if (replicas == json.end() || !replicas->is_array()) {
    return invalid_argument("desired state: replicas must be an array");
  }
  if (replicas->size() > 10000) return invalid_argument("desired state: too many replicas");
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
      const auto& art = (*artifacts)[a];
      const std::string art_where = where + ".artifacts[" + std::to_string(a) + "]";
      if (!art.is_object()) return invalid_argument(art_where + " must be an object");
      ArtifactRef ref;
      OUTPOST_ASSIGN_OR_RETURN(ref.name, text_field(art, "name", art_where));
      OUTPOST_ASSIGN_OR_RETURN(ref.sha256, text_field(art, "sha256", art_where));
      const auto size = art.find("size");
      if (size == art.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
        return invalid_argument(art_where + ".size must be a non-negative integer");
      }
      ref.size = size->get<uint64_t>();
      if (ref.name.empty() || ref.name.find('/') != std::string::npos || ref.name[0] == '.') {
        return invalid_argument(art_where + ".name must be a plain file name");
      }
      replica.artifacts.push_back(std::move(ref));
    }
    if (const auto info = item.find("inference_compute_info");
        info != item.end() && info->is_object()) {
      const std::string info_where = where + ".inference_compute_info";
      if (const auto cpu = info->find("cpu_limit"); cpu != info->end()) {
        OUTPOST_ASSIGN_OR_RETURN(const std::string text,
                                 quantity_text(*cpu, info_where + ".cpu_limit"));
        OUTPOST_ASSIGN_OR_RETURN(replica.cpu_millicores,
                                 parse_cpu_quantity(text, info_where + ".cpu_limit"));
      }
      if (const auto memory = info->find("cpu_memory"); memory != info->end()) {
        OUTPOST_ASSIGN_OR_RETURN(const std::string text,
                                 quantity_text(*memory, info_where + ".cpu_memory"));
        OUTPOST_ASSIGN_OR_RETURN(replica.memory_bytes,
                                 parse_memory_quantity(text, info_where + ".cpu_memory"));
      }
      if (const auto count = info->find("num_accelerators"); count != info->end()) {
        if (!count->is_number_integer() || count->get<int>() < 0 || count->get<int>() > 64) {
          return invalid_argument(info_where + ".num_accelerators must be 0..64");
        }
        replica.num_accelerators = count->get<int>();
      }
      if (const auto memory = info->find("accelerator_memory"); memory != info->end()) {
        OUTPOST_ASSIGN_OR_RETURN(const std::string text,
                                 quantity_text(*memory, info_where + ".accelerator_memory"));
        OUTPOST_ASSIGN_OR_RETURN(replica.accelerator_memory_bytes,
                                 parse_memory_quantity(text, info_where + ".accelerator_memory"));
      }
    }
    if (const auto packing = item.find("disable_packing"); packing != item.end()) {
      if (!packing->is_boolean())
        return invalid_argument(where + ".disable_packing must be a boolean");
      replica.disable_packing = packing->get<bool>();
    }
    state.replicas.push_back(std::move(replica));
  }
  return state;
}

}  // namespace outpost::agent
