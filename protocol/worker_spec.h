// The worker spec (docs/worker-protocol.md, "Starting a worker"): what one outpost-worker process
// serves and how: its ZeroMQ endpoint, its device and slice, its threads, its limits, and the
// models to load at start. The agent writes it as JSON; a person may write YAML.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "protocol/worker_protocol.h"

namespace outpost::protocol {

// How the worker shares its device (docs/architecture.md, "Placement, slicing, scaling").
struct SliceSpec {
  // none: the whole device; fraction: the caching allocator is capped at `fraction` of the
  // device's memory (soft); mps: CUDA MPS limits through the process environment; mig: the
  // device is a MIG instance (the agent sets CUDA_VISIBLE_DEVICES); timeslice: shared, no limits.
  std::string mode = "none";
  double fraction = 1.0;
  int64_t mps_thread_percentage = 0;  // 1..100; 0 = leave as is
  std::string mps_memory_limit;       // e.g. "4G" (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT's syntax)
};

struct ModelSpec {
  std::string name;                   // the name calls use; defaults to the package's model id
  std::string package;                // folder holding config.yaml and the model file
  int64_t instances = 0;              // 0 = config.yaml's
  std::optional<std::string> sha256;  // expected model file hash and size (from the agent)
  std::optional<uint64_t> size;
};

struct WorkerSpec {
  std::string worker_id = "worker";
  std::string endpoint;        // ipc://PATH (bound by the worker)
  std::string device = "cpu";  // cpu, cuda or cuda:N
  SliceSpec slice;
  int64_t intra_op_threads = 0;  // 0 = the number of CPUs this process may use
  int64_t inter_op_threads = 1;
  int64_t device_concurrency = 1;  // executions at once on the device, across models
  Limits limits;
  std::vector<ModelSpec> models;

  // "cpu" or "cuda"; the CUDA device index.
  bool is_cuda() const;
  int64_t device_index() const;
};

// Parses a spec from YAML or JSON text, checking every field.
Result<WorkerSpec> parse_worker_spec(std::string_view text);
nlohmann::json worker_spec_to_json(const WorkerSpec& spec);

// Environment variables a worker process needs for its slice (CUDA MPS), as NAME=VALUE.
std::vector<std::string> slice_environment(const WorkerSpec& spec);

// Checks an endpoint: ipc:// with an absolute path that fits in a Unix socket address.
Status check_ipc_endpoint(std::string_view endpoint);

}  // namespace outpost::protocol
