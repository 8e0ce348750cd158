// spawn_process, the one way the parts start a child: the child gets the streams it is given and
// no other descriptor of the parent's.
#include "common/spawn.h"

#include <string>

#include <gtest/gtest.h>

#include "tests/support/test_pki.h"
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace outpost {
namespace {

int wait_for(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_all(int fd) {
  std::string out;
  char buffer[4096];
  for (ssize_t n = 0; (n = read(fd, buffer, sizeof buffer)) > 0;) out.append(buffer, n);
  return out;
}

// A socket without close-on-exec, as Asio leaves its sockets, must not reach the child.
TEST(SpawnProcess, TheChildGetsItsStreamsAndNoOtherDescriptor) {
  const int leaky = socket(AF_INET, SOCK_STREAM, 0);  // no SOCK_CLOEXEC
  ASSERT_GE(leaky, 3);
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  SpawnOptions options;
  const std::string fd = std::to_string(leaky);
  options.argv = {"/bin/sh", "-c",
                  "if [ -e /proc/self/fd/" + fd +
                      " ]; then echo leaked; else echo clean; fi; "
                      "echo \"$GREETING\"; read line || echo stdin-empty"};
  options.environment = {"GREETING=hello from the parent"};
  options.out.fd = out[1];
  options.err_to_out = true;
  const auto pid = spawn_process(options);
  close(out[1]);
  ASSERT_TRUE(pid.ok()) << pid.error().to_string();
  const std::string said = read_all(out[0]);
  close(out[0]);
  close(leaky);
  EXPECT_EQ(wait_for(*pid), 0);
  // stdin is /dev/null when not given: `read` finds nothing.
  EXPECT_EQ(said, "clean\nhello from the parent\nstdin-empty\n");
}

TEST(SpawnProcess, OutputToAFileOfItsOwnAndAClearErrorForAMissingProgram) {
  testing::TempDir dir;
  SpawnOptions options;
  options.argv = {"/bin/sh", "-c", "echo out; echo err >&2"};
  options.out.file = dir.file("out.log");
  options.err.file = dir.file("err.log");
  const auto pid = spawn_process(options);
  ASSERT_TRUE(pid.ok()) << pid.error().to_string();
  EXPECT_EQ(wait_for(*pid), 0);
  const int out = open(dir.file("out.log").c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_EQ(read_all(out), "out\n");
  close(out);
  struct stat info {};
  ASSERT_EQ(stat(dir.file("err.log").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);  // a log of the child's is nobody else's

  options.argv = {dir.file("no-such-program")};
  const auto missing = spawn_process(options);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(missing.error().message().find("no-such-program"), std::string::npos);
}

}  // namespace
}  // namespace outpost
