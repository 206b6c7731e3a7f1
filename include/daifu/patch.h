// Hot patches: new code for a running training process. A patch is a shared library built
// against this header (CMake: daifu_add_patch(name file.cpp)) that exports a versioned entry
// point. Dropped into <workplace>/patches/, it is loaded when a step fails and no other
// surgery repaired the failure; it repairs it like a surgery (docs/hot-patching.md).
#pragma once

#include <daifu/export.h>
#include <daifu/surgery.h>
#include <daifu/torch_fwd.h>

#include <memory>
#include <string>
#include <typeinfo>

/// The patch ABI this daifu speaks. A patch built against another version is refused.
#define DAIFU_PATCH_ABI_VERSION 1

namespace daifu {

/// What a patch sees of the failed step and the session, and what it may change. Everything
/// a surgery may do (knobs, notes, the step's data) goes through repair().
class DAIFU_API PatchContext {
 public:
  explicit PatchContext(RepairContext& repair) noexcept : repair_(repair) {}
  ~PatchContext();
  PatchContext(const PatchContext&) = delete;
  PatchContext& operator=(const PatchContext&) = delete;

  RepairContext& repair() noexcept { return repair_; }
  const Failure& failure() const noexcept { return repair_.failure(); }
  Session& session() noexcept { return repair_.session(); }

  /// A tracked object by the name given to Session::track; nullptr if there is none of that
  /// name and type.
  torch::nn::Module* module(const std::string& name);
  torch::optim::Optimizer* optimizer(const std::string& name);
  at::Tensor* tensor(const std::string& name);

  /// Replaces the submodule at `path` ("fc2", "features.0", as named_modules() names it) of
  /// the tracked module `model` with `replacement`, in place: the object the program holds
  /// (its ModuleHolder member) takes the replacement's parameters, buffers, submodules and
  /// options, so the program's forward() uses them from the retry on. Every tracked optimizer
  /// that held the old parameters holds the new ones instead (their state entries are
  /// dropped); the change is journaled and a snapshot is taken before the retry.
  /// Throws daifu::Error (nothing changed) if there is no such submodule or it is not an `M`.
  /// Example:  ctx.replace_module("model", "fc2", torch::nn::Linear(128, 10).ptr());
  template <class M>
  void replace_module(const std::string& model, const std::string& path, const std::shared_ptr<M>& replacement) {
    torch::nn::Module* target = begin_replace(model, path, typeid(M), replacement != nullptr);
    *dynamic_cast<M*>(target) = *replacement;  // the type was checked: Module is a virtual base
    end_replace();
  }

  /// Sets the learning rate of every param group of the tracked optimizer `name`; journaled.
  /// Throws daifu::Error if there is no such optimizer or `lr` is not a positive number.
  void set_learning_rate(const std::string& name, double lr);

  /// Registers `fn` as the Session::transform of `name` (e.g. "targets"); journaled.
  void add_transform(const std::string& name, std::function<at::Tensor(const at::Tensor&)> fn);

 private:
  struct Replacement;
  torch::nn::Module* begin_replace(const std::string& model, const std::string& path, const std::type_info& type,
                                   bool have_replacement);
  void end_replace();

  RepairContext& repair_;
  std::shared_ptr<Replacement> replacing_;
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
///     auto& lr = *ctx.session().find_knob<double>("lr");
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
