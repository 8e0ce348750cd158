// Kubernetes-style resource quantities, as Clarifai's compute_info uses them: memory as
// "16Gi", "512Mi", "1G", "1500000" (bytes), CPU as "8", "0.5", "500m" (cores).
#pragma once

#include <cstdint>
#include <string_view>

#include "common/result.h"

namespace outpost {

// Bytes from "<number>[Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P]"; a bare number is bytes. `field` names the
// setting in the error ("nodepool.instance_types[0].compute_info.cpu_memory").
Result<uint64_t> parse_memory_quantity(std::string_view text, std::string_view field);

// Millicores from "<number>" (cores, fractions allowed) or "<number>m" (millicores).
Result<uint64_t> parse_cpu_quantity(std::string_view text, std::string_view field);

}  // namespace outpost
