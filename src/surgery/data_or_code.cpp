#include "surgery/data_or_code.h"

#include <daifu/step.h>

#include "journal/journal.h"
#include "repair/repair_services.h"
#include "repair/step_access.h"

namespace daifu::detail {

DataOrCodeSurgery::DataOrCodeSurgery(SurgeryLimits limits, RepairServices& session)
    : Surgery("data_or_code", limits), session_(session) {}

bool DataOrCodeSurgery::matches(const Failure& failure) const {
  return failure.kind == FailureKind::TensorMismatch || failure.kind == FailureKind::ExceptionalData ||
         failure.kind == FailureKind::NumericFault;
}

Action DataOrCodeSurgery::operate(RepairContext& context) {
  const Failure& f = context.failure();
  const std::string signature = std::string(to_string(f.kind)) + " " + f.exception_type +
                                (f.matched_by.empty() ? "" : " (" + f.matched_by + ")");
  const std::string step = std::to_string(f.step);
  const std::string where_signature = f.where + " " + signature;
  if (code_.count(where_signature) > 0) {
    context.explain("failures of this kind here were found to be the code's (" + signature + "), not the data's");
    return Action::Decline;
  }
  // A retry of the same step (a stream's next batch) or the step after a skipped one.
  if (last_ && last_->where == f.where && last_->signature == signature &&
      (f.step == last_->step || f.step == last_->step + 1)) {
    context.explain("the next batch failed the same way (" + signature + ") after batch " +
                    std::to_string(last_->step) + " was dropped: the code, not the data");
    code_.insert(where_signature);
    last_.reset();
    return Action::Decline;
  }
  const bool memoized = !StepAccess::memos(context.step()).empty();
  if (!memoized && f.attempt > 0) {  // its earlier attempts pulled other batches already
    context.explain("the step memoized no batch and failed " + std::to_string(f.attempt + 1) +
                    " times (a stream would have yielded other batches meanwhile): taken for the code, not the data");
    return Action::Decline;
  }
  const int64_t most = session_.options().max_dropped_batches();
  if (dropped_ >= most) {
    context.explain("already dropped " + std::to_string(dropped_) + " batches as data (Options::max_dropped_batches(" +
                    std::to_string(most) + "))");
    return Action::Decline;
  }
  last_ = Dropped{f.where, f.step, signature};
  ++dropped_;
  session_.count_dropped_batch();
  context.note("dropped_batches", std::to_string(dropped_ - 1), std::to_string(dropped_));
  session_.journal().record("Dropped batch " + step + " as data (" + signature + ")");
  if (memoized) {
    context.explain("dropped batch " + step + " as data: the step is skipped (" + signature +
                    "; if the next batch fails the same way, it is the code)");
    return Action::Skip;
  }
  context.explain("dropped batch " + step + " as data: the step memoized no batch, so it is retried on the next one (" +
                  signature + "; if that fails the same way, it is the code)");
  return Action::Retry;
}

}  // namespace daifu::detail
