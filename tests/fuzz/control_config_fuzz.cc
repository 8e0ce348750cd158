// Fuzzes outpost-control's config file (controlplane/control_config.h), YAML written by an
// operator: a bad file must stop the start with an error naming the key, never crash. Beyond
// that: an accepted file's values are within the documented ranges, and the host:port parser
// alone (as --listen and --metrics-listen use it) accepts only ports 0-65535 and a non-empty host.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "controlplane/control_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto config = outpost::control::parse_control_config(input); config.ok()) {
    const auto& c = config.value();
    if (c.listen_address.empty() || c.admin_user.empty()) std::abort();
    if (c.max_request_bytes < 1024 || c.url_max_bytes < 1) std::abort();
    if (c.io_threads < 1 || c.io_threads > 256 || c.blocking_threads < 1) std::abort();
    if (c.inspect_timeout_seconds < 1 || c.predict_timeout_seconds < 1) std::abort();
    if (c.target_ongoing_requests < 1 || c.max_held_requests < 0) std::abort();
  } else if (config.error().message().empty()) {
    std::abort();  // every refusal says what to change
  }
  std::string host;
  uint16_t port = 0;
  if (outpost::control::parse_host_port(input, "listen", host, port).ok() && host.empty()) {
    std::abort();
  }
  return 0;
}
