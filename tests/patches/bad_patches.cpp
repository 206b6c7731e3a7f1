// Patches that must be refused or reported, one per BAD_PATCH value (see tests/CMakeLists.txt).
#include <daifu/patch.h>

#include <stdexcept>

#if BAD_PATCH == 5
#include <torch/nn/module.h>
#include <torch/csrc/autograd/grad_mode.h>
#endif

#if BAD_PATCH == 1  // built for another patch ABI
extern "C" __attribute__((visibility("default"))) int daifu_patch_abi_version() { return 2; }
extern "C" __attribute__((visibility("default"))) int daifu_patch_v1(daifu::PatchContext&) { return 0; }
#elif BAD_PATCH == 2  // no entry point at all
extern "C" __attribute__((visibility("default"))) int not_a_patch() { return 0; }
#elif BAD_PATCH == 3  // throws
namespace {
daifu::Action throws(daifu::PatchContext&) { throw std::runtime_error("patch bug: index 3 out of range"); }
}  // namespace
DAIFU_PATCH(throws)
#elif BAD_PATCH == 4  // returns garbage
extern "C" __attribute__((visibility("default"))) int daifu_patch_abi_version() { return DAIFU_PATCH_ABI_VERSION; }
extern "C" __attribute__((visibility("default"))) int daifu_patch_v1(daifu::PatchContext&) { return 42; }
#elif BAD_PATCH == 5  // changes the tracked model, then throws
namespace {
daifu::Action damages(daifu::PatchContext& context) {
  torch::nn::Module* model = context.module("model");
  if (model == nullptr) return daifu::Action::Decline;
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.zero_();
  throw std::runtime_error("half-done");
}
}  // namespace
DAIFU_PATCH(damages)
#endif
