// daifu's one door to the CUDA runtime. Built against a CUDA LibTorch (DAIFU_WITH_CUDA, set by
// CMake from the LibTorch it finds) it calls c10::cuda and ATen's CUDA generators directly;
// built against a CPU-only LibTorch there is no CUDA device and every call says so.
#pragma once

#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>

namespace daifu::detail {

/// True if libdaifu was built against a CUDA LibTorch.
bool built_with_cuda() noexcept;

/// The CUDA devices this process can use: 0 in a CPU build or where no driver or device is.
int cuda_device_count() noexcept;

/// Waits for all work queued on `device`, on every stream, so that an asynchronous CUDA error
/// (a device-side assert, an illegal address) is thrown here. Throws what CUDA reports.
void synchronize_cuda_device(int64_t device);

/// The default generator of CUDA device `device` (0 <= device < cuda_device_count()).
/// Throws std::logic_error in a CPU build.
at::Generator cuda_default_generator(c10::DeviceIndex device);

/// What emptying the CUDA caching allocator did.
struct CudaCacheRelease {
  bool emptied = false;                   ///< the cache was emptied (or the test override ran)
  std::optional<int64_t> reserved_before;  ///< bytes the allocator held on all devices, if known
  std::optional<int64_t> reserved_after;
};

/// Releases the caching allocator's unused blocks on every device. Not emptied when there is
/// no CUDA device or the allocator threw. Never throws.
CudaCacheRelease empty_cuda_cache() noexcept;

/// Tests: makes empty_cuda_cache() call `fn` instead of the allocator; nullptr undoes it.
void override_cuda_cache_emptier_for_testing(void (*fn)()) noexcept;

}  // namespace daifu::detail
