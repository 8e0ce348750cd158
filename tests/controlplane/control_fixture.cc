#include "tests/controlplane/control_fixture.h"

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include <boost/asio/steady_timer.hpp>

#include "common/spawn.h"
#include "controlplane/control_config.h"
#include "protocol/control_protocol.h"
#include "tunnel/calls.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace outpost::testing {

namespace fs = std::filesystem;
using boost::system::error_code;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string base_config(const TestPki& pki, const std::string& data_dir,
                        const std::string& worker) {
  return "listen: \"127.0.0.1:0\"\n"
         "data_dir: \"" +
         data_dir +
         "\"\n"
         "tls: {cert_file: \"" +
         pki.cert_file() + "\", key_file: \"" + pki.key_file() +
         "\"}\n"
         "worker_path: \"" +
         worker +
         "\"\n"
         "threads: {io: 2, blocking: 4}\n";
}

}  // namespace

// --- ControlProcess ---

ControlProcess::ControlProcess(const TestPki& pki, Options options)
    : pki_(pki), options_(std::move(options)) {
  data_dir_ = dir_.file("data");
  config_file_ = dir_.file("control.yaml");
  const std::string worker =
      options_.worker_path.empty() ? std::string(OUTPOST_TEST_WORKER) : options_.worker_path;
  std::ofstream(config_file_) << base_config(pki_, data_dir_, worker) << "admin: {token_file: \""
                              << dir_.file("admin.token") << "\"}\n"
                              << "port_file: \"" << dir_.file("port") << "\"\n"
                              << options_.extra_config;
  start();
}

ControlProcess::~ControlProcess() { stop(); }

void ControlProcess::start() {
  std::error_code ignored;
  fs::remove(dir_.file("port"), ignored);
  SpawnOptions spawn;
  spawn.argv = {OUTPOST_CONTROL_BINARY, "--config", config_file_};
  spawn.environment = current_environment();
  spawn.out.file = dir_.file("control.out");
  spawn.err.file = dir_.file("control.log");
  const auto spawned = spawn_process(spawn);
  ASSERT_TRUE(spawned.ok()) << spawned.error().to_string();
  const pid_t pid = *spawned;
  pid_ = pid;
  const bool up = eventually([&] {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return fs::exists(dir_.file("port"));
  });
  ASSERT_TRUE(up && pid_ > 0) << "outpost-control did not start:\n" << log();
  port_ = static_cast<uint16_t>(std::stoi(read_file(dir_.file("port"))));
  admin_token_ = trim(read_file(dir_.file("admin.token")));
}

void ControlProcess::stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "outpost-control did not stop cleanly:\n"
      << log();
}

std::string ControlProcess::log() const { return read_file(dir_.file("control.log")); }

// --- ControlInProcess ---

ControlInProcess::ControlInProcess(const TestPki& pki, const std::string& extra_yaml) {
  auto config = control::parse_control_config(
      base_config(pki, dir_.file("data"), OUTPOST_TEST_WORKER) + extra_yaml);
  EXPECT_TRUE(config.ok()) << config.error().message();
  control::ControlSeams seams;
  seams.clock = &clock_;
  auto created = control::ControlPlane::create(config.value(), seams);
  if (!created.ok()) {
    ADD_FAILURE() << created.error().message();
    std::abort();
  }
  control_ = std::move(created).value();
  admin_token_ = control_->initial_admin_token();
  auto port = control_->start();
  if (!port.ok()) {
    ADD_FAILURE() << port.error().message();
    std::abort();
  }
  port_ = port.value();
}

ControlInProcess::~ControlInProcess() { control_->stop(); }

// --- Api ---

Api::Api(std::string base_url, std::string ca_file, std::string token) {
  cli::ClientConfig config;
  config.base_url = std::move(base_url);
  config.ca_file = std::move(ca_file);
  config.pat = std::move(token);
  config.timeout = std::chrono::seconds(60);
  auto client = cli::HttpClient::create(config);
  EXPECT_TRUE(client.ok());
  client_ = std::move(client).value();
}

ApiReply Api::wrap(Result<cli::Response> response) {
  ApiReply reply;
  if (!response.ok()) {
    ADD_FAILURE() << "request failed: " << response.error().message();
    return reply;
  }
  reply.status = response->status;
  reply.request_id = response->request_id;
  reply.retry_after = response->retry_after;
  reply.raw = response->body;
  reply.body = json::parse(response->body, nullptr, false);
  return reply;
}

ApiReply Api::get(const std::string& path) { return wrap(client_->send("GET", path)); }
ApiReply Api::del(const std::string& path) { return wrap(client_->send("DELETE", path)); }
ApiReply Api::post(const std::string& path, const json& body) {
  return wrap(client_->send("POST", path, body.dump()));
}
ApiReply Api::post_text(const std::string& path, const std::string& body,
                        const std::string& content_type, const cli::Headers& headers) {
  return wrap(client_->send("POST", path, body, content_type, headers));
}
ApiReply Api::upload(const std::string& path, const std::string& tar_file) {
  return wrap(client_->send_file("POST", path, tar_file, "application/x-tar"));
}

// --- packages ---

void write_tar(const std::string& path, const std::map<std::string, std::string>& files) {
  std::ofstream out(path, std::ios::binary);
  for (const auto& [name, content] : files) {
    std::array<char, 512> header{};
    std::memcpy(header.data(), name.data(), std::min<size_t>(name.size(), 100));
    std::snprintf(header.data() + 100, 8, "%07o", 0644);
    std::snprintf(header.data() + 108, 8, "%07o", 0);
    std::snprintf(header.data() + 116, 8, "%07o", 0);
    std::snprintf(header.data() + 124, 12, "%011lo", static_cast<unsigned long>(content.size()));
    std::snprintf(header.data() + 136, 12, "%011o", 0);
    header[156] = '0';
    std::memcpy(header.data() + 257, "ustar", 6);
    std::memcpy(header.data() + 263, "00", 2);
    std::memset(header.data() + 148, ' ', 8);
    unsigned sum = 0;
    for (const char c : header) sum += static_cast<unsigned char>(c);
    std::snprintf(header.data() + 148, 8, "%06o", sum);
    out.write(header.data(), header.size());
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    const size_t pad = (512 - content.size() % 512) % 512;
    out.write(std::string(pad, '\0').data(), static_cast<std::streamsize>(pad));
  }
  out.write(std::string(1024, '\0').data(), 1024);
}

std::map<std::string, std::string> model_package(const std::string& model_id) {
#ifdef OUTPOST_TEST_MODELS_DIR
  const std::string dir = std::string(OUTPOST_TEST_MODELS_DIR) + "/" + model_id;
  if (fs::exists(dir + "/model.pt")) {
    return {{"config.yaml", read_file(dir + "/config.yaml")},
            {"model.pt", read_file(dir + "/model.pt")}};
  }
#endif
  return {{"config.yaml", "model:\n  id: \"" + model_id +
                              "\"\ninference_compute_info:\n  cpu_limit: \"1\"\n  cpu_memory: "
                              "\"1Gi\"\n  num_accelerators: 0\n"},
          {"model.pt", "stand-in for a TorchScript file of " + model_id}};
}

std::string create_user(Api& admin, const std::string& user_id) {
  auto reply = admin.post("/v2/users", json{{"user", {{"id", user_id}}}});
  EXPECT_EQ(reply.status, 201) << reply.raw;
  return reply.body["key"]["token"].get<std::string>();
}

void create_fleet(Api& api, const std::string& cc, const std::string& np, const std::string& model,
                  const std::string& dep, const TempDir& dir) {
  auto cluster = api.post("/v2/users/me/compute_clusters", json{{"compute_cluster", {{"id", cc}}}});
  ASSERT_TRUE(cluster.status == 201 || cluster.status == 409) << cluster.raw;
  auto pool = api.post("/v2/users/me/compute_clusters/" + cc + "/nodepools",
                       json{{"nodepool", {{"id", np}}}});
  ASSERT_TRUE(pool.status == 201 || pool.status == 409) << pool.raw;
  const std::string tar = dir.file(model + ".tar");
  write_tar(tar, model_package(model));
  auto version = api.upload("/v2/users/me/models/" + model + "/versions", tar);
  ASSERT_EQ(version.status, 201) << version.raw;
  auto deployment = api.post(
      "/v2/users/me/deployments",
      json{{"deployment",
            {{"id", dep},
             {"worker", {{"model", {{"id", model}}}}},
             {"scheduling_choice", 4},
             {"nodepools", json::array({{{"id", np}, {"compute_cluster", {{"id", cc}}}}})}}}});
  ASSERT_EQ(deployment.status, 201) << deployment.raw;
}

// --- TestAgent ---

namespace {

tunnel::ClientOptions agent_options(uint16_t port, const std::string& ca_file,
                                    const std::string& credential) {
  tunnel::ClientOptions options;
  options.url = "wss://localhost:" + std::to_string(port) + "/v1/tunnel";
  options.credential = credential;
  options.tls.ca_file = ca_file;
  options.use_environment_proxy = false;
  options.connections = 1;
  options.backoff.base = std::chrono::milliseconds(20);
  options.backoff.cap = std::chrono::milliseconds(200);
  options.backoff.refused_delay = std::chrono::milliseconds(100);
  return options;
}

Result<json> unary(tunnel::TunnelClient& client, const std::string& method, const json& request) {
  std::string body = request.is_null() ? std::string() : request.dump();
  const bool has_body = !request.is_null();
  std::shared_ptr<tunnel::Stream> stream;
  // The connection may just have come up: retry opening briefly.
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto opened = client.open_stream(protocol::to_json(protocol::CallMetadata{method, ""}).dump(),
                                     body, has_body, true);
    if (opened.ok()) {
      stream = opened.value();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!stream) return unavailable("no connection to the control plane");
  std::promise<std::pair<error_code, std::string>> result;
  tunnel::async_read_unary_response(stream, [&result](error_code ec, std::string response) {
    result.set_value({ec, std::move(response)});
  });
  auto future = result.get_future();
  auto [ec, response] = wait_for(future, "a control-protocol answer");
  if (ec) return unavailable(method + " failed: " + ec.message());
  auto parsed = json::parse(response, nullptr, false);
  if (parsed.is_discarded()) return internal_error("not JSON: " + response);
  if (parsed.is_object() && parsed.contains("error")) {
    return Error(ErrorCode::kInvalidArgument,
                 parsed["error"].value("code", "") + ": " + parsed["error"].value("message", ""));
  }
  return parsed;
}

}  // namespace

Result<TestAgent::Enrollment> TestAgent::enroll(uint16_t port, const std::string& ca_file,
                                                const std::string& join_token,
                                                const std::string& name, json inventory) {
  IoThread io;
  tunnel::TunnelClient::Handlers handlers;
  std::mutex mutex;
  std::string last_error;
  handlers.on_status = [&](const tunnel::ClientStatus& status) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!status.slots.empty() && !status.slots[0].last_error.empty()) {
      last_error = status.slots[0].last_error;
    }
  };
  auto created =
      tunnel::TunnelClient::create(io.io(), agent_options(port, ca_file, join_token), handlers);
  if (!created.ok()) return created.error();
  auto client = created.value();
  client->start();
  Result<Enrollment> out = unavailable("not connected");
  const bool connected = eventually(
      [&] {
        std::lock_guard<std::mutex> lock(mutex);
        return client->status().connected() > 0 || !last_error.empty();
      },
      std::chrono::seconds(10));
  if (connected && client->status().connected() > 0) {
    auto response =
        unary(*client, "node.enroll", json{{"name", name}, {"inventory", std::move(inventory)}});
    if (response.ok()) {
      out = Enrollment{(*response)["node_id"].get<std::string>(),
                       (*response)["credential"].get<std::string>(), *response};
    } else {
      out = response.error();
    }
  } else {
    std::lock_guard<std::mutex> lock(mutex);
    out = Error(ErrorCode::kUnauthenticated, last_error);
  }
  std::promise<void> stopped;
  client->shutdown(std::chrono::milliseconds(100), [&stopped] { stopped.set_value(); });
  stopped.get_future().wait_for(std::chrono::seconds(10));
  return out;
}

TestAgent::TestAgent(uint16_t port, const std::string& ca_file, const std::string& credential,
                     bool envelopes)
    : io_(std::make_unique<IoThread>()) {
  tunnel::TunnelClient::Handlers handlers;
  handlers.on_stream = [this](const std::shared_ptr<tunnel::Stream>& stream, int) {
    on_stream(stream);
  };
  auto options = agent_options(port, ca_file, credential);
  if (envelopes) options.connection.application_features = protocol::kFeaturePredictEnvelope;
  auto created = tunnel::TunnelClient::create(io_->io(), std::move(options), handlers);
  if (!created.ok()) {
    ADD_FAILURE() << created.error().message();
    std::abort();
  }
  client_ = created.value();
  client_->start();
}

TestAgent::~TestAgent() { disconnect(); }

void TestAgent::disconnect() {
  if (!client_) return;
  std::promise<void> stopped;
  client_->shutdown(std::chrono::milliseconds(100), [&stopped] { stopped.set_value(); });
  stopped.get_future().wait_for(std::chrono::seconds(10));
  client_.reset();
  io_.reset();
}

bool TestAgent::wait_connected() {
  return eventually([&] { return client_->status().connected() > 0; });
}

Result<json> TestAgent::call(const std::string& method, const json& request) {
  return unary(*client_, method, request);
}

Result<json> TestAgent::report_all(const std::string& state) {
  auto answer = call("node.sync");
  if (!answer.ok()) return answer.error();
  // Read as the agent reads it: a desired state the real agent would refuse fails the test here.
  auto desired = protocol::parse_desired_state(*answer);
  if (!desired.ok()) return desired.error();
  protocol::NodeReport report;
  report.applied_version = static_cast<int64_t>(desired->version);
  for (const auto& replica : desired->replicas) {
    protocol::ReplicaStatus status;
    status.replica_id = replica.replica_id;
    status.state = state;
    status.deployment_id = replica.deployment_id;
    status.model_version_id = replica.model_version_id;
    status.device = "cpu";
    status.memory_bytes = 1000;
    report.replicas.push_back(std::move(status));
  }
  return call("node.report", protocol::to_json(report));
}

Result<std::pair<json, std::string>> TestAgent::fetch_artifact(const std::string& sha256) {
  auto opened = client_->open_stream(
      protocol::to_json(protocol::CallMetadata{"artifact.fetch", sha256}).dump(), "", false, true);
  if (!opened.ok()) return opened.error();
  auto stream = opened.value();
  std::promise<std::pair<error_code, std::vector<std::string>>> result;
  auto messages = std::make_shared<std::vector<std::string>>();
  tunnel::async_read_all(
      stream, [messages](std::string message) { messages->push_back(std::move(message)); },
      [&result, messages](error_code ec) {
        result.set_value({ec, *messages});
      });
  auto future = result.get_future();
  auto [ec, parts] = wait_for(future, "an artifact");
  if (ec) return unavailable("artifact.fetch failed: " + ec.message());
  if (parts.empty()) return internal_error("no header");
  json header = json::parse(parts[0], nullptr, false);
  if (header.contains("error")) return Error(ErrorCode::kNotFound, header["error"].dump());
  std::string bytes;
  size_t largest = 0;
  for (size_t i = 1; i < parts.size(); ++i) {
    bytes += parts[i];
    largest = std::max(largest, parts[i].size());
  }
  header["largest_chunk"] = largest;
  return std::make_pair(header, bytes);
}

std::vector<json> TestAgent::desired_pushes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return desired_;
}

json TestAgent::last_desired() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return desired_.empty() ? json(nullptr) : desired_.back();
}

std::vector<json> TestAgent::predict_metadata() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return metadata_;
}

std::vector<std::string> TestAgent::cancelled() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cancelled_;
}

void TestAgent::on_stream(const std::shared_ptr<tunnel::Stream>& stream) {
  const json metadata = json::parse(stream->metadata(), nullptr, false);
  const std::string method = metadata.is_object() ? metadata.value("method", "") : "";
  if (method == "node.desired") {
    stream->async_read([this, stream](error_code ec, const std::string& message) {
      if (ec) return;
      json state = json::parse(message, nullptr, false);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        desired_.push_back(state);
      }
      stream->async_write(json{{"version", state.value("version", 0)}}.dump(), true,
                          [](error_code) {});
    });
    return;
  }
  if (method == "predict") {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      metadata_.push_back(metadata);
    }
    ++predicts_;
    return answer_predict(stream, metadata);
  }
  stream->reset(tunnel::Errc::kApplicationError, "unknown method");
}

// unary: {"outputs": {"echo": inputs}}; generate: one chunk per word of inputs.prompt (or three
// chunks); stream: {"outputs": inputs} per item. A text "fail:WHY" is refused as
// invalid_argument WHY.
// Bodies are read and written as the agent does (agent/router.cc), in the metadata's encoding.
void TestAgent::answer_predict(const std::shared_ptr<tunnel::Stream>& stream,
                               const json& metadata) {
  const auto call = protocol::parse_predict_metadata(metadata);
  if (!call.ok()) {
    stream->async_write(protocol::encode_predict_error(call.error(), protocol::BodyEncoding::kJson),
                        true, [](error_code) {});
    return;
  }
  const protocol::BodyEncoding encoding = call->body;
  const std::string shape(protocol::call_shape_name(call->shape));
  const std::string model_method = call->model_method;
  const auto note_cancel = [this, stream](error_code ec) {
    if (ec == tunnel::Errc::kCancel) {
      std::lock_guard<std::mutex> lock(mutex_);
      cancelled_.push_back(stream->reset_reason());
    }
  };
  // {key: value} with the request's parts.
  const auto answer = [encoding](const char* key, json value,
                                 const std::vector<std::string>& parts) {
    protocol::WireValue wire{std::move(value), parts};
    return protocol::encode_predict_answer(key, wire, encoding).value();
  };
  if (shape == "stream") {
    auto loop = std::make_shared<std::function<void()>>();
    *loop = [stream, loop, note_cancel, encoding, answer] {
      stream->async_read(
          [stream, loop, note_cancel, encoding, answer](error_code ec, const std::string& message) {
            if (ec == tunnel::Errc::kEndOfStream) {
              stream->close_write();
              *loop = nullptr;
              return;
            }
            if (ec) {
              note_cancel(ec);
              *loop = nullptr;
              return;
            }
            auto item = protocol::decode_predict_request(message, encoding);
            if (!item.ok()) {
              stream->async_write(protocol::encode_predict_error(item.error(), encoding), true,
                                  [](error_code) {});
              *loop = nullptr;
              return;
            }
            stream->async_write(answer("outputs", item->value, item->parts), false,
                                [loop](error_code write_ec) {
                                  if (!write_ec && *loop) (*loop)();
                                });
          });
    };
    (*loop)();
    return;
  }
  stream->async_read([this, stream, shape, model_method, note_cancel, encoding, answer](
                         error_code ec, const std::string& message) {
    if (ec) return note_cancel(ec);
    auto request = protocol::decode_predict_request(message, encoding);
    if (!request.ok()) {
      stream->async_write(protocol::encode_predict_error(request.error(), encoding), true,
                          [](error_code) {});
      return;
    }
    const json& inputs = request->value;
    const std::string text = inputs.contains("text") && inputs["text"].is_string()
                                 ? inputs["text"].get<std::string>()
                                 : std::string();
    if (text.rfind("fail:", 0) == 0) {
      const Error refused(ErrorCode::kInvalidArgument, text.substr(5));
      stream->async_write(protocol::encode_predict_error(refused, encoding), true,
                          [](error_code) {});
      return;
    }
    if (shape == "unary") {
      stream->async_write(
          answer("outputs", {{"echo", inputs}, {"method", model_method}}, request->parts), true,
          [](error_code) {});
      return;
    }
    // generate
    std::vector<std::string> words;
    std::istringstream prompt(inputs.value("prompt", std::string("one two three")));
    for (std::string word; prompt >> word;) words.push_back(word);
    if (stall_generate_) {
      // An endless generate: a chunk every 20 ms until the control plane cancels the stream.
      auto timer = std::make_shared<boost::asio::steady_timer>(io_->io());
      auto tick = std::make_shared<std::function<void()>>();
      // The function holds itself weakly: only the write or the wait in flight keeps it, so
      // an agent stopped mid-stream leaves no cycle behind.
      *tick = [stream, timer, weak = std::weak_ptr<std::function<void()>>(tick), note_cancel,
               answer] {
        auto tick = weak.lock();
        if (!tick) return;
        stream->async_write(answer("chunk", "tok", {}), false,
                            [stream, timer, tick, note_cancel](error_code write_ec) {
                              if (write_ec) {
                                note_cancel(write_ec);
                                *tick = nullptr;
                                return;
                              }
                              timer->expires_after(std::chrono::milliseconds(20));
                              timer->async_wait([tick](error_code) {
                                if (*tick) (*tick)();
                              });
                            });
      };
      (*tick)();
      return;
    }
    for (size_t i = 0; i < words.size(); ++i) {
      stream->async_write(answer("chunk", words[i], {}), i + 1 == words.size(), [](error_code) {});
    }
    if (words.empty()) stream->close_write();
  });
}

}  // namespace outpost::testing
