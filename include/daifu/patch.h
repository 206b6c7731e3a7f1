// Hot patches: new code for a running training process. A patch is a shared library built
// against this header (CMake: daifu_add_patch(name file.cpp)) that exports a versioned entry
// point. Dropped into <workplace>/patches/, it is loaded when a step fails and no other
// surgery repaired the failure; it repairs it like a surgery (docs/hot-patching.md).
#pragma once

#include <daifu/export.h>
#include <daifu/surgery.h>
#include <daifu/torch_fwd.h>

#include <string>

/// The patch ABI this daifu speaks. A patch built against another version is refused.
#define DAIFU_PATCH_ABI_VERSION 1

namespace daifu {

/// What a patch sees of the failed step and the session, and what it may change. Everything
/// a surgery may do (knobs, notes, the step's data) goes through repair().
class DAIFU_API PatchContext {
 public:
  explicit PatchContext(RepairContext& repair) noexcept : repair_(repair) {}

  RepairContext& repair() noexcept { return repair_; }
  const Failure& failure() const noexcept { return repair_.failure(); }
  Session& session() noexcept { return repair_.session(); }

  /// A tracked object by the name given to Session::track; nullptr if there is none of that
  /// name and type.
  torch::nn::Module* module(const std::string& name);
  torch::optim::Optimizer* optimizer(const std::string& name);
  at::Tensor* tensor(const std::string& name);

 private:
  RepairContext& repair_;
};

}  // namespace daifu

extern "C" {
/// Exported by every patch (DAIFU_PATCH defines it): the DAIFU_PATCH_ABI_VERSION it was built with.
using daifu_patch_abi_fn = int (*)();
/// The entry point of ABI version 1: returns a daifu::Action as int.
using daifu_patch_v1_fn = int (*)(daifu::PatchContext&);
}

/// Defines a patch's entry points around `daifu::Action function(daifu::PatchContext&)`.
/// Example (in fix_head.cpp, built with daifu_add_patch(fix_head fix_head.cpp)):
///   daifu::Action fix(daifu::PatchContext& ctx) {
///     auto& lr = dynamic_cast<daifu::Knob<double>&>(*ctx.session().find_knob("lr"));
///     lr.set(lr.get() / 10, "patched");
///     return daifu::Action::Retry;
///   }
///   DAIFU_PATCH(fix)
#define DAIFU_PATCH(function)                                                                         \
  extern "C" __attribute__((visibility("default"))) int daifu_patch_abi_version() {                  \
    return DAIFU_PATCH_ABI_VERSION;                                                                   \
  }                                                                                                   \
  extern "C" __attribute__((visibility("default"))) int daifu_patch_v1(daifu::PatchContext& context) { \
    return static_cast<int>(function(context));                                                      \
  }
