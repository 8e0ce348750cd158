// The agent's end: TLS trust, pins, credentials, proxies, reconnect pacing and drain, each
// against a real TunnelServer on loopback.
#include <iostream>

#include <gtest/gtest.h>

#include "tests/support/fake_clock.h"
#include "tests/support/tcp_relay.h"
#include "tests/support/tinyproxy.h"
#include "tests/tunnel/tunnel_harness.h"

namespace outpost::tunnel {
namespace {

using outpost::testing::client_options;
using outpost::testing::ClientHarness;
using outpost::testing::eventually;
using outpost::testing::FakeClock;
using outpost::testing::FakeRandom;
using outpost::testing::FakeScheduler;
using outpost::testing::ServerHarness;
using outpost::testing::TestPki;
using outpost::testing::Tinyproxy;

// Waits until the slot has failed `attempts` times and returns its status.
SlotStatus wait_for_failures(ClientHarness& client, int attempts) {
  EXPECT_TRUE(eventually([&] {
    const auto status = client.client->status();
    return status.slots[0].state == SlotState::kBackingOff &&
           status.slots[0].consecutive_failures >= attempts;
  }));
  return client.client->status().slots[0];
}

// A refusal must not turn into a reconnect storm: one attempt, then a wait of seconds; the next
// attempt happens only when that wait is over, and waits twice as long (up to minutes).
void expect_slow_refusals(ClientHarness& client, FakeScheduler& scheduler,
                          const std::string& error_part) {
  const SlotStatus first = wait_for_failures(client, 1);
  EXPECT_TRUE(first.refused);
  EXPECT_NE(first.last_error.find(error_part), std::string::npos) << first.last_error;
  // The slot shows its failure a moment before the retry is scheduled: wait for the timer.
  ASSERT_TRUE(eventually([&] { return scheduler.pending() == 1; }));
  EXPECT_GE(scheduler.delays()[0], std::chrono::seconds(5));
  ASSERT_TRUE(scheduler.fire_next());
  const SlotStatus second = wait_for_failures(client, 2);
  EXPECT_TRUE(second.refused);
  ASSERT_TRUE(eventually([&] { return scheduler.pending() == 1; }));
  EXPECT_EQ(scheduler.delays().size(), 2u);
  EXPECT_GE(scheduler.delays()[1], 2 * scheduler.delays()[0]);
}

TEST(ClientTest, BadCredentialIsRefusedLoudlyAndSlowly) {
  ServerHarness server;
  FakeClock clock;
  FakeRandom random({0.5});
  FakeScheduler scheduler(clock);
  auto options = client_options(server);
  options.credential = "stolen-or-revoked";
  ClientHarness client(options, ClientSeams{&clock, &random, &scheduler});
  expect_slow_refusals(client, scheduler, "refused this agent's credential (401");
  EXPECT_EQ(server.auth_attempts.load(), 2);
}

TEST(ClientTest, WrongCertificateAuthorityIsRefusedWithoutAStorm) {
  ServerHarness server;
  TestPki other("other");
  FakeClock clock;
  FakeRandom random({0.5});
  FakeScheduler scheduler(clock);
  auto options = client_options(server);
  options.tls.ca_file = other.ca_file();
  ClientHarness client(options, ClientSeams{&clock, &random, &scheduler});
  expect_slow_refusals(client, scheduler, "TLS verification of localhost failed");
  EXPECT_EQ(server.auth_attempts.load(), 0);  // never got as far as the credential
}

TEST(ClientTest, WrongPinIsRefusedAndTheRightPinConnects) {
  ServerHarness server;
  TestPki other("other");
  {
    FakeClock clock;
    FakeRandom random({0.5});
    FakeScheduler scheduler(clock);
    auto options = client_options(server);
    options.tls.spki_pins = {spki_pin_of_certificate_file(other.cert_file()).value()};
    ClientHarness client(options, ClientSeams{&clock, &random, &scheduler});
    expect_slow_refusals(client, scheduler, "pin");
  }
  auto options = client_options(server);
  // Pinning the CA's key (any key in the verified chain matches) connects.
  options.tls.spki_pins = {spki_pin_of_certificate_file(other.ca_file()).value(),
                           spki_pin_of_certificate_file(server.pki.ca_file()).value()};
  ClientHarness client(options);
  ASSERT_TRUE(client.wait_connected(1));
  EXPECT_EQ(client.unary("pinned").second, "pinned");
}

TEST(ClientTest, MalformedPinIsAConfigurationError) {
  ServerHarness server;
  auto options = client_options(server);
  options.tls.spki_pins = {"md5/abc"};
  boost::asio::io_context io;
  auto created = TunnelClient::create(io, options, {});
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.error().message().find("sha256/"), std::string::npos);
}

TEST(ClientTest, ConnectsThroughAnAuthenticatingConnectProxy) {
  ServerHarness server;
  Tinyproxy proxy("agent", "s3cret");
  auto options = client_options(server);
  options.proxy_url = proxy.url("agent", "s3cret");
  ClientHarness client(options);
  ASSERT_TRUE(client.wait_connected(1)) << client.client->status().slots[0].last_error;
  EXPECT_EQ(client.unary("through the proxy").second, "through the proxy");
  EXPECT_NE(proxy.log().find("CONNECT"), std::string::npos);
}

TEST(ClientTest, WrongProxyCredentialsGiveAClearErrorWithoutLeakingThem) {
  ServerHarness server;
  Tinyproxy proxy("agent", "s3cret");
  FakeClock clock;
  FakeRandom random({0.5});
  FakeScheduler scheduler(clock);
  auto options = client_options(server);
  options.proxy_url = proxy.url("agent", "wrong-password");
  ClientHarness client(options, ClientSeams{&clock, &random, &scheduler});
  const SlotStatus status = wait_for_failures(client, 1);
  EXPECT_TRUE(status.refused);
  EXPECT_NE(status.last_error.find("refused the proxy credentials"), std::string::npos)
      << status.last_error;
  EXPECT_EQ(status.last_error.find("wrong-password"), std::string::npos);
  EXPECT_EQ(server.auth_attempts.load(), 0);
}

TEST(ClientTest, EnvironmentProxyIsUsedUnlessNoProxyMatches) {
  ServerHarness server;
  Tinyproxy proxy("", "");
  setenv("HTTPS_PROXY", proxy.url("", "").c_str(), 1);
  setenv("NO_PROXY", "example.invalid", 1);
  auto options = client_options(server);
  options.use_environment_proxy = true;
  {
    ClientHarness client(options);
    ASSERT_TRUE(client.wait_connected(1));
    EXPECT_NE(proxy.log().find("CONNECT localhost:" + std::to_string(server.port)),
              std::string::npos);
  }
  setenv("NO_PROXY", "localhost", 1);
  const auto connects = [&proxy] {
    const std::string log = proxy.log();
    size_t count = 0;
    for (size_t at = log.find("CONNECT localhost"); at != std::string::npos;
         at = log.find("CONNECT localhost", at + 1)) {
      ++count;
    }
    return count;
  };
  const size_t connects_before = connects();
  EXPECT_GE(connects_before, 1u);
  {
    ClientHarness client(options);
    ASSERT_TRUE(client.wait_connected(1));
  }
  EXPECT_EQ(connects(), connects_before);  // direct: the proxy saw no new CONNECT
  unsetenv("HTTPS_PROXY");
  unsetenv("NO_PROXY");
}

TEST(ClientTest, UnreachableControlPlaneBacksOffWithFullJitter) {
  FakeClock clock;
  FakeRandom random({0.999});
  FakeScheduler scheduler(clock);
  // A port bound but not listening: connections to it are refused, and no other test can
  // take it while this socket holds it.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor held(io);
  held.open(boost::asio::ip::tcp::v4());
  held.bind({boost::asio::ip::make_address("127.0.0.1"), 0});
  tunnel::ClientOptions options;
  options.url = "wss://127.0.0.1:" + std::to_string(held.local_endpoint().port());
  options.credential = "good-token";
  options.use_environment_proxy = false;
  options.connections = 1;
  ClientHarness client(options, ClientSeams{&clock, &random, &scheduler});
  for (int attempt = 1; attempt <= 6; ++attempt) {
    const SlotStatus status = wait_for_failures(client, attempt);
    EXPECT_FALSE(status.refused);
    EXPECT_NE(status.last_error.find("cannot connect"), std::string::npos) << status.last_error;
    ASSERT_TRUE(eventually([&] { return scheduler.pending() == 1; }));
    if (attempt < 6) {
      ASSERT_TRUE(scheduler.fire_next());  // the next attempt may start
    }
  }
  const auto delays = scheduler.delays();
  ASSERT_EQ(delays.size(), 6u);
  // 250 ms, 500 ms, 1 s, then capped at 2 s (times the near-1 jitter draw).
  const int64_t ceilings[] = {250, 500, 1000, 2000, 2000, 2000};
  for (size_t i = 0; i < delays.size(); ++i) {
    EXPECT_LT(delays[i].count(), ceilings[i]);
    EXPECT_GE(delays[i].count(), ceilings[i] * 99 / 100);
  }
}

TEST(ClientTest, AConnectThatGetsNoAnswerGivesUpAtTheConnectTimeout) {
  // A listener whose accept queue is full drops new SYNs unanswered, as a partition does.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor full(io);
  full.open(boost::asio::ip::tcp::v4());
  full.bind({boost::asio::ip::make_address("127.0.0.1"), 0});
  full.listen(0);
  std::vector<boost::asio::ip::tcp::socket> fillers;
  for (int i = 0; i < 2; ++i) {
    fillers.emplace_back(io);
    fillers.back().async_connect(full.local_endpoint(), [](boost::system::error_code) {});
  }
  io.run_for(std::chrono::milliseconds(200));
  tunnel::ClientOptions options;
  options.url = "wss://127.0.0.1:" + std::to_string(full.local_endpoint().port());
  options.credential = "good-token";
  options.use_environment_proxy = false;
  options.connections = 1;
  options.dial.tcp_connect = std::chrono::milliseconds(300);
  ClientHarness client(options);
  const SlotStatus status = wait_for_failures(client, 1);
  EXPECT_FALSE(status.refused);
  EXPECT_NE(status.last_error.find("TCP connect timed out after 300 ms"), std::string::npos)
      << status.last_error;
}

TEST(ClientTest, ATlsHandshakeThatGetsNoAnswerTimesOutAndADialCompletesOnHeal) {
  ServerHarness server;
  testing::TcpRelay relay(server.port);
  relay.partition();  // dials are accepted, and nothing answers them
  auto options = client_options(server, relay.port());
  options.dial.tls_handshake = std::chrono::milliseconds(300);
  ClientHarness client(options);
  const SlotStatus status = wait_for_failures(client, 1);
  EXPECT_FALSE(status.refused);
  EXPECT_NE(status.last_error.find("TLS handshake timed out after 300 ms"), std::string::npos)
      << status.last_error;
  // Dialled again and again (a short backoff here), not stuck in one attempt.
  ASSERT_TRUE(eventually([&] { return relay.accepted() >= 3; }));
  relay.thaw();
  ASSERT_TRUE(client.wait_connected(1));
  EXPECT_EQ(client.unary("after the heal").second, "after the heal");
}

TEST(ClientTest, AfterAPartitionHealsTheClientIsBackWithinTwoSeconds) {
  using std::chrono::milliseconds;
  ServerHarness server;
  testing::TcpRelay relay(server.port);
  auto options = client_options(server, relay.port());
  options.connection.ping_interval = milliseconds(250);
  options.connection.dead_after = milliseconds(1000);
  options.dial.tls_handshake = milliseconds(500);
  // The default backoff with agent.yaml's `reconnect_max_seconds: 1` (docs/reliability.md).
  options.backoff = BackoffOptions{};
  options.backoff.cap = milliseconds(1000);
  ClientHarness client(options);
  ASSERT_TRUE(client.wait_connected(1));
  relay.partition();
  // The client notices, then keeps dialling into the partition for a while.
  ASSERT_TRUE(eventually([&] { return client.client->status().connected() == 0; }));
  const int accepted = relay.accepted();
  ASSERT_TRUE(eventually([&] { return relay.accepted() >= accepted + 3; }));
  const auto healed_at = std::chrono::steady_clock::now();
  relay.thaw();
  ASSERT_TRUE(client.wait_connected(1));
  const auto back_after = std::chrono::steady_clock::now() - healed_at;
  std::cout << "reconnected " << std::chrono::duration_cast<milliseconds>(back_after).count()
            << " ms after the heal\n";
  // At most one backoff wait (under 1 s) and one dial on loopback.
  EXPECT_LE(back_after, std::chrono::seconds(2));
  EXPECT_EQ(client.unary("after the heal").second, "after the heal");
}

TEST(ClientTest, NewerConnectionWithTheSameIdentityReplacesTheOlder) {
  ServerHarness server;
  auto options = client_options(server);
  FakeClock clock;
  FakeRandom random({0.5});
  FakeScheduler scheduler(clock);
  ClientHarness first(options, ClientSeams{&clock, &random, &scheduler});
  ASSERT_TRUE(first.wait_connected(1));
  ClientHarness second(options);
  ASSERT_TRUE(second.wait_connected(1));
  // The first agent's connection was closed as replaced. It says why and waits as after a
  // refusal (seconds, doubling to minutes) before it tries again, rather than replacing the
  // newer one at once (two agents fighting forever).
  const SlotStatus replaced = wait_for_failures(first, 1);
  EXPECT_TRUE(replaced.refused);
  EXPECT_NE(replaced.last_error.find("replaced"), std::string::npos) << replaced.last_error;
  ASSERT_TRUE(eventually([&] { return scheduler.pending() == 1; }));
  EXPECT_GE(scheduler.delays()[0], std::chrono::seconds(5));
  EXPECT_EQ(first.client->status().connected(), 0);
  EXPECT_EQ(second.client->status().connected(), 1);
  // The server keeps one connection per identity and index: the newer one. (The registry
  // drops the older one when the newer registers; its disconnect handler runs once its close
  // completes, a moment later: wait for that too.)
  EXPECT_TRUE(eventually([&] { return server.server->connection_count() == 1u; }));
  EXPECT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> lock(server.mutex);
    return !server.disconnect_codes.empty();
  }));
  std::lock_guard<std::mutex> lock(server.mutex);
  ASSERT_FALSE(server.disconnect_codes.empty());
  EXPECT_EQ(server.disconnect_codes.front(), make_error_code(Errc::kReplaced));
  EXPECT_EQ(server.disconnect_codes.size(), 1u);
}

TEST(ClientTest, ShutdownDrainsInFlightStreams) {
  ServerHarness server;
  std::promise<std::shared_ptr<Stream>> held;
  server.set_stream_handler([&](const std::shared_ptr<Stream>& stream) {
    if (stream->metadata() == "slow") {
      held.set_value(stream);
    } else {
      stream->reset(Errc::kRefusedStream, "only the slow call is served here");
    }
  });
  auto options = client_options(server);
  auto client = std::make_unique<ClientHarness>(options);
  ASSERT_TRUE(client->wait_connected(1));
  auto call = client->client->open_stream("slow", "question", true, true).value();
  auto held_future = held.get_future();
  auto server_side = outpost::testing::wait_for(held_future, "the call");
  std::promise<void> stopped;
  client->client->shutdown(std::chrono::seconds(20), [&stopped] { stopped.set_value(); });
  // Draining: no new streams, but the open call still gets its answer.
  EXPECT_TRUE(eventually([&] { return !client->client->open_stream("new").ok(); }));
  std::promise<std::pair<boost::system::error_code, std::string>> answer;
  async_read_unary_response(call, [&answer](boost::system::error_code ec, std::string response) {
    answer.set_value({ec, std::move(response)});
  });
  server_side->async_write("answer", true, [](boost::system::error_code) {});
  auto answer_future = answer.get_future();
  auto [ec, response] = outpost::testing::wait_for(answer_future, "the drained answer");
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(response, "answer");
  auto stopped_future = stopped.get_future();
  outpost::testing::wait_for(stopped_future, "shutdown");
  EXPECT_EQ(client->client->status().slots[0].state, SlotState::kStopped);
}

}  // namespace
}  // namespace outpost::tunnel
