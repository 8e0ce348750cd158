// The agent's local files, kept private whatever the umask or the state of the host
// (docs/security.md, "Local files"): the checks and repairs of `state_dir` and `runtime_dir`
// done by `outpostd --check-config` and at start-up, the proxy credentials file, and the
// warning for an agent.yaml that holds a secret and that others can read.
//
// The threat is another local user: one who can write `runtime_dir` (or a directory above it
// that has no sticky bit) can rename what the agent creates there and put a directory of its
// own in its place (the workers' sockets, the packages the workers load). So the agent refuses
// a directory it does not own or that group/other can write, and every refusal names the
// command line that fixes it. Every check uses lstat: a symbolic link is never followed.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"

namespace outpost::agent {

struct AgentConfig;

// The umask outpostd sets first thing, before it creates any file: directories 0700, files 0600,
// sockets 0700 (their owner only), for itself and for the workers it spawns.
inline constexpr unsigned kAgentUmask = 0077;

// Makes `dir` fit for private state; `key` ("state_dir", "runtime_dir") names it in errors.
//  - Missing: created 0700, its missing parents too.
//  - Refused: not a directory (a symbolic link included: name the directory itself), not owned
//    by this process's effective user, writable by group or other, or below a directory that
//    others can write and that has no sticky bit (they could rename `dir` away).
//  - Repaired: readable or searchable by group/other but not writable (what `mkdir` leaves
//    under umask 022): chmod 0700. Nobody else could have written into it, so nothing in it
//    can be someone else's; only the read access goes.
// Then everything below it, walked with lstat: an entry owned by another user is refused (it
// can only be there because someone else put it there); an entry of the agent's own with
// group/other bits (left by an older outpostd under umask 022) has those bits cleared. Symbolic
// links are not followed (their own mode means nothing).
Status prepare_private_dir(const std::string& key, const std::string& dir);

struct ProxyCredentials {
  std::string username;
  std::string password;
};

// Reads `control_plane.proxy_credentials_file`: one line `user:password` (user not empty; the
// password may hold ':'). The file must be a regular file owned by this process's effective
// user with no group/other permission bits, else an error that says how to fix it. No error
// ever quotes the file's content.
Result<ProxyCredentials> read_proxy_credentials(const std::string& path);

// The proxy URL to hand to the tunnel: `control_plane.proxy`, with the credentials from
// `proxy_credentials_file` (percent-encoded) when that is set. Never log what it returns.
Result<std::string> tunnel_proxy_url(const AgentConfig& config);

// The keys of `config` that hold a secret inline (today: control_plane.proxy with user
// information); empty when none does.
std::vector<std::string> inline_secret_keys(const AgentConfig& config);

// Warnings for the configuration file at `path` (already parsed into `config`): it holds a
// secret and group or other can read it. Empty when there is nothing to say.
std::vector<std::string> config_file_warnings(const std::string& path, const AgentConfig& config);

}  // namespace outpost::agent
