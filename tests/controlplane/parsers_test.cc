// Parsers of untrusted input that are not resource configs: model package archives, tokens,
// input URLs, and the agent's control messages.
#include <cstring>
#include <fstream>

#include <boost/asio/ip/address.hpp>
#include <gtest/gtest.h>

#include "controlplane/api/predict_request.h"
#include "controlplane/api/url_fetcher.h"
#include "controlplane/auth/secrets.h"
#include "controlplane/resources/tar_reader.h"
#include "tests/controlplane/control_fixture.h"

namespace outpost::control {
namespace {

using nlohmann::json;

class Collect final : public TarVisitor {
 public:
  Status on_file(const std::string& name, uint64_t) override {
    files[name];
    current = name;
    return {};
  }
  Status on_data(std::string_view bytes) override {
    files[current] += bytes;
    return {};
  }
  Status on_file_end() override { return {}; }
  std::map<std::string, std::string> files;
  std::string current;
};

std::string tar_of(const std::map<std::string, std::string>& files) {
  testing::TempDir dir;
  testing::write_tar(dir.file("a.tar"), files);
  std::ifstream in(dir.file("a.tar"), std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

Status read(const std::string& archive, Collect& out, TarLimits limits = {}) {
  MemorySource source(archive);
  return read_tar(source, limits, out);
}

TEST(PredictRequestTest, TensorFormatIsBase64OrValues) {
  const auto parse = [](const char* body) {
    return parse_predict_request(nlohmann::json::parse(body));
  };
  EXPECT_FALSE(parse(R"({"runner_selector": {}})")->tensor_values);
  EXPECT_TRUE(parse(R"({"runner_selector": {}, "tensor_format": "values"})")->tensor_values);
  EXPECT_FALSE(parse(R"({"runner_selector": {}, "tensor_format": "base64"})")->tensor_values);
  auto wrong = parse(R"({"runner_selector": {}, "tensor_format": "numbers"})");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(wrong.error().message().find("tensor_format"), std::string::npos);
  EXPECT_NE(wrong.error().message().find("values"), std::string::npos);
}

// "input" is the method's first input, whatever its name: what the CLI sends for --text, so that
// it needs no signature before the call.
TEST(PredictRequestTest, TheUnnamedInputGoesUnderTheMethodsFirstInput) {
  using nlohmann::json;
  const auto request = parse_predict_request(
      json::parse(R"({"runner_selector": {}, "input": "hi", "inputs": {"upper": true}})"));
  ASSERT_TRUE(request.ok()) << request.error().message();
  const json method = json::parse(
      R"({"name": "predict", "inputs": [{"name": "text", "type": "str"},
                                          {"name": "upper", "type": "bool", "default": false}]})");
  auto placed = place_first_input(method, request->inputs, request->input);
  ASSERT_TRUE(placed.ok()) << placed.error().message();
  EXPECT_EQ(*placed, json::parse(R"({"text": "hi", "upper": true})"));
  EXPECT_TRUE(check_inputs(method, *placed, false).ok());

  auto twice = place_first_input(method, json{{"text", "a"}}, json("b"));
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.error().message().find("both set the input 'text'"), std::string::npos);
  auto none = place_first_input(json::parse(R"({"name": "tick", "inputs": []})"), json::object(),
                                json("x"));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message().find("takes no inputs"), std::string::npos);
  // Without "input", the inputs are as sent.
  const json as_sent = json::parse(R"({"text": "a"})");
  EXPECT_EQ(*place_first_input(method, as_sent, std::nullopt), as_sent);
}

TEST(TarReaderTest, ReadsAPackage) {
  Collect out;
  const std::string big(70000, 'x');
  ASSERT_TRUE(read(tar_of({{"config.yaml", "model: {id: a}"}, {"model.pt", big}}), out).ok());
  EXPECT_EQ(out.files["config.yaml"], "model: {id: a}");
  EXPECT_EQ(out.files["model.pt"], big);
}

TEST(TarReaderTest, RefusesWhatAPackageMustNotHold) {
  Collect out;
  EXPECT_FALSE(read(tar_of({{"../evil", "x"}}), out).ok());
  EXPECT_FALSE(read(tar_of({{"dir/file", "x"}}), out).ok());
  std::string archive = tar_of({{"a", "x"}});
  archive[10] ^= 1;  // the header checksum no longer matches
  const Status corrupt = read(archive, out);
  ASSERT_FALSE(corrupt.ok());
  EXPECT_NE(corrupt.error().message().find("checksum"), std::string::npos);
  EXPECT_FALSE(read(tar_of({{"a", std::string(1000, 'x')}}).substr(0, 700), out).ok());
  TarLimits limits;
  limits.max_total_bytes = 100;
  EXPECT_EQ(read(tar_of({{"a", std::string(1000, 'x')}}), out, limits).error().code(),
            ErrorCode::kInvalidArgument);
  std::string link = tar_of({{"a", ""}});
  link[156] = '2';  // a symbolic link
  unsigned sum = 0;
  std::memset(link.data() + 148, ' ', 8);
  for (int i = 0; i < 512; ++i) sum += static_cast<unsigned char>(link[i]);
  std::snprintf(link.data() + 148, 8, "%06o", sum);
  EXPECT_FALSE(read(link, out).ok());
}

TEST(SecretsTest, TokensRoundTripAndHashesVerifyInConstantTime) {
  const std::string token = make_token(kPatPrefix, "abc", "s3cret");
  auto parsed = parse_token(token, kPatPrefix);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->id, "abc");
  EXPECT_EQ(parsed->secret, "s3cret");
  EXPECT_FALSE(parse_token(token, kJoinTokenPrefix).ok());
  EXPECT_FALSE(parse_token("opat_", kPatPrefix).ok());
  const std::string hash = hash_secret("s3cret", 1000);
  EXPECT_EQ(hash.find("s3cret"), std::string::npos);
  EXPECT_TRUE(verify_secret("s3cret", hash));
  EXPECT_FALSE(verify_secret("s3creT", hash));
  EXPECT_FALSE(verify_secret("s3cret", "garbage"));
  EXPECT_NE(hash_secret("s3cret", 1000), hash);  // a fresh salt each time
}

TEST(UrlFetcherTest, PrivateAndLoopbackAddressesAreNotPublic) {
  using boost::asio::ip::make_address;
  for (const char* address :
       {"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "100.64.0.1",
        "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "224.0.0.1"}) {
    EXPECT_FALSE(is_public_address(make_address(address))) << address;
  }
  for (const char* address : {"8.8.8.8", "1.1.1.1", "2606:4700::1111"}) {
    EXPECT_TRUE(is_public_address(make_address(address))) << address;
  }
}

TEST(UrlFetcherTest, ParsesUrls) {
  auto url = parse_fetch_url("https://example.com:8443/a/b?c=d#frag");
  ASSERT_TRUE(url.ok());
  EXPECT_TRUE(url->https);
  EXPECT_EQ(url->port, 8443);
  EXPECT_EQ(url->target, "/a/b?c=d");
  EXPECT_FALSE(parse_fetch_url("ftp://x/").ok());
  EXPECT_FALSE(parse_fetch_url("http://user:pw@x/").ok());
  EXPECT_FALSE(parse_fetch_url("http://x:99999/").ok());
  EXPECT_FALSE(parse_fetch_url("http:///a").ok());
}

}  // namespace
}  // namespace outpost::control
