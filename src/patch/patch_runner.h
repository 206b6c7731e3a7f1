// Running hot patches from <workplace>/patches/: each patch file (by SHA-256) at most once per
// session, journaled as "patch", "patch_refused" or "patch_failed". Shared by the hot_patch
// surgery and the pause (session/pause.cpp), so a patch one of them ran is not run again.
#pragma once

#include <daifu/surgery.h>

#include <filesystem>
#include <optional>
#include <set>
#include <string>

namespace daifu::detail {

class RepairServices;

class PatchRunner {
 public:
  struct Result {
    std::optional<Action> action;  ///< set when a patch decided the step (not Decline)
    bool damaged = false;          ///< a patch failed after it had modified tracked state
    std::string reason;            ///< why nothing decided, why it escalated, or what the damaging patch threw
  };

  explicit PatchRunner(RepairServices& session) noexcept : session_(session) {}

  /// Runs the patches that appeared in patches/ since the last call, in name order, until one
  /// decides; stops at a patch that failed after modifying tracked state.
  Result run_new(RepairContext& context);
  /// Runs the patch patches/<file_name> (the CLI's `daifu apply`); one already run is refused.
  /// A non-empty `staged` names a file in patches/ that the CLI copied there under a name the
  /// folder scan ignores: it is renamed to `file_name` first, so the command, not the scan,
  /// runs it.
  Result run_file(const std::string& file_name, const std::string& staged, RepairContext& context);
  /// Counts a patch (by SHA-256) as run: replay ran it already.
  void mark_seen(const std::string& sha256) { seen_.insert(sha256); }

 private:
  // nullopt: try the next patch.
  std::optional<Result> run_one(const std::filesystem::path& file, const std::string& sha, RepairContext& context);
  /// Journals patch_refused for `file` (`sha` may be empty: it could not be hashed).
  void refuse(const std::filesystem::path& file, const std::string& sha, int64_t step, const std::string& reason);

  RepairServices& session_;
  std::set<std::string> seen_;        // SHA-256 of every patch run or refused
  std::set<std::string> unhashable_;  // paths refused before hashing (a link, a FIFO)
};

}  // namespace daifu::detail
