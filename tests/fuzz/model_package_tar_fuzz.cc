// Fuzzes the reader of uploaded model packages (tar archives). Beyond "never crash": every file
// it accepts gets exactly the bytes its header declares, and only plain top-level names pass.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "controlplane/resources/tar_reader.h"

namespace {

class Check final : public outpost::control::TarVisitor {
 public:
  outpost::Status on_file(const std::string& name, uint64_t size) override {
    if (!outpost::control::is_plain_file_name(name)) std::abort();
    expected_ = size;
    received_ = 0;
    return {};
  }
  outpost::Status on_data(std::string_view bytes) override {
    received_ += bytes.size();
    if (received_ > expected_) std::abort();
    return {};
  }
  outpost::Status on_file_end() override {
    if (received_ != expected_) std::abort();
    return {};
  }

 private:
  uint64_t expected_ = 0;
  uint64_t received_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  outpost::control::MemorySource source(
      std::string_view(reinterpret_cast<const char*>(data), size));
  outpost::control::TarLimits limits;
  limits.max_total_bytes = 1 << 20;
  Check check;
  (void)outpost::control::read_tar(source, limits, check).ok();
  return 0;
}
