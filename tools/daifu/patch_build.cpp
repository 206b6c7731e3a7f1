#include "patch_build.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace daifu::cli {
namespace fs = std::filesystem;

namespace {

// The daifu package this CLI was built with: installed next to it (<prefix>/bin/daifu ->
// <prefix>/<libdir>/cmake/daifu), else the build tree it was built in.
fs::path find_daifu_dir(const char* argv0) {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) self = fs::absolute(argv0, ec);
  const fs::path installed = self.parent_path().parent_path() / DAIFU_INSTALL_CMAKE_REL;
  if (fs::exists(installed / "daifuConfig.cmake", ec)) return installed;
  return DAIFU_BUILD_CMAKE_DIR;
}

// Runs argv with stdout and stderr appended to `log`; returns the exit status.
int run(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return 127;
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) return 127;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string read_all(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

int patch_build(const PatchBuildOptions& options, const char* argv0) {
  std::error_code ec;
  const fs::path source = fs::absolute(options.source, ec);
  if (!fs::is_regular_file(source, ec)) {
    std::cerr << "daifu: patch source " << options.source.string() << " is not a file\n";
    return 1;
  }
  const std::string name = source.stem().string();
  const fs::path output = fs::absolute(options.output.empty() ? fs::path(name + ".so") : options.output, ec);
  const fs::path daifu_dir = options.daifu_dir.empty() ? find_daifu_dir(argv0) : fs::absolute(options.daifu_dir, ec);
  if (!fs::exists(daifu_dir / "daifuConfig.cmake", ec)) {
    std::cerr << "daifu: no daifuConfig.cmake in " << daifu_dir.string() << "; pass --daifu-dir\n";
    return 1;
  }

  char pattern[] = "/tmp/daifu-patch-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) {
    std::cerr << "daifu: cannot create a temporary folder under /tmp\n";
    return 1;
  }
  const fs::path work = pattern;
  const fs::path log = work / "build.log";
  {
    std::ofstream cmake(work / "CMakeLists.txt");
    cmake << "cmake_minimum_required(VERSION 3.18)\n"
          << "project(daifu_patch_" << name << " LANGUAGES CXX)\n"
          << "set(CMAKE_CXX_STANDARD 17)\nset(CMAKE_CXX_STANDARD_REQUIRED ON)\n"
          << "find_package(daifu REQUIRED)\n"
          << "daifu_add_patch(" << name << " \"" << source.string() << "\")\n";
  }
  std::cout << "daifu: building " << source.filename().string() << " against " << daifu_dir.string() << "\n";
  int rc = run({"cmake", "-S", work.string(), "-B", (work / "build").string(), "-Ddaifu_DIR=" + daifu_dir.string(),
                "-DTorch_DIR=" DAIFU_TORCH_DIR, "-DCMAKE_PREFIX_PATH=" DAIFU_TORCH_PREFIX,
                "-DCMAKE_CXX_COMPILER=" DAIFU_CXX_COMPILER,
                "-DCMAKE_BUILD_TYPE=" + options.build_type},
               log);
  if (rc == 0) rc = run({"cmake", "--build", (work / "build").string()}, log);
  const fs::path built = work / "build" / (name + ".so");
  if (rc == 0 && !fs::exists(built, ec)) rc = 1;
  if (rc == 0) {
    fs::copy_file(built, output, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      std::cerr << "daifu: cannot write " << output.string() << ": " << ec.message() << "\n";
      rc = 1;
    }
  }
  if (rc != 0 || options.verbose) (rc != 0 ? std::cerr : std::cout) << read_all(log);
  if (rc == 0) {
    std::cout << "daifu: built " << output.string() << "; apply it with: daifu apply " << output.filename().string()
              << " --workplace WORKPLACE\n";
  } else {
    std::cerr << "daifu: building the patch failed (output above)\n";
  }
  fs::remove_all(work, ec);
  return rc == 0 ? 0 : 1;
}

}  // namespace daifu::cli
