// The crash benchmark's programs. Every case has three: `buggy` (crashes for a realistic
// reason), `fixed` (the ground truth) and `guarded` (the buggy program under DAIFU_GUARD).
// They are compiled into one executable, `crash_case`, and each run is its own process:
//
//   crash_case <case> <buggy|fixed|guarded> --out DIR [--steps N] [--stop-at S]
//              [--resume CHECKPOINT] [--checkpoint-every K] [--overhead] [--threads T]
//   crash_case --list        # the registered programs, one "<case> <variant>" per line
//   crash_case --hold-device LOCK MS   # the other process of the device-contention cases
//
// The process runs in DIR (its working directory) and writes DIR/result.json when it ends
// normally. A buggy program that crashes prints one line "crash_case: crashed at step N: ..."
// and rethrows, so the process dies of the uncaught exception as the original would.
#pragma once

#include <daifu/daifu.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace crash {

enum class Variant { Buggy, Fixed, Guarded };
const char* to_string(Variant v);

struct Args {
  std::string name;
  Variant variant = Variant::Fixed;
  std::filesystem::path out;      ///< the run's folder and working directory
  int64_t steps = 0;              ///< 0: the case's default
  int64_t stop_at = -1;           ///< baselines: end the process when this step is about to start
  std::filesystem::path resume;   ///< checkpoint-retry: continue from this checkpoint
  int64_t checkpoint_every = 0;   ///< write baseline_checkpoints/step_N.pt after every K-th step
  bool overhead = false;          ///< fixed: alternate blocks of plain and guarded steps
  int64_t block = 20;             ///< steps per block with --overhead
  int threads = 2;
};

/// What a program trains: what a checkpoint holds and what a guard tracks.
struct Trainees {
  std::vector<std::pair<std::string, torch::nn::Module*>> modules;
  std::vector<std::pair<std::string, torch::optim::Optimizer*>> optimizers;
};

/// One process of a case: the command line and the plumbing the baselines need.
class Run {
 public:
  explicit Run(Args args);

  const Args& args() const noexcept { return args_; }
  /// --steps, or `fallback` when it was not given.
  int64_t steps(int64_t fallback) const noexcept { return args_.steps > 0 ? args_.steps : fallback; }

  /// The first step: 0, or with --resume the step after the checkpoint's, whose modules and
  /// optimizers are loaded into `t` (names must match).
  int64_t start(const Trainees& t);
  /// Before step `step` runs. With --stop-at S, at S: writes result.json (with the time the
  /// step was reached) and ends the process with status 0.
  void begin_step(int64_t step);
  /// After step `step` committed. With --checkpoint-every K: torch::save of `t` and the step.
  void end_step(int64_t step, const Trainees& t);
  /// The step begin_step was last called for (-1 before the first).
  int64_t current_step() const noexcept { return current_step_; }

  /// The guarded program's options: workplace DIR/workplace, no injected faults.
  daifu::Options options() const;

  /// Extra fields for result.json.
  nlohmann::json& result() noexcept { return result_; }
  /// Writes DIR/result.json with the final quality (`metric`, `value`) and what result() holds.
  void finish(const std::string& metric, double value, bool higher_is_better);

 private:
  void write_result();

  Args args_;
  nlohmann::json result_ = nlohmann::json::object();
  int64_t started_at_ = 0;
  int64_t current_step_ = -1;
};

/// The step loop of the buggy and fixed programs: `body(step)` for every step in
/// [run.start(t), last), returning the step's loss, with begin_step/end_step around it. With
/// --overhead, alternating blocks of --block steps run plain and under DAIFU_GUARD (one
/// Session tracking `t`, the loss reported each step): result.json gets both step times.
void train(Run& run, const Trainees& t, int64_t last, const std::function<double(int64_t)>& body);

/// A program of a case. Returns the process's exit status.
using Program = int (*)(Run&);

/// Registers `program` as `variant` of case `name` (at static initialization).
struct Registration {
  Registration(const char* name, Variant variant, Program program);
};

/// Nanoseconds of std::chrono::steady_clock (CLOCK_MONOTONIC: comparable across processes).
int64_t monotonic_ns();

}  // namespace crash

#define CRASH_CASE_CONCAT2(a, b) a##b
#define CRASH_CASE_CONCAT(a, b) CRASH_CASE_CONCAT2(a, b)
/// CRASH_PROGRAM("cnn_path_problem", Buggy, run): registers `int run(crash::Run&)`.
#define CRASH_PROGRAM(name, variant, function)                                                  \
  static const ::crash::Registration CRASH_CASE_CONCAT(crash_registration_, __COUNTER__)(       \
      name, ::crash::Variant::variant, function)
