// `daifu patch build fix.cpp`: builds a hot patch against the daifu and libtorch this CLI
// belongs to, with the same compiler, through a generated CMake project that calls
// daifu_add_patch().
#pragma once

#include <filesystem>
#include <string>

namespace daifu::cli {

struct PatchBuildOptions {
  std::filesystem::path source;
  std::filesystem::path output;     ///< default: ./<source stem>.so
  std::filesystem::path daifu_dir;  ///< folder of daifuConfig.cmake; default: found next to this CLI
  std::string build_type = "RelWithDebInfo";
  bool verbose = false;
};

/// Returns a process exit code: 0 built, 1 error (the build's output is printed).
int patch_build(const PatchBuildOptions& options, const char* argv0);

}  // namespace daifu::cli
