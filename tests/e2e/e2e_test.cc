// The platform end to end: outpost-control, outpostd and outpost-worker as real processes on
// loopback, driven with the real `outpost` CLI.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/e2e/platform.h"
#include "tests/support/tcp_relay.h"
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace outpost::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::seconds;

// How many times `word` appears in `text`.
size_t occurrences(const std::string& text, const std::string& word) {
  size_t count = 0;
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++count;
  return count;
}

bool eventually(const std::function<bool()>& condition, std::chrono::seconds limit = seconds(90)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return condition();
}

std::string predict_text(Platform& platform, const std::string& text, bool expect_ok = true) {
  const auto result = platform.cli(
      {"model", "predict", "text", "--deployment", "dep-text", "--text", text}, expect_ok);
  return result.exit_code == 0 ? result.out : "ERROR: " + result.err;
}

// A deployment of the `text` example (reverses the words, upper-cases them) on one agent.
void deploy_text(Platform& platform, const std::string& agent = "node-a",
                 AgentOptions options = {}) {
  platform.create_pool("cc-e2e", "np-e2e");
  options.name = agent;
  platform.start_agent("cc-e2e", "np-e2e", options);
  platform.upload_model("text");
  platform.deploy("np-e2e", "dep-text", "text");
  ASSERT_TRUE(platform.wait_live("dep-text")) << platform.agent(agent).log();
}

std::vector<pid_t> workers_of(ChildProcess& agent) {
  return child_pids(agent.pid(), "outpost-worker");
}

TEST(EndToEndTest, DeploysAndPredictsInEveryShapeWithoutListeningOnTcp) {
  Platform platform;
  deploy_text(platform);
  platform.upload_model("chargen");
  platform.upload_model("accumulator");
  platform.upload_model("llama");
  platform.deploy("np-e2e", "dep-gen", "chargen");
  platform.deploy("np-e2e", "dep-acc", "accumulator");
  platform.deploy("np-e2e", "dep-llm", "llama");
  ASSERT_TRUE(platform.wait_live("dep-gen"));
  ASSERT_TRUE(platform.wait_live("dep-acc"));
  ASSERT_TRUE(platform.wait_live("dep-llm"));

  // Unary.
  EXPECT_NE(predict_text(platform, "hello outpost world").find("WORLD OUTPOST HELLO"),
            std::string::npos);
  // A predict is one HTTPS request: the server picks the method and puts --text under its first
  // input, so the CLI reads no deployment or signature first. (The control plane logs each.)
  const auto requests = [&] { return occurrences(platform.control().log(), "control.request"); };
  const size_t before = requests();
  EXPECT_NE(predict_text(platform, "one request").find("REQUEST ONE"), std::string::npos);
  EXPECT_TRUE(eventually([&] { return requests() >= before + 1; }));
  EXPECT_EQ(requests(), before + 1) << platform.control().log();
  // A file's bytes go as a form part, carried as bytes through the tunnel to the worker.
  const std::string file = platform.dir() + "/words.txt";
  std::ofstream(file) << "bytes from a file";
  const auto from_file =
      platform.cli({"model", "predict", "text", "--deployment", "dep-text", "--file", file});
  EXPECT_NE(from_file.out.find("FILE A FROM BYTES"), std::string::npos) << from_file.err;
  // Generate: every chunk arrives, as JSON lines with -o json.
  const auto generated =
      platform.cli({"-o", "json", "model", "generate", "chargen", "--deployment", "dep-gen",
                    "--inputs", R"({"prompt": "ab", "max_tokens": 6})"});
  const size_t chunks = occurrences(generated.out, "chunk");
  EXPECT_GE(chunks, 6u) << generated.out;
  // A decoder model (the Llama architecture, docs/models.md): its tokens, through the control
  // plane, the tunnel, the agent and the worker's KV cache, are transformers' greedy tokens.
  std::ifstream reference_file(platform.models_dir() + "/reference/llama.json");
  const json reference = json::parse(reference_file);
  const json llm_inputs{{"prompt_tokens", reference.at("prompts").at(0)},
                        {"max_tokens", reference.at("max_tokens")}};
  const auto decoded = platform.cli({"-o", "json", "model", "generate", "llama", "--deployment",
                                     "dep-llm", "--inputs", llm_inputs.dump()});
  json tokens = json::array();
  std::string finish;
  std::istringstream lines(decoded.out);
  for (std::string line; std::getline(lines, line);) {
    const json event = json::parse(line, nullptr, false);
    if (!event.is_object() || !event.contains("chunk")) continue;
    for (const auto& token : event["chunk"].at("token_ids")) tokens.push_back(token);
    finish = event["chunk"].value("finish_reason", finish);
  }
  EXPECT_EQ(tokens, reference.at("greedy").at(0)) << decoded.out;
  EXPECT_EQ(finish, "length");
  // Without -o json the CLI prints the chunks' text as it comes: the same text (greedy) that
  // the JSON chunks of the same call carry, then a newline.
  const std::vector<std::string> text_call = {
      "model", "generate", "llama", "--deployment", "dep-llm", "--text", "Once upon a time"};
  std::vector<std::string> json_call = {"-o", "json"};
  json_call.insert(json_call.end(), text_call.begin(), text_call.end());
  std::string expected;
  std::istringstream json_lines(platform.cli(json_call).out);
  for (std::string line; std::getline(json_lines, line);) {
    const json event = json::parse(line, nullptr, false);
    if (event.is_object() && event.contains("chunk")) expected += event["chunk"].value("text", "");
  }
  const auto text = platform.cli(text_call);
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_FALSE(expected.empty());
  EXPECT_EQ(text.out, expected + "\n");
  // Stream: a running sum over three items, in order.
  const auto streamed = platform.cli({"-o", "json", "model", "stream", "accumulator",
                                      "--deployment", "dep-acc", "--inputs",
                                      R"([{"x": {"dtype": "float32", "shape": [1], "values": [1]}},
           {"x": {"dtype": "float32", "shape": [1], "values": [2]}},
           {"x": {"dtype": "float32", "shape": [1], "values": [3]}}])"});
  const auto first = streamed.out.find('1');
  const auto third = streamed.out.rfind('6');
  EXPECT_NE(first, std::string::npos) << streamed.out;
  EXPECT_NE(third, std::string::npos) << streamed.out;
  // A stream item with a wrong input name, or a wrong type, is the caller's mistake: it ends the
  // call as invalid_argument naming the input, as a unary call's would, not as a lost answer.
  const std::pair<const char*, const char*> bad_items[] = {
      {R"([{"x": {"dtype": "float32", "shape": [1], "values": [1]}},
           {"y": {"dtype": "float32", "shape": [1], "values": [2]}}])",
       "y"},
      {R"([{"x": "not a tensor"}])", "x"}};
  for (const auto& [bad, name] : bad_items) {
    const auto refused = platform.cli({"-o", "json", "model", "stream", "accumulator",
                                       "--deployment", "dep-acc", "--inputs", bad},
                                      /*expect_ok=*/false);
    EXPECT_NE(refused.exit_code, 0) << refused.out;
    const std::string said = refused.out + refused.err;
    EXPECT_NE(said.find("invalid_argument"), std::string::npos) << said;
    EXPECT_EQ(said.find("data_loss"), std::string::npos) << said;
    EXPECT_NE(said.find(std::string("'") + name + "'"), std::string::npos) << said;
  }

  // Four models, one worker: they were packed onto the CPU device.
  EXPECT_EQ(workers_of(platform.agent("node-a")).size(), 1u);
  // The agent holds no listening TCP socket; its workers none either. (The check sees the
  // control plane's listener, so it would see theirs.)
  ASSERT_TRUE(has_listening_tcp_socket(platform.control().pid()));
  EXPECT_FALSE(has_listening_tcp_socket(platform.agent("node-a").pid()));
  for (const pid_t worker : workers_of(platform.agent("node-a"))) {
    EXPECT_FALSE(has_listening_tcp_socket(worker));
  }
  // `outpostd status` tells the operator the same story.
  const auto status =
      run_command({OUTPOSTD_BIN, "status", "--runtime-dir", platform.agent_runtime_dir("node-a")});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("4 of 4 replicas ready"), std::string::npos) << status.out;
}

// Unary calls made one after another by a caller that never retries, until stop(): what it saw.
class Caller {
 public:
  explicit Caller(Platform& platform)
      : thread_([this, &platform] {
          for (int i = 0; !stop_.load(); ++i) {
            const std::string word = "call" + std::to_string(i);
            const std::string answer = predict_text(platform, "hello " + word, false);
            std::lock_guard lock(mutex_);
            ++calls_;
            if (answer.find(upper(word) + " HELLO") == std::string::npos) errors_.push_back(answer);
          }
        }) {}
  ~Caller() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  std::vector<std::string> errors() {
    std::lock_guard lock(mutex_);
    return errors_;
  }

 private:
  static std::string upper(std::string text) {
    for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return text;
  }
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  int calls_ = 0;
  std::vector<std::string> errors_;
  std::thread thread_;
};

// Stops the caller and checks that none of its calls failed, listing those that did.
void expect_no_failures(Caller& caller) {
  caller.stop();
  const auto errors = caller.errors();
  std::string listed;
  for (const auto& error : errors) listed += error + "\n";
  EXPECT_TRUE(errors.empty()) << errors.size() << " of " << caller.calls() << " calls failed:\n"
                              << listed;
}

TEST(EndToEndTest, KilledWorkerComesBackAndNoCallerSeesAFailure) {
  Platform platform;
  deploy_text(platform);
  EXPECT_NE(predict_text(platform, "before crash").find("CRASH BEFORE"), std::string::npos);
  const auto workers = workers_of(platform.agent("node-a"));
  ASSERT_EQ(workers.size(), 1u);
  Caller caller(platform);
  ASSERT_TRUE(eventually([&] { return caller.calls() >= 3; }));
  ::kill(workers[0], SIGKILL);
  // The agent restarts the worker and reloads the model; calls in flight and calls made
  // meanwhile are retried by the platform (on the replica once it is back) within their
  // deadline, so the caller, which never retries, sees none fail.
  ASSERT_TRUE(eventually([&] {
    const auto now = workers_of(platform.agent("node-a"));
    return now.size() == 1 && now[0] != workers[0];
  }));
  const int after_restart = caller.calls();
  ASSERT_TRUE(eventually([&] { return caller.calls() >= after_restart + 5; }));
  expect_no_failures(caller);
  EXPECT_NE(platform.agent("node-a").log().find("agent.worker_crashed"), std::string::npos);
}

TEST(EndToEndTest, RestartedAgentAndNoCallerSeesAFailure) {
  Platform platform;
  deploy_text(platform);
  Caller caller(platform);
  ASSERT_TRUE(eventually([&] { return caller.calls() >= 3; }));
  // outpostd stops (SIGTERM) and starts again: its worker and tunnel go away for a while. Calls
  // made meanwhile wait for the node to come back, as at a cold start, within their deadline.
  platform.restart_agent("node-a");
  const int after_restart = caller.calls();
  ASSERT_TRUE(eventually([&] { return caller.calls() >= after_restart + 5; }));
  expect_no_failures(caller);
}

TEST(EndToEndTest, CutTunnelReconnectsAndPredictionsResume) {
  Platform platform;
  TcpRelay relay(platform.control_port());
  AgentOptions options;
  options.control_port_override = std::to_string(relay.port());
  deploy_text(platform, "node-a", options);
  EXPECT_NE(predict_text(platform, "one two").find("TWO ONE"), std::string::npos);
  const int before = relay.accepted();
  relay.cut();
  ASSERT_TRUE(eventually([&] { return relay.accepted() > before; }));
  ASSERT_TRUE(eventually([&] {
    return predict_text(platform, "three four", false).find("FOUR THREE") != std::string::npos;
  }));
}

TEST(EndToEndTest, ControlPlaneRestartKeepsStateAndAgentsResync) {
  Platform platform;
  deploy_text(platform);
  platform.stop_control();
  platform.start_control();  // same port, same data directory
  ASSERT_TRUE(platform.wait_live("dep-text"));
  ASSERT_TRUE(eventually([&] {
    return predict_text(platform, "back again", false).find("AGAIN BACK") != std::string::npos;
  }));
  EXPECT_EQ(workers_of(platform.agent("node-a")).size(), 1u);
}

TEST(EndToEndTest, RestartedAgentNeverRunsTwoWorkersForOneReplica) {
  Platform platform;
  deploy_text(platform);
  const auto old_workers = workers_of(platform.agent("node-a"));
  ASSERT_EQ(old_workers.size(), 1u);
  auto& agent = platform.restart_agent("node-a");
  ASSERT_TRUE(eventually([&] {
    return predict_text(platform, "new agent", false).find("AGENT NEW") != std::string::npos;
  }));
  // The old worker is gone, the new agent has exactly one.
  EXPECT_NE(::kill(old_workers[0], 0), 0);
  const auto workers = workers_of(agent);
  EXPECT_EQ(workers.size(), 1u);
  // And it kept its identity: no second enrollment, the join token was consumed once.
  EXPECT_EQ(agent.log().find("agent.enrolling"), std::string::npos);
}

TEST(EndToEndTest, ModelWithAWrongHashIsRefusedAndReported) {
  Platform platform;
  deploy_text(platform);
  // Corrupt the stored model file on the control plane's disk (tampering, a bad sector); a new
  // node fetching it must refuse it.
  const auto model = platform.cli_json({"model", "get", "text"});
  std::string sha;
  for (const auto& entry : fs::recursive_directory_iterator(platform.dir() + "/control-data")) {
    if (entry.is_regular_file() && entry.path().filename().string().size() == 64 &&
        entry.file_size() > 1000) {
      sha = entry.path().filename();
      std::fstream file(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
      file.seekp(100);
      file.write("CORRUPTED", 9);
    }
  }
  ASSERT_FALSE(sha.empty()) << "found no stored model file";
  platform.create_pool("cc-e2e", "np-other");
  AgentOptions options;
  options.name = "node-b";
  platform.start_agent("cc-e2e", "np-other", options);
  platform.deploy("np-other", "dep-text-b", "text");
  // The deployment itself says failed, with the replica's reason (not only its replica row).
  nlohmann::json doc;
  ASSERT_TRUE(eventually([&] {
    doc = platform.cli_json({"deployment", "get", "dep-text-b"});
    const nlohmann::json& deployment = doc.contains("deployment") ? doc.at("deployment") : doc;
    return deployment.value("state", "") == "failed" &&
           deployment.value("message", "").find("hash mismatch") != std::string::npos;
  })) << doc.dump()
      << "\n"
      << platform.agent("node-b").log();
  EXPECT_NE(platform.agent("node-b").log().find("hash mismatch"), std::string::npos);
}

// Two agents on this machine, each with its own state directory and inventory file, in two
// nodepools of one deployment. Callers at once saturate np-a (one call in flight per replica)
// and overflow to np-b. Killing np-a's agent loses no prediction: calls in flight are
// retried on np-b, later ones go there, and the deployment says why np-a is empty.
TEST(EndToEndTest, TwoNodepoolsOverflowAndFailOverWhenAnAgentIsKilled) {
  PlatformOptions options;
  options.control_yaml = "scaling: {node_offline_grace_seconds: 2, max_ongoing_per_replica: 1}\n";
  Platform platform(options);
  platform.create_pool("cc-e2e", "np-a");
  platform.create_pool("cc-e2e", "np-b");
  for (const char* name : {"node-a", "node-b"}) {
    const std::string inventory = platform.dir() + "/" + name + "-inventory.json";
    std::ofstream(inventory) << R"({"cpu_cores": 2, "memory_bytes": 4294967296, "gpus": []})";
    AgentOptions agent;
    agent.name = name;
    agent.extra_yaml = "inventory_override: " + inventory + "\n";
    platform.start_agent("cc-e2e", name == std::string("node-a") ? "np-a" : "np-b", agent);
  }
  platform.upload_model("text");
  platform.deploy_yaml("np-a", "dep-text",
                       "  autoscale_config: {min_replicas: 1, max_replicas: 1}\n"
                       "  worker: {model: {id: text}}\n"
                       "  scheduling_choice: 4\n"
                       "  nodepools:\n    - {id: np-a, compute_cluster: {id: cc-e2e}}\n"
                       "    - {id: np-b, compute_cluster: {id: cc-e2e}}\n");
  ASSERT_TRUE(platform.wait_live("dep-text", 2)) << platform.agent("node-a").log();
  // Each node reports its own inventory, from its file.
  // `outpost -o json nodepool nodes` prints the list of nodes.
  const auto pool_a = platform.cli_json({"nodepool", "nodes", "cc-e2e", "np-a"});
  const auto pool_b = platform.cli_json({"nodepool", "nodes", "cc-e2e", "np-b"});
  ASSERT_TRUE(pool_a.is_array() && pool_a.size() == 1u) << pool_a.dump();
  ASSERT_TRUE(pool_b.is_array() && pool_b.size() == 1u) << pool_b.dump();
  EXPECT_EQ(pool_a[0]["inventory"]["memory_bytes"], 4294967296) << pool_a.dump();
  const std::string node_a = pool_a[0]["id"];
  const std::string node_b = pool_b[0]["id"];
  const auto calls_to = [&](const std::string& node) {
    return occurrences(platform.control().log(), "-> " + node);
  };

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  std::vector<std::thread> callers;
  callers.reserve(4);
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] {
      while (!stop) {
        const std::string out = predict_text(platform, "left right", false);
        if (out.find("RIGHT LEFT") != std::string::npos) {
          ++ok;
        } else {
          std::lock_guard lock(failures_mutex);
          failures.push_back(out);
        }
      }
    });
  }
  // Overflow: both nodepools serve while calls overlap.
  const bool overflowed =
      eventually([&] { return calls_to(node_a) >= 3 && calls_to(node_b) >= 3; });
  bool failed_over = false;
  if (overflowed) {
    ::kill(platform.agent("node-a").pid(), SIGKILL);
    const int before = ok.load();
    failed_over = eventually([&] { return ok.load() >= before + 10; });
  }
  stop = true;
  for (auto& caller : callers) caller.join();
  ASSERT_TRUE(overflowed) << "calls to np-a: " << calls_to(node_a)
                          << ", to np-b: " << calls_to(node_b);
  ASSERT_TRUE(failed_over);
  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, the first: " << failures.front();
  // Past the grace, the scheduler gives up on np-a's only node and says so.
  ASSERT_TRUE(eventually([&] {
    return platform.cli_json({"deployment", "get", "dep-text"}).dump().find("offline") !=
           std::string::npos;
  }));
}

// A deployment with min_replicas 0 goes to zero replicas when idle (its worker exits); the next
// request is held while a replica starts, then served.
TEST(EndToEndTest, IdleDeploymentScalesToZeroAndTheNextRequestColdStarts) {
  Platform platform;
  platform.create_pool("cc-e2e", "np-e2e");
  AgentOptions agent;
  // No idle worker kept and no warm spare: a full cold start, process included.
  agent.workers_yaml = "  idle_seconds: 0\n  spare: false\n";
  platform.start_agent("cc-e2e", "np-e2e", agent);
  platform.upload_model("text");
  platform.deploy_yaml("np-e2e", "dep-text",
                       "  autoscale_config: {min_replicas: 0, max_replicas: 2, "
                       "scale_down_delay_seconds: 1, scale_to_zero_delay_seconds: 2}\n"
                       "  worker: {model: {id: text}}\n"
                       "  scheduling_choice: 4\n"
                       "  nodepools: [{id: np-e2e, compute_cluster: {id: cc-e2e}}]\n");
  // It starts with one replica; idle for 2 s, it goes to zero and the agent stops the worker.
  ASSERT_TRUE(eventually([&] {
    const auto doc = platform.cli_json({"deployment", "get", "dep-text"});
    return doc.dump().find("scaled_to_zero") != std::string::npos;
  }));
  ASSERT_TRUE(eventually([&] { return workers_of(platform.agent("node-a")).empty(); }));
  // Cold start: the call waits for the replica instead of failing.
  EXPECT_NE(predict_text(platform, "cold start").find("START COLD"), std::string::npos);
  const auto doc = platform.cli_json({"deployment", "get", "dep-text"}).dump();
  EXPECT_NE(doc.find("a request arrived at zero replicas"), std::string::npos) << doc;
  EXPECT_NE(doc.find("no request for 2 s"), std::string::npos) << doc;
}

// A fresh node starts its device's worker before anything is deployed (a warm spare): the first
// replica loads into that process, and after scaling to zero the worker stays, model-less, for
// the next cold start, even with workers.idle_seconds: 0.
TEST(EndToEndTest, ColdStartsLoadIntoTheWarmSpareWorkerInsteadOfStartingOne) {
  Platform platform;
  platform.create_pool("cc-e2e", "np-e2e");
  AgentOptions options;
  options.workers_yaml = "  idle_seconds: 0\n";
  auto& agent = platform.start_agent("cc-e2e", "np-e2e", options);
  std::vector<pid_t> spare;
  ASSERT_TRUE(eventually([&] {
    spare = workers_of(agent);
    return spare.size() == 1;
  })) << "no warm spare worker before the first deployment";
  platform.upload_model("text");
  platform.deploy_yaml("np-e2e", "dep-text",
                       "  autoscale_config: {min_replicas: 0, max_replicas: 1, "
                       "scale_down_delay_seconds: 1, scale_to_zero_delay_seconds: 2}\n"
                       "  worker: {model: {id: text}}\n"
                       "  scheduling_choice: 4\n"
                       "  nodepools: [{id: np-e2e, compute_cluster: {id: cc-e2e}}]\n");
  EXPECT_NE(predict_text(platform, "warm spare").find("SPARE WARM"), std::string::npos);
  EXPECT_EQ(workers_of(agent), spare) << "the replica did not load into the spare";
  // Idle, the deployment goes to zero; its replica is unloaded and the worker stays.
  ASSERT_TRUE(eventually([&] {
    return platform.cli_json({"deployment", "get", "dep-text"}).dump().find("scaled_to_zero") !=
               std::string::npos &&
           agent.log().find("agent.replica_unloaded") != std::string::npos;
  }));
  EXPECT_EQ(workers_of(agent), spare);
  // The next request cold-starts into the same process.
  EXPECT_NE(predict_text(platform, "again").find("AGAIN"), std::string::npos);
  EXPECT_EQ(workers_of(agent), spare);
  const std::string log = agent.log();
  const size_t starts = occurrences(log, "agent.worker_started");
  EXPECT_EQ(starts, 1u) << log;
}

TEST(EndToEndTest, SystemdHearsReadyStatusAndStoppingInOrder) {
  Platform platform;
  const std::string socket_path = platform.dir() + "/notify.sock";
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", socket_path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  timeval timeout{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

  platform.create_pool("cc-e2e", "np-e2e");
  AgentOptions options;
  options.environment = {"NOTIFY_SOCKET=" + socket_path};
  auto& agent = platform.start_agent("cc-e2e", "np-e2e", options);
  std::vector<std::string> messages;
  const auto receive_until = [&](const std::string& wanted) {
    const auto deadline = std::chrono::steady_clock::now() + seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      char buffer[4096];
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) continue;
      messages.emplace_back(buffer, static_cast<size_t>(n));
      if (messages.back().find(wanted) != std::string::npos) return true;
    }
    return false;
  };
  ASSERT_TRUE(receive_until("STATUS=connected to the control plane"));
  agent.signal(SIGTERM);
  ASSERT_TRUE(receive_until("STOPPING=1"));
  EXPECT_EQ(agent.wait(seconds(60)).value_or(-1), 0);
  ::close(fd);
  // READY=1 comes first, before any STATUS=; STOPPING=1 comes last.
  ASSERT_FALSE(messages.empty());
  EXPECT_EQ(messages.front(), "READY=1");
  EXPECT_EQ(messages.back(), "STOPPING=1");
  bool saw_enrolling = false;
  for (const auto& message : messages) saw_enrolling |= message.find("STATUS=enrolling") == 0;
  EXPECT_TRUE(saw_enrolling);
}

}  // namespace
}  // namespace outpost::testing
