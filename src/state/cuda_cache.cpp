#include "state/cuda_cache.h"

#include <dlfcn.h>

#include <atomic>

namespace daifu::detail {
namespace {

std::atomic<void (*)()> g_override{nullptr};

// Mangled names, newest API last; the first one found is used.
struct Candidate {
  const char* symbol;
  const char* name;
};
constexpr Candidate kCandidates[] = {
    {"_ZN3c104cuda20CUDACachingAllocator10emptyCacheEv", "c10::cuda::CUDACachingAllocator::emptyCache()"},
    {"_ZN2at11accelerator10emptyCacheEv", "at::accelerator::emptyCache()"},
};

}  // namespace

CudaCacheEmptier find_cuda_cache_emptier() noexcept {
  if (auto fn = g_override.load()) return {fn, "test override"};
  for (const Candidate& c : kCandidates) {
    if (void* sym = ::dlsym(RTLD_DEFAULT, c.symbol)) return {reinterpret_cast<void (*)()>(sym), c.name};
  }
  return {};
}

bool empty_cuda_cache() noexcept {
  const CudaCacheEmptier emptier = find_cuda_cache_emptier();
  if (emptier.fn == nullptr) return false;
  try {
    emptier.fn();
    return true;
  } catch (...) {
    return false;
  }
}

void override_cuda_cache_emptier_for_testing(void (*fn)()) noexcept { g_override.store(fn); }

}  // namespace daifu::detail
