// The resource configs users write, in Clarifai's shapes: the `compute_cluster:`, `nodepool:`
// and `deployment:` roots with their snake_case fields, as Clarifai's own config files name
// them (docs/api.md, "Compute clusters"). Each parser checks a whole document strictly (unknown
// fields, wrong types, ranges, ids, and the rules between fields) and returns the normalized
// document that is stored and shown back, with defaults filled in. Every error names the field
// at fault.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost::control {

struct ComputeClusterSpec {
  std::string id;
  nlohmann::json doc;  // the normalized `compute_cluster` object
};

struct NodepoolSpec {
  std::string id;
  std::string compute_cluster_id;
  std::optional<int64_t> max_instances;  // nodes that may enroll; absent: no limit
  nlohmann::json doc;                    // the normalized `nodepool` object
};

// Defaults from Clarifai's routing docs; scale_to_zero defaults to max(1800, scale_down).
struct AutoscaleConfig {
  int64_t min_replicas = 0;
  int64_t max_replicas = 5;
  int64_t traffic_history_seconds = 300;
  int64_t scale_up_delay_seconds = 300;
  int64_t scale_down_delay_seconds = 300;
  int64_t scale_to_zero_delay_seconds = 1800;
  bool disable_packing = false;
};

struct NodepoolRef {
  std::string id;
  std::string compute_cluster_id;  // empty when the config leaves it out
};

struct DeploymentSpec {
  std::string id;
  std::string model_id;
  std::string model_version_id;  // empty: the model's latest version when created
  std::string model_user_id;     // empty, or the owner the config names
  AutoscaleConfig autoscale;
  int64_t scheduling_choice = 0;
  std::vector<NodepoolRef> nodepools;
  nlohmann::json doc;  // the normalized `deployment` object
};

// `body` is the whole document: {"compute_cluster": {...}}. `path_id` is the id given on the
// command line or in the URL ("" if none); when both are given they must agree.
Result<ComputeClusterSpec> parse_compute_cluster(const nlohmann::json& body,
                                                 std::string_view path_id);
// `compute_cluster_id` comes from the URL; a compute_cluster.id in the config must match it.
Result<NodepoolSpec> parse_nodepool(const nlohmann::json& body, std::string_view compute_cluster_id,
                                    std::string_view path_id);
Result<DeploymentSpec> parse_deployment(const nlohmann::json& body, std::string_view path_id);

// The `inference_compute_info` of a model's config.yaml, checked and normalized.
Result<nlohmann::json> parse_inference_compute_info(const nlohmann::json& value,
                                                    std::string_view path);

}  // namespace outpost::control
