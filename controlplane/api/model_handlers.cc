// Models and their versions, and the upload of a model package.
#include <filesystem>
#include <fstream>
#include <map>

#include "common/json_reader.h"
#include "common/log.h"
#include "common/sha256.h"
#include "controlplane/api/api_handlers.h"
#include "controlplane/auth/secrets.h"
#include "controlplane/resources/document.h"
#include "controlplane/resources/resource_config.h"
#include "controlplane/resources/tar_reader.h"
#include "controlplane/state/ids.h"

namespace outpost::control {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

class FileSource final : public ByteSource {
 public:
  explicit FileSource(const std::string& path) : in_(path, std::ios::binary) {}
  bool ok() const { return static_cast<bool>(in_); }
  Result<size_t> read(char* out, size_t size) override {
    in_.read(out, static_cast<std::streamsize>(size));
    if (in_.bad()) return unavailable("cannot read the uploaded package");
    return static_cast<size_t>(in_.gcount());
  }

 private:
  std::ifstream in_;
};

struct PackageFile {
  std::string path;
  std::string sha256;
  uint64_t size = 0;
};

// Writes the archive's files into a directory, hashing each as it goes.
class PackageWriter final : public TarVisitor {
 public:
  explicit PackageWriter(std::string dir) : dir_(std::move(dir)) {}

  Status on_file(const std::string& name, uint64_t size) override {
    current_ = name;
    files_[name] = PackageFile{dir_ + "/" + name, "", size};
    out_.open(files_[name].path, std::ios::binary | std::ios::trunc);
    if (!out_) return unavailable("cannot write the package to " + dir_);
    digest_ = Sha256();
    return {};
  }
  Status on_data(std::string_view bytes) override {
    out_.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out_) return unavailable("cannot write the package (disk full?)");
    digest_.update(bytes);
    return {};
  }
  Status on_file_end() override {
    out_.close();
    if (!out_) return unavailable("cannot write the package (disk full?)");
    files_[current_].sha256 = digest_.hex();
    return {};
  }
  const std::map<std::string, PackageFile>& files() const { return files_; }

 private:
  std::string dir_;
  Sha256 digest_;
  std::ofstream out_;
  std::string current_;
  std::map<std::string, PackageFile> files_;
};

// Removes a directory tree when it goes out of scope.
class ScopedDir {
 public:
  explicit ScopedDir(std::string path) : path_(std::move(path)) {}
  ~ScopedDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScopedDir(const ScopedDir&) = delete;
  ScopedDir& operator=(const ScopedDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

json model_view(const Model& model, const std::optional<ModelVersion>& latest) {
  json out{{"id", model.id},
           {"description", model.description},
           {"created_at", format_time(model.created_at)}};
  out["model_version"] = latest.has_value() ? version_view(*latest) : json(nullptr);
  return out;
}

Result<std::string> read_small_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return unavailable("cannot read " + path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text;
}

}  // namespace

json version_view(const ModelVersion& version) {
  json out{{"id", version.id},
           {"model_id", version.model_id},
           {"seq", version.seq},
           {"created_at", format_time(version.created_at)},
           {"method_signatures", version.methods},
           {"artifacts", version.artifacts},
           {"config", version.config}};
  if (version.config.is_object() && version.config.contains("inference_compute_info")) {
    out["inference_compute_info"] = version.config["inference_compute_info"];
  }
  return out;
}

Result<Reply> create_model(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto body, body_object(call));
  OUTPOST_ASSIGN_OR_RETURN(auto root, ObjectReader::create(body, ""));
  OUTPOST_RETURN_IF_ERROR(root.only({"model"}));
  OUTPOST_ASSIGN_OR_RETURN(auto model, root.required_object("model"));
  OUTPOST_RETURN_IF_ERROR(model.only({"id", "description"}));
  Model record;
  OUTPOST_ASSIGN_OR_RETURN(record.id, model.required_string("id"));
  OUTPOST_RETURN_IF_ERROR(check_id(record.id, "model.id"));
  OUTPOST_ASSIGN_OR_RETURN(auto description, model.optional_string("description"));
  record.description = description.value_or("");
  if (record.description.size() > 1024) {
    return field_error("model.description", "is longer than 1024 characters");
  }
  record.user_id = call.user();
  record.created_at = s.clock->now_seconds();
  OUTPOST_RETURN_IF_ERROR(s.store->create_model(record));
  return Reply{201, {{"model", model_view(record, std::nullopt)}}};
}

Result<Reply> list_models(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto models, s.store->list_models(call.user()));
  json out = json::array();
  for (const auto& model : models) {
    OUTPOST_ASSIGN_OR_RETURN(auto latest, s.store->latest_version(call.user(), model.id));
    out.push_back(model_view(model, latest));
  }
  return Reply{200, {{"models", out}}};
}

Result<Reply> get_model(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(auto model, s.store->get_model(call.user(), call.param("model")));
  OUTPOST_ASSIGN_OR_RETURN(auto latest, s.store->latest_version(call.user(), model.id));
  return Reply{200, {{"model", model_view(model, latest)}}};
}

Result<Reply> delete_model(ApiServices& s, const Call& call) {
  OUTPOST_RETURN_IF_ERROR(s.store->delete_model(call.user(), call.param("model")));
  return Reply{200, json::object()};
}

Result<Reply> list_versions(ApiServices& s, const Call& call) {
  OUTPOST_RETURN_IF_ERROR(s.store->get_model(call.user(), call.param("model")).status());
  OUTPOST_ASSIGN_OR_RETURN(auto versions, s.store->list_versions(call.user(), call.param("model")));
  json out = json::array();
  for (const auto& version : versions) out.push_back(version_view(version));
  return Reply{200, {{"model_versions", out}}};
}

Result<Reply> get_version(ApiServices& s, const Call& call) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto version, s.store->get_version(call.user(), call.param("model"), call.param("version")));
  return Reply{200, {{"model_version", version_view(version)}}};
}

Result<Reply> upload_version(ApiServices& s, const Call& call) {
  const std::string& model_id = call.param("model");
  OUTPOST_RETURN_IF_ERROR(check_id(model_id, "model id (in the URL)"));
  const std::string content_type = call.request->header("content-type");
  if (call.request->body_file.empty() || (content_type.rfind("application/x-tar", 0) != 0 &&
                                          content_type.rfind("application/octet-stream", 0) != 0)) {
    return invalid_argument(
        "send the model package as a tar archive with Content-Type: "
        "application/x-tar (`tar -C DIR -cf - .`, or `outpost model upload "
        "DIR`)");
  }
  FileSource source(call.request->body_file);
  if (!source.ok()) return unavailable("cannot read the uploaded package");
  ScopedDir dir(s.temp_dir + "/package-" + random_hex(8));
  std::error_code ec;
  fs::create_directories(dir.path(), ec);
  if (ec) return unavailable("cannot unpack the package: " + ec.message());
  PackageWriter writer(dir.path());
  TarLimits limits;
  limits.max_total_bytes = s.config->max_model_bytes;
  OUTPOST_RETURN_IF_ERROR(read_tar(source, limits, writer));
  const auto& files = writer.files();
  const auto config_file = files.find("config.yaml");
  if (config_file == files.end()) {
    return invalid_argument(
        "the package has no config.yaml (it needs a model: section with the "
        "model's id)");
  }
  OUTPOST_ASSIGN_OR_RETURN(auto config_text, read_small_file(config_file->second.path));
  auto config = parse_yaml(config_text);
  if (!config.ok()) return invalid_argument("config.yaml: " + config.error().message());
  if (!config->is_object()) return invalid_argument("config.yaml: must be a YAML mapping");
  const json model_doc = config->value("model", json(nullptr));
  auto model_section = ObjectReader::create(model_doc, "model");
  if (!model_section.ok()) {
    return invalid_argument("config.yaml: " + model_section.error().message());
  }
  auto config_model_id = model_section->required_string("id");
  if (!config_model_id.ok()) {
    return invalid_argument("config.yaml: " + config_model_id.error().message());
  }
  if (config_model_id.value() != model_id) {
    return invalid_argument("config.yaml: model.id '" + config_model_id.value() +
                            "' differs from the model '" + model_id + "' being uploaded to");
  }
  // model.user_id and app_id name where Clarifai's CLI uploads to; here a package always goes to
  // the caller's account, so they are accepted and ignored.
  if (config->contains("inference_compute_info")) {
    auto info =
        parse_inference_compute_info((*config)["inference_compute_info"], "inference_compute_info");
    if (!info.ok()) return invalid_argument("config.yaml: " + info.error().message());
    (*config)["inference_compute_info"] = info.value();
  }

  auto inspected = s.inspector->inspect(dir.path());
  if (!inspected.ok()) {
    // The worker names the folder it read, which is this server's temporary one: the user
    // knows it as "the package".
    std::string message = inspected.error().message();
    for (const std::string& prefix : {"model package " + dir.path(), dir.path()}) {
      for (auto at = message.find(prefix); at != std::string::npos; at = message.find(prefix)) {
        message.replace(at, prefix.size(), "the package");
      }
    }
    return Error(inspected.error().code(), message);
  }
  if (inspected->model_id != model_id) {
    return invalid_argument("the worker read model id '" + inspected->model_id +
                            "' from the package, not '" + model_id + "'");
  }
  const auto model_file = files.find(inspected->file);
  if (model_file == files.end()) {
    return invalid_argument("the package has no " + inspected->file);
  }
  if (!inspected->file_sha256.empty() && inspected->file_sha256 != model_file->second.sha256) {
    return Error(ErrorCode::kDataLoss,
                 "the worker saw " + inspected->file + " with a different sha256 than the upload");
  }

  json artifacts = json::array();
  for (const auto& [name, file] : files) {
    OUTPOST_RETURN_IF_ERROR(s.artifacts->import(file.path, file.sha256));
    artifacts.push_back({{"name", name}, {"sha256", file.sha256}, {"size", file.size}});
  }
  ModelVersion version;
  version.user_id = call.user();
  version.model_id = model_id;
  version.id = random_hex(16);
  version.config = std::move(config).value();
  version.methods = inspected->methods;
  version.artifacts = artifacts;
  version.created_at = s.clock->now_seconds();
  OUTPOST_ASSIGN_OR_RETURN(auto stored, s.store->create_version(std::move(version)));
  LOG_NOTICE("control.model_uploaded",
             call.request->request_id << ": model " << call.user() << "/" << model_id << " version "
                                      << stored.id << " (" << model_file->second.size << " bytes)");
  json reply{{"model_version", version_view(stored)}};
  if (!inspected->warnings.empty()) reply["warnings"] = inspected->warnings;
  return Reply{201, std::move(reply)};
}

}  // namespace outpost::control
