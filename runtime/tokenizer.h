// The text side of a decoder method (docs/models.md, "Decoder models"), without torch: a
// prompt's text to token ids, and each generated token to the bytes it adds to the text, which
// a TextStream (sampling.h) turns into chunks. Two kinds, set by config.yaml's
// decoder.tokenizer: `bytes` (token ids 0..255 are bytes) and `sentencepiece` (a SentencePiece
// model file in the package, read with Debian's libsentencepiece).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "protocol/model_config.h"

namespace outpost::runtime {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // The prompt's token ids.
  virtual Result<std::vector<int64_t>> encode(std::string_view text) const = 0;
  // The bytes token `id` adds to the text: "" for control tokens and ids it does not know.
  virtual std::string bytes(int64_t id) const = 0;
};

// The tokenizer config.yaml's decoder section names, its file read from `package_dir`; null
// when it names none. Errors name the file and what is wrong with it.
Result<std::shared_ptr<const Tokenizer>> open_tokenizer(const protocol::DecoderConfig& config,
                                                        const std::string& package_dir);

}  // namespace outpost::runtime
