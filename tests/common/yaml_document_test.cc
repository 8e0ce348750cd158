// common/yaml_document: the one strict YAML reader behind config.yaml, agent.yaml,
// outpost-control's config, resource files and the CLI's config.
#include "common/yaml_document.h"

#include <string>

#include <gtest/gtest.h>

namespace outpost {
namespace {

using nlohmann::json;

std::string error_of(std::string_view text, YamlScalars scalars = YamlScalars::kCoreSchema) {
  auto parsed = parse_yaml(text, scalars);
  EXPECT_FALSE(parsed.ok()) << text;
  return parsed.ok() ? "" : parsed.error().message();
}

TEST(YamlDocumentTest, PlainScalarsAreTypedByTheCoreSchemaAndQuotedOnesStayStrings) {
  auto parsed = parse_yaml(R"(
count: 8
negative: -3
big: 18446744073709551615
ratio: 0.25
on: true
off: FALSE
nothing: ~
empty:
quoted: "8"
tagged: !!str 9
version: 1.2.3
name: resnet
list: [1, "2", x]
)");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  const json& doc = parsed.value();
  EXPECT_EQ(doc["count"], json(8));
  EXPECT_TRUE(doc["count"].is_number_integer());
  EXPECT_EQ(doc["negative"], json(-3));
  EXPECT_EQ(doc["big"].get<uint64_t>(), 18446744073709551615ULL);
  EXPECT_DOUBLE_EQ(doc["ratio"].get<double>(), 0.25);
  EXPECT_EQ(doc["on"], json(true));
  EXPECT_EQ(doc["off"], json(false));
  EXPECT_TRUE(doc["nothing"].is_null());
  EXPECT_TRUE(doc["empty"].is_null());
  EXPECT_EQ(doc["quoted"], json("8"));
  EXPECT_EQ(doc["tagged"], json("9"));
  EXPECT_EQ(doc["version"], json("1.2.3"));
  EXPECT_EQ(doc["name"], json("resnet"));
  EXPECT_EQ(doc["list"], json::parse(R"([1, "2", "x"])"));
}

TEST(YamlDocumentTest, StringModeKeepsEveryScalarAsWritten) {
  auto parsed =
      parse_yaml("count: 08\nflag: yes\nratio: 1.50\nnothing: ~\n", YamlScalars::kStrings);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  EXPECT_EQ(parsed.value()["count"], json("08"));
  EXPECT_EQ(parsed.value()["flag"], json("yes"));
  EXPECT_EQ(parsed.value()["ratio"], json("1.50"));
  EXPECT_TRUE(parsed.value()["nothing"].is_null());
}

TEST(YamlDocumentTest, AnEmptyDocumentIsNull) {
  auto parsed = parse_yaml("");
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed.value().is_null());
}

TEST(YamlDocumentTest, SyntaxErrorsGiveLineAndColumn) {
  const std::string message = error_of("a: 1\nb: [unclosed\n");
  EXPECT_NE(message.find("malformed YAML at line"), std::string::npos) << message;
  EXPECT_NE(message.find("column"), std::string::npos) << message;
}

TEST(YamlDocumentTest, ARepeatedKeyIsRefusedWithItsPath) {
  const std::string message = error_of("workers:\n  threads: 1\n  threads: 2\n");
  EXPECT_NE(message.find("'workers.threads' appears more than once (at line 3"), std::string::npos)
      << message;
}

TEST(YamlDocumentTest, AKeyThatIsNotAScalarNamesWhereItIs) {
  const std::string message = error_of("devices:\n  gpus: {[0]: mps}\n");
  EXPECT_NE(message.find("keys must be plain strings (under devices.gpus, at line 2"),
            std::string::npos)
      << message;
  EXPECT_NE(error_of("{[a]: 1}").find("at the top"), std::string::npos);
}

TEST(YamlDocumentTest, SeveralDocumentsAreRefused) {
  EXPECT_NE(error_of("a: 1\n---\nb: 2\n").find("expected one YAML document"), std::string::npos);
  // yaml-cpp 0.7 would produce empty documents forever for a stray top-level ','.
  EXPECT_NE(error_of(",").find("expected one YAML document"), std::string::npos);
}

TEST(YamlDocumentTest, DeepNestingAndAliasBombsAreRefused) {
  std::string deep;
  for (int i = 0; i <= kMaxYamlDepth + 1; ++i) deep += "[";
  for (int i = 0; i <= kMaxYamlDepth + 1; ++i) deep += "]";
  EXPECT_NE(error_of(deep).find("nests deeper than"), std::string::npos);

  // Each level holds the one before ten times: 10^6 nodes once the aliases are expanded.
  std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 6; ++i) {
    const std::string prev = "*a" + std::to_string(i - 1);
    bomb += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) bomb += (j ? ", " : "") + prev;
    bomb += "]\n";
  }
  EXPECT_NE(error_of(bomb).find("more than 100000 nodes"), std::string::npos);
}

TEST(YamlDocumentTest, TextThatIsNotUtf8IsRefusedWithItsOffset) {
  EXPECT_NE(error_of("name: caf\xe9\n").find("not valid UTF-8 (at byte 9)"), std::string::npos);
}

TEST(YamlDocumentTest, LoadingAFileThatCannotBeReadSaysWhich) {
  auto loaded = load_yaml_file("/nonexistent/outpost/agent.yaml");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.error().message().find("cannot read /nonexistent/outpost/agent.yaml"),
            std::string::npos)
      << loaded.error().message();
}

TEST(YamlDocumentTest, UnknownKeysGetTheNearestKnownOneOrTheList) {
  EXPECT_EQ(unknown_key_hint("batchng", {"batching", "methods"}), "did you mean batching?");
  EXPECT_EQ(unknown_key_hint("zzz", {"batching", "methods"}), "known here: batching, methods");
  // Two edits on a two-letter key is a different word, not a typo.
  EXPECT_EQ(closest_key("ab", {"xy"}), std::nullopt);
  EXPECT_EQ(closest_key("thread", {"threads", "threat"}), "threads");
}

}  // namespace
}  // namespace outpost
