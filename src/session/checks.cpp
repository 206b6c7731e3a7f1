#include <daifu/checks.h>
#include <daifu/errors.h>

#include <ATen/ATen.h>

#include <sstream>

namespace daifu {

void check_finite(const at::Tensor& t, const std::string& what) {
  if (!t.defined()) throw Error("daifu: check_finite(\"" + what + "\") got an undefined tensor");
  if (!at::isFloatingType(t.scalar_type()) && !at::isComplexType(t.scalar_type())) return;
  const at::Tensor values = t.detach();
  if (at::isfinite(values).all().item<bool>()) return;
  const int64_t nan = at::isnan(values).sum().item<int64_t>();
  const int64_t inf = at::isinf(values).sum().item<int64_t>();
  std::ostringstream message;
  message << what << " contains non-finite values (" << nan << " NaN, " << inf << " Inf) in a tensor of shape "
          << t.sizes();
  throw Error(message.str());
}

}  // namespace daifu
