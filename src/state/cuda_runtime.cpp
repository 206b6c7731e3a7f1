#include "state/cuda_runtime.h"

#ifndef DAIFU_WITH_CUDA
#error "DAIFU_WITH_CUDA (0 or 1) comes from src/CMakeLists.txt"
#endif

#if DAIFU_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <atomic>
#include <stdexcept>
#include <string>

namespace daifu::detail {
namespace {

std::atomic<void (*)()> g_override{nullptr};

#if DAIFU_WITH_CUDA
// Bytes reserved by the caching allocator over all devices; nullopt if a device's stats are
// unavailable (the allocator is initialized lazily, on the first CUDA allocation).
std::optional<int64_t> reserved_bytes(int devices) noexcept {
  try {
    int64_t total = 0;
    for (int d = 0; d < devices; ++d) {
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(d));
      total += stats.reserved_bytes[0].current;  // StatType::AGGREGATE
    }
    return total;
  } catch (...) {
    return std::nullopt;
  }
}
#endif

}  // namespace

bool built_with_cuda() noexcept { return DAIFU_WITH_CUDA != 0; }

int cuda_device_count() noexcept {
#if DAIFU_WITH_CUDA
  return c10::cuda::device_count();
#else
  return 0;
#endif
}

void synchronize_cuda_device(int64_t device) {
#if DAIFU_WITH_CUDA
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  c10::cuda::device_synchronize();
#else
  throw std::logic_error("daifu was built against a CPU-only LibTorch: no CUDA device " + std::to_string(device));
#endif
}

at::Generator cuda_default_generator(c10::DeviceIndex device) {
#if DAIFU_WITH_CUDA
  return at::cuda::detail::getDefaultCUDAGenerator(device);
#else
  throw std::logic_error("daifu was built against a CPU-only LibTorch: no CUDA generator " + std::to_string(device));
#endif
}

CudaCacheRelease empty_cuda_cache() noexcept {
  CudaCacheRelease release;
  if (auto fn = g_override.load()) {
    fn();
    release.emptied = true;
    return release;
  }
#if DAIFU_WITH_CUDA
  const int devices = cuda_device_count();
  if (devices == 0) return release;
  release.reserved_before = reserved_bytes(devices);
  try {
    c10::cuda::CUDACachingAllocator::emptyCache();
    release.emptied = true;
  } catch (...) {
    return release;
  }
  release.reserved_after = reserved_bytes(devices);
#endif
  return release;
}

void override_cuda_cache_emptier_for_testing(void (*fn)()) noexcept { g_override.store(fn); }

}  // namespace daifu::detail
