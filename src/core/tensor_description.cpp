#include "core/tensor_description.h"

#include <ATen/core/Tensor.h>

namespace daifu::detail {

nlohmann::json tensor_description(const at::Tensor& t) {
  return {{"shape", t.sizes().vec()}, {"dtype", c10::toString(t.scalar_type())}};
}

std::string describe_tensor(const at::Tensor& t) { return tensor_description(t).dump(); }

}  // namespace daifu::detail
