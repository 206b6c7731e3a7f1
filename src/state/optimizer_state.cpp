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

std::string state_type_name(const torch::optim::OptimizerParamState& s) {
  using namespace torch::optim;
  if (dynamic_cast<const AdamParamState*>(&s)) return "adam";
  if (dynamic_cast<const AdamWParamState*>(&s)) return "adamw";
  if (dynamic_cast<const SGDParamState*>(&s)) return "sgd";
  if (dynamic_cast<const RMSpropParamState*>(&s)) return "rmsprop";
  if (dynamic_cast<const AdagradParamState*>(&s)) return "adagrad";
  if (dynamic_cast<const LBFGSParamState*>(&s)) return "lbfgs";
  return "";
}

std::vector<double> state_scalars(const torch::optim::OptimizerParamState& s) {
  using namespace torch::optim;
  if (auto* a = dynamic_cast<const AdamParamState*>(&s)) return {static_cast<double>(a->step())};
  if (auto* w = dynamic_cast<const AdamWParamState*>(&s)) return {static_cast<double>(w->step())};
  if (auto* r = dynamic_cast<const RMSpropParamState*>(&s)) return {static_cast<double>(r->step())};
  if (auto* d = dynamic_cast<const AdagradParamState*>(&s)) return {static_cast<double>(d->step())};
  if (auto* l = dynamic_cast<const LBFGSParamState*>(&s)) {
    return {static_cast<double>(l->func_evals()), static_cast<double>(l->n_iter()), l->t(), l->prev_loss(),
            static_cast<double>(l->old_dirs().size()), static_cast<double>(l->old_stps().size()),
            static_cast<double>(l->ro().size()), l->al() ? static_cast<double>(l->al()->size()) : -1.0};
  }
  return {};
}

std::unique_ptr<torch::optim::OptimizerParamState> make_state(const std::string& type,
                                                              const std::vector<double>& v) {
  using namespace torch::optim;
  auto step = [&] { return static_cast<int64_t>(v.at(0)); };
  try {
    if (type == "adam") return std::make_unique<AdamParamState>(AdamParamState().step(step()));
    if (type == "adamw") return std::make_unique<AdamWParamState>(AdamWParamState().step(step()));
    if (type == "rmsprop") return std::make_unique<RMSpropParamState>(RMSpropParamState().step(step()));
    if (type == "adagrad") return std::make_unique<AdagradParamState>(AdagradParamState().step(step()));
    if (type == "sgd") return std::make_unique<SGDParamState>();
    if (type == "lbfgs" && v.size() == 8) {
      auto l = std::make_unique<LBFGSParamState>();
      l->func_evals(static_cast<int64_t>(v[0])).n_iter(static_cast<int64_t>(v[1])).t(v[2]).prev_loss(v[3]);
      l->old_dirs(std::deque<at::Tensor>(static_cast<std::size_t>(v[4])));
      l->old_stps(std::deque<at::Tensor>(static_cast<std::size_t>(v[5])));
      l->ro(std::deque<at::Tensor>(static_cast<std::size_t>(v[6])));
      if (v[7] >= 0) l->al(std::vector<at::Tensor>(static_cast<std::size_t>(v[7])));
      return l;
    }
  } catch (const std::out_of_range&) {
  }
  return nullptr;
}

bool updates_untraceably(const torch::optim::Optimizer& optimizer) {
  for (const auto& group : optimizer.param_groups()) {
    const auto* sgd = dynamic_cast<const torch::optim::SGDOptions*>(&group.options());
    if (sgd != nullptr && sgd->momentum() == 0) return true;
  }
  return false;
}

}  // namespace daifu::detail
