// Secrets and state on disk across the whole platform, as an operator would audit them: after an
// agent enrolled, a model was deployed and predicted with a personal access token, and wrong
// tokens that look like real ones were tried, no secret (PAT, join token, node credential, or
// their secret parts) is in any file under the platform's directories but the three meant to hold
// one, nor in the command line or environment of outpost-control, outpostd or its workers, nor in
// what the CLI prints when refused; and the agent's state is private (0700 directories, 0600
// files). The control plane's own checks (throttling, TLS versions, upload limits) are
// tests/controlplane/security_test.cc.
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "tests/e2e/platform.h"
#include <sys/stat.h>

namespace outpost::testing {
namespace {

namespace fs = std::filesystem;

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string secret_part(const std::string& token) { return token.substr(token.rfind('_') + 1); }

std::string near_miss(const std::string& token) {
  std::string wrong = token;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  return wrong;
}

unsigned mode_of(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return 0;
  return info.st_mode & 0777;
}

TEST(SecurityTest, NoSecretLeaksIntoLogsArgvOrErrorsAndAgentStateIsPrivate) {
  Platform platform;
  platform.create_pool("cc-e2e", "np-e2e");
  platform.start_agent("cc-e2e", "np-e2e");
  platform.upload_model("text");
  platform.deploy("np-e2e", "dep-text", "text");
  ASSERT_TRUE(platform.wait_live("dep-text")) << platform.agent("node-a").log();
  const auto predicted = platform.cli(
      {"model", "predict", "text", "--deployment", "dep-text", "--text", "hello secret world"});
  EXPECT_NE(predicted.out.find("WORLD SECRET HELLO"), std::string::npos) << predicted.out;

  const std::string state = platform.dir() + "/node-a/state";
  const std::string credential = trimmed(read_file(state + "/node-credential"));
  ASSERT_EQ(credential.rfind("onc_", 0), 0u) << "no node credential in " << state;
  // The join token file was consumed at enrollment.
  EXPECT_FALSE(fs::exists(platform.dir() + "/node-a/join-token"));
  // A second join token, made and never used, must not leak either.
  const std::string join_token = platform.join_token("cc-e2e", "np-e2e");
  ASSERT_EQ(join_token.rfind("ojt_", 0), 0u) << join_token;
  const std::string pat = platform.admin_token();

  // Wrong tokens that look like the real ones, from the CLI as a user would use it.
  TempDir scratch;  // outside the platform's directory: these files hold secrets on purpose
  std::vector<std::string> secrets = {pat, credential, join_token};
  std::vector<std::string> answers;
  for (const std::string& wrong : {near_miss(pat)}) {
    secrets.push_back(wrong);
    std::ofstream(scratch.file("wrong.pat")) << wrong << "\n";
    const auto refused =
        run_command({OUTPOST_CLI_BIN, "--base-url",
                     "https://localhost:" + std::to_string(platform.control_port()), "--ca-file",
                     platform.pki().ca_file(), "--pat-file", scratch.file("wrong.pat"),
                     "computecluster", "list"},
                    {"HOME=" + scratch.path()});
    EXPECT_NE(refused.exit_code, 0);
    EXPECT_NE(refused.err.find("unauthenticated"), std::string::npos) << refused.err;
    answers.push_back(refused.out + refused.err);
  }

  // Processes: outpost-control, outpostd and its workers; their command lines and environments.
  std::vector<pid_t> pids = {platform.control().pid(), platform.agent("node-a").pid()};
  for (const pid_t worker : child_pids(platform.agent("node-a").pid(), "outpost-worker")) {
    pids.push_back(worker);
  }
  ASSERT_GE(pids.size(), 3u) << "no worker is running";
  for (const pid_t pid : pids) {
    answers.push_back(read_file("/proc/" + std::to_string(pid) + "/cmdline"));
    answers.push_back(read_file("/proc/" + std::to_string(pid) + "/environ"));
  }

  // Every file under the platform's directory: logs (the control plane's, the agent's, the
  // workers'), configs, the database, artifacts. Only these two hold a secret by design.
  const std::set<fs::path> allowed = {platform.dir() + "/admin.token", state + "/node-credential"};
  size_t scanned = 0;
  for (const auto& entry : fs::recursive_directory_iterator(platform.dir())) {
    if (!entry.is_regular_file() || allowed.count(entry.path()) != 0) continue;
    const std::string content = read_file(entry.path().string());
    ++scanned;
    for (const std::string& secret : secrets) {
      for (const std::string& needle : {secret, secret_part(secret)}) {
        EXPECT_EQ(content.find(needle), std::string::npos) << entry.path() << " holds " << needle;
      }
    }
  }
  EXPECT_GE(scanned, 5u);
  for (const std::string& answer : answers) {
    for (const std::string& secret : secrets) {
      for (const std::string& needle : {secret, secret_part(secret)}) {
        EXPECT_EQ(answer.find(needle), std::string::npos) << answer;
      }
    }
  }

  // The agent's state: 0700 directories, 0600 files (the node credential, verified artifacts).
  EXPECT_EQ(mode_of(state), 0700u);
  EXPECT_EQ(mode_of(state + "/node-credential"), 0600u);
  EXPECT_EQ(mode_of(state + "/artifacts"), 0700u);
  size_t artifacts = 0;
  for (const auto& entry : fs::directory_iterator(state + "/artifacts")) {
    if (!entry.is_regular_file()) continue;
    EXPECT_EQ(mode_of(entry.path()), 0600u) << entry.path();
    ++artifacts;
  }
  EXPECT_GE(artifacts, 1u);
  // And the control plane's data directory.
  const std::string data = platform.dir() + "/control-data";
  EXPECT_EQ(mode_of(data), 0700u);
  for (const auto& entry : fs::recursive_directory_iterator(data)) {
    if (entry.is_directory()) {
      EXPECT_EQ(mode_of(entry.path()), 0700u) << entry.path();
    } else if (entry.is_regular_file()) {
      EXPECT_EQ(mode_of(entry.path()), 0600u) << entry.path();
    }
  }
}

}  // namespace
}  // namespace outpost::testing
