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

TEST(ResultTest, EveryCodeNameReadsBackAsItsCode) {
  for (int i = 0; i <= static_cast<int>(ErrorCode::kInternal); ++i) {
    const auto code = static_cast<ErrorCode>(i);
    const std::string_view name = error_code_name(code);
    EXPECT_NE(name, "unknown") << i;
    EXPECT_EQ(error_code_from_name(name), code) << name;
  }
  EXPECT_EQ(error_code_from_name("not_found"), ErrorCode::kNotFound);
  EXPECT_EQ(error_code_from_name("internal"), ErrorCode::kInternal);
  EXPECT_EQ(error_code_from_name("unknown"), std::nullopt);
  EXPECT_EQ(error_code_from_name("NOT_FOUND"), std::nullopt);
  EXPECT_EQ(error_code_from_name(""), std::nullopt);
}

}  // namespace
}  // namespace outpost
