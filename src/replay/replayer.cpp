#include "replay/replayer.h"

#include <daifu/patch.h>
#include <daifu/session.h>
#include <daifu/step.h>

#include "core/tensor_description.h"
#include "journal/events.h"
#include "journal/journal.h"
#include "journal/workplace.h"
#include "patch/patch_library.h"
#include "patch/patch_runner.h"
#include "patch/sha256.h"
#include "repair/repair_services.h"
#include "state/tracked_state.h"

#include <torch/nn/module.h>

#include <algorithm>

namespace daifu::detail {
namespace fs = std::filesystem;

namespace {

const char* mode_name(ReplayMode mode) { return mode == ReplayMode::Eager ? "eager" : "at_step"; }

nlohmann::json origin(const ReplayItem& item) {
  return {{"from_run", item.run}, {"from_step", item.step}, {"where", item.where}, {"kind", item.kind},
          {"surgery", item.surgery}};
}

}  // namespace

void Replayer::load(ReplayMode mode, const std::string& current_run) {
  mode_ = mode;
  std::vector<std::string> warnings;
  try {
    const History history = read_history(session_.workplace());
    items_ = plan_replay(history, session_.workplace(), {current_run});
    warnings = history.warnings;
  } catch (const std::exception& e) {
    warnings.push_back(e.what());
  }
  session_.journal().write({{"event", event::replay_plan}, {"step", 0}, {"mode", mode_name(mode)},
                            {"items", static_cast<int64_t>(items_.size())},
                            {"journal_warnings", static_cast<int64_t>(warnings.size())}});
  std::string record = "Replay (" + std::string(mode_name(mode)) + "): " + std::to_string(items_.size()) +
                       " item(s) from earlier runs";
  for (const auto& item : items_) record += "\n  - " + item.describe();
  session_.journal().record(record);
  for (const auto& w : warnings) session_.journal().record_warning("Replay: " + w);
}

void Replayer::loop_started(Session& session, const std::string& where, Step& first) {
  if (mode_ != ReplayMode::Eager) return;
  std::vector<ReplayItem> now;
  auto split = std::stable_partition(items_.begin(), items_.end(), [&](const ReplayItem& i) { return i.where != where; });
  now.assign(std::make_move_iterator(split), std::make_move_iterator(items_.end()));
  items_.erase(split, items_.end());
  for (const auto& item : now) apply(session, item, first);
}

void Replayer::step_starting(Session& session, const std::string& where, Step& step) {
  if (mode_ != ReplayMode::AtStep) return;
  std::vector<ReplayItem> now;
  auto split = std::stable_partition(items_.begin(), items_.end(), [&](const ReplayItem& i) {
    return !(i.where == where && i.step == step.index());
  });
  now.assign(std::make_move_iterator(split), std::make_move_iterator(items_.end()));
  items_.erase(split, items_.end());
  for (const auto& item : now) apply(session, item, step);
}

void Replayer::finish() noexcept {
  try {
    for (const auto& item : items_) {
      skip(item, session_.global_step(),
           mode_ == ReplayMode::Eager ? "its guard loop (" + item.where + ") never started in this run"
                                      : "step " + std::to_string(item.step) + " of its guard loop (" + item.where +
                                            ") was never reached in this run");
    }
    items_.clear();
  } catch (...) {
  }
}

void Replayer::skip(const ReplayItem& item, int64_t step, const std::string& why) {
  nlohmann::json line = origin(item);
  line["event"] = event::replay_skipped;
  line["step"] = step;
  line["item"] = item.type == ReplayItem::Type::Knob ? "knob" : "patch";
  line["what"] = item.describe();
  line["reason"] = why;
  session_.journal().write(line);
  session_.journal().record_warning("Replay skipped " + item.describe() + ": " + why);
}

std::string Replayer::shape_mismatch(const ReplayItem& item) const {
  for (const auto& [what, change] : item.changes.items()) {
    if (!change.is_array() || change.size() != 2 || !change[0].is_object()) continue;
    const auto dot = what.find('.');
    if (dot == std::string::npos) continue;
    const std::string tracked_name = what.substr(0, dot), path = what.substr(dot + 1);
    torch::nn::Module* root = nullptr;
    for (const auto& o : session_.state().objects()) {
      if (o.name == tracked_name) root = o.module;
    }
    if (root == nullptr) continue;  // not a module change (e.g. "optimizer.params[...]")
    torch::nn::Module* target = nullptr;
    for (const auto& m : root->named_modules("", /*include_self=*/false)) {
      if (m.key() == path) target = m.value().get();
    }
    if (target == nullptr) return what + " does not exist here";
    nlohmann::json here = nlohmann::json::object();
    for (const auto& p : target->named_parameters(/*recurse=*/true)) {
      here[p.key()] = tensor_description(p.value());
    }
    if (here != change[0]) {
      return what + " is " + here.dump() + " here; the patch was recorded on " + change[0].dump();
    }
  }
  return "";
}

void Replayer::apply(Session& session, const ReplayItem& item, Step& step) {
  const int64_t at = step.index();
  // What the replay changes counts from here (not as a failed step's mutation); the loop's
  // snapshot of this step, taken next, holds it.
  session_.state().begin_step();
  if (!item.tracked.empty() && item.tracked != session_.state().names()) {
    std::string here;
    for (const auto& n : session_.state().names()) here += (here.empty() ? "" : ", ") + n;
    std::string then;
    for (const auto& n : item.tracked) then += (then.empty() ? "" : ", ") + n;
    skip(item, at, "the tracked objects differ: [" + here + "] here, [" + then + "] when it was recorded");
    return;
  }
  nlohmann::json line = origin(item);
  line["event"] = event::replayed;
  line["step"] = at;
  line["mode"] = mode_name(mode_);
  if (item.type == ReplayItem::Type::Knob) {
    KnobBase* knob = session_.find_knob(item.name);
    if (knob == nullptr) return skip(item, at, "there is no knob named \"" + item.name + "\" here");
    const auto now = nlohmann::json::parse(knob->json());
    if (now != item.before) {
      return skip(item, at, item.name + " is " + now.dump() + " here, " + item.before.dump() +
                                " when the repair was recorded: the program changed, not applied");
    }
    try {
      knob->set_json(item.after.dump(), "replay of " + item.surgery + " (run " + item.run + ", step " +
                                                  std::to_string(item.step) + ")");
    } catch (const std::exception& e) {
      return skip(item, at, e.what());
    }
    line["item"] = "knob";
    line["name"] = item.name;
    line["value"] = item.after;
  } else {
    const fs::path folder = session_.workplace() / kPatchesDir;
    std::string sha;
    try {
      sha = sha256_file(item.path);
    } catch (const Error& e) {
      return skip(item, at, e.what());  // gone, unreadable, or not a regular file
    }
    if (sha != item.sha256) {
      return skip(item, at, "the patch file " + item.path + " changed (sha256 " + sha.substr(0, 12) + ", recorded " +
                                item.sha256.substr(0, 12) + ")");
    }
    if (const std::string why = shape_mismatch(item); !why.empty()) return skip(item, at, why);
    Failure failure;
    failure.kind = failure_kind_from_string(item.kind).value_or(FailureKind::Unknown);
    failure.where = item.where;
    failure.step = item.step;
    failure.message = "replay of the repair recorded at step " + std::to_string(item.step);
    RepairContext context(session, step, failure, 0);
    session_.collect_knob_changes(&context);  // the patch's knob changes, for the replayed line
    Action action = Action::Decline;
    const int64_t stamp = session_.state().version_stamp();
    try {
      const LoadedPatch patch = load_patch(item.path, folder);
      PatchContext patch_context(context);
      action = run_patch(patch, patch_context);
    } catch (const Error& e) {
      session_.collect_knob_changes(nullptr);
      if (session_.state().version_stamp() != stamp) {
        throw Error("daifu: replaying " + item.describe() + " failed after it had modified tracked state: " +
                    e.what() + "; run without replay");
      }
      return skip(item, at, e.what());
    }
    session_.collect_knob_changes(nullptr);
    if (action == Action::Decline) return skip(item, at, "the patch declined");
    patches_.mark_seen(sha);
    line["item"] = "patch";
    line["path"] = item.path;
    line["sha256"] = sha;
    nlohmann::json changes = nlohmann::json::object();
    for (const auto& c : context.changes()) {
      changes[c.what] = {nlohmann::json::parse(c.before_json), nlohmann::json::parse(c.after_json)};
    }
    line["changes"] = changes;
  }
  session_.journal().write(line);
  session_.journal().record("Replayed " + item.describe());
}

}  // namespace daifu::detail
