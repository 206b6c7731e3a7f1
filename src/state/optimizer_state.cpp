#include "state/optimizer_state.h"

namespace daifu::detail {

bool map_state_tensors(torch::optim::OptimizerParamState& s, const TensorMap& fn) {
  using namespace torch::optim;
  if (auto* a = dynamic_cast<AdamParamState*>(&s)) {
    a->exp_avg(fn(a->exp_avg())).exp_avg_sq(fn(a->exp_avg_sq())).max_exp_avg_sq(fn(a->max_exp_avg_sq()));
  } else if (auto* w = dynamic_cast<AdamWParamState*>(&s)) {
    w->exp_avg(fn(w->exp_avg())).exp_avg_sq(fn(w->exp_avg_sq())).max_exp_avg_sq(fn(w->max_exp_avg_sq()));
  } else if (auto* g = dynamic_cast<SGDParamState*>(&s)) {
    g->momentum_buffer(fn(g->momentum_buffer()));
  } else if (auto* r = dynamic_cast<RMSpropParamState*>(&s)) {
    r->square_avg(fn(r->square_avg())).momentum_buffer(fn(r->momentum_buffer())).grad_avg(fn(r->grad_avg()));
  } else if (auto* d = dynamic_cast<AdagradParamState*>(&s)) {
    d->sum(fn(d->sum()));
  } else if (auto* l = dynamic_cast<LBFGSParamState*>(&s)) {
    l->d(fn(l->d())).H_diag(fn(l->H_diag())).prev_flat_grad(fn(l->prev_flat_grad()));
    auto map_deque = [&](const std::deque<at::Tensor>& in) {
      std::deque<at::Tensor> out;
      for (const auto& t : in) out.push_back(fn(t));
      return out;
    };
    l->old_dirs(map_deque(l->old_dirs())).old_stps(map_deque(l->old_stps())).ro(map_deque(l->ro()));
    if (l->al()) {
      std::vector<at::Tensor> al;
      for (const auto& t : *l->al()) al.push_back(fn(t));
      l->al(al);
    }
  } else {
    return false;
  }
  return true;
}

std::vector<at::Tensor> state_tensors(torch::optim::OptimizerParamState& s) {
  std::vector<at::Tensor> out;
  map_state_tensors(s, [&](const at::Tensor& t) {
    out.push_back(t);
    return t;
  });
  return out;
}

bool updates_untraceably(const torch::optim::Optimizer& optimizer) {
  for (const auto& group : optimizer.param_groups()) {
    const auto* sgd = dynamic_cast<const torch::optim::SGDOptions*>(&group.options());
    if (sgd != nullptr && sgd->momentum() == 0) return true;
  }
  return false;
}

}  // namespace daifu::detail
