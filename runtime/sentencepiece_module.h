// The C interface of liboutpost_sentencepiece.so, the worker's module over Debian's
// libsentencepiece (tokenizer.cc opens it). It is a module, opened in a link namespace of its
// own (dlmopen), because libsentencepiece and libtorch's libc10 both export a global named
// FLAGS_minloglevel, of different sizes: linked into one namespace, libsentencepiece's
// initialisation writes its 32-byte flag over libc10's 4-byte one and the mutex beside it, and
// the next TorchScript call deadlocks. Nothing allocated on one side is freed on the other:
// every answer is written into the caller's buffer.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

struct OutpostSentencePiece;

struct OutpostSentencePieceApi {
  // Loads a SentencePiece model file; null with the reason in `error` when it cannot.
  OutpostSentencePiece* (*open)(const char* path, char* error, size_t error_size);
  void (*close)(OutpostSentencePiece* model);
  // Encodes `text` into at most `capacity` ids; returns how many there are (call again with a
  // larger buffer when that is more than `capacity`), or -1 with the reason in `error`.
  int64_t (*encode)(const OutpostSentencePiece* model, const char* text, size_t size, int64_t* ids,
                    size_t capacity, char* error, size_t error_size);
  // The bytes token `id` adds to the text, into at most `capacity` bytes; returns how many
  // there are ("" for control tokens and ids out of range).
  int64_t (*piece_bytes)(const OutpostSentencePiece* model, int64_t id, char* out, size_t capacity);
};

// The module's one exported symbol.
using OutpostSentencePieceEntry = const OutpostSentencePieceApi* (*)();
inline constexpr const char* kSentencePieceEntrySymbol = "outpost_sentencepiece_api";

}  // extern "C"
