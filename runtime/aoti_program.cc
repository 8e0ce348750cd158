// An AOTInductor package (`torch.export.export` + `torch._inductor.aoti_compile_and_package`) as
// a TorchProgram: one method, kAotiMethod, whose parameters and result come from the package's
// call spec (docs/models.md, "AOTInductor packages").
#include <algorithm>
#include <cctype>
#include <charconv>
#include <exception>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include <ATen/Parallel.h>
#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <ATen/core/ivalue.h>  // first: under clang the others need IValue complete
#include <ATen/core/jit_type.h>
#include <ATen/ops/cat.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include "common/log.h"
#include "runtime/cuda_backend.h"
#include "runtime/torch_program.h"
#include <dlfcn.h>
#include <sys/utsname.h>

namespace outpost::runtime {
namespace {

using nlohmann::json;

// The model's name inside a package: aoti_compile_and_package's default.
constexpr const char* kPackageModel = "model";

// One node of a pytree TreeSpec as torch.utils._pytree serialises it (format 1): a leaf (type
// null), or a container type with its context (dict keys) and children.
struct Spec {
  std::string type;  // "" for a leaf (one tensor)
  std::vector<std::string> keys;
  std::vector<Spec> children;
};

Result<Spec> parse_spec(const json& node, const std::string& where) {
  if (!node.is_object()) return invalid_argument(where + ": a spec node must be an object");
  Spec spec;
  const auto type = node.find("type");
  if (type != node.end() && type->is_string()) spec.type = type->get<std::string>();
  if (const auto context = node.find("context"); context != node.end() && context->is_string()) {
    const json keys = json::parse(context->get<std::string>(), nullptr, false);
    if (keys.is_array()) {
      for (const auto& key : keys) {
        if (!key.is_string()) return invalid_argument(where + ": only string dict keys");
        spec.keys.push_back(key.get<std::string>());
      }
    }
  }
  if (const auto children = node.find("children_spec"); children != node.end()) {
    if (!children->is_array()) return invalid_argument(where + ": children_spec must be a list");
    for (const auto& child : *children) {
      OUTPOST_ASSIGN_OR_RETURN(auto parsed, parse_spec(child, where));
      spec.children.push_back(std::move(parsed));
    }
  }
  if (!spec.type.empty() && spec.type != "builtins.tuple" && spec.type != "builtins.list" &&
      spec.type != "builtins.dict") {
    return invalid_argument(where + " holds a " + spec.type +
                            "; outpost serves tensors, and tuples, lists and dicts of them");
  }
  if (spec.type == "builtins.dict" && spec.keys.size() != spec.children.size()) {
    return invalid_argument(where + ": a dict whose keys do not match its values");
  }
  return spec;
}

Result<Spec> parse_tree(const std::string& text, const std::string& where) {
  const json tree = json::parse(text, nullptr, false);
  if (!tree.is_array() || tree.size() != 2 || tree[0] != 1) {
    return invalid_argument(where + " is not a pytree spec outpost can read (format 1)");
  }
  return parse_spec(tree[1], where);
}

size_t leaf_count(const Spec& spec) {
  if (spec.type.empty()) return 1;
  size_t count = 0;
  for (const auto& child : spec.children) count += leaf_count(child);
  return count;
}

// The TorchScript type of a result with this spec (a dict's values share one type).
Result<c10::TypePtr> result_type(const Spec& spec) {
  if (spec.type.empty()) return c10::TypePtr(c10::TensorType::get());
  std::vector<c10::TypePtr> elements;
  for (const auto& child : spec.children) {
    OUTPOST_ASSIGN_OR_RETURN(auto type, result_type(child));
    elements.push_back(std::move(type));
  }
  if (spec.type == "builtins.tuple") return c10::TypePtr(c10::TupleType::create(elements));
  const auto same = [&] {
    return std::all_of(elements.begin(), elements.end(),
                       [&](const c10::TypePtr& t) { return *t == *elements.front(); });
  };
  if (elements.empty() || !same()) {
    return invalid_argument("the result holds a " + spec.type +
                            " whose items differ in type (or none); return a tuple instead");
  }
  if (spec.type == "builtins.list") return c10::TypePtr(c10::ListType::create(elements.front()));
  return c10::TypePtr(c10::DictType::create(c10::StringType::get(), elements.front()));
}

// Builds the result from the flat outputs, following `spec`; `next` is the next output's index.
c10::IValue unflatten(const Spec& spec, const c10::TypePtr& type, std::vector<at::Tensor>& flat,
                      size_t& next) {
  if (spec.type.empty()) return flat.at(next++);
  if (spec.type == "builtins.tuple") {
    std::vector<c10::IValue> items;
    const auto& element_types = type->expectRef<c10::TupleType>().elements();
    for (size_t i = 0; i < spec.children.size(); ++i) {
      items.push_back(unflatten(spec.children[i], element_types[i], flat, next));
    }
    return c10::ivalue::Tuple::create(std::move(items));
  }
  if (spec.type == "builtins.list") {
    const auto element = type->expectRef<c10::ListType>().getElementType();
    c10::impl::GenericList list(element);
    for (const auto& child : spec.children) list.push_back(unflatten(child, element, flat, next));
    return list;
  }
  const auto value_type = type->expectRef<c10::DictType>().getValueType();
  c10::impl::GenericDict dict(c10::StringType::get(), value_type);
  for (size_t i = 0; i < spec.children.size(); ++i) {
    dict.insert(spec.keys[i], unflatten(spec.children[i], value_type, flat, next));
  }
  return dict;
}

std::string cpu_flags() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) return " " + line.substr(line.find(':') + 1) + " ";
  }
  return "";
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// Refuses a package this worker cannot run, from the metadata AOTInductor writes into it.
Status check_target(const std::unordered_map<std::string, std::string>& metadata,
                    const std::string& file, const c10::Device& device) {
  const auto get = [&](const std::string& key) {
    const auto it = metadata.find(key);
    return it == metadata.end() ? std::string() : it->second;
  };
  const std::string package_device = get("AOTI_DEVICE_KEY");
  const std::string worker_device = device.is_cuda() ? "cuda" : "cpu";
  const auto refuse = [&](const std::string& why) {
    return Error(ErrorCode::kFailedPrecondition, file + " cannot run here: " + why);
  };
  if (!package_device.empty() && package_device != worker_device) {
    return refuse("it was compiled for " + package_device + " and this worker's device is " +
                  device.str() +
                  (package_device == "cuda"
                       ? " (deploy it to a nodepool with GPUs, or export it again with the model "
                         "and example inputs on the CPU)"
                       : " (export it again with the model and example inputs on cuda)"));
  }
  utsname host{};
  ::uname(&host);
  if (const std::string machine = get("AOTI_MACHINE");
      !machine.empty() && machine != host.machine) {
    return refuse("it was compiled for " + machine + " and this host is " + host.machine);
  }
  if (device.is_cpu()) {
    // "AVX512 AVX512_VNNI": the instruction sets its kernels use, named as /proc/cpuinfo's flags
    // (AVX512 is the foundation, avx512f).
    const std::string flags = cpu_flags();
    std::istringstream isa(get("AOTI_CPU_ISA"));
    std::string name;
    while (isa >> name) {
      if (name == "DEFAULT" || name == "NEON" || name == "SVE") continue;
      const std::string flag = name == "AVX512" ? "avx512f" : lower(name);
      if (!flags.empty() && flags.find(" " + flag + " ") == std::string::npos) {
        return refuse("it was compiled for CPUs with " + name +
                      ", which this CPU lacks (export it on a machine like this one)");
      }
    }
  } else if (const std::string wanted = get("AOTI_COMPUTE_CAPABILITY"); !wanted.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(auto* cuda, cuda_backend());
    const int64_t have = cuda->compute_capability(device.index());
    int64_t want = 0;  // "90": major * 10 + minor, as the GPU's
    const auto parsed = std::from_chars(wanted.data(), wanted.data() + wanted.size(), want);
    if (parsed.ec == std::errc() && have > 0 && (want / 10 != have / 10 || want > have)) {
      return refuse("it was compiled for GPUs of compute capability " + std::to_string(want) +
                    " and " + device.str() + " is " + std::to_string(have) +
                    " (export it again on this kind of GPU)");
    }
  }
  return {};
}

// A package's compiled model links libtorch.so, PyTorch's umbrella library, which outpost-worker
// itself does not (it links libtorch_cpu alone, so that it starts without CUDA's libraries):
// load the one beside our libtorch_cpu, once, before the first package. Where that libtorch is
// PyTorch's CUDA build, this loads its CUDA libraries too.
Status load_libtorch() {
  static const Status loaded = []() -> Status {
    if (::dlopen("libtorch.so", RTLD_NOW | RTLD_NOLOAD) != nullptr) return {};
    Dl_info info{};
    if (::dladdr(reinterpret_cast<void*>(&at::get_num_threads), &info) == 0 ||
        info.dli_fname == nullptr) {
      return internal_error("cannot tell where libtorch_cpu.so was loaded from");
    }
    std::string dir = info.dli_fname;
    dir = dir.substr(0, dir.rfind('/') + 1);
    if (::dlopen((dir + "libtorch.so").c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
      const char* why = ::dlerror();
      return unavailable(std::string("AOTInductor packages need ") + dir +
                         "libtorch.so, which did not load: " + (why != nullptr ? why : "?"));
    }
    return {};
  }();
  return loaded;
}

class AotiProgram final : public TorchProgram {
 public:
  AotiProgram(std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader,
              c10::FunctionSchema schema, Spec out_spec, c10::TypePtr result_type,
              std::vector<std::string> param_names, bool pad_small_batches)
      : loader_(std::move(loader)),
        schema_(std::move(schema)),
        out_spec_(std::move(out_spec)),
        result_type_(std::move(result_type)),
        param_names_(std::move(param_names)),
        pad_small_batches_(pad_small_batches),
        output_count_(leaf_count(out_spec_)) {}

  std::map<std::string, c10::FunctionSchema> schemas() const override {
    return {{kAotiMethod, schema_}};
  }

  c10::IValue call(const std::string& /*method*/, std::vector<c10::IValue> args) override {
    std::vector<at::Tensor> inputs;
    inputs.reserve(args.size());
    for (auto& arg : args) inputs.push_back(std::move(arg).toTensor());
    std::vector<at::Tensor> outputs;
    try {
      outputs = run_padded(inputs);
    } catch (const c10::Error& e) {
      const std::string text = e.what_without_backtrace();
      const int64_t smallest = pad_small_batches_ ? smallest_batch(text) : 0;
      if (smallest <= 1 || min_batch_ >= smallest) throw std::runtime_error(name_inputs(text));
      min_batch_ = smallest;  // learnt once; later calls pad before running
      outputs = run_padded(inputs);
    } catch (const std::exception& e) {
      throw std::runtime_error(name_inputs(e.what()));
    }
    if (outputs.size() != output_count_) {
      throw std::runtime_error("the package returned " + std::to_string(outputs.size()) +
                               " tensors; its call spec says " + std::to_string(output_count_));
    }
    size_t next = 0;
    return unflatten(out_spec_, result_type_, outputs, next);
  }

  // The smallest batch a compiled model's guard asks for ("dim value is too small at 0, expected
  // it to be >= 2"), or 0 when `text` is about something else.
  static int64_t smallest_batch(const std::string& text) {
    const std::string marker = "dim value is too small at 0, expected it to be >= ";
    const auto at = text.find(marker);
    if (at == std::string::npos) return 0;
    int64_t value = 0;
    const char* begin = text.data() + at + marker.size();
    const auto parsed = std::from_chars(begin, text.data() + text.size(), value);
    return parsed.ec == std::errc() ? value : 0;
  }

  // Runs the package; a batch of fewer rows than min_batch_ gets copies of its last row, whose
  // outputs (the rows past the batch, where an output has the batch as its first dimension)
  // are dropped.
  std::vector<at::Tensor> run_padded(const std::vector<at::Tensor>& inputs) {
    const int64_t rows = inputs.empty() || inputs[0].dim() == 0 ? 0 : inputs[0].size(0);
    if (min_batch_ <= rows || rows == 0) return loader_->run(inputs);
    std::vector<at::Tensor> padded;
    padded.reserve(inputs.size());
    for (const auto& input : inputs) {
      if (input.dim() == 0 || input.size(0) != rows) return loader_->run(inputs);
      std::vector<at::Tensor> parts{input};
      for (int64_t i = rows; i < min_batch_; ++i) parts.push_back(input.narrow(0, rows - 1, 1));
      padded.push_back(at::cat(parts, 0));
    }
    std::vector<at::Tensor> outputs = loader_->run(padded);
    for (auto& output : outputs) {
      if (output.dim() > 0 && output.size(0) == min_batch_) output = output.narrow(0, 0, rows);
    }
    return outputs;
  }

  std::vector<at::Tensor> weights() const override {
    std::vector<at::Tensor> out;
    for (const auto& [name, tensor] : loader_->get_runner()->extract_constants_map(false)) {
      out.push_back(tensor);
    }
    return out;
  }

 private:
  // The compiled model's input checks say "input_handles[N]": name the parameter instead.
  std::string name_inputs(std::string text) const {
    for (size_t i = 0; i < param_names_.size(); ++i) {
      const std::string handle = "input_handles[" + std::to_string(i) + "]";
      for (auto at = text.find(handle); at != std::string::npos; at = text.find(handle)) {
        text.replace(at, handle.size(), "input '" + param_names_[i] + "'");
      }
    }
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text;
  }

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  c10::FunctionSchema schema_;
  Spec out_spec_;
  c10::TypePtr result_type_;
  std::vector<std::string> param_names_;
  const bool pad_small_batches_;  // config.yaml batches the method: its rows are independent
  const size_t output_count_;     // tensors the call spec's result holds
  int64_t min_batch_ = 0;         // the compiled model's smallest batch, once a guard said it
};

}  // namespace

Result<std::unique_ptr<TorchProgram>> open_aoti_program(const std::string& path,
                                                        const ModelConfig& config,
                                                        const c10::Device& device) {
  const std::string& file = config.file;
  std::unordered_map<std::string, std::string> metadata;
  try {
    metadata =
        torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, kPackageModel);
  } catch (const std::exception& e) {
    return Error(ErrorCode::kDataLoss,
                 file +
                     " is not an AOTInductor package outpost can load (made by "
                     "torch._inductor.aoti_compile_and_package, model name \"model\"): " +
                     std::string(e.what()).substr(0, 400));
  }
  OUTPOST_RETURN_IF_ERROR(check_target(metadata, file, device));
  OUTPOST_RETURN_IF_ERROR(load_libtorch());

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  try {
    loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
        path, kPackageModel, /*run_single_threaded=*/false, /*num_runners=*/1,
        device.is_cuda() ? device.index() : c10::DeviceIndex(-1));
  } catch (const std::exception& e) {
    return Error(ErrorCode::kDataLoss,
                 "loading " + file + " failed: " + std::string(e.what()).substr(0, 400));
  }
  const auto call_spec = loader->get_call_spec();
  if (call_spec.size() != 2) return invalid_argument(file + " has no call spec");
  OUTPOST_ASSIGN_OR_RETURN(const Spec in_spec, parse_tree(call_spec[0], file + "'s input spec"));
  OUTPOST_ASSIGN_OR_RETURN(const Spec out_spec, parse_tree(call_spec[1], file + "'s output spec"));

  // Inputs: ((positional...), {keyword: ...}), each a tensor. Keyword inputs keep their names;
  // positional ones are input0, input1, ...
  if (in_spec.type != "builtins.tuple" || in_spec.children.size() != 2) {
    return invalid_argument(file + "'s input spec is not (args, kwargs)");
  }
  std::vector<std::string> names;
  const Spec& args = in_spec.children[0];
  const Spec& kwargs = in_spec.children[1];
  for (size_t i = 0; i < args.children.size(); ++i) names.push_back("input" + std::to_string(i));
  names.insert(names.end(), kwargs.keys.begin(), kwargs.keys.end());
  for (const Spec* group : {&args, &kwargs}) {
    for (const auto& child : group->children) {
      if (!child.type.empty()) {
        return invalid_argument(file +
                                ": every input must be one tensor (the model was exported with "
                                "a " +
                                child.type + " input; pass its tensors as separate arguments)");
      }
    }
  }
  OUTPOST_ASSIGN_OR_RETURN(const auto returns, result_type(out_spec));

  std::vector<c10::Argument> arguments{c10::Argument("self", c10::AnyType::get())};
  for (const auto& name : names) arguments.emplace_back(name, c10::TensorType::get());
  c10::FunctionSchema schema(kAotiMethod, "", std::move(arguments), {c10::Argument("", returns)});
  LOG_DEBUG("model.aoti", file << ": " << schema << " on " << device.str());
  const bool pad_small_batches = config.method(kAotiMethod).batching.max_batch_size > 0;
  return std::unique_ptr<TorchProgram>(
      std::make_unique<AotiProgram>(std::move(loader), std::move(schema), out_spec, returns,
                                    std::move(names), pad_small_batches));
}

}  // namespace outpost::runtime
