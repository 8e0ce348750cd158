// Fuzzes the parsing of resource configs: request bodies and config files, as YAML and as JSON,
// through the compute cluster, nodepool and deployment validators. Beyond "never crash": a
// config that is accepted normalizes to a document that is accepted again, unchanged.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "controlplane/resources/document.h"
#include "controlplane/resources/resource_config.h"

using outpost::control::parse_compute_cluster;
using outpost::control::parse_deployment;
using outpost::control::parse_nodepool;

namespace {

void check(const nlohmann::json& body) {
  if (auto cluster = parse_compute_cluster(body, ""); cluster.ok()) {
    auto again = parse_compute_cluster(nlohmann::json{{"compute_cluster", cluster->doc}}, "");
    if (!again.ok() || again->doc != cluster->doc) std::abort();
  }
  if (auto pool = parse_nodepool(body, "cc", ""); pool.ok()) {
    auto again = parse_nodepool(nlohmann::json{{"nodepool", pool->doc}}, "cc", "");
    if (!again.ok() || again->doc != pool->doc) std::abort();
  }
  (void)parse_deployment(body, "d").ok();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto yaml = outpost::control::parse_body_object(input, "application/yaml"); yaml.ok()) {
    check(yaml.value());
  }
  if (auto json = outpost::control::parse_body_object(input, "application/json"); json.ok()) {
    check(json.value());
  }
  return 0;
}
