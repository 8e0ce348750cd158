// Where outpost-worker is when nothing names it, for everything that starts one: outpostd,
// outpost-control (it runs `inspect` on uploads) and `outpost model test`; and where the worker
// finds its modules.
#pragma once

#include <optional>
#include <string>

namespace outpost {

// Where the packages install the worker.
inline constexpr const char* kInstalledWorkerBinary = "/usr/lib/outpost/outpost-worker";

// The running program's directory (all binaries sit together in a build tree's bin/), else
// kInstalledWorkerBinary: the first that holds an executable outpost-worker. nullopt when
// neither does.
std::optional<std::string> locate_worker_binary();

// The path of a file named `name` in the running program's directory (where the worker's
// modules sit beside it); just `name` when that directory cannot be read.
std::string beside_self(const std::string& name);

// Where a worker would be expected next to the running program (for messages).
std::string worker_binary_beside_self();

// A regular file this process may execute.
bool is_executable_file(const std::string& path);

}  // namespace outpost
