// Checks a training step can make so that bad values fail loudly, in a form daifu repairs.
#pragma once

#include <daifu/export.h>
#include <daifu/torch_fwd.h>

#include <string>

namespace daifu {

/// Throws daifu::Error "<what> contains non-finite values (N NaN, M Inf) in a tensor of shape
/// [...]" when `t` holds a NaN or an infinity; the classifier maps it to
/// FailureKind::ExceptionalData, which the built-in exceptional_data surgery repairs (skips the
/// batch, or scrubs it: docs/surgeries.md#exceptional_data). Integer and bool tensors always
/// pass. Throws daifu::Error if `t` is undefined. Costs one pass over `t`.
/// Example:
///   auto loss = torch::nll_loss(model->forward(x), y);
///   daifu::check_finite(loss, "loss");   // before backward(): the weights stay clean
DAIFU_API void check_finite(const at::Tensor& t, const std::string& what);

}  // namespace daifu
