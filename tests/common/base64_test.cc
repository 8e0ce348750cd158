#include "common/base64.h"

#include <gtest/gtest.h>

namespace outpost {
namespace {

TEST(Base64Test, RoundTripsEveryLengthModuloThree) {
  for (const std::string& input : {std::string(), std::string("f"), std::string("fo"),
                                   std::string("foo"), std::string("\0\xff\x10", 3)}) {
    const auto decoded = base64_decode(base64_encode(input));
    ASSERT_TRUE(decoded.ok()) << decoded.error().message();
    EXPECT_EQ(decoded.value(), input);
  }
  EXPECT_EQ(base64_encode("user:pass"), "dXNlcjpwYXNz");
}

TEST(Base64Test, RefusesMalformedText) {
  EXPECT_FALSE(base64_decode("abc").ok());
  EXPECT_FALSE(base64_decode("ab$=").ok());
  EXPECT_FALSE(base64_decode("a=bc").ok());
}

}  // namespace
}  // namespace outpost
