#include <daifu/session.h>

#include "compat/stack_trace_fetcher.h"
#include "core/durable_file.h"
#include "journal/events.h"
#include "journal/workplace.h"
#include "session/session_impl.h"
#include "surgery/builtin.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iomanip>
#include <mutex>
#include <sstream>

#include <unistd.h>

namespace daifu {
namespace detail {
namespace {

// Any one wait of a surgery; a longer one is a mistake in units (58 days were accepted).
constexpr std::chrono::microseconds kLongestBackoff = std::chrono::hours(1);

void validate(const Options& o) {
  if (o.max_attempts() < 1) {
    throw Error("daifu: Options::max_attempts(" + std::to_string(o.max_attempts()) + ") must be at least 1");
  }
  if (o.transient_retries() < 0) {
    throw Error("daifu: Options::transient_retries(" + std::to_string(o.transient_retries()) + ") must be >= 0");
  }
  if (o.max_dropped_batches() < 0) {
    throw Error("daifu: Options::max_dropped_batches(" + std::to_string(o.max_dropped_batches()) +
                ") must be >= 0 (0: never drop a batch as data)");
  }
  if (o.oom_grow_back() < 0) {
    throw Error("daifu: Options::oom_grow_back(" + std::to_string(o.oom_grow_back()) +
                ") must be >= 0 (0: a knob the out-of-memory surgery shrank stays shrunk)");
  }
  for (const auto& [name, wait] : {std::pair{"transient_backoff", o.transient_backoff()},
                                    std::pair{"max_backoff", o.max_backoff()},
                                    std::pair{"contention_backoff", o.contention_backoff()}}) {
    if (wait.count() < 0 || wait > kLongestBackoff) {
      throw Error("daifu: Options::" + std::string(name) + "(" + std::to_string(wait.count()) +
                  " us) must be between 0 and one hour");
    }
  }
  if (o.snapshot_every() < 0) {
    throw Error("daifu: Options::snapshot_every(" + std::to_string(o.snapshot_every()) +
                ") must be >= 0 (0 chooses it automatically)");
  }
  if (!(o.overhead_budget() > 0 && o.overhead_budget() <= 1)) {
    throw Error("daifu: Options::overhead_budget(" + std::to_string(o.overhead_budget()) +
                ") must be a fraction in (0, 1], e.g. 0.004 for 0.4%");
  }
  if (o.max_rollback_steps() < 1) {
    throw Error("daifu: Options::max_rollback_steps(" + std::to_string(o.max_rollback_steps()) + ") must be at least 1");
  }
  if (o.metrics_every() < 1) {
    throw Error("daifu: Options::metrics_every(" + std::to_string(o.metrics_every()) + ") must be at least 1");
  }
  if (o.contention_waits() < 0) {
    throw Error("daifu: Options::contention_waits(" + std::to_string(o.contention_waits()) + ") must be >= 0");
  }
  const BugCheckOptions& c = o.bug_checks();
  if (c.every() < 0) throw Error("daifu: BugCheckOptions every(" + std::to_string(c.every()) + ") must be >= 0");
  if (c.memory_window() < 1 || c.memory_growth_bytes() < 0) {
    throw Error("daifu: BugCheckOptions memory_window(" + std::to_string(c.memory_window()) +
                ") must be >= 1 and memory_growth_bytes(" + std::to_string(c.memory_growth_bytes()) + ") >= 0");
  }
  for (const RoundTrip& rt : c.round_trips()) {
    if (rt.module.empty() || !rt.make) {
      throw Error("daifu: BugCheckOptions round_trip(\"" + rt.module + "\") needs a module name and make()");
    }
  }
  const DetectorOptions& d = o.detectors();
  if (d.window() < 1 || d.warmup() < 0 || d.warmup() > d.window()) {
    throw Error("daifu: DetectorOptions window(" + std::to_string(d.window()) + ") must be >= 1 and warmup(" +
                std::to_string(d.warmup()) + ") in [0, window]");
  }
  if (d.state_check_every() < 1 || d.grad_check_every() < 1) {
    throw Error("daifu: DetectorOptions state_check_every(" + std::to_string(d.state_check_every()) +
                ") and grad_check_every(" + std::to_string(d.grad_check_every()) + ") must be >= 1");
  }
  if (!(d.spike_ratio() > 1) || !(d.spike_mads() >= 0)) {
    throw Error("daifu: DetectorOptions spike_ratio(" + std::to_string(d.spike_ratio()) + ") must be > 1 and spike_mads(" +
                std::to_string(d.spike_mads()) + ") >= 0");
  }
}

// A value fault that cannot mean anything is refused before training starts.
void validate(const ValueFault& f) {
  const std::string name = std::string(to_string(f.model)) + " into " + to_string(f.target) + " \"" + f.where + "\"";
  if (f.where.empty()) throw Error("daifu: value fault " + name + ": names no probe or parameter");
  if (f.step < 0) throw Error("daifu: value fault " + name + ": step " + std::to_string(f.step) + " is negative");
  if (f.bit < -1 || f.bit > 31) throw Error("daifu: value fault " + name + ": bit " + std::to_string(f.bit) + " is not in 0..31 (or -1, random)");
  if (f.positions.empty() && f.count < 1) throw Error("daifu: value fault " + name + ": count must be at least 1");
  if (!f.values.empty() && f.values.size() != f.positions.size()) {
    throw Error("daifu: value fault " + name + ": " + std::to_string(f.values.size()) + " values for " +
                std::to_string(f.positions.size()) + " positions");
  }
  for (const auto& p : f.positions) {
    for (int64_t i : p) {
      if (i < 0) throw Error("daifu: value fault " + name + ": a position has the negative index " + std::to_string(i));
    }
  }
}

// <workplace>/rank-<r> for rank r of a distributed session, else the workplace.
std::string rank_workplace(const Options& o) {
  if (o.distributed().group() == nullptr) return o.workplace();
  return (std::filesystem::path(o.workplace()) / ("rank-" + std::to_string(group_rank(*o.distributed().group())))).string();
}

Options validated(Options o) {
  validate(o);
  return o;
}

// A distributed session never pauses: the other ranks would wait in the agreement.
OnUnrecovered resolve_on_unrecovered(const Options& o) {
  if (o.distributed().group() != nullptr) return OnUnrecovered::Rethrow;
  if (o.on_unrecovered()) return *o.on_unrecovered();
  const char* env = std::getenv("DAIFU_ON_UNRECOVERED");
  const std::string value = env != nullptr ? env : "";
  if (value.empty() || value == "rethrow") return OnUnrecovered::Rethrow;
  if (value == "pause") return OnUnrecovered::Pause;
  throw Error("daifu: DAIFU_ON_UNRECOVERED=\"" + value + "\" is neither \"rethrow\" nor \"pause\"");
}

std::chrono::milliseconds resolve_pause_timeout(const Options& o) {
  if (o.pause_timeout()) {
    if (o.pause_timeout()->count() <= 0) {
      throw Error("daifu: Options::pause_timeout(" + std::to_string(o.pause_timeout()->count()) +
                  " ms) must be positive; a pause always ends");
    }
    return *o.pause_timeout();
  }
  const char* env = std::getenv("DAIFU_PAUSE_TIMEOUT");
  if (env == nullptr || *env == '\0') return std::chrono::hours(1);
  char* end = nullptr;
  const double seconds = std::strtod(env, &end);
  if (end == env || *end != '\0' || !(seconds > 0) || seconds > 1e7) {
    throw Error("daifu: DAIFU_PAUSE_TIMEOUT=\"" + std::string(env) + "\" is not a number of seconds in (0, 1e7]");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

std::optional<ReplayMode> resolve_replay(const Options& o) {
  const ReplayMode mode = o.replay_mode().value_or(ReplayMode::Eager);
  if (o.replay()) return *o.replay() ? std::optional<ReplayMode>(mode) : std::nullopt;
  const char* env = std::getenv("DAIFU_REPLAY");
  const std::string value = env != nullptr ? env : "";
  if (value.empty() || value == "0") return std::nullopt;
  if (value == "1") return mode;
  if (value == "eager") return ReplayMode::Eager;
  if (value == "at_step") return ReplayMode::AtStep;
  throw Error("daifu: DAIFU_REPLAY=\"" + value + "\" is none of 0, 1, eager, at_step");
}

// The plan of Options::inject (else $DAIFU_INJECT) and Options::inject(ValueFault), validated.
InjectionPlan injection_plan(const Options& o) {
  const char* env = std::getenv("DAIFU_INJECT");
  InjectionPlan plan = parse_plan(o.inject() ? *o.inject() : env != nullptr ? env : "");
  plan.values.insert(plan.values.end(), o.value_faults().begin(), o.value_faults().end());
  for (const ValueFault& f : plan.values) validate(f);
  return plan;
}

// libtorch symbolizes a backtrace into every c10::Error (~4 ms a throw). While a session with
// fast_throws lives, it is skipped; the default fetcher comes back with the last such session.
std::mutex g_fetcher_mutex;
int g_fast_throw_sessions = 0;

void acquire_fast_throws() {
  std::lock_guard<std::mutex> lock(g_fetcher_mutex);
  if (g_fast_throw_sessions++ == 0) set_empty_stack_trace_fetcher();
}

void release_fast_throws() {
  std::lock_guard<std::mutex> lock(g_fetcher_mutex);
  if (--g_fast_throw_sessions == 0) set_default_stack_trace_fetcher();
}

}  // namespace

SessionImpl::SessionImpl(Options opts)
    : options(validated(std::move(opts))),
      on_unrecovered(resolve_on_unrecovered(options)),
      pause_timeout(resolve_pause_timeout(options)),
      replay(resolve_replay(options)),
      workplace(prepare_workplace(rank_workplace(options))),
      workplace_lock(workplace),
      journal(workplace, options.echo()),
      policy(options.snapshot_every(), options.overhead_budget(), options.max_rollback_steps()),
      plan(injection_plan(options)) {
  // This session is the workplace's one writer: what killed writers left half-made goes.
  for (const auto& folder : {workplace, workplace / kFailuresDir}) remove_stale_temporaries(folder);
  if (options.persist()) store.emplace(workplace / "snapshots");
  if (options.distributed().group() != nullptr) agreement = std::make_unique<Agreement>(options.distributed(), state);
}

void SessionImpl::resume_from_disk() {
  resume_checked = true;
  std::string why;
  const auto found = PersistentStore::load(workplace / "snapshots", &why);
  if (!found) {
    journal.write({{"event", event::resume_skipped}, {"step", 0}, {"reason", why}});
    journal.record("Resume: nothing to resume from (" + why + ")");
    journal.say_once("resume", "nothing to resume from in " + (workplace / "snapshots").string() +
                                   ", training starts at step 0 (" + why + ")");
    return;
  }
  // Throws daifu::Error (nothing changed) when the snapshot does not fit the tracked objects.
  const Snapshot::Persisted restored = snapshot.restore_persisted(state, *found);
  const auto extra = nlohmann::json::parse(restored.extra_json);
  for (const std::string& name : values.restore_json(extra.contains("values") ? extra["values"].dump() : "{}")) {
    journal.record_warning("Resume: the snapshot carries no value \"" + name + "\" of its size; it keeps its value");
    journal.say_once("resume-value-" + name, "the snapshot carries no value \"" + name +
                                                 "\" of its size (taken by a program that tracked other values); "
                                                 "it keeps the value it has");
  }
  global_step = restored.global_step;
  const nlohmann::json saved_knobs = extra.value("knobs", nlohmann::json::object());
  for (const auto& [name, value] : saved_knobs.items()) {
    if (auto it = knobs.find(name); it != knobs.end()) it->second->set_json(value.dump(), "resumed from a snapshot");
  }
  resume_point = ResumePoint{extra.value("loop", int64_t{0}), restored.step, std::nullopt};
  if (const auto each = extra.find("each_first"); each != extra.end() && each->is_number_integer()) {
    next_each_step = each->get<int64_t>();
  }
  if (const auto at = extra.find("each_position");
      at != extra.end() && at->is_array() && at->size() == 2 && (*at)[0].is_number_integer() && (*at)[1].is_boolean()) {
    resume_point->each_position = BatchSource::Position{(*at)[0].get<int64_t>(), (*at)[1].get<bool>()};
  }
  journal.write({{"event", event::resumed}, {"step", restored.step}, {"loop", resume_point->loop},
                 {"global_step", global_step}, {"file", found->file.string()}});
  journal.record("Resumed from the snapshot of step " + std::to_string(restored.step) + " (" + found->file.string() + ")");
}

void SessionImpl::flush_metrics() noexcept {
  if (metric_rows.empty()) return;
  try {
    nlohmann::json steps = nlohmann::json::array();
    nlohmann::json values = nlohmann::json::object();
    for (std::size_t r = 0; r < metric_rows.size(); ++r) {
      steps.push_back(metric_rows[r].step);
      for (const auto& [name, value] : metric_rows[r].values) {
        if (!values.contains(name)) values[name] = nlohmann::json::array();
        auto& column = values[name];
        while (column.size() < r) column.push_back(nullptr);
        column.push_back(std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(std::to_string(value)));
      }
    }
    for (auto& [name, column] : values.items()) {
      while (column.size() < metric_rows.size()) column.push_back(nullptr);
    }
    journal.write({{"event", event::metrics}, {"step", metric_rows.back().step}, {"steps", steps}, {"values", values}});
  } catch (...) {
  }
  metric_rows.clear();
}

const Injection* SessionImpl::injection_for(int64_t step, int64_t attempt) noexcept {
  for (std::size_t i = 0; i < plan.crashes.size(); ++i) {
    const Injection& inj = plan.crashes[i];
    if (inj.step != step) continue;
    if (inj.every_attempt) return &inj;
    if (attempt == 0 && injections_fired.insert(i).second) return &inj;
  }
  return nullptr;
}

}  // namespace detail

Session::Session(Options options) : impl_(std::make_unique<detail::SessionImpl>(std::move(options))) {
  auto& o = impl_->options;
  detail::add_builtin_surgeries(impl_->surgeries, impl_->services, impl_->patches);
  if (o.fast_throws()) detail::acquire_fast_throws();
  impl_->journal.start_report_writer();
  // The first classification compiles the pattern table (~ms): do it now, not in a recovery.
  impl_->classifier.classify(std::make_exception_ptr(std::runtime_error("warm-up")));
  nlohmann::json inject = nlohmann::json::array();
  for (const auto& i : impl_->plan.crashes) {
    inject.push_back(i.fault + "@" + std::to_string(i.step) + (i.every_attempt ? "*" : ""));
  }
  for (const auto& f : impl_->plan.values) {
    inject.push_back(std::string(to_string(f.model)) + ":" + to_string(f.target) + ":" + f.where + "@" +
                     std::to_string(f.step) + (f.every_attempt ? "*" : ""));
  }
  impl_->journal.write({{"event", detail::event::run_start},
                        {"step", 0},
                        {"pid", static_cast<int64_t>(::getpid())},
                        {"workplace", impl_->workplace.string()},
                        {"options",
                         {{"max_attempts", o.max_attempts()},
                          {"replay", impl_->replay ? (*impl_->replay == ReplayMode::Eager ? "eager" : "at_step") : "off"},
                          {"transient_retries", o.transient_retries()},
                          {"max_dropped_batches", o.max_dropped_batches()},
                          {"oom_grow_back", o.oom_grow_back()},
                          {"fast_throws", o.fast_throws()},
                          {"on_unrecovered", impl_->on_unrecovered == OnUnrecovered::Pause ? "pause" : "rethrow"}}},
                        {"inject", inject}});
  if (impl_->agreement) {
    impl_->journal.write({{"event", detail::event::distributed}, {"step", 0}, {"rank", impl_->agreement->rank()},
                          {"world", impl_->agreement->world()},
                          {"average_gradients", o.distributed().average_gradients()}});
  }
  impl_->journal.record("Program Start (run " + impl_->journal.run_id() + ", pid " + std::to_string(::getpid()) +
                        (impl_->agreement ? ", rank " + std::to_string(impl_->agreement->rank()) + " of " +
                                                std::to_string(impl_->agreement->world())
                                          : "") +
                        ")");
  if (impl_->replay) impl_->replayer.load(*impl_->replay, impl_->journal.run_id());
}

Session::~Session() {
  if (impl_->loop_thread.load() != std::thread::id{}) {
    // Its loop would go on with a destroyed session: say so, rather than crash later unexplained.
    std::fprintf(stderr,
                 "daifu: a Session (workplace %s) is being destroyed while its guard loop runs; a Session must outlive "
                 "its loops. Aborting.\n",
                 impl_->workplace.c_str());
    std::abort();
  }
  impl_->replayer.finish();
  auto& s = impl_->stats;
  impl_->flush_metrics();
  const std::string status = impl_->unrecovered ? "unrecovered" : std::uncaught_exceptions() > 0 ? "exception" : "ok";
  impl_->journal.write({{"event", detail::event::run_end},
                        {"step", impl_->global_step},
                        {"status", status},
                        {"committed_steps", s.committed_steps},
                        {"failures", s.failures},
                        {"retries", s.retries},
                        {"skipped_steps", s.skipped_steps},
                        {"dropped_batches", s.dropped_batches},
                        {"unrecovered", s.unrecovered},
                        {"failed_checks", s.failed_checks}});
  impl_->journal.record("Program End (" + status + "): " + std::to_string(s.committed_steps) + " steps committed, " +
                        std::to_string(s.failures) + " failures, " + std::to_string(s.retries) + " retries, " +
                        std::to_string(s.skipped_steps) + " skipped");
  impl_->journal.flush_reports();
  if (impl_->options.fast_throws()) detail::release_fast_throws();
}

namespace {
void refuse_value_name(const detail::TrackedValues& values, const std::string& name) {
  if (values.contains(name)) throw Error("daifu: \"" + name + "\" names a tracked value already");
}
}  // namespace

void Session::track(const std::string& name, torch::nn::Module& module) {
  refuse_value_name(impl_->values, name);
  impl_->state.add_module(name, module);
}
void Session::track(const std::string& name, torch::optim::Optimizer& optimizer) {
  refuse_value_name(impl_->values, name);
  impl_->state.add_optimizer(name, optimizer);
}
void Session::track(const std::string& name, at::Tensor& tensor) {
  refuse_value_name(impl_->values, name);
  impl_->state.add_tensor(name, tensor);
}
void Session::track_value_bytes(const std::string& name, void* value, std::size_t size) {
  const auto names = impl_->state.names();
  if (std::find(names.begin(), names.end(), name) != names.end()) {
    throw Error("daifu: \"" + name + "\" names a tracked object already");
  }
  impl_->values.add(name, value, size);
}

detail::KnobBase* Session::find_any_knob(const std::string& name) const { return impl_->services.find_knob(name); }

void Session::add_knob(std::unique_ptr<detail::KnobBase> knob) {
  const std::string name = knob->name();
  impl_->journal.write({{"event", detail::event::knob_created},
                        {"step", impl_->global_step},
                        {"name", name},
                        {"type", knob->type_name()},
                        {"value", nlohmann::json::parse(knob->json())}});
  impl_->knobs.emplace(name, std::move(knob));
}

void Session::knob_changed(const std::string& name, const std::string& old_json, const std::string& new_json,
                           const std::string& reason) {
  if (impl_->active_repair != nullptr) impl_->active_repair->note(name, old_json, new_json);
  impl_->journal.write({{"event", detail::event::knob},
                        {"step", impl_->current_step >= 0 ? impl_->current_step : impl_->global_step},
                        {"name", name},
                        {"before", nlohmann::json::parse(old_json)},
                        {"after", nlohmann::json::parse(new_json)},
                        {"reason", reason}});
  impl_->journal.record("Knob " + name + ": " + old_json + " -> " + new_json + (reason.empty() ? "" : " (" + reason + ")"));
}

SurgeryRegistry& Session::surgeries() { return impl_->surgeries; }
Classifier& Session::classifier() { return impl_->classifier; }

void Session::report(const std::string& metric, double value) {
  for (auto& [name, v] : impl_->step_metrics) {
    if (name == metric) {
      v = value;
      return;
    }
  }
  impl_->step_metrics.emplace_back(metric, value);
}

int64_t Session::global_step() const noexcept { return impl_->global_step; }
const Options& Session::options() const noexcept { return impl_->options; }
const std::filesystem::path& Session::workplace() const noexcept { return impl_->workplace; }
SessionStats Session::stats() const { return impl_->stats; }
SnapshotStats Session::snapshot_stats() const {
  SnapshotStats s = impl_->snapshot_stats;
  s.bytes = impl_->snapshot.bytes();
  s.every = impl_->policy.every();
  return s;
}
void Session::snapshot_now() { impl_->snapshot_requested = true; }
const std::vector<Incident>& Session::incidents() const noexcept { return impl_->incidents; }

std::string Session::summary() const {
  std::ostringstream out;
  const auto& s = impl_->stats;
  out << "daifu: " << s.committed_steps << " steps committed, " << s.failures << " failures, " << s.retries
      << " retries, " << s.skipped_steps << " skipped, ";
  if (s.scrubbed_batches > 0) out << s.scrubbed_batches << " scrubbed, ";
  if (s.dropped_batches > 0) out << s.dropped_batches << " batches dropped as data, ";
  if (s.failed_checks > 0) out << s.failed_checks << " failed checks, ";
  out << s.unrecovered << " unrecovered"
      << " (workplace " << impl_->workplace.string() << ")\n";
  if (impl_->incidents.empty()) return out.str();
  out << std::left << std::setw(7) << "step" << std::setw(8) << "attempt" << std::setw(19) << "kind"
      << std::setw(20) << "surgery" << std::setw(12) << "outcome" << std::setw(13) << "recovery" << "message\n";
  for (const auto& i : impl_->incidents) {
    std::ostringstream recovery;
    if (i.recovery_us > 0) recovery << std::fixed << std::setprecision(i.recovery_us < 10000 ? 1 : 0) << i.recovery_us / 1000.0 << " ms";
    std::string message = i.failure.message.substr(0, i.failure.message.find('\n'));
    if (message.size() > 60) message = message.substr(0, 57) + "...";
    out << std::setw(7) << i.failure.step << std::setw(8) << i.failure.attempt << std::setw(19)
        << to_string(i.failure.kind) << std::setw(20) << (i.surgery.empty() ? "-" : i.surgery) << std::setw(12)
        << i.outcome << std::setw(13) << (recovery.str().empty() ? "-" : recovery.str()) << message << '\n';
    for (const auto& change : i.changes) out << "       changed " << change << '\n';
  }
  return out.str();
}

}  // namespace daifu
