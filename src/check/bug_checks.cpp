#include "check/bug_checks.h"

#include "compat/optimizer_key.h"
#include "core/strings.h"
#include "journal/events.h"
#include "journal/journal.h"
#include "state/cpu_rng.h"
#include "state/optimizer_state.h"
#include "state/tracked_state.h"

#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <unordered_map>

namespace daifu::detail {
namespace {

using Problems = std::vector<BugChecks::Problem>;

std::string fmt(double v) { return format_number(v, 9); }

std::string shape(const at::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

// Same dtype, shape and bytes (NaN payloads included).
bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ca = a.detach().cpu().contiguous();
  const at::Tensor cb = b.detach().cpu().contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

// "model.fc1.weight" for every parameter of the tracked modules, by tensor.
std::unordered_map<const c10::TensorImpl*, std::string> parameter_names(const TrackedState& state) {
  std::unordered_map<const c10::TensorImpl*, std::string> names;
  for (const auto& o : state.objects()) {
    if (o.module == nullptr) continue;
    for (const auto& item : o.module->named_parameters(/*recurse=*/true)) {
      names.emplace(item.value().unsafeGetTensorImpl(), o.name + "." + item.key());
    }
  }
  return names;
}

std::string name_of(const at::Tensor& p, const std::unordered_map<const c10::TensorImpl*, std::string>& names) {
  auto it = names.find(p.unsafeGetTensorImpl());
  return it != names.end() ? it->second : "a tensor of shape " + shape(p);
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// Serializes `save` into bytes and hands an archive of them to `load`, as a checkpoint file would.
template <class Save, class Load>
void through_archive(Save save, Load load, const c10::optional<at::Device>& device = c10::nullopt) {
  std::ostringstream bytes;
  {
    torch::serialize::OutputArchive out;
    save(out);
    out.save_to(bytes);
  }
  std::istringstream in(bytes.str());
  torch::serialize::InputArchive archive;
  archive.load_from(in, device);
  load(archive);
}

// Saves the optimizer, loads it back into itself with its state set aside, compares, and puts
// the original state and param-group options back whatever happens.
void round_trip_optimizer(const std::string& name, torch::optim::Optimizer& opt,
                          const std::unordered_map<const c10::TensorImpl*, std::string>& names, Problems& out) {
  const std::string key = "serialization:" + name;
  std::ostringstream bytes;
  {
    torch::serialize::OutputArchive archive;
    opt.save(archive);
    archive.save_to(bytes);
  }
  auto held = std::move(opt.state());
  opt.state().clear();
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> held_options;
  for (auto& group : opt.param_groups()) held_options.push_back(group.options().clone());
  struct PutBack {
    torch::optim::Optimizer& opt;
    decltype(held)& state;
    std::vector<std::unique_ptr<torch::optim::OptimizerOptions>>& options;
    ~PutBack() {
      opt.state() = std::move(state);
      for (std::size_t i = 0; i < options.size() && i < opt.param_groups().size(); ++i) {
        opt.param_groups()[i].set_options(std::move(options[i]));
      }
    }
  } put_back{opt, held, held_options};
  try {
    std::istringstream in(bytes.str());
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    opt.load(archive);
  } catch (const std::exception& e) {
    out.push_back({"serialization", key, "optimizer \"" + name + "\" cannot load what it saved: " + first_line(e)});
    return;
  }
  const auto& loaded = opt.state();
  std::vector<std::string> wrong;
  for (std::size_t g = 0; g < opt.param_groups().size(); ++g) {
    auto& group = opt.param_groups()[g];
    if (group.options().get_lr() != held_options[g]->get_lr()) {
      wrong.push_back("param group " + std::to_string(g) + " has lr " + fmt(group.options().get_lr()) +
                      " instead of " + fmt(held_options[g]->get_lr()));
    }
    for (const auto& p : group.params()) {
      auto before = held.find(optimizer_state_key(p));
      auto after = loaded.find(optimizer_state_key(p));
      const bool had = before != held.end() && before->second;
      const bool has = after != loaded.end() && after->second;
      if (had != has) {
        wrong.push_back("the state of " + name_of(p, names) + (had ? " was lost" : " appeared"));
        continue;
      }
      if (!had) continue;
      auto& a = *before->second;
      auto& b = *after->second;
      if (state_type_name(a) != state_type_name(b) || state_scalars(a) != state_scalars(b)) {
        wrong.push_back("the step counters of " + name_of(p, names) + " differ");
      }
      const auto ta = state_tensors(a);
      const auto tb = state_tensors(b);
      bool same = ta.size() == tb.size();
      for (std::size_t i = 0; same && i < ta.size(); ++i) same = same_bits(ta[i], tb[i]);
      if (!same) wrong.push_back("the state tensors of " + name_of(p, names) + " differ");
    }
  }
  if (!wrong.empty()) {
    out.push_back({"serialization", key, "optimizer \"" + name + "\" does not survive save/load: " + join(wrong)});
  }
}

void round_trip_tensor(const std::string& name, const at::Tensor& t, Problems& out) {
  at::Tensor loaded;
  through_archive([&](torch::serialize::OutputArchive& a) { a.write("tensor", t); },
                  [&](torch::serialize::InputArchive& a) { a.read("tensor", loaded); });
  if (!same_bits(t, loaded)) {
    out.push_back({"serialization", "serialization:" + name,
                   "tensor \"" + name + "\" of shape " + shape(t) + " does not survive save/load bitwise"});
  }
}

// Module modes in pre-order, so that setting them back in order undoes a recursive eval().
std::vector<std::pair<torch::nn::Module*, bool>> modes(torch::nn::Module& m) {
  std::vector<std::pair<torch::nn::Module*, bool>> out;
  m.apply([&](torch::nn::Module& sub) { out.emplace_back(&sub, sub.is_training()); });
  return out;
}

struct EvalMode {
  explicit EvalMode(torch::nn::Module& m) : saved(modes(m)) { m.eval(); }
  ~EvalMode() {
    for (auto& [m, training] : saved) m->train(training);
  }
  std::vector<std::pair<torch::nn::Module*, bool>> saved;
};

void round_trip_module(const RoundTrip& rt, const TrackedState& state, Problems& out) {
  const std::string key = "round_trip:" + rt.module;
  auto problem = [&](const std::string& message) {
    out.push_back({"round_trip", key, "module \"" + rt.module + "\": " + message});
  };
  torch::nn::Module* module = nullptr;
  for (const auto& o : state.objects()) {
    if (o.name == rt.module && o.module != nullptr) module = o.module;
  }
  if (module == nullptr) return problem("no module is tracked under this name");
  if (!rt.make) return problem("the RoundTrip has no make()");
  // make() draws initial weights: training's random stream must not notice.
  struct KeepRng {
    CpuRngState saved = CpuRngState::capture();
    ~KeepRng() { saved.restore(); }
  } keep_rng;
  std::shared_ptr<torch::nn::Module> fresh = rt.make();
  if (!fresh) return problem("make() returned no module");
  c10::optional<at::Device> device;
  const auto params = module->parameters();
  if (!params.empty()) device = params.front().device();
  try {
    through_archive([&](torch::serialize::OutputArchive& a) { module->save(a); },
                    [&](torch::serialize::InputArchive& a) { fresh->load(a); }, device);
  } catch (const std::exception& e) {
    return problem("the module make() builds cannot load what save() wrote: " + first_line(e));
  }

  std::vector<std::string> wrong;
  auto compare = [&](const torch::OrderedDict<std::string, at::Tensor>& live,
                     const torch::OrderedDict<std::string, at::Tensor>& reloaded, const char* kind) {
    for (const auto& item : live) {
      const at::Tensor* other = reloaded.find(item.key());
      if (other == nullptr) {
        wrong.push_back(std::string(kind) + " " + item.key() + " is missing after the reload");
      } else if (!same_bits(item.value(), *other)) {
        wrong.push_back(std::string(kind) + " " + item.key() + " differs after the reload");
      }
    }
    for (const auto& item : reloaded) {
      if (live.find(item.key()) == nullptr) wrong.push_back("the reloaded module has an extra " + std::string(kind) + " " + item.key());
    }
  };
  compare(module->named_parameters(true), fresh->named_parameters(true), "parameter");
  compare(module->named_buffers(true), fresh->named_buffers(true), "buffer");
  if (!wrong.empty()) return problem(join(wrong));
  if (!rt.loss) return;
  double live = 0, reloaded = 0;
  {
    torch::NoGradGuard no_grad;
    EvalMode a(*module), b(*fresh);
    live = rt.loss(*module);
    reloaded = rt.loss(*fresh);
  }
  if (!(live == reloaded) && !(std::isnan(live) && std::isnan(reloaded))) {
    problem("the reloaded module's loss is " + fmt(reloaded) + ", the trained module's " + fmt(live) +
            ", with every saved tensor equal: the forward pass uses state save() does not write (a tensor "
            "member not registered as a parameter or buffer?)");
  }
}

// Resident bytes of this process; -1 where /proc/self/statm cannot be read.
int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return -1;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

std::string mib(int64_t bytes) { return fmt(std::round(static_cast<double>(bytes) / (1 << 20) * 10) / 10) + " MiB"; }

}  // namespace

BugChecks::BugChecks(BugCheckOptions options, Journal& journal, TrackedState& state)
    : options_(std::move(options)), journal_(journal), state_(state) {}

bool BugChecks::due(int64_t index) const noexcept {
  return options_.every() > 0 && (index + 1) % options_.every() == 0;
}

void BugChecks::check_serialization(Problems& out) {
  const auto names = parameter_names(state_);
  for (const auto& o : state_.objects()) {
    if (o.optimizer != nullptr) round_trip_optimizer(o.name, *o.optimizer, names, out);
    if (o.tensor != nullptr && o.tensor->defined()) round_trip_tensor(o.name, *o.tensor, out);
  }
  for (const auto& rt : options_.round_trips()) round_trip_module(rt, state_, out);
}

void BugChecks::check_optimizer_params(Problems& out) {
  std::unordered_map<const c10::TensorImpl*, std::string> trainable;
  std::set<const c10::TensorImpl*> all;
  bool any_module = false, any_optimizer = false;
  for (const auto& o : state_.objects()) {
    any_optimizer = any_optimizer || o.optimizer != nullptr;
    if (o.module == nullptr) continue;
    any_module = true;
    for (const auto& item : o.module->named_parameters(true)) {
      all.insert(item.value().unsafeGetTensorImpl());
      if (item.value().requires_grad()) trainable.emplace(item.value().unsafeGetTensorImpl(), o.name + "." + item.key());
    }
  }
  if (!any_module || !any_optimizer) return;
  const auto names = parameter_names(state_);
  std::map<const c10::TensorImpl*, int64_t> held;
  for (const auto& o : state_.objects()) {
    if (o.optimizer == nullptr) continue;
    std::vector<std::string> stale, twice;
    std::map<const c10::TensorImpl*, int64_t> here;
    for (const auto& group : o.optimizer->param_groups()) {
      for (const auto& p : group.params()) {
        ++held[p.unsafeGetTensorImpl()];
        if (++here[p.unsafeGetTensorImpl()] == 2) twice.push_back(name_of(p, names));
        if (all.count(p.unsafeGetTensorImpl()) == 0) stale.push_back(name_of(p, names));
      }
    }
    if (!stale.empty()) {
      out.push_back({"optimizer_params", "optimizer_params:stale:" + o.name,
                     "optimizer \"" + o.name + "\" updates " + std::to_string(stale.size()) +
                         " tensors that are no parameters of the tracked modules (" + join(stale) +
                         "): the weights of a replaced layer?"});
    }
    if (!twice.empty()) {
      out.push_back({"optimizer_params", "optimizer_params:twice:" + o.name,
                     "optimizer \"" + o.name + "\" holds " + join(twice) + " more than once: each step updates them twice"});
    }
  }
  std::vector<std::string> missing;
  for (const auto& [impl, name] : trainable) {
    if (held.count(impl) == 0) missing.push_back(name);
  }
  std::sort(missing.begin(), missing.end());
  if (!missing.empty()) {
    out.push_back({"optimizer_params", "optimizer_params:missing",
                   join(missing) + " require gradients, but no tracked optimizer updates them: a new layer the "
                                   "optimizer was not told about?"});
  }
}

void BugChecks::check_lr(const Knob<double>& lr, Problems& out) {
  LrSeen now{step_, lr.get(), {}};
  std::vector<std::string> names;
  for (const auto& o : state_.objects()) {
    if (o.optimizer == nullptr) continue;
    names.push_back(o.name);
    auto& groups = now.groups.emplace_back();
    for (const auto& group : o.optimizer->param_groups()) groups.push_back(group.options().get_lr());
  }
  if (lr_seen_ && lr_seen_->knob != now.knob) {
    std::vector<std::string> unchanged;
    for (std::size_t o = 0; o < now.groups.size() && o < lr_seen_->groups.size(); ++o) {
      for (std::size_t g = 0; g < now.groups[o].size() && g < lr_seen_->groups[o].size(); ++g) {
        if (now.groups[o][g] == lr_seen_->groups[o][g]) {
          unchanged.push_back("param group " + std::to_string(g) + " of optimizer \"" + names[o] + "\" still has lr " +
                              fmt(now.groups[o][g]));
        }
      }
    }
    if (!unchanged.empty()) {
      out.push_back({"lr_reaches_optimizer", "lr_reaches_optimizer",
                     "knob \"" + lr.name() + "\" changed from " + fmt(lr_seen_->knob) + " to " + fmt(now.knob) +
                         " after step " + std::to_string(lr_seen_->step) + ", but " + join(unchanged) +
                         ": the program does not apply the knob to the optimizer"});
    }
  }
  lr_seen_ = std::move(now);
}

void BugChecks::check_memory(Problems& out) {
  const int64_t rss = resident_bytes();
  if (rss < 0) return;
  rss_.emplace_back(step_, rss);
  const auto window = static_cast<std::size_t>(options_.memory_window());
  if (rss_.size() > window + 1) rss_.erase(rss_.begin());
  if (rss_.size() < window + 1) return;
  for (std::size_t i = 1; i < rss_.size(); ++i) {
    if (rss_[i].second <= rss_[i - 1].second) return;
  }
  const auto [first_step, first] = rss_.front();
  const auto [last_step, last] = rss_.back();
  if (last - first <= options_.memory_growth_bytes()) return;
  out.push_back({"memory_growth", "memory_growth",
                 "resident memory grew at each of the last " + std::to_string(window) + " checks, from " + mib(first) +
                     " after step " + std::to_string(first_step) + " to " + mib(last) + " after step " +
                     std::to_string(last_step) + " (" +
                     fmt(std::round(static_cast<double>(last - first) / static_cast<double>(last_step - first_step) / 1024)) +
                     " KiB per step): something keeps what each step allocates"});
  rss_ = {rss_.back()};
}

int64_t BugChecks::run(int64_t step, const Knob<double>* lr) noexcept {
  const auto started = std::chrono::steady_clock::now();
  step_ = step;
  Problems problems;
  std::vector<std::string> ran;
  auto guarded = [&](const char* check, bool on, auto&& fn) {
    if (!on) return;
    ran.push_back(check);
    try {
      fn();
    } catch (const std::exception& e) {
      problems.push_back({check, std::string(check) + ":threw", "the check threw: " + first_line(e)});
    }
  };
  guarded("serialization", options_.serialization(), [&] { check_serialization(problems); });
  guarded("optimizer_params", options_.optimizer_params(), [&] { check_optimizer_params(problems); });
  guarded("lr_reaches_optimizer", options_.lr_reaches_optimizer() && lr != nullptr, [&] { check_lr(*lr, problems); });
  guarded("memory_growth", options_.memory_growth(), [&] { check_memory(problems); });

  int64_t reported = 0;
  std::map<std::string, std::string> failing;
  for (const auto& p : problems) {
    failing[p.key] = p.message;
    if (failing_.count(p.key) > 0) continue;
    ++reported;
    journal_.write({{"event", event::check_failed}, {"step", step}, {"check", p.check}, {"message", p.message}});
    journal_.record_warning("Check " + p.check + " failed after step " + std::to_string(step) + ": " + p.message);
  }
  failing_ = std::move(failing);
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
  journal_.write({{"event", event::checks}, {"step", step}, {"ran", ran}, {"failing", problems.size()}, {"us", us}});
  return reported;
}

}  // namespace daifu::detail
