// Helpers for the control plane's tests: outpost-control as a real process (or in-process, to
// inject a clock), a REST client speaking to it over verified TLS, model packages as tar
// archives, and a test agent end: a tunnel::TunnelClient that speaks docs/control-protocol.md
// (enrolls, syncs, reports, fetches artifacts, and answers predicts of every shape).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/http_client.h"
#include "controlplane/control_plane.h"
#include "controlplane/state/wall_clock.h"
#include "tests/support/test_pki.h"
#include "tests/tunnel/tunnel_harness.h"
#include "tunnel/client.h"

namespace outpost::testing {

using nlohmann::json;

class FakeWallClock final : public control::WallClock {
 public:
  int64_t now_seconds() const override { return now_.load(); }
  void advance(int64_t seconds) { now_ += seconds; }

 private:
  std::atomic<int64_t> now_{1'700'000'000};
};

// outpost-control run as a child process, with its data in a temporary directory.
class ControlProcess {
 public:
  struct Options {
    std::string extra_config;  // YAML appended to the generated config
    std::string worker_path;   // default: the test worker (real or fake)
  };
  explicit ControlProcess(const TestPki& pki, Options options = {});
  ~ControlProcess();
  ControlProcess(const ControlProcess&) = delete;
  ControlProcess& operator=(const ControlProcess&) = delete;

  void start();
  void stop();  // SIGTERM, then waits
  void restart() {
    stop();
    start();
  }
  uint16_t port() const { return port_; }
  std::string base_url() const { return "https://localhost:" + std::to_string(port_); }
  const std::string& admin_token() const { return admin_token_; }
  const std::string& data_dir() const { return data_dir_; }
  std::string log() const;  // what the process wrote to stderr
  bool running() const { return pid_ > 0; }

 private:
  const TestPki& pki_;
  Options options_;
  TempDir dir_;
  std::string data_dir_;
  std::string config_file_;
  int pid_ = -1;
  uint16_t port_ = 0;
  std::string admin_token_;
};

// outpost-control in this process, with a fake wall clock.
class ControlInProcess {
 public:
  explicit ControlInProcess(const TestPki& pki, const std::string& extra_yaml = {});
  ~ControlInProcess();
  uint16_t port() const { return port_; }
  std::string base_url() const { return "https://localhost:" + std::to_string(port_); }
  const std::string& admin_token() const { return admin_token_; }
  FakeWallClock& clock() { return clock_; }
  uint16_t metrics_port() const { return control_->metrics_port(); }

 private:
  FakeWallClock clock_;
  TempDir dir_;
  std::unique_ptr<control::ControlPlane> control_;
  uint16_t port_ = 0;
  std::string admin_token_;
};

struct ApiReply {
  int status = 0;
  json body;
  std::string request_id;
  std::string retry_after;
  std::string raw;
};

// The REST API with one token.
class Api {
 public:
  Api(std::string base_url, std::string ca_file, std::string token);
  ApiReply get(const std::string& path);
  ApiReply post(const std::string& path, const json& body);
  ApiReply post_text(const std::string& path, const std::string& body,
                     const std::string& content_type, const cli::Headers& headers = {});
  ApiReply del(const std::string& path);
  ApiReply upload(const std::string& path, const std::string& tar_file);
  cli::HttpClient& client() { return *client_; }

 private:
  ApiReply wrap(Result<cli::Response> response);
  std::unique_ptr<cli::HttpClient> client_;
};

// Writes a ustar archive of `files` (name -> content) to `path`.
void write_tar(const std::string& path, const std::map<std::string, std::string>& files);

// A model package directory for `model_id`: config.yaml and a model.pt, from the example models
// when the real worker is built, else a stand-in file the fake worker accepts.
std::map<std::string, std::string> model_package(const std::string& model_id);

// Creates a user through the admin API; returns the new user's token.
std::string create_user(Api& admin, const std::string& user_id);

// Creates cluster `cc`, nodepool `np`, uploads model `model`, deploys it as `dep`.
void create_fleet(Api& api, const std::string& cc, const std::string& np, const std::string& model,
                  const std::string& dep, const TempDir& dir);

// The agent's end of the tunnel, speaking docs/control-protocol.md.
class TestAgent {
 public:
  struct Enrollment {
    std::string node_id;
    std::string credential;
    json response;
  };
  // node.enroll with a join token; the error's message when refused.
  static Result<Enrollment> enroll(uint16_t port, const std::string& ca_file,
                                   const std::string& join_token,
                                   const std::string& name = "host-1",
                                   json inventory = json{{"cpu_cores", 4},
                                                         {"memory_bytes", int64_t{8} << 30}});

  // `envelopes`: announce kFeaturePredictEnvelope, as outpostd does, so that predicts come as
  // envelopes (docs/control-protocol.md, "Predict bodies"); otherwise as JSON, as to an older
  // agent.
  TestAgent(uint16_t port, const std::string& ca_file, const std::string& credential,
            bool envelopes = false);
  ~TestAgent();

  bool wait_connected();
  tunnel::ClientStatus status() const { return client_->status(); }
  // A unary call of the control protocol; the parsed answer.
  Result<json> call(const std::string& method, const json& request = nullptr);
  // node.report with every replica of the last desired state in `state`.
  Result<json> report_all(const std::string& state = "ready");
  // artifact.fetch: the header, then the bytes.
  Result<std::pair<json, std::string>> fetch_artifact(const std::string& sha256);

  std::vector<json> desired_pushes() const;
  json last_desired() const;
  int predicts() const { return predicts_.load(); }
  std::vector<json> predict_metadata() const;
  // Generate calls stall after the first chunk until released, to test cancellation.
  void set_stall_generate(bool stall) { stall_generate_ = stall; }
  std::vector<std::string> cancelled() const;  // reset reasons of cancelled predicts
  void disconnect();

 private:
  void on_stream(const std::shared_ptr<tunnel::Stream>& stream);
  void answer_predict(const std::shared_ptr<tunnel::Stream>& stream, const json& metadata);

  std::unique_ptr<IoThread> io_;
  std::shared_ptr<tunnel::TunnelClient> client_;
  mutable std::mutex mutex_;
  std::vector<json> desired_;
  std::vector<json> metadata_;
  std::vector<std::string> cancelled_;
  std::atomic<int> predicts_{0};
  std::atomic<bool> stall_generate_{false};
};

}  // namespace outpost::testing
