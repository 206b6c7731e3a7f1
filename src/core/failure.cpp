#include <daifu/failure.h>

#include <boost/stacktrace.hpp>

#include <dlfcn.h>

#include <array>
#include <cstring>
#include <sstream>

namespace daifu {
namespace {

struct KindName {
  FailureKind kind;
  std::string_view name;
};

constexpr std::array<KindName, 10> kKindNames{{
    {FailureKind::ApiMisuse, "api_misuse"},
    {FailureKind::TensorMismatch, "tensor_mismatch"},
    {FailureKind::OutOfMemory, "out_of_memory"},
    {FailureKind::DeviceContention, "device_contention"},
    {FailureKind::PathProblem, "path_problem"},
    {FailureKind::ExceptionalData, "exceptional_data"},
    {FailureKind::TransientRuntime, "transient_runtime"},
    {FailureKind::NumericFault, "numeric_fault"},
    {FailureKind::Fatal, "fatal"},
    {FailureKind::Unknown, "unknown"},
}};

}  // namespace

const std::vector<FailureKind>& all_failure_kinds() {
  static const std::vector<FailureKind> kinds = [] {
    std::vector<FailureKind> out;
    for (const auto& k : kKindNames) out.push_back(k.kind);
    return out;
  }();
  return kinds;
}

std::string_view to_string(FailureKind kind) {
  for (const auto& k : kKindNames) {
    if (k.kind == kind) return k.name;
  }
  return "unknown";
}

std::optional<FailureKind> failure_kind_from_string(std::string_view name) {
  for (const auto& k : kKindNames) {
    if (k.name == name) return k.kind;
  }
  return std::nullopt;
}

std::string symbolize_stack(const RawStack& stack) {
  std::ostringstream out;
  for (std::size_t i = 0; i < stack.size(); ++i) {
    boost::stacktrace::frame frame(stack[i]);
    out << '#' << i << ' ' << frame << '\n';
  }
  return out.str();
}

std::string user_frame(const RawStack& stack) {
  static constexpr std::array<const char*, 9> kLibraries{"libdaifu", "libtorch", "libc10", "libstdc++", "libc.so",
                                                          "libgcc",   "ld-linux", "libboost", "libgomp"};
  for (const void* address : stack) {
    Dl_info info{};
    if (dladdr(address, &info) != 0 && info.dli_fname != nullptr) {
      const char* slash = std::strrchr(info.dli_fname, '/');
      const char* base = slash != nullptr ? slash + 1 : info.dli_fname;
      bool library = false;
      for (const char* lib : kLibraries) library = library || std::strncmp(base, lib, std::strlen(lib)) == 0;
      if (library) continue;
    }
    return boost::stacktrace::to_string(boost::stacktrace::frame(address));
  }
  return "";
}

}  // namespace daifu
