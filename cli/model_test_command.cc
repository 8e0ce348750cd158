// outpost model test DIR: a package run through a real outpost-worker on this machine, before
// any upload. The worker loads it as a node would (verifying size and sha256, reading the
// signatures, warming up); then either one call with inputs from the flags (the input code of
// `outpost model predict|generate|stream`), or each method once with its config.yaml example.
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>

#include "cli/commands.h"
#include "cli/local_worker.h"
#include "protocol/model_config.h"
#include "protocol/tensor_wire.h"
#include "protocol/worker_protocol.h"

namespace outpost::cli {

using nlohmann::json;

namespace {

constexpr size_t kMaxDepth = 64;
constexpr size_t kSummaryWidth = 72;
constexpr size_t kLineWidth = 100;
constexpr size_t kReadableElements = 256;  // larger tensors keep their base64

bool inputs_given(const InputFlags& flags) {
  return !flags.text.empty() || !flags.file.empty() || !flags.url.empty() ||
         !flags.inputs_json.empty() || !flags.named.empty();
}

// The method of an explicit call: --method, else the only kind's default (predict, generate or
// stream: the choice the control plane makes for the shape commands), through pick_method().
Result<json> choose_method(const json& methods, const std::string& requested) {
  std::vector<std::string> kinds;
  for (const auto& method : methods) {
    const std::string kind = method.value("kind", "");
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) kinds.push_back(kind);
  }
  if (!requested.empty()) {
    for (const auto& method : methods) {
      if (method.value("name", "") == requested) {
        return pick_method(methods, requested, method.value("kind", ""));
      }
    }
    return pick_method(methods, requested, "unary");  // names what the package has
  }
  if (kinds.size() == 1) return pick_method(methods, "", kinds.front());
  std::string names;
  for (const auto& method : methods) {
    names += (names.empty() ? "" : ", ") + method.value("name", std::string()) + " (" +
             method.value("kind", std::string()) + ")";
  }
  return invalid_argument("name the method with --method; the package has: " + names);
}

// config.yaml's example tensors may leave out their data (zeros, docs/models.md "Warm-up");
// a request may not, so they get zero bytes here.
void fill_zero_tensors(json& value, std::vector<std::string>& parts, size_t depth) {
  if (depth > kMaxDepth) return;
  if (protocol::looks_like_tensor(value)) {
    if (value.contains("part") || value.contains("data_b64") || value.contains("values")) return;
    const auto dtype = protocol::dtype_from_name(
        value["dtype"].is_string() ? value["dtype"].get<std::string>() : std::string());
    if (!dtype) return;  // the worker names the problem
    auto shape = protocol::parse_shape(value["shape"], *dtype, size_t{1} << 30, "example");
    if (!shape.ok()) return;
    value["part"] = parts.size();
    parts.emplace_back(
        static_cast<size_t>(protocol::element_count(*shape)) * protocol::dtype_size(*dtype), '\0');
    return;
  }
  if (value.is_object() || value.is_array()) {
    for (auto& item : value) fill_zero_tensors(item, parts, depth + 1);
  }
}

// Inputs in the control protocol's form (base64 inline) as the worker takes them (parts).
Result<protocol::WireValue> to_wire(json value, bool zeros_for_missing_data) {
  protocol::WireValue wire;
  OUTPOST_RETURN_IF_ERROR(protocol::move_bytes_to_parts(value, wire.parts));
  if (zeros_for_missing_data) fill_zero_tensors(value, wire.parts, 0);
  wire.value = std::move(value);
  return wire;
}

double shortest(float value) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof text, value).ptr;
  return std::strtod(std::string(text, end).c_str(), nullptr);
}

float half_to_float(uint16_t half) {
  const uint32_t sign = (half >> 15) & 1;
  const uint32_t exponent = (half >> 10) & 0x1f;
  const uint32_t mantissa = half & 0x3ff;
  float magnitude = 0;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? INFINITY : NAN;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400), static_cast<int>(exponent) - 25);
  }
  return sign != 0 ? -magnitude : magnitude;
}

template <class T>
T element(std::string_view bytes, size_t index) {
  T out;
  std::memcpy(&out, bytes.data() + index * sizeof(T), sizeof(T));
  return out;
}

// A tensor's elements as numbers (the wire is little-endian, as are the hosts outpost runs on).
json tensor_values(const protocol::WireTensor& tensor) {
  const std::string_view bytes = tensor.bytes();
  const size_t count = bytes.size() / protocol::dtype_size(tensor.dtype);
  json out = json::array();
  for (size_t i = 0; i < count; ++i) {
    switch (tensor.dtype) {
      case protocol::DType::kFloat32:
        out.push_back(shortest(element<float>(bytes, i)));
        break;
      case protocol::DType::kFloat64:
        out.push_back(element<double>(bytes, i));
        break;
      case protocol::DType::kFloat16:
        out.push_back(shortest(half_to_float(element<uint16_t>(bytes, i))));
        break;
      case protocol::DType::kBFloat16: {
        const uint32_t bits = uint32_t{element<uint16_t>(bytes, i)} << 16;
        float value = 0;
        std::memcpy(&value, &bits, sizeof value);
        out.push_back(shortest(value));
        break;
      }
      case protocol::DType::kInt8:
        out.push_back(element<int8_t>(bytes, i));
        break;
      case protocol::DType::kInt16:
        out.push_back(element<int16_t>(bytes, i));
        break;
      case protocol::DType::kInt32:
        out.push_back(element<int32_t>(bytes, i));
        break;
      case protocol::DType::kInt64:
        out.push_back(element<int64_t>(bytes, i));
        break;
      case protocol::DType::kUInt8:
        out.push_back(element<uint8_t>(bytes, i));
        break;
      case protocol::DType::kBool:
        out.push_back(element<uint8_t>(bytes, i) != 0);
        break;
    }
  }
  return out;
}

// For people: small tensors with their numbers ("values", a form --inputs takes back) instead
// of base64; larger ones keep it, or with `brief` show only their size. `-o json` keeps the
// control protocol's form.
json readable(const json& value, bool brief = false, size_t depth = 0) {
  if (depth > kMaxDepth) return value;
  if (protocol::looks_like_tensor(value) && value.contains("data_b64")) {
    auto tensor = protocol::decode_tensor(value, {}, SIZE_MAX, "output");
    if (!tensor.ok() || tensor->int_values || tensor->float_values) return value;
    const size_t bytes = tensor->bytes().size();
    if (bytes / protocol::dtype_size(tensor->dtype) > kReadableElements) {
      if (!brief) return value;
      return json{{"dtype", value["dtype"]},
                  {"shape", value["shape"]},
                  {"data_b64", "(" + std::to_string(bytes) + " bytes)"}};
    }
    return json{
        {"dtype", value["dtype"]}, {"shape", value["shape"]}, {"values", tensor_values(*tensor)}};
  }
  if (value.is_object()) {
    json out = json::object();
    for (const auto& item : value.items()) {
      out[item.key()] = readable(item.value(), brief, depth + 1);
    }
    return out;
  }
  if (value.is_array()) {
    json out = json::array();
    for (const auto& item : value) out.push_back(readable(item, brief, depth + 1));
    return out;
  }
  return value;
}

std::string shorten(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  if (text.size() > kSummaryWidth) text = text.substr(0, kSummaryWidth - 3) + "...";
  return text;
}

// JSON as text; strings that are not UTF-8 (from the command line) are replaced, not thrown on.
std::string text_of(const json& value, int indent = -1) {
  return value.dump(indent, ' ', false, json::error_handler_t::replace);
}

// Strings bare; other values on one line when they fit, else indented.
void print_value(std::ostream& out, const json& value) {
  if (value.is_string()) {
    out << value.get<std::string>() << "\n";
    return;
  }
  const std::string line = text_of(value);
  out << (line.size() <= kLineWidth ? line : text_of(value, 2)) << "\n";
}

json error_json(const Error& error) {
  return json{{"code", error_code_name(error.code())}, {"message", error.message()}};
}

std::string inputs_cell(const json& method) {
  std::string inputs;
  for (const auto& input : method.value("inputs", json::array())) {
    inputs += (inputs.empty() ? "" : ", ") + input.value("name", std::string()) + ": " +
              input.value("type", std::string());
    // A tensor's declared dtype and shape (-1: any size): "x: Tensor float32[-1, 256]".
    if (input.contains("dtype") && input.contains("shape")) {
      std::string shape;
      for (const auto& dim : input["shape"]) shape += (shape.empty() ? "" : ", ") + dim.dump();
      inputs += " " + input["dtype"].get<std::string>() + "[" + shape + "]";
    }
    if (input.contains("default")) inputs += " = " + text_of(input["default"]);
  }
  return inputs.empty() ? "-" : inputs;
}

// What one call gave: a unary result, a generate call's chunks or a stream's outputs, in the
// control protocol's form, and how it ended.
struct CallOutcome {
  Status status;
  std::string reason;
  std::vector<json> values;
};

// The events of one call, from the client's I/O thread to this one.
struct CallEvents {
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::pair<int64_t, protocol::WireValue>> values;
  std::optional<Status> done;
  std::string reason;
};

// Runs one call of `method` and waits for its end. `request` is the inputs (unary, generate)
// or the items (stream), already in the worker's form. `on_value` sees each value as it comes.
CallOutcome run_call(LocalWorker& worker, const std::string& model, const json& method,
                     protocol::WireValue request, std::vector<protocol::WireValue> items,
                     const std::function<void(const json&)>& on_value) {
  const std::string name = method.value("name", "");
  const std::string kind = method.value("kind", "");
  auto events = std::make_shared<CallEvents>();
  protocol::CallHandlers handlers{[events](int64_t seq, protocol::WireValue value) {
                                    std::lock_guard lock(events->mutex);
                                    events->values.emplace_back(seq, std::move(value));
                                    events->changed.notify_one();
                                  },
                                  [events](const Status& status, std::string_view reason) {
                                    std::lock_guard lock(events->mutex);
                                    events->done = status;
                                    events->reason = reason;
                                    events->changed.notify_one();
                                  }};
  std::shared_ptr<protocol::WorkerCall> call;
  if (kind == "unary") {
    call = worker.client().unary(model, name, std::move(request), handlers);
  } else if (kind == "generate") {
    call = worker.client().generate(model, name, std::move(request), handlers);
  } else {
    call = worker.client().stream(model, name, handlers);
  }
  CallOutcome outcome;
  size_t next_item = 0;
  bool closed = kind != "stream";
  const std::string what = "calling " + name;
  while (true) {
    // Stream items go out as the window allows; each output gives a credit back.
    while (next_item < items.size() && call->window_available() > 0 && !call->done()) {
      const Status sent = call->send(std::move(items[next_item]));
      if (!sent.ok()) {
        if (call->done()) break;  // the call's end says why
        // Refused here (an item over the message limit): the call cannot go on without it.
        call->cancel();
        outcome.status = Error(sent.error().code(),
                               "item " + std::to_string(next_item) + ": " + sent.error().message());
        return outcome;
      }
      ++next_item;
    }
    if (!closed && next_item == items.size()) {
      (void)call->close();
      closed = true;
    }
    std::deque<std::pair<int64_t, protocol::WireValue>> values;
    std::optional<Status> done;
    {
      std::unique_lock lock(events->mutex);
      events->changed.wait_for(lock, std::chrono::milliseconds(50),
                               [&] { return !events->values.empty() || events->done.has_value(); });
      values.swap(events->values);
      done = events->done;
      outcome.reason = events->reason;
    }
    for (auto& [seq, value] : values) {
      auto converted = protocol::parts_to_base64(value.value, value.parts);
      const json shown = converted.ok() ? *converted : json(converted.error().message());
      outcome.values.push_back(shown);
      if (on_value) on_value(shown);
    }
    if (done) {
      outcome.status = *done;
      return outcome;
    }
    if (Status alive = worker.check(what); !alive.ok()) {
      call->cancel();
      outcome.status = alive;
      return outcome;
    }
  }
}

// The call's record in the `-o json` document.
json call_json(const json& method, const json& inputs, const CallOutcome& outcome) {
  const std::string kind = method.value("kind", "");
  json out{{"method", method.value("name", "")},
           {"kind", kind},
           {kind == "stream" ? "items" : "inputs", inputs},
           {"status", outcome.status.ok() ? "ok" : "failed"}};
  if (kind == "unary") {
    if (!outcome.values.empty()) out["outputs"] = outcome.values.front();
  } else {
    out[kind == "generate" ? "chunks" : "outputs"] = outcome.values;
    if (!outcome.reason.empty()) out["reason"] = outcome.reason;
  }
  if (!outcome.status.ok()) out["error"] = error_json(outcome.status.error());
  return out;
}

// One line about a call's result, for the table.
std::string summary(const std::string& kind, const CallOutcome& outcome) {
  if (!outcome.status.ok()) return shorten(outcome.status.error().message());
  if (kind == "generate") {
    std::string text;
    bool all_text = true;
    for (const auto& chunk : outcome.values) {
      if (!chunk.is_string()) {
        all_text = false;
        break;
      }
      text += chunk.get<std::string>();
    }
    const std::string chunks =
        std::to_string(outcome.values.size()) + (outcome.values.size() == 1 ? " chunk" : " chunks");
    return shorten(chunks + ": " + text_of(all_text ? json(text) : readable(outcome.values, true)));
  }
  if (outcome.values.empty()) return "-";
  return shorten(text_of(readable(outcome.values.front(), true)));
}

// The method's example: config.yaml's, else zeros for its declared tensor inputs (as the
// worker's warm-up builds them), else none.
std::optional<json> example_for(const json& method, const protocol::ModelConfig& config) {
  const auto configured = config.methods.find(method.value("name", ""));
  if (configured != config.methods.end() && configured->second.example) {
    return *configured->second.example;
  }
  json example = json::object();
  for (const auto& input : method.value("inputs", json::array())) {
    if (input.contains("default")) continue;
    if (configured == config.methods.end()) return std::nullopt;
    const std::string param = input.value("name", "");
    const auto spec = configured->second.inputs.find(param);
    if (spec == configured->second.inputs.end()) return std::nullopt;
    json shape = json::array();
    for (const int64_t dim : spec->second.shape) shape.push_back(dim < 0 ? 1 : dim);
    example[param] = json{{"dtype", protocol::dtype_name(spec->second.dtype)}, {"shape", shape}};
  }
  return example;
}

Result<protocol::ModelConfig> read_config(const std::string& package) {
  std::ifstream in(package + "/config.yaml", std::ios::binary);
  if (!in) return Error(ErrorCode::kNotFound, "cannot read " + package + "/config.yaml");
  std::stringstream text;
  text << in.rdbuf();
  return protocol::parse_model_config(text.str());
}

// One call with the inputs from the flags.
Status call_with_flags(LocalWorker& worker, const ModelTestFlags& flags, const std::string& model,
                       const json& methods, OutputFormat format, std::ostream& out, json& report) {
  OUTPOST_ASSIGN_OR_RETURN(auto method, choose_method(methods, flags.method));
  const std::string kind = method.value("kind", "");
  const std::string name = method.value("name", "");
  json inputs;
  protocol::WireValue request;
  std::vector<protocol::WireValue> items;
  if (kind == "stream") {
    // Unlike `outpost model stream`, no items from stdin: without inputs the example runs.
    if (!flags.inputs.file.empty() || !flags.inputs.named.empty()) {
      return invalid_argument("'" + name +
                              "' is a stream method: give its items with --text (one item "
                              "each) or --inputs (a JSON array of input objects)");
    }
    OUTPOST_ASSIGN_OR_RETURN(auto built, build_stream_call_items(flags.inputs, std::cin));
    inputs = json::array();
    for (const auto& item : built) {
      OUTPOST_ASSIGN_OR_RETURN(auto placed, place_first(item, method));
      inputs.push_back(placed);
      OUTPOST_ASSIGN_OR_RETURN(auto wire, to_wire(std::move(placed), false));
      items.push_back(std::move(wire));
    }
  } else {
    OUTPOST_ASSIGN_OR_RETURN(auto built, build_call_inputs(flags.inputs, std::cin));
    OUTPOST_ASSIGN_OR_RETURN(inputs, place_first(built, method));
    OUTPOST_ASSIGN_OR_RETURN(request, to_wire(inputs, false));
  }
  const bool table = format == OutputFormat::kTable;
  if (table) out << "\nCalling " << name << " (" << kind << "):\n" << std::flush;
  bool text_open = false;
  const auto show = [&](const json& value) {
    if (!table) return;
    if (kind == "generate" && value.is_string()) {
      out << value.get<std::string>() << std::flush;
      text_open = true;
      return;
    }
    if (text_open) out << "\n";
    text_open = false;
    print_value(out, readable(value));
    out.flush();
  };
  const CallOutcome outcome =
      run_call(worker, model, method, std::move(request), std::move(items), show);
  if (text_open) out << "\n";
  report["calls"].push_back(call_json(method, inputs, outcome));
  if (!outcome.status.ok()) {
    return Error(outcome.status.error().code(),
                 name + " failed: " + outcome.status.error().message());
  }
  if (table && !outcome.reason.empty() && outcome.reason != "done") {
    out << "(" << name << " ended: " << outcome.reason << ")\n";
  }
  return {};
}

// Each method (or --method) once with its example.
Status call_examples(LocalWorker& worker, const ModelTestFlags& flags, const std::string& model,
                     const std::string& package, const json& methods, OutputFormat format,
                     std::ostream& out, json& report) {
  // The worker has accepted it; this fails only if the file changed since.
  OUTPOST_ASSIGN_OR_RETURN(const auto config, read_config(package));
  std::vector<json> chosen;
  if (!flags.method.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(auto method, choose_method(methods, flags.method));
    chosen.push_back(method);
  } else {
    for (const auto& method : methods) chosen.push_back(method);
  }
  std::vector<std::vector<std::string>> rows;
  size_t failed = 0;
  size_t skipped = 0;
  std::optional<Error> first_failure;
  for (const auto& method : chosen) {
    const std::string name = method.value("name", "");
    const std::string kind = method.value("kind", "");
    const auto example = example_for(method, config);
    if (!example) {
      ++skipped;
      rows.push_back({name, kind, "skipped", "no example in config.yaml"});
      report["calls"].push_back(json{{"method", name},
                                     {"kind", kind},
                                     {"status", "skipped"},
                                     {"reason", "no example in config.yaml"}});
      continue;
    }
    CallOutcome outcome;
    auto wire = to_wire(*example, true);
    if (!wire.ok()) {
      outcome.status = wire.error();
    } else if (kind == "stream") {
      std::vector<protocol::WireValue> items;
      items.push_back(std::move(wire).value());
      outcome = run_call(worker, model, method, {}, std::move(items), nullptr);
    } else {
      outcome = run_call(worker, model, method, std::move(wire).value(), {}, nullptr);
    }
    const json inputs = kind == "stream" ? json::array({*example}) : *example;
    report["calls"].push_back(call_json(method, inputs, outcome));
    if (!outcome.status.ok()) {
      ++failed;
      if (!first_failure) {
        first_failure =
            Error(outcome.status.error().code(), name + ": " + outcome.status.error().message());
      }
      // An interrupt or a dead worker ends the run: the other methods cannot run either.
      if (LocalWorker::interrupted() || !worker.check("calling " + name).ok()) {
        rows.push_back({name, kind, "failed", summary(kind, outcome)});
        break;
      }
    }
    rows.push_back({name, kind, outcome.status.ok() ? "ok" : "failed", summary(kind, outcome)});
  }
  if (format == OutputFormat::kTable) {
    out << "\nEach method with its example from config.yaml:\n";
    print_table(out, {"METHOD", "KIND", "RESULT", "OUTPUT"}, rows);
  }
  if (first_failure) {
    return Error(first_failure->code(), std::to_string(failed) + " of " +
                                            std::to_string(chosen.size()) +
                                            " methods failed; first " + first_failure->message());
  }
  if (format == OutputFormat::kTable) {
    const size_t ran = chosen.size() - skipped;
    out << "\n"
        << ran << (ran == 1 ? " method" : " methods") << " ok"
        << (skipped > 0 ? ", " + std::to_string(skipped) + " without an example" : "") << ".\n";
  }
  return {};
}

}  // namespace

Status model_test(const ModelTestFlags& flags, OutputFormat format, std::ostream& out) {
  if (!flags.inputs.url.empty()) {
    return invalid_argument("--url is fetched by the control plane; use --file here");
  }
  std::error_code error;
  const std::string package = std::filesystem::absolute(flags.dir, error).lexically_normal();
  if (error || !std::filesystem::is_directory(package, error)) {
    return Error(ErrorCode::kNotFound, "model package " + flags.dir + " is not a folder");
  }
  OUTPOST_ASSIGN_OR_RETURN(auto binary, find_worker_binary(flags.worker));
  // From here on the worker is drained and stopped, and its directory removed, however we end.
  OUTPOST_ASSIGN_OR_RETURN(auto worker, LocalWorker::start(binary));
  protocol::LoadRequest load;
  load.package = package;
  auto loading = worker->client().load(load);
  auto loaded = worker->await(loading, "loading " + package);
  if (!loaded.ok()) {
    return Error(loaded.error().code(),
                 "cannot load " + flags.dir + ": " + loaded.error().message());
  }
  const std::string model = loaded->value("model", "");
  const json methods = loaded->value("methods", json::array());
  json notes = json::array();
  for (const char* event : {"model.method_skipped", "model.warmup_skipped"}) {
    for (const auto& line : worker->log_events(event)) notes.push_back(line);
  }
  json report{{"package", package},
              {"model", model},
              {"file_sha256", loaded->value("file_sha256", "")},
              {"load_ms", loaded->value("load_ms", 0)},
              {"memory_bytes", loaded->value("memory_bytes", 0)},
              {"methods", methods},
              {"notes", notes},
              {"calls", json::array()}};
  const bool table = format == OutputFormat::kTable;
  if (table) {
    out << "Loaded " << model << " from " << package << " in " << report["load_ms"].dump()
        << " ms (sha256 " << report["file_sha256"].get<std::string>().substr(0, 12) << "..., "
        << report["memory_bytes"].dump() << " bytes in memory).\n\n";
    std::vector<std::vector<std::string>> rows;
    for (const auto& method : methods) {
      rows.push_back({cell(method["name"]), cell(method["kind"]), inputs_cell(method),
                      cell(method.value("returns", json()))});
    }
    print_table(out, {"METHOD", "KIND", "INPUTS", "RETURNS"}, rows);
    for (const auto& note : notes) out << "note: " << note.get<std::string>() << "\n";
    out << std::flush;
  }
  Status status = inputs_given(flags.inputs)
                      ? call_with_flags(*worker, flags, model, methods, format, out, report)
                      : call_examples(*worker, flags, model, package, methods, format, out, report);
  report["ok"] = status.ok();
  if (!table) out << text_of(report, 2) << "\n";
  out.flush();
  return status;
}

}  // namespace outpost::cli
