// The control plane's side of docs/control-protocol.md against a test agent end (a
// tunnel::TunnelClient in this process, speaking the protocol as outpostd will): enrollment with
// single-use, expiring join tokens (on a fake clock), revocation, desired state pushed,
// acknowledged and re-sent after a reconnect, artifacts in chunks, and predict in its three
// shapes routed through the tunnel, with cancellation when the client goes away.
#include <atomic>
#include <future>
#include <iostream>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include "common/base64.h"
#include "common/sha256.h"
#include "protocol/control_protocol.h"
#include "tests/controlplane/control_fixture.h"
#include "tests/support/tcp_relay.h"

namespace outpost::testing {
namespace {

// Serves one fixed body over plain HTTP on loopback, for inputs given by URL.
class TinyHttpServer {
 public:
  explicit TinyHttpServer(std::string body)
      : body_(std::move(body)),
        acceptor_(io_,
                  boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)),
        thread_([this] { serve(); }) {}
  ~TinyHttpServer() {
    stopping_ = true;
    boost::system::error_code ignored;
    // Wake the accept with a connection of our own.
    boost::asio::ip::tcp::socket poke(io_);
    poke.connect(acceptor_.local_endpoint(), ignored);
    thread_.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int hits() const { return hits_.load(); }

 private:
  void serve() {
    while (!stopping_) {
      boost::asio::ip::tcp::socket socket(io_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (ec || stopping_) return;
      boost::asio::streambuf request;
      boost::asio::read_until(socket, request, "\r\n\r\n", ec);
      ++hits_;
      const std::string response =
          "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body_.size()) +
          "\r\nConnection: close\r\n\r\n" + body_;
      boost::asio::write(socket, boost::asio::buffer(response), ec);
    }
  }
  std::string body_;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> hits_{0};
  std::thread thread_;
};

class TunnelTest : public ::testing::Test {
 protected:
  explicit TunnelTest(const std::string& extra_yaml = {})
      : control_(pki_, extra_yaml),
        admin_(control_.base_url(), pki_.ca_file(), control_.admin_token()) {}

  void make_pool(const std::string& cc = "cc", const std::string& np = "np") {
    ASSERT_EQ(admin_.post("/v2/users/me/compute_clusters", json{{"compute_cluster", {{"id", cc}}}})
                  .status,
              201);
    ASSERT_EQ(admin_
                  .post("/v2/users/me/compute_clusters/" + cc + "/nodepools",
                        json{{"nodepool", {{"id", np}}}})
                  .status,
              201);
  }

  std::string join_token(const std::string& cc = "cc", const std::string& np = "np",
                         int ttl = 3600) {
    auto reply =
        admin_.post("/v2/users/me/compute_clusters/" + cc + "/nodepools/" + np + "/join_tokens",
                    json{{"ttl_seconds", ttl}});
    EXPECT_EQ(reply.status, 201) << reply.raw;
    return reply.body["join_token"]["token"];
  }

  TestAgent::Enrollment enroll(const std::string& cc = "cc", const std::string& np = "np",
                               const std::string& name = "host-1") {
    auto enrolled = TestAgent::enroll(control_.port(), pki_.ca_file(), join_token(cc, np), name);
    EXPECT_TRUE(enrolled.ok()) << enrolled.error().message();
    return enrolled.ok() ? enrolled.value() : TestAgent::Enrollment{};
  }

  std::unique_ptr<TestAgent> agent(const std::string& credential, bool envelopes = false) {
    auto out = std::make_unique<TestAgent>(control_.port(), pki_.ca_file(), credential, envelopes);
    EXPECT_TRUE(out->wait_connected());
    return out;
  }

  void upload(const std::string& model, std::map<std::string, std::string> files = {}) {
    if (files.empty()) files = model_package(model);
    write_tar(dir_.file(model + ".tar"), files);
    auto reply =
        admin_.upload("/v2/users/me/models/" + model + "/versions", dir_.file(model + ".tar"));
    ASSERT_EQ(reply.status, 201) << reply.raw;
  }

  void deploy(const std::string& id, const std::string& model, const std::string& np = "np") {
    auto reply = admin_.post("/v2/users/me/deployments",
                             json{{"deployment",
                                   {{"id", id},
                                    {"worker", {{"model", {{"id", model}}}}},
                                    {"scheduling_choice", 4},
                                    {"nodepools", json::array({{{"id", np}}})}}}});
    ASSERT_EQ(reply.status, 201) << reply.raw;
  }

  // A pool with one ready node holding text (unary), chargen (generate), accumulator (stream).
  // `envelopes`: the agent announces predict envelopes, as outpostd does.
  std::unique_ptr<TestAgent> ready_fleet(bool envelopes = false) {
    make_pool();
    for (const char* model : {"text", "chargen", "accumulator"}) upload(model);
    deploy("dep-text", "text");
    deploy("dep-gen", "chargen");
    deploy("dep-stream", "accumulator");
    auto node = agent(enroll().credential, envelopes);
    EXPECT_TRUE(eventually([&] {
      auto state = node->call("node.sync");
      return state.ok() && (*state)["replicas"].size() == 3;
    }));
    EXPECT_TRUE(node->report_all("ready").ok());
    return node;
  }

  TestPki pki_;
  TempDir dir_;
  ControlInProcess control_;
  Api admin_;
};

json selector(const std::string& deployment) { return json{{"deployment", {{"id", deployment}}}}; }

TEST_F(TunnelTest, EnrolledNodeShowsInItsNodepoolWithItsInventory) {
  make_pool();
  auto enrolled = enroll();
  EXPECT_EQ(enrolled.node_id.rfind("node-", 0), 0u);
  EXPECT_EQ(enrolled.credential.rfind("onc_" + enrolled.node_id + "_", 0), 0u);
  EXPECT_EQ(enrolled.response["nodepool_id"], "np");
  EXPECT_EQ(enrolled.response["compute_cluster_id"], "cc");
  EXPECT_EQ(enrolled.response["user_id"], "admin");
  auto node = agent(enrolled.credential);
  ASSERT_TRUE(
      node->call("node.report", json{{"applied_version", 0},
                                     {"inventory", {{"cpu_cores", 8}, {"memory_bytes", 1 << 30}}},
                                     {"replicas", json::array()}})
          .ok());
  auto nodes = admin_.get("/v2/users/me/compute_clusters/cc/nodepools/np/nodes");
  ASSERT_EQ(nodes.status, 200);
  ASSERT_EQ(nodes.body["nodes"].size(), 1u);
  EXPECT_EQ(nodes.body["nodes"][0]["id"], enrolled.node_id);
  EXPECT_EQ(nodes.body["nodes"][0]["online"], true);
  EXPECT_EQ(nodes.body["nodes"][0]["inventory"]["cpu_cores"], 8);
  EXPECT_EQ(
      admin_.get("/v2/users/me/compute_clusters/cc/nodepools/np").body["nodepool"]["node_count"],
      1);
}

TEST_F(TunnelTest, JoinTokensAreSingleUseAndExpire) {
  make_pool();
  const std::string token = join_token();
  ASSERT_TRUE(TestAgent::enroll(control_.port(), pki_.ca_file(), token).ok());
  auto again = TestAgent::enroll(control_.port(), pki_.ca_file(), token);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("401"), std::string::npos) << again.error().message();

  const std::string expiring = join_token("cc", "np", 60);
  control_.clock().advance(61);
  auto late = TestAgent::enroll(control_.port(), pki_.ca_file(), expiring);
  ASSERT_FALSE(late.ok());
  EXPECT_NE(late.error().message().find("401"), std::string::npos) << late.error().message();
  EXPECT_EQ(admin_.get("/v2/users/me/compute_clusters/cc/nodepools/np/nodes").body["nodes"].size(),
            1u);
}

TEST_F(TunnelTest, AJoinTokenAllowsOnlyEnrollment) {
  make_pool();
  TestAgent enrolling(control_.port(), pki_.ca_file(), join_token());
  ASSERT_TRUE(enrolling.wait_connected());
  auto sync = enrolling.call("node.sync");
  ASSERT_FALSE(sync.ok());
  EXPECT_NE(sync.error().message().find("permission_denied"), std::string::npos);
  auto enrolled = enroll();
  TestAgent node(control_.port(), pki_.ca_file(), enrolled.credential);
  ASSERT_TRUE(node.wait_connected());
  EXPECT_FALSE(node.call("node.enroll", json{{"name", "again"}}).ok());
  EXPECT_FALSE(node.call("node.unknown").ok());
}

TEST_F(TunnelTest, RevokingANodeDropsItsConnections) {
  make_pool();
  auto enrolled = enroll();
  auto node = agent(enrolled.credential);
  ASSERT_EQ(
      admin_.del("/v2/users/me/compute_clusters/cc/nodepools/np/nodes/" + enrolled.node_id).status,
      200);
  EXPECT_TRUE(eventually([&] { return node->status().connected() == 0; }));
  // And the credential no longer opens a connection.
  EXPECT_TRUE(eventually([&] {
    const auto status = node->status();
    return !status.slots.empty() && status.slots[0].refused;
  }));
}

TEST_F(TunnelTest, DesiredStateIsPushedAcknowledgedAndResentAfterAReconnect) {
  make_pool();
  upload("text");
  auto enrolled = enroll();
  auto node = agent(enrolled.credential);
  deploy("dep-1", "text");
  ASSERT_TRUE(eventually([&] { return !node->last_desired().is_null(); }));
  json pushed = node->last_desired();
  ASSERT_EQ(pushed["replicas"].size(), 1u);
  const json replica = pushed["replicas"][0];
  EXPECT_EQ(replica["replica_id"], "dep-1/np/0");
  EXPECT_EQ(replica["deployment_id"], "dep-1");
  EXPECT_EQ(replica["model_id"], "text");
  EXPECT_EQ(replica["artifacts"].size(), 2u);
  // The package's cpu_memory ("1Gi"), as the agent reads it.
  const auto read = protocol::parse_desired_state(pushed);
  ASSERT_TRUE(read.ok()) << read.error().message();
  EXPECT_EQ(read->replicas[0].memory_bytes, uint64_t{1} << 30);
  const int64_t first_version = pushed["version"];
  EXPECT_GE(first_version, 1);
  auto synced = node->call("node.sync");
  ASSERT_TRUE(synced.ok());
  EXPECT_EQ((*synced)["version"], first_version);
  // The acknowledgement shows on the node.
  EXPECT_TRUE(eventually([&] {
    auto nodes =
        admin_.get("/v2/users/me/compute_clusters/cc/nodepools/np/nodes/" + enrolled.node_id);
    return nodes.body["node"]["applied_version"] == first_version;
  }));

  // A change while the node is away reaches it when it comes back.
  node->disconnect();
  ASSERT_EQ(admin_.del("/v2/users/me/deployments/dep-1").status, 200);
  auto back = agent(enrolled.credential);
  ASSERT_TRUE(eventually([&] { return !back->last_desired().is_null(); }));
  EXPECT_GT(back->last_desired()["version"].get<int64_t>(), first_version);
  EXPECT_TRUE(back->last_desired()["replicas"].empty());
}

TEST_F(TunnelTest, ArtifactsAreServedInChunksOnlyToTheirNodes) {
  make_pool();
  auto package = model_package("text");
  std::string big(2'500'000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  package["weights.bin"] = big;
  upload("text", package);
  auto enrolled = enroll();
  auto node = agent(enrolled.credential);
  const std::string sha = sha256_hex(big);
  // Not assigned yet: not found.
  EXPECT_FALSE(node->fetch_artifact(sha).ok());
  deploy("dep-1", "text");
  ASSERT_TRUE(eventually([&] { return !node->last_desired().is_null(); }));
  auto fetched = node->fetch_artifact(sha);
  ASSERT_TRUE(fetched.ok()) << fetched.error().message();
  EXPECT_EQ(fetched->first["name"], "weights.bin");
  EXPECT_EQ(fetched->first["size"], big.size());
  EXPECT_EQ(fetched->first["sha256"], sha);
  EXPECT_LE(fetched->first["largest_chunk"].get<size_t>(), size_t{1} << 20);
  EXPECT_EQ(fetched->second, big);
}

TEST_F(TunnelTest, UnaryPredictGoesThroughTheTunnel) {
  auto node = ready_fleet();
  auto reply = admin_.post_text(
      "/v2/users/me/models/text/outputs",
      json{{"runner_selector", selector("dep-text")}, {"inputs", {{"text", "hello"}}}}.dump(),
      "application/json", {{"X-Request-Id", "unary-1"}});
  ASSERT_EQ(reply.status, 200) << reply.raw;
  EXPECT_EQ(reply.body["outputs"]["echo"]["text"], "hello");
  EXPECT_EQ(reply.body["outputs"]["method"], "predict");
  EXPECT_EQ(reply.body["status"]["req_id"], "unary-1");
  const auto metadata = node->predict_metadata();
  ASSERT_EQ(metadata.size(), 1u);
  EXPECT_EQ(metadata[0]["shape"], "unary");
  EXPECT_EQ(metadata[0]["request_id"], "unary-1");
  EXPECT_EQ(metadata[0]["deployment_id"], "dep-text");
  EXPECT_EQ(metadata[0]["replica_id"], "dep-text/np/0");
  EXPECT_FALSE(metadata[0].contains("body"));  // JSON, to an agent that announced nothing
  // By compute cluster + nodepool, and through the version's path.
  const std::string version =
      admin_.get("/v2/users/me/models/text").body["model"]["model_version"]["id"];
  auto by_pool = admin_.post(
      "/v2/users/me/models/text/versions/" + version + "/outputs",
      json{{"runner_selector", {{"nodepool", {{"id", "np"}, {"compute_cluster", {{"id", "cc"}}}}}}},
           {"inputs", {{"text", "x"}}}});
  EXPECT_EQ(by_pool.status, 200) << by_pool.raw;
  // The model's own errors come back with their code.
  auto failed =
      admin_.post("/v2/users/me/models/text/outputs",
                  json{{"runner_selector", selector("dep-text")}, {"inputs", {{"text", "x"}}}});
  EXPECT_EQ(failed.status, 200);
}

TEST_F(TunnelTest, AnAgentThatReadsEnvelopesGetsBytesAsTheyAreInEveryCallShape) {
  auto node = ready_fleet(/*envelopes=*/true);
  // Bytes that are not text, in and back out: decoded at the REST edge, carried raw, encoded
  // again at the edge.
  const std::string bytes(
      "\x00\xff\x10"
      "binary\x80",
      10);
  auto reply = admin_.post("/v2/users/me/models/text/outputs",
                           json{{"runner_selector", selector("dep-text")},
                                {"inputs", {{"text", {{"bytes_b64", base64_encode(bytes)}}}}}});
  ASSERT_EQ(reply.status, 200) << reply.raw;
  EXPECT_EQ(reply.body["outputs"]["echo"]["text"]["bytes_b64"], base64_encode(bytes));
  auto metadata = node->predict_metadata();
  ASSERT_EQ(metadata.size(), 1u);
  EXPECT_EQ(metadata[0]["body"], "envelope");

  // The same bytes as a form part (as `curl -F` sends them): never base64'd on the way in.
  const std::string form =
      "--b\r\nContent-Disposition: form-data; name=\"request\"\r\n"
      "Content-Type: application/json\r\n\r\n" +
      json{{"runner_selector", selector("dep-text")}, {"inputs", {{"text", {{"part", "words"}}}}}}
          .dump() +
      "\r\n--b\r\nContent-Disposition: form-data; name=\"words\"; "
      "filename=\"w.bin\"\r\n\r\n" +
      bytes + "\r\n--b--\r\n";
  auto from_form =
      admin_.post_text("/v2/users/me/models/text/outputs", form, "multipart/form-data; boundary=b");
  ASSERT_EQ(from_form.status, 200) << from_form.raw;
  EXPECT_EQ(from_form.body["outputs"]["echo"]["text"]["bytes_b64"], base64_encode(bytes));
  // A form without its request part is refused before routing.
  auto no_request = admin_.post_text("/v2/users/me/models/text/outputs",
                                     "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n"
                                     "1\r\n--b--\r\n",
                                     "multipart/form-data; boundary=b");
  EXPECT_EQ(no_request.status, 400) << no_request.raw;
  EXPECT_NE(no_request.raw.find("part named \\\"request\\\""), std::string::npos) << no_request.raw;
  EXPECT_EQ(node->predicts(), 2);
  // Invalid base64 is the client's mistake, refused before anything is sent.
  auto bad = admin_.post("/v2/users/me/models/text/outputs",
                         json{{"runner_selector", selector("dep-text")},
                              {"inputs", {{"text", {{"bytes_b64", "!!not base64"}}}}}});
  EXPECT_EQ(bad.status, 400) << bad.raw;
  EXPECT_EQ(node->predicts(), 2);
  // The node's refusal comes back with its code and message.
  auto refused = admin_.post("/v2/users/me/models/text/outputs",
                             json{{"runner_selector", selector("dep-text")},
                                  {"inputs", {{"text", "fail:the text is too short"}}}});
  EXPECT_EQ(refused.status, 400) << refused.raw;
  EXPECT_NE(refused.raw.find("the text is too short"), std::string::npos) << refused.raw;

  std::string lines;
  auto generated = admin_.client().send_streaming(
      "POST", "/v2/users/me/models/chargen/outputs/generate",
      json{{"runner_selector", selector("dep-gen")}, {"inputs", {{"prompt", "alpha beta"}}}}.dump(),
      "application/json", {{"Accept", "application/x-ndjson"}}, [&lines](std::string_view data) {
        lines += data;
        return true;
      });
  ASSERT_TRUE(generated.ok());
  EXPECT_NE(lines.find(R"({"chunk":"alpha"})"), std::string::npos) << lines;
  EXPECT_NE(lines.find(R"({"chunk":"beta"})"), std::string::npos) << lines;

  auto ws = admin_.client().websocket(
      "/v2/users/me/models/accumulator/outputs/stream?deployment=dep-stream&method=words");
  ASSERT_TRUE(ws.ok()) << ws.error().message();
  ASSERT_TRUE(
      (*ws)->send(json{{"inputs", {{"text", {{"bytes_b64", base64_encode(bytes)}}}}}}.dump()).ok());
  auto echoed = (*ws)->receive();
  ASSERT_TRUE(echoed.ok() && echoed->has_value());
  EXPECT_EQ(json::parse(**echoed)["outputs"]["text"]["bytes_b64"], base64_encode(bytes));
  for (const auto& seen : node->predict_metadata()) EXPECT_EQ(seen["body"], "envelope");
}

TEST_F(TunnelTest, PredictRequestsAreCheckedAgainstTheSignature) {
  auto node = ready_fleet();
  const std::string path = "/v2/users/me/models/text/outputs";
  struct Case {
    json body;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {json{{"inputs", {{"text", "x"}}}}, "runner_selector: is required"},
      {json{{"runner_selector", selector("dep-text")}, {"inputs", json::object()}},
       "inputs.text: is required"},
      {json{{"runner_selector", selector("dep-text")}, {"inputs", {{"text", 3}}}},
       "inputs.text: must be of type str"},
      {json{{"runner_selector", selector("dep-text")}, {"inputs", {{"text", "x"}, {"colour", 1}}}},
       "inputs.colour"},
      {json{{"runner_selector", selector("dep-text")},
            {"method", "nope"},
            {"inputs", json::object()}},
       "has no method 'nope'"},
      {json{{"runner_selector", selector("dep-gen")}, {"inputs", {{"text", "x"}}}},
       "serves model 'chargen'"},
      {json{{"runner_selector",
             {{"deployment", {{"id", "dep-text"}}}, {"nodepool", {{"id", "np"}}}}},
            {"inputs", {{"text", "x"}}}},
       "not both"},
  };
  for (const auto& c : cases) {
    auto reply = admin_.post(path, c.body);
    EXPECT_EQ(reply.status, 400) << c.body.dump() << " -> " << reply.raw;
    EXPECT_NE(reply.body["status"].value("description", "").find(c.expected), std::string::npos)
        << reply.raw;
  }
  // A generate method called on the unary endpoint says where to call it.
  auto wrong_shape = admin_.post("/v2/users/me/models/chargen/outputs",
                                 json{{"runner_selector", selector("dep-gen")},
                                      {"method", "generate"},
                                      {"inputs", {{"prompt", "a"}}}});
  EXPECT_EQ(wrong_shape.status, 400);
  EXPECT_NE(wrong_shape.raw.find("outputs/generate"), std::string::npos);
  EXPECT_EQ(node->predicts(), 0);  // none of these reached the node
  // An error from the model comes back as the model's error.
  auto model_error = admin_.post(path, json{{"runner_selector", selector("dep-text")},
                                            {"inputs", {{"text", "x"}, {"upper", true}}}});
  EXPECT_EQ(model_error.status, 200);
}

TEST_F(TunnelTest, GenerateStreamsServerSentEventsAndJsonLines) {
  auto node = ready_fleet();
  const std::string body =
      json{{"runner_selector", selector("dep-gen")}, {"inputs", {{"prompt", "alpha beta gamma"}}}}
          .dump();
  std::vector<std::string> pieces;
  auto sse =
      admin_.client().send_streaming("POST", "/v2/users/me/models/chargen/outputs/generate", body,
                                     "application/json", {}, [&pieces](std::string_view data) {
                                       pieces.emplace_back(data);
                                       return true;
                                     });
  ASSERT_TRUE(sse.ok()) << sse.error().message();
  EXPECT_EQ(sse->status, 200);
  EXPECT_EQ(sse->content_type, "text/event-stream");
  std::string all;
  for (const auto& piece : pieces) all += piece;
  EXPECT_NE(all.find("data: {\"chunk\":\"alpha\"}\n\n"), std::string::npos) << all;
  EXPECT_LT(all.find("alpha"), all.find("gamma"));
  EXPECT_NE(all.find("event: done"), std::string::npos) << all;

  std::string lines;
  auto ndjson = admin_.client().send_streaming(
      "POST", "/v2/users/me/models/chargen/outputs/generate", body, "application/json",
      {{"Accept", "application/x-ndjson"}}, [&lines](std::string_view data) {
        lines += data;
        return true;
      });
  ASSERT_TRUE(ndjson.ok());
  EXPECT_EQ(ndjson->content_type, "application/x-ndjson");
  std::vector<json> parsed;
  std::istringstream in(lines);
  for (std::string line; std::getline(in, line);) parsed.push_back(json::parse(line));
  ASSERT_EQ(parsed.size(), 4u) << lines;
  EXPECT_EQ(parsed[1]["chunk"], "beta");
  EXPECT_EQ(parsed[3]["status"]["code"], "ok");
}

TEST_F(TunnelTest, StreamRelaysAWebSocketBothWays) {
  auto node = ready_fleet();
  auto ws = admin_.client().websocket("/v2/users/me/models/accumulator/outputs/stream");
  ASSERT_TRUE(ws.ok()) << ws.error().message();
  auto& socket = *ws.value();
  ASSERT_TRUE(socket
                  .send(json{{"runner_selector", selector("dep-stream")},
                             {"method", "words"},
                             {"inputs", {{"text", "one"}}}}
                            .dump())
                  .ok());
  auto first = socket.receive();
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ(json::parse(**first)["outputs"]["text"], "one");
  ASSERT_TRUE(socket.send(json{{"inputs", {{"text", "two"}}}}.dump()).ok());
  auto second = socket.receive();
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ(json::parse(**second)["outputs"]["text"], "two");
  ASSERT_TRUE(socket.send(R"({"end": true})").ok());
  auto done = socket.receive();
  ASSERT_TRUE(done.ok() && done->has_value());
  EXPECT_EQ(json::parse(**done)["status"]["code"], "ok");
  auto closed = socket.receive();
  ASSERT_TRUE(closed.ok());
  EXPECT_FALSE(closed->has_value());

  // The selector may come in the query instead, so a wrong one is refused before the upgrade.
  auto refused = admin_.client().websocket(
      "/v2/users/me/models/accumulator/outputs/stream?deployment=dep-text");
  ASSERT_FALSE(refused.ok());
  auto by_query = admin_.client().websocket(
      "/v2/users/me/models/accumulator/outputs/stream?deployment=dep-stream&method=words");
  ASSERT_TRUE(by_query.ok()) << by_query.error().message();
  ASSERT_TRUE((*by_query)->send(json{{"inputs", {{"text", "q"}}}}.dump()).ok());
  auto echoed = (*by_query)->receive();
  ASSERT_TRUE(echoed.ok() && echoed->has_value());
  EXPECT_EQ(json::parse(**echoed)["outputs"]["text"], "q");
}

TEST_F(TunnelTest, AClientThatLeavesCancelsItsStreamDownToTheNode) {
  auto node = ready_fleet();
  node->set_stall_generate(true);
  int chunks = 0;
  auto result = admin_.client().send_streaming(
      "POST", "/v2/users/me/models/chargen/outputs/generate",
      json{{"runner_selector", selector("dep-gen")}, {"inputs", {{"prompt", "endless"}}}}.dump(),
      "application/json", {}, [&chunks](std::string_view data) {
        if (data.find("chunk") != std::string_view::npos) ++chunks;
        return chunks < 2;  // then hang up
      });
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), ErrorCode::kCancelled);
  ASSERT_TRUE(eventually([&] { return !node->cancelled().empty(); }));
  EXPECT_NE(node->cancelled()[0].find("client"), std::string::npos) << node->cancelled()[0];
}

TEST_F(TunnelTest, CallsGoToTheNodeWithFewestOutstanding) {
  make_pool();
  upload("chargen");
  auto first = agent(enroll("cc", "np", "a").credential);
  auto second = agent(enroll("cc", "np", "b").credential);
  auto reply = admin_.post("/v2/users/me/deployments",
                           json{{"deployment",
                                 {{"id", "gen"},
                                  {"worker", {{"model", {{"id", "chargen"}}}}},
                                  {"scheduling_choice", 4},
                                  {"autoscale_config", {{"min_replicas", 2}}},
                                  {"nodepools", json::array({{{"id", "np"}}})}}}});
  ASSERT_EQ(reply.status, 201) << reply.raw;
  for (auto* node : {first.get(), second.get()}) {
    ASSERT_TRUE(eventually([&] { return node->last_desired()["replicas"].size() == 1; }));
    ASSERT_TRUE(node->report_all("ready").ok());
  }
  first->set_stall_generate(true);
  second->set_stall_generate(true);
  // A call held open on one node sends the next to the other.
  const std::string body =
      json{{"runner_selector", selector("gen")}, {"inputs", {{"prompt", "p"}}}}.dump();
  std::atomic<bool> first_open{false};
  std::thread holder([&] {
    (void)admin_.client().send_streaming(
        "POST", "/v2/users/me/models/chargen/outputs/generate", body, "application/json", {},
        [&](std::string_view) {
          first_open = true;
          return first->cancelled().size() + second->cancelled().size() == 0 &&
                 first->predicts() + second->predicts() < 2;
        });
  });
  ASSERT_TRUE(eventually([&] { return first_open.load(); }));
  Api other(control_.base_url(), pki_.ca_file(), control_.admin_token());
  std::thread second_call([&] {
    (void)other.client().send_streaming("POST", "/v2/users/me/models/chargen/outputs/generate",
                                        body, "application/json", {},
                                        [](std::string_view) { return false; });
  });
  second_call.join();
  holder.join();
  EXPECT_EQ(first->predicts(), 1);
  EXPECT_EQ(second->predicts(), 1);
}

// Scaling: a short cold-start hold, a small saturation threshold, and a metrics listener.
class ScalingTest : public TunnelTest {
 protected:
  ScalingTest()
      : TunnelTest(
            "scaling: {cold_start_timeout_seconds: 2, max_held_requests: 2, "
            "max_ongoing_per_replica: 1}\nmetrics: {listen: \"127.0.0.1:0\"}\n") {}

  // GET /metrics from the metrics listener, over plain HTTP.
  std::string scrape() {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket socket(io);
    boost::system::error_code ec;
    socket.connect({boost::asio::ip::make_address("127.0.0.1"), control_.metrics_port()}, ec);
    if (ec) return "";
    const std::string request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    boost::asio::write(socket, boost::asio::buffer(request), ec);
    std::string response;
    char buffer[4096];
    for (;;) {
      const size_t n = socket.read_some(boost::asio::buffer(buffer), ec);
      response.append(buffer, n);
      if (ec) break;
    }
    return response;
  }

  void deploy_with(const std::string& id, const std::string& model, const json& autoscale,
                   const json& pools = json::array({{{"id", "np"}}})) {
    auto reply =
        admin_.post("/v2/users/me/deployments", json{{"deployment",
                                                      {{"id", id},
                                                       {"worker", {{"model", {{"id", model}}}}},
                                                       {"autoscale_config", autoscale},
                                                       {"scheduling_choice", 4},
                                                       {"nodepools", pools}}}});
    ASSERT_EQ(reply.status, 201) << reply.raw;
  }

  // Waits until the metrics show `count` calls held or in flight for dep-1 on np (the gauge
  // refreshes once a second); false after the hang guard.
  bool wait_ongoing(int count) {
    const std::string series =
        "outpost_predict_ongoing{deployment=\"dep-1\",nodepool=\"np\",user=\"admin\"} " +
        std::to_string(count) + "\n";
    return eventually([&] { return scrape().find(series) != std::string::npos; });
  }

  // dep-1 of `text` on np, its one node connected and reporting the replica as loading (so
  // that calls are held); null when the node never got its desired state.
  std::unique_ptr<TestAgent> loading_text_deployment() {
    make_pool();
    upload("text");
    deploy("dep-1", "text");
    auto node = agent(enroll().credential);
    if (!eventually([&] { return !node->last_desired().is_null(); })) return nullptr;
    if (!node->report_all("loading").ok()) return nullptr;
    return node;
  }

  // Sends `request` to the unary endpoint of `model` on a thread of its own.
  std::future<ApiReply> predict_async(const std::string& model, const json& request) {
    return std::async(std::launch::async, [this, model, request] {
      Api api(control_.base_url(), pki_.ca_file(), control_.admin_token());
      return api.post("/v2/users/me/models/" + model + "/outputs", request);
    });
  }
};

TEST_F(ScalingTest, WithoutAReadyReplicaPredictIsHeldThenAnswers503WithTheReason) {
  make_pool();
  upload("text");
  deploy("dep-1", "text");
  const json request{{"runner_selector", selector("dep-1")}, {"inputs", {{"text", "x"}}}};
  // Nothing can start a replica: no node. Refused at once, with the reason and a Retry-After.
  auto unplaced = admin_.post("/v2/users/me/models/text/outputs", request);
  EXPECT_EQ(unplaced.status, 503);
  EXPECT_NE(unplaced.raw.find("no replica is placed"), std::string::npos) << unplaced.raw;
  EXPECT_EQ(unplaced.retry_after, "2");
  EXPECT_NE(admin_.get("/v2/users/me/deployments/dep-1").raw.find("no node is enrolled"),
            std::string::npos);

  auto enrolled = enroll();
  auto node = agent(enrolled.credential);
  ASSERT_TRUE(eventually([&] { return !node->last_desired().is_null(); }));
  ASSERT_TRUE(node->report_all("loading").ok());
  // A replica is loading: the request waits for it, up to cold_start_timeout_seconds (2 s).
  auto loading = admin_.post("/v2/users/me/models/text/outputs", request);
  EXPECT_EQ(loading.status, 503);
  EXPECT_NE(loading.raw.find("within 2 s"), std::string::npos) << loading.raw;
  EXPECT_NE(loading.raw.find("is loading"), std::string::npos) << loading.raw;

  // One held while it loads is answered as soon as the replica reports ready.
  auto held = predict_async("text", request);
  ASSERT_TRUE(wait_ongoing(1));
  ASSERT_TRUE(node->report_all("ready").ok());
  const ApiReply served = held.get();
  EXPECT_EQ(served.status, 200) << served.raw;
  EXPECT_EQ(admin_.get("/v2/users/me/deployments/dep-1")
                .body["deployment"]["deployment_metrics"]["live_replicas"],
            1);

  // A node that went away moments ago is waited for (its agent may be restarting), within
  // node_offline_grace_seconds and cold_start_timeout_seconds (2 s here); then 503 says why.
  node->disconnect();
  auto offline = admin_.post("/v2/users/me/models/text/outputs", request);
  EXPECT_EQ(offline.status, 503);
  EXPECT_NE(offline.raw.find("within 2 s"), std::string::npos) << offline.raw;
  EXPECT_NE(offline.raw.find("not connected"), std::string::npos) << offline.raw;
}

TEST_F(ScalingTest, HeldRequestsAreBoundedPerDeployment) {
  auto node = loading_text_deployment();
  ASSERT_NE(node, nullptr);
  const json request{{"runner_selector", selector("dep-1")}, {"inputs", {{"text", "x"}}}};
  auto first = predict_async("text", request);
  auto second = predict_async("text", request);
  ASSERT_TRUE(wait_ongoing(2));
  // max_held_requests is 2: the third is refused at once.
  auto third = admin_.post("/v2/users/me/models/text/outputs", request);
  EXPECT_EQ(third.status, 503);
  EXPECT_NE(third.raw.find("requests already wait"), std::string::npos) << third.raw;
  ASSERT_TRUE(node->report_all("ready").ok());
  EXPECT_EQ(first.get().status, 200);
  EXPECT_EQ(second.get().status, 200);
}

TEST_F(ScalingTest, AHeldCallWhoseClientHangsUpIsDroppedAndNeverSent) {
  auto node = loading_text_deployment();
  ASSERT_NE(node, nullptr);
  const json request{{"runner_selector", selector("dep-1")}, {"inputs", {{"text", "x"}}}};
  // A client (HTTP/1.1 keep-alive, verified TLS) that sends the call and hangs up while the
  // replica still loads, before the hold (2 s) is over.
  {
    boost::asio::io_context io;
    boost::asio::ssl::context tls(boost::asio::ssl::context::tls_client);
    tls.load_verify_file(pki_.ca_file());
    boost::asio::ssl::stream<boost::asio::ip::tcp::socket> stream(io, tls);
    stream.set_verify_mode(boost::asio::ssl::verify_peer);
    stream.set_verify_callback(boost::asio::ssl::host_name_verification("localhost"));
    SSL_set_tlsext_host_name(stream.native_handle(), "localhost");
    stream.next_layer().connect({boost::asio::ip::make_address("127.0.0.1"), control_.port()});
    stream.handshake(boost::asio::ssl::stream_base::client);
    const std::string body = request.dump();
    const std::string http =
        "POST /v2/users/me/models/text/outputs HTTP/1.1\r\nHost: localhost\r\n"
        "Authorization: Key " +
        control_.admin_token() +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n\r\n" + body;
    boost::asio::write(stream, boost::asio::buffer(http));
    ASSERT_TRUE(wait_ongoing(1));
    stream.next_layer().close();  // hangs up without an answer
  }
  // Its held call is dropped as cancelled (not left to time out as unavailable), and its place
  // is free: two new calls are both held (max_held_requests 2).
  ASSERT_TRUE(wait_ongoing(0));
  const std::string after_hang_up = scrape();
  EXPECT_NE(after_hang_up.find("code=\"cancelled\",deployment=\"dep-1\""), std::string::npos)
      << after_hang_up;
  EXPECT_EQ(after_hang_up.find("code=\"unavailable\",deployment=\"dep-1\""), std::string::npos)
      << after_hang_up;
  auto first = predict_async("text", request);
  auto second = predict_async("text", request);
  ASSERT_TRUE(wait_ongoing(2));
  ASSERT_TRUE(node->report_all("ready").ok());
  EXPECT_EQ(first.get().status, 200);
  EXPECT_EQ(second.get().status, 200);
  // Only the two calls whose clients waited reached the node.
  EXPECT_EQ(node->predicts(), 2);
}

TEST_F(ScalingTest, IdleDeploymentScalesToZeroAndARequestBringsItBack) {
  make_pool();
  upload("text");
  auto node = agent(enroll().credential);
  deploy_with("dep-z", "text",
              {{"min_replicas", 0},
               {"max_replicas", 2},
               {"scale_down_delay_seconds", 0},
               {"scale_to_zero_delay_seconds", 1}});
  // It starts with one replica (the first call is warm), then goes to zero when idle.
  ASSERT_TRUE(eventually([&] { return node->last_desired()["replicas"].size() == 1; }));
  ASSERT_TRUE(node->report_all("ready").ok());
  ASSERT_TRUE(eventually([&] {
    const auto desired = node->last_desired();
    return desired.is_object() && desired["replicas"].empty();
  }));
  auto view = admin_.get("/v2/users/me/deployments/dep-z").body["deployment"];
  EXPECT_EQ(view["state"], "scaled_to_zero") << view.dump();
  EXPECT_EQ(view["deployment_metrics"]["desired_replicas"], 0);
  ASSERT_FALSE(view["scaling_events"].empty());
  EXPECT_NE(view["scaling_events"][0]["reason"].get<std::string>().find("no request for 1 s"),
            std::string::npos)
      << view.dump();
  ASSERT_TRUE(node->report_all("ready").ok());  // the agent dropped it: nothing to report

  // A request at zero: held, a replica assigned at once, served when it is ready.
  const json request{{"runner_selector", selector("dep-z")}, {"inputs", {{"text", "x y"}}}};
  auto held = predict_async("text", request);
  ASSERT_TRUE(eventually([&] { return node->last_desired()["replicas"].size() == 1; }));
  ASSERT_TRUE(node->report_all("ready").ok());
  const ApiReply served = held.get();
  EXPECT_EQ(served.status, 200) << served.raw;
  view = admin_.get("/v2/users/me/deployments/dep-z").body["deployment"];
  EXPECT_NE(view["scaling_events"][0]["reason"].get<std::string>().find("arrived at zero"),
            std::string::npos)
      << view.dump();
  const std::string metrics = scrape();
  EXPECT_NE(metrics.find("outpost_cold_starts_total{deployment=\"dep-z\",user=\"admin\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("outpost_predict_requests_total{code=\"ok\",deployment=\"dep-z\",shape="
                         "\"unary\",user=\"admin\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("outpost_connected_agents 1"), std::string::npos) << metrics;
}

TEST_F(ScalingTest, TrafficOverflowsToTheNextNodepoolAndFailsOverWhenANodeGoes) {
  make_pool("cc", "np1");
  make_pool("cc2", "np2");
  upload("chargen");
  auto first = agent(enroll("cc", "np1", "a").credential);
  auto second = agent(enroll("cc2", "np2", "b").credential);
  deploy_with("gen", "chargen", {{"min_replicas", 1}},
              json::array({{{"id", "np1"}}, {{"id", "np2"}}}));
  for (auto* node : {first.get(), second.get()}) {
    ASSERT_TRUE(eventually([&] { return node->last_desired()["replicas"].size() == 1; }));
    ASSERT_TRUE(node->report_all("ready").ok());
  }
  const std::string body =
      json{{"runner_selector", selector("gen")}, {"inputs", {{"prompt", "p"}}}}.dump();
  // The first nodepool is preferred.
  auto unary_first = admin_.post("/v2/users/me/models/chargen/outputs/generate", json::parse(body));
  EXPECT_EQ(unary_first.status, 200);
  EXPECT_EQ(first->predicts(), 1);
  EXPECT_EQ(second->predicts(), 0);
  // One call held open saturates np1 (max_ongoing_per_replica 1): the next overflows to np2.
  first->set_stall_generate(true);
  std::atomic<bool> open{false};
  std::atomic<bool> release{false};
  std::thread holder([&] {
    (void)admin_.client().send_streaming("POST", "/v2/users/me/models/chargen/outputs/generate",
                                         body, "application/json", {}, [&](std::string_view) {
                                           open = true;
                                           return !release.load();  // hang up when released
                                         });
  });
  ASSERT_TRUE(eventually([&] { return open.load(); }));
  Api other(control_.base_url(), pki_.ca_file(), control_.admin_token());
  EXPECT_EQ(other.post("/v2/users/me/models/chargen/outputs/generate", json::parse(body)).status,
            200);
  EXPECT_EQ(second->predicts(), 1);
  release = true;
  holder.join();
  first->set_stall_generate(false);
  // np1's node goes: calls go to np2 without an error.
  first->disconnect();
  EXPECT_EQ(other.post("/v2/users/me/models/chargen/outputs/generate", json::parse(body)).status,
            200);
  EXPECT_EQ(second->predicts(), 2);
}

class UrlInputTest : public TunnelTest {
 protected:
  UrlInputTest() : TunnelTest("url_inputs: {allow_private_addresses: true}\n") {}
};

TEST_F(UrlInputTest, InputsByUrlAreFetchedByTheControlPlane) {
  auto node = ready_fleet();
  TinyHttpServer server("fetched text");
  auto reply = admin_.post(
      "/v2/users/me/models/text/outputs",
      json{{"runner_selector", selector("dep-text")},
           {"inputs",
            {{"text", {{"url", "http://127.0.0.1:" + std::to_string(server.port()) + "/a"}}}}}});
  ASSERT_EQ(reply.status, 200) << reply.raw;
  EXPECT_EQ(reply.body["outputs"]["echo"]["text"]["bytes_b64"], "ZmV0Y2hlZCB0ZXh0");
  EXPECT_EQ(server.hits(), 1);
}

TEST_F(TunnelTest, InputUrlsToPrivateAddressesAreRefusedByDefault) {
  auto node = ready_fleet();
  TinyHttpServer server("secret");
  for (const std::string& host : {std::string("127.0.0.1"), std::string("localhost")}) {
    auto reply = admin_.post(
        "/v2/users/me/models/text/outputs",
        json{
            {"runner_selector", selector("dep-text")},
            {"inputs",
             {{"text", {{"url", "http://" + host + ":" + std::to_string(server.port()) + "/"}}}}}});
    EXPECT_EQ(reply.status, 403) << reply.raw;
    EXPECT_NE(reply.raw.find("private or loopback"), std::string::npos) << reply.raw;
  }
  EXPECT_EQ(server.hits(), 0);
  EXPECT_EQ(node->predicts(), 0);
}

// Short keepalive, so that a partition is noticed in seconds without waiting for the defaults.
class PartitionTest : public TunnelTest {
 protected:
  PartitionTest() : TunnelTest("tunnel: {keepalive_seconds: 1, dead_after_seconds: 3}\n") {}
};

TEST_F(PartitionTest, ASilentlyCutNodeLeavesRoutingWithinTheDeadlineAndCallsGoElsewhere) {
  make_pool();
  upload("text");
  const auto cut_enrollment = enroll("cc", "np", "a");
  // Node a reaches the control plane through a relay that will go silent; node b directly.
  TcpRelay relay(control_.port());
  auto cut = std::make_unique<TestAgent>(relay.port(), pki_.ca_file(), cut_enrollment.credential);
  ASSERT_TRUE(cut->wait_connected());
  auto other = agent(enroll("cc", "np", "b").credential);
  auto reply = admin_.post("/v2/users/me/deployments",
                           json{{"deployment",
                                 {{"id", "dep-text"},
                                  {"worker", {{"model", {{"id", "text"}}}}},
                                  {"scheduling_choice", 4},
                                  {"autoscale_config", {{"min_replicas", 2}}},
                                  {"nodepools", json::array({{{"id", "np"}}})}}}});
  ASSERT_EQ(reply.status, 201) << reply.raw;
  for (auto* node : {cut.get(), other.get()}) {
    ASSERT_TRUE(eventually([&] { return node->last_desired()["replicas"].size() == 1; }));
    ASSERT_TRUE(node->report_all("ready").ok());
  }
  const json request{{"runner_selector", selector("dep-text")}, {"inputs", {{"text", "x"}}}};
  const std::string node_path =
      "/v2/users/me/compute_clusters/cc/nodepools/np/nodes/" + cut_enrollment.node_id;
  ASSERT_EQ(admin_.get(node_path).body["node"]["online"], true);

  const auto cut_at = std::chrono::steady_clock::now();
  relay.freeze();  // no RST, no FIN: node a's link goes quiet
  ASSERT_TRUE(eventually([&] { return admin_.get(node_path).body["node"]["online"] == false; }));
  const auto detected = std::chrono::steady_clock::now() - cut_at;
  std::cout << "control plane took node a offline after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(detected).count() << " ms\n";
  // dead_after_seconds (3) plus one keepalive tick (0.5 s), and a second for a loaded machine
  // and the polling through the API.
  EXPECT_LE(detected, std::chrono::milliseconds(3000 + 500 + 1000));

  // From then on every call goes to node b, none waits on node a.
  const int cut_before = cut->predicts();
  const int other_before = other->predicts();
  for (int i = 0; i < 6; ++i) {
    const auto answer = admin_.post("/v2/users/me/models/text/outputs", request);
    EXPECT_EQ(answer.status, 200) << answer.raw;
  }
  EXPECT_EQ(cut->predicts(), cut_before);
  EXPECT_EQ(other->predicts(), other_before + 6);
  relay.cut();
}

}  // namespace
}  // namespace outpost::testing
