// The exception types LibTorch 2.x added to c10 (absent from 1.13): what each says about a
// failure's kind. The one place that knows which LibTorch has which type.
#pragma once

#include <daifu/failure.h>

#include <c10/util/Exception.h>
#include <torch/version.h>

#include <exception>
#include <optional>
#include <utility>

#define DAIFU_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace daifu::detail {

using TypedKind = std::pair<FailureKind, const char*>;

#if DAIFU_TORCH_AT_LEAST(2, 8)
/// What a CUDA error code says (cudaError_t values, stable across CUDA releases).
inline std::optional<TypedKind> kind_of_cuda_error(int32_t code) {
  switch (code) {
    case 2:    // cudaErrorMemoryAllocation
      return TypedKind{FailureKind::OutOfMemory, "type:c10::AcceleratorError(cudaErrorMemoryAllocation)"};
    case 46:   // cudaErrorDevicesUnavailable
      return TypedKind{FailureKind::DeviceContention, "type:c10::AcceleratorError(cudaErrorDevicesUnavailable)"};
    case 214:  // cudaErrorECCUncorrectable
    case 700:  // cudaErrorIllegalAddress
    case 710:  // cudaErrorAssert (a device-side assert)
    case 715:  // cudaErrorIllegalInstruction
    case 716:  // cudaErrorMisalignedAddress
    case 719:  // cudaErrorLaunchFailure
      return TypedKind{FailureKind::Fatal, "type:c10::AcceleratorError(context-poisoning)"};
    default:
      return std::nullopt;
  }
}
#endif

/// The kind the type of `error` settles, for the types LibTorch 2.x added; nullopt for every
/// other exception, and always on LibTorch 1.x. Distributed errors: a store or network error
/// is transient (the peer may come back within the group's timeout); a backend error (NCCL's
/// communicator aborted, a watchdog timeout) leaves the communicator unusable, so it is fatal.
inline std::optional<TypedKind> kind_by_libtorch2_type(const std::exception_ptr& error) {
#if DAIFU_TORCH_AT_LEAST(2, 3)
  try {
    std::rethrow_exception(error);
#if DAIFU_TORCH_AT_LEAST(2, 8)
  } catch (const c10::AcceleratorError& e) {
    return kind_of_cuda_error(e.get_error_code());
#endif
  } catch (const c10::DistNetworkError&) {
    return TypedKind{FailureKind::TransientRuntime, "type:c10::DistNetworkError"};
  } catch (const c10::DistStoreError&) {
    return TypedKind{FailureKind::TransientRuntime, "type:c10::DistStoreError"};
  } catch (const c10::DistBackendError&) {
    return TypedKind{FailureKind::Fatal, "type:c10::DistBackendError"};
  } catch (...) {
  }
#else
  (void)error;
#endif
  return std::nullopt;
}

}  // namespace daifu::detail
