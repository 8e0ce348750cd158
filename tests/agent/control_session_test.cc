// The agent's ControlSession against a control plane's end of the tunnel played by this test (a
// real TunnelServer with TLS on loopback; tests/tunnel/tunnel_harness.h): enrollment with the
// join token, the credential kept private and the token consumed, node.sync on connecting,
// node.desired pushes acknowledged, node.report, artifact downloads checked against their hash,
// predict streams handed over, and unknown methods refused.
#include "agent/control_session.h"

#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>

#include <gtest/gtest.h>

#include "common/sha256.h"
#include "tests/tunnel/tunnel_harness.h"
#include <sys/stat.h>

namespace outpost::agent {
namespace {

using boost::system::error_code;
using nlohmann::json;
using outpost::testing::eventually;
using outpost::testing::IoThread;
using outpost::testing::ServerHarness;
using outpost::testing::wait_for;

constexpr const char* kArtifact = "the model's bytes";

json desired(uint64_t version) {
  const std::string sha = sha256_hex(kArtifact);
  return {
      {"version", version},
      {"replicas",
       json::array({{{"replica_id", "dep-1/np/0"},
                     {"deployment_id", "dep-1"},
                     {"model_version_id", "v1"},
                     {"artifacts", json::array({{{"name", "model.pt"},
                                                 {"sha256", sha},
                                                 {"size", std::string(kArtifact).size()}}})}}})}};
}

// The control plane's side: answers each method as docs/control-protocol.md says, and keeps
// what the agent sent.
class FakeControlPlane {
 public:
  FakeControlPlane() {
    server.set_stream_handler([this](const std::shared_ptr<tunnel::Stream>& stream) {
      const json metadata = json::parse(stream->metadata());
      const std::string method = metadata.value("method", "");
      if (method == "artifact.fetch") {
        const bool known = metadata.value("sha256", "") == sha256_hex(kArtifact);
        const std::string bytes = tampered ? "other bytes" : kArtifact;
        if (!known) {
          stream->async_write(R"({"error": {"code": "not_found", "message": "no such artifact"}})",
                              true, [](error_code) {});
          return;
        }
        stream->async_write(json{{"name", "model.pt"},
                                 {"size", std::string(kArtifact).size()},
                                 {"sha256", sha256_hex(kArtifact)}}
                                .dump(),
                            false, [](error_code) {});
        stream->async_write(bytes, true, [](error_code) {});
        return;
      }
      stream->async_read([this, stream, method](error_code ec, const std::string& body) {
        if (ec) return;
        {
          std::lock_guard<std::mutex> lock(mutex);
          received[method].push_back(json::parse(body.empty() ? "null" : body));
        }
        json answer = json::object();
        if (method == "node.enroll") {
          answer = {{"node_id", "node-1"}, {"credential", "good-token"}, {"nodepool_id", "np"}};
        } else if (method == "node.sync") {
          answer = desired(3);
        }
        stream->async_write(answer.dump(), true, [](error_code) {});
      });
    });
  }

  std::vector<json> got(const std::string& method) {
    std::lock_guard<std::mutex> lock(mutex);
    return received[method];
  }

  // Opens a stream toward the agent and returns its one answer.
  std::string ask(const std::string& metadata, const std::string& request) {
    std::promise<std::string> answer;
    auto stream = server.latest_connection()->open_stream(metadata, request, true, true);
    tunnel::async_read_unary_response(stream, [&answer](error_code ec, const std::string& reply) {
      answer.set_value(ec ? "error: " + ec.message() : reply);
    });
    auto future = answer.get_future();
    return wait_for(future, "the agent's answer");
  }

  ServerHarness server;
  std::atomic<bool> tampered{false};
  std::mutex mutex;
  std::map<std::string, std::vector<json>> received;
};

class ControlSessionTest : public ::testing::Test {
 protected:
  AgentConfig config() {
    AgentConfig out;
    out.control_plane_url = "wss://localhost:" + std::to_string(plane_.server.port) + "/v1/tunnel";
    out.ca_file = plane_.server.pki.ca_file();
    out.node_name = "host-1";
    out.connections = 1;
    out.state_dir = dir_.path();
    return out;
  }

  std::shared_ptr<ControlSession> start(ControlSession::Callbacks callbacks) {
    auto session = std::make_shared<ControlSession>(
        io_.io(), config(), CredentialStore(dir_.path(), dir_.file("join-token")),
        [] {
          return json{{"cpu_cores", 2}};
        },
        std::move(callbacks));
    session->start();
    return session;
  }

  void stop(const std::shared_ptr<ControlSession>& session) {
    std::promise<void> stopped;
    session->shutdown(std::chrono::milliseconds(200), [&stopped] { stopped.set_value(); });
    auto future = stopped.get_future();
    wait_for(future, "the session's shutdown");
  }

  outpost::testing::TempDir dir_;
  FakeControlPlane plane_;
  IoThread io_;
};

TEST_F(ControlSessionTest, EnrollsWithTheJoinTokenKeepsTheCredentialPrivateAndSyncs) {
  std::ofstream(dir_.file("join-token")) << "good-token\n";
  std::mutex mutex;
  std::vector<uint64_t> versions;
  ControlSession::Callbacks callbacks;
  callbacks.on_desired = [&](const protocol::DesiredState& state) {
    std::lock_guard<std::mutex> lock(mutex);
    versions.push_back(state.version);
  };
  auto session = start(callbacks);
  ASSERT_TRUE(eventually([&] { return session->enrolled(); }));
  // node.enroll carried the node's name and inventory.
  const auto enrolls = plane_.got("node.enroll");
  ASSERT_EQ(enrolls.size(), 1u);
  EXPECT_EQ(enrolls[0]["name"], "host-1");
  EXPECT_EQ(enrolls[0]["inventory"]["cpu_cores"], 2);
  // The credential is kept 0600 and the join token is gone: it is single use.
  ASSERT_TRUE(eventually([&] { return !std::filesystem::exists(dir_.file("join-token")); }));
  const auto credential = CredentialStore(dir_.path(), "").load_node_credential();
  ASSERT_TRUE(credential.has_value());
  EXPECT_EQ(*credential, "good-token");
  bool found_private = false;
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
    struct stat info {};
    ASSERT_EQ(::stat(entry.path().c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 077, 0u) << entry.path();
    found_private = true;
  }
  EXPECT_TRUE(found_private);
  // Once connected with the credential, the session syncs and hands over the desired state.
  ASSERT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> lock(mutex);
    return !versions.empty();
  }));
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(versions.front(), 3u);
  }
  EXPECT_NE(session->state().find("connected to the control plane"), std::string::npos)
      << session->state();
  stop(session);
}

TEST_F(ControlSessionTest, AnswersPushesReportsHandsOverPredictsAndRefusesTheUnknown) {
  ASSERT_TRUE(CredentialStore(dir_.path(), "").save_node_credential("good-token").ok());
  std::mutex mutex;
  std::vector<uint64_t> versions;
  std::vector<json> predicts;
  ControlSession::Callbacks callbacks;
  callbacks.on_desired = [&](const protocol::DesiredState& state) {
    std::lock_guard<std::mutex> lock(mutex);
    versions.push_back(state.version);
  };
  callbacks.on_predict = [&](const std::shared_ptr<tunnel::Stream>& stream, json metadata) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      predicts.push_back(std::move(metadata));
    }
    stream->async_write(R"({"outputs": 1})", true, [](error_code) {});
  };
  auto session = start(callbacks);
  ASSERT_TRUE(eventually([&] { return !plane_.got("node.sync").empty(); }));
  EXPECT_TRUE(session->enrolled());
  EXPECT_TRUE(plane_.got("node.enroll").empty());  // it had a credential already
  ASSERT_TRUE(eventually([&] { return plane_.server.latest_connection() != nullptr; }));

  // A push is handed over and acknowledged with its version.
  EXPECT_EQ(plane_.ask(R"({"method": "node.desired"})", desired(7).dump()), R"({"version":7})");
  {
    std::lock_guard<std::mutex> lock(mutex);
    ASSERT_FALSE(versions.empty());
    EXPECT_EQ(versions.back(), 7u);
  }
  // A malformed push is refused, naming the problem, and nothing is handed over.
  size_t before = 0;
  {
    std::lock_guard<std::mutex> lock(mutex);
    before = versions.size();
  }
  const json refused =
      json::parse(plane_.ask(R"({"method": "node.desired"})", R"({"replicas": 3})"));
  EXPECT_EQ(refused["error"]["code"], "invalid_argument") << refused;
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(versions.size(), before);
  }
  // Predict streams go to the router with their metadata.
  EXPECT_EQ(plane_.ask(R"({"method": "predict", "deployment_id": "dep-1"})", "{}"),
            R"({"outputs": 1})");
  {
    std::lock_guard<std::mutex> lock(mutex);
    ASSERT_EQ(predicts.size(), 1u);
    EXPECT_EQ(predicts[0]["deployment_id"], "dep-1");
  }
  // An unknown method, or metadata that is not an object with a method, is refused.
  EXPECT_EQ(json::parse(plane_.ask(R"({"method": "node.reboot"})", "{}"))["error"]["code"],
            "invalid_argument");
  EXPECT_EQ(json::parse(plane_.ask("[]", "{}"))["error"]["code"], "invalid_argument");

  // node.report reaches the control plane as sent.
  session->send_report(json{{"applied_version", 7}, {"replicas", json::array()}});
  ASSERT_TRUE(eventually([&] { return !plane_.got("node.report").empty(); }));
  EXPECT_EQ(plane_.got("node.report")[0]["applied_version"], 7);
  stop(session);
}

TEST_F(ControlSessionTest, ArtifactsAreDownloadedOnlyWhenTheirBytesMatchTheirHash) {
  ASSERT_TRUE(CredentialStore(dir_.path(), "").save_node_credential("good-token").ok());
  auto session = start({});
  ASSERT_TRUE(eventually([&] { return !plane_.got("node.sync").empty(); }));
  auto opened = ArtifactCache::open(dir_.file("artifacts"), 1 << 20);
  ASSERT_TRUE(opened.ok()) << opened.error().message();
  const ArtifactCache& cache = **opened;
  const protocol::ArtifactRef artifact{"model.pt", sha256_hex(kArtifact),
                                       std::string(kArtifact).size()};
  const auto fetch = [&](const protocol::ArtifactRef& ref) {
    std::promise<Result<std::string>> done;
    session->fetch_artifact(ref, cache,
                            [&done](Result<std::string> path) { done.set_value(std::move(path)); });
    auto future = done.get_future();
    return wait_for(future, "the download");
  };
  // Bytes that do not hash to what was asked for are refused, and nothing is cached.
  plane_.tampered = true;
  const auto tampered = fetch(artifact);
  ASSERT_FALSE(tampered.ok());
  EXPECT_FALSE(cache.find(artifact.sha256, artifact.size).has_value());
  // The right bytes land in the cache, whole.
  plane_.tampered = false;
  const auto fetched = fetch(artifact);
  ASSERT_TRUE(fetched.ok()) << fetched.error().message();
  std::ifstream in(*fetched, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), kArtifact);
  // An artifact the control plane does not have: its error, as it said it.
  const auto missing = fetch({"model.pt", sha256_hex("nothing"), 7});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  stop(session);
}

}  // namespace
}  // namespace outpost::agent
