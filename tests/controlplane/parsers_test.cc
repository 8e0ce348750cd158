// Parsers of untrusted input that are not resource configs: model package archives, tokens,
// input URLs, multipart/form-data predict bodies, and the agent's control messages.
#include <cstring>
#include <fstream>

#include <boost/asio/ip/address.hpp>
#include <gtest/gtest.h>

#include "controlplane/api/form_data.h"
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

// A body as `curl -F 'request=...;type=application/json' -F image=@file` writes it.
std::string curl_form(const std::string& boundary, const std::string& request,
                      const std::string& image) {
  return "--" + boundary + "\r\n" +
         "Content-Disposition: form-data; name=\"request\"\r\n"
         "Content-Type: application/json\r\n\r\n" +
         request + "\r\n--" + boundary + "\r\n" +
         "Content-Disposition: form-data; name=\"image\"; filename=\"image.f32\"\r\n"
         "Content-Type: application/octet-stream\r\n\r\n" +
         image + "\r\n--" + boundary + "--\r\n";
}

TEST(FormDataTest, ReadsWhatCurlSendsWithBinaryBytesIntact) {
  const std::string boundary = "------------------------d74496d66958873e";
  // Bytes that look like line ends and boundaries' dashes stay as they are.
  const std::string image("\x00\r\n--\xff\r\n\r\n", 10);
  const std::string body = curl_form(boundary, R"({"inputs": {}})", image);
  const auto parts = parse_form_data(body, "multipart/form-data; boundary=" + boundary);
  ASSERT_TRUE(parts.ok()) << parts.error().message();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].name, "request");
  EXPECT_EQ((*parts)[0].content_type, "application/json");
  EXPECT_EQ((*parts)[0].data, R"({"inputs": {}})");
  EXPECT_EQ((*parts)[1].name, "image");
  EXPECT_EQ((*parts)[1].data, image);
  // A quoted boundary, a preamble and an epilogue are fine; the type's case does not matter.
  EXPECT_TRUE(is_form_data("Multipart/Form-Data; boundary=\"a b\""));
  EXPECT_FALSE(is_form_data("application/json"));
  // The parts are views into the body, which must outlive them.
  const std::string framed = "preamble\r\n" + curl_form("a b", "{}", "x") + "epilogue";
  const auto quoted = parse_form_data(framed, "multipart/form-data; boundary=\"a b\"");
  ASSERT_TRUE(quoted.ok()) << quoted.error().message();
  EXPECT_EQ((*quoted)[1].data, "x");
}

TEST(FormDataTest, MalformedFormsAreRefusedNamingTheProblem) {
  const auto refused = [](const std::string& body, const std::string& type) {
    auto parts = parse_form_data(body, type);
    return parts.ok() ? std::string("accepted") : parts.error().message();
  };
  const std::string type = "multipart/form-data; boundary=b";
  const std::string good = curl_form("b", "{}", "bytes");
  EXPECT_EQ(refused(good, type), "accepted");
  EXPECT_NE(refused(good, "multipart/form-data").find("needs a boundary"), std::string::npos);
  EXPECT_NE(refused(good, "multipart/form-data; boundary=" + std::string(71, 'x'))
                .find("1 to 70 characters"),
            std::string::npos);
  EXPECT_NE(refused("no boundary here", type).find("first boundary is missing"), std::string::npos);
  // Cut anywhere before the closing boundary: refused, never read past the end.
  const size_t closing = good.rfind("\r\n--b--");
  for (size_t cut = 0; cut < closing; ++cut) {
    EXPECT_NE(refused(good.substr(0, cut), type), "accepted") << cut;
  }
  EXPECT_NE(refused("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", type)
                .find("no Content-Disposition"),
            std::string::npos);
  EXPECT_NE(refused("--b\r\nContent-Disposition: attachment; name=\"x\"\r\n\r\nx\r\n--b--", type)
                .find("not form-data"),
            std::string::npos);
  EXPECT_NE(
      refused("--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", type).find("no name"),
      std::string::npos);
  // A name whose escapes spell a line end would break the header it came from.
  EXPECT_NE(
      refused("--b\r\nContent-Disposition: form-data; name=\"a\\\r\\\nb\"\r\n\r\nx\r\n--b--", type)
          .find("control character"),
      std::string::npos);
  const std::string twice =
      "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n"
      "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n2\r\n--b--";
  EXPECT_EQ(refused(twice, type), "the form has two parts named 'x'");
}

TEST(PredictRequestTest, FormPartsAndBase64BecomeTheWorkersPartsOnce) {
  const std::string bytes("\x01\x02\x03\x04\x05\x06\x07\x08", 8);
  const std::string body = curl_form("b", "{}", bytes);
  const auto form = parse_form_data(body, "multipart/form-data; boundary=b").value();
  const json inputs = {{"image", {{"dtype", "float32"}, {"shape", {2}}, {"part", "image"}}},
                       {"raw", {{"bytes_b64", "AP8="}}},
                       {"text", "plain"}};
  const auto wire = wire_inputs(inputs, form);
  ASSERT_TRUE(wire.ok()) << wire.error().message();
  ASSERT_EQ(wire->parts.size(), 2u);
  EXPECT_EQ(wire->parts.at(wire->value["image"]["part"].get<size_t>()), bytes);
  EXPECT_EQ(wire->value["image"]["dtype"], "float32");
  EXPECT_EQ(wire->parts.at(wire->value["raw"]["part"].get<size_t>()), std::string("\0\xff", 2));
  EXPECT_EQ(wire->value["text"], "plain");
  // The part name must exist, every form part must be used, base64 must be valid.
  EXPECT_NE(wire_inputs({{"image", {{"part", "picture"}}}}, form)
                .error()
                .message()
                .find("the form part 'picture', which the request does not have"),
            std::string::npos);
  EXPECT_NE(wire_inputs({{"text", "x"}}, form)
                .error()
                .message()
                .find("the form part 'image' is not referred to by any input"),
            std::string::npos);
  EXPECT_NE(wire_inputs({{"x", {{"bytes_b64", "!!"}}}}, {}).error().message().find("base64"),
            std::string::npos);
  // Part numbers are not the client's to use: they would point at other inputs' bytes.
  EXPECT_NE(wire_inputs({{"a", {{"part", 0}}}, {"b", {{"bytes_b64", "AP8="}}}}, {})
                .error()
                .message()
                .find("by a string"),
            std::string::npos);
  // The request part itself is not an input's bytes.
  EXPECT_FALSE(wire_inputs({{"image", {{"part", "request"}}}}, form).ok());
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
