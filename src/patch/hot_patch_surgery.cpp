#include "patch/hot_patch_surgery.h"

#include <daifu/patch.h>
#include <daifu/step.h>

#include "journal/workplace.h"
#include "patch/patch_library.h"
#include "patch/sha256.h"
#include "session/session_impl.h"

#include <algorithm>
#include <filesystem>
#include <vector>

namespace daifu::detail {
namespace fs = std::filesystem;

// After the built-ins that repair, before api_misuse: a patch is how API misuse gets fixed.
HotPatchSurgery::HotPatchSurgery(SessionImpl& impl)
    : Surgery("hot_patch", SurgeryLimits{/*priority=*/198, /*max_per_step=*/3, /*max_per_run=*/1000}), impl_(impl) {}

bool HotPatchSurgery::matches(const Failure& failure) const { return failure.kind != FailureKind::Fatal; }

Action HotPatchSurgery::operate(RepairContext& context) {
  const fs::path folder = impl_.workplace / kPatchesDir;
  try {
    check_patch_folder(folder);
  } catch (const Error& e) {
    context.explain(e.what());
    return Action::Decline;
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (entry.path().extension() == ".so") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  const int64_t step = context.step().index();
  for (const auto& file : files) {
    std::string sha;
    try {
      sha = sha256_file(file.string());
    } catch (const Error&) {
      continue;  // vanished or unreadable: it is looked at again next time
    }
    if (!seen_.insert(sha).second) continue;
    LoadedPatch patch;
    try {
      patch = load_patch(file, folder);
    } catch (const Error& e) {
      impl_.journal.write({{"event", "patch_refused"}, {"step", step}, {"path", file.string()}, {"sha256", sha},
                           {"reason", e.what()}});
      impl_.journal.record_warning(std::string("Patch refused: ") + e.what());
      continue;
    }
    PatchContext patch_context(context);
    const int64_t stamp = impl_.state.version_stamp();
    Action action = Action::Decline;
    try {
      action = run_patch(patch, patch_context);
    } catch (const Error& e) {
      impl_.journal.write({{"event", "patch_failed"}, {"step", step}, {"path", patch.path}, {"sha256", patch.sha256},
                           {"reason", e.what()}});
      impl_.journal.record_warning(std::string("Patch failed: ") + e.what());
      if (impl_.state.version_stamp() != stamp) {
        context.explain(std::string(e.what()) + ", after it had modified tracked state; not retrying on half-patched state");
        return Action::Escalate;
      }
      continue;
    }
    impl_.journal.write({{"event", "patch"}, {"step", step}, {"path", patch.path}, {"sha256", patch.sha256},
                         {"action", to_string(action)}});
    impl_.journal.record("Patch " + patch.path + " (sha256 " + patch.sha256.substr(0, 12) + ") ran: " + to_string(action));
    if (action == Action::Decline) continue;
    context.note("patch", "null", nlohmann::json{{"path", patch.path}, {"sha256", patch.sha256}}.dump());
    if (context.explanation().empty()) context.explain("hot patch " + file.filename().string());
    return action;
  }
  context.explain("no new patch in " + folder.string());
  return Action::Decline;
}

}  // namespace daifu::detail
