#include "agent/status_server.h"

#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <gtest/gtest.h>

#include "tests/support/test_pki.h"
#include <sys/stat.h>

namespace outpost::agent {
namespace {

TEST(StatusServerTest, AnswersOnAPrivateUnixSocket) {
  outpost::testing::TempDir dir;
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread thread([&io] { io.run(); });
  const std::string path = dir.file("outpostd.sock");
  int calls = 0;
  auto server = StatusServer::create(io, path, [&calls] {
                  ++calls;
                  return nlohmann::json{{"state", "connected"}, {"replicas", 2}};
                }).value();
  struct stat info {};
  ASSERT_EQ(stat(path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  const auto status = query_status(path);
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ((*status)["state"], "connected");
  EXPECT_EQ((*status)["replicas"], 2);
  boost::asio::post(io, [&] { server->stop(); });
  work.reset();
  thread.join();
  EXPECT_EQ(calls, 1);
}

TEST(StatusServerTest, ClientExplainsAMissingAgent) {
  outpost::testing::TempDir dir;
  const auto status = query_status(dir.file("nobody.sock"));
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find("is it running"), std::string::npos);
}

}  // namespace
}  // namespace outpost::agent
