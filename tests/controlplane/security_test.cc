// The control plane's security checks, as a client or an operator sees them: repeated refused
// credentials are slowed down (429 with Retry-After, on the REST API and the agents' tunnel) while
// any credential that verifies keeps working; a request is admitted from its head, before any
// body byte is read; connections and bodies in flight are bounded; the listener speaks TLS 1.2
// or newer only; the state on disk is private (0700 directories, 0600 files); an upload above the
// limit is refused with a clear error before anything is stored; and no secret comes back in an
// error or goes to the log.
//
// Checked elsewhere, not repeated here: tokens are stored as salted PBKDF2 hashes and compared in
// constant time (secrets.cc; ApiTest.RefusesBadTokens), a fetched artifact whose hash does not
// match is refused before use (tests/agent/artifact_cache_test.cc and, end to end,
// EndToEndTest's tampered artifact), the agent's credential file is 0600 in a 0700 directory
// (tests/agent/credentials_test.cc), the CLI's login config is 0600 (tests/cli), and no secret
// reaches any process's log, command line or environment on a whole platform
// (tests/e2e/security_test.cc).
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "controlplane/auth/auth_throttle.h"
#include "controlplane/state/artifact_store.h"
#include "controlplane/state/store.h"
#include "tests/controlplane/control_fixture.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace outpost::testing {
namespace {

namespace fs = std::filesystem;

unsigned mode_of(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return 0;
  return info.st_mode & 0777;
}

std::string error_code_of(const ApiReply& reply) {
  return reply.body.is_object() ? reply.body["status"].value("code", "") : "";
}
std::string error_text(const ApiReply& reply) {
  return reply.body.is_object() ? reply.body["status"].value("description", "") : "";
}

// "<prefix>_<id>_<secret>" -> "<secret>".
std::string secret_part(const std::string& token) { return token.substr(token.rfind('_') + 1); }

// The same token with the last digit of its secret changed: a wrong token that looks real.
std::string near_miss(const std::string& token) {
  std::string wrong = token;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  return wrong;
}

// --- the throttle itself, on an injected clock ---

TEST(AuthThrottleTest, RefusesAnAddressOverItsBudgetUntilTheWindowCloses) {
  FakeWallClock clock;
  control::AuthThrottle throttle({/*max_failures=*/3, /*window_seconds=*/60}, clock);
  throttle.record_failure("10.0.0.1:4000");
  clock.advance(10);
  throttle.record_failure("10.0.0.1:4001");
  EXPECT_EQ(throttle.retry_after("10.0.0.1:4002"), 0);
  throttle.record_failure("10.0.0.1:4003");
  // The window opened at the first refusal, 10 s ago.
  EXPECT_EQ(throttle.retry_after("10.0.0.1:4004"), 50);
  EXPECT_EQ(throttle.retry_after("10.0.0.2:4004"), 0);  // another address has its own budget
  clock.advance(49);
  EXPECT_EQ(throttle.retry_after("10.0.0.1:1"), 1);
  clock.advance(1);
  EXPECT_EQ(throttle.retry_after("10.0.0.1:1"), 0);
  // A fresh window and a fresh budget.
  throttle.record_failure("10.0.0.1:1");
  throttle.record_failure("10.0.0.1:1");
  EXPECT_EQ(throttle.retry_after("10.0.0.1:1"), 0);
}

TEST(AuthThrottleTest, OldRefusalsDoNotAddUpAcrossWindows) {
  FakeWallClock clock;
  control::AuthThrottle throttle({3, 60}, clock);
  for (int i = 0; i < 10; ++i) {
    throttle.record_failure("10.0.0.1:1");
    throttle.record_failure("10.0.0.1:1");
    EXPECT_EQ(throttle.retry_after("10.0.0.1:1"), 0) << i;
    clock.advance(61);
  }
}

TEST(AuthThrottleTest, CountsIpv6ByItsPrefixAndMappedIpv4AsIpv4) {
  using control::AuthThrottle;
  EXPECT_EQ(AuthThrottle::source_of("192.0.2.7:443"), "192.0.2.7");
  EXPECT_EQ(AuthThrottle::source_of("::ffff:192.0.2.7:443"), "192.0.2.7");
  EXPECT_EQ(AuthThrottle::source_of("2001:db8:1:2:aaaa::1:443"), "2001:db8:1:2::/64");
  EXPECT_EQ(AuthThrottle::source_of("[2001:db8:1:2::5]:443"), "2001:db8:1:2::/64");
  FakeWallClock clock;
  AuthThrottle throttle({2, 60}, clock);
  throttle.record_failure("2001:db8:1:2::1:50000");
  throttle.record_failure("2001:db8:1:2:ffff::9:50001");
  EXPECT_GT(throttle.retry_after("2001:db8:1:2::77:1"), 0);
  EXPECT_EQ(throttle.retry_after("2001:db8:1:3::1:1"), 0);
}

TEST(AuthThrottleTest, AWindowOverItsBudgetIsKeptOnceAndCanBeRestored) {
  FakeWallClock clock;
  struct Kept {
    std::string source;
    int64_t start;
    int failures;
  };
  std::vector<Kept> kept;
  control::AuthThrottle throttle({3, 60}, clock);
  throttle.set_keeper([&](const std::string& source, int64_t start, int failures) {
    kept.push_back({source, start, failures});
  });
  const int64_t start = clock.now_seconds();
  throttle.record_failure("10.0.0.1:1");
  throttle.record_failure("10.0.0.1:2");
  EXPECT_TRUE(kept.empty());  // within budget: nothing to keep
  clock.advance(5);
  throttle.record_failure("10.0.0.1:3");
  throttle.record_failure("10.0.0.1:4");
  ASSERT_EQ(kept.size(), 1u);  // kept when it went over, once
  EXPECT_EQ(kept[0].source, "10.0.0.1");
  EXPECT_EQ(kept[0].start, start);
  // A new process restores it: the address is throttled until the same moment.
  control::AuthThrottle restarted({3, 60}, clock);
  EXPECT_EQ(restarted.retry_after("10.0.0.1:9"), 0);
  restarted.restore(kept[0].source, kept[0].start, kept[0].failures);
  EXPECT_EQ(restarted.retry_after("10.0.0.1:9"), 55);
}

TEST(AuthThrottleTest, ZeroFailuresTurnsItOff) {
  FakeWallClock clock;
  control::AuthThrottle throttle({0, 60}, clock);
  for (int i = 0; i < 100; ++i) throttle.record_failure("10.0.0.1:1");
  EXPECT_EQ(throttle.retry_after("10.0.0.1:1"), 0);
}

// --- the throttle in a control plane, REST and tunnel ---

class ThrottleTest : public ::testing::Test {
 protected:
  ThrottleTest()
      : control_(pki_, "auth_throttle: {max_failures: 3, window_seconds: 60}\n"),
        admin_(api(control_.admin_token())) {}

  Api api(const std::string& token) { return Api(control_.base_url(), pki_.ca_file(), token); }

  std::string join_token() {
    auto reply = admin_.post("/v2/users/me/compute_clusters/cc/nodepools/np/join_tokens",
                             json{{"ttl_seconds", 3600}});
    EXPECT_EQ(reply.status, 201) << reply.raw;
    return reply.body["join_token"]["token"];
  }

  // A WebSocket upgrade on the tunnel with `credential`, one attempt: the HTTP status.
  int tunnel_upgrade(const std::string& credential) {
    Api raw = api("");
    auto reply = raw.client().send("GET", "/v1/tunnel", "", "",
                                   {{"Connection", "Upgrade"},
                                    {"Upgrade", "websocket"},
                                    {"Sec-WebSocket-Version", "13"},
                                    {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                                    {"Sec-WebSocket-Protocol", "outpost-tunnel.v1"},
                                    {"Authorization", "Bearer " + credential}});
    EXPECT_TRUE(reply.ok()) << reply.error().message();
    return reply.ok() ? reply->status : 0;
  }

  TestPki pki_;
  ControlInProcess control_;
  Api admin_;
};

TEST_F(ThrottleTest, RepeatedBadTokensGet429WhileEveryGoodTokenKeepsWorking) {
  ASSERT_EQ(admin_.get("/v2/users/me").status, 200);  // the admin's token: verified once
  auto created = admin_.post("/v2/users/me/keys", json{{"key", {{"description", "unused"}}}});
  ASSERT_EQ(created.status, 201);
  const std::string unused = created.body["key"]["token"];
  Api wrong = api(near_miss(control_.admin_token()));
  for (int i = 0; i < 3; ++i) {
    auto refused = wrong.get("/v2/users/me");
    EXPECT_EQ(refused.status, 401) << refused.raw;
  }
  // Over the budget: refused at once, saying when to come back.
  auto throttled = wrong.get("/v2/users/me");
  EXPECT_EQ(throttled.status, 429) << throttled.raw;
  EXPECT_EQ(error_code_of(throttled), "resource_exhausted");
  EXPECT_EQ(throttled.retry_after, "60");
  EXPECT_NE(error_text(throttled).find("try again in 60 s"), std::string::npos) << throttled.raw;
  // A token that worked before from here still works, and so does a correct one never verified
  // before (as after a restart, which empties the cache of verified tokens): the throttle slows
  // guesses, it never refuses a credential that verifies. The health check needs no credential.
  EXPECT_EQ(admin_.get("/v2/users/me").status, 200);
  EXPECT_EQ(api(unused).get("/v2/users/me").status, 200);
  EXPECT_EQ(api("").get("/v2/healthz").status, 200);
  control_.clock().advance(59);
  EXPECT_EQ(wrong.get("/v2/users/me").retry_after, "1");
  control_.clock().advance(1);
  EXPECT_EQ(wrong.get("/v2/users/me").status, 401);
}

TEST_F(ThrottleTest, RepeatedBadAgentCredentialsGet429OnTheTunnel) {
  ASSERT_EQ(admin_.post("/v2/users/me/compute_clusters", json{{"compute_cluster", {{"id", "cc"}}}})
                .status,
            201);
  ASSERT_EQ(
      admin_.post("/v2/users/me/compute_clusters/cc/nodepools", json{{"nodepool", {{"id", "np"}}}})
          .status,
      201);
  const std::string token = join_token();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(tunnel_upgrade(near_miss(token)), 401);
  EXPECT_EQ(tunnel_upgrade(near_miss(token)), 429);
  // The budget is per address, across the API and the tunnel: a wrong PAT is throttled now too,
  // a right one is not.
  EXPECT_EQ(api(near_miss(control_.admin_token())).get("/v2/users/me").status, 429);
  auto created = admin_.post("/v2/users/me/keys", json{{"key", {{"description", "unused"}}}});
  EXPECT_EQ(api(created.body["key"]["token"]).get("/v2/users/me").status, 200);

  // The right join token enrolls from the throttled address, never verified before as it is.
  auto enrolled = TestAgent::enroll(control_.port(), pki_.ca_file(), token);
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message();
  {
    TestAgent node(control_.port(), pki_.ca_file(), enrolled->credential);
    ASSERT_TRUE(node.wait_connected());
  }

  // In a new window, guesses at the node credential use up the budget again; the node
  // reconnects.
  control_.clock().advance(60);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(tunnel_upgrade(near_miss(enrolled->credential)), 401);
  EXPECT_EQ(tunnel_upgrade(near_miss(enrolled->credential)), 429);
  TestAgent again(control_.port(), pki_.ca_file(), enrolled->credential);
  EXPECT_TRUE(again.wait_connected());
}

// A real process restarted: the address's window is kept in the database, so a guesser gets no
// fresh budget from a restart, while a good token (never verified by the new process) works.
TEST(ThrottleRestartTest, AThrottledAddressStaysThrottledAcrossARestart) {
  TestPki pki;
  ControlProcess control(pki, {"auth_throttle: {max_failures: 3, window_seconds: 600}\n", ""});
  Api wrong(control.base_url(), pki.ca_file(), near_miss(control.admin_token()));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(wrong.get("/v2/users/me").status, 401);
  EXPECT_EQ(wrong.get("/v2/users/me").status, 429);
  control.restart();
  Api wrong_again(control.base_url(), pki.ca_file(), near_miss(control.admin_token()));
  const auto refused = wrong_again.get("/v2/users/me");
  EXPECT_EQ(refused.status, 429) << refused.raw;  // the first refusal after the restart
  EXPECT_FALSE(refused.retry_after.empty());
  Api admin(control.base_url(), pki.ca_file(), control.admin_token());
  EXPECT_EQ(admin.get("/v2/users/me").status, 200);
}

// --- requests admitted from their head; connections and bodies bounded ---

// One TLS connection to the listener on 127.0.0.1, spoken to byte by byte.
class RawTls {
 public:
  RawTls(uint16_t port, const std::string& ca_file) {
    ::signal(SIGPIPE, SIG_IGN);  // a connection the server closed fails a write, not the test
    context_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(context_, ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(context_, SSL_VERIFY_PEER, nullptr);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) return;
    timeval timeout{10, 0};  // a read that waits longer fails the test instead of hanging it
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ssl_ = SSL_new(context_);
    SSL_set_tlsext_host_name(ssl_, "localhost");
    SSL_set1_host(ssl_, "localhost");
    SSL_set_fd(ssl_, fd_);
    connected_ = SSL_connect(ssl_) == 1;
  }
  ~RawTls() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    SSL_CTX_free(context_);
    ERR_clear_error();
  }
  RawTls(const RawTls&) = delete;
  RawTls& operator=(const RawTls&) = delete;

  bool connected() const { return connected_; }
  bool send(const std::string& bytes) {
    return connected_ && SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size())) ==
                             static_cast<int>(bytes.size());
  }
  // One response: its head and as much of its body as Content-Length says ("" when the
  // connection closed or went silent first).
  std::string read_response() {
    std::string text;
    char chunk[4096];
    while (connected_) {
      const auto head_end = text.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        const auto length_at = text.find("Content-Length: ");
        const size_t length =
            length_at == std::string::npos ? 0 : std::stoul(text.substr(length_at + 16));
        if (text.size() >= head_end + 4 + length) return text.substr(0, head_end + 4 + length);
      }
      const int got = SSL_read(ssl_, chunk, sizeof chunk);
      if (got <= 0) break;
      text.append(chunk, static_cast<size_t>(got));
    }
    return text.find("\r\n\r\n") == std::string::npos ? std::string() : text;
  }
  // The server closed the connection (a read sees its end, not data).
  bool closed_by_peer() {
    char byte = 0;
    return SSL_read(ssl_, &byte, 1) <= 0;
  }

 private:
  SSL_CTX* context_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool connected_ = false;
};

int status_of(const std::string& response) {
  return response.size() > 12 ? std::atoi(response.c_str() + 9) : 0;
}

std::string upload_head(const std::string& authorization, size_t length) {
  std::string head = "POST /v2/users/me/models/text/versions HTTP/1.1\r\nHost: localhost\r\n";
  if (!authorization.empty()) head += "Authorization: " + authorization + "\r\n";
  return head + "Content-Type: application/x-tar\r\nContent-Length: " + std::to_string(length) +
         "\r\n\r\n";
}

size_t files_under(const std::string& dir) {
  size_t count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) count += entry.is_regular_file();
  return count;
}

TEST(HeadFirstTest, AnUploadWithoutAWorkingCredentialIsRefusedBeforeAnyBodyByte) {
  TestPki pki;
  ControlProcess control(pki);
  Api admin(control.base_url(), pki.ca_file(), control.admin_token());
  auto read_only =
      admin.post("/v2/users/me/keys", json{{"key", {{"description", "ro"}, {"scopes", {"read"}}}}});
  ASSERT_EQ(read_only.status, 201) << read_only.raw;
  const size_t announced = size_t{256} << 20;  // 256 MiB, of which not one byte is sent
  struct Case {
    std::string authorization;
    int status;
  };
  for (const Case& c : {Case{"", 401}, Case{"Key " + near_miss(control.admin_token()), 401},
                        Case{"Key " + read_only.body["key"]["token"].get<std::string>(), 403}}) {
    RawTls connection(control.port(), pki.ca_file());
    ASSERT_TRUE(connection.connected());
    ASSERT_TRUE(connection.send(upload_head(c.authorization, announced)));
    const std::string response = connection.read_response();
    EXPECT_EQ(status_of(response), c.status) << response;
    EXPECT_NE(response.find("Connection: close"), std::string::npos) << response;
    EXPECT_TRUE(connection.closed_by_peer());
    EXPECT_EQ(files_under(control.data_dir() + "/tmp"), 0u);
  }
  // An unknown path and a method the path does not take are answered from the head too.
  RawTls unknown(control.port(), pki.ca_file());
  ASSERT_TRUE(unknown.send("POST /v2/nowhere HTTP/1.1\r\nHost: localhost\r\nAuthorization: Key " +
                           control.admin_token() + "\r\nContent-Length: 1000000\r\n\r\n"));
  EXPECT_EQ(status_of(unknown.read_response()), 404);
  // With a working credential, the same head is let in: the server waits for the body.
  RawTls admitted(control.port(), pki.ca_file());
  ASSERT_TRUE(
      admitted.send(upload_head("Key " + control.admin_token(), 1024) + std::string(1024, '\0')));
  const std::string response = admitted.read_response();
  EXPECT_EQ(status_of(response), 400) << response;  // read whole, then found not to be a package
  EXPECT_NE(response.find("invalid_argument"), std::string::npos) << response;
}

TEST(ConnectionLimitTest, ConnectionsPastTheLimitAreAnswered429AndTheOthersServed) {
  TestPki pki;
  ControlInProcess control(pki, "limits: {max_connections_per_address: 2}\n");
  const std::string health = "GET /v2/healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
  auto first = std::make_unique<RawTls>(control.port(), pki.ca_file());
  RawTls second(control.port(), pki.ca_file());
  ASSERT_TRUE(first->connected() && second.connected());
  RawTls third(control.port(), pki.ca_file());
  ASSERT_TRUE(third.connected());
  ASSERT_TRUE(third.send(health));
  const std::string refused = third.read_response();
  EXPECT_EQ(status_of(refused), 429) << refused;
  EXPECT_NE(refused.find("Retry-After: 1"), std::string::npos) << refused;
  EXPECT_NE(refused.find("too many connections"), std::string::npos) << refused;
  // The two within the limit are served, and a connection that closes makes room.
  ASSERT_TRUE(second.send(health));
  EXPECT_EQ(status_of(second.read_response()), 200);
  first.reset();
  bool served = false;
  for (int attempt = 0; attempt < 50 && !served; ++attempt) {  // the close is seen at once
    RawTls fourth(control.port(), pki.ca_file());
    served = fourth.send(health) && status_of(fourth.read_response()) == 200;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(served);
}

TEST(BodyBudgetTest, BodiesPastTheMemoryBudgetAre429UntilOneFinishes) {
  TestPki pki;
  // The held body must not be cut as idle while the test works around it on a loaded machine.
  ControlInProcess control(pki,
                           "limits: {max_body_memory_bytes: 3000000, body_idle_timeout_seconds: "
                           "120}\n");
  const std::string& token = control.admin_token();
  // Verified once, so that each head below is admitted at once on its connection's thread (a
  // KDF on the blocking pool could let a later head overtake the first).
  Api admin(control.base_url(), pki.ca_file(), token);
  ASSERT_EQ(admin.get("/v2/users/me").status, 200);
  auto head = [&](size_t length) {
    return "POST /v2/users/me/compute_clusters HTTP/1.1\r\nHost: localhost\r\nAuthorization: "
           "Key " +
           token +
           "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(length) +
           "\r\n\r\n";
  };
  const size_t big = 2'000'000;
  const std::string first_cluster = R"({"compute_cluster": {"id": "cc"}})";
  const std::string second_cluster = R"({"compute_cluster": {"id": "c2"}})";
  RawTls slow(control.port(), pki.ca_file());
  ASSERT_TRUE(slow.send(head(big) + first_cluster));
  // The first body holds 2 MB of the 3 MB budget while it arrives; another 2 MB must wait.
  bool refused = false;
  std::string response;
  for (int attempt = 0; attempt < 50 && !refused; ++attempt) {
    RawTls other(control.port(), pki.ca_file());
    ASSERT_TRUE(other.send(head(big)));
    response = other.read_response();
    refused = status_of(response) == 429;
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(refused) << response;
  EXPECT_NE(response.find("Retry-After: 1"), std::string::npos) << response;
  EXPECT_NE(response.find("too many request bodies"), std::string::npos) << response;
  // A small body still fits beside it.
  EXPECT_EQ(admin.get("/v2/users/me").status, 200);
  // The first body completes (padding after the JSON is whitespace), and its budget comes back.
  ASSERT_TRUE(slow.send(std::string(big - first_cluster.size(), ' ')));
  EXPECT_EQ(status_of(slow.read_response()), 201);
  RawTls after(control.port(), pki.ca_file());
  ASSERT_TRUE(
      after.send(head(big) + second_cluster + std::string(big - second_cluster.size(), ' ')));
  EXPECT_EQ(status_of(after.read_response()), 201);
}

TEST(BodyBudgetTest, ABodyThatStopsArrivingIsCut) {
  TestPki pki;
  ControlInProcess control(pki, "limits: {body_idle_timeout_seconds: 1}\n");
  RawTls stalled(control.port(), pki.ca_file());
  ASSERT_TRUE(
      stalled.send("POST /v2/users/me/compute_clusters HTTP/1.1\r\nHost: localhost\r\n"
                   "Authorization: Key " +
                   control.admin_token() +
                   "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"));
  // Nothing more is sent: after the idle timeout the server closes the connection (the read
  // below would otherwise wait for its own 10 s timeout and fail).
  EXPECT_EQ(stalled.read_response(), "");
  EXPECT_TRUE(stalled.closed_by_peer());
}

// --- TLS versions ---

struct Handshake {
  bool ok = false;
  int version = 0;          // negotiated, when ok
  unsigned long error = 0;  // the first OpenSSL error, when not
};

// A TLS handshake with the listener at 127.0.0.1:`port`, offering exactly `min`..`max`. The client
// is made able to speak old versions (security level 0), so a refusal is the server's.
Handshake handshake(uint16_t port, const std::string& ca_file, int min, int max) {
  Handshake out;
  SSL_CTX* context = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_security_level(context, 0);
  SSL_CTX_set_cipher_list(context, "DEFAULT:@SECLEVEL=0");
  SSL_CTX_set_min_proto_version(context, min);
  SSL_CTX_set_max_proto_version(context, max);
  SSL_CTX_load_verify_locations(context, ca_file.c_str(), nullptr);
  SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nullptr);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0);
  SSL* ssl = SSL_new(context);
  SSL_set_tlsext_host_name(ssl, "localhost");
  SSL_set1_host(ssl, "localhost");
  SSL_set_fd(ssl, fd);
  ERR_clear_error();
  out.ok = SSL_connect(ssl) == 1;
  if (out.ok) {
    out.version = SSL_version(ssl);
    SSL_shutdown(ssl);
  } else {
    out.error = ERR_peek_error();
  }
  SSL_free(ssl);
  ::close(fd);
  SSL_CTX_free(context);
  ERR_clear_error();
  return out;
}

TEST(TlsTest, TheListenerRefusesTls10And11AndSpeaks12And13) {
  TestPki pki;
  ControlInProcess control(pki);
  for (const int old : {TLS1_VERSION, TLS1_1_VERSION}) {
    const Handshake refused = handshake(control.port(), pki.ca_file(), old, old);
    ASSERT_FALSE(refused.ok) << "TLS version " << std::hex << old << " was accepted";
    if (ERR_GET_REASON(refused.error) == SSL_R_NO_PROTOCOLS_AVAILABLE) {
      GTEST_SKIP() << "this OpenSSL cannot offer TLS version " << std::hex << old
                   << ", so the server's refusal cannot be shown";
    }
    // The server answered with a protocol_version alert: it is the server that said no.
    EXPECT_EQ(ERR_GET_REASON(refused.error), SSL_R_TLSV1_ALERT_PROTOCOL_VERSION)
        << ERR_reason_error_string(refused.error);
  }
  const Handshake twelve = handshake(control.port(), pki.ca_file(), TLS1_2_VERSION, TLS1_2_VERSION);
  EXPECT_TRUE(twelve.ok) << ERR_reason_error_string(twelve.error);
  EXPECT_EQ(twelve.version, TLS1_2_VERSION);
  const Handshake any = handshake(control.port(), pki.ca_file(), TLS1_VERSION, TLS1_3_VERSION);
  EXPECT_TRUE(any.ok) << ERR_reason_error_string(any.error);
  EXPECT_EQ(any.version, TLS1_3_VERSION);  // the newest both speak
}

// --- state on disk ---

// Under a permissive umask, so that the modes come from the code and not from the environment.
class PermissiveUmask {
 public:
  PermissiveUmask() : old_(::umask(0022)) {}
  ~PermissiveUmask() { ::umask(old_); }
  PermissiveUmask(const PermissiveUmask&) = delete;
  PermissiveUmask& operator=(const PermissiveUmask&) = delete;

 private:
  mode_t old_;
};

TEST(StateFilesTest, TheDatabaseAndItsJournalAre0600) {
  PermissiveUmask umask;
  TempDir dir;
  const std::string path = dir.file("outpost.db");
  std::ofstream(path) << "";  // an older file with a looser mode is tightened
  ::chmod(path.c_str(), 0644);
  FakeWallClock clock;
  auto store = control::Store::open(path, clock);
  ASSERT_TRUE(store.ok()) << store.error().message();
  ASSERT_TRUE((*store)->create_user("alice", false).ok());
  EXPECT_EQ(mode_of(path), 0600u);
  for (const char* suffix : {"-wal", "-shm"}) {
    if (fs::exists(path + suffix)) {
      EXPECT_EQ(mode_of(path + suffix), 0600u) << suffix;
    }
  }
}

TEST(StateFilesTest, ArtifactsAre0600InDirectories0700) {
  PermissiveUmask umask;
  TempDir dir;
  auto store = control::ArtifactStore::create(dir.file("artifacts"));
  ASSERT_TRUE(store.ok());
  const std::string sha(64, 'a');
  std::ofstream(dir.file("upload")) << "model bytes";
  ::chmod(dir.file("upload").c_str(), 0644);
  ASSERT_TRUE(store->import(dir.file("upload"), sha).ok());
  EXPECT_EQ(mode_of(dir.file("artifacts")), 0700u);
  EXPECT_EQ(mode_of(dir.file("artifacts/aa")), 0700u);
  EXPECT_EQ(mode_of(store->path_of(sha)), 0600u);
}

// The real process, after an upload: everything under its data directory is private.
TEST(StateFilesTest, TheControlPlanesDataDirectoryIsPrivate) {
  TestPki pki;
  TempDir dir;
  ControlProcess control(pki);
  Api admin(control.base_url(), pki.ca_file(), control.admin_token());
  create_fleet(admin, "cc", "np", "text", "dep", dir);
  size_t files = 0;
  EXPECT_EQ(mode_of(control.data_dir()), 0700u);
  for (const auto& entry : fs::recursive_directory_iterator(control.data_dir())) {
    if (entry.is_directory()) {
      EXPECT_EQ(mode_of(entry.path()), 0700u) << entry.path();
    } else if (entry.is_regular_file()) {
      EXPECT_EQ(mode_of(entry.path()), 0600u) << entry.path();
      ++files;
    }
  }
  EXPECT_GE(files, 2u);  // at least the database and the model's artifact
  EXPECT_TRUE(fs::exists(control.data_dir() + "/outpost.db"));
}

// --- uploads ---

TEST(UploadLimitTest, AModelAboveTheLimitIsRefusedAndNothingIsKept) {
  TestPki pki;
  TempDir dir;
  ControlProcess control(pki, {"limits: {max_model_bytes: 4096}\n", ""});
  Api admin(control.base_url(), pki.ca_file(), control.admin_token());
  auto package = model_package("text");
  package["model.pt"] = std::string(16 * 1024, 'x');
  write_tar(dir.file("big.tar"), package);
  auto refused = admin.upload("/v2/users/me/models/text/versions", dir.file("big.tar"));
  EXPECT_EQ(refused.status, 413) << refused.raw;
  EXPECT_EQ(error_code_of(refused), "resource_exhausted");
  EXPECT_NE(error_text(refused).find("larger than the 4096 bytes"), std::string::npos)
      << refused.raw;
  EXPECT_EQ(admin.get("/v2/users/me/models/text").status, 404);
  EXPECT_TRUE(fs::is_empty(control.data_dir() + "/tmp"));
  EXPECT_TRUE(fs::is_empty(control.data_dir() + "/artifacts"));
}

// --- secrets in errors and logs ---

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(SecretsTest, NoSecretComesBackInAnErrorOrGoesToTheLog) {
  TestPki pki;
  TempDir dir;
  ::setenv("OUTPOST_LOG_LEVEL", "debug", 1);  // everything the process can say
  ControlProcess control(pki);
  ::unsetenv("OUTPOST_LOG_LEVEL");
  Api admin(control.base_url(), pki.ca_file(), control.admin_token());
  create_fleet(admin, "cc", "np", "text", "dep", dir);
  auto join =
      admin.post("/v2/users/me/compute_clusters/cc/nodepools/np/join_tokens", json::object());
  ASSERT_EQ(join.status, 201) << join.raw;
  const std::string join_token = join.body["join_token"]["token"];
  auto enrolled = TestAgent::enroll(control.port(), pki.ca_file(), join_token);
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message();
  const std::string credential = enrolled->credential;
  {
    TestAgent node(control.port(), pki.ca_file(), credential);
    ASSERT_TRUE(node.wait_connected());
    EXPECT_TRUE(node.call("node.sync").ok());
  }
  auto key = admin.post("/v2/users/me/keys", json{{"key", {{"description", "ci"}}}});
  const std::string pat = key.body["key"]["token"];
  EXPECT_EQ(Api(control.base_url(), pki.ca_file(), pat).get("/v2/users/me").status, 200);

  // Wrong credentials that look like the real ones, and what the clients hear back.
  std::vector<std::string> secrets = {control.admin_token(), pat, join_token, credential};
  std::vector<std::string> answers;
  for (const std::string& wrong : {near_miss(pat), near_miss(control.admin_token())}) {
    secrets.push_back(wrong);
    auto refused = Api(control.base_url(), pki.ca_file(), wrong).get("/v2/users/me");
    EXPECT_EQ(refused.status, 401);
    answers.push_back(refused.raw);
  }
  for (const std::string& wrong : {near_miss(join_token), near_miss(credential)}) {
    secrets.push_back(wrong);
    auto refused = TestAgent::enroll(control.port(), pki.ca_file(), wrong);
    ASSERT_FALSE(refused.ok());
    answers.push_back(refused.error().message());
  }
  // Used twice: refused, and the answer does not echo it.
  secrets.push_back(join_token);
  auto reused = TestAgent::enroll(control.port(), pki.ca_file(), join_token);
  ASSERT_FALSE(reused.ok());
  answers.push_back(reused.error().message());

  control.stop();
  const std::string log = control.log();
  ASSERT_NE(log.find("auth_refused"), std::string::npos) << "the refusals were not logged:\n"
                                                         << log;
  const std::string database = read_all(control.data_dir() + "/outpost.db") +
                               read_all(control.data_dir() + "/outpost.db-wal");
  for (const std::string& secret : secrets) {
    for (const std::string& needle : {secret, secret_part(secret)}) {
      EXPECT_EQ(log.find(needle), std::string::npos) << "the log holds " << needle;
      EXPECT_EQ(database.find(needle), std::string::npos) << "the database holds " << needle;
      for (const std::string& answer : answers) {
        EXPECT_EQ(answer.find(needle), std::string::npos) << answer;
      }
    }
  }
}

}  // namespace
}  // namespace outpost::testing
