// A strict reader of the tar archives that carry model packages (`outpost model upload` sends
// the package directory as a tar; `tar -C DIR -cf - .` makes the same). Only what a package
// needs is accepted: regular files at the top level with plain names, at most a few of them.
// "./" and "." directory entries and pax headers are skipped; links, devices, nested paths and
// anything else are refused with a message that says so. Header checksums are verified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace outpost::control {

// Where the archive's bytes come from (a file on disk, or memory in the fuzzer).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to `size` bytes; 0 at the end. An error for I/O failures.
  virtual Result<size_t> read(char* out, size_t size) = 0;
};

class MemorySource final : public ByteSource {
 public:
  explicit MemorySource(std::string_view bytes) : bytes_(bytes) {}
  Result<size_t> read(char* out, size_t size) override;

 private:
  std::string_view bytes_;
};

// Receives the archive's files in order.
class TarVisitor {
 public:
  virtual ~TarVisitor() = default;
  virtual Status on_file(const std::string& name, uint64_t size) = 0;
  virtual Status on_data(std::string_view bytes) = 0;
  virtual Status on_file_end() = 0;
};

struct TarLimits {
  size_t max_files = 16;
  uint64_t max_total_bytes = uint64_t{1} << 32;
};

// Reads the whole archive. Errors are invalid_argument (a malformed or refused archive), or the
// visitor's and the source's own.
Status read_tar(ByteSource& source, const TarLimits& limits, TarVisitor& visitor);

// Plain file names only: 1-100 characters of letters, digits, '.', '-', '_', not "." or "..".
bool is_plain_file_name(std::string_view name);

}  // namespace outpost::control
