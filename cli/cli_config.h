// Where `outpost login` keeps the control plane's address and the personal access token:
// $OUTPOST_CONFIG_DIR, else $XDG_CONFIG_HOME/outpost, else ~/.config/outpost, in config.yaml.
// The directory is made 0700 and the file 0600 (it holds a secret); the PAT never goes on argv.
#pragma once

#include <string>

#include "common/result.h"

namespace outpost::cli {

struct CliConfig {
  std::string base_url;
  std::string ca_file;  // empty: the system's roots
  std::string user_id;
  std::string pat;
};

std::string config_dir();
std::string config_path();

// not_found with a hint to run `outpost login` when there is no config yet.
Result<CliConfig> load_cli_config();
Status save_cli_config(const CliConfig& config);

// A token from a file (first line, trimmed); refuses an empty file.
Result<std::string> read_token_file(const std::string& path);

}  // namespace outpost::cli
