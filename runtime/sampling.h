// The generation controls of the decoder contract (docs/models.md, "Decoder models"), without
// torch: choosing a sequence's next token from its row of logits, and turning its tokens into
// text chunks that are valid UTF-8 and never show a stop string. Each sequence has its own
// Sampler and TextStream, so its tokens do not depend on which others share its batch.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outpost::runtime {

struct SamplingParams {
  double temperature = 0.0;  // 0: greedy (the most likely token)
  int64_t top_k = 0;         // keep the k most likely tokens; 0: all
  double top_p = 1.0;        // keep the most likely tokens whose probabilities reach top_p
  uint64_t seed = 0;         // the sequence's random stream (same seed, same tokens)
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // The next token from one row of logits (one score per token id).
  int64_t next(std::span<const float> logits);

 private:
  double uniform();  // in [0, 1), 53 random bits

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<double, int64_t>> candidates_;  // reused between tokens
};

// A sequence's text as its tokens arrive (each token's bytes from the Tokenizer, tokenizer.h).
class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop);
  // Appends one token's bytes. Returns true when the text now holds a stop string: the text is
  // cut where it begins, and nothing after it is ever emitted.
  bool push(std::string_view bytes);
  // The text that can be shown now: whole UTF-8 characters (an invalid byte becomes U+FFFD),
  // holding back a last incomplete character and any end that could begin a stop string.
  // `last` gives everything left (an incomplete character as U+FFFD).
  std::string take(bool last);

 private:
  std::vector<std::string> stop_;
  std::string pending_;  // bytes not emitted yet
  bool stopped_ = false;
};

}  // namespace outpost::runtime
