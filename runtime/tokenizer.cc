#include "runtime/tokenizer.h"

#include <array>
#include <mutex>

#include "common/worker_binary.h"
#include "runtime/sentencepiece_module.h"
#include <dlfcn.h>

namespace outpost::runtime {
namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  Result<std::vector<int64_t>> encode(std::string_view text) const override {
    std::vector<int64_t> ids;
    ids.reserve(text.size());
    for (const unsigned char byte : text) ids.push_back(byte);
    return ids;
  }
  std::string bytes(int64_t id) const override {
    if (id < 0 || id > 255) return {};
    return std::string(1, static_cast<char>(id));
  }
};

// liboutpost_sentencepiece.so, opened once, in a link namespace of its own
// (sentencepiece_module.h says why).
Result<const OutpostSentencePieceApi*> sentencepiece_module() {
  static std::once_flag once;
  static Result<const OutpostSentencePieceApi*> api = internal_error("not opened");
  std::call_once(once, [] {
    const std::string path = beside_self("liboutpost_sentencepiece.so");
    void* handle = ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = ::dlerror();
      api = unavailable("SentencePiece is not usable: opening " + path +
                        " failed: " + (why != nullptr ? why : "unknown error") +
                        " (Debian's libsentencepiece0 must be installed)");
      return;
    }
    auto* entry =
        reinterpret_cast<OutpostSentencePieceEntry>(::dlsym(handle, kSentencePieceEntrySymbol));
    if (entry == nullptr) {
      api = internal_error(path + " has no " + kSentencePieceEntrySymbol);
      return;
    }
    api = entry();
  });
  return api;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const OutpostSentencePieceApi& api, OutpostSentencePiece* model)
      : api_(api), model_(model) {}
  ~SentencePieceTokenizer() override { api_.close(model_); }
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  Result<std::vector<int64_t>> encode(std::string_view text) const override {
    std::vector<int64_t> ids(text.size() + 16);
    std::array<char, 512> error{};
    for (int attempt = 0; attempt < 2; ++attempt) {
      const int64_t count = api_.encode(model_, text.data(), text.size(), ids.data(), ids.size(),
                                        error.data(), error.size());
      if (count < 0) return invalid_argument("prompt: " + std::string(error.data()));
      const bool fits = static_cast<size_t>(count) <= ids.size();
      ids.resize(static_cast<size_t>(count));
      if (fits) return ids;
    }
    return internal_error("the prompt's encoding changed size between two calls");
  }

  std::string bytes(int64_t id) const override {
    std::array<char, 64> buffer{};
    const int64_t size = api_.piece_bytes(model_, id, buffer.data(), buffer.size());
    if (static_cast<size_t>(size) <= buffer.size()) {
      return std::string(buffer.data(), static_cast<size_t>(size));
    }
    std::string out(static_cast<size_t>(size), '\0');
    api_.piece_bytes(model_, id, out.data(), out.size());
    return out;
  }

 private:
  const OutpostSentencePieceApi& api_;
  OutpostSentencePiece* model_;
};

}  // namespace

Result<std::shared_ptr<const Tokenizer>> open_tokenizer(const protocol::DecoderConfig& config,
                                                        const std::string& package_dir) {
  if (config.tokenizer.empty()) return std::shared_ptr<const Tokenizer>();
  if (config.tokenizer == "bytes") return std::shared_ptr<const Tokenizer>(new ByteTokenizer());
  OUTPOST_ASSIGN_OR_RETURN(const OutpostSentencePieceApi* api, sentencepiece_module());
  const std::string path = package_dir + "/" + config.tokenizer_file;
  std::array<char, 512> error{};
  OutpostSentencePiece* model = api->open(path.c_str(), error.data(), error.size());
  if (model == nullptr) {
    return invalid_argument(
        "config.yaml: decoder.tokenizer_file " + config.tokenizer_file +
        " is not a SentencePiece model the worker can read: " + std::string(error.data()));
  }
  return std::shared_ptr<const Tokenizer>(new SentencePieceTokenizer(*api, model));
}

}  // namespace outpost::runtime
