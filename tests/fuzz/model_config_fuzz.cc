// Fuzzes the YAML readers of the runtime (protocol/model_config.h, protocol/worker_spec.h) with
// arbitrary text as config.yaml and as a worker spec. Either is refused with a message, or
// yields values inside the documented ranges.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/model_config.h"
#include "protocol/worker_protocol.h"
#include "protocol/worker_spec.h"

using namespace outpost::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto config = parse_model_config(text);
  if (config.ok()) {
    if (config->model_id.empty() || config->instances < 1 || config->batching.max_batch_size < 0 ||
        config->batching.max_queue_size < 1 || config->file.find('/') != std::string::npos) {
      std::abort();
    }
    for (const auto& [name, method] : config->methods) {
      if (method.max_steps < 1 || method.window < 1) std::abort();
    }
  } else if (config.error().message().empty()) {
    std::abort();
  }
  const auto spec = parse_worker_spec(text);
  if (spec.ok()) {
    if (!check_ipc_endpoint(spec->endpoint).ok() || spec->device_concurrency < 1) std::abort();
    (void)json_text(worker_spec_to_json(*spec));
  } else if (spec.error().message().empty()) {
    std::abort();
  }
  return 0;
}
