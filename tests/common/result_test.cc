#include "common/result.h"

#include <gtest/gtest.h>

namespace outpost {
namespace {

Result<int> parse_positive(int value) {
  if (value <= 0) return invalid_argument("value must be positive, got " + std::to_string(value));
  return value;
}

Result<int> doubled(int value) {
  OUTPOST_ASSIGN_OR_RETURN(const int parsed, parse_positive(value));
  return parsed * 2;
}

Status check(int value) {
  OUTPOST_RETURN_IF_ERROR(parse_positive(value));
  return {};
}

TEST(ResultTest, PropagatesTheFirstErrorWithItsMessage) {
  EXPECT_EQ(doubled(21).value(), 42);
  const auto failed = doubled(-1);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(failed.error().to_string(), "invalid_argument: value must be positive, got -1");
  EXPECT_TRUE(check(3).ok());
  EXPECT_EQ(check(0).error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace outpost
