// What daifu knows about LibTorch's optimizers: the tensors inside their per-parameter state,
// and which of them update parameters without bumping the parameters' version counters.
#pragma once

#include <torch/optim.h>

#include <functional>
#include <vector>

namespace daifu::detail {

using TensorMap = std::function<at::Tensor(const at::Tensor&)>;

/// Replaces every tensor field of a per-parameter state (SGD, Adam, AdamW, RMSprop, Adagrad,
/// LBFGS) by fn(field), in a fixed order. False for a state type daifu does not know.
bool map_state_tensors(torch::optim::OptimizerParamState& state, const TensorMap& fn);

/// The tensor fields of a per-parameter state, in map_state_tensors order.
std::vector<at::Tensor> state_tensors(torch::optim::OptimizerParamState& state);

/// True when optimizer.step() may change parameters without a trace in any version counter:
/// LibTorch 1.13's SGD writes through .data(); with momentum its buffer still records the
/// update, without momentum nothing does.
bool updates_untraceably(const torch::optim::Optimizer& optimizer);

}  // namespace daifu::detail
