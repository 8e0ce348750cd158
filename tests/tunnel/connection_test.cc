// Streams over a real tunnel: TLS WebSocket on loopback between a TunnelClient and a
// TunnelServer, each on its own thread.
#include <iostream>
#include <random>

#include <gtest/gtest.h>

#include "tests/support/tcp_relay.h"
#include "tests/tunnel/tunnel_harness.h"

namespace outpost::tunnel {
namespace {

using boost::system::error_code;
using outpost::testing::client_options;
using outpost::testing::ClientHarness;
using outpost::testing::eventually;
using outpost::testing::ServerHarness;
using outpost::testing::wait_for;

std::string pattern(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  std::mt19937 generator(seed);
  for (char& c : out) c = static_cast<char>(generator());
  return out;
}

// Writes `messages` in order, waiting for each write before the next.
void write_all(const std::shared_ptr<Stream>& stream,
               const std::shared_ptr<std::vector<std::string>>& messages, size_t index, bool end,
               std::function<void(error_code)> done) {
  if (index == messages->size()) {
    if (end) stream->close_write();
    done({});
    return;
  }
  stream->async_write(
      (*messages)[index], false,
      [stream, messages, index, end, done = std::move(done)](error_code ec) mutable {
        if (ec) return done(ec);
        write_all(stream, messages, index + 1, end, std::move(done));
      });
}

std::vector<std::string> read_all_sync(const std::shared_ptr<Stream>& stream, error_code& end) {
  std::promise<std::pair<error_code, std::vector<std::string>>> result;
  auto messages = std::make_shared<std::vector<std::string>>();
  async_read_all(
      stream, [messages](std::string message) { messages->push_back(std::move(message)); },
      [&result, messages](error_code ec) {
        result.set_value({ec, *messages});
      });
  auto future = result.get_future();
  auto [ec, out] = wait_for(future, "the end of a stream");
  end = ec;
  return out;
}

TEST(ConnectionTest, UnaryCallIsOneRoundTripWithMetadata) {
  ServerHarness server;
  std::promise<std::string> seen_metadata;
  server.set_stream_handler([&seen_metadata](const std::shared_ptr<Stream>& stream) {
    seen_metadata.set_value(stream->metadata());
    async_read_all(
        stream,
        [stream](const std::string& request) {
          stream->async_write("reply to " + request, true, [](error_code) {});
        },
        [](error_code) {});
  });
  ClientHarness client(client_options(server));
  ASSERT_TRUE(client.wait_connected(1));
  auto [ec, response] = client.unary("hello", R"({"method":"predict"})");
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(response, "reply to hello");
  auto metadata_future = seen_metadata.get_future();
  EXPECT_EQ(wait_for(metadata_future, "metadata"), R"({"method":"predict"})");
}

TEST(ConnectionTest, ServerStreamingDeliversEveryChunkInOrder) {
  ServerHarness server;
  server.set_stream_handler([](const std::shared_ptr<Stream>& stream) {
    stream->async_read([stream](error_code ec, const std::string& request) {
      if (ec) return;
      auto chunks = std::make_shared<std::vector<std::string>>();
      for (int i = 0; i < 200; ++i) chunks->push_back(request + "#" + std::to_string(i));
      write_all(stream, chunks, 0, true, [](error_code) {});
    });
  });
  ClientHarness client(client_options(server));
  ASSERT_TRUE(client.wait_connected(1));
  auto stream = client.client->open_stream("generate", "tok", true, true).value();
  error_code end;
  const auto chunks = read_all_sync(stream, end);
  EXPECT_FALSE(end) << end.message();
  ASSERT_EQ(chunks.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(chunks[i], "tok#" + std::to_string(i));
}

TEST(ConnectionTest, BidirectionalStreamKeepsOrderBothWays) {
  ServerHarness server;
  ClientHarness client(client_options(server));
  ASSERT_TRUE(client.wait_connected(1));
  auto stream = client.client->open_stream("stream").value();
  auto messages = std::make_shared<std::vector<std::string>>();
  for (int i = 0; i < 500; ++i) messages->push_back("item-" + std::to_string(i));
  std::promise<error_code> written;
  write_all(stream, messages, 0, true, [&written](error_code ec) { written.set_value(ec); });
  error_code end;
  const auto echoed = read_all_sync(stream, end);
  auto written_future = written.get_future();
  EXPECT_FALSE(wait_for(written_future, "writes"));
  EXPECT_FALSE(end);
  EXPECT_EQ(echoed, *messages);
}

TEST(ConnectionTest, LargeMessagesAreSplitAndReassembledIntact) {
  ServerHarness server;
  ClientHarness client(client_options(server));
  ASSERT_TRUE(client.wait_connected(1));
  // 10 MiB: 160 frames, and forty times the initial stream window.
  const std::string big = pattern(10 * 1024 * 1024, 7);
  auto [ec, response] = client.unary(big);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_TRUE(response == big);
}

TEST(ConnectionTest, ThousandConcurrentStreamsKeepEveryByte) {
  ServerHarness server;
  ClientHarness client(client_options(server));
  ASSERT_TRUE(client.wait_connected(1));
  constexpr int kStreams = 1000;
  std::atomic<int> finished{0};
  std::atomic<int> intact{0};
  std::promise<void> all_done;
  for (int i = 0; i < kStreams; ++i) {
    // Sizes from 1 byte to ~96 KiB, so some span several frames.
    const std::string payload = pattern(1 + (static_cast<size_t>(i) * 97) % (96 * 1024), i);
    auto stream = client.client->open_stream("s" + std::to_string(i), payload, true, true).value();
    async_read_unary_response(stream, [&, payload](error_code ec, const std::string& response) {
      if (!ec && response == payload) ++intact;
      if (++finished == kStreams) all_done.set_value();
    });
  }
  auto future = all_done.get_future();
  wait_for(future, "1000 streams");
  EXPECT_EQ(intact.load(), kStreams);
}

TEST(ConnectionTest, StalledReaderDoesNotHoldBackOtherStreams) {
  ConnectionOptions connection;
  connection.initial_stream_window = 64 * 1024;
  tunnel::ServerOptions server_options;
  server_options.connection = connection;
  ServerHarness server(server_options);
  std::promise<std::shared_ptr<Stream>> stalled_server_side;
  server.set_stream_handler([&](const std::shared_ptr<Stream>& stream) {
    if (stream->metadata() == "stalled") {
      stalled_server_side.set_value(stream);  // accepted, never read
      return;
    }
    outpost::testing::echo(stream);
  });
  ClientHarness client(client_options(server));
  ASSERT_TRUE(client.wait_connected(1));

  // Fill the stalled stream until its window is exhausted: its writer stops completing.
  auto stalled = client.client->open_stream("stalled").value();
  std::atomic<int> stalled_writes_done{0};
  for (int i = 0; i < 64; ++i) {
    stalled->async_write(std::string(16 * 1024, 'x'), false, [&stalled_writes_done](error_code ec) {
      if (!ec) ++stalled_writes_done;
    });
  }
  auto stalled_future = stalled_server_side.get_future();
  auto server_side = wait_for(stalled_future, "the stalled stream");
  ASSERT_TRUE(eventually([&] { return server_side->buffered_bytes() == 64 * 1024u; }));
  const int blocked_at = stalled_writes_done.load();
  EXPECT_LT(blocked_at, 64) << "the stalled stream's writer should be held by its window";

  // Meanwhile unary calls on other streams all complete, in order.
  for (int i = 0; i < 50; ++i) {
    auto [ec, response] = client.unary("call " + std::to_string(i));
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(response, "call " + std::to_string(i));
  }
  // The stalled stream made no progress while they ran, and its buffer stayed bounded.
  EXPECT_EQ(stalled_writes_done.load(), blocked_at);
  EXPECT_EQ(server_side->buffered_bytes(), 64 * 1024u);

  // Once its reader wakes up, everything that was held back arrives.
  std::atomic<size_t> received{0};
  async_read_all(
      server_side, [&received](const std::string& message) { received += message.size(); },
      [](error_code) {});
  EXPECT_TRUE(eventually([&] { return stalled_writes_done.load() == 64; }));
  EXPECT_TRUE(eventually([&] { return received.load() == 64 * 16 * 1024u; }));
  stalled->close_write();
}

TEST(ConnectionTest, EitherEndCancelsAStream) {
  ServerHarness server;
  std::promise<error_code> server_saw;
  std::promise<std::shared_ptr<Stream>> server_stream;
  server.set_stream_handler([&](const std::shared_ptr<Stream>& stream) {
    if (stream->metadata() == "cancel-from-client") {
      stream->async_read(
          [stream, &server_saw](error_code ec, const std::string&) { server_saw.set_value(ec); });
      server_stream.set_value(stream);
    } else if (stream->metadata() == "cancel-from-server") {
      stream->reset(Errc::kCancel, "model unloaded");
    } else {
      outpost::testing::echo(stream);
    }
  });
  ClientHarness client(client_options(server));
  ASSERT_TRUE(client.wait_connected(1));

  auto first = client.client->open_stream("cancel-from-client").value();
  auto opened = server_stream.get_future();
  wait_for(opened, "the server's stream");
  first->reset(Errc::kCancel, "user pressed ctrl-c");
  auto saw = server_saw.get_future();
  EXPECT_EQ(wait_for(saw, "the cancellation"), make_error_code(Errc::kCancel));

  auto second = client.client->open_stream("cancel-from-server").value();
  std::promise<error_code> client_saw;
  second->async_read(
      [&client_saw](error_code ec, const std::string&) { client_saw.set_value(ec); });
  auto client_future = client_saw.get_future();
  EXPECT_EQ(wait_for(client_future, "the server's cancel"), make_error_code(Errc::kCancel));
  EXPECT_EQ(second->reset_reason(), "model unloaded");
  // The connection is unharmed.
  EXPECT_EQ(client.unary("still fine").second, "still fine");
}

TEST(ConnectionTest, ServerOpensStreamsTowardTheAgent) {
  ServerHarness server;
  ClientHarness client(client_options(server));
  ASSERT_TRUE(client.wait_connected(1));
  ASSERT_TRUE(eventually([&] { return server.latest_connection() != nullptr; }));
  auto stream = server.latest_connection()->open_stream("deploy", "replica spec", true, true);
  std::promise<std::pair<error_code, std::string>> answer;
  async_read_unary_response(stream, [&answer](error_code ec, std::string response) {
    answer.set_value({ec, std::move(response)});
  });
  auto future = answer.get_future();
  auto [ec, response] = wait_for(future, "the agent's answer");
  EXPECT_FALSE(ec);
  EXPECT_EQ(response, "replica spec");
  EXPECT_EQ(client.streams_from_server.load(), 1);
  EXPECT_EQ(stream->id() % 2, 0u);  // server-opened ids are even
}

TEST(ConnectionTest, ApplicationFeatureBitsReachThePeerAndTheTunnelsOwnStayItsOwn) {
  ServerHarness server;
  auto options = client_options(server);
  // Bit 40 is the application's; bit 1 is the tunnel's and is not the application's to set.
  options.connection.application_features = (uint64_t{1} << 40) | 0x2;
  ClientHarness client(options);
  ASSERT_TRUE(client.wait_connected(1));
  ASSERT_TRUE(eventually([&] {
    auto connection = server.latest_connection();
    return connection != nullptr && connection->peer_features() != 0;
  }));
  const uint64_t seen = server.latest_connection()->peer_features();
  EXPECT_EQ(seen & kApplicationFeatures, uint64_t{1} << 40);
  EXPECT_EQ(seen & 0x2, 0u);
  EXPECT_EQ(seen & kFeatureWindowAutoTune, kFeatureWindowAutoTune);
}

TEST(ConnectionTest, MessageOverTheStreamLimitResetsOnlyThatStream) {
  ServerHarness server;
  server.set_stream_handler([](const std::shared_ptr<Stream>& stream) {
    stream->set_max_message_size(1000);
    outpost::testing::echo(stream);
  });
  ClientHarness client(client_options(server));
  ASSERT_TRUE(client.wait_connected(1));
  auto [ec, response] = client.unary(std::string(5000, 'x'));
  EXPECT_EQ(ec, make_error_code(Errc::kMessageTooLarge));
  auto [ok_ec, ok_response] = client.unary(std::string(900, 'y'));
  EXPECT_FALSE(ok_ec);
  EXPECT_EQ(ok_response, std::string(900, 'y'));
}

TEST(ConnectionTest, DrainFinishesOpenStreamsRefusesNewOnesAndTheAgentMovesOn) {
  ServerHarness server;
  std::promise<std::shared_ptr<Stream>> held;
  server.set_stream_handler([&](const std::shared_ptr<Stream>& stream) {
    if (stream->metadata() == "long") {
      held.set_value(stream);
      return;
    }
    outpost::testing::echo(stream);
  });
  ClientHarness client(client_options(server));
  ASSERT_TRUE(client.wait_connected(1));
  auto long_call = client.client->open_stream("long", "work", true, true).value();
  auto held_future = held.get_future();
  auto server_side = wait_for(held_future, "the long call");
  auto old_connection = server.latest_connection();

  ASSERT_EQ(old_connection->stream_count(), 1u);
  old_connection->drain(std::chrono::seconds(20));
  // The agent opens a replacement at once; new calls go there.
  ASSERT_TRUE(eventually(
      [&] { return server.connections_seen() == 2 && client.client->status().connected() == 1; }));
  EXPECT_EQ(client.unary("after drain").second, "after drain");
  // The call that was in flight on the draining connection still completes.
  server_side->async_write("finished", true, [](error_code) {});
  std::promise<std::pair<error_code, std::string>> answer;
  async_read_unary_response(long_call, [&answer](error_code ec, std::string response) {
    answer.set_value({ec, std::move(response)});
  });
  auto future = answer.get_future();
  auto [ec, response] = wait_for(future, "the drained call");
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(response, "finished");
  // Then the drained connection closes by itself.
  EXPECT_TRUE(eventually([&] { return !old_connection->is_open(); }));
}

TEST(ConnectionTest, CutConnectionFailsOpenStreamsAndTheClientReconnects) {
  ServerHarness server;
  testing::TcpRelay relay(server.port);
  server.set_stream_handler([](const std::shared_ptr<Stream>& stream) {
    if (stream->metadata() == "hang") return;  // never answers
    outpost::testing::echo(stream);
  });
  ClientHarness client(client_options(server, relay.port()));
  ASSERT_TRUE(client.wait_connected(1));
  auto hanging = client.client->open_stream("hang", "x", true, true).value();
  std::promise<error_code> failed;
  hanging->async_read([&failed](error_code ec, const std::string&) { failed.set_value(ec); });
  // Make sure the call reached the server before the cut.
  ASSERT_TRUE(eventually([&] {
    auto connection = server.latest_connection();
    return connection && connection->stream_count() == 1;
  }));

  relay.cut();
  auto failed_future = failed.get_future();
  EXPECT_EQ(wait_for(failed_future, "the cut stream's error"), make_error_code(Errc::kTunnelLost));
  EXPECT_NE(hanging->reset_reason().find("tunnel connection closed"), std::string::npos);
  // The client reconnects through the relay, and new calls work.
  ASSERT_TRUE(eventually(
      [&] { return relay.accepted() >= 2 && client.client->status().connected() == 1; }));
  EXPECT_EQ(client.unary("after the cut").second, "after the cut");
}

// The server's owner frees what its handlers use once shutdown says done: an agent that leaves
// while the control plane stops must not have its disconnect handler still running then.
TEST(ConnectionTest, ShutdownIsDoneOnlyAfterTheDisconnectHandlerOfALeavingAgentReturned) {
  ServerHarness server;
  std::atomic<int> in_handler{0};
  std::promise<void> entered;
  std::atomic<bool> first{true};
  server.set_disconnect_handler([&] {
    ++in_handler;
    if (first.exchange(false)) entered.set_value();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    --in_handler;
  });
  {
    ClientHarness client(client_options(server));
    ASSERT_TRUE(client.wait_connected(1));
  }  // the agent leaves
  auto entered_future = entered.get_future();
  wait_for(entered_future, "the disconnect handler");
  std::promise<int> done;
  server.server->shutdown(std::chrono::milliseconds(200),
                          [&] { done.set_value(in_handler.load()); });
  auto done_future = done.get_future();
  EXPECT_EQ(wait_for(done_future, "the server's shutdown"), 0)
      << "shutdown finished while a disconnect handler was still running";
}

TEST(ConnectionTest, SilentPeerIsDetectedAndReplaced) {
  ServerHarness server;
  testing::TcpRelay relay(server.port);
  auto options = client_options(server, relay.port());
  options.connection.ping_interval = std::chrono::milliseconds(100);
  options.connection.dead_after = std::chrono::milliseconds(500);
  ClientHarness client(options);
  ASSERT_TRUE(client.wait_connected(1));
  EXPECT_EQ(client.unary("before").second, "before");

  relay.freeze();  // the socket stays open; nothing gets through any more
  ASSERT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> lock(client.mutex);
    for (const auto& status : client.history) {
      if (status.slots[0].last_error.find("presumed dead") != std::string::npos) return true;
    }
    return false;
  })) << "the client never noticed the silent connection";
  ASSERT_TRUE(eventually(
      [&] { return relay.accepted() >= 2 && client.client->status().connected() == 1; }));
  EXPECT_EQ(client.unary("after").second, "after");
}

TEST(ConnectionTest, ServerDeclaresASilentAgentDeadWithinTheDeadlineAndFailsItsStreams) {
  using std::chrono::milliseconds;
  ServerOptions server_options;
  server_options.connection.ping_interval = milliseconds(250);
  server_options.connection.dead_after = milliseconds(1500);
  ServerHarness server(server_options);
  std::promise<std::pair<error_code, std::string>> server_side;
  // The call stays in flight: its message read, never answered; the next read waits.
  std::function<void(const std::shared_ptr<Stream>&)> read_all =
      [&server_side, &read_all](const std::shared_ptr<Stream>& stream) {
        stream->async_read([&server_side, &read_all, stream](error_code ec, const std::string&) {
          if (!ec) return read_all(stream);
          server_side.set_value({ec, stream->reset_reason()});
        });
      };
  server.set_stream_handler(
      [&read_all](const std::shared_ptr<Stream>& stream) { read_all(stream); });
  testing::TcpRelay relay(server.port);
  auto options = client_options(server, relay.port());
  options.connection.dead_after = std::chrono::seconds(60);  // only the server's deadline acts
  ClientHarness client(options);
  ASSERT_TRUE(client.wait_connected(1));
  auto hanging = client.client->open_stream("hang", "x", true, false).value();
  ASSERT_TRUE(eventually([&] {
    return server.server->connections_of("node-1").size() == 1 &&
           server.latest_connection()->stream_count() == 1;
  }));

  const auto cut_at = std::chrono::steady_clock::now();
  relay.freeze();  // no RST, no FIN: the agent's link just goes quiet
  ASSERT_TRUE(eventually([&] { return server.server->connections_of("node-1").empty(); }));
  const auto detected = std::chrono::steady_clock::now() - cut_at;
  // Not before the deadline (the last frame may have come up to a ping interval before the
  // cut), and within it plus one keepalive tick, with a second for a loaded machine.
  EXPECT_GE(detected, milliseconds(1500 - 250));
  EXPECT_LE(detected, milliseconds(1500 + 125 + 1000));
  std::cout << "silent agent declared dead after "
            << std::chrono::duration_cast<milliseconds>(detected).count() << " ms\n";
  // The call in flight failed at that moment, with the connection lost, not left hanging.
  auto future = server_side.get_future();
  const auto [ec, reason] = wait_for(future, "the stream's failure");
  EXPECT_EQ(ec, make_error_code(Errc::kTunnelLost));
  EXPECT_NE(reason.find("no frame from the peer"), std::string::npos) << reason;
  ASSERT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> lock(server.mutex);
    return !server.disconnect_codes.empty();
  }));
  {
    std::lock_guard<std::mutex> lock(server.mutex);
    EXPECT_EQ(server.disconnect_codes[0], make_error_code(Errc::kTimeout));
  }
  relay.cut();
}

TEST(ConnectionTest, WhenOneOfTwoConnectionsGoesSilentNewStreamsTakeTheOther) {
  using std::chrono::milliseconds;
  ServerHarness server;
  testing::TcpRelay relay(server.port);
  auto options = client_options(server, relay.port());
  options.connections = 2;
  options.connection.ping_interval = milliseconds(100);
  options.connection.dead_after = std::chrono::seconds(20);  // not declared dead in this test
  ClientHarness client(options);
  ASSERT_TRUE(client.wait_connected(2));
  ASSERT_TRUE(eventually([&] { return server.server->connections_of("node-1").size() == 2; }));
  // Each connection in turn goes silent, so that whichever one the client would pick while both
  // are idle is the silent one once.
  for (const int silent : {0, 1}) {
    relay.freeze_one(silent);
    // The server's pings and answers stop arriving on that one: after two ping intervals the
    // client holds it suspect, though it is far from its dead_after.
    std::this_thread::sleep_for(milliseconds(600));
    ASSERT_EQ(client.client->status().connected(), 2);  // still up: not declared dead
    for (int i = 0; i < 6; ++i) {
      const auto [ec, response] = client.unary("call " + std::to_string(i));
      EXPECT_FALSE(ec) << "link " << silent << " silent: " << ec.message();
      EXPECT_EQ(response, "call " + std::to_string(i));
    }
    relay.thaw();
    std::this_thread::sleep_for(milliseconds(600));  // both answer again
  }
  relay.cut();
}

TEST(ConnectionTest, TwoConnectionsSpreadStreamsAndEachStreamStaysOnItsOwn) {
  ServerHarness server;
  auto options = client_options(server);
  options.connections = 2;
  ClientHarness client(options);
  ASSERT_TRUE(client.wait_connected(2));
  ASSERT_TRUE(eventually([&] { return server.server->connection_count() == 2; }));
  std::vector<std::shared_ptr<Stream>> open;
  open.reserve(10);
  for (int i = 0; i < 10; ++i) open.push_back(client.client->open_stream("held").value());
  // Streams are spread over both connections, five each (least-loaded first).
  ASSERT_TRUE(eventually([&] {
    auto connections = server.server->connections_of("node-1");
    return connections.size() == 2 && connections[0]->stream_count() == 5 &&
           connections[1]->stream_count() == 5;
  }));
  for (auto& stream : open) stream->reset();
}

}  // namespace
}  // namespace outpost::tunnel
