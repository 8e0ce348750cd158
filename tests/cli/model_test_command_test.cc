// `outpost model test DIR` as a user runs it: the real CLI binary, which starts the real
// outpost-worker found next to it, on the example packages (scripts/make-example-models). Each
// test also checks that no worker is left running and that the private directory is gone.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/spawn.h"
#include "tests/support/child_process.h"
#include "tests/support/test_pki.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace outpost::testing {
namespace {

using nlohmann::json;

constexpr const char* kModelsDir = OUTPOST_MODELS_DIR;

std::string models() { return kModelsDir; }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

template <class Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (predicate()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return predicate();
}

class ModelTestCommandTest : public ::testing::Test {
 protected:
  ~ModelTestCommandTest() override {
    // Whatever a test did, the CLI left no worker and no private directory behind.
    EXPECT_TRUE(eventually([&] { return processes_mentioning(tmp_.path()).empty(); },
                           std::chrono::seconds(5)))
        << "a worker of this test is still running";
    EXPECT_TRUE(private_dirs().empty()) << "the CLI left " << private_dirs().front();
  }

  // `outpost ARGS` with its own $TMPDIR (where its private directory goes), in the background.
  pid_t start(std::vector<std::string> args, const std::vector<std::string>& environment = {}) {
    SpawnOptions options;
    options.argv = std::move(args);
    options.argv.insert(options.argv.begin(), OUTPOST_CLI_BINARY);
    options.environment = {"HOME=" + home_.path(), "PATH=/usr/bin:/bin", "TMPDIR=" + tmp_.path()};
    options.environment.insert(options.environment.end(), environment.begin(), environment.end());
    options.out.file = home_.file("out");
    options.err.file = home_.file("err");
    ::unlink(options.out.file.c_str());  // spawn_process appends; each run starts them empty
    ::unlink(options.err.file.c_str());
    auto pid = spawn_process(options);
    EXPECT_TRUE(pid.ok()) << pid.error().message();
    return pid.ok() ? pid.value() : -1;
  }

  CommandResult finish(pid_t pid) {
    CommandResult result;
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, 0) == pid) {
      result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    result.out = read_file(home_.file("out"));
    result.err = read_file(home_.file("err"));
    return result;
  }

  CommandResult cli(const std::vector<std::string>& args,
                    const std::vector<std::string>& environment = {}) {
    return finish(start(args, environment));
  }

  std::vector<std::string> private_dirs() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(tmp_.path(), ec)) {
      out.push_back(entry.path().string());
    }
    return out;
  }

  TempDir home_;
  TempDir tmp_;
};

TEST_F(ModelTestCommandTest, TextPackageLoadsShowsItsMethodsAndAnswers) {
  const CommandResult run = cli({"model", "test", models() + "/text", "--text", "hello world"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_TRUE(contains(run.out, "Loaded text from " + models() + "/text")) << run.out;
  // The signatures the worker read, as the control plane would store them.
  EXPECT_TRUE(contains(run.out, "count_words  unary  texts: List[str]")) << run.out;
  EXPECT_TRUE(contains(run.out, "predict      unary  text: str, upper: bool = true  str"))
      << run.out;
  // predict reverses the words and upper-cases them.
  EXPECT_TRUE(contains(run.out, "Calling predict (unary):\nWORLD HELLO\n")) << run.out;
  EXPECT_EQ(run.err, "");
}

TEST_F(ModelTestCommandTest, TextPackageAsJson) {
  const CommandResult run = cli({"-o", "json", "model", "test", models() + "/text", "--inputs",
                                 R"({"text": "hello world", "upper": false})"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const json report = json::parse(run.out, nullptr, false);
  ASSERT_TRUE(report.is_object()) << run.out;
  EXPECT_EQ(report["ok"], true);
  EXPECT_EQ(report["model"], "text");
  EXPECT_EQ(report["methods"].size(), 2u);
  EXPECT_EQ(report["file_sha256"].get<std::string>().size(), 64u);
  ASSERT_EQ(report["calls"].size(), 1u);
  EXPECT_EQ(report["calls"][0]["method"], "predict");
  EXPECT_EQ(report["calls"][0]["status"], "ok");
  EXPECT_EQ(report["calls"][0]["outputs"], "world hello");
}

TEST_F(ModelTestCommandTest, GeneratePrintsTheChunks) {
  CommandResult run =
      cli({"model", "test", models() + "/chargen", "--method", "spell", "--text", "outpost"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_TRUE(contains(run.out, "Calling spell (generate):\noutpost\n")) << run.out;

  run = cli(
      {"-o", "json", "model", "test", models() + "/chargen", "--method", "spell", "--text", "abc"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const json call = json::parse(run.out, nullptr, false)["calls"][0];
  EXPECT_EQ(call["chunks"], json::array({"a", "b", "c"})) << run.out;
  EXPECT_EQ(call["reason"], "done");

  // The GRU's greedy decoding: as many characters as max_tokens asks for.
  run = cli({"-o", "json", "model", "test", models() + "/chargen", "--text", "hello", "-i",
             "max_tokens=5"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_EQ(json::parse(run.out, nullptr, false)["calls"][0]["chunks"].size(), 5u) << run.out;
}

TEST_F(ModelTestCommandTest, StreamSendsEachItemAndPrintsEachOutput) {
  CommandResult run =
      cli({"model", "test", models() + "/accumulator", "--method", "words", "--text", "one",
           "--text", "two three", "--text", "", "--text", "four five six"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_TRUE(contains(run.out, "Calling words (stream):\n1\n3\n3\n6\n")) << run.out;

  // Tensors: running sums, shown with their values.
  const std::string items = R"([{"x": {"dtype": "float32", "shape": [1], "values": [1]}},)"
                            R"( {"x": {"dtype": "float32", "shape": [1], "values": [2]}},)"
                            R"( {"x": {"dtype": "float32", "shape": [1], "values": [3]}}])";
  run = cli({"model", "test", models() + "/accumulator", "--method", "stream", "--inputs", items});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_TRUE(contains(run.out, R"({"dtype":"float32","shape":[1],"values":[1.0]})")) << run.out;
  EXPECT_TRUE(contains(run.out, R"({"dtype":"float32","shape":[1],"values":[6.0]})")) << run.out;
}

TEST_F(ModelTestCommandTest, WithoutInputsEachMethodRunsItsExample) {
  CommandResult run = cli({"model", "test", models() + "/chargen"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_TRUE(contains(run.out, "generate  generate  ok      2 chunks: ")) << run.out;
  EXPECT_TRUE(contains(run.out, R"(spell     generate  ok      2 chunks: "ab")")) << run.out;
  EXPECT_TRUE(contains(run.out, "2 methods ok.")) << run.out;

  // A method without an example is skipped, and said so; the run still succeeds.
  run = cli({"-o", "json", "model", "test", models() + "/types"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const json report = json::parse(run.out, nullptr, false);
  std::map<std::string, std::string> statuses;
  for (const auto& call : report["calls"]) statuses[call["method"]] = call["status"];
  EXPECT_EQ(statuses["echo"], "ok");
  EXPECT_EQ(statuses["fail"], "skipped");
  EXPECT_EQ(report["ok"], true);
  EXPECT_FALSE(report["notes"].empty()) << "the worker's warm-up notes";

  // A method that raises fails the run, naming the method and the model's message.
  run = cli({"model", "test", models() + "/picky", "--inputs",
             R"({"x": {"dtype": "float32", "shape": [1, 4], "values": [-1, 0, 0, 0]}})"});
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_TRUE(contains(run.err, "negative input")) << run.err;
}

TEST_F(ModelTestCommandTest, CorruptModelFileIsRefusedWithTheHashMismatch) {
  const TempDir package;
  for (const auto& entry : std::filesystem::directory_iterator(models() + "/text")) {
    std::filesystem::copy_file(entry.path(), package.file(entry.path().filename()));
  }
  {
    std::fstream model(package.file("model.pt"), std::ios::in | std::ios::out | std::ios::binary);
    model.seekg(100);
    const char byte = static_cast<char>(model.get());
    model.seekp(100);
    model.put(static_cast<char>(byte ^ 0x01));
  }
  const CommandResult run = cli({"model", "test", package.path(), "--text", "hello world"});
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_TRUE(contains(run.err, "outpost: error: cannot load " + package.path())) << run.err;
  EXPECT_TRUE(contains(run.err, "model.pt has sha256")) << run.err;
  EXPECT_TRUE(contains(run.err, "(a corrupt or different file) (data_loss)")) << run.err;
  EXPECT_FALSE(contains(run.out, "WORLD HELLO"));
}

TEST_F(ModelTestCommandTest, AWorkerThatCannotStartOrBeFoundIsReported) {
  CommandResult run = cli({"model", "test", models() + "/text"}, {"OUTPOST_WORKER=/bin/false"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(contains(run.err, "outpost-worker exited with status 1 while starting")) << run.err;
  run = cli({"model", "test", models() + "/text", "--worker", home_.file("nope")});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(contains(run.err, "is not an executable file")) << run.err;
}

TEST_F(ModelTestCommandTest, InterruptStopsTheCallAndTheWorker) {
  // A generation that would run for hours, in a worker whose socket lives in a private directory.
  const pid_t pid =
      start({"model", "test", models() + "/chargen", "--text", "a", "-i", "max_tokens=100000000"});
  ASSERT_TRUE(eventually([&] { return contains(read_file(home_.file("out")), "Calling"); }));
  ASSERT_EQ(processes_mentioning(tmp_.path()).size(), 1u) << "one worker";
  const auto dirs = private_dirs();
  ASSERT_EQ(dirs.size(), 1u);
  struct stat info {};
  ASSERT_EQ(stat(dirs.front().c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0700u);
  ::kill(pid, SIGTERM);  // as Ctrl-C's SIGINT, which a background test run may have ignored
  const CommandResult run = finish(pid);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(contains(run.err, "interrupted while calling generate")) << run.err;
}

}  // namespace
}  // namespace outpost::testing
