// The agent's local-file rules (agent/local_files.h) on real directories and files: what is
// created, what is repaired, what is refused and what the refusal tells the operator to run.
#include "agent/local_files.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "agent/config.h"
#include "tests/support/test_pki.h"
#include "tunnel/proxy.h"
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace outpost::agent {
namespace {

using outpost::testing::TempDir;

constexpr uid_t kNobody = 65534;

// Whether `text` holds `part`, with both in the message either way.
::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) {
    return ::testing::AssertionSuccess() << "\"" << text << "\" holds \"" << part << "\"";
  }
  return ::testing::AssertionFailure() << "\"" << text << "\" lacks \"" << part << "\"";
}

mode_t mode_of(const std::string& path) {
  struct stat info {};
  EXPECT_EQ(::lstat(path.c_str(), &info), 0) << path;
  return info.st_mode & 07777;
}

void write_file(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path) << text;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

void make_socket(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof address.sun_path);
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  const mode_t old_mask = ::umask(0);
  const int rc = ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address);
  ::umask(old_mask);
  ::close(fd);
  ASSERT_EQ(rc, 0) << path;
  ASSERT_EQ(mode_of(path), 0777u);
}

void make_dir(const std::string& path, mode_t mode) {
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0) << path;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;  // whatever the test's umask
}

TEST(PrivateDirTest, CreatesAMissingDirectory0700WhateverTheUmask) {
  TempDir dir;
  const mode_t old_mask = ::umask(0);
  const Status status = prepare_private_dir("state_dir", dir.file("a/b/state"));
  ::umask(old_mask);
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(mode_of(dir.file("a")), 0700u);
  EXPECT_EQ(mode_of(dir.file("a/b")), 0700u);
  EXPECT_EQ(mode_of(dir.file("a/b/state")), 0700u);
}

TEST(PrivateDirTest, RefusesADirectoryOthersCanWriteAndSaysHowToFixIt) {
  TempDir dir;
  const std::string run = dir.file("run");
  for (const mode_t mode : {0777, 0770, 0702, 01777}) {
    make_dir(run, mode);
    const Status status = prepare_private_dir("runtime_dir", run);
    ASSERT_FALSE(status.ok()) << std::oct << mode;
    EXPECT_EQ(status.error().code(), ErrorCode::kFailedPrecondition);
    EXPECT_TRUE(contains(status.error().message(), "runtime_dir: " + run + " is writable"));
    EXPECT_TRUE(contains(status.error().message(), "`chmod 0700 " + run + "`"));
    EXPECT_EQ(mode_of(run), mode) << "a refused directory is left as it was";
    ASSERT_EQ(::rmdir(run.c_str()), 0);
  }
}

TEST(PrivateDirTest, TightensItsOwnDirectoryThatOthersCanOnlyRead) {
  TempDir dir;
  const std::string state = dir.file("state");
  make_dir(state, 0755);
  make_dir(state + "/artifacts", 0755);
  write_file(state + "/artifacts/blob", "x", 0644);
  write_file(state + "/node-credential", "secret", 0640);
  ASSERT_EQ(::symlink("artifacts/blob", (state + "/link").c_str()), 0);
  make_socket(state + "/old.sock");  // left by an earlier run under umask 0: mode 0777
  const Status status = prepare_private_dir("state_dir", state);
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(mode_of(state), 0700u);
  EXPECT_EQ(mode_of(state + "/artifacts"), 0700u);
  EXPECT_EQ(mode_of(state + "/artifacts/blob"), 0600u);
  EXPECT_EQ(mode_of(state + "/node-credential"), 0600u);
  EXPECT_EQ(mode_of(state + "/old.sock"), 0700u);
}

TEST(PrivateDirTest, RefusesASymbolicLinkInsteadOfFollowingIt) {
  TempDir dir;
  make_dir(dir.file("real"), 0700);
  ASSERT_EQ(::symlink(dir.file("real").c_str(), dir.file("run").c_str()), 0);
  const Status status = prepare_private_dir("runtime_dir", dir.file("run"));
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(contains(status.error().message(), "is a symbolic link"));
  EXPECT_TRUE(contains(status.error().message(), "set runtime_dir to the directory itself"));
}

TEST(PrivateDirTest, RefusesAFileWhereTheDirectoryShouldBe) {
  TempDir dir;
  write_file(dir.file("run"), "", 0600);
  const Status status = prepare_private_dir("runtime_dir", dir.file("run"));
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(contains(status.error().message(), "not a directory"));
}

TEST(PrivateDirTest, RefusesADirectoryBelowOneEveryoneCanWriteWithoutTheStickyBit) {
  TempDir dir;
  make_dir(dir.file("open"), 0777);
  const Status status = prepare_private_dir("runtime_dir", dir.file("open/run"));
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(contains(status.error().message(), dir.file("open") + ", a directory above"));
  EXPECT_TRUE(contains(status.error().message(), "`chmod o-w " + dir.file("open") + "`"));
  // With the sticky bit (/tmp's 1777) others cannot rename what is not theirs: accepted.
  ASSERT_EQ(::chmod(dir.file("open").c_str(), 01777), 0);
  const Status sticky = prepare_private_dir("runtime_dir", dir.file("open/run"));
  EXPECT_TRUE(sticky.ok()) << sticky.error().message();
}

class AsRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
  }
};

TEST_F(AsRootTest, RefusesADirectoryOwnedByAnotherUser) {
  TempDir dir;
  const std::string run = dir.file("run");
  make_dir(run, 0700);
  ASSERT_EQ(::chown(run.c_str(), kNobody, kNobody), 0);
  const Status status = prepare_private_dir("runtime_dir", run);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(contains(status.error().message(), run + " is owned by uid 65534"));
  EXPECT_TRUE(contains(status.error().message(), "`chown root " + run + " && chmod 0700 " + run));
}

TEST_F(AsRootTest, RefusesASubdirectorySwappedInByAnotherUser) {
  TempDir dir;
  const std::string run = dir.file("run");
  make_dir(run, 0700);
  make_dir(run + "/workers", 0700);
  ASSERT_EQ(::chown((run + "/workers").c_str(), kNobody, kNobody), 0);
  const Status status = prepare_private_dir("runtime_dir", run);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(contains(status.error().message(), run + "/workers is owned by uid 65534"));
  EXPECT_TRUE(contains(status.error().message(), "rm -rf " + run + "/workers"));
}

TEST_F(AsRootTest, RefusesACredentialsFileOwnedByAnotherUser) {
  TempDir dir;
  const std::string file = dir.file("proxy-credentials");
  write_file(file, "agent:pa55\n", 0600);
  ASSERT_EQ(::chown(file.c_str(), kNobody, kNobody), 0);
  const auto credentials = read_proxy_credentials(file);
  ASSERT_FALSE(credentials.ok());
  EXPECT_TRUE(contains(credentials.error().message(), "is owned by uid 65534"));
  EXPECT_FALSE(contains(credentials.error().message(), "pa55"));
}

TEST(ProxyCredentialsTest, ReadsOneLineFromAPrivateFile) {
  TempDir dir;
  const std::string file = dir.file("proxy-credentials");
  write_file(file, "agent:p@ss:w%rd\n", 0600);
  const auto credentials = read_proxy_credentials(file);
  ASSERT_TRUE(credentials.ok()) << credentials.error().message();
  EXPECT_EQ(credentials->username, "agent");
  EXPECT_EQ(credentials->password, "p@ss:w%rd");
  write_file(file, "agent:pa55\r\n", 0400);
  EXPECT_EQ(read_proxy_credentials(file)->password, "pa55");
}

TEST(ProxyCredentialsTest, RefusesAFileOthersCanReadWithoutQuotingIt) {
  TempDir dir;
  const std::string file = dir.file("proxy-credentials");
  for (const mode_t mode : {0644, 0640, 0604, 0660}) {
    write_file(file, "agent:pa55\n", mode);
    const auto credentials = read_proxy_credentials(file);
    ASSERT_FALSE(credentials.ok()) << std::oct << mode;
    EXPECT_TRUE(contains(credentials.error().message(), "`chmod 0600 " + file + "`"));
    EXPECT_FALSE(contains(credentials.error().message(), "pa55"));
  }
}

TEST(ProxyCredentialsTest, RefusesWhatIsNotOneUserPasswordLine) {
  TempDir dir;
  const std::string file = dir.file("proxy-credentials");
  for (const std::string text : {"", "pa55word\n", ":pa55\n", "agent:pa55\nsecond:line\n"}) {
    write_file(file, text, 0600);
    const auto credentials = read_proxy_credentials(file);
    ASSERT_FALSE(credentials.ok()) << text;
    EXPECT_TRUE(contains(credentials.error().message(), "one line, user:password"));
    EXPECT_FALSE(contains(credentials.error().message(), "pa55"));
  }
  EXPECT_FALSE(read_proxy_credentials(dir.file("missing")).ok());
}

TEST(ProxyCredentialsTest, TheTunnelGetsTheFilesCredentialsPercentEncoded) {
  TempDir dir;
  const std::string file = dir.file("proxy-credentials");
  write_file(file, "dom\\agent:p@ss:w%rd/?#\n", 0600);
  auto config = parse_agent_config(
      "control_plane:\n  url: wss://cp.example.com/v1/tunnel\n  proxy: http://[::1]:8080\n"
      "  proxy_credentials_file: " +
          file + "\n",
      "agent.yaml");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->proxy, "http://[::1]:8080");  // what may be logged holds no secret
  const auto url = tunnel_proxy_url(*config);
  ASSERT_TRUE(url.ok()) << url.error().message();
  const auto proxy = tunnel::parse_proxy_url(*url);
  ASSERT_TRUE(proxy.ok()) << proxy.error().message();
  EXPECT_EQ(proxy->username, "dom\\agent");
  EXPECT_EQ(proxy->password, "p@ss:w%rd/?#");
  EXPECT_EQ(proxy->host, "::1");
  EXPECT_EQ(proxy->port, 8080);
  EXPECT_FALSE(contains(proxy->display(), "p@ss"));
}

TEST(ProxyCredentialsTest, ConfigCheckOnTheHostReportsABadCredentialsFile) {
  TempDir dir;
  const std::string file = dir.file("proxy-credentials");
  write_file(file, "agent:pa55\n", 0644);
  auto config = parse_agent_config(
      "control_plane:\n  url: wss://cp/v1/tunnel\n  proxy: "
      "http://127.0.0.1:3128\n  proxy_credentials_file: " +
          file + "\nstate_dir: " + dir.file("state") + "\nruntime_dir: " + dir.file("run") + "\n",
      "agent.yaml");
  ASSERT_TRUE(config.ok()) << config.error().message();
  const Status status = check_agent_config_on_host(*config);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(contains(status.error().message(), "control_plane.proxy_credentials_file: " + file));
  EXPECT_FALSE(contains(status.error().message(), "pa55"));
  ASSERT_EQ(::chmod(file.c_str(), 0600), 0);
  const Status fixed = check_agent_config_on_host(*config);
  EXPECT_TRUE(fixed.ok()) << fixed.error().message();
}

TEST(ProxyCredentialsTest, ConfigNamesAMisplacedCredentialsFile) {
  const auto without_proxy = parse_agent_config(
      "control_plane:\n  url: wss://cp/v1/tunnel\n  proxy_credentials_file: /etc/p\n", "a.yaml");
  ASSERT_FALSE(without_proxy.ok());
  EXPECT_TRUE(contains(without_proxy.error().message(),
                       "control_plane.proxy_credentials_file: needs control_plane.proxy"));
  const auto twice = parse_agent_config(
      "control_plane:\n  url: wss://cp/v1/tunnel\n  proxy: http://u:pw@proxy:3128\n"
      "  proxy_credentials_file: /etc/p\n",
      "a.yaml");
  ASSERT_FALSE(twice.ok());
  EXPECT_TRUE(contains(twice.error().message(), "already holds credentials"));
}

TEST(ConfigFileWarningTest, WarnsOnlyWhenAFileOthersCanReadHoldsASecret) {
  TempDir dir;
  const std::string path = dir.file("agent.yaml");
  const std::string with_password =
      "control_plane:\n  url: wss://cp/v1/tunnel\n  proxy: http://agent:pa55@proxy:3128\n";
  auto config = parse_agent_config(with_password, path);
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(inline_secret_keys(*config), std::vector<std::string>{"control_plane.proxy"});

  write_file(path, with_password, 0644);
  auto warnings = config_file_warnings(path, *config);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(contains(warnings[0], "`chmod 0600 " + path + "`"));
  EXPECT_TRUE(contains(warnings[0], "proxy_credentials_file"));
  EXPECT_FALSE(contains(warnings[0], "pa55"));

  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_TRUE(config_file_warnings(path, *config).empty());

  // Readable by all, but no secret in it: nothing to say.
  const std::string plain =
      "control_plane:\n  url: wss://cp/v1/tunnel\n  proxy: http://proxy:3128\n";
  write_file(path, plain, 0644);
  auto no_secret = parse_agent_config(plain, path);
  ASSERT_TRUE(no_secret.ok());
  EXPECT_TRUE(config_file_warnings(path, *no_secret).empty());
}

}  // namespace
}  // namespace outpost::agent
