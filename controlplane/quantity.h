// Kubernetes-style quantities, as Clarifai's compute_info writes them: "8", "500m", "16Gi",
// "40G". Used to check configs and to place replicas by memory.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace outpost::control {

// The quantity's value in base units (bytes, cores): "16Gi" is 17179869184, "500m" is 0.5.
// Accepts a JSON number or a string; refuses negative, non-finite and unknown suffixes.
Result<double> parse_quantity(const nlohmann::json& value, std::string_view field);

}  // namespace outpost::control
