// The silent-bug checks of a session (BugCheckOptions), run after committed steps. A failed
// check is journaled ("check_failed") and warned about in the record; nothing is thrown and
// the training state is left as it was. Torch-free header; the work is in bug_checks.cpp.
#pragma once

#include <daifu/bug_checks.h>
#include <daifu/knob.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace daifu::detail {

class Journal;
class TrackedState;

class BugChecks {
 public:
  BugChecks(BugCheckOptions options, Journal& journal, TrackedState& state);

  /// Whether the commit of step `index` is followed by the checks.
  bool due(int64_t index) const noexcept;
  /// Runs the enabled checks after step `step` committed; `lr` is the knob Options::lr_knob()
  /// names (nullptr if none). Journals a "checks" line; returns the failures journaled now (a
  /// failure that persists from the last check is not journaled again).
  int64_t run(int64_t step, const Knob<double>* lr) noexcept;

  /// A problem one check found; `key` names the check and its subject ("round_trip:model").
  struct Problem {
    std::string check, key, message;
  };

 private:
  void check_serialization(std::vector<Problem>& out);
  void check_optimizer_params(std::vector<Problem>& out);
  void check_lr(const Knob<double>& lr, std::vector<Problem>& out);
  void check_memory(std::vector<Problem>& out);

  BugCheckOptions options_;
  Journal& journal_;
  TrackedState& state_;
  int64_t step_ = -1;
  std::map<std::string, std::string> failing_;  // key -> message, of the problems of the last check
  struct LrSeen {
    int64_t step = 0;
    double knob = 0;
    std::vector<std::vector<double>> groups;  // per tracked optimizer, per param group
  };
  std::optional<LrSeen> lr_seen_;
  std::vector<std::pair<int64_t, int64_t>> rss_;  // (step, resident bytes) of the last checks
};

}  // namespace daifu::detail
