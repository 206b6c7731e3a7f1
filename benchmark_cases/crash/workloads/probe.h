// A point in a workload's forward pass where a fault may be injected: the silent-fault
// campaign passes daifu's Step::probe; everyone else passes nothing.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <utility>

namespace crash {

/// Gets a point's name and tensor, returns the tensor to go on with.
using Probe = std::function<torch::Tensor(const char* name, torch::Tensor)>;

/// `probe(name, t)`, or `t` itself when there is no probe.
inline torch::Tensor probed(const Probe& probe, const char* name, torch::Tensor t) {
  return probe ? probe(name, std::move(t)) : t;
}

}  // namespace crash
