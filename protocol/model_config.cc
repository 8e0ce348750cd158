#include "protocol/model_config.h"

#include <algorithm>
#include <utility>

#include "common/yaml_document.h"
#include "protocol/worker_protocol.h"

namespace outpost::protocol {
namespace {

using nlohmann::json;

// Reads an integer key of `object` in [low, high] into `out`; absent keys leave `out` alone.
Status read_int(const json& object, const std::string& key, int64_t low, int64_t high,
                const std::string& where, int64_t& out) {
  const auto it = object.find(key);
  if (it == object.end()) return {};
  if (!it->is_number_integer() ||
      (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(high)) ||
      it->get<int64_t>() < low || it->get<int64_t>() > high) {
    return invalid_argument("config.yaml: " + where + key + " must be an integer from " +
                            std::to_string(low) + " to " + std::to_string(high) + ", got " +
                            json_text(*it));
  }
  out = it->get<int64_t>();
  return {};
}

Status read_bool(const json& object, const std::string& key, const std::string& where, bool& out) {
  const auto it = object.find(key);
  if (it == object.end()) return {};
  if (!it->is_boolean()) {
    return invalid_argument("config.yaml: " + where + key + " must be true or false, got " +
                            json_text(*it));
  }
  out = it->get<bool>();
  return {};
}

Status check_keys(const json& object, const std::vector<std::string_view>& known,
                  const std::string& where) {
  for (const auto& [key, value] : object.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return invalid_argument("config.yaml: unknown key " + where + key + " (" +
                              unknown_key_hint(key, known) + ")");
    }
  }
  return {};
}

Status read_batching(const json& object, const std::string& where, BatchingConfig& out) {
  if (!object.is_object()) return invalid_argument("config.yaml: " + where + " must be a map");
  const std::string prefix = where + ".";
  OUTPOST_RETURN_IF_ERROR(
      check_keys(object, {"max_batch_size", "max_queue_delay_us", "max_queue_size"}, prefix));
  OUTPOST_RETURN_IF_ERROR(
      read_int(object, "max_batch_size", 0, 1 << 16, prefix, out.max_batch_size));
  OUTPOST_RETURN_IF_ERROR(
      read_int(object, "max_queue_delay_us", 0, 60'000'000, prefix, out.max_queue_delay_us));
  OUTPOST_RETURN_IF_ERROR(
      read_int(object, "max_queue_size", 1, 1 << 20, prefix, out.max_queue_size));
  return {};
}

Result<TensorSpec> read_tensor_spec(const json& object, const std::string& where) {
  if (!object.is_object()) {
    return invalid_argument("config.yaml: " + where + " must be a map with dtype and shape");
  }
  OUTPOST_RETURN_IF_ERROR(check_keys(object, {"dtype", "shape"}, where + "."));
  TensorSpec spec;
  const auto dtype = object.find("dtype");
  if (dtype != object.end()) {
    const auto parsed =
        dtype->is_string() ? dtype_from_name(dtype->get<std::string>()) : std::nullopt;
    if (!parsed) return invalid_argument("config.yaml: " + where + ".dtype is not a known dtype");
    spec.dtype = *parsed;
  }
  const auto shape = object.find("shape");
  if (shape == object.end() || !shape->is_array() || shape->size() > kMaxRank) {
    return invalid_argument("config.yaml: " + where +
                            ".shape must be a list of sizes (-1 for any size)");
  }
  for (const auto& dim : *shape) {
    if (!dim.is_number_integer() || dim.get<int64_t>() < -1 || dim.get<int64_t>() > (1LL << 40)) {
      return invalid_argument("config.yaml: " + where +
                              ".shape must be a list of sizes (-1 for any size)");
    }
    spec.shape.push_back(dim.get<int64_t>());
  }
  return spec;
}

bool is_hex_sha256(const std::string& s) {
  if (s.size() != 64) return false;
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool is_safe_file_name(const std::string& s) {
  if (s.empty() || s.size() > 255 || s == "." || s == "..") return false;
  for (const char c : s) {
    if (c == '/' || c == '\0') return false;
  }
  return true;
}

Status read_decoder(const json& object, const std::string& where, DecoderConfig& out) {
  if (!object.is_object()) return invalid_argument("config.yaml: " + where + " must be a map");
  const std::string prefix = where + ".";
  OUTPOST_RETURN_IF_ERROR(
      check_keys(object,
                 {"layers", "kv_heads", "head_dim", "max_context", "slots", "prefill_chunk",
                  "cache_dtype", "eos_token_ids", "tokenizer", "tokenizer_file"},
                 prefix));
  for (const char* key : {"layers", "kv_heads", "head_dim", "max_context"}) {
    if (!object.contains(key)) {
      return invalid_argument("config.yaml: " + prefix + key +
                              " is required (the KV cache's geometry)");
    }
  }
  OUTPOST_RETURN_IF_ERROR(read_int(object, "layers", 1, 1024, prefix, out.layers));
  OUTPOST_RETURN_IF_ERROR(read_int(object, "kv_heads", 1, 1024, prefix, out.kv_heads));
  OUTPOST_RETURN_IF_ERROR(read_int(object, "head_dim", 1, 4096, prefix, out.head_dim));
  OUTPOST_RETURN_IF_ERROR(read_int(object, "max_context", 2, 1 << 20, prefix, out.max_context));
  OUTPOST_RETURN_IF_ERROR(read_int(object, "slots", 1, 4096, prefix, out.slots));
  out.prefill_chunk = std::min<int64_t>(out.prefill_chunk, out.max_context);
  OUTPOST_RETURN_IF_ERROR(
      read_int(object, "prefill_chunk", 1, out.max_context, prefix, out.prefill_chunk));
  if (const auto it = object.find("cache_dtype"); it != object.end()) {
    const auto dtype = it->is_string() ? dtype_from_name(it->get<std::string>()) : std::nullopt;
    if (!dtype || !dtype_is_floating(*dtype)) {
      return invalid_argument("config.yaml: " + prefix +
                              "cache_dtype must be float32, float16 or bfloat16");
    }
    out.cache_dtype = *dtype;
  }
  if (const auto it = object.find("eos_token_ids"); it != object.end()) {
    if (!it->is_array()) {
      return invalid_argument("config.yaml: " + prefix + "eos_token_ids must be a list of ids");
    }
    for (const auto& id : *it) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0) {
        return invalid_argument("config.yaml: " + prefix +
                                "eos_token_ids must be a list of ids (integers from 0)");
      }
      out.eos_token_ids.push_back(id.get<int64_t>());
    }
  }
  if (const auto it = object.find("tokenizer"); it != object.end()) {
    if (!it->is_string() || (*it != "bytes" && *it != "sentencepiece")) {
      return invalid_argument("config.yaml: " + prefix +
                              "tokenizer must be bytes (token ids 0..255 are the bytes of the "
                              "text), sentencepiece (tokenizer_file), or absent (calls send and "
                              "receive token ids)");
    }
    out.tokenizer = it->get<std::string>();
  }
  if (const auto it = object.find("tokenizer_file"); it != object.end()) {
    if (!it->is_string() || !is_safe_file_name(it->get<std::string>())) {
      return invalid_argument("config.yaml: " + prefix +
                              "tokenizer_file must be a file name in the package folder (no '/')");
    }
    out.tokenizer_file = it->get<std::string>();
  }
  // In floating point first: the product of the limits above overflows 64 bits.
  const double bytes = 2.0 * static_cast<double>(out.layers) * static_cast<double>(out.slots) *
                       static_cast<double>(out.max_context) * static_cast<double>(out.kv_heads) *
                       static_cast<double>(out.head_dim) *
                       static_cast<double>(dtype_size(out.cache_dtype));
  if (bytes > static_cast<double>(uint64_t{1} << 40)) {
    return invalid_argument("config.yaml: " + where + ": the KV cache would take over 1 TiB (" +
                            std::to_string(out.slots) + " slots of " +
                            std::to_string(out.max_context) + " positions)");
  }
  return {};
}

Status read_method(const std::string& name, const json& object, const BatchingConfig& defaults,
                   MethodConfig& out) {
  const std::string where = "methods." + name;
  if (!object.is_object()) return invalid_argument("config.yaml: " + where + " must be a map");
  OUTPOST_RETURN_IF_ERROR(check_keys(object,
                                     {"kind", "batching", "inputs", "example", "step_batchable",
                                      "max_steps", "window", "description", "decoder"},
                                     where + "."));
  out.batching = defaults;
  if (const auto it = object.find("kind"); it != object.end()) {
    if (!it->is_string() || (*it != "unary" && *it != "generate" && *it != "stream")) {
      return invalid_argument("config.yaml: " + where + ".kind must be unary, generate or stream");
    }
    out.kind = it->get<std::string>();
  }
  if (const auto it = object.find("batching"); it != object.end()) {
    OUTPOST_RETURN_IF_ERROR(read_batching(*it, where + ".batching", out.batching));
    out.batching_set = true;
  }
  if (const auto it = object.find("inputs"); it != object.end()) {
    if (!it->is_object())
      return invalid_argument("config.yaml: " + where + ".inputs must be a map");
    for (const auto& [param, spec] : it->items()) {
      OUTPOST_ASSIGN_OR_RETURN(auto parsed, read_tensor_spec(spec, where + ".inputs." + param));
      out.inputs.emplace(param, std::move(parsed));
    }
  }
  if (const auto it = object.find("example"); it != object.end()) {
    if (!it->is_object()) {
      return invalid_argument("config.yaml: " + where +
                              ".example must be a map of input names to Values");
    }
    out.example = *it;
  }
  const std::string prefix = where + ".";
  OUTPOST_RETURN_IF_ERROR(read_bool(object, "step_batchable", prefix, out.step_batchable));
  OUTPOST_RETURN_IF_ERROR(
      read_int(object, "max_steps", 1, int64_t{1} << 40, prefix, out.max_steps));
  OUTPOST_RETURN_IF_ERROR(read_int(object, "window", 1, 1 << 16, prefix, out.window));
  if (const auto it = object.find("decoder"); it != object.end()) {
    if (out.kind && *out.kind != "generate") {
      return invalid_argument("config.yaml: " + where + ".decoder is for generate methods, not " +
                              *out.kind);
    }
    DecoderConfig decoder;
    OUTPOST_RETURN_IF_ERROR(read_decoder(*it, where + ".decoder", decoder));
    out.decoder = std::move(decoder);
  }
  return {};
}

}  // namespace

uint64_t DecoderConfig::cache_bytes() const {
  return 2 * static_cast<uint64_t>(layers) * static_cast<uint64_t>(slots) *
         static_cast<uint64_t>(max_context) * static_cast<uint64_t>(kv_heads) *
         static_cast<uint64_t>(head_dim) * dtype_size(cache_dtype);
}

MethodConfig ModelConfig::method(const std::string& name) const {
  const auto it = methods.find(name);
  if (it != methods.end()) return it->second;
  MethodConfig defaults;
  defaults.batching = batching;
  return defaults;
}

namespace {

// Top-level keys: outpost's and Clarifai's are read; a key a typo away from one of outpost's
// is refused (it would silently leave batching or the methods at their defaults); any other is
// kept and ignored, with a warning.
Status check_top_level_keys(const json& root, std::vector<std::string>& warnings) {
  static const std::vector<std::string_view> ours = {
      "model",  "inference_compute_info", "checkpoints", "instances", "warmup_runs", "batching",
      "methods"};
  static const std::vector<std::string_view> clarifai = {"build_info", "concepts", "num_threads",
                                                         "description"};
  for (const auto& item : root.items()) {
    const std::string& key = item.key();
    if (std::find(ours.begin(), ours.end(), key) != ours.end() ||
        std::find(clarifai.begin(), clarifai.end(), key) != clarifai.end()) {
      continue;
    }
    if (const auto near = closest_key(key, ours)) {
      return invalid_argument("config.yaml: unknown key " + key + " (did you mean " + *near + "?)");
    }
    warnings.push_back("config.yaml: unknown top-level key " + key + " is ignored");
  }
  return {};
}

}  // namespace

Result<ModelConfig> parse_model_config(std::string_view yaml_text) {
  auto parsed = parse_yaml(yaml_text);
  if (!parsed) return invalid_argument("config.yaml: " + parsed.error().message());
  const json& root = *parsed;
  if (!root.is_object()) return invalid_argument("config.yaml must be a YAML map");
  ModelConfig config;
  config.raw = root;

  OUTPOST_RETURN_IF_ERROR(check_top_level_keys(root, config.warnings));

  const auto model = root.find("model");
  if (model == root.end() || !model->is_object()) {
    return invalid_argument("config.yaml needs a model: map with an id");
  }
  const auto id = model->find("id");
  if (id == model->end() || !id->is_string() || id->get_ref<const std::string&>().empty() ||
      id->get_ref<const std::string&>().size() > 128) {
    return invalid_argument(
        "config.yaml: model.id must be a non-empty string of at most 128 "
        "characters");
  }
  config.model_id = id->get<std::string>();
  for (const char c : config.model_id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) {
      return invalid_argument(
          "config.yaml: model.id may hold letters, digits, '-', '_' and '.', "
          "got \"" +
          config.model_id + "\"");
    }
  }

  if (const auto it = root.find("inference_compute_info");
      it != root.end() && !it->is_object() && !it->is_null()) {
    return invalid_argument("config.yaml: inference_compute_info must be a map");
  }

  if (const auto checkpoints = root.find("checkpoints"); checkpoints != root.end()) {
    if (!checkpoints->is_object())
      return invalid_argument("config.yaml: checkpoints must be a map");
    if (const auto it = checkpoints->find("type"); it != checkpoints->end()) {
      if (!it->is_string())
        return invalid_argument("config.yaml: checkpoints.type must be a string");
      config.checkpoint_type = it->get<std::string>();
    }
    if (config.checkpoint_type != "torchscript" && config.checkpoint_type != "aoti") {
      return invalid_argument("config.yaml: checkpoints.type \"" + config.checkpoint_type +
                              "\" is not one outpost can load (supported: torchscript, aoti)");
    }
    if (config.checkpoint_type == "aoti") config.file = "model.pt2";
    if (const auto it = checkpoints->find("file"); it != checkpoints->end()) {
      if (!it->is_string() || !is_safe_file_name(it->get<std::string>())) {
        return invalid_argument(
            "config.yaml: checkpoints.file must be a file name in the "
            "package folder (no '/')");
      }
      config.file = it->get<std::string>();
    }
    if (const auto it = checkpoints->find("sha256"); it != checkpoints->end()) {
      if (!it->is_string() || !is_hex_sha256(it->get<std::string>())) {
        return invalid_argument("config.yaml: checkpoints.sha256 must be 64 lower-case hex digits");
      }
      config.sha256 = it->get<std::string>();
    }
    if (const auto it = checkpoints->find("size"); it != checkpoints->end()) {
      if (!it->is_number_unsigned()) {
        return invalid_argument("config.yaml: checkpoints.size must be a byte count");
      }
      config.size = it->get<uint64_t>();
    }
  }

  OUTPOST_RETURN_IF_ERROR(read_int(root, "instances", 1, 64, "", config.instances));
  OUTPOST_RETURN_IF_ERROR(read_int(root, "warmup_runs", 0, 100, "", config.warmup_runs));
  if (const auto it = root.find("batching"); it != root.end()) {
    OUTPOST_RETURN_IF_ERROR(read_batching(*it, "batching", config.batching));
  }
  if (const auto methods = root.find("methods"); methods != root.end()) {
    if (!methods->is_object()) return invalid_argument("config.yaml: methods must be a map");
    for (const auto& [name, object] : methods->items()) {
      MethodConfig method;
      OUTPOST_RETURN_IF_ERROR(read_method(name, object, config.batching, method));
      config.methods.emplace(name, std::move(method));
    }
  }
  return config;
}

}  // namespace outpost::protocol
