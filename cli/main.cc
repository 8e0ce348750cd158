// outpost: the command line of outpost-control, in the shape of the clarifai CLI.
//
//   outpost login --base-url https://HOST:PORT [--ca-file F] [--pat-file F]
//   outpost computecluster|cc create ID --config F | list | get ID | delete ID
//   outpost nodepool|np create CC_ID NP_ID --config F | list [CC_ID] | get CC_ID NP_ID
//                       | delete CC_ID NP_ID | join-token CC_ID NP_ID [--ttl S]
//                       | nodes CC_ID NP_ID | remove-node CC_ID NP_ID NODE_ID
//   outpost deployment|dp create NP_ID DEP_ID --config F | list [NP_ID] | get ID | delete ID
//   outpost model upload DIR | list | get ID | delete ID | test DIR [--method M] [--text T |
//                       --file F | --inputs JSON | -i NAME=VALUE] [--worker PATH]
//   outpost model predict|generate|stream MODEL_ID --deployment ID [--text T | --file F |
//                       --url U | --inputs JSON | -i NAME=VALUE]
//
// Tables by default, `-o json` for scripts. Every error prints a message and exits 1 (usage
// errors 2). The PAT comes from the login config, --pat-file or $OUTPOST_PAT: never from argv.
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include <signal.h>

namespace {

using outpost::Status;
using outpost::cli::GlobalFlags;
using outpost::cli::Session;

int report(const Status& status) {
  if (status.ok()) return 0;
  std::cerr << "outpost: error: " << status.error().message() << " ("
            << outpost::error_code_name(status.error().code()) << ")\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{"outpost: compute clusters, nodepools, deployments and models on outpost-control"};
  app.require_subcommand(1);
  GlobalFlags global;
  std::string output = "table";
  app.add_option("-o,--output", output, "table (default) or json")
      ->check(CLI::IsMember({"table", "json"}));
  app.add_option("--base-url", global.base_url, "the control plane, overriding the login");
  app.add_option("--ca-file", global.ca_file,
                 "CA bundle that signs the control plane's certificate");
  app.add_option("--pat-file", global.pat_file, "read the personal access token from this file");

  // The command to run, set by the subcommand that matched.
  std::function<Status(Session&)> command;
  const auto set = [&command](std::function<Status(Session&)> fn) { command = std::move(fn); };

  // login
  outpost::cli::LoginFlags login_flags;
  auto* login = app.add_subcommand("login", "save the control plane's address and your token");
  login->add_option("--base-url", login_flags.base_url, "https://HOST:PORT of outpost-control");
  login->add_option("--ca-file", login_flags.ca_file, "CA bundle for the control plane")
      ->check(CLI::ExistingFile);
  login->add_option("--pat-file", login_flags.pat_file,
                    "read the token from this file (else $OUTPOST_PAT, else a prompt)");

  std::string id;
  std::string second;
  std::string third;
  std::string config_file;

  // computecluster | cc
  auto* cc = app.add_subcommand("computecluster", "compute clusters")->alias("cc");
  cc->require_subcommand(1);
  auto* cc_create = cc->add_subcommand("create", "create a compute cluster")->alias("c");
  cc_create->add_option("ID", id, "compute cluster id")->required();
  cc_create->add_option("--config", config_file, "compute_cluster: YAML")
      ->required()
      ->check(CLI::ExistingFile);
  cc_create->callback(
      [&] { set([&](Session& s) { return outpost::cli::cluster_create(s, id, config_file); }); });
  cc->add_subcommand("list", "list compute clusters")->alias("ls")->callback([&] {
    set([](Session& s) { return outpost::cli::cluster_list(s); });
  });
  auto* cc_get = cc->add_subcommand("get", "show a compute cluster");
  cc_get->add_option("ID", id)->required();
  cc_get->callback([&] { set([&](Session& s) { return outpost::cli::cluster_get(s, id); }); });
  auto* cc_delete = cc->add_subcommand("delete", "delete a compute cluster")->alias("rm");
  cc_delete->add_option("ID", id)->required();
  cc_delete->callback(
      [&] { set([&](Session& s) { return outpost::cli::cluster_delete(s, id); }); });

  // nodepool | np
  auto* np = app.add_subcommand("nodepool", "nodepools, their join tokens and nodes")->alias("np");
  np->require_subcommand(1);
  auto* np_create = np->add_subcommand("create", "create a nodepool")->alias("c");
  np_create->add_option("CC_ID", id)->required();
  np_create->add_option("NP_ID", second)->required();
  np_create->add_option("--config", config_file, "nodepool: YAML")
      ->required()
      ->check(CLI::ExistingFile);
  np_create->callback([&] {
    set([&](Session& s) { return outpost::cli::nodepool_create(s, id, second, config_file); });
  });
  auto* np_list = np->add_subcommand("list", "list nodepools")->alias("ls");
  np_list->add_option("CC_ID", id, "only this compute cluster's");
  np_list->callback([&] { set([&](Session& s) { return outpost::cli::nodepool_list(s, id); }); });
  auto* np_get = np->add_subcommand("get", "show a nodepool");
  np_get->add_option("CC_ID", id)->required();
  np_get->add_option("NP_ID", second)->required();
  np_get->callback(
      [&] { set([&](Session& s) { return outpost::cli::nodepool_get(s, id, second); }); });
  auto* np_delete =
      np->add_subcommand("delete", "delete a nodepool (revokes its nodes)")->alias("rm");
  np_delete->add_option("CC_ID", id)->required();
  np_delete->add_option("NP_ID", second)->required();
  np_delete->callback(
      [&] { set([&](Session& s) { return outpost::cli::nodepool_delete(s, id, second); }); });
  int64_t ttl = 3600;
  auto* np_token = np->add_subcommand("join-token", "a single-use token for a node to enroll");
  np_token->add_option("CC_ID", id)->required();
  np_token->add_option("NP_ID", second)->required();
  np_token->add_option("--ttl", ttl, "seconds the token stays valid (default 3600)")
      ->check(CLI::Range(int64_t{1}, int64_t{7 * 24 * 3600}));
  np_token->callback([&] {
    set([&](Session& s) { return outpost::cli::nodepool_join_token(s, id, second, ttl); });
  });
  auto* np_nodes = np->add_subcommand("nodes", "list a nodepool's enrolled nodes");
  np_nodes->add_option("CC_ID", id)->required();
  np_nodes->add_option("NP_ID", second)->required();
  np_nodes->callback(
      [&] { set([&](Session& s) { return outpost::cli::nodepool_nodes(s, id, second); }); });
  auto* np_remove = np->add_subcommand("remove-node", "revoke a node's credential and drop it");
  np_remove->add_option("CC_ID", id)->required();
  np_remove->add_option("NP_ID", second)->required();
  np_remove->add_option("NODE_ID", third)->required();
  np_remove->callback([&] {
    set([&](Session& s) { return outpost::cli::nodepool_remove_node(s, id, second, third); });
  });

  // deployment | dp
  auto* dp = app.add_subcommand("deployment", "deployments of models onto nodepools")->alias("dp");
  dp->require_subcommand(1);
  auto* dp_create = dp->add_subcommand("create", "create a deployment")->alias("c");
  dp_create->add_option("NP_ID", id)->required();
  dp_create->add_option("DEP_ID", second)->required();
  dp_create->add_option("--config", config_file, "deployment: YAML")
      ->required()
      ->check(CLI::ExistingFile);
  dp_create->callback([&] {
    set([&](Session& s) { return outpost::cli::deployment_create(s, id, second, config_file); });
  });
  auto* dp_list = dp->add_subcommand("list", "list deployments")->alias("ls");
  dp_list->add_option("NP_ID", id, "only this nodepool's");
  dp_list->callback([&] { set([&](Session& s) { return outpost::cli::deployment_list(s, id); }); });
  auto* dp_get = dp->add_subcommand("get", "a deployment and its replicas")->alias("status");
  dp_get->add_option("DEP_ID", id)->required();
  dp_get->callback([&] { set([&](Session& s) { return outpost::cli::deployment_get(s, id); }); });
  auto* dp_delete = dp->add_subcommand("delete", "delete a deployment")->alias("rm");
  dp_delete->add_option("DEP_ID", id)->required();
  dp_delete->callback(
      [&] { set([&](Session& s) { return outpost::cli::deployment_delete(s, id); }); });

  // model
  auto* model = app.add_subcommand("model", "models: upload, inspect, predict");
  model->require_subcommand(1);
  std::string model_id;
  auto* upload = model->add_subcommand("upload", "upload a model package (model.pt + config.yaml)");
  upload->add_option("DIR", id, "the package directory")->required()->check(CLI::ExistingDirectory);
  upload->add_option("--model-id", model_id,
                     "upload under this id (default: config.yaml's model.id)");
  upload->callback(
      [&] { set([&](Session& s) { return outpost::cli::model_upload(s, id, model_id); }); });
  model->add_subcommand("list", "list models")->alias("ls")->callback([&] {
    set([](Session& s) { return outpost::cli::model_list(s); });
  });
  auto* model_get = model->add_subcommand("get", "a model, its latest version and its methods");
  model_get->add_option("MODEL_ID", id)->required();
  model_get->callback([&] { set([&](Session& s) { return outpost::cli::model_get(s, id); }); });
  auto* model_delete = model->add_subcommand("delete", "delete a model")->alias("rm");
  model_delete->add_option("MODEL_ID", id)->required();
  model_delete->callback(
      [&] { set([&](Session& s) { return outpost::cli::model_delete(s, id); }); });

  // model test: a local outpost-worker, no control plane and no login.
  outpost::cli::ModelTestFlags test_flags;
  auto* model_test = model->add_subcommand(
      "test", "run a package in a local outpost-worker: load, methods, a call or the examples");
  model_test->add_option("DIR", test_flags.dir, "the package directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  model_test->add_option("--method", test_flags.method,
                         "the method to call (without inputs: the one whose example runs)");
  model_test->add_option("--text", test_flags.inputs.text,
                         "text for the method's first input (stream: one item each)");
  model_test->add_option("--file", test_flags.inputs.file, "a file's bytes for the first input")
      ->check(CLI::ExistingFile);
  model_test->add_option("--inputs", test_flags.inputs.inputs_json,
                         "all inputs as JSON (stream: an array of items)");
  model_test->add_option("-i,--input", test_flags.inputs.named,
                         "NAME=VALUE (VALUE as JSON when it parses)");
  model_test->add_option("--worker", test_flags.worker,
                         "the outpost-worker binary (default: $OUTPOST_WORKER, else the one "
                         "next to outpost)");

  outpost::cli::PredictFlags predict;
  const auto predict_options = [&predict](CLI::App* sub) {
    sub->add_option("MODEL_ID", predict.model)->required();
    sub->add_option("--deployment", predict.deployment, "the deployment to call");
    sub->add_option("--compute-cluster", predict.compute_cluster, "with --nodepool: the runner");
    sub->add_option("--nodepool", predict.nodepool, "with --compute-cluster: the runner");
    sub->add_option("--method", predict.method, "the method (default: by the command's shape)");
    sub->add_option("--version", predict.version, "the model version the deployment runs");
    sub->add_option("--text", predict.inputs.text, "text for the method's first input");
    sub->add_option("--file", predict.inputs.file, "a file's bytes for the first input")
        ->check(CLI::ExistingFile);
    sub->add_option("--url", predict.inputs.url,
                    "a URL the control plane fetches for the first input");
    sub->add_option("--inputs", predict.inputs.inputs_json,
                    "all inputs as JSON; @FILE reads it from a file, - from stdin");
    sub->add_option("-i,--input", predict.inputs.named,
                    "NAME=VALUE (VALUE as JSON when it parses); NAME=@FILE: a file's bytes, or a "
                    "NumPy .npy file as a tensor");
    sub->add_flag("--values", predict.tensor_values,
                  "tensors in the answer as numbers (\"values\"), not base64 (\"data_b64\")");
  };
  auto* predict_cmd = model->add_subcommand("predict", "a unary call");
  predict_options(predict_cmd);
  predict_cmd->callback(
      [&] { set([&](Session& s) { return outpost::cli::model_predict(s, predict); }); });
  auto* generate_cmd = model->add_subcommand("generate", "a generate call: chunks as they come");
  predict_options(generate_cmd);
  generate_cmd->callback(
      [&] { set([&](Session& s) { return outpost::cli::model_generate(s, predict); }); });
  auto* stream_cmd =
      model->add_subcommand("stream", "a stream call: items from --text, --inputs or stdin lines");
  predict_options(stream_cmd);
  stream_cmd->callback(
      [&] { set([&](Session& s) { return outpost::cli::model_stream(s, predict, std::cin); }); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  global.format =
      output == "json" ? outpost::cli::OutputFormat::kJson : outpost::cli::OutputFormat::kTable;
  if (login->parsed()) {
    if (login_flags.base_url.empty()) login_flags.base_url = global.base_url;
    if (login_flags.ca_file.empty()) login_flags.ca_file = global.ca_file;
    if (login_flags.pat_file.empty()) login_flags.pat_file = global.pat_file;
    return report(outpost::cli::login(login_flags, std::cout));
  }
  if (model_test->parsed()) {
    return report(outpost::cli::model_test(test_flags, global.format, std::cout));
  }
  auto session = outpost::cli::open_session(global);
  if (!session.ok()) return report(session.error());
  if (!command) return report(outpost::invalid_argument("no command given (see --help)"));
  return report(command(session.value()));
}
