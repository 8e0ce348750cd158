#include "controlplane/resources/resource_config.h"

#include <set>
#include <utility>

#include "common/json_reader.h"
#include "common/quantity.h"
#include "controlplane/state/ids.h"

namespace outpost::control {

using nlohmann::json;

namespace {

constexpr int64_t kMaxSeconds = 30LL * 24 * 3600;  // 30 days: anything longer is a typo
constexpr int64_t kMaxReplicas = 1000;

// The resource's root object: {"deployment": {...}}.
Result<ObjectReader> root_object(const json& body, std::string_view root) {
  OUTPOST_ASSIGN_OR_RETURN(auto top, ObjectReader::create(body, ""));
  if (!top.has(root)) {
    std::string keys;
    for (const auto& item : body.items()) keys += (keys.empty() ? "" : ", ") + item.key();
    return field_error(root, "is required: the config's root must be '" + std::string(root) + ":'" +
                                 (keys.empty() ? "" : " (found: " + keys + ")"));
  }
  OUTPOST_RETURN_IF_ERROR(top.only({root}));
  return top.required_object(root);
}

// The id from the config and the one from the command line or URL must agree.
Result<std::string> resolve_id(const ObjectReader& reader, std::string_view path_id) {
  OUTPOST_ASSIGN_OR_RETURN(auto config_id, reader.optional_string("id"));
  std::string id;
  if (config_id.has_value() && !path_id.empty() && *config_id != path_id) {
    return field_error(reader.path_of("id"), "'" + *config_id + "' differs from the id '" +
                                                 std::string(path_id) + "' given for it");
  }
  id = config_id.has_value() ? *config_id : std::string(path_id);
  if (id.empty()) return field_error(reader.path_of("id"), "is required");
  OUTPOST_RETURN_IF_ERROR(check_id(id, reader.path_of("id")));
  return id;
}

Status copy_string(const ObjectReader& reader, std::string_view key, json& out,
                   const std::string& fallback = {}) {
  OUTPOST_ASSIGN_OR_RETURN(auto value, reader.optional_string(key));
  if (value.has_value() && value->size() > 1024) {
    return field_error(reader.path_of(key), "is longer than 1024 characters");
  }
  if (value.has_value()) {
    out[std::string(key)] = *value;
  } else if (!fallback.empty()) {
    out[std::string(key)] = fallback;
  }
  return {};
}

Status check_one_of(const std::string& value, std::initializer_list<std::string_view> allowed,
                    const std::string& field) {
  std::string list;
  for (const auto& item : allowed) {
    if (value == item) return {};
    list += (list.empty() ? "" : ", ") + std::string(item);
  }
  return field_error(field, "'" + value + "' is not one of " + list);
}

Result<json> parse_visibility(const ObjectReader& parent) {
  OUTPOST_ASSIGN_OR_RETURN(auto visibility, parent.object("visibility"));
  OUTPOST_RETURN_IF_ERROR(visibility.only({"gettable"}));
  OUTPOST_ASSIGN_OR_RETURN(auto gettable, visibility.optional_int("gettable", 0, 100));
  if (gettable.has_value() && *gettable != 10) {
    return field_error(visibility.path_of("gettable"),
                       "only 10 (private) is supported: resources are never public");
  }
  return json{{"gettable", 10}};
}

// A {"id": "..."} reference to another resource, as Clarifai nests them.
Result<std::optional<std::string>> parse_reference(const ObjectReader& parent,
                                                   std::string_view key) {
  if (!parent.has(key)) return std::optional<std::string>();
  OUTPOST_ASSIGN_OR_RETURN(auto reference, parent.object(key));
  OUTPOST_RETURN_IF_ERROR(reference.only({"id", "user_id"}));
  OUTPOST_ASSIGN_OR_RETURN(auto id, reference.required_string("id"));
  OUTPOST_RETURN_IF_ERROR(check_id(id, reference.path_of("id")));
  return std::optional<std::string>(id);
}

}  // namespace

Result<json> parse_inference_compute_info(const json& value, std::string_view path) {
  OUTPOST_ASSIGN_OR_RETURN(auto info, ObjectReader::create(value, std::string(path)));
  OUTPOST_RETURN_IF_ERROR(
      info.only({"cpu_limit", "cpu_memory", "cpu_requests", "cpu_memory_requests",
                 "accelerator_type", "num_accelerators", "accelerator_memory"}));
  json out = json::object();
  // Checked by the parsers the agent uses too, so that both read a quantity alike: cores for the
  // cpu_ keys, bytes for the memory keys ("16m" is refused as memory, not read as 0.016 bytes).
  for (const auto& [key, cores] :
       {std::pair{"cpu_limit", true}, std::pair{"cpu_requests", true},
        std::pair{"cpu_memory", false}, std::pair{"cpu_memory_requests", false},
        std::pair{"accelerator_memory", false}}) {
    const json* quantity = info.get(key);
    if (quantity == nullptr) continue;
    if (!quantity->is_string() && !quantity->is_number()) {
      return field_error(info.path_of(key),
                         "must be a quantity such as \"8\", \"500m\" or \"16Gi\"");
    }
    const std::string text =
        quantity->is_string() ? quantity->get<std::string>() : quantity->dump();
    const std::string field = info.path_of(key);
    OUTPOST_RETURN_IF_ERROR(cores ? parse_cpu_quantity(text, field).status()
                                  : parse_memory_quantity(text, field).status());
    out[key] = text;
  }
  if (const json* types = info.get("accelerator_type")) {
    if (!types->is_array()) {
      return field_error(info.path_of("accelerator_type"),
                         "must be a list of names such as [\"NVIDIA-*\"]");
    }
    for (const auto& type : *types) {
      if (!type.is_string() || type.get<std::string>().empty() ||
          type.get<std::string>().size() > 128) {
        return field_error(info.path_of("accelerator_type"),
                           "must hold non-empty strings such as \"NVIDIA-A10G\"");
      }
    }
    out["accelerator_type"] = *types;
  }
  OUTPOST_ASSIGN_OR_RETURN(auto accelerators, info.optional_int("num_accelerators", 0, 64));
  out["num_accelerators"] = accelerators.value_or(0);
  return out;
}

Result<ComputeClusterSpec> parse_compute_cluster(const json& body, std::string_view path_id) {
  OUTPOST_ASSIGN_OR_RETURN(auto cluster, root_object(body, "compute_cluster"));
  OUTPOST_RETURN_IF_ERROR(cluster.only({"id", "description", "cloud_provider", "region",
                                        "managed_by", "cluster_type", "visibility", "key"}));
  ComputeClusterSpec spec;
  OUTPOST_ASSIGN_OR_RETURN(spec.id, resolve_id(cluster, path_id));
  json doc{{"id", spec.id}};
  OUTPOST_RETURN_IF_ERROR(copy_string(cluster, "description", doc));
  OUTPOST_ASSIGN_OR_RETURN(auto provider, cluster.object("cloud_provider"));
  OUTPOST_RETURN_IF_ERROR(provider.only({"id", "name"}));
  OUTPOST_ASSIGN_OR_RETURN(auto provider_id, provider.optional_string("id"));
  doc["cloud_provider"] = {{"id", provider_id.value_or("local")}};
  OUTPOST_RETURN_IF_ERROR(copy_string(cluster, "region", doc, "na"));
  OUTPOST_RETURN_IF_ERROR(copy_string(cluster, "managed_by", doc, "user"));
  OUTPOST_RETURN_IF_ERROR(check_one_of(doc["managed_by"].get<std::string>(), {"user", "clarifai"},
                                       cluster.path_of("managed_by")));
  OUTPOST_RETURN_IF_ERROR(copy_string(cluster, "cluster_type", doc, "dedicated"));
  OUTPOST_RETURN_IF_ERROR(check_one_of(doc["cluster_type"].get<std::string>(),
                                       {"dedicated", "shared", "local-dev"},
                                       cluster.path_of("cluster_type")));
  OUTPOST_ASSIGN_OR_RETURN(doc["visibility"], parse_visibility(cluster));
  // Clarifai's cluster `key` is a PAT the cluster's agents use; here agents enroll with join
  // tokens instead, so a key in the config is accepted and ignored (never stored).
  spec.doc = std::move(doc);
  return spec;
}

Result<NodepoolSpec> parse_nodepool(const json& body, std::string_view compute_cluster_id,
                                    std::string_view path_id) {
  OUTPOST_ASSIGN_OR_RETURN(auto pool, root_object(body, "nodepool"));
  OUTPOST_RETURN_IF_ERROR(
      pool.only({"id", "description", "compute_cluster", "instance_types", "node_capacity_type",
                 "min_instances", "max_instances", "visibility"}));
  NodepoolSpec spec;
  OUTPOST_ASSIGN_OR_RETURN(spec.id, resolve_id(pool, path_id));
  OUTPOST_ASSIGN_OR_RETURN(auto cluster_ref, parse_reference(pool, "compute_cluster"));
  if (cluster_ref.has_value() && *cluster_ref != compute_cluster_id) {
    return field_error(pool.path_of("compute_cluster.id"),
                       "'" + *cluster_ref + "' differs from the compute cluster '" +
                           std::string(compute_cluster_id) + "' the nodepool is created in");
  }
  spec.compute_cluster_id = std::string(compute_cluster_id);
  json doc{{"id", spec.id}, {"compute_cluster", {{"id", spec.compute_cluster_id}}}};
  OUTPOST_RETURN_IF_ERROR(copy_string(pool, "description", doc));

  json instance_types = json::array();
  if (const json* types = pool.get("instance_types")) {
    if (!types->is_array()) {
      return field_error(pool.path_of("instance_types"), "must be a list");
    }
    std::set<std::string> seen;
    for (size_t i = 0; i < types->size(); ++i) {
      const std::string path = pool.path_of("instance_types") + "[" + std::to_string(i) + "]";
      OUTPOST_ASSIGN_OR_RETURN(auto type, ObjectReader::create((*types)[i], path));
      OUTPOST_RETURN_IF_ERROR(type.only({"id", "description", "compute_info"}));
      OUTPOST_ASSIGN_OR_RETURN(auto type_id, type.required_string("id"));
      if (type_id.empty() || type_id.size() > 128) {
        return field_error(type.path_of("id"), "must be 1 to 128 characters");
      }
      if (!seen.insert(type_id).second) {
        return field_error(type.path_of("id"), "'" + type_id + "' is listed twice");
      }
      json out{{"id", type_id}};
      OUTPOST_RETURN_IF_ERROR(copy_string(type, "description", out));
      if (const json* info = type.get("compute_info")) {
        OUTPOST_ASSIGN_OR_RETURN(out["compute_info"],
                                 parse_inference_compute_info(*info, type.path_of("compute_info")));
      }
      instance_types.push_back(std::move(out));
    }
  }
  doc["instance_types"] = std::move(instance_types);

  OUTPOST_ASSIGN_OR_RETURN(auto capacity, pool.object("node_capacity_type"));
  OUTPOST_RETURN_IF_ERROR(capacity.only({"capacity_types"}));
  json capacity_types = json::array();
  if (const json* types = capacity.get("capacity_types")) {
    if (!types->is_array()) {
      return field_error(capacity.path_of("capacity_types"), "must be a list of 1 and/or 2");
    }
    for (const auto& type : *types) {
      if (!type.is_number_integer() || (type.get<int64_t>() != 1 && type.get<int64_t>() != 2)) {
        return field_error(capacity.path_of("capacity_types"),
                           "holds 1 (on-demand) or 2 (spot), not " + type.dump());
      }
      capacity_types.push_back(type);
    }
  }
  doc["node_capacity_type"] = {{"capacity_types", capacity_types}};

  OUTPOST_ASSIGN_OR_RETURN(auto min_instances, pool.optional_int("min_instances", 0, 100000));
  OUTPOST_ASSIGN_OR_RETURN(auto max_instances, pool.optional_int("max_instances", 0, 100000));
  if (min_instances.has_value() && max_instances.has_value() && *max_instances < *min_instances) {
    return field_error(pool.path_of("max_instances"), "(" + std::to_string(*max_instances) +
                                                          ") must be at least min_instances (" +
                                                          std::to_string(*min_instances) + ")");
  }
  doc["min_instances"] = min_instances.value_or(0);
  if (max_instances.has_value()) doc["max_instances"] = *max_instances;
  spec.max_instances = max_instances;
  OUTPOST_ASSIGN_OR_RETURN(doc["visibility"], parse_visibility(pool));
  spec.doc = std::move(doc);
  return spec;
}

Result<DeploymentSpec> parse_deployment(const json& body, std::string_view path_id) {
  OUTPOST_ASSIGN_OR_RETURN(auto deployment, root_object(body, "deployment"));
  OUTPOST_RETURN_IF_ERROR(deployment.only({"id", "description", "autoscale_config", "worker",
                                           "scheduling_choice", "nodepools", "visibility"}));
  DeploymentSpec spec;
  OUTPOST_ASSIGN_OR_RETURN(spec.id, resolve_id(deployment, path_id));
  json doc{{"id", spec.id}};
  OUTPOST_RETURN_IF_ERROR(copy_string(deployment, "description", doc));

  // autoscale_config
  OUTPOST_ASSIGN_OR_RETURN(auto autoscale, deployment.object("autoscale_config"));
  if (autoscale.has("enable_packing")) {
    return field_error(autoscale.path_of("enable_packing"),
                       "was renamed: write disable_packing (with the opposite value)");
  }
  OUTPOST_RETURN_IF_ERROR(autoscale.only({"min_replicas", "max_replicas", "traffic_history_seconds",
                                          "scale_up_delay_seconds", "scale_down_delay_seconds",
                                          "scale_to_zero_delay_seconds", "disable_packing"}));
  AutoscaleConfig& as = spec.autoscale;
  OUTPOST_ASSIGN_OR_RETURN(auto min_replicas,
                           autoscale.optional_int("min_replicas", 0, kMaxReplicas));
  OUTPOST_ASSIGN_OR_RETURN(auto max_replicas,
                           autoscale.optional_int("max_replicas", 0, kMaxReplicas));
  as.min_replicas = min_replicas.value_or(as.min_replicas);
  as.max_replicas = max_replicas.value_or(std::max(as.max_replicas, as.min_replicas));
  if (as.max_replicas < 1) {
    return field_error(autoscale.path_of("max_replicas"), "must be at least 1");
  }
  if (as.max_replicas < as.min_replicas) {
    return field_error(autoscale.path_of("max_replicas"),
                       "(" + std::to_string(as.max_replicas) + ") must be at least min_replicas (" +
                           std::to_string(as.min_replicas) + ")");
  }
  struct SecondsField {
    const char* name;
    int64_t* target;
  };
  std::optional<int64_t> to_zero;
  for (const SecondsField& field :
       {SecondsField{"traffic_history_seconds", &as.traffic_history_seconds},
        SecondsField{"scale_up_delay_seconds", &as.scale_up_delay_seconds},
        SecondsField{"scale_down_delay_seconds", &as.scale_down_delay_seconds}}) {
    OUTPOST_ASSIGN_OR_RETURN(auto value, autoscale.optional_int(field.name, 0, kMaxSeconds));
    if (value.has_value()) *field.target = *value;
  }
  OUTPOST_ASSIGN_OR_RETURN(to_zero,
                           autoscale.optional_int("scale_to_zero_delay_seconds", 0, kMaxSeconds));
  if (to_zero.has_value()) {
    if (*to_zero < as.scale_down_delay_seconds) {
      return field_error(autoscale.path_of("scale_to_zero_delay_seconds"),
                         "(" + std::to_string(*to_zero) +
                             ") must be at least scale_down_delay_seconds (" +
                             std::to_string(as.scale_down_delay_seconds) + ")");
    }
    as.scale_to_zero_delay_seconds = *to_zero;
  } else {
    as.scale_to_zero_delay_seconds = std::max<int64_t>(1800, as.scale_down_delay_seconds);
  }
  OUTPOST_ASSIGN_OR_RETURN(auto disable_packing, autoscale.optional_bool("disable_packing"));
  as.disable_packing = disable_packing.value_or(false);
  doc["autoscale_config"] = {{"min_replicas", as.min_replicas},
                             {"max_replicas", as.max_replicas},
                             {"traffic_history_seconds", as.traffic_history_seconds},
                             {"scale_up_delay_seconds", as.scale_up_delay_seconds},
                             {"scale_down_delay_seconds", as.scale_down_delay_seconds},
                             {"scale_to_zero_delay_seconds", as.scale_to_zero_delay_seconds},
                             {"disable_packing", as.disable_packing}};

  // worker.model
  OUTPOST_ASSIGN_OR_RETURN(auto worker, deployment.required_object("worker"));
  if (worker.has("workflow")) {
    return field_error(worker.path_of("workflow"), "workflows are not supported; deploy a model");
  }
  OUTPOST_RETURN_IF_ERROR(worker.only({"model"}));
  OUTPOST_ASSIGN_OR_RETURN(auto model, worker.required_object("model"));
  OUTPOST_RETURN_IF_ERROR(model.only({"id", "model_version", "user_id", "app_id"}));
  OUTPOST_ASSIGN_OR_RETURN(spec.model_id, model.required_string("id"));
  OUTPOST_RETURN_IF_ERROR(check_id(spec.model_id, model.path_of("id")));
  OUTPOST_ASSIGN_OR_RETURN(auto version, parse_reference(model, "model_version"));
  spec.model_version_id = version.value_or("");
  OUTPOST_ASSIGN_OR_RETURN(auto model_user, model.optional_string("user_id"));
  spec.model_user_id = model_user.value_or("");
  if (!spec.model_user_id.empty()) {
    OUTPOST_RETURN_IF_ERROR(check_id(spec.model_user_id, model.path_of("user_id")));
  }
  OUTPOST_ASSIGN_OR_RETURN(auto app_id, model.optional_string("app_id"));
  (void)app_id;  // Clarifai's apps do not exist here; accepted so that its configs load.

  // scheduling_choice: Clarifai's proto enum (0 unknown ... 8 prefer on-demand).
  if (!deployment.has("scheduling_choice")) {
    return field_error(deployment.path_of("scheduling_choice"),
                       "is required (4 = performance, as the clarifai CLI sends)");
  }
  OUTPOST_ASSIGN_OR_RETURN(auto choice, deployment.optional_int("scheduling_choice", 0, 8));
  spec.scheduling_choice = *choice;
  doc["scheduling_choice"] = spec.scheduling_choice;

  // nodepools
  const json* pools = deployment.get("nodepools");
  if (pools == nullptr) {
    return field_error(deployment.path_of("nodepools"),
                       "is required: list the nodepools to deploy to");
  }
  if (!pools->is_array() || pools->empty()) {
    return field_error(deployment.path_of("nodepools"),
                       "must be a non-empty list of {id, compute_cluster: {id}}");
  }
  if (pools->size() > 16) {
    return field_error(deployment.path_of("nodepools"), "lists more than 16 nodepools");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < pools->size(); ++i) {
    const std::string path = deployment.path_of("nodepools") + "[" + std::to_string(i) + "]";
    OUTPOST_ASSIGN_OR_RETURN(auto pool, ObjectReader::create((*pools)[i], path));
    OUTPOST_RETURN_IF_ERROR(pool.only({"id", "compute_cluster"}));
    NodepoolRef ref;
    OUTPOST_ASSIGN_OR_RETURN(ref.id, pool.required_string("id"));
    OUTPOST_RETURN_IF_ERROR(check_id(ref.id, pool.path_of("id")));
    OUTPOST_ASSIGN_OR_RETURN(auto cluster, parse_reference(pool, "compute_cluster"));
    ref.compute_cluster_id = cluster.value_or("");
    if (!seen.insert(ref.id).second) {
      return field_error(pool.path_of("id"), "nodepool '" + ref.id + "' is listed twice");
    }
    spec.nodepools.push_back(ref);
  }
  OUTPOST_ASSIGN_OR_RETURN(doc["visibility"], parse_visibility(deployment));
  spec.doc = std::move(doc);
  return spec;
}

}  // namespace outpost::control
