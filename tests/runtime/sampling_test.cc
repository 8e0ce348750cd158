// The decoder's generation controls (runtime/sampling.h): which token a Sampler may choose
// under temperature, top-k and top-p, that a seed fixes its choices, and the text a TextStream
// lets out (whole UTF-8 characters, never a stop string or the start of one).
#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/utf8.h"

namespace outpost::runtime {
namespace {

std::vector<int64_t> draw(const SamplingParams& params, const std::vector<float>& logits, int n) {
  Sampler sampler(params);
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out.push_back(sampler.next(logits));
  return out;
}

TEST(Sampler, GreedyTakesTheFirstLargest) {
  Sampler sampler(SamplingParams{});
  EXPECT_EQ(sampler.next(std::vector<float>{0.1F, 3.0F, -1.0F, 3.0F}), 1);
  EXPECT_EQ(sampler.next(std::vector<float>{-5.0F, -4.0F}), 1);
}

TEST(Sampler, TheSeedFixesTheDraws) {
  const std::vector<float> logits = {1.0F, 1.1F, 0.9F, 1.2F, 0.5F, 1.0F};
  SamplingParams params;
  params.temperature = 1.0;
  params.seed = 42;
  const auto a = draw(params, logits, 200);
  EXPECT_EQ(draw(params, logits, 200), a);
  params.seed = 43;
  EXPECT_NE(draw(params, logits, 200), a);
  // Near-equal logits at temperature 1: every token comes up.
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), logits.size());
}

TEST(Sampler, TopKKeepsOnlyTheKMostLikely) {
  const std::vector<float> logits = {0.0F, 2.0F, 1.0F, 3.0F, 0.5F};
  SamplingParams params;
  params.temperature = 5.0;  // flat: without top_k every token would come up
  params.top_k = 2;
  params.seed = 1;
  const auto draws = draw(params, logits, 500);
  EXPECT_EQ(std::set<int64_t>(draws.begin(), draws.end()), (std::set<int64_t>{1, 3}));
}

TEST(Sampler, TopPKeepsTheSmallestHeadThatReachesP) {
  // Probabilities 0.5, 0.25, 0.125, 0.125 (logits are their logs).
  const std::vector<float> logits = {std::log(0.5F), std::log(0.25F), std::log(0.125F),
                                     std::log(0.125F)};
  SamplingParams params;
  params.temperature = 1.0;
  params.top_p = 0.7;  // 0.5 is short of it, 0.5 + 0.25 reaches it
  params.seed = 3;
  const auto draws = draw(params, logits, 2000);
  std::map<int64_t, int> counts;
  for (const auto token : draws) ++counts[token];
  EXPECT_EQ(counts.size(), 2u);
  // Renormalised over the head: 2/3 and 1/3 (4 standard deviations is about 0.042 here).
  EXPECT_NEAR(counts[0] / 2000.0, 2.0 / 3.0, 0.045);
}

TEST(Sampler, InfiniteLogitsAreHandled) {
  const float inf = std::numeric_limits<float>::infinity();
  SamplingParams params;
  params.temperature = 1.0;
  params.seed = 9;
  EXPECT_EQ(draw(params, {-inf, 0.0F, -inf}, 20), std::vector<int64_t>(20, 1));
  EXPECT_EQ(draw(params, {0.0F, inf, 5.0F}, 20), std::vector<int64_t>(20, 1));
}

std::string push_all(TextStream& text, const std::string& bytes, std::vector<std::string>& out,
                     bool& stopped) {
  std::string all;
  for (const char c : bytes) {
    stopped = text.push(std::string(1, c));
    std::string piece = text.take(stopped);
    if (!piece.empty()) out.push_back(piece);
    all += piece;
    if (stopped) break;
  }
  return all;
}

TEST(TextStream, SplitCharactersWaitForTheirLastByte) {
  TextStream text({});
  std::vector<std::string> pieces;
  bool stopped = false;
  const std::string all = push_all(text, "a\xC3\xA9\xE2\x82\xAC!", pieces, stopped);  // "aé€!"
  EXPECT_FALSE(stopped);
  EXPECT_EQ(all, "a\xC3\xA9\xE2\x82\xAC!");
  EXPECT_EQ(pieces, (std::vector<std::string>{"a", "\xC3\xA9", "\xE2\x82\xAC", "!"}));
}

TEST(TextStream, InvalidBytesBecomeReplacementCharacters) {
  TextStream text({});
  std::vector<std::string> pieces;
  bool stopped = false;
  std::string all = push_all(text, "x\xFFy\xC3", pieces, stopped);
  all += text.take(true);  // the end: the incomplete last character is one U+FFFD too
  EXPECT_EQ(all, "x\xEF\xBF\xBDy\xEF\xBF\xBD");
  EXPECT_TRUE(valid_utf8(all));
  // A lead byte followed by a byte that cannot continue it.
  TextStream broken({});
  pieces.clear();
  EXPECT_EQ(push_all(broken, "\xE2z", pieces, stopped), "\xEF\xBF\xBDz");
}

TEST(TextStream, AStopStringIsNeverShownNorAnythingAfterIt) {
  TextStream text({"END", "##"});
  std::vector<std::string> pieces;
  bool stopped = false;
  const std::string all = push_all(text, "one EN two E#x ENDthree", pieces, stopped);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(all, "one EN two E#x ");
  // "EN" and "E#" were each held back until their next byte ruled the stop strings out.
  EXPECT_EQ(std::count(pieces.begin(), pieces.end(), "EN "), 1);
  EXPECT_TRUE(text.push("z"));  // stays stopped
  EXPECT_EQ(text.take(true), "");
}

TEST(TextStream, HeldBackTextComesOutAtTheEnd) {
  TextStream text({"stop"});
  std::vector<std::string> pieces;
  bool stopped = false;
  EXPECT_EQ(push_all(text, "non-sto", pieces, stopped), "non-");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(text.take(true), "sto");
}

TEST(TextStream, ATokenOfSeveralBytesAndOneOfNone) {
  TextStream text({"lo w"});
  EXPECT_FALSE(text.push("hel"));
  EXPECT_FALSE(text.push(""));        // a control token adds no text
  EXPECT_EQ(text.take(false), "he");  // "l" could begin "lo w"
  EXPECT_TRUE(text.push("lo world"));
  EXPECT_EQ(text.take(true), "l");
}

}  // namespace
}  // namespace outpost::runtime
