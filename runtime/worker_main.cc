// outpost-worker: hosts TorchScript models behind the worker protocol (docs/worker-protocol.md),
// and `inspect` prints a model package's signatures for the control plane (docs/models.md).
//
//   outpost-worker serve --spec FILE | --spec-json JSON [--exit-with-parent]
//   outpost-worker inspect PACKAGE_DIR
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/log.h"
#include "protocol/worker_spec.h"
#include "runtime/device.h"
#include "runtime/model_package.h"
#include "runtime/torch_loader.h"
#include "runtime/worker_server.h"
#include <sys/prctl.h>

namespace {

using namespace outpost;
using namespace outpost::runtime;

std::atomic<bool> g_stop{false};

void on_signal(int /*signal*/) { g_stop = true; }

constexpr std::string_view kUsage =
    "usage: outpost-worker serve --spec FILE | --spec-json JSON [--exit-with-parent]\n"
    "       outpost-worker inspect PACKAGE_DIR\n";

int fail(std::string_view command, const Error& error) {
  std::fprintf(stderr, "outpost-worker %.*s: %s\n", static_cast<int>(command.size()),
               command.data(), error.to_string().c_str());
  return 1;
}

// The signature of an AOTInductor package compiled for CUDA, on a host without a GPU (a control
// plane's): from what config.yaml declares, since the package cannot be opened here.
Result<nlohmann::json> declared_signature(const ModelConfig& config) {
  const MethodConfig method = config.method("predict");
  if (method.inputs.empty()) {
    return Error(ErrorCode::kFailedPrecondition,
                 config.file +
                     " was compiled for cuda and this host has no GPU to open it: declare its "
                     "inputs under methods.predict.inputs in config.yaml (docs/models.md)");
  }
  MethodInfo info;
  info.name = "predict";
  info.returns = "unknown (compiled for cuda; read on a GPU)";
  for (const auto& [name, spec] : method.inputs) {
    info.inputs.push_back(ParamInfo{name, "Tensor", std::nullopt, spec});
  }
  return nlohmann::json::array({info.to_json()});
}

// Loads the package as a node would, with one instance, running its examples and warm-up, and
// prints what the control plane stores: signatures, the file's hash, warnings.
int inspect(const std::string& dir) {
  auto package = open_model_package(dir);
  if (!package.ok()) return fail("inspect", package.error());
  WorkerSpec spec;
  spec.endpoint = "ipc:///unused";
  spec.intra_op_threads = 1;
  if (const Status configured = configure_process(spec); !configured.ok()) {
    return fail("inspect", configured.error());
  }
  LoadOptions options;
  options.inspect_only = true;
  auto loader = make_loader(package->config.checkpoint_type);
  if (loader == nullptr) {
    return fail("inspect", invalid_argument("no loader for checkpoints.type " +
                                            package->config.checkpoint_type));
  }
  std::vector<std::string> warnings = package->config.warnings;
  nlohmann::json methods = nlohmann::json::array();
  auto model = loader->load(*package, options);
  if (model.ok()) {
    for (const auto& method : (*model)->methods()) methods.push_back(method.to_json());
  } else if (package->config.checkpoint_type == "aoti" &&
             model.error().code() == ErrorCode::kFailedPrecondition &&
             model.error().message().find("compiled for cuda") != std::string::npos) {
    auto declared = declared_signature(package->config);
    if (!declared.ok()) return fail("inspect", declared.error());
    methods = std::move(declared).value();
    warnings.push_back(package->config.file +
                       " was compiled for cuda: its signature comes from config.yaml, and it "
                       "was not run here (this host has no GPU)");
  } else {
    return fail("inspect", model.error());
  }
  const nlohmann::json out{{"model_id", package->config.model_id},
                           {"file", package->config.file},
                           {"file_sha256", package->file_sha256},
                           {"file_size", package->file_size},
                           {"config", package->config.raw},
                           {"methods", std::move(methods)},
                           {"warnings", warnings}};
  std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  return 0;
}

int serve(const std::vector<std::string>& args) {
  std::string spec_text;
  bool exit_with_parent = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--spec" && i + 1 < args.size()) {
      std::ifstream in(args[++i]);
      if (!in) return fail("serve", invalid_argument("cannot read spec file " + args[i]));
      std::stringstream text;
      text << in.rdbuf();
      spec_text = text.str();
    } else if (args[i] == "--spec-json" && i + 1 < args.size()) {
      spec_text = args[++i];
    } else if (args[i] == "--exit-with-parent") {
      exit_with_parent = true;
    } else {
      std::fputs(kUsage.data(), stderr);
      return 2;
    }
  }
  if (spec_text.empty()) {
    std::fputs(kUsage.data(), stderr);
    return 2;
  }
  auto spec = parse_worker_spec(spec_text);
  if (!spec.ok()) return fail("serve", spec.error());
  if (exit_with_parent) prctl(PR_SET_PDEATHSIG, SIGTERM);
  // CUDA reads the MPS client settings when it starts, so they go in before anything else.
  for (const auto& variable : slice_environment(*spec)) {
    const auto equals = variable.find('=');
    setenv(variable.substr(0, equals).c_str(), variable.substr(equals + 1).c_str(), 0);
  }
  if (const Status configured = configure_process(*spec); !configured.ok()) {
    return fail("serve", configured.error());
  }
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  auto server = WorkerServer::create(*spec, make_loaders());
  if (!server.ok()) return fail("serve", server.error());
  return (*server)->run(g_stop);
}

}  // namespace

int main(int argc, char** argv) {
  // AOTInductor packages check each input's dtype, shape, strides and device only when this is
  // set (read once, at a package's first call): without it a tensor of the wrong shape runs the
  // compiled kernels out of bounds. Set while the process has one thread.
  setenv("AOTI_RUNTIME_CHECK_INPUTS", "1", 1);
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::fputs(kUsage.data(), stderr);
    return 2;
  }
  if (args[0] == "inspect" && args.size() == 2) return inspect(args[1]);
  if (args[0] == "serve") return serve(std::vector<std::string>(args.begin() + 1, args.end()));
  std::fputs(kUsage.data(), stderr);
  return 2;
}
