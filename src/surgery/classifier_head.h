// The classifier head of the tracked model — the last torch::nn::Linear among the tracked
// modules and their submodules (modules in the order they were tracked, submodules in
// registration order, depth first) — and its widening in place to more classes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace daifu {
class RepairContext;
}

namespace daifu::detail {

class RepairServices;
class TrackedState;

struct ClassifierHead {
  std::string name;  ///< "model.fc2": the tracked name, then the submodule path
  int64_t in_features = 0;
  int64_t out_features = 0;
};

/// The head of the tracked modules; nullopt if none of them holds a torch::nn::Linear.
std::optional<ClassifierHead> classifier_head(const TrackedState& state);

/// Widens the head to `classes` (> out_features) outputs, in place, and notes the change:
/// - the same LinearImpl keeps its weight and bias tensors (the same TensorImpls), which get
///   new data with set_data(): every holder of the layer or its parameters (the user's
///   ModuleHolder member, the parent's parameter list, optimizers' param lists) sees the wide
///   layer; options.out_features becomes `classes`;
/// - rows [0, out_features) keep their values, rows [out_features, classes) are initialised
///   like those of a fresh Linear(in_features, classes);
/// - the head's gradients are reset and its entries in the tracked optimizers' state erased
///   (their moments have the old shape); no other parameter or state entry changes;
/// - the snapshot no longer fits the head. If tracked state was modified during the failed
///   attempt (the guard loop has then restored the snapshot before the surgery ran and will
///   re-run the steps since it), the snapshot is retaken for its step with the wide head.
///   Otherwise a fresh snapshot is requested for the start of the retry.
/// Throws daifu::Error if there is no head or it already has `classes` outputs or more.
void widen_classifier_head(RepairServices& session, int64_t classes, RepairContext& context);

}  // namespace daifu::detail
