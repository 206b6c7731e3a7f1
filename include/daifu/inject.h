// Fault injection for demos, tests and benchmarks. Two kinds of fault, one plan:
// - crash faults make a guarded step throw, at a chosen step, the real exception a real bug of
//   that kind raises (docs/injection.md);
// - value faults silently corrupt values, as a hardware fault does (the fault models of the
//   ISCA'23 study): a layer output or the input batch at a Step::probe point, a parameter, or
//   a gradient (docs/silent-faults.md).
#pragma once

#include <daifu/export.h>

#include <cstdint>
#include <string>
#include <vector>

namespace daifu {

/// One planned crash fault: throw `fault` in step `step`, on its first attempt only (a
/// transient fault) or on every attempt (`every_attempt`, a permanent one).
struct DAIFU_API Injection {
  std::string fault;
  int64_t step = 0;
  bool every_attempt = false;
};

/// What a value fault writes into each chosen element.
enum class FaultModel {
  BitFlip,      ///< flips bit `bit` (0 = lowest mantissa bit, 31 = sign) of the float32 value
  RandomValue,  ///< a random finite float32 (a random bit pattern, drawn again while not finite)
  CopyValue,    ///< the value of another element of the same tensor, chosen at random
  Zero,
  Value,        ///< `value`
  Inf,          ///< +infinity
  NaN,
};

/// Where a value fault goes.
enum class FaultTarget {
  Output,     ///< the tensor passed through Step::probe(where, x) (a layer output, the input batch)
  Gradient,   ///< the gradient of tracked parameter `where`, or the gradient flowing back
              ///< through probe `where` (a tensor hook, applied during backward())
  Parameter,  ///< tracked parameter `where` ("model.fc1.weight"), before the step's body runs
};

/// One planned value fault. Positions: `positions` (with `values`, as in the ISCA files) when
/// given, else `count` contiguous elements of the flattened tensor from `offset` (-1: a
/// random start). Random choices are drawn from `seed` and the step, so a fault is
/// reproducible and hits the same elements on every attempt.
struct DAIFU_API ValueFault {
  FaultModel model = FaultModel::NaN;
  FaultTarget target = FaultTarget::Output;
  std::string where;
  int64_t step = 0;
  bool every_attempt = false;  ///< inject on every attempt of the step (a permanent fault)
  bool permanent = false;      ///< Parameter: the corruption stays; else the faulted elements
                               ///< get their pre-step values back when the step ends
  int bit = -1;                ///< BitFlip: 0..31; -1: a random bit per element
  double value = 0;            ///< Value
  int64_t count = 1;
  int64_t offset = -1;
  /// Explicit positions, one index per dimension. They are aligned with the tensor's last
  /// dimensions and each index is taken modulo its dimension's size, so the positions of
  /// another model's layer land inside ours. `values[i]` goes to `positions[i]`; without
  /// values, `model` computes them.
  std::vector<std::vector<int64_t>> positions;
  std::vector<double> values;
  uint64_t seed = 0;
};

/// A parsed plan (Options::inject, $DAIFU_INJECT).
struct DAIFU_API InjectionPlan {
  std::vector<Injection> crashes;
  std::vector<ValueFault> values;
};

/// The crash fault names a plan may use: transient, io, oom, shape, dtype, index, path,
/// nan_data, nan_loss, api, contention, illegal_address, unknown.
DAIFU_API const std::vector<std::string>& injectable_faults();

/// Parses a plan: items separated by commas, semicolons or spaces, each ending in `@step`,
/// `*` after the step for every attempt:
///   crash fault:  transient@12   shape@30*
///   value fault:  MODEL[xN][+OFFSET]:TARGET:NAME@step, MODEL one of nan, inf, zero, random,
///                 copy, flip (a random bit), flipK (bit K), value=V; TARGET one of out, grad,
///                 param, param! (permanent). Example: value=2.9e24:out:fc1.out@30
///   ISCA file:    isca:PATH:NAME@step (read_isca_injection(PATH).fault(NAME, step)).
/// Throws daifu::Error naming the bad item.
DAIFU_API InjectionPlan parse_plan(const std::string& plan);

/// Throws the exception of crash fault `fault`, produced for real where it can be (a real
/// mismatched matmul, a real torch::save into a missing folder under `scratch_dir`, a real
/// failed allocation). Throws daifu::Error for an unknown fault name.
[[noreturn]] DAIFU_API void throw_injected(const std::string& fault, const std::string& scratch_dir);

/// One row of the ISCA'23 artifact's injection files (key/value CSV: model, stage, fmodel,
/// target_worker, target_layer, target_epoch, target_step, inj_pos, inj_values,
/// learning_rate, seed).
struct DAIFU_API IscaInjection {
  std::string model, stage, fmodel, target_layer;
  int64_t target_worker = 0, target_epoch = 0, target_step = 0;
  std::vector<std::vector<int64_t>> positions;  ///< inj_pos, "a/b/c/d" per element
  std::vector<double> values;                   ///< inj_values, one per position
  double learning_rate = 0;
  uint64_t seed = 0;

  /// The same faulty values at the same positions, on our model: stage fwrd_inject corrupts
  /// the output of probe `where`, bkwd_inject the gradient flowing back through it (or of the
  /// tracked parameter `where`), in step `step`, first attempt.
  ValueFault fault(const std::string& where, int64_t step) const;
};

/// Reads an ISCA'23 injection file. Throws daifu::Error naming the file and the bad line for a
/// missing key, a malformed number, or positions and values of different counts.
DAIFU_API IscaInjection read_isca_injection(const std::string& path);

/// "nan", "bit_flip", ... and "output", "gradient", "parameter": the journal's spellings.
DAIFU_API const char* to_string(FaultModel model) noexcept;
DAIFU_API const char* to_string(FaultTarget target) noexcept;

}  // namespace daifu
