// Predict streams -> replicas (docs/control-protocol.md, "predict").
//
// The router runs on the I/O threads and never waits on the reconciler: it reads a table of the
// ready replicas that the reconciler publishes whenever a replica's state changes. A stream goes
// to the ready replica of its deployment with the fewest requests in flight (the control plane's
// replica hint breaks a tie). Limits: at most workers.max_streams predict streams at once, at
// most workers.max_inflight_per_replica on one replica; past either, the caller gets
// resource_exhausted with the limit named. A deployment with no ready replica here is refused
// (RST_STREAM refused), so that the control plane opens the call on another node. Cancellation
// crosses both ways: a RESET from the control plane cancels the worker call between steps, and a
// call that fails ends the stream with an error document.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "protocol/worker_client.h"
#include "tunnel/connection.h"

namespace outpost::agent {

class Router {
 public:
  struct Limits {
    int max_streams = 0;               // workers.max_streams
    int max_inflight_per_replica = 0;  // workers.max_inflight_per_replica
  };
  // A ready replica and the client of the worker that holds it.
  struct Target {
    std::string replica_id;
    std::string deployment_id;
    std::shared_ptr<protocol::WorkerClient> client;
  };
  // One call's places: a stream and a request on its replica, held until it is destroyed.
  class Lease {
   public:
    Lease(std::shared_ptr<std::atomic<int>> streams, std::shared_ptr<std::atomic<int>> replica)
        : streams_(std::move(streams)), replica_(std::move(replica)) {}
    ~Lease() {
      replica_->fetch_sub(1);
      streams_->fetch_sub(1);
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

   private:
    std::shared_ptr<std::atomic<int>> streams_;
    std::shared_ptr<std::atomic<int>> replica_;
  };
  struct Admission {
    Target target;
    std::unique_ptr<Lease> lease;
  };

  explicit Router(Limits limits);
  void set_limits(Limits limits);

  // The ready replicas, replacing the previous table.
  void publish(std::vector<Target> ready);

  // Chooses the replica for one call of `deployment` and takes its places. unavailable when no
  // replica of it is ready here; resource_exhausted, naming the limit, past a limit.
  Result<Admission> admit(const std::string& deployment, const std::string& hint);

  // Runs one predict stream from the control plane: admission, then the worker call.
  void route(const std::shared_ptr<tunnel::Stream>& stream, const nlohmann::json& metadata);

  int open_streams() const { return open_streams_->load(); }
  // Requests in flight on a replica (a replica no longer published keeps its count until its
  // last call ends, so that the reconciler unloads it only then).
  int inflight(const std::string& replica_id) const;

 private:
  std::atomic<int> max_streams_;
  std::atomic<int> max_inflight_per_replica_;
  const std::shared_ptr<std::atomic<int>> open_streams_ = std::make_shared<std::atomic<int>>(0);

  mutable std::mutex mutex_;
  std::vector<Target> ready_;
  std::map<std::string, std::shared_ptr<std::atomic<int>>> inflight_;  // replica id -> count
};

}  // namespace outpost::agent
