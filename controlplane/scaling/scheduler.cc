#include "controlplane/scaling/scheduler.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <set>
#include <sstream>

#include "common/quantity.h"

namespace outpost::control {

using nlohmann::json;

namespace {

// The first of `keys` that info holds, as a quantity (checked when the config was stored):
// cores, or bytes. 0 when none is there.
double quantity_of(const json& info, std::initializer_list<const char*> keys, bool cores) {
  for (const char* key : keys) {
    const auto it = info.find(key);
    if (it == info.end() || !(it->is_string() || it->is_number())) continue;
    const std::string text = it->is_string() ? it->get<std::string>() : it->dump();
    if (cores) {
      if (auto millicores = parse_cpu_quantity(text, key); millicores.ok()) {
        return static_cast<double>(*millicores) / 1000;
      }
    } else if (auto bytes = parse_memory_quantity(text, key); bytes.ok()) {
      return static_cast<double>(*bytes);
    }
  }
  return 0;
}

std::string number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

std::string gib(double bytes) {
  std::ostringstream out;
  out.precision(bytes >= 10.0 * (1 << 30) ? 0 : 2);
  out << std::fixed << bytes / (1 << 30) << " GiB";
  return out.str();
}

// What is left of one node while replicas are placed on it.
class NodeLoad {
 public:
  explicit NodeLoad(const SchedulerNode& node)
      : node_(&node),
        accelerator_free_(node.accelerator_memory),
        accelerator_used_(node.accelerator_memory.size(), 0) {}

  const SchedulerNode& node() const { return *node_; }

  // The accelerators the replica would take, or why it does not fit.
  std::optional<std::vector<size_t>> fit(const SchedulerDeployment& d, std::string& why) const {
    const ReplicaShape& shape = d.shape;
    if (node_->cpu_cores > 0 && cores_ + shape.cpu_cores > node_->cpu_cores + 1e-9) {
      why = "needs " + number(shape.cpu_cores) + " cores, " +
            number(std::max(0.0, node_->cpu_cores - cores_)) + " free";
      return std::nullopt;
    }
    if (node_->memory_bytes > 0 && memory_ + shape.memory_bytes > node_->memory_bytes) {
      why = "needs " + gib(shape.memory_bytes) + " of memory, " +
            gib(std::max(0.0, node_->memory_bytes - memory_)) + " free";
      return std::nullopt;
    }
    std::vector<size_t> chosen;
    if (shape.accelerators == 0) {
      // The CPU "device": a disable_packing replica holds it alone.
      if (cpu_exclusive_ || (d.disable_packing && cpu_replicas_ > 0)) {
        why = "its CPU is held by a replica with disable_packing";
        return std::nullopt;
      }
      return chosen;
    }
    // Accelerators that can take it, tightest first.
    std::vector<size_t> candidates;
    for (size_t i = 0; i < accelerator_free_.size(); ++i) {
      if (exclusive_.count(i) > 0) continue;
      if (d.disable_packing && accelerator_used_[i] > 0) continue;
      const bool known = node_->accelerator_memory[i] > 0;
      if (known && accelerator_free_[i] < shape.accelerator_memory) continue;
      candidates.push_back(i);
    }
    if (candidates.size() < static_cast<size_t>(shape.accelerators)) {
      if (accelerator_free_.empty()) {
        why = "has no accelerator";
      } else {
        why = "needs " + std::to_string(shape.accelerators) + " accelerator(s) with " +
              gib(shape.accelerator_memory) + (d.disable_packing ? " and nothing else" : "") +
              " free, " + std::to_string(candidates.size()) + " of " +
              std::to_string(accelerator_free_.size()) + " qualify";
      }
      return std::nullopt;
    }
    std::stable_sort(candidates.begin(), candidates.end(), [this](size_t a, size_t b) {
      return accelerator_free_[a] < accelerator_free_[b];
    });
    candidates.resize(static_cast<size_t>(shape.accelerators));
    return candidates;
  }

  void place(const SchedulerDeployment& d, const std::vector<size_t>& accelerators) {
    const ReplicaShape& shape = d.shape;
    cores_ += shape.cpu_cores;
    memory_ += shape.memory_bytes;
    if (shape.accelerators == 0) {
      ++cpu_replicas_;
      if (d.disable_packing) cpu_exclusive_ = true;
    }
    for (const size_t i : accelerators) {
      accelerator_free_[i] -= shape.accelerator_memory;
      ++accelerator_used_[i];
      if (d.disable_packing) exclusive_.insert(i);
    }
    deployments_.insert(d.id);
  }

  // How much of the resource the replica mostly uses is left after placing it: smaller is a
  // tighter fit. Unknown capacities count as plenty.
  double slack_after(const SchedulerDeployment& d, const std::vector<size_t>& accelerators) const {
    if (!accelerators.empty()) {
      double slack = 0;
      for (const size_t i : accelerators) {
        slack += node_->accelerator_memory[i] > 0
                     ? accelerator_free_[i] - d.shape.accelerator_memory
                     : 1e18;
      }
      return slack;
    }
    if (node_->memory_bytes > 0) return node_->memory_bytes - memory_ - d.shape.memory_bytes;
    if (node_->cpu_cores > 0) return (node_->cpu_cores - cores_ - d.shape.cpu_cores) * 1e9;
    return 1e18;
  }

  bool holds(const std::string& deployment_id) const {
    return deployments_.count(deployment_id) > 0;
  }
  bool empty() const { return deployments_.empty(); }

 private:
  const SchedulerNode* node_;
  double cores_ = 0;
  double memory_ = 0;
  int cpu_replicas_ = 0;
  bool cpu_exclusive_ = false;
  std::vector<double> accelerator_free_;
  std::vector<int> accelerator_used_;
  std::set<size_t> exclusive_;
  std::set<std::string> deployments_;
};

// Larger replicas first (best-fit decreasing): accelerators, their memory, host memory, cores.
bool larger(const ReplicaShape& a, const ReplicaShape& b) {
  return std::make_tuple(a.accelerators, a.accelerator_memory, a.memory_bytes, a.cpu_cores) >
         std::make_tuple(b.accelerators, b.accelerator_memory, b.memory_bytes, b.cpu_cores);
}

}  // namespace

ReplicaShape replica_shape(const json& info) {
  ReplicaShape shape;
  if (!info.is_object()) return shape;
  // Cores reserve by request only: cpu_limit caps a worker's threads, it reserves nothing
  // (as in Kubernetes), and models commonly ask for a whole core they use a sliver of.
  shape.cpu_cores = quantity_of(info, {"cpu_requests"}, true);
  shape.memory_bytes = quantity_of(info, {"cpu_memory_requests", "cpu_memory"}, false);
  shape.accelerators = std::max<int64_t>(0, info.value("num_accelerators", int64_t{0}));
  // Per accelerator, as the agent reads it too.
  if (shape.accelerators > 0) {
    shape.accelerator_memory = quantity_of(info, {"accelerator_memory"}, false);
  }
  return shape;
}

SchedulerNode scheduler_node(const Node& node, bool usable) {
  SchedulerNode out;
  out.id = node.id;
  out.nodepool_id = node.nodepool_id;
  out.usable = usable;
  const json& inventory = node.inventory;
  if (!inventory.is_object()) return out;
  if (const auto it = inventory.find("cpu_cores"); it != inventory.end() && it->is_number()) {
    out.cpu_cores = it->get<double>();
  }
  if (const auto it = inventory.find("memory_bytes"); it != inventory.end() && it->is_number()) {
    out.memory_bytes = it->get<double>();
  }
  if (const auto it = inventory.find("gpus"); it != inventory.end() && it->is_array()) {
    for (const auto& gpu : *it) {
      const auto memory = gpu.is_object() ? gpu.find("memory_bytes") : gpu.end();
      out.accelerator_memory.push_back(gpu.is_object() && memory != gpu.end() && memory->is_number()
                                           ? memory->get<double>()
                                           : 0.0);
    }
  }
  return out;
}

ScheduleResult schedule(const std::string& user_id,
                        const std::vector<SchedulerDeployment>& deployments,
                        const std::vector<SchedulerNode>& nodes,
                        const std::vector<Replica>& current) {
  std::vector<NodeLoad> loads;
  loads.reserve(nodes.size());
  for (const auto& node : nodes) loads.emplace_back(node);
  std::sort(loads.begin(), loads.end(),
            [](const NodeLoad& a, const NodeLoad& b) { return a.node().id < b.node().id; });
  const auto load_of = [&loads](const std::string& id) -> NodeLoad* {
    for (auto& load : loads) {
      if (load.node().id == id) return &load;
    }
    return nullptr;
  };
  std::map<std::string, const Replica*> existing;
  for (const auto& replica : current) existing[replica.id] = &replica;

  std::vector<const SchedulerDeployment*> order;
  order.reserve(deployments.size());
  for (const auto& deployment : deployments) order.push_back(&deployment);
  // Larger replicas first, so that smaller ones fill the gaps; ties by id, for stability.
  std::sort(order.begin(), order.end(),
            [](const SchedulerDeployment* a, const SchedulerDeployment* b) {
              if (larger(a->shape, b->shape)) return true;
              if (larger(b->shape, a->shape)) return false;
              return a->id < b->id;
            });

  ScheduleResult out;
  std::vector<std::pair<const SchedulerDeployment*, Replica>> unplaced;
  // First keep what still fits where it is.
  for (const auto* deployment : order) {
    for (const auto& pool : deployment->nodepool_ids) {
      const auto wanted = deployment->replicas.find(pool);
      const int64_t want = wanted == deployment->replicas.end() ? 0 : wanted->second;
      for (int64_t index = 0; index < want; ++index) {
        Replica replica{user_id, deployment->id + "/" + pool + "/" + std::to_string(index),
                        deployment->id, pool, ""};
        const auto it = existing.find(replica.id);
        if (it != existing.end()) {
          NodeLoad* load = load_of(it->second->node_id);
          std::string why;
          if (load != nullptr && load->node().usable && load->node().nodepool_id == pool) {
            if (auto accelerators = load->fit(*deployment, why)) {
              load->place(*deployment, *accelerators);
              replica.node_id = it->second->node_id;
              out.replicas.push_back(replica);
              continue;
            }
          }
        }
        unplaced.emplace_back(deployment, std::move(replica));
      }
    }
  }
  // Then the rest: best fit, on nodes without a replica of the same deployment first.
  std::map<std::pair<std::string, std::string>, UnplacedReplicas> failed;
  for (auto& entry : unplaced) {
    const SchedulerDeployment& deployment = *entry.first;
    Replica& replica = entry.second;
    NodeLoad* best = nullptr;
    std::vector<size_t> best_accelerators;
    std::tuple<bool, bool, double> best_score;
    size_t in_pool = 0;
    size_t usable = 0;
    std::string reasons;
    for (auto& load : loads) {
      if (load.node().nodepool_id != replica.nodepool_id) continue;
      ++in_pool;
      if (!load.node().usable) continue;
      ++usable;
      std::string why;
      auto accelerators = load.fit(deployment, why);
      if (!accelerators) {
        if (reasons.size() < 300) {
          reasons += (reasons.empty() ? "" : "; ") + load.node().id + " " + why;
        }
        continue;
      }
      // Prefer: no replica of this deployment yet, a node already in use (packing), then the
      // tightest fit.
      auto score = std::make_tuple(load.holds(deployment.id), load.empty(),
                                   load.slack_after(deployment, *accelerators));
      if (best == nullptr || score < best_score) {
        best = &load;
        best_accelerators = std::move(*accelerators);
        best_score = score;
      }
    }
    if (best != nullptr) {
      best->place(deployment, best_accelerators);
      replica.node_id = best->node().id;
      out.replicas.push_back(replica);
      continue;
    }
    auto& record = failed[{deployment.id, replica.nodepool_id}];
    record.deployment_id = deployment.id;
    record.nodepool_id = replica.nodepool_id;
    ++record.count;
    if (in_pool == 0) {
      record.reason = "no node is enrolled in nodepool " + replica.nodepool_id +
                      " (enroll one with `outpost nodepool join-token`)";
    } else if (usable == 0) {
      record.reason = "every node of nodepool " + replica.nodepool_id + " is offline";
    } else {
      record.reason = "no node of nodepool " + replica.nodepool_id + " has room: " + reasons;
    }
  }
  for (auto& [key, record] : failed) out.unplaced.push_back(std::move(record));
  std::sort(out.replicas.begin(), out.replicas.end(),
            [](const Replica& a, const Replica& b) { return a.id < b.id; });
  return out;
}

}  // namespace outpost::control
