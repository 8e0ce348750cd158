#include "agent/credentials.h"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/test_pki.h"
#include <stdlib.h>
#include <sys/stat.h>

namespace outpost::agent {
namespace {

using outpost::testing::TempDir;

mode_t mode_of(const std::string& path) {
  struct stat info {};
  stat(path.c_str(), &info);
  return info.st_mode & 0777;
}

TEST(CredentialStoreTest, NodeCredentialIsPrivateAndSurvivesARestart) {
  TempDir dir;
  const std::string state = dir.file("state");
  {
    CredentialStore store(state, "");
    EXPECT_FALSE(store.load_node_credential().has_value());
    ASSERT_TRUE(store.save_node_credential("onc_node1_secret").ok());
  }
  CredentialStore restarted(state, "");
  EXPECT_EQ(restarted.load_node_credential().value(), "onc_node1_secret");
  EXPECT_EQ(mode_of(state + "/node-credential"), 0600u);
  EXPECT_EQ(mode_of(state), 0700u);
  restarted.discard_node_credential();
  EXPECT_FALSE(restarted.load_node_credential().has_value());
}

TEST(CredentialStoreTest, JoinTokenFileIsDeletedOnceUsed) {
  TempDir dir;
  const std::string token = dir.file("join-token");
  std::ofstream(token) << "ojt_abc_def\n";
  CredentialStore store(dir.file("state"), token);
  EXPECT_EQ(store.read_join_token().value(), "ojt_abc_def");
  store.consume_join_token();
  EXPECT_FALSE(store.read_join_token().ok());
}

TEST(CredentialStoreTest, ReadsTheSystemdCredentialAndExplainsWhenThereIsNone) {
  TempDir dir;
  unsetenv("CREDENTIALS_DIRECTORY");
  CredentialStore none(dir.file("state"), "");
  const auto missing = none.read_join_token();
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("outpost nodepool join-token"), std::string::npos);

  std::ofstream(dir.file("join-token")) << "ojt_from_systemd";
  setenv("CREDENTIALS_DIRECTORY", dir.path().c_str(), 1);
  CredentialStore from_systemd(dir.file("state"), "");
  EXPECT_EQ(from_systemd.read_join_token().value(), "ojt_from_systemd");
  from_systemd.consume_join_token();  // read-only credential: kept
  EXPECT_TRUE(from_systemd.read_join_token().ok());
  unsetenv("CREDENTIALS_DIRECTORY");
}

}  // namespace
}  // namespace outpost::agent
