#include "inject/value_injector.h"


#include "journal/events.h"
#include "journal/journal.h"
#include "journal/json_number.h"
#include "state/tracked_state.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>

namespace daifu::detail {
namespace {

float flip_bit(float v, int bit) {
  uint32_t bits = 0;
  std::memcpy(&bits, &v, sizeof bits);
  bits ^= uint32_t{1} << bit;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

float random_finite(std::mt19937_64& rng) {
  for (;;) {
    const auto bits = static_cast<uint32_t>(rng());
    float v = 0;
    std::memcpy(&v, &bits, sizeof v);
    if (std::isfinite(v)) return v;
  }
}

// The same elements and values on every attempt of the fault's step.
std::mt19937_64 rng_for(const ValueFault& f) {
  std::seed_seq seq{static_cast<uint32_t>(f.seed), static_cast<uint32_t>(f.seed >> 32),
                    static_cast<uint32_t>(f.step), static_cast<uint32_t>(static_cast<uint64_t>(f.step) >> 32)};
  return std::mt19937_64(seq);
}

// The chosen elements of a tensor (flat indices) and their values before and after the fault.
struct Chosen {
  std::vector<int64_t> flat;
  std::vector<double> before, after;
  at::Tensor index, values;  // on the tensor's device; values in its dtype
};

std::vector<int64_t> flat_positions(const ValueFault& f, const at::Tensor& t, std::mt19937_64& rng) {
  const int64_t n = t.numel();
  std::vector<int64_t> flat;
  if (n == 0) return flat;
  if (!f.positions.empty()) {
    const int64_t rank = t.dim();
    for (const auto& pos : f.positions) {
      const int64_t given = static_cast<int64_t>(pos.size());
      int64_t offset = 0;
      for (int64_t d = 0; d < rank; ++d) {
        const int64_t k = d - (rank - given);  // right-aligned
        offset = offset * t.size(d) + (k >= 0 ? pos[static_cast<std::size_t>(k)] % t.size(d) : 0);
      }
      flat.push_back(offset);
    }
    return flat;
  }
  const int64_t count = std::min(f.count, n);
  const int64_t start = f.offset >= 0 ? f.offset % n
                                      : std::uniform_int_distribution<int64_t>(0, n - count)(rng);
  for (int64_t i = 0; i < count; ++i) flat.push_back((start + i) % n);
  return flat;
}

Chosen choose(const ValueFault& f, const at::Tensor& tensor) {
  c10::NoGradGuard no_grad;
  auto rng = rng_for(f);
  const at::Tensor flat = tensor.detach().reshape(-1);
  Chosen c;
  c.flat = flat_positions(f, tensor, rng);
  c.index = at::tensor(c.flat, at::kLong).to(tensor.device());
  const at::Tensor before = flat.index_select(0, c.index).to(at::kDouble).cpu().contiguous();
  c.before.assign(before.data_ptr<double>(), before.data_ptr<double>() + before.numel());
  const int64_t n = flat.numel();
  for (std::size_t i = 0; i < c.flat.size(); ++i) {
    const double v = c.before[i];
    double after = 0;
    if (i < f.values.size()) {
      after = f.values[i];
    } else {
      switch (f.model) {
        case FaultModel::BitFlip: {
          const int bit = f.bit >= 0 ? f.bit : std::uniform_int_distribution<int>(0, 31)(rng);
          after = flip_bit(static_cast<float>(v), bit);
          break;
        }
        case FaultModel::RandomValue: after = random_finite(rng); break;
        case FaultModel::CopyValue: {
          int64_t j = std::uniform_int_distribution<int64_t>(0, std::max<int64_t>(0, n - 2))(rng);
          if (n > 1 && j >= c.flat[i]) ++j;  // another element
          after = flat[j].item<double>();
          break;
        }
        case FaultModel::Zero: after = 0; break;
        case FaultModel::Value: after = f.value; break;
        case FaultModel::Inf: after = std::numeric_limits<double>::infinity(); break;
        case FaultModel::NaN: after = std::numeric_limits<double>::quiet_NaN(); break;
      }
    }
    c.after.push_back(after);
  }
  c.values = at::tensor(c.after, at::kDouble).to(tensor.device(), tensor.scalar_type());
  return c;
}

void journal_injected(Journal& journal, const ValueFault& f, int64_t step, int64_t attempt, const Chosen& c) {
  nlohmann::json positions = nlohmann::json::array(), before = nlohmann::json::array(), after = nlohmann::json::array();
  for (std::size_t i = 0; i < c.flat.size() && i < 4; ++i) {
    positions.push_back(c.flat[i]);
    before.push_back(json_number(c.before[i]));
    after.push_back(json_number(c.after[i]));
  }
  journal.write({{"event", event::injected}, {"step", step}, {"attempt", attempt}, {"target", to_string(f.target)},
                 {"where", f.where}, {"model", to_string(f.model)}, {"elements", c.flat.size()},
                 {"permanent", f.permanent}, {"positions", positions}, {"before", before}, {"after", after}});
  journal.record("Injected " + std::string(to_string(f.model)) + " into " + to_string(f.target) + " " + f.where +
                 " (" + std::to_string(c.flat.size()) + " elements) at step " + std::to_string(step) +
                 " attempt " + std::to_string(attempt));
}

// A tensor hook that applies `f` to the first gradient it sees (one fault per attempt, also
// with several backward() calls) and journals it.
std::function<at::Tensor(const at::Tensor&)> gradient_hook(const ValueFault& f, int64_t step, int64_t attempt,
                                                           Journal& journal, std::shared_ptr<bool> applied) {
  return [f, step, attempt, journal = &journal, applied = std::move(applied)](const at::Tensor& grad) {
    if (*applied) return grad;
    *applied = true;
    Chosen c = choose(f, grad);
    journal_injected(*journal, f, step, attempt, c);
    return grad.reshape(-1).index_copy(0, c.index, c.values).reshape(grad.sizes());
  };
}

std::optional<at::Tensor> find_parameter(const TrackedState& state, const std::string& name) {
  for (const auto& o : state.objects()) {
    if (o.module == nullptr || name.compare(0, o.name.size() + 1, o.name + ".") != 0) continue;
    const auto params = o.module->named_parameters(/*recurse=*/true);
    if (const at::Tensor* p = params.find(name.substr(o.name.size() + 1))) return *p;
  }
  return std::nullopt;
}

}  // namespace

struct ValueInjector::Active {
  int64_t step = 0, attempt = 0;
  struct Armed {
    const ValueFault* fault;
    std::shared_ptr<bool> applied;  // shared with a gradient hook
    std::string missed;             // why it could not be applied, when known
  };
  std::vector<Armed> armed;
  struct Restore {
    at::Tensor param, index, old;
  };
  std::vector<Restore> restores;
  struct Hook {
    at::Tensor param;
    unsigned handle;
  };
  std::vector<Hook> hooks;
};

ValueInjector::ValueInjector(std::vector<ValueFault> faults, Journal& journal, TrackedState& state)
    : faults_(std::move(faults)), journal_(journal), state_(state) {}

ValueInjector::~ValueInjector() { end_attempt(); }

bool ValueInjector::planned(int64_t step) const noexcept {
  for (const auto& f : faults_) {
    if (f.step == step) return true;
  }
  return false;
}

void ValueInjector::begin_attempt(int64_t step, int64_t attempt) {
  end_attempt();
  if (!planned(step)) return;
  auto active = std::make_unique<Active>();
  active->step = step;
  active->attempt = attempt;
  for (std::size_t i = 0; i < faults_.size(); ++i) {
    const ValueFault& f = faults_[i];
    if (f.step != step) continue;
    if (!f.every_attempt && (attempt != 0 || !fired_.insert(i).second)) continue;
    active->armed.push_back({&f, std::make_shared<bool>(false), ""});
  }
  if (active->armed.empty()) return;
  active_ = std::move(active);
  for (auto& armed : active_->armed) {
    const ValueFault& f = *armed.fault;
    if (f.target == FaultTarget::Output) continue;  // at its probe
    const std::optional<at::Tensor> param = find_parameter(state_, f.where);
    if (!param) {
      if (f.target == FaultTarget::Parameter) armed.missed = "no tracked parameter is named \"" + f.where + "\"";
      continue;  // a gradient fault may still meet a probe of that name
    }
    if (f.target == FaultTarget::Gradient) {
      if (!param->requires_grad()) {
        armed.missed = "parameter \"" + f.where + "\" does not require grad";
        continue;
      }
      const unsigned handle = param->register_hook(gradient_hook(f, step, attempt, journal_, armed.applied));
      active_->hooks.push_back({*param, handle});
      continue;
    }
    if (!param->is_contiguous()) {
      armed.missed = "parameter \"" + f.where + "\" is not contiguous";
      continue;
    }
    c10::NoGradGuard no_grad;
    Chosen c = choose(f, *param);
    at::Tensor flat = param->view(-1);
    if (!f.permanent) active_->restores.push_back({*param, c.index, flat.index_select(0, c.index)});
    flat.index_copy_(0, c.index, c.values);
    *armed.applied = true;
    journal_injected(journal_, f, step, attempt, c);
  }
}

at::Tensor ValueInjector::probe(const std::string& name, const at::Tensor& x) {
  if (!active_) return x;
  at::Tensor out = x;
  for (auto& armed : active_->armed) {
    const ValueFault& f = *armed.fault;
    if (*armed.applied || f.where != name || f.target == FaultTarget::Parameter) continue;
    if (f.target == FaultTarget::Output) {
      Chosen c = choose(f, out);
      out = out.reshape(-1).index_copy(0, c.index, c.values).reshape(out.sizes());
      *armed.applied = true;
      journal_injected(journal_, f, active_->step, active_->attempt, c);
      continue;
    }
    if (!out.requires_grad()) {
      armed.missed = "probe \"" + name + "\" got a tensor that does not require grad";
      continue;
    }
    out.register_hook(gradient_hook(f, active_->step, active_->attempt, journal_, armed.applied));
  }
  return out;
}

void ValueInjector::end_attempt() noexcept {
  if (!active_) return;
  const std::unique_ptr<Active> active = std::move(active_);
  try {
    for (auto& h : active->hooks) h.param.remove_hook(h.handle);
    c10::NoGradGuard no_grad;
    for (auto& r : active->restores) r.param.view(-1).index_copy_(0, r.index, r.old);
    for (const auto& armed : active->armed) {
      if (*armed.applied) continue;
      const ValueFault& f = *armed.fault;
      const std::string why = !armed.missed.empty() ? armed.missed
                              : f.target == FaultTarget::Gradient
                                  ? "neither a tracked parameter's gradient nor a probe named \"" + f.where + "\" was reached"
                                  : "no Step::probe(\"" + f.where + "\") ran in the attempt";
      journal_.write({{"event", event::injection_missed}, {"step", active->step}, {"attempt", active->attempt},
                      {"target", to_string(f.target)}, {"where", f.where}, {"reason", why}});
      journal_.record_warning("Injection into " + std::string(to_string(f.target)) + " " + f.where + " at step " +
                              std::to_string(active->step) + " missed: " + why);
    }
  } catch (const std::exception& e) {
    journal_.record_warning(std::string("Ending the step's value faults failed: ") + e.what());
  }
}

}  // namespace daifu::detail
