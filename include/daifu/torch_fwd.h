// Forward declarations of the libtorch types daifu's public headers name, so that including
// them does not pull in <torch/torch.h> (~30 s per translation unit).
#pragma once

namespace at {
class Tensor;
}
namespace torch {
namespace nn {
class Module;
}
namespace optim {
class Optimizer;
}
}  // namespace torch
