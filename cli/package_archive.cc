#include "cli/package_archive.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "protocol/model_config.h"

namespace outpost::cli {

namespace fs = std::filesystem;

namespace {

void octal(char* field, size_t width, uint64_t value) {
  std::snprintf(field, width, "%0*llo", static_cast<int>(width - 1),
                static_cast<unsigned long long>(value));
}

}  // namespace

Status write_package_archive(const std::string& dir, const std::string& archive) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return invalid_argument(dir + " is not a directory");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.front() == '.') continue;
    if (entry.is_directory()) {
      return invalid_argument("the package must be flat: " + entry.path().string() +
                              " is a directory");
    }
    if (!entry.is_regular_file()) continue;
    if (name.size() > 100) return invalid_argument("file name too long: " + name);
    files.push_back(entry.path());
  }
  if (ec) return invalid_argument("cannot list " + dir + ": " + ec.message());
  if (files.empty()) return invalid_argument(dir + " holds no files");
  std::sort(files.begin(), files.end());
  std::ofstream out(archive, std::ios::binary | std::ios::trunc);
  if (!out) return unavailable("cannot write " + archive);
  std::vector<char> buffer(1 << 20);
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return invalid_argument("cannot read " + path.string());
    const uint64_t size = fs::file_size(path, ec);
    if (ec) return invalid_argument("cannot read " + path.string() + ": " + ec.message());
    std::array<char, 512> header{};
    const std::string name = path.filename().string();
    std::memcpy(header.data(), name.data(), name.size());
    octal(header.data() + 100, 8, 0644);
    octal(header.data() + 108, 8, 0);
    octal(header.data() + 116, 8, 0);
    octal(header.data() + 124, 12, size);
    octal(header.data() + 136, 12, 0);
    header[156] = '0';
    std::memcpy(header.data() + 257, "ustar", 6);
    std::memcpy(header.data() + 263, "00", 2);
    std::memset(header.data() + 148, ' ', 8);
    unsigned sum = 0;
    for (const char c : header) sum += static_cast<unsigned char>(c);
    std::snprintf(header.data() + 148, 8, "%06o", sum);
    out.write(header.data(), header.size());
    uint64_t copied = 0;
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const auto n = in.gcount();
      if (n <= 0) break;
      out.write(buffer.data(), n);
      copied += static_cast<uint64_t>(n);
    }
    if (copied != size) return invalid_argument(path.string() + " changed while it was read");
    const size_t pad = static_cast<size_t>((512 - size % 512) % 512);
    out.write(std::string(pad, '\0').data(), static_cast<std::streamsize>(pad));
  }
  out.write(std::string(1024, '\0').data(), 1024);
  out.close();
  if (!out) return unavailable("cannot write " + archive + " (disk full?)");
  return {};
}

Result<std::string> package_model_id(const std::string& dir) {
  const std::string path = dir + "/config.yaml";
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_argument("cannot read " + path + " (a package needs a config.yaml)");
  std::ostringstream text;
  text << in.rdbuf();
  // The worker's own reading of config.yaml: a package the upload would refuse fails here.
  auto config = protocol::parse_model_config(text.str());
  if (!config.ok()) return invalid_argument(dir + "/" + config.error().message());
  return config->model_id;
}

}  // namespace outpost::cli
