// What daifu knows about LibTorch's optimizers: the tensors inside their per-parameter state,
// and which of them update parameters without bumping the parameters' version counters.
#pragma once

#include <torch/optim.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace daifu::detail {

using TensorMap = std::function<at::Tensor(const at::Tensor&)>;

/// Replaces every tensor field of a per-parameter state (SGD, Adam, AdamW, RMSprop, Adagrad,
/// LBFGS) by fn(field), in a fixed order. False for a state type daifu does not know.
bool map_state_tensors(torch::optim::OptimizerParamState& state, const TensorMap& fn);

/// The tensor fields of a per-parameter state, in map_state_tensors order.
std::vector<at::Tensor> state_tensors(torch::optim::OptimizerParamState& state);

/// The short name of a state type ("adam", "adamw", "sgd", "rmsprop", "adagrad", "lbfgs"),
/// or "" for a type daifu does not know.
std::string state_type_name(const torch::optim::OptimizerParamState& state);

/// The non-tensor fields of a state, in a fixed order per type (for LBFGS also the lengths of
/// its tensor lists), so that make_state() can rebuild it.
std::vector<double> state_scalars(const torch::optim::OptimizerParamState& state);

/// A state of type `type` with `scalars` set and placeholder (undefined) tensors, ready for
/// map_state_tensors() to fill; nullptr for an unknown type or malformed scalars.
std::unique_ptr<torch::optim::OptimizerParamState> make_state(const std::string& type,
                                                              const std::vector<double>& scalars);

/// True when optimizer.step() may change parameters without a trace in any version counter:
/// LibTorch 1.13's SGD writes through .data(); with momentum its buffer still records the
/// update, without momentum nothing does.
bool updates_untraceably(const torch::optim::Optimizer& optimizer);

}  // namespace daifu::detail
