// Session::transform: named tensor hooks a hot patch can fill in (a no-op until then).
#include <daifu/session.h>

#include "journal/events.h"
#include "session/session_impl.h"

#include <ATen/core/Tensor.h>

namespace daifu {

at::Tensor Session::transform(const std::string& name, const at::Tensor& tensor) {
  auto it = impl_->transforms.find(name);
  if (it == impl_->transforms.end()) return tensor;
  return it->second.fn(tensor);
}

void Session::add_transform(const std::string& name, std::function<at::Tensor(const at::Tensor&)> fn) {
  if (!fn) throw Error("daifu: Session::add_transform(\"" + name + "\") got an empty function");
  const bool replaced = impl_->transforms.count(name) > 0;
  impl_->transforms[name] = detail::SessionImpl::Transform{std::move(fn)};
  impl_->journal.write({{"event", detail::event::transform},
                        {"step", impl_->current_step >= 0 ? impl_->current_step : impl_->global_step},
                        {"name", name},
                        {"replaced", replaced}});
  impl_->journal.record("Transform \"" + name + "\" " + (replaced ? "replaced" : "registered"));
  if (impl_->active_repair != nullptr) impl_->active_repair->note("transform." + name, "null", "\"registered\"");
}

}  // namespace daifu
