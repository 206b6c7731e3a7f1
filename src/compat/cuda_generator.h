// The default CUDA generator of a device, reached through ATen's CUDA hooks so that a
// CPU-only LibTorch compiles the same code. The hook was renamed between LibTorch versions;
// this is the one place that knows.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/detail/CUDAHooksInterface.h>

namespace daifu::detail {
namespace compat {

struct Older {};
struct Newer : Older {};

// LibTorch 2.x: AcceleratorHooksInterface::getDefaultGenerator(device).
template <class Hooks>
auto default_generator(const Hooks& hooks, c10::DeviceIndex device, Newer) -> decltype(hooks.getDefaultGenerator(device)) {
  return hooks.getDefaultGenerator(device);
}

// LibTorch 1.x: CUDAHooksInterface::getDefaultCUDAGenerator(device).
template <class Hooks>
auto default_generator(const Hooks& hooks, c10::DeviceIndex device, Older) -> decltype(hooks.getDefaultCUDAGenerator(device)) {
  return hooks.getDefaultCUDAGenerator(device);
}

}  // namespace compat

/// The default generator of CUDA device `device`. Only call it where
/// `at::detail::getCUDAHooks().hasCUDA()`: a CPU-only LibTorch throws.
inline at::Generator cuda_default_generator(c10::DeviceIndex device) {
  return compat::default_generator(at::detail::getCUDAHooks(), device, compat::Newer{});
}

}  // namespace daifu::detail
