#include "controlplane/control_plane.h"

#include <filesystem>
#include <future>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "common/log.h"
#include "common/service_notify.h"
#include "common/worker_binary.h"
#include "controlplane/api/api.h"
#include "controlplane/api/http_server.h"
#include "controlplane/api/url_fetcher.h"
#include "controlplane/auth/auth_throttle.h"
#include "controlplane/auth/authenticator.h"
#include "controlplane/fleet/agent_service.h"
#include "controlplane/fleet/fleet.h"
#include "controlplane/fleet/predict_router.h"
#include "controlplane/metrics.h"
#include "controlplane/resources/model_inspector.h"
#include "controlplane/scaling/scaling.h"
#include "controlplane/state/artifact_store.h"
#include "controlplane/state/store.h"
#include "tunnel/server.h"
#include "tunnel/tls.h"

namespace outpost::control {

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

// When none is found, the inspector's error names where it was expected beside this program.
std::string default_worker_path() {
  return locate_worker_binary().value_or(worker_binary_beside_self());
}

}  // namespace

class ControlPlane::Impl final : public ScalingHost {
 public:
  explicit Impl(ControlConfig config) : config_(std::move(config)) {}

  Status init(const ControlSeams& seams) {
    clock_ = seams.clock != nullptr ? seams.clock : &system_clock_;
    std::error_code ec;
    fs::create_directories(config_.data_dir, ec);
    if (ec) {
      return unavailable("cannot create the data directory " + config_.data_dir + ": " +
                         ec.message());
    }
    fs::permissions(config_.data_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
    temp_dir_ = config_.data_dir + "/tmp";
    fs::remove_all(temp_dir_, ec);  // leftovers of a crash
    fs::create_directories(temp_dir_, ec);
    if (ec) return unavailable("cannot create " + temp_dir_ + ": " + ec.message());
    fs::permissions(temp_dir_, fs::perms::owner_all, fs::perm_options::replace, ec);
    OUTPOST_ASSIGN_OR_RETURN(store_, Store::open(config_.data_dir + "/outpost.db", *clock_));
    OUTPOST_ASSIGN_OR_RETURN(auto artifacts,
                             ArtifactStore::create(config_.data_dir + "/artifacts"));
    artifacts_ = std::make_unique<ArtifactStore>(std::move(artifacts));
    auth_throttle_ = std::make_unique<AuthThrottle>(
        AuthThrottleOptions{config_.auth_max_failures, config_.auth_window_seconds}, *clock_);
    // Windows that went over their budget before a restart still hold.
    auto kept = store_->list_throttle_windows(clock_->now_seconds() - config_.auth_window_seconds);
    if (kept.ok()) {
      for (const auto& window : *kept) {
        auth_throttle_->restore(window.source, window.start, window.failures);
      }
    } else {
      LOG_WARNING("control.auth_throttle_unread",
                  "the kept throttle windows cannot be read: " << kept.error().message());
    }
    auth_throttle_->set_keeper(
        [store = store_.get()](const std::string& source, int64_t start, int failures) {
          if (auto kept = store->save_throttle_window({source, start, failures}); !kept.ok()) {
            LOG_WARNING("control.auth_throttle_unsaved",
                        "a throttle window cannot be kept: " << kept.error().message());
          }
        });
    auth_ = std::make_unique<Authenticator>(*store_, *clock_, auth_throttle_.get());
    OUTPOST_RETURN_IF_ERROR(bootstrap_admin());

    pool_ = std::make_unique<asio::thread_pool>(static_cast<size_t>(config_.blocking_threads));
    // Calls go one way: the agent service calls the router and the autoscaler, the router calls
    // the autoscaler, and the autoscaler reaches the other two only through ScalingHost, which
    // this class implements.
    ScalingOptions scaling;
    scaling.target_ongoing_requests = config_.target_ongoing_requests;
    scaling.node_offline_grace_seconds = config_.node_offline_grace_seconds;
    scaling_ = std::make_unique<Scaling>(*store_, fleet_, *clock_, scaling, *this, metrics_);
    RouterOptions routing;
    routing.max_ongoing_per_replica = config_.max_ongoing_per_replica;
    routing.hold_timeout = std::chrono::seconds(config_.cold_start_timeout_seconds);
    routing.max_held_per_deployment = static_cast<size_t>(config_.max_held_requests);
    router_ =
        std::make_unique<PredictRouter>(*store_, fleet_, *scaling_, pool_->get_executor(), routing);
    agents_ = std::make_shared<AgentService>(*store_, fleet_, *artifacts_, *clock_, *scaling_,
                                             *router_, auth_throttle_.get(), pool_->get_executor());
    inspector_ = std::make_unique<ModelInspector>(
        config_.worker_path.empty() ? default_worker_path() : config_.worker_path,
        std::chrono::seconds(config_.inspect_timeout_seconds));
    UrlFetchOptions fetch;
    fetch.allow_private_addresses = config_.url_allow_private;
    fetch.max_bytes = config_.url_max_bytes;
    fetch.timeout = std::chrono::seconds(config_.url_timeout_seconds);
    fetch.ca_file = config_.url_ca_file;
    fetcher_ = std::make_unique<UrlFetcher>(*io_, fetch);

    OUTPOST_ASSIGN_OR_RETURN(
        auto tls, tunnel::make_server_tls_context(config_.tls_cert_file, config_.tls_key_file));
    tunnel::ServerOptions tunnel_options;
    tunnel_options.connection.local_id = "outpost-control";
    tunnel_options.connection.ping_interval =
        std::chrono::seconds(config_.tunnel_keepalive_seconds);
    tunnel_options.connection.dead_after = std::chrono::seconds(config_.tunnel_dead_after_seconds);
    tunnel_ = tunnel::TunnelServer::create(*io_, tls, tunnel_options, agents_->handlers());
    agents_->set_tunnel(tunnel_);
    router_->set_tunnel(tunnel_);

    ApiServices services;
    services.config = &config_;
    services.store = store_.get();
    services.auth = auth_.get();
    services.fleet = &fleet_;
    services.agents = agents_;
    services.router = router_.get();
    services.scaling = scaling_.get();
    services.metrics = &metrics_;
    services.artifacts = artifacts_.get();
    services.inspector = inspector_.get();
    services.fetcher = fetcher_.get();
    services.clock = clock_;
    services.io = io_.get();
    services.pool = pool_->get_executor();
    services.temp_dir = temp_dir_;
    api_ = std::make_shared<Api>(std::move(services));
    HttpServerOptions http_options;
    http_options.temp_dir = temp_dir_;
    http_options.websocket_message_limit = config_.max_request_bytes;
    http_options.max_connections = config_.max_connections;
    http_options.max_connections_per_address = config_.max_connections_per_address;
    http_options.max_body_memory_bytes = config_.max_body_memory_bytes;
    http_options.max_body_disk_bytes = config_.max_body_disk_bytes;
    http_options.body_idle_timeout = std::chrono::seconds(config_.body_idle_timeout_seconds);
    http_options.body_min_bytes_per_second = config_.body_min_bytes_per_second;
    http_ = HttpServer::create(*io_, tls, http_options, api_->handlers(), tunnel_);
    LOG_INFO("control.started", "state in " << config_.data_dir << " (schema version "
                                            << store_->schema_version() << "), model inspection by "
                                            << inspector_->worker_path());
    return {};
  }

  Result<uint16_t> start() {
    OUTPOST_ASSIGN_OR_RETURN(const uint16_t port,
                             http_->listen(config_.listen_address, config_.listen_port));
    for (int i = 0; i < config_.io_threads; ++i) {
      threads_.emplace_back([this] { io_->run(); });
    }
    LOG_NOTICE("control.listening", "serving the API and agents' tunnels on https://"
                                        << config_.listen_address << ":" << port);
    if (!config_.metrics_address.empty()) {
      OUTPOST_ASSIGN_OR_RETURN(metrics_port_,
                               metrics_.listen(config_.metrics_address, config_.metrics_port));
      LOG_NOTICE("control.metrics_listening", "serving Prometheus metrics on http://"
                                                  << config_.metrics_address << ":" << metrics_port_
                                                  << "/metrics");
    }
    scaling_timer_ = std::make_unique<asio::steady_timer>(*io_);
    arm_scaling();
    notifier_.ready();
    notifier_.status("serving on port " + std::to_string(port));
    if (notifier_.watchdog_interval().count() > 0) {
      watchdog_ = std::make_unique<asio::steady_timer>(*io_);
      arm_watchdog();
    }
    return port;
  }

  void stop() {
    if (stopped_) return;
    stopped_ = true;
    notifier_.stopping();
    if (watchdog_) {
      asio::post(*io_, [this] { watchdog_->cancel(); });
    }
    if (scaling_timer_) {
      asio::post(*io_, [this] { scaling_timer_->cancel(); });
    }
    if (http_) http_->stop();
    if (!threads_.empty() && tunnel_) {
      // Shared: the callback may come after the wait gave up.
      auto drained = std::make_shared<std::promise<void>>();
      auto done = drained->get_future();
      tunnel_->shutdown(std::chrono::milliseconds(1000), [drained] { drained->set_value(); });
      done.wait_for(std::chrono::seconds(5));
    }
    work_.reset();
    io_->stop();
    for (auto& thread : threads_) thread.join();
    threads_.clear();
    if (pool_) pool_->join();
  }

  ~Impl() override {
    stop();
    // Objects that own sockets and timers go before the io_context; the io_context goes (and
    // with it the handlers still queued, which may hold calls in flight) before what those
    // handlers point to: the fleet, the store.
    watchdog_.reset();
    scaling_timer_.reset();
    http_.reset();
    api_.reset();
    if (agents_) agents_->set_tunnel(nullptr);
    if (router_) router_->set_tunnel(nullptr);
    tunnel_.reset();
    fetcher_.reset();
    io_.reset();
  }

  const std::string& admin_token() const { return admin_token_; }
  uint16_t metrics_port() const { return metrics_port_; }

  // ScalingHost: the autoscaler's questions and events, answered by the agent service and the
  // router (both made before the first tick).
  bool node_online(const std::string& node_id) override { return agents_->online(node_id); }
  void counts_changed(const std::string& user_id) override { agents_->reschedule(user_id); }
  size_t held_requests(const std::string& user_id, const std::string& deployment_id) override {
    return router_->held(user_id, deployment_id);
  }
  void tick_passed() override { router_->expire_held(); }

 private:
  // The autoscaler's tick, once a second on the pool; a slow pass delays the next one rather
  // than running beside it.
  void arm_scaling() {
    scaling_timer_->expires_after(std::chrono::seconds(1));
    scaling_timer_->async_wait([this](boost::system::error_code ec) {
      if (ec || stopped_) return;
      asio::post(*pool_, [this] {
        if (stopped_) return;
        scaling_->tick();
        int64_t agents = 0;
        for (const auto& identity : tunnel_->identities()) {
          agents += identity.rfind(kEnrollIdentityPrefix, 0) != 0;
        }
        metrics_.set_connected_agents(agents);
        asio::post(*io_, [this] {
          if (!stopped_) arm_scaling();
        });
      });
    });
  }

  // A ping goes out only when a timer on the event loop fired and a task on the blocking pool
  // ran: a wedged loop or a pool stuck on every thread stops the pings, and systemd restarts us.
  void arm_watchdog() {
    watchdog_->expires_after(notifier_.watchdog_interval());
    watchdog_->async_wait([this](boost::system::error_code ec) {
      if (ec || stopped_) return;
      asio::post(*pool_, [this] { notifier_.watchdog(); });
      arm_watchdog();
    });
  }

  Status bootstrap_admin() {
    OUTPOST_ASSIGN_OR_RETURN(const int64_t users, store_->count_users());
    if (users > 0) return {};
    OUTPOST_RETURN_IF_ERROR(store_->create_user(config_.admin_user, /*is_admin=*/true));
    OUTPOST_ASSIGN_OR_RETURN(auto key,
                             auth_->create_key(config_.admin_user, all_scopes(),
                                               "admin key made at the first start", std::nullopt));
    admin_token_ = key.token;
    LOG_NOTICE("control.admin_created",
               "created the administrator '" << config_.admin_user << "' and its first key");
    return {};
  }

  ControlConfig config_;
  SystemWallClock system_clock_;
  const WallClock* clock_ = nullptr;
  std::string temp_dir_;
  std::unique_ptr<asio::io_context> io_ = std::make_unique<asio::io_context>();
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(*io_);
  std::unique_ptr<asio::thread_pool> pool_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<AuthThrottle> auth_throttle_;
  std::unique_ptr<Authenticator> auth_;
  Fleet fleet_;
  std::shared_ptr<AgentService> agents_;
  ControlMetrics metrics_;
  uint16_t metrics_port_ = 0;
  std::unique_ptr<PredictRouter> router_;
  std::unique_ptr<Scaling> scaling_;
  std::unique_ptr<asio::steady_timer> scaling_timer_;
  std::unique_ptr<ModelInspector> inspector_;
  std::unique_ptr<UrlFetcher> fetcher_;
  std::shared_ptr<tunnel::TunnelServer> tunnel_;
  std::shared_ptr<Api> api_;
  std::shared_ptr<HttpServer> http_;
  std::vector<std::thread> threads_;
  std::string admin_token_;
  std::atomic<bool> stopped_{false};
  ServiceNotifier notifier_;
  std::unique_ptr<asio::steady_timer> watchdog_;
};

ControlPlane::ControlPlane(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlPlane::~ControlPlane() = default;

Result<std::unique_ptr<ControlPlane>> ControlPlane::create(ControlConfig config,
                                                           ControlSeams seams) {
  auto impl = std::make_unique<Impl>(std::move(config));
  OUTPOST_RETURN_IF_ERROR(impl->init(seams));
  return std::unique_ptr<ControlPlane>(new ControlPlane(std::move(impl)));
}

Result<uint16_t> ControlPlane::start() { return impl_->start(); }
void ControlPlane::stop() { impl_->stop(); }
const std::string& ControlPlane::initial_admin_token() const { return impl_->admin_token(); }
uint16_t ControlPlane::metrics_port() const { return impl_->metrics_port(); }

}  // namespace outpost::control
