// The one place daifu reaches for the CUDA caching allocator. daifu links no CUDA library:
// the function is looked up at run time in the libtorch already loaded in the process.
#pragma once

#include <daifu/export.h>

namespace daifu::detail {

/// A function that releases the cached, unused blocks of the CUDA caching allocator.
struct CudaCacheEmptier {
  void (*fn)() = nullptr;  ///< nullptr: this process's libtorch has no CUDA caching allocator
  const char* name = "";   ///< what `fn` is, for the journal
};

/// Looks the function up with dlsym(RTLD_DEFAULT): libtorch 1.x exports
/// `void c10::cuda::CUDACachingAllocator::emptyCache()` from libc10_cuda.so; 2.x makes it an
/// inline call through the allocator object (nothing to find); recent 2.x releases export
/// `void at::accelerator::emptyCache()`.
/// Found on every call unless a test override is set. Never throws.
DAIFU_API CudaCacheEmptier find_cuda_cache_emptier() noexcept;

/// Calls the function found, if any. True if it ran and returned; false if there is none or
/// it threw (e.g. a CUDA-less libtorch 2.9 that has the symbol but no accelerator).
DAIFU_API bool empty_cuda_cache() noexcept;

/// Tests: makes find_cuda_cache_emptier() return `fn` (named "test override"); nullptr
/// restores the dlsym lookup.
DAIFU_API void override_cuda_cache_emptier_for_testing(void (*fn)()) noexcept;

}  // namespace daifu::detail
