// The REST API of a real outpost-control process over verified TLS: create, read, list and
// delete every resource; refuse bad input of every kind with an error that says what to change;
// keep tenants apart; enforce scopes; and keep its state across a restart.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/controlplane/control_fixture.h"

namespace outpost::testing {
namespace {

class ApiTest : public ::testing::Test {
 protected:
  ApiTest() : control_(pki_), admin_(api(control_.admin_token())) {}

  Api api(const std::string& token) { return Api(control_.base_url(), pki_.ca_file(), token); }

  std::string upload(Api& api, const std::string& model,
                     const std::map<std::string, std::string>& files) {
    const std::string tar = dir_.file(model + ".tar");
    write_tar(tar, files);
    auto reply = api.upload("/v2/users/me/models/" + model + "/versions", tar);
    EXPECT_EQ(reply.status, 201) << reply.raw;
    return reply.status == 201 ? reply.body["model_version"]["id"].get<std::string>() : "";
  }

  TestPki pki_;
  TempDir dir_;
  ControlProcess control_;
  Api admin_;
};

json deployment_body(const std::string& id, const std::string& model, const std::string& pool) {
  return json{{"deployment",
               {{"id", id},
                {"worker", {{"model", {{"id", model}}}}},
                {"scheduling_choice", 4},
                {"autoscale_config", {{"min_replicas", 1}, {"max_replicas", 2}}},
                {"nodepools", json::array({{{"id", pool}}})}}}};
}

std::string error_code(const ApiReply& reply) {
  return reply.body.is_object() ? reply.body["status"].value("code", "") : "";
}
std::string error_text(const ApiReply& reply) {
  return reply.body.is_object() ? reply.body["status"].value("description", "") : "";
}

TEST_F(ApiTest, CreatesReadsListsAndDeletesEveryResource) {
  // Compute cluster, in Clarifai's YAML shape.
  auto cluster = admin_.post_text("/v2/users/me/compute_clusters",
                                  "compute_cluster:\n  id: cc-1\n  description: \"lab\"\n"
                                  "  cloud_provider:\n    id: local\n  region: na\n",
                                  "application/yaml");
  ASSERT_EQ(cluster.status, 201) << cluster.raw;
  EXPECT_EQ(cluster.body["compute_cluster"]["description"], "lab");
  EXPECT_EQ(admin_.get("/v2/users/me/compute_clusters/cc-1").body["compute_cluster"]["id"], "cc-1");
  EXPECT_EQ(admin_.get("/v2/users/admin/compute_clusters").body["compute_clusters"].size(), 1u);

  // Nodepool.
  auto pool = admin_.post("/v2/users/me/compute_clusters/cc-1/nodepools",
                          json{{"nodepool", {{"id", "np-1"}, {"max_instances", 3}}}});
  ASSERT_EQ(pool.status, 201) << pool.raw;
  EXPECT_EQ(pool.body["nodepool"]["node_count"], 0);
  EXPECT_EQ(admin_.get("/v2/users/me/compute_clusters/cc-1/nodepools/np-1").status, 200);
  EXPECT_EQ(admin_.get("/v2/users/me/nodepools").body["nodepools"].size(), 1u);

  // Model and version: the method signatures come from the worker's inspect.
  const std::string version = upload(admin_, "text", model_package("text"));
  auto model = admin_.get("/v2/users/me/models/text");
  ASSERT_EQ(model.status, 200) << model.raw;
  EXPECT_EQ(model.body["model"]["model_version"]["id"], version);
  const json methods = model.body["model"]["model_version"]["method_signatures"];
  ASSERT_TRUE(methods.is_array());
  const auto predict = std::find_if(methods.begin(), methods.end(),
                                    [](const json& m) { return m.value("name", "") == "predict"; });
  ASSERT_NE(predict, methods.end()) << methods.dump();
  EXPECT_EQ((*predict)["kind"], "unary");
  const json artifacts = model.body["model"]["model_version"]["artifacts"];
  ASSERT_EQ(artifacts.size(), 2u);
  EXPECT_EQ(artifacts[0]["sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(admin_.get("/v2/users/me/models").body["models"].size(), 1u);
  EXPECT_EQ(admin_.get("/v2/users/me/models/text/versions").body["model_versions"].size(), 1u);
  EXPECT_EQ(admin_.get("/v2/users/me/models/text/versions/" + version).status, 200);

  // Deployment: unplaced until a node enrolls.
  auto deployment =
      admin_.post("/v2/users/me/deployments", deployment_body("dep-1", "text", "np-1"));
  ASSERT_EQ(deployment.status, 201) << deployment.raw;
  EXPECT_EQ(deployment.body["deployment"]["worker"]["model"]["model_version"]["id"], version);
  EXPECT_EQ(deployment.body["deployment"]["nodepools"][0]["compute_cluster"]["id"], "cc-1");
  EXPECT_EQ(deployment.body["deployment"]["deployment_metrics"]["desired_replicas"], 1);
  EXPECT_EQ(deployment.body["deployment"]["state"], "unplaced");
  EXPECT_EQ(admin_.get("/v2/users/me/deployments?nodepool_id=np-1").body["deployments"].size(), 1u);
  EXPECT_EQ(admin_.get("/v2/users/me/deployments/dep-1").status, 200);

  // Join token.
  auto token = admin_.post("/v2/users/me/compute_clusters/cc-1/nodepools/np-1/join_tokens",
                           json{{"ttl_seconds", 600}});
  ASSERT_EQ(token.status, 201) << token.raw;
  EXPECT_EQ(token.body["join_token"]["token"].get<std::string>().rfind("ojt_", 0), 0u);

  // What is in use cannot be deleted; the message says what to do first.
  auto busy = admin_.del("/v2/users/me/models/text");
  EXPECT_EQ(busy.status, 409);
  EXPECT_NE(error_text(busy).find("dep-1"), std::string::npos);
  EXPECT_EQ(admin_.del("/v2/users/me/compute_clusters/cc-1").status, 409);

  EXPECT_EQ(admin_.del("/v2/users/me/deployments/dep-1").status, 200);
  EXPECT_EQ(admin_.get("/v2/users/me/deployments/dep-1").status, 404);
  EXPECT_EQ(admin_.del("/v2/users/me/models/text").status, 200);
  EXPECT_EQ(admin_.get("/v2/users/me/models/text").status, 404);
  EXPECT_EQ(admin_.del("/v2/users/me/compute_clusters/cc-1/nodepools/np-1").status, 200);
  EXPECT_EQ(admin_.del("/v2/users/me/compute_clusters/cc-1").status, 200);
  EXPECT_EQ(admin_.get("/v2/users/me/compute_clusters/cc-1").status, 404);
}

TEST_F(ApiTest, KeysHaveScopesAndDeletedKeysStopWorking) {
  auto read_only = admin_.post("/v2/users/me/keys",
                               json{{"key", {{"description", "ci"}, {"scopes", {"read"}}}}});
  ASSERT_EQ(read_only.status, 201) << read_only.raw;
  const std::string token = read_only.body["key"]["token"];
  const std::string key_id = read_only.body["key"]["id"];
  Api reader = api(token);
  EXPECT_EQ(reader.get("/v2/users/me/compute_clusters").status, 200);
  auto refused =
      reader.post("/v2/users/me/compute_clusters", json{{"compute_cluster", {{"id", "x"}}}});
  EXPECT_EQ(refused.status, 403);
  EXPECT_NE(error_text(refused).find("'write' scope"), std::string::npos);
  // A key cannot grant what it lacks.
  EXPECT_EQ(reader.post("/v2/users/me/keys", json{{"key", {{"scopes", {"write"}}}}}).status, 403);
  // Listing never shows a secret.
  auto listed = admin_.get("/v2/users/me/keys");
  EXPECT_EQ(listed.raw.find(token.substr(token.rfind('_') + 1)), std::string::npos);
  EXPECT_EQ(admin_.del("/v2/users/me/keys/" + key_id).status, 200);
  auto gone = reader.get("/v2/users/me/compute_clusters");
  EXPECT_EQ(gone.status, 401);
}

TEST_F(ApiTest, RefusesBadInputWithAnErrorThatSaysWhatToChange) {
  ASSERT_EQ(admin_.post("/v2/users/me/compute_clusters", json{{"compute_cluster", {{"id", "cc"}}}})
                .status,
            201);
  ASSERT_EQ(
      admin_.post("/v2/users/me/compute_clusters/cc/nodepools", json{{"nodepool", {{"id", "np"}}}})
          .status,
      201);
  upload(admin_, "text", model_package("text"));
  struct Case {
    std::string name;
    std::string path;
    std::string body;
    std::string content_type;
    int status;
    std::string expected;  // in the error's description
  };
  const std::string clusters = "/v2/users/me/compute_clusters";
  const std::string deployments = "/v2/users/me/deployments";
  const std::vector<Case> cases = {
      {"malformed JSON", clusters, "{\"compute_cluster\": {", "application/json", 400,
       "malformed JSON"},
      {"malformed YAML", clusters, "compute_cluster: [id: a", "application/yaml", 400,
       "malformed YAML"},
      {"not an object", clusters, "[1]", "application/json", 400, "JSON object"},
      {"wrong root", clusters, "{\"cluster\": {\"id\": \"a\"}}", "application/json", 400,
       "compute_cluster: is required"},
      {"unknown field", clusters, "{\"compute_cluster\": {\"id\": \"a\", \"size\": 3}}",
       "application/json", 400, "compute_cluster.size: unknown field"},
      {"wrong type", clusters, "{\"compute_cluster\": {\"id\": 7}}", "application/json", 400,
       "compute_cluster.id: must be a string"},
      {"bad id", clusters, "{\"compute_cluster\": {\"id\": \"no spaces\"}}", "application/json",
       400, "compute_cluster.id: may hold only"},
      {"long id", clusters, "{\"compute_cluster\": {\"id\": \"" + std::string(65, 'a') + "\"}}",
       "application/json", 400, "compute_cluster.id: is 65 characters"},
      {"missing field", deployments,
       "{\"deployment\": {\"id\": \"d\", \"scheduling_choice\": 4, \"nodepools\": [{\"id\": "
       "\"np\"}]}}",
       "application/json", 400, "deployment.worker: is required"},
      {"unknown model", deployments, deployment_body("d", "nope", "np").dump(), "application/json",
       400, "deployment.worker.model.id: model 'nope' not found"},
      {"unknown nodepool", deployments, deployment_body("d", "text", "nope").dump(),
       "application/json", 400, "deployment.nodepools[0].id: nodepool 'nope' not found"},
      {"scale to zero", deployments,
       "deployment:\n  id: d\n  worker: {model: {id: text}}\n  scheduling_choice: 4\n  "
       "nodepools: [{id: np}]\n  autoscale_config: {scale_down_delay_seconds: 600, "
       "scale_to_zero_delay_seconds: 60}\n",
       "application/yaml", 400, "deployment.autoscale_config.scale_to_zero_delay_seconds"},
      {"oversized body", clusters, std::string(17 * 1024 * 1024, ' '), "application/json", 413,
       "larger than"},
  };
  for (const auto& c : cases) {
    auto reply = admin_.post_text(c.path, c.body, c.content_type);
    EXPECT_EQ(reply.status, c.status) << c.name << ": " << reply.raw;
    EXPECT_NE(error_text(reply).find(c.expected), std::string::npos)
        << c.name << ": " << error_text(reply);
  }
  // One deployment per model per nodepool.
  ASSERT_EQ(admin_.post(deployments, deployment_body("d1", "text", "np")).status, 201);
  auto second = admin_.post(deployments, deployment_body("d2", "text", "np"));
  EXPECT_EQ(second.status, 409);
  EXPECT_NE(error_text(second).find("one deployment per model per nodepool"), std::string::npos);
  // Paths and methods.
  EXPECT_EQ(admin_.get("/v2/users/me/compute_clusters/bad%20id").status, 404);
  EXPECT_EQ(admin_.get("/v2/nothing").status, 404);
  EXPECT_EQ(admin_.del("/v2/users/me/compute_clusters").status, 400);
}

TEST_F(ApiTest, RefusesBadTokens) {
  auto key = admin_.post("/v2/users/me/keys", json{{"key", {{"description", "x"}}}});
  const std::string good = key.body["key"]["token"];
  const std::string wrong_secret = good.substr(0, good.rfind('_') + 1) + std::string(64, '0');
  for (const std::string& token :
       {std::string("opat_nope_nope"), wrong_secret, std::string("garbage"), std::string()}) {
    Api bad = api(token);
    auto reply = bad.get("/v2/users/me");
    EXPECT_EQ(reply.status, 401) << token;
    EXPECT_EQ(error_code(reply), "unauthenticated");
  }
  auto wrong_scheme = admin_.client().send("GET", "/v2/users/me", "", "application/json",
                                           {{"Authorization", "Bearer " + good}});
  ASSERT_TRUE(wrong_scheme.ok());
  EXPECT_EQ(wrong_scheme->status, 401);
  EXPECT_EQ(api(good).get("/v2/users/me").status, 200);
}

TEST_F(ApiTest, TenantsSeeOnlyTheirOwnResources) {
  create_fleet(admin_, "cc", "np", "text", "dep", dir_);
  Api bob = api(create_user(admin_, "bob"));
  for (const std::string& path :
       {std::string("/v2/users/admin/compute_clusters/cc"),
        std::string("/v2/users/admin/models/text"), std::string("/v2/users/admin/deployments/dep"),
        std::string("/v2/users/admin/compute_clusters"),
        std::string("/v2/users/me/compute_clusters/cc"), std::string("/v2/users/me/models/text"),
        std::string("/v2/users/me/deployments/dep")}) {
    EXPECT_EQ(bob.get(path).status, 404) << path;
  }
  EXPECT_EQ(bob.del("/v2/users/admin/deployments/dep").status, 404);
  EXPECT_EQ(admin_.get("/v2/users/admin/deployments/dep").status, 200);  // still there
  // Predictions on another user's model or deployment: 404 as well.
  const json predict{{"runner_selector", {{"deployment", {{"id", "dep"}}}}},
                     {"inputs", {{"text", "hi"}}}};
  EXPECT_EQ(bob.post("/v2/users/admin/models/text/outputs", predict).status, 404);
  EXPECT_EQ(bob.post("/v2/users/me/models/text/outputs", predict).status, 404);
  const json foreign_selector{
      {"runner_selector", {{"deployment", {{"id", "dep"}, {"user_id", "admin"}}}}},
      {"inputs", {{"text", "hi"}}}};
  EXPECT_EQ(bob.post("/v2/users/me/models/text/outputs", foreign_selector).status, 404);
  // Bob cannot deploy Alice's model, nor onto her nodepool, from his own namespace.
  json steal = deployment_body("mine", "text", "np");
  steal["deployment"]["worker"]["model"]["user_id"] = "admin";
  EXPECT_EQ(bob.post("/v2/users/me/deployments", steal).status, 400);
  // His lists are empty; user administration is for administrators.
  EXPECT_TRUE(bob.get("/v2/users/me/compute_clusters").body["compute_clusters"].empty());
  EXPECT_EQ(bob.get("/v2/users").status, 403);
  // The same ids are free in his namespace.
  EXPECT_EQ(
      bob.post("/v2/users/me/compute_clusters", json{{"compute_cluster", {{"id", "cc"}}}}).status,
      201);
}

TEST_F(ApiTest, StateSurvivesARestart) {
  create_fleet(admin_, "cc", "np", "text", "dep", dir_);
  const std::string bob_token = create_user(admin_, "bob");
  control_.restart();
  Api admin = api(control_.admin_token());
  EXPECT_EQ(admin.get("/v2/users/me/compute_clusters/cc").status, 200);
  EXPECT_EQ(admin.get("/v2/users/me/compute_clusters/cc/nodepools/np").status, 200);
  auto model = admin.get("/v2/users/me/models/text");
  EXPECT_EQ(model.status, 200);
  EXPECT_FALSE(model.body["model"]["model_version"]["method_signatures"].empty());
  EXPECT_EQ(admin.get("/v2/users/me/deployments/dep").status, 200);
  EXPECT_EQ(api(bob_token).get("/v2/users/me").body["user"]["id"], "bob");
  // The admin was created once: no second admin token on the restart.
  EXPECT_EQ(control_.log().find("created the administrator",
                                control_.log().find("created the administrator") + 1),
            std::string::npos);
}

TEST_F(ApiTest, UploadsAreCheckedBeforeTheyAreStored) {
  auto package = model_package("text");
  // A model the worker cannot read: refused with the worker's reason.
  auto corrupt = package;
  corrupt["model.pt"] = "corrupt: not a zip archive";
  write_tar(dir_.file("corrupt.tar"), corrupt);
  auto refused = admin_.upload("/v2/users/me/models/text/versions", dir_.file("corrupt.tar"));
  EXPECT_EQ(refused.status, 400) << refused.raw;
  EXPECT_NE(error_text(refused).find("refused"), std::string::npos) << refused.raw;
  // No config.yaml.
  write_tar(dir_.file("noconfig.tar"), {{"model.pt", package["model.pt"]}});
  auto no_config = admin_.upload("/v2/users/me/models/text/versions", dir_.file("noconfig.tar"));
  EXPECT_EQ(no_config.status, 400);
  EXPECT_NE(error_text(no_config).find("config.yaml"), std::string::npos);
  // Uploaded under another model id than its config names.
  write_tar(dir_.file("other.tar"), package);
  auto other = admin_.upload("/v2/users/me/models/other/versions", dir_.file("other.tar"));
  EXPECT_EQ(other.status, 400);
  EXPECT_NE(error_text(other).find("differs"), std::string::npos);
  // Not a tar archive.
  EXPECT_EQ(admin_.post_text("/v2/users/me/models/text/versions", "{}", "application/json").status,
            400);
  // Nothing was stored.
  EXPECT_EQ(admin_.get("/v2/users/me/models/text").status, 404);
}

#ifdef OUTPOST_TEST_MODELS_DIR
// With the real worker: an upload loads the package as a node would, examples and warm-up
// included, so that what would fail on every node is refused now, saying what to change and
// without this server's paths; a typo of one of outpost's keys is refused; a key it does not
// know is accepted with a warning.
TEST_F(ApiTest, UploadRunsTheExamplesAndSaysWhatToFix) {
  const auto package = model_package("text");
  const auto with_config = [&](const std::string& from, const std::string& to) {
    auto edited = package;
    std::string& config = edited["config.yaml"];
    const auto at = config.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) config.replace(at, from.size(), to);
    return edited;
  };
  const auto refusal = [&](const std::map<std::string, std::string>& files) {
    write_tar(dir_.file("package.tar"), files);
    auto reply = admin_.upload("/v2/users/me/models/text/versions", dir_.file("package.tar"));
    EXPECT_EQ(reply.status, 400) << reply.raw;
    EXPECT_EQ(reply.raw.find(control_.data_dir()), std::string::npos) << reply.raw;
    return error_text(reply);
  };
  // An example of the wrong type.
  EXPECT_NE(refusal(with_config("text: \"warm up\"", "text: 5"))
                .find("methods.predict.example: input 'text'"),
            std::string::npos);
  // A misspelt top-level key: batching would silently stay off.
  EXPECT_NE(refusal(with_config("methods:", "batchng:\n  max_batch_size: 4\nmethods:"))
                .find("unknown key batchng (did you mean batching?)"),
            std::string::npos);
  // No model file: named as the package's, not as a temporary folder of this server.
  auto no_model = package;
  no_model.erase("model.pt");
  const std::string missing = refusal(no_model);
  EXPECT_NE(missing.find("the package has no model file model.pt"), std::string::npos) << missing;
  // Nothing of the above was stored.
  EXPECT_EQ(admin_.get("/v2/users/me/models/text").status, 404);
  // A key outpost does not read: stored, and the reply says it was ignored.
  write_tar(dir_.file("notes.tar"), with_config("methods:", "notes: \"for people\"\nmethods:"));
  auto stored = admin_.upload("/v2/users/me/models/text/versions", dir_.file("notes.tar"));
  ASSERT_EQ(stored.status, 201) << stored.raw;
  EXPECT_EQ(stored.body["warnings"],
            json::array({"config.yaml: unknown top-level key notes is ignored"}));
}
#endif

TEST_F(ApiTest, RequestIdsTravelBack) {
  auto mine = admin_.post_text("/v2/users/me/compute_clusters", "{", "application/json",
                               {{"X-Request-Id", "trace-42"}});
  EXPECT_EQ(mine.request_id, "trace-42");
  EXPECT_EQ(mine.body["status"]["req_id"], "trace-42");
  auto generated = admin_.get("/v2/users/me");
  EXPECT_EQ(generated.request_id.rfind("req-", 0), 0u);
  EXPECT_EQ(generated.body["status"]["req_id"], generated.request_id);
  EXPECT_NE(control_.log().find("trace-42"), std::string::npos);
}

}  // namespace
}  // namespace outpost::testing
