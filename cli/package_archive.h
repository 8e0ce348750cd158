// `outpost model upload DIR` sends the package directory as a tar archive: the regular files at
// its top level (model.pt, config.yaml, ...), in name order. Hidden files are left out; a
// subdirectory is refused, since a package is flat.
#pragma once

#include <string>

#include "common/result.h"

namespace outpost::cli {

Status write_package_archive(const std::string& dir, const std::string& archive);

// model.id from DIR/config.yaml.
Result<std::string> package_model_id(const std::string& dir);

}  // namespace outpost::cli
