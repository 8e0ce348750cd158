// The agent's secrets on disk. The join token (single use) is read from node.join_token_file or
// from the systemd credential "join-token" ($CREDENTIALS_DIRECTORY, LoadCredential=), and
// deleted once exchanged when it is a plain file. The node credential it is exchanged for is
// written 0600 (directory 0700), aside then renamed, and reused across restarts. Neither is
// ever logged or put on a command line.
#pragma once

#include <optional>
#include <string>

#include "common/result.h"

namespace outpost::agent {

class CredentialStore {
 public:
  CredentialStore(std::string state_dir, std::string join_token_file);

  std::optional<std::string> load_node_credential() const;
  Status save_node_credential(const std::string& credential) const;
  // Forgets the node credential (the control plane revoked it): the agent must enroll again.
  void discard_node_credential() const;

  Result<std::string> read_join_token() const;
  // Where the join token came from, for messages ("/etc/outpost/join-token").
  std::string join_token_source() const;
  // Deletes a join-token file after a successful enrollment; a systemd credential is read-only
  // and goes away with the service, so it is left alone.
  void consume_join_token() const;

 private:
  std::string credential_path() const;
  std::string state_dir_;
  std::string join_token_file_;
};

// Writes `contents` to `path` with mode 0600 through a temporary file and rename(2), so that a
// crash never leaves a half-written file. Creates the parent directory 0700 if needed.
Status write_private_file(const std::string& path, const std::string& contents);

}  // namespace outpost::agent
