// Resource configs in Clarifai's shapes: what is accepted, the defaults filled in, and for each
// kind of mistake an error that names the field to change.
#include <gtest/gtest.h>

#include "controlplane/control_config.h"
#include "controlplane/resources/document.h"
#include "controlplane/resources/resource_config.h"

namespace outpost::control {
namespace {

using nlohmann::json;

json yaml(const std::string& text) {
  auto parsed = parse_yaml(text);
  EXPECT_TRUE(parsed.ok()) << parsed.error().message();
  return parsed.ok() ? parsed.value() : json();
}

// The message of the error a deployment config gives, "" when it is accepted.
std::string deployment_error(const std::string& text, const std::string& path_id = "") {
  auto spec = parse_deployment(yaml(text), path_id);
  return spec.ok() ? "" : spec.error().message();
}

constexpr const char* kClarifaiDeployment = R"(
deployment:
 id: "test-deployment"
 description: "some random deployment"
 autoscale_config:
   min_replicas: 0
   max_replicas: 1
   traffic_history_seconds: 100
   scale_down_delay_seconds: 30
   scale_up_delay_seconds: 30
   scale_to_zero_delay_seconds: 50
   disable_packing: false
 worker:
   model:
     id: "apparel-clusterering"
     model_version:
       id: "cc911f6b0ed748efb89e3d1359c146c4"
     user_id: "clarifai"
     app_id: "main"
 scheduling_choice: 4
 nodepools:
   - id: "test-nodepool"
     compute_cluster:
         id: "test-compute-cluster"
)";

TEST(ResourceConfigTest, AcceptsClarifaisDeploymentConfig) {
  auto spec = parse_deployment(yaml(kClarifaiDeployment), "");
  ASSERT_TRUE(spec.ok()) << spec.error().message();
  EXPECT_EQ(spec->id, "test-deployment");
  EXPECT_EQ(spec->model_id, "apparel-clusterering");
  EXPECT_EQ(spec->model_version_id, "cc911f6b0ed748efb89e3d1359c146c4");
  EXPECT_EQ(spec->autoscale.max_replicas, 1);
  EXPECT_EQ(spec->autoscale.scale_to_zero_delay_seconds, 50);
  EXPECT_EQ(spec->scheduling_choice, 4);
  ASSERT_EQ(spec->nodepools.size(), 1u);
  EXPECT_EQ(spec->nodepools[0].compute_cluster_id, "test-compute-cluster");
  EXPECT_EQ(spec->doc["autoscale_config"]["traffic_history_seconds"], 100);
}

TEST(ResourceConfigTest, AcceptsClarifaisClusterAndNodepoolConfigs) {
  auto cluster = parse_compute_cluster(yaml(R"(
compute_cluster:
  id: "test-compute-cluster"
  description: "My AWS compute cluster"
  cloud_provider:
      id: "aws"
  region: "us-east-1"
  managed_by: "clarifai"
  cluster_type: "dedicated"
  visibility:
    gettable: 10
)"),
                                       "");
  ASSERT_TRUE(cluster.ok()) << cluster.error().message();
  EXPECT_EQ(cluster->doc["cloud_provider"]["id"], "aws");
  auto pool = parse_nodepool(yaml(R"(
nodepool:
  id: "test-nodepool"
  description: "First nodepool in AWS in a proper compute cluster"
  compute_cluster:
    id: "test-compute-cluster"
  instance_types:
    - id: "g5.xlarge"
      compute_info:
        cpu_limit: "8"
        cpu_memory: "16Gi"
        accelerator_type:
          - "a10"
        num_accelerators: 1
        accelerator_memory: "40Gi"
  node_capacity_type:
    capacity_types:
      - 1
      - 2
  min_instances: 0
  max_instances: 1
)"),
                             "test-compute-cluster", "");
  ASSERT_TRUE(pool.ok()) << pool.error().message();
  EXPECT_EQ(pool->max_instances, 1);
  EXPECT_EQ(pool->doc["instance_types"][0]["compute_info"]["cpu_memory"], "16Gi");
}

TEST(ResourceConfigTest, DefaultsFollowClarifaisRoutingDocs) {
  auto spec = parse_deployment(yaml(R"(
deployment:
  id: d
  worker: {model: {id: m}}
  scheduling_choice: 4
  nodepools: [{id: np}]
)"),
                               "");
  ASSERT_TRUE(spec.ok()) << spec.error().message();
  EXPECT_EQ(spec->autoscale.min_replicas, 0);
  EXPECT_EQ(spec->autoscale.max_replicas, 5);
  EXPECT_EQ(spec->autoscale.scale_up_delay_seconds, 300);
  EXPECT_EQ(spec->autoscale.scale_down_delay_seconds, 300);
  EXPECT_EQ(spec->autoscale.scale_to_zero_delay_seconds, 1800);
  EXPECT_FALSE(spec->autoscale.disable_packing);
}

TEST(ResourceConfigTest, ScaleToZeroBelowScaleDownNamesTheField) {
  const std::string error = deployment_error(R"(
deployment:
  id: d
  autoscale_config: {scale_down_delay_seconds: 60, scale_to_zero_delay_seconds: 30}
  worker: {model: {id: m}}
  scheduling_choice: 4
  nodepools: [{id: np}]
)");
  EXPECT_NE(error.find("deployment.autoscale_config.scale_to_zero_delay_seconds"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("scale_down_delay_seconds (60)"), std::string::npos) << error;
}

TEST(ResourceConfigTest, EachMistakeNamesItsField) {
  const std::string base_tail = "  scheduling_choice: 4\n  nodepools: [{id: np}]\n";
  struct Case {
    std::string config;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"deployment:\n  id: d\n  worker: {model: {id: m}}\n  nodepools: [{id: np}]\n",
       "deployment.scheduling_choice"},
      {"deployment:\n  id: d\n  worker: {model: {id: m}}\n  scheduling_choice: 4\n",
       "deployment.nodepools"},
      {"deployment:\n  id: d\n" + base_tail, "deployment.worker"},
      {"deployment:\n  id: d\n  worker: {model: {}}\n" + base_tail, "deployment.worker.model.id"},
      {"deployment:\n  id: d\n  colour: blue\n  worker: {model: {id: m}}\n" + base_tail,
       "deployment.colour"},
      {"deployment:\n  id: d\n  worker: {model: {id: m}}\n  autoscale_config: {max_replicas: "
       "\"two\"}\n" +
           base_tail,
       "deployment.autoscale_config.max_replicas"},
      {"deployment:\n  id: d\n  worker: {model: {id: m}}\n  autoscale_config: {min_replicas: 3, "
       "max_replicas: 2}\n" +
           base_tail,
       "deployment.autoscale_config.max_replicas"},
      {"deployment:\n  id: d\n  worker: {model: {id: m}}\n  autoscale_config: {enable_packing: "
       "true}\n" +
           base_tail,
       "deployment.autoscale_config.enable_packing"},
      {"deployment:\n  id: d\n  worker: {model: {id: m}}\n  autoscale_config: {disable_packing: "
       "\"yes\"}\n" +
           base_tail,
       "deployment.autoscale_config.disable_packing"},
      {"deployment:\n  id: d\n  worker: {model: {id: m}}\n  scheduling_choice: 9\n  nodepools: "
       "[{id: np}]\n",
       "deployment.scheduling_choice"},
      {"deployment:\n  id: \"bad id!\"\n  worker: {model: {id: m}}\n" + base_tail, "deployment.id"},
      {"deployment:\n  id: " + std::string(65, 'a') + "\n  worker: {model: {id: m}}\n" + base_tail,
       "deployment.id"},
      {"deployment:\n  id: d\n  worker: {model: {id: m}}\n  scheduling_choice: 4\n  nodepools: "
       "[{id: np}, {id: np}]\n",
       "deployment.nodepools[1].id"},
      {"deployment:\n  id: d\n  worker: {model: {id: m}}\n  scheduling_choice: 4\n  nodepools: "
       "[]\n",
       "deployment.nodepools"},
      {"deployment:\n  id: d\n  worker: {workflow: {id: w}}\n" + base_tail,
       "deployment.worker.workflow"},
      {"nodepool:\n  id: np\n", "deployment"},
  };
  for (const auto& c : cases) {
    const std::string error = deployment_error(c.config);
    EXPECT_EQ(error.rfind(c.field + ":", 0), 0u) << "config:\n" << c.config << "error: " << error;
  }
}

TEST(ResourceConfigTest, IdFromCommandLineMustAgreeWithConfig) {
  const std::string config = "compute_cluster:\n  id: cc-1\n";
  EXPECT_TRUE(parse_compute_cluster(yaml(config), "cc-1").ok());
  EXPECT_TRUE(parse_compute_cluster(yaml("compute_cluster: {}\n"), "cc-2").ok());
  auto differs = parse_compute_cluster(yaml(config), "cc-2");
  ASSERT_FALSE(differs.ok());
  EXPECT_NE(differs.error().message().find("compute_cluster.id"), std::string::npos);
  EXPECT_FALSE(parse_compute_cluster(yaml("compute_cluster: {}\n"), "").ok());
}

TEST(ResourceConfigTest, NodepoolChecks) {
  auto mismatch =
      parse_nodepool(yaml("nodepool: {id: np, compute_cluster: {id: other}}\n"), "cc", "");
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.error().message().rfind("nodepool.compute_cluster.id:", 0), 0u);
  auto bad_quantity = parse_nodepool(
      yaml("nodepool:\n  id: np\n  instance_types: [{id: t, compute_info: {cpu_memory: lots}}]\n"),
      "cc", "");
  ASSERT_FALSE(bad_quantity.ok());
  EXPECT_NE(
      bad_quantity.error().message().find("nodepool.instance_types[0].compute_info.cpu_memory"),
      std::string::npos);
  // Memory in milli-units is a slip for Mi: refused here as the agent refuses it, not stored as
  // 0.016 bytes.
  auto milli_memory = parse_nodepool(
      yaml("nodepool:\n  id: np\n  instance_types: [{id: t, compute_info: {cpu_memory: 16m}}]\n"),
      "cc", "");
  ASSERT_FALSE(milli_memory.ok());
  EXPECT_NE(milli_memory.error().message().find("unknown unit 'm'"), std::string::npos)
      << milli_memory.error().message();
  auto cores = parse_nodepool(
      yaml("nodepool:\n  id: np\n  instance_types: [{id: t, compute_info: {cpu_limit: 500m, "
           "cpu_memory: 16Gi}}]\n"),
      "cc", "");
  EXPECT_TRUE(cores.ok()) << cores.error().message();
  auto bounds =
      parse_nodepool(yaml("nodepool: {id: np, min_instances: 3, max_instances: 1}\n"), "cc", "");
  ASSERT_FALSE(bounds.ok());
  EXPECT_EQ(bounds.error().message().rfind("nodepool.max_instances:", 0), 0u);
  auto capacity = parse_nodepool(
      yaml("nodepool: {id: np, node_capacity_type: {capacity_types: [3]}}\n"), "cc", "");
  EXPECT_FALSE(capacity.ok());
}

TEST(DocumentTest, YamlScalarsFollowTheCoreSchema) {
  const json doc = yaml("a: 1\nb: \"1\"\nc: true\nd: 1.5\ne: ~\nf: 16Gi\ng: '8'\n");
  EXPECT_TRUE(doc["a"].is_number_integer());
  EXPECT_TRUE(doc["b"].is_string());
  EXPECT_TRUE(doc["c"].is_boolean());
  EXPECT_TRUE(doc["d"].is_number_float());
  EXPECT_TRUE(doc["e"].is_null());
  EXPECT_EQ(doc["f"], "16Gi");
  EXPECT_EQ(doc["g"], "8");
}

TEST(DocumentTest, MalformedInputGivesAPositionedError) {
  auto bad_yaml = parse_yaml("a: [1, 2\nb: c\n");
  ASSERT_FALSE(bad_yaml.ok());
  EXPECT_NE(bad_yaml.error().message().find("line"), std::string::npos);
  auto bad_json = parse_json("{\"a\": ");
  ASSERT_FALSE(bad_json.ok());
  EXPECT_NE(bad_json.error().message().find("malformed JSON"), std::string::npos);
  EXPECT_FALSE(parse_yaml("a: 1\n---\nb: 2\n").ok());
  EXPECT_FALSE(parse_yaml("a: 1\na: 2\n").ok());
}

// yaml-cpp 0.7 loops forever (allocating) in LoadAll on a stray top-level flow entry; one such
// request body must get an error, not a hung thread (found by the resource_config fuzzer).
TEST(DocumentTest, StrayFlowEntriesAreRefusedNotHung) {
  for (const char* body : {",", ",[", "\"x\" ,", "---\n,", ",]"}) {
    auto parsed = parse_body_object(body, "application/yaml");
    ASSERT_FALSE(parsed.ok()) << body;
    EXPECT_NE(parsed.error().message().find("YAML document"), std::string::npos)
        << body << ": " << parsed.error().message();
  }
  EXPECT_TRUE(parse_body_object("a: 1\n", "application/yaml").ok());
}

// Strings that are not UTF-8 are refused at the door: stored, they made every later
// json::dump() throw (found by the resource_config fuzzer: a crash of the control plane).
TEST(DocumentTest, YamlThatIsNotUtf8IsRefused) {
  const std::string body =
      "nodepool:\n  id: np\n  capacity_types: [\xcb"
      "1, 2]\n";
  auto parsed = parse_body_object(body, "application/yaml");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message().find("not valid UTF-8 (at byte 38)"), std::string::npos)
      << parsed.error().message();
  EXPECT_TRUE(parse_body_object("name: \"h\xc3\xa9llo\"\n", "application/yaml").ok());
}

// A number too large for a double is refused like any other malformed JSON (it used to throw
// out of the parser and end the process; found by the resource_config fuzzer).
TEST(DocumentTest, NumbersThatOverflowAreMalformedJson) {
  auto parsed = parse_json("{\"a\": 1E999999}");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message().find("malformed JSON"), std::string::npos);
}

TEST(DocumentTest, RefusesDeepNestingAndAliasBombs) {
  EXPECT_FALSE(parse_json(std::string(1000, '[') + std::string(1000, ']')).ok());
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'h'; ++c) {
    const char prev = static_cast<char>(c - 1);
    bomb += std::string(1, c) + ": &" + c + " [*" + prev + ", *" + prev + ", *" + prev + ", *" +
            prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev +
            ", *" + prev + "]\n";
  }
  auto parsed = parse_yaml(bomb);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message().find("nodes"), std::string::npos);
}

TEST(DocumentTest, BodyContentTypeSelectsTheParser) {
  EXPECT_TRUE(parse_body_object("compute_cluster: {id: a}", "application/yaml").ok());
  EXPECT_FALSE(parse_body_object("compute_cluster: {id: a}", "application/json").ok());
  EXPECT_FALSE(parse_body_object("[1, 2]", "application/json").ok());
  EXPECT_FALSE(parse_body_object("", "application/json").ok());
}

TEST(ControlConfigTest, ReadsEveryKeyAndNamesUnknownOnes) {
  auto config = parse_control_config(R"(
listen: "127.0.0.1:9443"
data_dir: /tmp/x
tls: {cert_file: a, key_file: b}
limits: {max_model_bytes: 4096}
url_inputs: {allow_private_addresses: true}
)");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->listen_port, 9443);
  EXPECT_EQ(config->max_model_bytes, 4096u);
  EXPECT_TRUE(config->url_allow_private);
  auto unknown = parse_control_config("tls: {cert: a}\n");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().message().rfind("tls.cert:", 0), 0u);
  EXPECT_FALSE(load_control_config({"--listen", "127.0.0.1:1"}).ok());  // no TLS: refused
}

TEST(ControlConfigTest, TunnelKeepaliveIsConfigurableAndChecked) {
  auto defaults = parse_control_config("listen: \"127.0.0.1:9443\"\n");
  ASSERT_TRUE(defaults.ok()) << defaults.error().message();
  EXPECT_EQ(defaults->tunnel_keepalive_seconds, 2);
  EXPECT_EQ(defaults->tunnel_dead_after_seconds, 8);
  auto config = parse_control_config("tunnel: {keepalive_seconds: 2, dead_after_seconds: 6}\n");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->tunnel_keepalive_seconds, 2);
  EXPECT_EQ(config->tunnel_dead_after_seconds, 6);
  // A peer declared dead before its first ping could be answered would flap forever.
  auto backwards = parse_control_config("tunnel: {keepalive_seconds: 10, dead_after_seconds: 5}\n");
  ASSERT_FALSE(backwards.ok());
  EXPECT_NE(backwards.error().message().find("tunnel.dead_after_seconds"), std::string::npos)
      << backwards.error().message();
}

}  // namespace
}  // namespace outpost::control
