// The CLI's commands, in the clarifai CLI's shape: computecluster|cc, nodepool|np,
// deployment|dp, model, login. Each returns a Status; main.cc prints the error and exits
// non-zero. Resource configs are sent as written (YAML or JSON): the control plane validates
// them and names the field at fault.
#pragma once

#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/cli_config.h"
#include "cli/http_client.h"
#include "cli/output.h"
#include "cli/predict_inputs.h"
#include "common/result.h"

namespace outpost::cli {

struct GlobalFlags {
  OutputFormat format = OutputFormat::kTable;
  std::string base_url;  // overrides the login config
  std::string ca_file;
  std::string pat_file;  // a PAT from a file instead of the login config (or $OUTPOST_PAT)
};

struct Session {
  OutputFormat format = OutputFormat::kTable;
  CliConfig config;
  std::unique_ptr<HttpClient> client;
  std::ostream* out = &std::cout;
  std::istream* in = &std::cin;  // for `--inputs -`

  // Calls the API; the parsed body, or the server's error.
  Result<nlohmann::json> call(std::string_view method, const std::string& path,
                              const std::string& body = {},
                              const std::string& content_type = "application/json");
  bool json_output() const { return format == OutputFormat::kJson; }
};

Result<Session> open_session(const GlobalFlags& flags);

// A resource config file: YAML, or JSON when the name ends in .json.
struct ConfigFile {
  std::string text;
  std::string content_type;
};
Result<ConfigFile> read_config_file(const std::string& path);

// login
struct LoginFlags {
  std::string base_url;
  std::string ca_file;
  std::string pat_file;
};
Status login(const LoginFlags& flags, std::ostream& out);

// computecluster | cc
Status cluster_create(Session& s, const std::string& id, const std::string& config_file);
Status cluster_list(Session& s);
Status cluster_get(Session& s, const std::string& id);
Status cluster_delete(Session& s, const std::string& id);

// nodepool | np
Status nodepool_create(Session& s, const std::string& cluster, const std::string& id,
                       const std::string& config_file);
Status nodepool_list(Session& s, const std::string& cluster);
Status nodepool_get(Session& s, const std::string& cluster, const std::string& id);
Status nodepool_delete(Session& s, const std::string& cluster, const std::string& id);
Status nodepool_join_token(Session& s, const std::string& cluster, const std::string& id,
                           int64_t ttl_seconds);
Status nodepool_nodes(Session& s, const std::string& cluster, const std::string& id);
Status nodepool_remove_node(Session& s, const std::string& cluster, const std::string& id,
                            const std::string& node);

// deployment | dp
Status deployment_create(Session& s, const std::string& nodepool, const std::string& id,
                         const std::string& config_file);
Status deployment_list(Session& s, const std::string& nodepool);
Status deployment_get(Session& s, const std::string& id);
Status deployment_delete(Session& s, const std::string& id);

// model
struct PredictFlags {
  std::string model;
  std::string version;
  std::string deployment;
  std::string compute_cluster;
  std::string nodepool;
  std::string method;
  InputFlags inputs;
  bool tensor_values = false;  // --values: tensors in the answer as numbers, not base64
};
Status model_upload(Session& s, const std::string& dir, const std::string& model_id);
Status model_list(Session& s);
Status model_get(Session& s, const std::string& id);
Status model_delete(Session& s, const std::string& id);
Status model_predict(Session& s, const PredictFlags& flags);
Status model_generate(Session& s, const PredictFlags& flags);
Status model_stream(Session& s, const PredictFlags& flags, std::istream& in);

// model test DIR: the package run through an outpost-worker on this machine, no control plane
// (model_test_command.cc). Loads it, prints its methods, then calls the chosen method with the
// inputs of the flags or, without inputs, each method with its config.yaml example.
struct ModelTestFlags {
  std::string dir;
  std::string method;
  std::string worker;  // the outpost-worker binary; default: $OUTPOST_WORKER, else beside outpost
  InputFlags inputs;   // as predict's, without --url
};
Status model_test(const ModelTestFlags& flags, OutputFormat format, std::ostream& out);

}  // namespace outpost::cli
