// The batch of a failed step as surgeries see it: the tensors among the values the step
// memoized with Step::once. Only data fetched through Step::once can be repaired by the
// data surgeries (exceptional_data, tensor_mismatch); a batch the body builds anew on every
// attempt is out of their reach.
#pragma once

#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <vector>

namespace at {
class Tensor;
}
namespace daifu {
class Step;
}

namespace daifu::detail {

class TrackedState;

/// What a memoized tensor is to the loss: the model's input, the target, or not known.
enum class BatchRole { Input, Target, Unknown };
const char* to_string(BatchRole role) noexcept;

/// One tensor of the batch. `tensor` points into the memoized value: assigning to it replaces
/// the tensor for every later attempt of the step (and for a re-run after a rollback).
struct BatchTensor {
  std::string name;  ///< "batch", "batch.data", "batch[2].target", "batch.first", "batch<1>"
  BatchRole role;
  at::Tensor* tensor;
};

/// The defined tensors among the step's memos, sorted by name. Understood memo types and roles:
///   at::Tensor                                 Target if the key contains "target" or "label"
///                                              (any case), else Input
///   torch::data::Example<>                     data: Input, target: Target
///   std::vector<torch::data::Example<>>        the same, per element
///   std::pair<at::Tensor, at::Tensor>          first: Input, second: Target
///   std::tuple<at::Tensor, at::Tensor>         <0>: Input, <1>: Target
///   std::vector<at::Tensor>                    Target if the key says so, else Unknown
/// Other memo types are not listed.
std::vector<BatchTensor> batch_tensors(Step& step);

/// The floating dtype of the tracked modules' parameters (the first floating one found), i.e.
/// the dtype the model expects its input in; nullopt when no tracked module has one.
std::optional<c10::ScalarType> model_dtype(const TrackedState& state);

}  // namespace daifu::detail
