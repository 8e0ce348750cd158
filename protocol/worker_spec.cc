#include "protocol/worker_spec.h"

#include <algorithm>
#include <set>
#include <utility>
#include <vector>

#include "common/yaml_document.h"
#include "protocol/model_config.h"

namespace outpost::protocol {
namespace {

using nlohmann::json;

constexpr size_t kMaxUnixPath = 107;  // sizeof(sockaddr_un::sun_path) - 1

Error bad(const std::string& what) { return invalid_argument("worker spec: " + what); }

Status check_keys(const json& object, const std::vector<std::string_view>& known,
                  const std::string& where) {
  for (const auto& [key, value] : object.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return bad("unknown key " + where + key + " (" + unknown_key_hint(key, known) + ")");
    }
  }
  return {};
}

Status read_int(const json& object, const std::string& key, int64_t low, int64_t high,
                const std::string& where, int64_t& out) {
  const auto it = object.find(key);
  if (it == object.end()) return {};
  if (!it->is_number_integer() || it->get<int64_t>() < low || it->get<int64_t>() > high) {
    return bad(where + key + " must be an integer from " + std::to_string(low) + " to " +
               std::to_string(high));
  }
  out = it->get<int64_t>();
  return {};
}

Status read_string(const json& object, const std::string& key, const std::string& where,
                   std::string& out) {
  const auto it = object.find(key);
  if (it == object.end()) return {};
  if (!it->is_string()) return bad(where + key + " must be a string");
  out = it->get<std::string>();
  return {};
}

}  // namespace

bool WorkerSpec::is_cuda() const { return device.rfind("cuda", 0) == 0; }

int64_t WorkerSpec::device_index() const {
  const auto colon = device.find(':');
  if (colon == std::string::npos) return 0;
  return std::stoll(device.substr(colon + 1));
}

Status check_ipc_endpoint(std::string_view endpoint) {
  constexpr std::string_view kScheme = "ipc://";
  if (endpoint.substr(0, kScheme.size()) != kScheme) {
    return bad("endpoint must be ipc://PATH, got \"" + std::string(endpoint) + "\"");
  }
  const std::string_view path = endpoint.substr(kScheme.size());
  if (path.empty() || path.front() != '/') return bad("endpoint path must be absolute");
  if (path.size() > kMaxUnixPath) {
    return bad("endpoint path is " + std::to_string(path.size()) +
               " bytes; a Unix socket path holds at most " + std::to_string(kMaxUnixPath));
  }
  return {};
}

Result<WorkerSpec> parse_worker_spec(std::string_view text) {
  auto parsed = parse_yaml(text);
  if (!parsed) return bad(parsed.error().message());
  const json& root = *parsed;
  if (!root.is_object()) return bad("must be a map");
  OUTPOST_RETURN_IF_ERROR(check_keys(root,
                                     {"worker_id", "endpoint", "device", "slice", "threads",
                                      "device_concurrency", "limits", "models"},
                                     ""));
  WorkerSpec spec;
  OUTPOST_RETURN_IF_ERROR(read_string(root, "worker_id", "", spec.worker_id));
  OUTPOST_RETURN_IF_ERROR(read_string(root, "endpoint", "", spec.endpoint));
  OUTPOST_RETURN_IF_ERROR(check_ipc_endpoint(spec.endpoint));
  OUTPOST_RETURN_IF_ERROR(read_string(root, "device", "", spec.device));
  if (spec.device != "cpu" && spec.device != "cuda") {
    const std::string prefix = "cuda:";
    const std::string index =
        spec.device.rfind(prefix, 0) == 0 ? spec.device.substr(prefix.size()) : "";
    bool digits = !index.empty() && index.size() <= 3;
    for (const char c : index) digits = digits && c >= '0' && c <= '9';
    if (!digits) return bad("device must be cpu, cuda or cuda:N, got \"" + spec.device + "\"");
  }

  if (const auto slice = root.find("slice"); slice != root.end()) {
    if (!slice->is_object()) return bad("slice must be a map");
    OUTPOST_RETURN_IF_ERROR(check_keys(
        *slice, {"mode", "fraction", "mps_thread_percentage", "mps_memory_limit"}, "slice."));
    OUTPOST_RETURN_IF_ERROR(read_string(*slice, "mode", "slice.", spec.slice.mode));
    static const std::set<std::string> modes = {"none", "fraction", "mps", "mig", "timeslice"};
    if (modes.count(spec.slice.mode) == 0) {
      return bad("slice.mode must be none, fraction, mps, mig or timeslice");
    }
    if (const auto it = slice->find("fraction"); it != slice->end()) {
      if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 1) {
        return bad("slice.fraction must be a number in (0, 1]");
      }
      spec.slice.fraction = it->get<double>();
    }
    OUTPOST_RETURN_IF_ERROR(read_int(*slice, "mps_thread_percentage", 1, 100, "slice.",
                                     spec.slice.mps_thread_percentage));
    OUTPOST_RETURN_IF_ERROR(
        read_string(*slice, "mps_memory_limit", "slice.", spec.slice.mps_memory_limit));
    if (spec.slice.mode != "none" && spec.slice.mode != "timeslice" && !spec.is_cuda()) {
      return bad("slice mode " + spec.slice.mode + " needs a cuda device");
    }
  }
  if (const auto threads = root.find("threads"); threads != root.end()) {
    if (!threads->is_object()) return bad("threads must be a map");
    OUTPOST_RETURN_IF_ERROR(check_keys(*threads, {"intra_op", "inter_op"}, "threads."));
    OUTPOST_RETURN_IF_ERROR(
        read_int(*threads, "intra_op", 0, 1024, "threads.", spec.intra_op_threads));
    OUTPOST_RETURN_IF_ERROR(
        read_int(*threads, "inter_op", 1, 1024, "threads.", spec.inter_op_threads));
  }
  OUTPOST_RETURN_IF_ERROR(read_int(root, "device_concurrency", 1, 64, "", spec.device_concurrency));
  if (const auto limits = root.find("limits"); limits != root.end()) {
    if (!limits->is_object()) return bad("limits must be a map");
    OUTPOST_RETURN_IF_ERROR(check_keys(*limits, {"max_message_bytes", "max_parts"}, "limits."));
    int64_t max_bytes = static_cast<int64_t>(spec.limits.max_message_bytes);
    int64_t max_parts = static_cast<int64_t>(spec.limits.max_parts);
    OUTPOST_RETURN_IF_ERROR(
        read_int(*limits, "max_message_bytes", 1024, int64_t{1} << 34, "limits.", max_bytes));
    OUTPOST_RETURN_IF_ERROR(read_int(*limits, "max_parts", 1, 1 << 20, "limits.", max_parts));
    spec.limits.max_message_bytes = static_cast<size_t>(max_bytes);
    spec.limits.max_parts = static_cast<size_t>(max_parts);
  }
  if (const auto models = root.find("models"); models != root.end()) {
    if (!models->is_array()) return bad("models must be a list");
    for (const auto& item : *models) {
      if (!item.is_object()) return bad("each of models must be a map with a package");
      OUTPOST_RETURN_IF_ERROR(
          check_keys(item, {"name", "package", "instances", "sha256", "size"}, "models[]."));
      ModelSpec model;
      OUTPOST_RETURN_IF_ERROR(read_string(item, "name", "models[].", model.name));
      OUTPOST_RETURN_IF_ERROR(read_string(item, "package", "models[].", model.package));
      if (model.package.empty()) return bad("models[].package is required");
      OUTPOST_RETURN_IF_ERROR(read_int(item, "instances", 0, 64, "models[].", model.instances));
      if (const auto it = item.find("sha256"); it != item.end()) {
        if (!it->is_string()) return bad("models[].sha256 must be a string");
        model.sha256 = it->get<std::string>();
      }
      if (const auto it = item.find("size"); it != item.end()) {
        if (!it->is_number_unsigned()) return bad("models[].size must be a byte count");
        model.size = it->get<uint64_t>();
      }
      spec.models.push_back(std::move(model));
    }
  }
  return spec;
}

json worker_spec_to_json(const WorkerSpec& spec) {
  json models = json::array();
  for (const auto& model : spec.models) {
    json item{{"package", model.package}};
    if (!model.name.empty()) item["name"] = model.name;
    if (model.instances > 0) item["instances"] = model.instances;
    if (model.sha256) item["sha256"] = *model.sha256;
    if (model.size) item["size"] = *model.size;
    models.push_back(std::move(item));
  }
  json slice{{"mode", spec.slice.mode}, {"fraction", spec.slice.fraction}};
  if (spec.slice.mps_thread_percentage > 0) {
    slice["mps_thread_percentage"] = spec.slice.mps_thread_percentage;
  }
  if (!spec.slice.mps_memory_limit.empty()) slice["mps_memory_limit"] = spec.slice.mps_memory_limit;
  return json{
      {"worker_id", spec.worker_id},
      {"endpoint", spec.endpoint},
      {"device", spec.device},
      {"slice", std::move(slice)},
      {"threads", {{"intra_op", spec.intra_op_threads}, {"inter_op", spec.inter_op_threads}}},
      {"device_concurrency", spec.device_concurrency},
      {"limits",
       {{"max_message_bytes", spec.limits.max_message_bytes},
        {"max_parts", spec.limits.max_parts}}},
      {"models", std::move(models)}};
}

std::vector<std::string> slice_environment(const WorkerSpec& spec) {
  std::vector<std::string> out;
  if (spec.slice.mode != "mps") return out;
  if (spec.slice.mps_thread_percentage > 0) {
    out.push_back("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=" +
                  std::to_string(spec.slice.mps_thread_percentage));
  }
  if (!spec.slice.mps_memory_limit.empty()) {
    // Per device index, as the MPS client environment expects ("0=4G").
    out.push_back("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=" + std::to_string(spec.device_index()) + "=" +
                  spec.slice.mps_memory_limit);
  }
  return out;
}

}  // namespace outpost::protocol
