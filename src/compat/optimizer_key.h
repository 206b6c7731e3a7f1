// LibTorch 1.x and 2.x file an optimizer's per-parameter state under different keys; this is
// the one place that knows. Include it wherever `Optimizer::state()` is searched by parameter.
#pragma once

#include <torch/optim/optimizer.h>

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

namespace daifu::detail {

/// The map `torch::optim::Optimizer::state()` returns, and its key type: `std::string` in
/// LibTorch 1.x (the TensorImpl address printed by c10::guts::to_string), `void*` in 2.x (the
/// TensorImpl address itself).
using OptimizerStateMap = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
using OptimizerStateKey = typename OptimizerStateMap::key_type;

/// The key `param`'s state is filed under in `Optimizer::state()`. The key follows the
/// TensorImpl, which `set_data()` keeps.
template <class Key = OptimizerStateKey>
Key optimizer_state_key(const at::Tensor& param) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream out;  // what 1.x's c10::guts::to_string does
    out << param.unsafeGetTensorImpl();
    return out.str();
  } else {
    return static_cast<Key>(param.unsafeGetTensorImpl());
  }
}

}  // namespace daifu::detail
