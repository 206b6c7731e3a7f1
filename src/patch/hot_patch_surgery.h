// Built-in surgery "hot_patch": when a step fails and no surgery before it repaired the
// failure, the patches that appeared in <workplace>/patches/ since the last look are loaded
// (after the folder and file checks of patch_library.h) and run, each once, in name order;
// the first that does not decline decides the step. Refused or throwing patches are journaled
// and the next one is tried.
#pragma once

#include <daifu/surgery.h>

#include <set>
#include <string>

namespace daifu::detail {

class SessionImpl;

class HotPatchSurgery final : public Surgery {
 public:
  explicit HotPatchSurgery(SessionImpl& impl);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;

 private:
  SessionImpl& impl_;
  std::set<std::string> seen_;  // SHA-256 of every patch run or refused
};

}  // namespace daifu::detail
