#include "patch/patch_runner.h"

#include <daifu/patch.h>
#include <daifu/step.h>

#include "journal/events.h"
#include "journal/journal.h"
#include "journal/workplace.h"
#include "patch/patch_library.h"
#include "patch/sha256.h"
#include "repair/repair_services.h"
#include "state/tracked_state.h"

#include <algorithm>
#include <vector>

namespace daifu::detail {
namespace fs = std::filesystem;

PatchRunner::Result PatchRunner::run_new(RepairContext& context) {
  const fs::path folder = session_.workplace() / kPatchesDir;
  Result none;
  try {
    check_patch_folder(folder);
  } catch (const Error& e) {
    none.reason = e.what();
    return none;
  }
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    if (entry.path().extension() == ".so") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    std::string sha;
    try {
      sha = sha256_file(file.string());
    } catch (const Error& e) {
      // Gone since the listing: looked at again next time. There but not a regular file (a
      // link, a FIFO): refused, once.
      std::error_code missing;
      if (fs::exists(fs::symlink_status(file, missing)) && unhashable_.insert(file.string()).second) {
        refuse(file, "", context.step().index(), e.what());
      }
      continue;
    }
    if (seen_.count(sha) > 0) continue;
    if (auto result = run_one(file, sha, context)) return *result;
  }
  none.reason = "no new patch in " + folder.string();
  return none;
}

PatchRunner::Result PatchRunner::run_file(const std::string& file_name, const std::string& staged,
                                          RepairContext& context) {
  const fs::path folder = session_.workplace() / kPatchesDir;
  const fs::path file = folder / fs::path(file_name).filename();
  Result none;
  std::string sha;
  try {
    if (!staged.empty()) {
      const fs::path from = folder / fs::path(staged).filename();
      std::error_code ec;
      if (fs::exists(file, ec)) {
        const bool same = sha256_file(file.string()) == sha256_file(from.string());
        fs::remove(from, ec);
        if (!same) {
          none.reason = file.string() + " exists with other contents; give the new patch another name";
          return none;
        }
      } else {
        fs::rename(from, file, ec);
        if (ec) throw Error("daifu: cannot install " + from.string() + " as " + file.string() + ": " + ec.message());
      }
    }
    sha = sha256_file(file.string());
  } catch (const Error& e) {
    none.reason = e.what();
    return none;
  }
  if (seen_.count(sha) > 0) {
    none.reason = "the patch " + file.string() + " (sha256 " + sha.substr(0, 12) +
                  ") already ran in this session; a patch runs once: change it, rebuild, apply again";
    return none;
  }
  if (auto result = run_one(file, sha, context)) return *result;
  none.reason = "the patch " + file.string() + " did not decide the step (see the journal)";
  return none;
}

std::optional<PatchRunner::Result> PatchRunner::run_one(const fs::path& file, const std::string& sha,
                                                       RepairContext& context) {
  seen_.insert(sha);
  const fs::path folder = session_.workplace() / kPatchesDir;
  const int64_t step = context.step().index();
  // Loading runs the patch's static constructors: if they or the patch end the process, this
  // line, with no patch/patch_refused/patch_failed after it, names the patch that did.
  session_.journal().write({{"event", event::patch_loading}, {"step", step}, {"path", file.string()}, {"sha256", sha}});
  LoadedPatch patch;
  try {
    patch = load_patch(file, folder);
  } catch (const Error& e) {
    refuse(file, sha, step, e.what());
    return std::nullopt;
  }
  PatchContext patch_context(context);
  const int64_t stamp = session_.state().version_stamp();
  Action action = Action::Decline;
  try {
    action = run_patch(patch, patch_context);
  } catch (const Error& e) {
    session_.journal().write({{"event", event::patch_failed}, {"step", step}, {"path", patch.path},
                              {"sha256", patch.sha256}, {"reason", e.what()}});
    session_.journal().record_warning(std::string("Patch failed: ") + e.what());
    if (session_.state().version_stamp() == stamp) return std::nullopt;
    Result damaged;
    damaged.damaged = true;
    damaged.reason = std::string(e.what()) + ", after it had modified tracked state";
    return damaged;
  }
  session_.journal().write({{"event", event::patch}, {"step", step}, {"path", patch.path}, {"sha256", patch.sha256},
                            {"action", to_string(action)}});
  session_.journal().record("Patch " + patch.path + " (sha256 " + patch.sha256.substr(0, 12) +
                            ") ran: " + to_string(action));
  if (action == Action::Decline) return std::nullopt;
  context.note("patch", "null", nlohmann::json{{"path", patch.path}, {"sha256", patch.sha256}}.dump());
  if (context.explanation().empty()) context.explain("hot patch " + file.filename().string());
  Result decided;
  decided.action = action;
  if (action == Action::Escalate) {
    decided.reason = "the hot patch " + file.filename().string() + " escalated: " + context.explanation();
  }
  return decided;
}

void PatchRunner::refuse(const fs::path& file, const std::string& sha, int64_t step, const std::string& reason) {
  session_.journal().write({{"event", event::patch_refused}, {"step", step}, {"path", file.string()},
                            {"sha256", sha}, {"reason", reason}});
  session_.journal().record_warning("Patch refused: " + reason);
}

}  // namespace daifu::detail
