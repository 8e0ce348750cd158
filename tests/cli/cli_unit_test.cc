// The CLI's pieces that need no server: base URLs, inputs from flags, method choice, and the
// package archive it uploads.
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>

#include "cli/cli_config.h"
#include "cli/http_client.h"
#include "cli/package_archive.h"
#include "cli/predict_inputs.h"
#include "common/base64.h"
#include "protocol/tensor_wire.h"
#include "tests/support/test_pki.h"
#include <sys/stat.h>

namespace outpost::cli {
namespace {

using nlohmann::json;

const json& methods() {
  static const json parsed = json::parse(R"([
  {"name": "predict", "kind": "unary", "inputs": [{"name": "text", "type": "str"},
                                                  {"name": "upper", "type": "bool", "default": true}]},
  {"name": "count", "kind": "unary", "inputs": [{"name": "texts", "type": "List[str]"}]},
  {"name": "generate", "kind": "generate", "inputs": [{"name": "prompt", "type": "str"}]},
  {"name": "words", "kind": "stream", "inputs": [{"name": "text", "type": "str"}]}])");
  return parsed;
}

TEST(CliTest, BaseUrlsMustBeHttps) {
  auto url = parse_base_url("https://control.example:8443/prefix/");
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->host, "control.example");
  EXPECT_EQ(url->port, 8443);
  EXPECT_EQ(url->path, "/prefix");
  auto clear = parse_base_url("http://control.example");
  ASSERT_FALSE(clear.ok());
  EXPECT_NE(clear.error().message().find("https"), std::string::npos);
  EXPECT_FALSE(parse_base_url("https://:80").ok());
}

TEST(CliTest, MethodsArePickedByShapeOrName) {
  EXPECT_EQ(pick_method(methods(), "", "unary")->value("name", ""), "predict");
  EXPECT_EQ(pick_method(methods(), "", "stream")->value("name", ""), "words");
  EXPECT_EQ(pick_method(methods(), "count", "unary")->value("name", ""), "count");
  auto wrong = pick_method(methods(), "generate", "unary");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message().find("outpost model generate"), std::string::npos);
  EXPECT_FALSE(pick_method(methods(), "nope", "unary").ok());
}

// What `outpost model test` sends its local worker: the flags' inputs, the first one placed
// under the method's first input name.
Result<json> build_inputs(const InputFlags& flags, const json& method, std::istream& in) {
  OUTPOST_ASSIGN_OR_RETURN(auto inputs, build_call_inputs(flags, in));
  return place_first(inputs, method);
}

Result<std::vector<json>> build_stream_items(const InputFlags& flags, const json& method,
                                             std::istream& in) {
  OUTPOST_ASSIGN_OR_RETURN(auto items, build_stream_call_items(flags, in));
  std::vector<json> out;
  for (const auto& item : items) {
    OUTPOST_ASSIGN_OR_RETURN(auto placed, place_first(item, method));
    out.push_back(std::move(placed));
  }
  return out;
}

// A remote call sends --text as "input" and lets the server find the method and its first
// input: the CLI needs no signature, so a predict is one request.
TEST(CliTest, TheFirstInputGoesUnnamedToTheServer) {
  std::istringstream no_stdin;
  InputFlags text;
  text.text = {"hello"};
  text.named = {"upper=false"};
  auto inputs = build_call_inputs(text, no_stdin);
  ASSERT_TRUE(inputs.ok()) << inputs.error().message();
  json body = json::object();
  inputs->write_to(body);
  EXPECT_EQ(body, (json{{"input", "hello"}, {"inputs", {{"upper", false}}}}));
  InputFlags named_only;
  named_only.named = {"text=hi"};
  json plain = json::object();
  build_call_inputs(named_only, no_stdin)->write_to(plain);
  EXPECT_FALSE(plain.contains("input"));
  // Locally, --text and an input of the same name are refused, as the server refuses them.
  InputFlags twice;
  twice.text = {"a"};
  twice.named = {"text=b"};
  const auto placed = build_inputs(twice, *pick_method(methods(), "", "unary"), no_stdin);
  ASSERT_FALSE(placed.ok());
  EXPECT_NE(placed.error().message().find("both set the method's first input"), std::string::npos);
}

TEST(CliTest, InputsFromFlagsFillTheFirstInputOrNamedOnes) {
  const json method = *pick_method(methods(), "", "unary");
  std::istringstream no_stdin;
  InputFlags text;
  text.text = {"hello"};
  text.named = {"upper=false"};
  EXPECT_EQ(*build_inputs(text, method, no_stdin), (json{{"text", "hello"}, {"upper", false}}));
  InputFlags url;
  url.url = "https://example.com/a.txt";
  EXPECT_EQ((*build_inputs(url, method, no_stdin))["text"]["url"], "https://example.com/a.txt");
  testing::TempDir dir;
  std::ofstream(dir.file("in.bin")) << "abc";
  InputFlags file;
  file.file = dir.file("in.bin");
  EXPECT_EQ((*build_inputs(file, method, no_stdin))["text"]["bytes_b64"], "YWJj");
  InputFlags both;
  both.text = {"a"};
  both.url = "https://x/";
  EXPECT_FALSE(build_inputs(both, method, no_stdin).ok());
  InputFlags bad_json;
  bad_json.inputs_json = "[1]";
  EXPECT_FALSE(build_inputs(bad_json, method, no_stdin).ok());
  InputFlags items;
  items.text = {"a", "b"};
  auto stream = build_stream_items(items, *pick_method(methods(), "", "stream"), no_stdin);
  ASSERT_TRUE(stream.ok());
  EXPECT_EQ(stream->size(), 2u);
  EXPECT_EQ((*stream)[1]["text"], "b");
}

// Inputs too large for a command line: --inputs from a file or stdin, a tensor from a .npy file.
TEST(CliTest, LargeInputsComeFromFilesStdinAndNumpyFiles) {
  const json method = *pick_method(methods(), "", "unary");
  testing::TempDir dir;
  std::ofstream(dir.file("inputs.json")) << R"({"text": "from a file"})";
  InputFlags from_file;
  from_file.inputs_json = "@" + dir.file("inputs.json");
  std::istringstream no_stdin;
  EXPECT_EQ(*build_inputs(from_file, method, no_stdin), (json{{"text", "from a file"}}));
  InputFlags from_stdin;
  from_stdin.inputs_json = "-";
  std::istringstream stdin_json(R"({"text": "from stdin"})");
  EXPECT_EQ(*build_inputs(from_stdin, method, stdin_json), (json{{"text", "from stdin"}}));
  InputFlags missing;
  missing.inputs_json = "@" + dir.file("nope.json");
  EXPECT_NE(build_inputs(missing, method, no_stdin).error().message().find("cannot read"),
            std::string::npos);
  std::istringstream stream_items(R"([{"text": "a"}, {"text": "b"}])");
  EXPECT_EQ(
      build_stream_items(from_stdin, *pick_method(methods(), "", "stream"), stream_items)->size(),
      2u);

  // numpy.save wrote the classifier's reference input; PyTorch wrote the same values as JSON.
  const std::string reference = std::string(OUTPOST_MODELS_DIR) + "/reference/";
  InputFlags npy;
  npy.named = {"x=@" + reference + "classifier_x.npy"};
  auto inputs = build_inputs(npy, method, no_stdin);
  ASSERT_TRUE(inputs.ok()) << inputs.error().to_string();
  auto as_values = protocol::tensors_to_values((*inputs)["x"], 1 << 20);
  ASSERT_TRUE(as_values.ok()) << as_values.error().to_string();
  json expected;
  std::ifstream(reference + "classifier.json") >> expected;
  EXPECT_EQ((*as_values)["shape"], expected["inputs"]["x"]["shape"]);
  ASSERT_EQ((*as_values)["values"].size(), expected["inputs"]["x"]["values"].size());
  for (size_t i = 0; i < expected["inputs"]["x"]["values"].size(); ++i) {
    EXPECT_FLOAT_EQ((*as_values)["values"][i].get<float>(),
                    expected["inputs"]["x"]["values"][i].get<float>());
  }
  InputFlags fortran;
  fortran.named = {"x=@" + reference + "classifier_x_fortran.npy"};
  EXPECT_NE(build_inputs(fortran, method, no_stdin).error().message().find("Fortran order"),
            std::string::npos);
  // Any other file goes as bytes.
  InputFlags bytes;
  bytes.named = {"text=@" + dir.file("inputs.json")};
  EXPECT_TRUE((*build_inputs(bytes, method, no_stdin))["text"].contains("bytes_b64"));
}

TEST(CliTest, BytesGoAsFormPartsAndNeverAsBase64) {
  // Without bytes, the body is the JSON itself.
  const json plain = {{"runner_selector", {{"deployment", {{"id", "d"}}}}},
                      {"inputs", {{"text", "hi"}}}};
  const auto as_json = wire_body(plain);
  ASSERT_TRUE(as_json.ok());
  EXPECT_EQ(as_json->content_type, "application/json");
  EXPECT_EQ(json::parse(as_json->body), plain);
  // With a tensor and a file: a form whose "request" refers to parts holding the raw bytes.
  const std::string tensor("\x00\x00\x80\x3f", 4);
  const std::string file = "file bytes \r\n--not a boundary";
  json body = plain;
  body["inputs"]["x"] = {{"dtype", "float32"}, {"shape", {1}}, {"data_b64", base64_encode(tensor)}};
  body["input"] = {{"bytes_b64", base64_encode(file)}};
  const auto form = wire_body(body);
  ASSERT_TRUE(form.ok()) << form.error().message();
  const std::string prefix = "multipart/form-data; boundary=";
  ASSERT_EQ(form->content_type.rfind(prefix, 0), 0u) << form->content_type;
  const std::string boundary = form->content_type.substr(prefix.size());
  EXPECT_EQ(form->body.find(base64_encode(tensor)), std::string::npos);
  EXPECT_EQ(form->body.find(base64_encode(file)), std::string::npos);
  // Split the way a server would: parts between the delimiters, headers before the blank line.
  std::map<std::string, std::string> parts;
  const std::string delimiter = "--" + boundary;
  ASSERT_EQ(form->body.rfind(delimiter, 0), 0u);
  size_t at = delimiter.size() + 2;
  while (true) {
    const size_t headers_end = form->body.find("\r\n\r\n", at);
    const size_t end = form->body.find("\r\n" + delimiter, at);
    ASSERT_NE(end, std::string::npos);
    const std::string headers = form->body.substr(at, headers_end - at);
    const size_t name_at = headers.find("name=\"") + 6;
    parts[headers.substr(name_at, headers.find('"', name_at) - name_at)] =
        form->body.substr(headers_end + 4, end - headers_end - 4);
    at = end + 2 + delimiter.size();
    if (form->body.compare(at, 2, "--") == 0) break;
    at += 2;
  }
  ASSERT_EQ(parts.size(), 3u);
  const json request = json::parse(parts.at("request"));
  EXPECT_EQ(request["runner_selector"], plain["runner_selector"]);
  EXPECT_EQ(request["inputs"]["text"], "hi");
  EXPECT_EQ(request["inputs"]["x"]["dtype"], "float32");
  EXPECT_EQ(parts.at(request["inputs"]["x"]["part"].get<std::string>()), tensor);
  EXPECT_EQ(parts.at(request["input"]["part"].get<std::string>()), file);
}

TEST(CliTest, PackageArchiveHoldsTheTopLevelFiles) {
  testing::TempDir dir;
  std::ofstream(dir.file("config.yaml")) << "model:\n  id: \"m1\"\n";
  std::ofstream(dir.file("model.pt")) << std::string(1000, 'w');
  std::ofstream(dir.file(".hidden")) << "x";
  EXPECT_EQ(*package_model_id(dir.path()), "m1");
  testing::TempDir out;
  ASSERT_TRUE(write_package_archive(dir.path(), out.file("p.tar")).ok());
  std::ifstream in(out.file("p.tar"), std::ios::binary);
  const std::string tar((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(tar.size(), 512u + 512u + 512u + 1024u + 1024u);  // two headers, data, end
  EXPECT_EQ(tar.substr(0, 11), "config.yaml");
  EXPECT_EQ(tar.find(".hidden"), std::string::npos);
  mkdir(dir.file("sub").c_str(), 0700);
  EXPECT_FALSE(write_package_archive(dir.path(), out.file("q.tar")).ok());
}

TEST(CliTest, TheLoginConfigIsPrivate) {
  testing::TempDir dir;
  setenv("OUTPOST_CONFIG_DIR", dir.file("cfg").c_str(), 1);
  EXPECT_EQ(load_cli_config().error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(save_cli_config({"https://h:1", "/ca.pem", "alice", "opat_a_b"}).ok());
  struct stat file {};
  ASSERT_EQ(stat(config_path().c_str(), &file), 0);
  EXPECT_EQ(file.st_mode & 0777, 0600u);
  struct stat folder {};
  ASSERT_EQ(stat(config_dir().c_str(), &folder), 0);
  EXPECT_EQ(folder.st_mode & 0777, 0700u);
  auto loaded = load_cli_config();
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->pat, "opat_a_b");
  EXPECT_EQ(loaded->user_id, "alice");
  unsetenv("OUTPOST_CONFIG_DIR");
}

}  // namespace
}  // namespace outpost::cli
