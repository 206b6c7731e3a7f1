#include "session/session_impl.h"

namespace daifu::detail {

const Options& SessionServices::options() const noexcept { return impl_.options; }
const std::filesystem::path& SessionServices::workplace() const noexcept { return impl_.workplace; }
TrackedState& SessionServices::state() noexcept { return impl_.state; }
Journal& SessionServices::journal() noexcept { return impl_.journal; }
int64_t SessionServices::global_step() const noexcept { return impl_.global_step; }

void SessionServices::keep_changes(bool retake_step_snapshot) {
  if (retake_step_snapshot) {
    impl_.snapshot.capture(impl_.state, impl_.snapshot.step(), impl_.snapshot.global_step());
    impl_.values.capture();
  }
  impl_.snapshot_requested = true;
}

void SessionServices::count_scrubbed_batch() noexcept { ++impl_.stats.scrubbed_batches; }
void SessionServices::count_dropped_batch() noexcept { ++impl_.stats.dropped_batches; }

KnobBase* SessionServices::find_knob(const std::string& name) noexcept {
  auto it = impl_.knobs.find(name);
  return it == impl_.knobs.end() ? nullptr : it->second.get();
}

void SessionServices::collect_knob_changes(RepairContext* context) noexcept { impl_.active_repair = context; }

RepairServices& services(RepairContext& context) noexcept { return SessionAccess::impl(context.session()).services; }

}  // namespace daifu::detail
