// The agent's local files with everything running (docs/security.md, "Local files"): an
// outpostd started by hand under umask 022, enrolled, with a model deployed and predicted,
// leaves nothing under its state_dir or runtime_dir that group or other can read, write or
// enter: its status socket, the workers' directory, sockets, logs and pid files, the package
// links and the artifacts. (tests/agent/outpostd_files_test.cc covers the refusals.)
#include <algorithm>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/e2e/platform.h"
#include <sys/stat.h>

namespace outpost::testing {
namespace {

namespace fs = std::filesystem;

struct Entry {
  std::string path;
  mode_t mode = 0;
};

// Every entry below `root`, links not followed (their own mode means nothing; what they point
// to is walked where it lives).
std::vector<Entry> walk(const std::string& root) {
  std::vector<Entry> entries;
  for (const auto& item : fs::recursive_directory_iterator(root)) {
    struct stat info {};
    if (::lstat(item.path().c_str(), &info) == 0) entries.push_back({item.path(), info.st_mode});
  }
  return entries;
}

int count_if(const std::vector<Entry>& entries, const std::function<bool(const Entry&)>& test) {
  return static_cast<int>(std::count_if(entries.begin(), entries.end(), test));
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

TEST(LocalFilesTest, AgentStartedUnderUmask022LeavesNothingOpenToOthers) {
  // The test's own umask, which outpost-control, outpostd and its workers inherit: a shell's.
  const mode_t old_mask = ::umask(022);
  struct RestoreUmask {
    mode_t mask;
    ~RestoreUmask() { ::umask(mask); }
  } restore{old_mask};

  Platform platform;
  platform.create_pool("cc-e2e", "np-e2e");
  platform.start_agent("cc-e2e", "np-e2e");
  platform.upload_model("text");
  platform.deploy("np-e2e", "dep-text", "text");
  ASSERT_TRUE(platform.wait_live("dep-text")) << platform.agent("node-a").log();
  platform.cli({"model", "predict", "text", "--deployment", "dep-text", "--text", "a b"});

  const std::string base = platform.dir() + "/node-a";
  std::vector<Entry> entries = walk(base + "/state");
  const std::vector<Entry> run = walk(base + "/run");
  entries.insert(entries.end(), run.begin(), run.end());
  struct stat info {};
  for (const std::string& dir : {base + "/state", base + "/run"}) {
    ASSERT_EQ(::lstat(dir.c_str(), &info), 0) << dir;
    entries.push_back({dir, info.st_mode});
  }

  // What must be there, so that a walk of nearly nothing cannot pass.
  const auto has_suffix = [&](const std::string& suffix) {
    return count_if(entries, [&](const Entry& e) { return ends_with(e.path, suffix); });
  };
  EXPECT_EQ(has_suffix("/run/outpostd.sock"), 1);
  EXPECT_EQ(has_suffix("/run/workers"), 1);
  EXPECT_EQ(has_suffix("/state/node-credential"), 1);
  EXPECT_GE(has_suffix(".pid"), 1);
  EXPECT_GE(has_suffix(".log"), 1);
  EXPECT_GE(count_if(entries, [](const Entry& e) { return S_ISSOCK(e.mode); }), 2)
      << "the status socket and at least one worker socket";
  EXPECT_GE(count_if(entries, [](const Entry& e) { return S_ISLNK(e.mode); }), 1)
      << "the package link under state/packages";

  for (const auto& entry : entries) {
    if (S_ISLNK(entry.mode)) continue;
    EXPECT_EQ(entry.mode & 077, 0u)
        << entry.path << " is open to group/other: mode " << std::oct << (entry.mode & 07777);
  }
}

}  // namespace
}  // namespace outpost::testing
