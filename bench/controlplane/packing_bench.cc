// scripts/bench packing: the GPU time a fleet of small models holds when replicas share GPUs
// (packing, the default) against disable_packing (a GPU per replica), in one simulated run.
// Prints one JSON object as its last line.
//
// No processes: the real decisions on simulated time. 40 models, each a replica asking one GPU
// with 1 to 6 GiB of its memory (seeded: the same every run with one C++ library), get a traffic
// trace of ongoing requests every 10 s for 2 hours: steady ones, diurnal ones (a day compressed
// into the run, with a trough near zero) and bursty ones (idle for minutes, then a burst). At each
// step
//  - each model's ReplicaScaler (controlplane/autoscaler.h), with the policy scale_policy() makes
//    of a typical autoscale_config (min 0, max 4, traffic_history 300 s, scale up after 30 s,
//    down after 300 s, to zero after 600 s idle; target 2 ongoing requests per replica), observes
//    the step's requests (a request at zero replicas calls demand(), as the router does) and
//    evaluates;
//  - the control plane's schedule() places every deployment's replicas on the nodes, once with
//    packing and once with disable_packing, each fed its own previous assignment;
//  - on each node, the agent's place() (agent/placement.h) puts that node's replicas on its GPUs,
//    incrementally from its previous placement, as outpostd does.
// A GPU holding at least one replica counts for the step: device-seconds = the sum over steps of
// GPUs in use times 10 s. packing_saving_ratio = device-seconds with disable_packing / with
// packing. The fleet comes from an inventory file in the agent's format (the default,
// bench/controlplane/packing_inventory.json: 20 nodes of 8 GPUs of 80 GiB; or the path given
// as the only argument). The default has a GPU for every replica the models may ask for (40 x 4),
// so that disable_packing places them all too: where either mode leaves replicas without a GPU,
// the two modes serve different work and the ratio means nothing. Replicas the scheduler could
// not place, and replicas an agent could not put on a device, are counted per mode and reported
// (with a warning when there are any); with the default inventory there are none.
// For reference, device_seconds_packed_fresh counts the GPUs of a placement made from scratch at
// every step (what moving running replicas could save over the agent's incremental placement).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <numbers>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/config.h"
#include "agent/inventory.h"
#include "agent/placement.h"
#include "common/result.h"
#include "controlplane/scaling/autoscaler.h"
#include "controlplane/scaling/scheduler.h"
#include "controlplane/state/store.h"
#include "protocol/control_protocol.h"

namespace {

using namespace outpost;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kSeed = 20240611;
constexpr int kModels = 40;
constexpr double kStepSeconds = 10;
constexpr double kSimulatedSeconds = 2 * 3600;
constexpr double kTargetOngoingRequests = 2;  // the control plane's default
constexpr const char* kUser = "bench";
constexpr const char* kNodepool = "np-gpu";

json autoscale_config() {
  return {{"min_replicas", 0},
          {"max_replicas", 4},
          {"traffic_history_seconds", 300},
          {"scale_up_delay_seconds", 30},
          {"scale_down_delay_seconds", 300},
          {"scale_to_zero_delay_seconds", 600}};
}

enum class Traffic { kSteady, kDiurnal, kBursty };

const char* traffic_name(Traffic traffic) {
  switch (traffic) {
    case Traffic::kSteady:
      return "steady";
    case Traffic::kDiurnal:
      return "diurnal";
    case Traffic::kBursty:
      return "bursty";
  }
  return "?";
}

struct Model {
  std::string id;
  Traffic traffic = Traffic::kSteady;
  int64_t accelerator_gib = 0;
  control::ReplicaShape shape;    // as the scheduler reads inference_compute_info
  protocol::DesiredReplica spec;  // as the agent's desired state carries it (no replica_id yet)
  std::vector<double> ongoing;    // ongoing requests at each step
};

// A Poisson draw; a rate of zero (or less) draws zero.
double draw(std::mt19937& random, double rate) {
  if (rate <= 0) return 0;
  return static_cast<double>(std::poisson_distribution<int>(rate)(random));
}

// Ongoing requests at each step: a rate per step for the traffic kind, then a Poisson draw.
std::vector<double> trace(Traffic traffic, int steps, std::mt19937& random) {
  std::uniform_real_distribution<double> uniform(0, 1);
  std::vector<double> rates(static_cast<size_t>(steps), 0);
  switch (traffic) {
    case Traffic::kSteady: {
      const double rate = 0.3 + 4.7 * uniform(random);
      std::fill(rates.begin(), rates.end(), rate);
      break;
    }
    case Traffic::kDiurnal: {
      // One day compressed into the run: a trough near zero, a peak of 2 to 10.
      const double peak = 2 + 8 * uniform(random);
      const double phase = 2 * std::numbers::pi * uniform(random);
      for (int step = 0; step < steps; ++step) {
        const double t = step * kStepSeconds / kSimulatedSeconds;
        rates[static_cast<size_t>(step)] =
            peak * 0.5 * (1 - std::cos(2 * std::numbers::pi * t + phase));
      }
      break;
    }
    case Traffic::kBursty: {
      // Idle gaps of 20 minutes on average, bursts of 4 minutes of 2 to 12 ongoing requests.
      std::exponential_distribution<double> gap(1.0 / 1200);
      std::exponential_distribution<double> burst(1.0 / 240);
      double at = gap(random) * uniform(random);
      while (at < kSimulatedSeconds) {
        const double length = burst(random);
        const double rate = 2 + 10 * uniform(random);
        for (auto step = static_cast<int>(at / kStepSeconds);
             step < steps && step * kStepSeconds < at + length; ++step) {
          rates[static_cast<size_t>(step)] = rate;
        }
        at += length + gap(random);
      }
      break;
    }
  }
  std::vector<double> ongoing;
  ongoing.reserve(rates.size());
  for (const double rate : rates) ongoing.push_back(draw(random, rate));
  return ongoing;
}

std::vector<Model> make_models(int steps) {
  std::mt19937 random(kSeed);
  std::uniform_int_distribution<int64_t> gib(1, 6);
  std::vector<Model> models;
  for (int i = 0; i < kModels; ++i) {
    Model model;
    char id[16];
    std::snprintf(id, sizeof id, "model-%02d", i);
    model.id = id;
    model.traffic = static_cast<Traffic>(i % 3);
    model.accelerator_gib = gib(random);
    // The model's inference_compute_info, as the scheduler reads it; the agent's spec carries
    // the same quantities in bytes and millicores.
    const json info = {{"cpu_limit", "1"},
                       {"cpu_requests", "1"},
                       {"cpu_memory", std::to_string(2 * model.accelerator_gib) + "Gi"},
                       {"num_accelerators", 1},
                       {"accelerator_memory", std::to_string(model.accelerator_gib) + "Gi"}};
    model.shape = control::replica_shape(info);
    model.spec.deployment_id = model.id;
    model.spec.user_id = kUser;
    model.spec.cpu_millicores = 1000;
    model.spec.memory_bytes = static_cast<uint64_t>(2 * model.accelerator_gib) << 30;
    model.spec.num_accelerators = 1;
    model.spec.accelerator_memory_bytes = static_cast<uint64_t>(model.accelerator_gib) << 30;
    model.ongoing = trace(model.traffic, steps, random);
    models.push_back(std::move(model));
  }
  return models;
}

struct FleetNode {
  control::SchedulerNode offer;        // what the control plane's scheduler sees
  std::vector<agent::Device> devices;  // what the node's agent places on
};

// The inventory file: {"nodes": [{"name": N, "count": C, "inventory": <an agent's inventory>}]}.
Result<std::vector<FleetNode>> load_fleet(const std::string& path) {
  std::ifstream in(path);
  if (!in) return invalid_argument("cannot read the inventory file " + path);
  const json doc = json::parse(in, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("nodes") ||
      !doc["nodes"].is_array()) {
    return invalid_argument(path +
                            ": expected {\"nodes\": [{\"name\", \"count\", \"inventory\"}]}");
  }
  std::vector<FleetNode> fleet;
  for (const auto& group : doc["nodes"]) {
    const std::string name = group.value("name", "node");
    const int count = group.value("count", 1);
    const json inventory_json = group.value("inventory", json::object());
    auto inventory = agent::Inventory::from_json(inventory_json, path + " (" + name + ")");
    if (!inventory.ok()) return inventory.error();
    for (int i = 0; i < count; ++i) {
      control::Node node;
      node.id = name + "-" + std::to_string(i);
      node.nodepool_id = kNodepool;
      node.inventory = inventory_json;
      fleet.push_back({control::scheduler_node(node, true),
                       agent::devices_of(*inventory, agent::AgentConfig{})});
    }
  }
  if (fleet.empty()) return invalid_argument(path + ": no nodes");
  return fleet;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// One way of running the fleet: packing or disable_packing, with its own assignment and its
// nodes' device placements carried from step to step.
class Mode {
 public:
  Mode(bool disable_packing, const std::vector<FleetNode>& fleet)
      : disable_packing_(disable_packing), fleet_(&fleet) {
    for (const auto& node : fleet) offers_.push_back(node.offer);
  }

  void step(const std::vector<Model>& models, const std::vector<int64_t>& replicas) {
    std::vector<control::SchedulerDeployment> deployments;
    std::map<std::string, const Model*> model_of;
    for (size_t i = 0; i < models.size(); ++i) {
      control::SchedulerDeployment deployment;
      deployment.id = models[i].id;
      deployment.nodepool_ids = {kNodepool};
      deployment.replicas[kNodepool] = replicas[i];
      deployment.disable_packing = disable_packing_;
      deployment.shape = models[i].shape;
      deployments.push_back(std::move(deployment));
      model_of[models[i].id] = &models[i];
    }
    const auto started = Clock::now();
    auto result = control::schedule(kUser, deployments, offers_, current_);
    schedule_us_.push_back(
        std::chrono::duration<double, std::micro>(Clock::now() - started).count());
    current_ = std::move(result.replicas);
    for (const auto& unplaced : result.unplaced) {
      unplaced_ += unplaced.count;
      if (first_unplaced_.empty()) first_unplaced_ = unplaced.reason;
    }

    // Each node's agent places that node's replicas on its devices.
    std::map<std::string, std::vector<protocol::DesiredReplica>> on_node;
    for (const auto& replica : current_) {
      protocol::DesiredReplica spec = model_of.at(replica.deployment_id)->spec;
      spec.replica_id = replica.id;
      spec.disable_packing = disable_packing_;
      on_node[replica.node_id].push_back(std::move(spec));
    }
    int64_t gpus = 0;
    int64_t fresh_gpus = 0;
    for (const auto& node : *fleet_) {
      const auto specs = on_node.find(node.offer.id);
      if (specs == on_node.end()) {
        placements_.erase(node.offer.id);
        continue;
      }
      agent::Placement& previous = placements_[node.offer.id];
      std::set<std::string> running;
      for (const auto& worker : previous.workers) running.insert(worker.worker_id);
      agent::Placement placement = agent::place(node.devices, specs->second, previous);
      agent::cap_workers(placement, static_cast<size_t>(agent::AgentConfig{}.max_workers), running);
      agent_unplaced_ += static_cast<int64_t>(placement.unplaced.size());
      gpus += gpus_in_use(node.devices, placement);
      fresh_gpus += gpus_in_use(node.devices, agent::place(node.devices, specs->second, {}));
      previous = std::move(placement);
    }
    device_seconds_ += static_cast<double>(gpus) * kStepSeconds;
    fresh_device_seconds_ += static_cast<double>(fresh_gpus) * kStepSeconds;
    gpus_sum_ += gpus;
    peak_gpus_ = std::max(peak_gpus_, gpus);
    ++steps_;
  }

  double device_seconds() const { return device_seconds_; }
  double fresh_device_seconds() const { return fresh_device_seconds_; }
  double mean_gpus() const {
    return steps_ == 0 ? 0 : static_cast<double>(gpus_sum_) / static_cast<double>(steps_);
  }
  int64_t peak_gpus() const { return peak_gpus_; }
  int64_t unplaced_replica_steps() const { return unplaced_; }
  int64_t agent_unplaced_replica_steps() const { return agent_unplaced_; }
  const std::string& first_unplaced_reason() const { return first_unplaced_; }
  double schedule_us_p50() const { return median(schedule_us_); }

 private:
  // GPUs (whole GPUs: a MIG instance counts its GPU) that hold at least one replica.
  static int64_t gpus_in_use(const std::vector<agent::Device>& devices,
                             const agent::Placement& placement) {
    std::set<int> used;
    for (const auto& [replica, device_id] : placement.device_of) {
      for (const auto& device : devices) {
        if (device.id == device_id && device.gpu_index >= 0) used.insert(device.gpu_index);
      }
    }
    return static_cast<int64_t>(used.size());
  }

  bool disable_packing_;
  const std::vector<FleetNode>* fleet_;
  std::vector<control::SchedulerNode> offers_;
  std::vector<control::Replica> current_;
  std::map<std::string, agent::Placement> placements_;  // node -> its agent's last placement
  double device_seconds_ = 0;
  double fresh_device_seconds_ = 0;
  int64_t gpus_sum_ = 0;
  int64_t peak_gpus_ = 0;
  int64_t steps_ = 0;
  int64_t unplaced_ = 0;
  int64_t agent_unplaced_ = 0;
  std::string first_unplaced_;
  std::vector<double> schedule_us_;
};

}  // namespace

int main(int argc, char** argv) {
  const auto started = Clock::now();
  const std::string inventory_path = argc > 1 ? argv[1] : OUTPOST_PACKING_INVENTORY;
  auto fleet = load_fleet(inventory_path);
  if (!fleet.ok()) {
    std::fprintf(stderr, "%s\n", fleet.error().to_string().c_str());
    return 1;
  }
  size_t gpu_count = 0;
  for (const auto& node : *fleet) gpu_count += node.offer.accelerator_memory.size();
  const int steps = static_cast<int>(kSimulatedSeconds / kStepSeconds);
  const std::vector<Model> models = make_models(steps);

  const control::ScalePolicy policy =
      control::scale_policy(autoscale_config(), kTargetOngoingRequests);
  std::vector<control::ReplicaScaler> scalers;
  scalers.reserve(models.size());
  for (size_t i = 0; i < models.size(); ++i) {
    scalers.emplace_back(policy, control::initial_replicas(policy), 0.0);
  }

  std::map<std::string, int> mix;
  double accelerator_gib = 0;
  for (const auto& model : models) {
    ++mix[traffic_name(model.traffic)];
    accelerator_gib += static_cast<double>(model.accelerator_gib);
  }
  std::printf("fleet: %zu nodes, %zu GPUs (%s)\n", fleet->size(), gpu_count,
              inventory_path.c_str());
  std::printf(
      "models: %d (%d steady, %d diurnal, %d bursty), 1 GPU each with 1-6 GiB of its memory "
      "(%.0f GiB together), seed %u\n",
      kModels, mix["steady"], mix["diurnal"], mix["bursty"], accelerator_gib, kSeed);
  std::printf("autoscale_config: %s, target %.0f ongoing requests per replica\n",
              autoscale_config().dump().c_str(), kTargetOngoingRequests);

  Mode packed(false, *fleet);
  Mode unpacked(true, *fleet);
  std::vector<int64_t> replicas(models.size(), 0);
  int64_t replica_steps = 0;
  int64_t peak_replicas = 0;
  int64_t scale_changes = 0;  // cold starts included
  int64_t cold_starts = 0;
  for (int step = 0; step < steps; ++step) {
    const double now = step * kStepSeconds;
    int64_t total = 0;
    for (size_t i = 0; i < models.size(); ++i) {
      control::ReplicaScaler& scaler = scalers[i];
      const double ongoing = models[i].ongoing[static_cast<size_t>(step)];
      if (ongoing > 0 && scaler.replicas() == 0 && scaler.demand(now)) {
        ++cold_starts;
        ++scale_changes;
      }
      scaler.observe(now, ongoing);
      if (scaler.evaluate(now)) ++scale_changes;
      replicas[i] = scaler.replicas();
      total += replicas[i];
    }
    replica_steps += total;
    peak_replicas = std::max(peak_replicas, total);
    packed.step(models, replicas);
    unpacked.step(models, replicas);
  }

  const auto report = [](const char* name, const Mode& mode) {
    std::printf(
        "%-16s GPUs in use: mean %.1f, peak %lld; %.0f device-seconds; unplaced replica-steps: "
        "%lld by the scheduler, %lld by the agents; schedule() p50 %.0f us\n",
        name, mode.mean_gpus(), static_cast<long long>(mode.peak_gpus()), mode.device_seconds(),
        static_cast<long long>(mode.unplaced_replica_steps()),
        static_cast<long long>(mode.agent_unplaced_replica_steps()), mode.schedule_us_p50());
    if (!mode.first_unplaced_reason().empty()) {
      std::printf("%-16s first unplaced: %s\n", "", mode.first_unplaced_reason().c_str());
    }
  };
  std::printf(
      "trace: %d steps of %.0f s (%.1f h); replicas: mean %.1f, peak %lld; %lld scaling "
      "changes, %lld cold starts\n",
      steps, kStepSeconds, kSimulatedSeconds / 3600, static_cast<double>(replica_steps) / steps,
      static_cast<long long>(peak_replicas), static_cast<long long>(scale_changes),
      static_cast<long long>(cold_starts));
  report("packing", packed);
  report("disable_packing", unpacked);
  for (const Mode* mode : {&packed, &unpacked}) {
    if (mode->unplaced_replica_steps() + mode->agent_unplaced_replica_steps() > 0) {
      std::printf(
          "warning: replicas went without a GPU, so the modes served different work and "
          "packing_saving_ratio means little: give the inventory more GPUs\n");
      break;
    }
  }

  json out;
  out["models"] = kModels;
  out["steps"] = steps;
  out["step_seconds"] = kStepSeconds;
  out["nodes"] = fleet->size();
  out["gpus"] = gpu_count;
  out["replica_seconds"] = static_cast<double>(replica_steps) * kStepSeconds;
  out["peak_replicas"] = peak_replicas;
  out["cold_starts"] = cold_starts;
  out["device_seconds_packed"] = packed.device_seconds();
  out["device_seconds_unpacked"] = unpacked.device_seconds();
  out["device_seconds_packed_fresh"] = packed.fresh_device_seconds();
  out["packing_saving_ratio"] =
      unpacked.device_seconds() / std::max(packed.device_seconds(), kStepSeconds);
  out["peak_gpus_packed"] = packed.peak_gpus();
  out["peak_gpus_unpacked"] = unpacked.peak_gpus();
  out["unplaced_replica_steps_packed"] = packed.unplaced_replica_steps();
  out["unplaced_replica_steps_unpacked"] = unpacked.unplaced_replica_steps();
  out["agent_unplaced_replica_steps_packed"] = packed.agent_unplaced_replica_steps();
  out["agent_unplaced_replica_steps_unpacked"] = unpacked.agent_unplaced_replica_steps();
  out["schedule_us_p50_packed"] = packed.schedule_us_p50();
  out["seconds"] = std::chrono::duration<double>(Clock::now() - started).count();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
