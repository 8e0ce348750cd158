// The real outpostd binary and its local files (docs/security.md, "Local files"): started by
// hand under umask 022 it still leaves nothing open to other users; it refuses a runtime_dir
// that others can write or that another user owns, naming the directory and the fix; it
// refuses a proxy credentials file others can read; and `--check-config` warns about an
// agent.yaml that holds a proxy password and that others can read.
//
// No control plane is needed: the agent creates its directories, status socket and artifact
// cache before it first dials, and keeps retrying a control plane that is not there.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/child_process.h"
#include "tests/support/test_pki.h"
#include "tests/support/tinyproxy.h"
#include <sys/stat.h>
#include <unistd.h>

namespace outpost::testing {
namespace {

namespace fs = std::filesystem;
constexpr uid_t kNobody = 65534;

::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) {
    return ::testing::AssertionSuccess() << "\"" << text << "\" holds \"" << part << "\"";
  }
  return ::testing::AssertionFailure() << "\"" << text << "\" lacks \"" << part << "\"";
}

void write_file(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path) << text;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

mode_t mode_of(const std::string& path) {
  struct stat info {};
  EXPECT_EQ(::lstat(path.c_str(), &info), 0) << path;
  return info.st_mode & 07777;
}

// Sets the umask of this test process, which the outpostd it starts inherits, and puts the
// old one back at the end.
class Umask {
 public:
  explicit Umask(mode_t mask) : old_(::umask(mask)) {}
  ~Umask() { ::umask(old_); }

 private:
  mode_t old_;
};

class OutpostdFilesTest : public ::testing::Test {
 protected:
  std::string state() const { return dir_.file("state"); }
  std::string run() const { return dir_.file("run"); }

  // An agent.yaml whose control plane is a closed loopback port. Returns its path.
  std::string write_config(const std::string& control_plane_extra = "", mode_t mode = 0600) {
    write_file(dir_.file("join-token"), "ojt_not_used_here\n", 0600);
    std::string path = dir_.file("agent.yaml");
    write_file(path,
               "control_plane:\n  url: wss://localhost:" + std::to_string(free_loopback_port()) +
                   "/v1/tunnel\n" + control_plane_extra + "node:\n  name: files-node\n" +
                   "  join_token_file: " + dir_.file("join-token") + "\nstate_dir: " + state() +
                   "\nruntime_dir: " + run() + "\nlog_level: debug\n",
               mode);
    return path;
  }

  // Runs outpostd until it exits by itself (the refusals): its exit code and output.
  CommandResult run_agent(const std::string& config) {
    return run_command({OUTPOSTD_BIN, "--config", config}, {}, std::chrono::seconds(30));
  }

  TempDir dir_;
};

// Every entry below `root` (links not followed) that group or other can read, write or enter,
// with its mode; and how many sockets were seen, so that an empty walk cannot pass unnoticed.
struct Walk {
  std::vector<std::string> open_to_others;
  int entries = 0;
  int sockets = 0;
};
Walk walk(const std::string& root) {
  Walk result;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    struct stat info {};
    if (::lstat(entry.path().c_str(), &info) != 0) continue;
    ++result.entries;
    if (S_ISSOCK(info.st_mode)) ++result.sockets;
    if (!S_ISLNK(info.st_mode) && (info.st_mode & 077) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
      result.open_to_others.push_back(entry.path().string() + " " + mode);
    }
  }
  return result;
}

TEST_F(OutpostdFilesTest, StartedUnderUmask022ItLeavesNothingOpenToOthers) {
  Umask umask(022);
  // What an older outpostd left under umask 022: its own, readable by all.
  ASSERT_EQ(::mkdir(state().c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((state() + "/artifacts").c_str(), 0755), 0);
  write_file(state() + "/artifacts/old-blob", "x", 0644);
  const std::string config = write_config();

  ChildProcess agent({OUTPOSTD_BIN, "--config", config}, {}, dir_.file("agent.log"));
  // The status socket is the last file start-up makes before the first dial; a hang guard,
  // not a timing assertion.
  const std::string socket = run() + "/outpostd.sock";
  for (int i = 0; i < 300 && !fs::exists(socket) && agent.running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(fs::exists(socket)) << agent.log();

  const Walk state_walk = walk(state());
  const Walk run_walk = walk(run());
  EXPECT_EQ(mode_of(state()), 0700u);
  EXPECT_EQ(mode_of(run()), 0700u);
  EXPECT_TRUE(fs::is_directory(state() + "/artifacts/.partial"));
  EXPECT_EQ(mode_of(state() + "/artifacts/old-blob"), 0600u);
  EXPECT_GE(state_walk.entries, 3);  // artifacts, .partial, old-blob
  EXPECT_GE(run_walk.sockets, 1);    // outpostd.sock
  for (const auto& path : state_walk.open_to_others) ADD_FAILURE() << "open to others: " << path;
  for (const auto& path : run_walk.open_to_others) ADD_FAILURE() << "open to others: " << path;
  EXPECT_EQ(agent.stop(), 0) << agent.log();
}

TEST_F(OutpostdFilesTest, RefusesARuntimeDirOthersCanWriteAndSaysHowToFixIt) {
  ASSERT_EQ(::mkdir(run().c_str(), 0700), 0);
  ASSERT_EQ(::chmod(run().c_str(), 0777), 0);
  const std::string config = write_config();

  const CommandResult agent = run_agent(config);
  EXPECT_NE(agent.exit_code, 0);
  const std::string output = agent.out + agent.err;
  EXPECT_TRUE(contains(output, "runtime_dir: " + run() + " is writable by group/other"));
  EXPECT_TRUE(contains(output, "`chmod 0700 " + run() + "`"));
  EXPECT_EQ(mode_of(run()), 0777u) << "refused, not silently changed";
  EXPECT_FALSE(fs::exists(run() + "/outpostd.sock"));

  const CommandResult check = run_command({OUTPOSTD_BIN, "--check-config", "--config", config});
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_TRUE(contains(check.err, "`chmod 0700 " + run() + "`"));
}

TEST_F(OutpostdFilesTest, RefusesARuntimeDirOwnedByAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
  ASSERT_EQ(::mkdir(run().c_str(), 0700), 0);
  ASSERT_EQ(::chown(run().c_str(), kNobody, kNobody), 0);
  const std::string config = write_config();

  const CommandResult agent = run_agent(config);
  EXPECT_NE(agent.exit_code, 0);
  const std::string output = agent.out + agent.err;
  EXPECT_TRUE(contains(output, "runtime_dir: " + run() + " is owned by uid 65534"));
  EXPECT_TRUE(contains(output, "`chown root " + run() + " && chmod 0700 " + run() + "`"));
  EXPECT_FALSE(fs::exists(run() + "/outpostd.sock"));
}

TEST_F(OutpostdFilesTest, RefusesAProxyCredentialsFileOthersCanReadWithoutShowingIt) {
  const std::string credentials = dir_.file("proxy-credentials");
  write_file(credentials, "agent:Sekr1t-pr0xy\n", 0644);
  const std::string config =
      write_config("  proxy: http://127.0.0.1:" + std::to_string(free_loopback_port()) +
                   "\n  proxy_credentials_file: " + credentials + "\n");
  const CommandResult agent = run_agent(config);
  EXPECT_NE(agent.exit_code, 0);
  const std::string output = agent.out + agent.err;
  EXPECT_TRUE(contains(output, "control_plane.proxy_credentials_file: " + credentials));
  EXPECT_TRUE(contains(output, "`chmod 0600 " + credentials + "`"));
  EXPECT_FALSE(contains(output, "Sekr1t"));
}

TEST_F(OutpostdFilesTest, CheckConfigWarnsWhenAFileOthersCanReadHoldsAProxyPassword) {
  const std::string config = write_config(
      "  proxy: http://agent:Sekr1t-pr0xy@127.0.0.1:" + std::to_string(free_loopback_port()) + "\n",
      0644);
  const CommandResult readable = run_command({OUTPOSTD_BIN, "--check-config", "--config", config});
  EXPECT_EQ(readable.exit_code, 0) << readable.err;  // a warning, not an error
  EXPECT_TRUE(contains(readable.out, config + ": ok"));
  EXPECT_TRUE(contains(readable.err, "warning: " + config + " holds a secret"));
  EXPECT_TRUE(contains(readable.err, "`chmod 0600 " + config + "`"));
  EXPECT_TRUE(contains(readable.err, "proxy_credentials_file"));
  EXPECT_FALSE(contains(readable.err + readable.out, "Sekr1t"));

  ASSERT_EQ(::chmod(config.c_str(), 0600), 0);
  const CommandResult private_file =
      run_command({OUTPOSTD_BIN, "--check-config", "--config", config});
  EXPECT_EQ(private_file.exit_code, 0) << private_file.err;
  EXPECT_FALSE(contains(private_file.err, "warning"));
}

// The credentials reach the proxy from the file alone: a real tinyproxy that demands them lets
// the agent's CONNECT through (it would answer 407 otherwise), and the password is in neither
// the agent's command line nor its log.
TEST_F(OutpostdFilesTest, ProxyCredentialsFromTheFileReachTheProxyAndNoLog) {
  Tinyproxy proxy("agent", "Sekr1t-pr0xy");
  const std::string credentials = dir_.file("proxy-credentials");
  write_file(credentials, "agent:Sekr1t-pr0xy\n", 0600);
  const std::string config =
      write_config("  proxy: http://127.0.0.1:" + std::to_string(proxy.port()) +
                   "\n  proxy_credentials_file: " + credentials + "\n");
  ChildProcess agent({OUTPOSTD_BIN, "--config", config}, {}, dir_.file("agent.log"));
  // Nothing listens behind the proxy: with the right credentials the proxy tries the target
  // and answers 5xx ("refused CONNECT"); with wrong or no credentials it answers 407/401.
  bool answered = false;
  for (int i = 0; i < 300 && !answered && agent.running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    answered = agent.log().find("refused CONNECT") != std::string::npos ||
               agent.log().find("refused the proxy credentials") != std::string::npos;
  }
  const std::string log = agent.log();
  ASSERT_TRUE(answered) << log;
  EXPECT_TRUE(contains(log, "refused CONNECT"));
  EXPECT_FALSE(contains(log, "refused the proxy credentials"));
  EXPECT_FALSE(contains(log, "Sekr1t"));
  EXPECT_FALSE(contains(read_file("/proc/" + std::to_string(agent.pid()) + "/cmdline"), "Sekr1t"));
  EXPECT_EQ(agent.stop(), 0) << log;
}

}  // namespace
}  // namespace outpost::testing
