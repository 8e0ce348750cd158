// The `outpost` CLI against a real outpost-control: login, create/list/get/delete of every
// resource, readable errors with non-zero exits, and one predict of each shape through the
// tunnel to a test agent end.
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "common/spawn.h"
#include "tests/controlplane/control_fixture.h"
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace outpost::testing {
namespace {

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class CliTest : public ::testing::Test {
 protected:
  CliTest() : control_(pki_) {
    std::ofstream(dir_.file("admin.token")) << control_.admin_token() << "\n";
    std::ofstream(dir_.file("cc.yaml")) << "compute_cluster:\n  description: \"lab cluster\"\n"
                                        << "  cloud_provider:\n    id: local\n";
    std::ofstream(dir_.file("np.yaml")) << "nodepool:\n  instance_types:\n    - id: cpu\n"
                                        << "      compute_info: {cpu_limit: \"4\", cpu_memory: "
                                           "\"8Gi\"}\n  max_instances: 4\n";
  }

  // Runs `outpost ARGS` with this test's config directory; `input` on stdin.
  CliRun cli(std::vector<std::string> args, const std::string& input = {}) {
    SpawnOptions options;
    options.in.file = dir_.file("stdin");
    options.out.file = dir_.file("out");
    options.err.file = dir_.file("err");
    std::ofstream(options.in.file) << input;
    ::unlink(options.out.file.c_str());  // spawn_process appends; each run starts them empty
    ::unlink(options.err.file.c_str());
    options.argv = std::move(args);
    options.argv.insert(options.argv.begin(), OUTPOST_CLI_BINARY);
    options.environment = {"OUTPOST_CONFIG_DIR=" + dir_.file("config"), "HOME=" + dir_.path(),
                           "PATH=/usr/bin:/bin"};
    CliRun run;
    auto pid = spawn_process(options);
    if (!pid.ok()) {
      ADD_FAILURE() << pid.error().message();
      return run;
    }
    int status = 0;
    waitpid(pid.value(), &status, 0);
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    run.out = read_all(dir_.file("out"));
    run.err = read_all(dir_.file("err"));
    return run;
  }

  CliRun login() {
    return cli({"login", "--base-url", control_.base_url(), "--ca-file", pki_.ca_file(),
                "--pat-file", dir_.file("admin.token")});
  }

  json cli_json(std::vector<std::string> args) {
    args.insert(args.begin(), {"-o", "json"});
    const CliRun run = cli(args);
    EXPECT_EQ(run.exit_code, 0) << run.err;
    return json::parse(run.out, nullptr, false);
  }

  TestPki pki_;
  TempDir dir_;
  ControlProcess control_;
};

TEST_F(CliTest, LoginKeepsTheTokenInAPrivateFile) {
  const CliRun run = login();
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("as admin"), std::string::npos) << run.out;
  struct stat file {};
  ASSERT_EQ(stat(dir_.file("config/config.yaml").c_str(), &file), 0);
  EXPECT_EQ(file.st_mode & 0777, 0600u);
  EXPECT_NE(read_all(dir_.file("config/config.yaml")).find(control_.admin_token()),
            std::string::npos);
  // A wrong token or a CA that does not sign the server: refused, readably, and nothing saved.
  std::ofstream(dir_.file("wrong.token")) << "opat_nope_nope\n";
  const CliRun wrong = cli({"login", "--base-url", control_.base_url(), "--ca-file", pki_.ca_file(),
                            "--pat-file", dir_.file("wrong.token")});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("unauthenticated"), std::string::npos) << wrong.err;
  TestPki other("other");
  const CliRun untrusted = cli({"login", "--base-url", control_.base_url(), "--ca-file",
                                other.ca_file(), "--pat-file", dir_.file("admin.token")});
  EXPECT_EQ(untrusted.exit_code, 1);
  EXPECT_NE(untrusted.err.find("TLS"), std::string::npos) << untrusted.err;
  EXPECT_EQ(cli({"cc", "list"}).exit_code, 0);  // the first login still stands
}

TEST_F(CliTest, CreatesListsGetsAndDeletesEveryResource) {
  ASSERT_EQ(login().exit_code, 0);
  // computecluster | cc
  CliRun run = cli({"computecluster", "create", "cc-1", "--config", dir_.file("cc.yaml")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  run = cli({"cc", "list"});
  ASSERT_EQ(run.exit_code, 0);
  EXPECT_NE(run.out.find("ID"), std::string::npos);
  EXPECT_NE(run.out.find("cc-1"), std::string::npos);
  EXPECT_NE(run.out.find("lab cluster"), std::string::npos);
  EXPECT_EQ(cli_json({"cc", "get", "cc-1"})["cloud_provider"]["id"], "local");
  // nodepool | np
  run = cli({"np", "create", "cc-1", "np-1", "--config", dir_.file("np.yaml")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(cli_json({"np", "list", "cc-1"})[0]["id"], "np-1");
  EXPECT_EQ(cli_json({"nodepool", "get", "cc-1", "np-1"})["max_instances"], 4);
  run = cli({"np", "join-token", "cc-1", "np-1", "--ttl", "600"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out.rfind("ojt_", 0), 0u) << run.out;
  EXPECT_TRUE(cli_json({"np", "nodes", "cc-1", "np-1"}).empty());
  // model
  TempDir package;
  for (const auto& [name, content] : model_package("text")) {
    std::ofstream(package.file(name), std::ios::binary) << content;
  }
  run = cli({"model", "upload", package.path()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("predict(unary)"), std::string::npos) << run.out;
  run = cli({"model", "ls"});
  EXPECT_NE(run.out.find("text"), std::string::npos);
  run = cli({"model", "get", "text"});
  EXPECT_NE(run.out.find("METHOD"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("text: str"), std::string::npos) << run.out;
  // deployment | dp: the nodepool comes from the command line.
  std::ofstream(dir_.file("dp.yaml")) << "deployment:\n  worker:\n    model:\n      id: text\n"
                                      << "  scheduling_choice: 4\n  autoscale_config:\n"
                                      << "    min_replicas: 1\n    scale_down_delay_seconds: 60\n";
  run = cli({"deployment", "create", "np-1", "dep-1", "--config", dir_.file("dp.yaml")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const json deployments = cli_json({"dp", "list", "np-1"});
  ASSERT_EQ(deployments.size(), 1u);
  EXPECT_EQ(deployments[0]["nodepools"][0]["id"], "np-1");
  run = cli({"dp", "get", "dep-1"});
  EXPECT_NE(run.out.find("unplaced"), std::string::npos) << run.out;
  // delete, in order
  EXPECT_EQ(cli({"dp", "rm", "dep-1"}).exit_code, 0);
  EXPECT_EQ(cli({"model", "delete", "text"}).exit_code, 0);
  EXPECT_EQ(cli({"np", "delete", "cc-1", "np-1"}).exit_code, 0);
  EXPECT_EQ(cli({"cc", "delete", "cc-1"}).exit_code, 0);
  EXPECT_TRUE(cli_json({"cc", "list"}).empty());
}

TEST_F(CliTest, ErrorsAreReadableAndExitNonZero) {
  CliRun run = cli({"cc", "list"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("outpost login"), std::string::npos) << run.err;
  ASSERT_EQ(login().exit_code, 0);
  std::ofstream(dir_.file("bad.yaml")) << "compute_cluster:\n  id: cc-2\n  colour: blue\n";
  run = cli({"cc", "create", "cc-2", "--config", dir_.file("bad.yaml")});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("compute_cluster.colour: unknown field"), std::string::npos) << run.err;
  run = cli({"cc", "create", "other", "--config", dir_.file("bad.yaml")});
  EXPECT_EQ(run.exit_code, 1);
  std::ofstream(dir_.file("broken.yaml")) << "compute_cluster: [\n";
  run = cli({"cc", "create", "cc-3", "--config", dir_.file("broken.yaml")});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("malformed YAML"), std::string::npos) << run.err;
  run = cli({"cc", "get", "missing"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("not found"), std::string::npos);
  EXPECT_EQ(cli({"cc", "create", "x"}).exit_code, 2);  // --config is required
  EXPECT_EQ(cli({"frobnicate"}).exit_code, 2);
  run = cli({"model", "predict", "m"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("--deployment"), std::string::npos) << run.err;
}

TEST_F(CliTest, PredictsOfEachShapeReachTheNodeThroughTheTunnel) {
  ASSERT_EQ(login().exit_code, 0);
  ASSERT_EQ(cli({"cc", "create", "cc", "--config", dir_.file("cc.yaml")}).exit_code, 0);
  ASSERT_EQ(cli({"np", "create", "cc", "np", "--config", dir_.file("np.yaml")}).exit_code, 0);
  std::ofstream(dir_.file("dp.yaml")) << "deployment:\n  scheduling_choice: 4\n";
  for (const char* model : {"text", "chargen", "accumulator"}) {
    TempDir package;
    for (const auto& [name, content] : model_package(model)) {
      std::ofstream(package.file(name), std::ios::binary) << content;
    }
    ASSERT_EQ(cli({"model", "upload", package.path()}).exit_code, 0);
    std::ofstream(dir_.file("dp.yaml"))
        << "deployment:\n  scheduling_choice: 4\n  worker: {model: {id: " << model << "}}\n";
    const CliRun created =
        cli({"dp", "create", "np", std::string("dep-") + model, "--config", dir_.file("dp.yaml")});
    ASSERT_EQ(created.exit_code, 0) << created.err;
  }
  const CliRun token = cli({"np", "join-token", "cc", "np"});
  ASSERT_EQ(token.exit_code, 0);
  auto enrolled =
      TestAgent::enroll(control_.port(), pki_.ca_file(), token.out.substr(0, token.out.find('\n')));
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message();
  TestAgent node(control_.port(), pki_.ca_file(), enrolled->credential);
  ASSERT_TRUE(node.wait_connected());
  ASSERT_TRUE(eventually([&] {
    auto state = node.call("node.sync");
    return state.ok() && (*state)["replicas"].size() == 3;
  }));
  ASSERT_TRUE(node.report_all("ready").ok());
  CliRun run = cli({"np", "nodes", "cc", "np"});
  EXPECT_NE(run.out.find("3/3"), std::string::npos) << run.out;

  // unary
  run = cli({"model", "predict", "text", "--deployment", "dep-text", "--text", "hello", "-i",
             "upper=false"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const json unary = json::parse(run.out, nullptr, false);
  EXPECT_EQ(unary["echo"]["text"], "hello");
  EXPECT_EQ(unary["echo"]["upper"], false);
  const json full = cli_json({"model", "predict", "text", "--compute-cluster", "cc", "--nodepool",
                              "np", "--inputs", R"({"text": "x"})"});
  EXPECT_EQ(full["deployment_id"], "dep-text");
  // generate: chunks printed as they come
  run = cli({"model", "generate", "chargen", "--deployment", "dep-chargen", "--text", "a b c"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "abc\n");
  // stream: items from stdin, one output each
  run =
      cli({"model", "stream", "accumulator", "--deployment", "dep-accumulator"}, "first\nsecond\n");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_LT(run.out.find("first"), run.out.find("second")) << run.out;
  // --values: tensors come back as numbers, converted by the control plane (1.5 and -2.5 as
  // little-endian float32 bytes, base64).
  const char* tensor_item =
      R"([{"x": {"dtype": "float32", "shape": [2], "data_b64": "AADAPwAAIMA="}}])";
  run = cli({"-o", "json", "model", "stream", "accumulator", "--deployment", "dep-accumulator",
             "--inputs", tensor_item, "--values"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find(R"("values":[1.5,-2.5])"), std::string::npos) << run.out;
  EXPECT_EQ(run.out.find("data_b64"), std::string::npos) << run.out;
  run = cli({"-o", "json", "model", "stream", "accumulator", "--deployment", "dep-accumulator",
             "--inputs", tensor_item});
  EXPECT_NE(run.out.find("AADAPwAAIMA="), std::string::npos) << run.out;
  EXPECT_EQ(node.predicts(), 6);
  // The model's error reaches the user.
  run = cli({"model", "predict", "text", "--deployment", "dep-text", "--inputs",
             R"({"text": "x", "fail": "bad input"})"});
  EXPECT_EQ(run.exit_code, 1);
}

}  // namespace
}  // namespace outpost::testing
