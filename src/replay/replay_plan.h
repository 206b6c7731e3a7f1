// What a run with Options::replay re-applies: the repairs earlier runs in the workplace made,
// as items that say where they were recorded (run, step, guard file:line, failure kind, the
// tracked names) so that each can be checked before it is applied. Torch-free.
#pragma once

#include "replay/history.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace daifu::detail {

struct ReplayItem {
  enum class Type { Knob, Patch };
  Type type = Type::Knob;
  // Where it was recorded.
  std::string run, where, kind, surgery;
  int64_t step = -1;
  std::vector<std::string> tracked;  ///< the tracked names when it was recorded (from the report)
  // Knob: the value before and after the repair.
  std::string name;
  nlohmann::json before, after;
  // Patch: the library and its hash, and the changes it made ({"model.fc2": [before, after]}).
  std::string path, sha256;
  nlohmann::json changes = nlohmann::json::object();

  /// "batch_size 64 -> 32 (out_of_memory at step 40, file.cpp:12)" / "patch fix.so (...)".
  std::string describe() const;
};

/// The items to replay from `history`, oldest first: every knob a retry or skip repair changed,
/// and every patch that decided a step. Runs named in `exclude_runs` (the current one) are
/// left out, and so are repairs that were themselves replays and out-of-memory shrinks that
/// their run grew back (Options::oom_grow_back: the pressure had passed).
std::vector<ReplayItem> plan_replay(const History& history, const std::filesystem::path& workplace,
                                    const std::vector<std::string>& exclude_runs);

}  // namespace daifu::detail
