// model upload | list | get | delete | predict | generate | stream.
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sstream>

#include "cli/commands.h"
#include "cli/package_archive.h"
#include <unistd.h>

namespace outpost::cli {

using nlohmann::json;

namespace {

std::string escape(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

std::string models_path(const Session& s) {
  return "/v2/users/" + escape(s.config.user_id.empty() ? "me" : s.config.user_id) + "/models";
}

std::string methods_cell(const json& version) {
  if (!version.is_object()) return "-";
  std::string out;
  for (const auto& method : version.value("method_signatures", json::array())) {
    out += (out.empty() ? "" : ", ") + method.value("name", std::string()) + "(" +
           method.value("kind", std::string()) + ")";
  }
  return out.empty() ? "-" : out;
}

Result<json> selector(const PredictFlags& flags) {
  const bool by_pool = !flags.compute_cluster.empty() || !flags.nodepool.empty();
  if (!flags.deployment.empty() && by_pool) {
    return invalid_argument("give --deployment, or --compute-cluster with --nodepool, not both");
  }
  if (!flags.deployment.empty()) return json{{"deployment", {{"id", flags.deployment}}}};
  if (flags.compute_cluster.empty() || flags.nodepool.empty()) {
    return invalid_argument(
        "name the runner: --deployment ID, or --compute-cluster ID "
        "--nodepool ID");
  }
  return json{
      {"nodepool", {{"id", flags.nodepool}, {"compute_cluster", {{"id", flags.compute_cluster}}}}}};
}

std::string outputs_path(const Session& s, const PredictFlags& flags) {
  std::string path = models_path(s) + "/" + escape(flags.model);
  if (!flags.version.empty()) path += "/versions/" + escape(flags.version);
  return path + "/outputs";
}

void print_value(std::ostream& out, const json& value) {
  if (value.is_string()) {
    out << value.get<std::string>() << "\n";
  } else {
    out << value.dump(2) << "\n";
  }
}

}  // namespace

Status model_upload(Session& s, const std::string& dir, const std::string& model_id) {
  std::string id = model_id;
  if (id.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(id, package_model_id(dir));
  }
  char temp[] = "/tmp/outpost-upload-XXXXXX";
  const int fd = mkstemp(temp);
  if (fd < 0) return unavailable("cannot create a temporary file for the upload");
  close(fd);
  const std::string archive = temp;
  const Status written = write_package_archive(dir, archive);
  Result<Response> response = invalid_argument("not sent");
  if (written.ok()) {
    response = s.client->send_file("POST", models_path(s) + "/" + escape(id) + "/versions", archive,
                                   "application/x-tar");
  }
  std::error_code ignored;
  std::filesystem::remove(archive, ignored);
  OUTPOST_RETURN_IF_ERROR(written);
  if (!response.ok()) return response.error();
  if (response->status >= 300) return error_from_response(*response);
  const json reply = json::parse(response->body, nullptr, false);
  if (s.json_output()) {
    *s.out << reply["model_version"].dump(2) << "\n";
    return {};
  }
  *s.out << "Model " << id << ": version " << reply["model_version"].value("id", "")
         << " uploaded (" << methods_cell(reply["model_version"]) << ").\n";
  for (const auto& warning : reply.value("warnings", json::array())) {
    *s.out << "warning: " << warning.get<std::string>() << "\n";
  }
  return {};
}

Status model_list(Session& s) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply, s.call("GET", models_path(s)));
  if (s.json_output()) {
    *s.out << reply["models"].dump(2) << "\n";
    return {};
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& model : reply["models"]) {
    const json& version = model["model_version"];
    rows.push_back({cell(model["id"]), version.is_object() ? cell(version["id"]) : "-",
                    methods_cell(version), cell(model["created_at"])});
  }
  print_table(*s.out, {"ID", "LATEST VERSION", "METHODS", "CREATED"}, rows);
  return {};
}

Status model_get(Session& s, const std::string& id) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply, s.call("GET", models_path(s) + "/" + escape(id)));
  if (s.json_output()) {
    *s.out << reply["model"].dump(2) << "\n";
    return {};
  }
  const json model = reply["model"];
  const json& version = model["model_version"];
  *s.out << "id:          " << cell(model["id"]) << "\n"
         << "created_at:  " << cell(model["created_at"]) << "\n"
         << "version:     " << (version.is_object() ? cell(version["id"]) : "-") << "\n";
  if (!version.is_object()) return {};
  std::vector<std::vector<std::string>> rows;
  for (const auto& method : version["method_signatures"]) {
    std::string inputs;
    for (const auto& input : method.value("inputs", json::array())) {
      inputs += (inputs.empty() ? "" : ", ") + input.value("name", std::string()) + ": " +
                input.value("type", std::string());
      if (input.contains("default")) inputs += " = " + input["default"].dump();
    }
    rows.push_back({cell(method["name"]), cell(method["kind"]), inputs,
                    cell(method.value("returns", json()))});
  }
  *s.out << "\n";
  print_table(*s.out, {"METHOD", "KIND", "INPUTS", "RETURNS"}, rows);
  return {};
}

Status model_delete(Session& s, const std::string& id) {
  OUTPOST_ASSIGN_OR_RETURN(auto reply, s.call("DELETE", models_path(s) + "/" + escape(id)));
  if (s.json_output()) {
    *s.out << reply["status"].dump(2) << "\n";
  } else {
    *s.out << "Model " << id << " deleted.\n";
  }
  return {};
}

namespace {

// The body of a unary or generate call (docs/api.md "Predict"). The server picks the method
// when none is named and places --text/--file/--url under its first input: one request.
json predict_body(const json& runner, const CallInputs& inputs, const PredictFlags& flags) {
  json body{{"runner_selector", runner}};
  if (!flags.method.empty()) body["method"] = flags.method;
  inputs.write_to(body);
  if (flags.tensor_values) body["tensor_format"] = "values";
  return body;
}

}  // namespace

Status model_predict(Session& s, const PredictFlags& flags) {
  OUTPOST_ASSIGN_OR_RETURN(auto runner, selector(flags));
  OUTPOST_ASSIGN_OR_RETURN(auto inputs, build_call_inputs(flags.inputs, *s.in));
  OUTPOST_ASSIGN_OR_RETURN(auto body, wire_body(predict_body(runner, inputs, flags)));
  OUTPOST_ASSIGN_OR_RETURN(auto reply,
                           s.call("POST", outputs_path(s, flags), body.body, body.content_type));
  if (s.json_output()) {
    *s.out << reply.dump(2) << "\n";
  } else {
    print_value(*s.out, reply["outputs"]);
  }
  return {};
}

Status model_generate(Session& s, const PredictFlags& flags) {
  OUTPOST_ASSIGN_OR_RETURN(auto runner, selector(flags));
  OUTPOST_ASSIGN_OR_RETURN(auto inputs, build_call_inputs(flags.inputs, *s.in));
  OUTPOST_ASSIGN_OR_RETURN(auto body, wire_body(predict_body(runner, inputs, flags)));
  // Events (or JSON lines) are split as they arrive; each chunk is printed and flushed at once.
  std::string pending;
  std::optional<Error> failure;
  bool done = false;
  bool text_open = false;
  const auto on_event = [&](const std::string& payload) {
    const json event = json::parse(payload, nullptr, false);
    if (s.json_output()) {
      *s.out << payload << "\n" << std::flush;
    }
    if (!event.is_object()) return;
    if (event.contains("status")) {
      const std::string code = event["status"].value("code", "");
      if (code == "ok") {
        done = true;
      } else {
        Response response;
        response.body = payload;
        failure = error_from_response(response);
      }
      return;
    }
    if (s.json_output() || !event.contains("chunk")) return;
    const json& chunk = event["chunk"];
    // A decoder's chunk (docs/models.md) carries its text beside the token ids.
    const auto text = chunk.is_object() ? chunk.find("text") : chunk.end();
    if (chunk.is_string()) {
      *s.out << chunk.get<std::string>() << std::flush;
      text_open = true;
    } else if (chunk.is_object() && text != chunk.end() && text->is_string()) {
      *s.out << text->get<std::string>() << std::flush;
      text_open = true;
    } else {
      *s.out << chunk.dump() << "\n" << std::flush;
    }
  };
  const bool ndjson = s.json_output();
  auto response = s.client->send_streaming(
      "POST", outputs_path(s, flags) + "/generate", body.body, body.content_type,
      {{"Accept", ndjson ? "application/x-ndjson" : "text/event-stream"}},
      [&](std::string_view data) {
        pending.append(data);
        const std::string separator = ndjson ? "\n" : "\n\n";
        for (auto end = pending.find(separator); end != std::string::npos;
             end = pending.find(separator)) {
          const std::string record = pending.substr(0, end);
          pending.erase(0, end + separator.size());
          if (ndjson) {
            if (!record.empty()) on_event(record);
            continue;
          }
          // An SSE event: "event: NAME" and "data: PAYLOAD" lines.
          std::string payload;
          std::istringstream lines(record);
          for (std::string line; std::getline(lines, line);) {
            if (line.rfind("data: ", 0) == 0) payload += line.substr(6);
          }
          if (!payload.empty()) on_event(payload);
        }
        return true;
      });
  if (text_open) *s.out << "\n";
  if (!response.ok()) return response.error();
  if (response->status >= 300) return error_from_response(*response);
  if (failure.has_value()) return *failure;
  if (!done) return unavailable("the stream ended before the model finished");
  return {};
}

Status model_stream(Session& s, const PredictFlags& flags, std::istream& in) {
  std::string query;
  if (!flags.deployment.empty()) {
    query = "deployment=" + escape(flags.deployment);
  } else {
    OUTPOST_RETURN_IF_ERROR(selector(flags).status());
    query =
        "compute_cluster=" + escape(flags.compute_cluster) + "&nodepool=" + escape(flags.nodepool);
  }
  OUTPOST_ASSIGN_OR_RETURN(auto items, build_stream_call_items(flags.inputs, *s.in));
  const bool from_stdin = items.empty();
  std::string path = models_path(s) + "/" + escape(flags.model);
  if (!flags.version.empty()) path += "/versions/" + escape(flags.version);
  path += "/outputs/stream?" + query;
  if (!flags.method.empty()) path += "&method=" + escape(flags.method);
  if (flags.tensor_values) path += "&tensor_format=values";
  OUTPOST_ASSIGN_OR_RETURN(auto socket, s.client->websocket(path));
  // One output per input item (docs/control-protocol.md): send an item, print its output.
  const auto exchange = [&](const CallInputs& item) -> Status {
    json sent = json::object();
    item.write_to(sent);
    OUTPOST_RETURN_IF_ERROR(socket->send(sent.dump()));
    OUTPOST_ASSIGN_OR_RETURN(auto message, socket->receive());
    if (!message.has_value()) return unavailable("the server closed the stream");
    const json reply = json::parse(*message, nullptr, false);
    if (reply.is_object() && reply.contains("status")) {
      Response response;
      response.body = *message;
      return error_from_response(response);
    }
    if (s.json_output()) {
      *s.out << *message << "\n" << std::flush;
    } else if (reply.is_object()) {
      print_value(*s.out, reply.value("outputs", json()));
      s.out->flush();
    }
    return {};
  };
  if (from_stdin) {
    for (std::string line; std::getline(in, line);) {
      OUTPOST_RETURN_IF_ERROR(exchange(CallInputs{json::object(), json(line)}));
    }
  } else {
    for (const auto& item : items) OUTPOST_RETURN_IF_ERROR(exchange(item));
  }
  OUTPOST_RETURN_IF_ERROR(socket->send(R"({"end": true})"));
  OUTPOST_ASSIGN_OR_RETURN(auto last, socket->receive());
  socket->close();
  if (!last.has_value()) return unavailable("the server closed the stream without a status");
  const json status = json::parse(*last, nullptr, false);
  if (!status.is_object() || status["status"].value("code", "") != "ok") {
    Response response;
    response.body = *last;
    return error_from_response(response);
  }
  return {};
}

}  // namespace outpost::cli
