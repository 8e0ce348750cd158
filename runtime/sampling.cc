#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/utf8.h"

namespace outpost::runtime {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// The length of the UTF-8 sequence a lead byte starts (RFC 3629), or 0 for a byte that cannot
// start one.
size_t sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

bool is_continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

// Whether the last `n` bytes of `text` are a proper prefix of `stop`.
bool ends_with_prefix_of(std::string_view text, size_t n, std::string_view stop) {
  return n < stop.size() && n <= text.size() && text.substr(text.size() - n) == stop.substr(0, n);
}

}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

double Sampler::uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int64_t Sampler::next(std::span<const float> logits) {
  if (logits.empty()) return 0;
  if (params_.temperature <= 0.0) {
    // The first of equal maxima, as torch.argmax.
    return std::max_element(logits.begin(), logits.end()) - logits.begin();
  }
  candidates_.clear();
  candidates_.reserve(logits.size());
  for (size_t id = 0; id < logits.size(); ++id) {
    const double scaled = static_cast<double>(logits[id]) / params_.temperature;
    if (std::isfinite(scaled) || scaled > 0) candidates_.emplace_back(scaled, id);
  }
  if (candidates_.empty()) return 0;
  // Most likely first; equal scores by id, so that the order never depends on the library.
  const auto more_likely = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    keep = static_cast<size_t>(params_.top_k);
  }
  if (params_.top_p < 1.0 || keep < candidates_.size()) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(keep),
                      candidates_.end(), more_likely);
    candidates_.resize(keep);
  }
  const double top = std::max_element(candidates_.begin(), candidates_.end(), [](auto& a, auto& b) {
                       return a.first < b.first;
                     })->first;
  double total = 0.0;
  for (auto& [weight, id] : candidates_) {
    weight = std::isinf(top) ? (weight == top ? 1.0 : 0.0) : std::exp(weight - top);
    total += weight;
  }
  if (params_.top_p < 1.0) {
    // candidates_ is sorted: keep the smallest head whose share reaches top_p.
    double sum = 0.0;
    size_t head = 0;
    while (head < candidates_.size()) {
      sum += candidates_[head++].first;
      if (sum >= params_.top_p * total) break;
    }
    candidates_.resize(head);
    total = sum;
  }
  double point = uniform() * total;
  for (const auto& [weight, id] : candidates_) {
    if (point < weight) return id;
    point -= weight;
  }
  return candidates_.back().second;  // rounding left the point past the end
}

TextStream::TextStream(std::vector<std::string> stop) : stop_(std::move(stop)) {
  std::erase_if(stop_, [](const std::string& s) { return s.empty(); });
}

bool TextStream::push(std::string_view bytes) {
  if (stopped_ || bytes.empty()) return stopped_;
  pending_.append(bytes);
  // A stop string cannot begin in text already emitted (take() holds back any end that could
  // begin one), so it is enough to search what is pending.
  size_t cut = std::string::npos;
  for (const auto& stop : stop_) cut = std::min(cut, pending_.find(stop));
  if (cut != std::string::npos) {
    pending_.resize(cut);
    stopped_ = true;
  }
  return stopped_;
}

std::string TextStream::take(bool last) {
  size_t end = pending_.size();
  if (!last && !stopped_) {
    size_t hold = 0;
    for (const auto& stop : stop_) {
      for (size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n) {
        if (ends_with_prefix_of(pending_, n, stop)) {
          hold = n;
          break;
        }
      }
    }
    end -= hold;
  }
  const bool flush = last || stopped_;
  std::string out;
  size_t i = 0;
  while (i < end) {
    const auto lead = static_cast<unsigned char>(pending_[i]);
    const size_t length = sequence_length(lead);
    if (length == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    if (i + length > end) {
      // An incomplete character at the end: wait for its other bytes, unless some byte that
      // arrived already cannot continue it.
      bool incomplete = true;
      for (size_t j = i + 1; j < end; ++j) incomplete = incomplete && is_continuation(pending_[j]);
      if (incomplete && !flush) break;
      out += kReplacement;
      i = incomplete ? end : i + 1;  // an incomplete last character is one U+FFFD
      continue;
    }
    const std::string_view character(pending_.data() + i, length);
    if (valid_utf8(character)) {
      out.append(character);
      i += length;
    } else {
      out += kReplacement;
      ++i;
    }
  }
  pending_.erase(0, i);
  return out;
}

}  // namespace outpost::runtime
