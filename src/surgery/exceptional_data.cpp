#include "surgery/exceptional_data.h"

#include <daifu/session.h>
#include <daifu/step.h>

#include "core/tensor_description.h"
#include "repair/repair_services.h"
#include "surgery/batch_tensors.h"
#include "surgery/non_finite.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <nlohmann/json.hpp>

namespace daifu::detail {
namespace {

struct Scrubbed {
  BatchTensor target;
  at::Tensor replacement;
  int64_t nan = 0, inf = 0;
};

}  // namespace

ExceptionalDataSurgery::ExceptionalDataSurgery(SurgeryLimits limits, RepairServices& session)
    : Surgery("exceptional_data", limits), session_(session) {
  names_non_finite("");  // compiles its regex now, not at the first failure
}

bool ExceptionalDataSurgery::matches(const Failure& failure) const {
  return failure.kind == FailureKind::ExceptionalData || from_detector(failure) || program_found_non_finite(failure);
}

Action ExceptionalDataSurgery::operate(RepairContext& context) {
  std::string policy = "skip";
  if (detail::KnobBase* knob = session_.find_knob("data_policy")) {
    auto* text = dynamic_cast<Knob<std::string>*>(knob);
    if (text == nullptr) {
      context.explain(std::string("the knob \"data_policy\" is ") + knob->type_name() +
                      "; it must be a string knob, \"skip\" or \"scrub\"");
      return Action::Escalate;
    }
    policy = text->get();
  }
  if (policy == "skip") return skip(context, "data_policy is \"skip\"");
  if (policy == "scrub") return scrub(context);
  context.explain("the knob \"data_policy\" is \"" + policy + "\"; it must be \"skip\" or \"scrub\"");
  return Action::Escalate;
}

Action ExceptionalDataSurgery::skip(RepairContext& context, const std::string& why) {
  ++skipped_;
  context.note("skipped_batches", std::to_string(skipped_ - 1), std::to_string(skipped_));
  context.explain(why + ": the batch of step " + std::to_string(context.step().index()) + " is skipped");
  return Action::Skip;
}

Action ExceptionalDataSurgery::scrub(RepairContext& context) {
  c10::NoGradGuard no_grad;
  const auto dtype = model_dtype(session_.state());
  const auto batch = batch_tensors(context.step());
  std::vector<Scrubbed> plan;
  int64_t values = 0;
  for (const BatchTensor& b : batch) {
    const at::Tensor t = b.tensor->detach();
    if (!at::isFloatingType(t.scalar_type())) continue;
    Scrubbed s{b, t, 0, 0};
    const at::Tensor finite = at::isfinite(t);
    if (!finite.all().item<bool>()) {
      s.nan = at::isnan(t).sum().item<int64_t>();
      s.inf = at::isinf(t).sum().item<int64_t>();
      const at::Tensor kept = t.masked_select(finite);
      const double high = kept.numel() > 0 ? kept.max().item<double>() : 0.0;
      const double low = kept.numel() > 0 ? kept.min().item<double>() : 0.0;
      s.replacement = at::nan_to_num(t, 0.0, high, low);
      values += s.nan + s.inf;
    }
    if (b.role == BatchRole::Input && dtype && t.scalar_type() != *dtype) s.replacement = s.replacement.to(*dtype);
    if (s.nan + s.inf > 0 || s.replacement.scalar_type() != t.scalar_type()) plan.push_back(std::move(s));
  }
  if (values == 0) {
    return skip(context, batch.empty() ? "data_policy is \"scrub\" but the step memoized no batch with Step::once"
                                       : "data_policy is \"scrub\" but the memoized batch is finite (the non-finite "
                                         "value arose in the computation, e.g. the loss)");
  }
  for (Scrubbed& s : plan) {
    auto before = tensor_description(*s.target.tensor);
    before["nan"] = s.nan;
    before["inf"] = s.inf;
    auto after = tensor_description(s.replacement);
    after["scrubbed"] = s.nan + s.inf;
    context.note(s.target.name, before.dump(), after.dump());
    *s.target.tensor = s.replacement;
  }
  session_.count_scrubbed_batch();
  context.explain("data_policy is \"scrub\": " + std::to_string(values) + " non-finite values in the batch of step " +
                  std::to_string(context.step().index()) +
                  " replaced (NaN by 0, +-Inf by the tensor's largest/smallest finite value)");
  return Action::Retry;
}

}  // namespace daifu::detail
