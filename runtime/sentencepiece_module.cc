// liboutpost_sentencepiece.so: SentencePiece behind a C interface (sentencepiece_module.h).
#include "runtime/sentencepiece_module.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <sentencepiece_processor.h>

struct OutpostSentencePiece {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

void set_error(char* error, size_t size, const std::string& message) {
  if (error == nullptr || size == 0) return;
  const size_t n = std::min(size - 1, message.size());
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

OutpostSentencePiece* open_model(const char* path, char* error, size_t error_size) {
  auto model = std::make_unique<OutpostSentencePiece>();
  const auto status = model->processor.Load(path);
  if (!status.ok()) {
    set_error(error, error_size, status.ToString());
    return nullptr;
  }
  return model.release();
}

void close_model(OutpostSentencePiece* model) { delete model; }

int64_t encode(const OutpostSentencePiece* model, const char* text, size_t size, int64_t* ids,
               size_t capacity, char* error, size_t error_size) {
  std::vector<int> out;
  const auto status = model->processor.Encode(std::string_view(text, size), &out);
  if (!status.ok()) {
    set_error(error, error_size, status.ToString());
    return -1;
  }
  for (size_t i = 0; i < out.size() && i < capacity; ++i) ids[i] = out[i];
  return static_cast<int64_t>(out.size());
}

// As SentencePiece's own decoding writes each piece, except that a piece's leading space is
// kept: a generated token continues the prompt's text.
std::string piece_text(const sentencepiece::SentencePieceProcessor& processor, int64_t id) {
  if (id < 0 || id >= processor.GetPieceSize()) return {};
  const int piece_id = static_cast<int>(id);
  if (processor.IsControl(piece_id)) return {};
  if (processor.IsUnknown(piece_id)) return " \xE2\x81\x87 ";  // " ⁇ ", SentencePiece's
  const std::string& piece = processor.IdToPiece(piece_id);
  if (processor.IsByte(piece_id)) {  // "<0xAB>"
    return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
  }
  static constexpr std::string_view kSpace = "\xE2\x96\x81";  // "▁", U+2581
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kSpace.size(), kSpace) == 0) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

int64_t piece_bytes(const OutpostSentencePiece* model, int64_t id, char* out, size_t capacity) {
  const std::string text = piece_text(model->processor, id);
  std::copy_n(text.begin(), std::min(capacity, text.size()), out);  // bytes, not a C string
  return static_cast<int64_t>(text.size());
}

constexpr OutpostSentencePieceApi kApi = {open_model, close_model, encode, piece_bytes};

}  // namespace

extern "C" __attribute__((visibility("default"))) const OutpostSentencePieceApi*
outpost_sentencepiece_api() {
  return &kApi;
}
