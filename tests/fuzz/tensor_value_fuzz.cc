// Fuzzes the decoding of tensor Values (protocol/tensor_wire.h): the input is JSON, followed
// after a NUL byte by the bytes of one binary part. A decoded tensor always carries exactly
// as many bytes or values as its dtype and shape say.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/tensor_wire.h"

using namespace outpost::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const auto value = nlohmann::json::parse(input.substr(0, nul), nullptr, false);
  if (value.is_discarded()) return 0;
  const std::vector<std::string> parts = {nul == std::string::npos ? "" : input.substr(nul + 1)};
  const auto tensor = decode_tensor(value, parts, 1 << 20, "x");
  if (tensor.ok()) {
    const auto elements = static_cast<size_t>(element_count(tensor->shape));
    if (tensor->int_values) {
      if (tensor->int_values->size() != elements) std::abort();
    } else if (tensor->float_values) {
      if (tensor->float_values->size() != elements) std::abort();
    } else if (tensor->bytes().size() != elements * dtype_size(tensor->dtype)) {
      std::abort();
    }
  } else if (tensor.error().message().empty()) {
    std::abort();
  }
  std::string owned;
  (void)decode_bytes(value, parts, owned, "x");
  return 0;
}
