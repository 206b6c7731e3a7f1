// daifu::Session: owns what a training program asks daifu to protect (tracked state, knobs,
// surgeries) and the workplace where everything that happens is recorded.
#pragma once

#include <daifu/classifier.h>
#include <daifu/errors.h>
#include <daifu/export.h>
#include <daifu/failure.h>
#include <daifu/knob.h>
#include <daifu/options.h>
#include <daifu/surgery.h>
#include <daifu/torch_fwd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace daifu {
namespace detail {
class SessionImpl;
struct SessionAccess;  // src/session/session_impl.h
}  // namespace detail

/// One failure and what became of it, kept in memory for summaries.
struct DAIFU_API Incident {
  Failure failure;
  std::string surgery;             ///< the surgery that handled it; empty if none did
  std::string outcome;             ///< "retry", "skip" or "unrecovered"
  std::vector<std::string> changes;  ///< "batch_size: 64 -> 32"
  double recovery_us = 0;          ///< failure caught -> step running again (0 if it did not)
};

/// Counters over the session's life.
struct DAIFU_API SessionStats {
  int64_t committed_steps = 0;  ///< distinct steps committed (a re-run after a rollback counts once)
  int64_t failures = 0;
  int64_t retries = 0;
  int64_t skipped_steps = 0;
  int64_t unrecovered = 0;
  int64_t rollbacks = 0;
  int64_t rerun_steps = 0;      ///< committed steps run again after rollbacks
  int64_t scrubbed_batches = 0; ///< batches the exceptional_data surgery cleared of NaN/Inf
  int64_t dropped_batches = 0;  ///< batches the data_or_code surgery dropped as bad data
  int64_t failed_checks = 0;    ///< silent-bug checks that failed (Options::bug_checks)
};

/// What the snapshots cost and hold.
struct DAIFU_API SnapshotStats {
  int64_t captures = 0;
  uint64_t bytes = 0;            ///< host memory held by the snapshot buffers
  double last_capture_ms = 0;
  double last_restore_ms = 0;
  int64_t last_step = -1;        ///< step index the newest snapshot was taken at
  int64_t every = 0;             ///< k in use: a snapshot every k steps
};

/// Example:
///   daifu::Session session(daifu::Options().workplace("daifu_workplace"));
///   session.track("model", *model);
///   session.track("optimizer", optimizer);
///   auto& batch = session.knob<int64_t>("batch_size", 64);
/// Throws daifu::Error at construction if the options are invalid or the workplace cannot be
/// created or written. Not thread-safe: use it from the training thread.
class DAIFU_API Session : private detail::KnobObserver {
 public:
  explicit Session(Options options = Options());
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Tracks a module's parameters and buffers. The module must outlive the session.
  void track(const std::string& name, torch::nn::Module& module);
  /// Tracks an optimizer's per-parameter state and param-group options.
  void track(const std::string& name, torch::optim::Optimizer& optimizer);
  /// Tracks a tensor (its storage and version counter).
  void track(const std::string& name, at::Tensor& tensor);
  /// Tracks a plain value the steps update: a loss accumulator, a counter, a small struct of
  /// them (trivially copyable, at most 4 KiB). A failed step puts it back as it was when the
  /// step began, a rollback as it was at the snapshot, and a persisted snapshot carries it to a
  /// resumed run (snapshots are taken of sessions that track a module, an optimizer or a
  /// tensor). It must outlive the session. Throws daifu::Error if the name is taken.
  /// Example:  double running_loss = 0;  session.track_value("running_loss", running_loss);
  template <class T>
  void track_value(const std::string& name, T& value) {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>,
                  "track_value takes a trivially copyable value that is not a pointer; track tensors with track()");
    track_value_bytes(name, &value, sizeof(T));
  }

  /// Returns the knob `name`, creating it with `initial` the first time. T is int64_t, double,
  /// bool or std::string; asking for an existing knob with another T throws daifu::Error.
  template <class T>
  Knob<T>& knob(const std::string& name, T initial) {
    static_assert(std::is_same_v<T, int64_t> || std::is_same_v<T, double> ||
                      std::is_same_v<T, bool> || std::is_same_v<T, std::string>,
                  "daifu knobs are int64_t, double, bool or std::string");
    if (detail::KnobBase* existing = find_any_knob(name)) {
      if (auto* typed = dynamic_cast<Knob<T>*>(existing)) return *typed;
      throw Error("daifu: knob \"" + name + "\" exists with type " + existing->type_name());
    }
    detail::KnobObserver* observer = this;
    auto created = std::make_unique<Knob<T>>(name, std::move(initial), observer);
    Knob<T>& ref = *created;
    add_knob(std::move(created));
    return ref;
  }
  Knob<std::string>& knob(const std::string& name, const char* initial) {
    return knob<std::string>(name, std::string(initial));
  }
  /// The knob `name` if there is one of type T; nullptr if there is none or it has another type.
  /// Example:  if (auto* lr = session.find_knob<double>("lr")) lr->set(lr->get() / 2, "why");
  template <class T>
  Knob<T>* find_knob(const std::string& name) const {
    return dynamic_cast<Knob<T>*>(find_any_knob(name));
  }

  SurgeryRegistry& surgeries();
  Classifier& classifier();

  /// Routes `tensor` through the transform registered as `name` (by a hot patch, or by
  /// add_transform) and returns the result; returns `tensor` itself while none is registered.
  /// Example:  auto loss = torch::nll_loss(out, session.transform("targets", y));
  at::Tensor transform(const std::string& name, const at::Tensor& tensor);
  /// Registers (or replaces) the transform `name`; journaled. The function must stay valid for
  /// the session's life (a patch's code stays loaded).
  void add_transform(const std::string& name, std::function<at::Tensor(const at::Tensor&)> fn);

  /// Records a metric of the current step (e.g. the loss); journaled every metrics_every steps.
  void report(const std::string& metric, double value);

  /// Steps committed by all guard loops of this session so far.
  int64_t global_step() const noexcept;
  const Options& options() const noexcept;
  const std::filesystem::path& workplace() const noexcept;
  SessionStats stats() const;
  SnapshotStats snapshot_stats() const;
  /// Takes a snapshot at the start of the next step, whatever the policy says.
  void snapshot_now();
  const std::vector<Incident>& incidents() const noexcept;
  /// A human-readable table of every failure and what was done about it.
  std::string summary() const;

 private:
  friend struct detail::SessionAccess;
  detail::KnobBase* find_any_knob(const std::string& name) const;
  void track_value_bytes(const std::string& name, void* value, std::size_t size);
  void add_knob(std::unique_ptr<detail::KnobBase> knob);
  void knob_changed(const std::string& name, const std::string& old_json,
                    const std::string& new_json, const std::string& reason) override;

  std::unique_ptr<detail::SessionImpl> impl_;
};

}  // namespace daifu
