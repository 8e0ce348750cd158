#include "common/utf8.h"

#include <gtest/gtest.h>

namespace outpost {
namespace {

TEST(Utf8Test, AcceptsWellFormedText) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain ascii"));
  EXPECT_TRUE(valid_utf8("h\xc3\xa9llo"));               // U+00E9
  EXPECT_TRUE(valid_utf8("\xe2\x82\xac"));               // U+20AC
  EXPECT_TRUE(valid_utf8("\xed\x9f\xbf"));               // U+D7FF, just below the surrogates
  EXPECT_TRUE(valid_utf8("\xf0\x9f\x98\x80"));           // U+1F600
  EXPECT_TRUE(valid_utf8("\xf4\x8f\xbf\xbf"));           // U+10FFFF, the last code point
  EXPECT_TRUE(valid_utf8(std::string_view("a\0b", 3)));  // NUL is a character
}

TEST(Utf8Test, NamesTheFirstByteOfAMalformedSequence) {
  EXPECT_EQ(first_invalid_utf8("ab\x80"), 2u);            // a lone continuation byte
  EXPECT_EQ(first_invalid_utf8("\xc0\xaf"), 0u);          // overlong '/'
  EXPECT_EQ(first_invalid_utf8("\xc1\xbf"), 0u);          // overlong
  EXPECT_EQ(first_invalid_utf8("x\xe0\x80\xaf"), 1u);     // overlong 3-byte form
  EXPECT_EQ(first_invalid_utf8("\xed\xa0\x80"), 0u);      // a surrogate (U+D800)
  EXPECT_EQ(first_invalid_utf8("\xf0\x8f\xbf\xbf"), 0u);  // overlong 4-byte form
  EXPECT_EQ(first_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(first_invalid_utf8("\xf5\x80\x80\x80"), 0u);  // no such lead byte
  EXPECT_EQ(first_invalid_utf8("ok\xe2\x82"), 2u);        // cut short at the end
  EXPECT_EQ(first_invalid_utf8("\xe2\x28\xa1"), 0u);      // a continuation missing
  EXPECT_EQ(first_invalid_utf8("[\xcb"
                               "1, 2]"),
            1u);  // the fuzzer's find
}

}  // namespace
}  // namespace outpost
