#include "detect/detectors.h"

#include "detect/float_reductions.h"

#include <daifu/errors.h>

#include "core/strings.h"
#include "journal/events.h"
#include "journal/journal.h"
#include "journal/json_number.h"
#include "state/tracked_state.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <set>
#include <utility>

namespace daifu::detail {
namespace {

std::string fmt(double v) { return format_number(v, 3); }

// The sum (or the largest, `largest`) of 0-dim tensors, in double precision: one
// synchronization for tensors on one device.
double reduce(const std::vector<at::Tensor>& parts, bool largest) {
  try {
    const at::Tensor all = at::stack(parts).to(at::kDouble);
    return (largest ? all.max() : all.sum()).item<double>();
  } catch (const c10::Error&) {  // tensors on several devices
    double acc = 0;
    for (const auto& p : parts) {
      const double v = p.item<double>();
      if (!std::isfinite(v)) return v;
      acc = largest ? std::max(acc, v) : acc + v;
    }
    return acc;
  }
}

// A CPU float32 tensor whose elements lie in one run: read directly, without dispatch.
bool plain_cpu_floats(const at::Tensor& t) {
  return t.device().is_cpu() && t.layout() == at::kStrided && t.scalar_type() == at::kFloat && t.is_contiguous();
}

// `f(data, n)` for each run of at most `chunk` elements of `tensors`, in order.
template <typename F>
void for_each_chunk(const std::vector<at::Tensor>& tensors, int64_t chunk, F f) {
  for (const auto& t : tensors) {
    const float* data = t.data_ptr<float>();
    for (int64_t at = 0, n = t.numel(); at < n; at += chunk) f(data + at, std::min(chunk, n - at));
  }
}

// `kernel` over all the elements of plain CPU float `tensors` in one pass, in fixed chunks of
// 2^16 elements whose results `combine` joins in order (the same for any thread count); the
// chunks run in parallel from 2^20 elements (4 MB) on, below which a pass over memory that the
// backward pass just wrote takes less than starting the threads (measured: docs/performance.md).
template <typename Kernel, typename Combine>
double over_chunks(const std::vector<at::Tensor>& tensors, Kernel kernel, Combine combine) {
  constexpr int64_t kChunk = int64_t{1} << 16;
  int64_t total = 0;
  for (const auto& t : tensors) total += t.numel();
  double acc = 0;
  if (total < (int64_t{1} << 20)) {  // on the calling thread, without allocating
    for_each_chunk(tensors, kChunk, [&](const float* data, int64_t n) {
      acc = combine(acc, kernel(data, static_cast<std::size_t>(n)));
    });
    return acc;
  }
  std::vector<std::pair<const float*, int64_t>> chunks;
  for_each_chunk(tensors, kChunk, [&](const float* data, int64_t n) { chunks.emplace_back(data, n); });
  std::vector<double> partial(chunks.size());
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) partial[c] = kernel(chunks[c].first, static_cast<std::size_t>(chunks[c].second));
  });
  for (const double p : partial) acc = combine(acc, p);
  return acc;
}

// A squared norm beyond float's range counts as infinite (a float32 norm would overflow).
double within_float(double squared) {
  return squared > std::numeric_limits<float>::max() ? std::numeric_limits<double>::infinity() : squared;
}

// max that keeps a NaN.
double larger(double a, double b) { return std::isnan(a) || std::isnan(b) ? std::nan("") : std::max(a, b); }

// The squared 2-norm of all `tensors` together: one pass over the CPU float tensors' memory,
// one dot product per other tensor (at::norm was 2-4x slower). Non-finite if any element is,
// or if the sum of squares is beyond float's range (a float32 norm would overflow), on every
// device alike.
double squared_norm(const std::vector<at::Tensor>& tensors) {
  if (std::all_of(tensors.begin(), tensors.end(), plain_cpu_floats)) {  // the usual case, without copies
    return within_float(over_chunks(tensors, sum_of_squares, std::plus<double>()));
  }
  std::vector<at::Tensor> direct, parts;
  for (const auto& t : tensors) {
    if (plain_cpu_floats(t)) {
      direct.push_back(t);
      continue;
    }
    const at::Tensor flat = t.reshape(-1);
    const bool blas = t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
    parts.push_back(blas ? at::dot(flat, flat) : flat.to(at::kDouble).pow(2).sum());
  }
  double sum = over_chunks(direct, sum_of_squares, std::plus<double>());
  if (!parts.empty()) sum += reduce(parts, /*largest=*/false);
  return within_float(sum);
}

// The largest |element| of all `tensors`; NaN if any is. `non_negative`: the tensors hold no
// negative values, so LibTorch's path takes the largest element alone.
double largest_magnitude(const std::vector<at::Tensor>& tensors, bool non_negative) {
  if (std::all_of(tensors.begin(), tensors.end(), plain_cpu_floats)) return over_chunks(tensors, largest_abs, larger);
  std::vector<at::Tensor> direct, parts;
  for (const auto& t : tensors) {
    if (t.numel() == 0) continue;
    if (plain_cpu_floats(t)) {
      direct.push_back(t);
    } else if (non_negative) {
      parts.push_back(t.max());
    } else {
      const auto [low, high] = at::aminmax(t);
      parts.push_back(at::maximum(high, -low));
    }
  }
  const double largest = over_chunks(direct, largest_abs, larger);
  return parts.empty() ? largest : larger(largest, reduce(parts, /*largest=*/true));
}

}  // namespace

// The tracked parameters by name ("model.fc1.weight"), then optimizer parameters no tracked
// module holds; looked up again when the tracked state changes.
struct Detectors::Parameters {
  int64_t generation = -1;
  std::size_t objects = 0;
  std::vector<std::pair<std::string, at::Tensor>> list;
  std::vector<std::pair<std::string, at::Tensor>> buffers;  // floating buffers of the tracked modules
  std::vector<at::Tensor> floating;                         // the floating parameters of `list`
  std::vector<const std::string*> floating_names;           // and their names
  // before_update()'s gradients, their capacity kept from one call to the next (empty between
  // calls): of the 1-D parameters, of the others, and both by name (pointers into `list`) for
  // the slow path.
  std::vector<at::Tensor> vector_grads, other_grads;
  std::vector<std::pair<const std::string*, const at::Tensor*>> read;

  const std::vector<std::pair<std::string, at::Tensor>>& of(const TrackedState& state) {
    if (generation == state.generation() && objects == state.objects().size()) return list;
    list.clear();
    buffers.clear();
    for (const auto& o : state.objects()) {
      if (o.module == nullptr) continue;
      for (const auto& item : o.module->named_buffers(/*recurse=*/true)) {
        if (item.value().defined() && at::isFloatingType(item.value().scalar_type())) {
          buffers.emplace_back(o.name + "." + item.key(), item.value());
        }
      }
    }
    std::set<const void*> seen;
    for (const auto& o : state.objects()) {
      if (o.module == nullptr) continue;
      for (const auto& item : o.module->named_parameters(/*recurse=*/true)) {
        if (seen.insert(item.value().unsafeGetTensorImpl()).second) list.emplace_back(o.name + "." + item.key(), item.value());
      }
    }
    for (const auto& o : state.objects()) {
      if (o.optimizer == nullptr) continue;
      const auto& groups = o.optimizer->param_groups();
      for (std::size_t g = 0; g < groups.size(); ++g) {
        for (std::size_t p = 0; p < groups[g].params().size(); ++p) {
          const at::Tensor& t = groups[g].params()[p];
          if (seen.insert(t.unsafeGetTensorImpl()).second) {
            list.emplace_back(o.name + ".group" + std::to_string(g) + ".param" + std::to_string(p), t);
          }
        }
      }
    }
    floating.clear();
    floating_names.clear();
    for (const auto& [name, p] : list) {
      if (!at::isFloatingType(p.scalar_type())) continue;
      floating.push_back(p);
      floating_names.push_back(&name);
    }
    generation = state.generation();
    objects = state.objects().size();
    return list;
  }
};

namespace {

// The moments of every tracked Adam/AdamW optimizer: exp_avg into `first`, exp_avg_sq into `second`.
void adam_moments(const TrackedState& state, std::vector<at::Tensor>& first, std::vector<at::Tensor>& second) {
  for (const auto& o : state.objects()) {
    if (o.optimizer == nullptr) continue;
    for (const auto& [key, s] : o.optimizer->state()) {
      if (auto* a = dynamic_cast<torch::optim::AdamParamState*>(s.get())) {
        first.push_back(a->exp_avg());
        second.push_back(a->exp_avg_sq());
      } else if (auto* w = dynamic_cast<torch::optim::AdamWParamState*>(s.get())) {
        first.push_back(w->exp_avg());
        second.push_back(w->exp_avg_sq());
      }
    }
  }
}

}  // namespace

bool is_state_check(const std::string& detector) noexcept {
  return detector == "param_spike" || detector == "nonfinite_param" || detector == "adam_moments";
}

Detectors::Detectors(DetectorOptions options, Journal& journal, TrackedState& state)
    : options_(std::move(options)),
      journal_(journal),
      state_(state),
      parameters_(std::make_unique<Parameters>()),
      grad_norms_(options_.window()),
      vector_norms_(options_.window()),
      losses_(options_.window()),
      param_magnitudes_(options_.window()),
      first_moments_(options_.window()),
      second_moments_(options_.window()) {}

Detectors::~Detectors() = default;

void Detectors::begin_attempt(int64_t step, int64_t attempt) noexcept {
  step_ = step;
  attempt_ = attempt;
  recheck_.clear();  // a detection whose failure restored no snapshot
  ran_state_checks_ = false;
  grad_norm_.reset();
  vector_norm_.reset();
  loss_.reset();
  param_magnitude_.reset();
  first_moment_.reset();
  second_moment_.reset();
}

void Detectors::detected(const std::string& detector, const std::string& message, nlohmann::json details) {
  // A gradient that spikes before the update because a weight already does (corrupted since the
  // last state check) is the state's fault: retrying or skipping the step cannot remove it, and
  // every later step would fail the same way. The state is looked at first; a faulty one is
  // detected as such, and its detection restores the snapshot.
  if (std::exchange(in_before_update_, false) && state_checks_on()) {
    try {
      if (options_.param_spikes()) check_params();
      if (options_.adam_moments()) check_adam_moments();
    } catch (const FaultDetected&) {
      throw;
    } catch (...) {  // unmeasurable (a reduction that failed): the gradient's detection stands
    }
  }
  details["event"] = event::detection;
  details["step"] = step_;
  details["attempt"] = attempt_;
  details["detector"] = detector;
  details["message"] = message;
  journal_.write(std::move(details));
  if (detector == "param_spike" || detector == "adam_moments") recheck_ = detector;
  // A fault can be found steps after the one that brought it (a state check's or a gradient
  // check's skipped steps): the steps re-run after the rollback are checked each, so the one
  // that brought it is the one blamed (and skipped, if it brings it again).
  dense_until_ = std::max(dense_until_, step_);
  throw FaultDetected(detector, message + " (step " + std::to_string(step_) + ", attempt " + std::to_string(attempt_) + ")");
}

void Detectors::check_spike(const std::string& detector, const std::string& what, double value,
                            const RobustWindow& window, bool bound_warmup) {
  const auto s = window.spike(value, options_.spike_ratio(), options_.spike_mads(), options_.warmup(), bound_warmup);
  if (!s) return;
  if (s->warmup) {
    detected(detector,
             what + " " + fmt(value) + " is " + fmt(value / s->median) + " times the largest value " +
                 fmt(s->median) + " of the first " + std::to_string(window.count()) + " steps (warm-up)",
             {{"value", json_number(value)}, {"reference", s->median}});
  }
  detected(detector,
           what + " " + fmt(value) + " is " + fmt(std::abs(s->median) > 0 ? value / s->median : value) +
               " times the median " + fmt(s->median) + " of the last " + std::to_string(window.count()) +
               " steps (MAD " + fmt(s->mad) + ")",
           {{"value", json_number(value)}, {"median", s->median}, {"mad", s->mad}});
}

void Detectors::before_update() {
  if (!options_.nonfinite_grads() && !options_.grad_spikes()) return;
  const auto& params = parameters_->of(state_);
  const bool all = grad_norms_.count() < options_.warmup() || step_ <= dense_until_ ||
                   (step_ + 1) % options_.grad_check_every() == 0;
  // The gradients of the 1-D parameters, and of the others when all are read.
  auto& vectors = parameters_->vector_grads;
  auto& rest = parameters_->other_grads;
  auto& read = parameters_->read;
  // Emptied again on the way out, however it ends: a gradient held past this call would stay in
  // memory after zero_grad() drops it.
  struct Emptied {
    Parameters& p;
    ~Emptied() {
      p.vector_grads.clear();
      p.other_grads.clear();
      p.read.clear();
    }
  } emptied{*parameters_};
  for (const auto& [name, p] : params) {
    if (!p.grad().defined()) continue;
    const bool vector = p.dim() <= 1;
    if (!vector && !all) continue;
    (vector ? vectors : rest).push_back(p.grad());
    read.emplace_back(&name, &p.grad());
  }
  if (read.empty()) return;
  c10::NoGradGuard no_grad;
  struct Raised {  // in_before_update_ while this runs (a detection resets it sooner)
    bool& flag;
    explicit Raised(bool& f) : flag(f) { flag = true; }
    ~Raised() { flag = false; }
  } raised(in_before_update_);
  const double vector_sq = squared_norm(vectors);
  double norm = std::sqrt(vector_sq);
  if (std::isfinite(norm) && !vectors.empty()) {
    vector_norm_ = norm;
    if (options_.grad_spikes()) {
      check_spike("grad_spike", "the gradient norm of the 1-D parameters", norm, vector_norms_, /*bound_warmup=*/true);
    }
  }
  if (all && std::isfinite(norm)) {
    norm = std::sqrt(within_float(vector_sq + squared_norm(rest)));
    if (std::isfinite(norm)) {
      grad_norm_ = norm;
      if (options_.grad_spikes()) check_spike("grad_spike", "the gradient norm", norm, grad_norms_, /*bound_warmup=*/true);
    }
  }
  if (std::isfinite(norm)) return;
  // The slow path, only when something is wrong: which gradient, and how.
  for (const auto& [name, g] : read) {
    if (!options_.nonfinite_grads() || at::isfinite(*g).all().item<bool>()) continue;
    const int64_t nan = at::isnan(*g).sum().item<int64_t>();
    const int64_t inf = at::isinf(*g).sum().item<int64_t>();
    detected("nonfinite_grad",
             "the gradient of " + *name + " has " + std::to_string(nan) + " NaN and " + std::to_string(inf) +
                 " infinite values",
             {{"parameter", *name}, {"nan", nan}, {"inf", inf}});
  }
  if (!options_.grad_spikes()) return;  // finite gradients whose norm overflows float32
  const std::string* worst = read.front().first;
  double largest = 0;
  for (const auto& [name, g] : read) {
    const double m = g->abs().max().item<double>();
    if (m > largest) largest = m, worst = name;
  }
  detected("grad_spike", "the gradient norm overflows float32: the gradient of " + *worst + " holds " + fmt(largest),
           {{"value", "inf"}, {"parameter", *worst}, {"largest", largest}});
}

void Detectors::end_attempt(const std::vector<std::pair<std::string, double>>& metrics, bool every_step) {
  for (const auto& [name, value] : metrics) {
    if (options_.nonfinite_loss() && !std::isfinite(value)) {
      detected("nonfinite_loss", "the metric \"" + name + "\" reported by the step is " + fmt(value),
               {{"metric", name}, {"value", json_number(value)}});
    }
    if (name != options_.loss_metric()) continue;
    loss_ = value;
    if (options_.loss_spikes()) check_spike("loss_spike", "the loss", value, losses_);
  }
  if (options_.nonfinite_buffers()) check_buffers();
  if (!state_checks_on()) return;
  // Every step in the warm-up, where a fault is judged against the values so far.
  const bool due = every_step || force_state_check_ || state_checks_committed_ < options_.warmup() ||
                   step_ <= dense_until_ || (step_ + 1) % options_.state_check_every() == 0;
  force_state_check_ = false;
  if (!due) {
    state_checked_ = false;
    return;
  }
  ran_state_checks_ = true;
  if (options_.param_spikes()) check_params();
  if (options_.adam_moments()) check_adam_moments();
  state_checked_ = true;
}

void Detectors::check_buffers() {
  parameters_->of(state_);
  const auto& buffers = parameters_->buffers;
  if (buffers.empty()) return;
  std::vector<at::Tensor> tensors;
  for (const auto& [name, b] : buffers) tensors.push_back(b);
  c10::NoGradGuard no_grad;
  if (std::isfinite(squared_norm(tensors))) return;
  for (const auto& [name, b] : buffers) {
    if (at::isfinite(b).all().item<bool>()) continue;
    const int64_t nan = at::isnan(b).sum().item<int64_t>();
    const int64_t inf = at::isinf(b).sum().item<int64_t>();
    detected("nonfinite_buffer",
             "the buffer " + name + " has " + std::to_string(nan) + " NaN and " + std::to_string(inf) + " infinite values",
             {{"buffer", name}, {"nan", nan}, {"inf", inf}});
  }
}

std::optional<double> Detectors::largest_param() {
  parameters_->of(state_);
  if (parameters_->floating.empty()) return std::nullopt;
  c10::NoGradGuard no_grad;
  return largest_magnitude(parameters_->floating, /*non_negative=*/false);
}

std::optional<std::pair<double, double>> Detectors::largest_moments() {
  std::vector<at::Tensor> first, second;
  adam_moments(state_, first, second);
  if (first.empty()) return std::nullopt;
  c10::NoGradGuard no_grad;
  return std::make_pair(largest_magnitude(first, /*non_negative=*/false),
                        std::sqrt(largest_magnitude(second, /*non_negative=*/true)));
}

bool Detectors::spikes(double value, const RobustWindow& window, bool bound_warmup) const {
  return window.spike(value, options_.spike_ratio(), options_.spike_mads(), options_.warmup(), bound_warmup).has_value();
}

void Detectors::check_params() {
  const std::optional<double> measured = largest_param();
  if (!measured) return;
  const double largest = *measured;
  const bool finite = std::isfinite(largest);
  if (finite && !spikes(largest, param_magnitudes_, /*bound_warmup=*/true)) {
    param_magnitude_ = largest;
    return;
  }
  // The slow path, only when something is wrong: which parameter.
  c10::NoGradGuard no_grad;
  const auto& tensors = parameters_->floating;
  std::size_t worst = 0;
  double worst_value = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const double m = largest_magnitude({tensors[i]}, /*non_negative=*/false);
    if (std::isnan(m) || m > worst_value) worst = i, worst_value = m;
    if (std::isnan(m)) break;
  }
  const std::string& name = *parameters_->floating_names[worst];
  if (!finite) {
    detected("nonfinite_param", "the parameter " + name + " holds " + fmt(worst_value),
             {{"parameter", name}, {"value", json_number(worst_value)}});
  }
  check_spike("param_spike", "the largest |parameter| (in " + name + ")", largest, param_magnitudes_,
              /*bound_warmup=*/true);
}

void Detectors::check_adam_moments() {
  const auto measured = largest_moments();
  if (!measured) return;
  const auto [m, v] = *measured;
  if (!std::isfinite(m) || !std::isfinite(v)) {
    detected("adam_moments", "Adam's moments hold non-finite values (largest |m| " + fmt(m) + ", sqrt(v) " + fmt(v) + ")",
             {{"first_moment", json_number(m)}, {"second_moment_sqrt", json_number(v)}});
  }
  first_moment_ = m;
  second_moment_ = v;
  check_spike("adam_moments", "Adam's largest |first moment|", m, first_moments_);
  check_spike("adam_moments", "Adam's largest sqrt(second moment)", v, second_moments_);
}

bool Detectors::state_clean_now() noexcept {
  if (state_checked_ || !state_checks_on()) return true;
  try {
    bool clean = true;
    if (options_.param_spikes()) {
      if (const auto p = largest_param()) clean = std::isfinite(*p) && !spikes(*p, param_magnitudes_, /*bound_warmup=*/true);
    }
    if (clean && options_.adam_moments()) {
      if (const auto mv = largest_moments()) {
        const auto [m, v] = *mv;
        clean = std::isfinite(m) && std::isfinite(v) && !spikes(m, first_moments_) && !spikes(v, second_moments_);
      }
    }
    state_checked_ = clean;
    force_state_check_ = !clean;
    return clean;
  } catch (...) {
    return true;  // unmeasurable here: the snapshot is taken as without the check
  }
}

void Detectors::state_restored() noexcept {
  state_checked_ = true;  // a snapshot holds only states the checks have seen
  if (recheck_.empty()) return;
  const std::string detector = std::exchange(recheck_, std::string());
  try {
    accept_inherited(detector);
  } catch (...) {  // unmeasured: the retry's own checks judge as before
  }
}

void Detectors::accept_inherited(const std::string& detector) {
  std::vector<std::pair<double, RobustWindow*>> held;  // finite values that spike against their window
  if (detector == "param_spike") {
    const auto p = largest_param();
    if (p && std::isfinite(*p) && spikes(*p, param_magnitudes_, /*bound_warmup=*/true)) held.emplace_back(*p, &param_magnitudes_);
  } else {
    const auto mv = largest_moments();
    if (!mv || !std::isfinite(mv->first) || !std::isfinite(mv->second)) return;
    if (spikes(mv->first, first_moments_) || spikes(mv->second, second_moments_)) {
      held = {{mv->first, &first_moments_}, {mv->second, &second_moments_}};
    }
  }
  if (held.empty()) return;
  for (auto& [value, window] : held) {
    window->clear();
    window->add(step_ - 1, value);  // the state the step starts from
  }
  nlohmann::json line = {{"event", event::baseline_reset}, {"step", step_}, {"attempt", attempt_},
                         {"detector", detector}, {"value", json_number(held.front().first)}};
  if (held.size() > 1) line["second_moment_sqrt"] = json_number(held[1].first);
  journal_.write(std::move(line));
  journal_.record_warning("The " + detector + " detector found its spike (" + fmt(held.front().first) +
                          ") in the snapshot restored after step " + std::to_string(step_) +
                          " failed: rolling back cannot remove it, so it is taken as the new baseline");
}

void Detectors::commit(int64_t step) {
  if (grad_norm_) grad_norms_.add(step, *grad_norm_);
  if (vector_norm_) vector_norms_.add(step, *vector_norm_);
  if (loss_) losses_.add(step, *loss_);
  if (param_magnitude_) param_magnitudes_.add(step, *param_magnitude_);
  if (first_moment_) first_moments_.add(step, *first_moment_);
  if (second_moment_) second_moments_.add(step, *second_moment_);
  if (ran_state_checks_) ++state_checks_committed_;
  begin_attempt(step + 1, 0);
}

}  // namespace daifu::detail
