#include "controlplane/resources/tar_reader.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>

namespace outpost::control {

namespace {

constexpr size_t kBlock = 512;

Status read_exact(ByteSource& source, char* out, size_t size, bool& at_end) {
  size_t done = 0;
  while (done < size) {
    OUTPOST_ASSIGN_OR_RETURN(const size_t n, source.read(out + done, size - done));
    if (n == 0) {
      at_end = done == 0;
      return invalid_argument("the package archive is truncated");
    }
    done += n;
  }
  at_end = false;
  return {};
}

// An octal field, NUL- or space-terminated (GNU base-256 sizes are refused).
Result<uint64_t> octal(const char* field, size_t width, const char* what) {
  uint64_t value = 0;
  size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  bool any = false;
  for (; i < width; ++i) {
    const char c = field[i];
    if (c == '\0' || c == ' ') break;
    if (c < '0' || c > '7') {
      return invalid_argument(std::string("the package archive has a bad ") + what +
                              " field (not octal)");
    }
    if (value > (UINT64_MAX >> 3)) return invalid_argument("the package archive is malformed");
    value = value * 8 + static_cast<uint64_t>(c - '0');
    any = true;
  }
  if (!any) return invalid_argument(std::string("the package archive has an empty ") + what);
  return value;
}

std::string field_string(const char* field, size_t width) {
  return {field, static_cast<size_t>(std::find(field, field + width, '\0') - field)};
}

}  // namespace

Result<size_t> MemorySource::read(char* out, size_t size) {
  const size_t n = std::min(size, bytes_.size());
  std::memcpy(out, bytes_.data(), n);
  bytes_.remove_prefix(n);
  return n;
}

bool is_plain_file_name(std::string_view name) {
  if (name.empty() || name.size() > 100 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
  });
}

Status read_tar(ByteSource& source, const TarLimits& limits, TarVisitor& visitor) {
  std::array<char, kBlock> header{};
  std::set<std::string> names;
  uint64_t total = 0;
  bool saw_end_block = false;
  std::array<char, 64 * 1024> buffer{};
  for (;;) {
    bool at_end = false;
    Status read = read_exact(source, header.data(), kBlock, at_end);
    if (!read.ok()) {
      // An archive may end without its two zero blocks only if it ended on a boundary.
      if (at_end && !names.empty()) return {};
      if (at_end && saw_end_block) return {};
      return read;
    }
    if (std::all_of(header.begin(), header.end(), [](char c) { return c == '\0'; })) {
      if (saw_end_block) return {};  // two zero blocks: the end
      saw_end_block = true;
      continue;
    }
    if (saw_end_block) return invalid_argument("the package archive has data after its end");
    // Checksum: the header's bytes summed with the checksum field read as spaces.
    OUTPOST_ASSIGN_OR_RETURN(const uint64_t stored_sum, octal(header.data() + 148, 8, "checksum"));
    uint64_t sum = 0;
    for (size_t i = 0; i < kBlock; ++i) {
      sum += (i >= 148 && i < 156) ? uint64_t{' '} : static_cast<unsigned char>(header[i]);
    }
    if (sum != stored_sum) {
      return invalid_argument("the package archive is corrupt (a header checksum does not match)");
    }
    std::string name = field_string(header.data(), 100);
    const std::string magic = field_string(header.data() + 257, 6);
    if (magic == "ustar") {
      const std::string prefix = field_string(header.data() + 345, 155);
      if (!prefix.empty()) name = prefix + "/" + name;
    }
    OUTPOST_ASSIGN_OR_RETURN(const uint64_t size, octal(header.data() + 124, 12, "size"));
    const char type = header[156];
    if (size > limits.max_total_bytes || total + size > limits.max_total_bytes) {
      return invalid_argument("the package's files add up to more than the upload limit of " +
                              std::to_string(limits.max_total_bytes) + " bytes");
    }
    const uint64_t padded = (size + kBlock - 1) / kBlock * kBlock;
    while (name.size() >= 2 && name.compare(0, 2, "./") == 0) name.erase(0, 2);

    const bool regular = type == '0' || type == '\0';
    const bool skip = type == 'x' || type == 'g' ||
                      (type == '5' && (name.empty() || name == "." || name == "./"));
    if (!regular && !skip) {
      return invalid_argument("the package archive holds '" + name +
                              "', which is not a regular file; a package holds plain files only");
    }
    if (regular) {
      if (!is_plain_file_name(name)) {
        return invalid_argument("the package archive holds '" + name +
                                "': files must sit at the top level with plain names "
                                "(letters, digits, '.', '-', '_')");
      }
      if (!names.insert(name).second) {
        return invalid_argument("the package archive holds '" + name + "' twice");
      }
      if (names.size() > limits.max_files) {
        return invalid_argument("the package archive holds more than " +
                                std::to_string(limits.max_files) + " files");
      }
      OUTPOST_RETURN_IF_ERROR(visitor.on_file(name, size));
    }
    total += size;
    uint64_t remaining = padded;
    uint64_t data_left = size;
    while (remaining > 0) {
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(remaining, buffer.size()));
      OUTPOST_RETURN_IF_ERROR(read_exact(source, buffer.data(), chunk, at_end));
      const size_t data = static_cast<size_t>(std::min<uint64_t>(data_left, chunk));
      if (regular && data > 0) OUTPOST_RETURN_IF_ERROR(visitor.on_data({buffer.data(), data}));
      data_left -= data;
      remaining -= chunk;
    }
    if (regular) OUTPOST_RETURN_IF_ERROR(visitor.on_file_end());
  }
}

}  // namespace outpost::control
