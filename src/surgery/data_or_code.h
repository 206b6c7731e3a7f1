// Built-in surgery "data_or_code": the data-or-code test for a data-dependent failure
// (tensor_mismatch, exceptional_data, numeric_fault) that the surgeries before it left
// unrepaired. It takes the batch for bad data and drops it: a step that memoized its batch
// (Step::once, DAIFU_GUARD_EACH) is skipped; a step that memoized nothing is retried once,
// on its first attempt only, so a stream yields its next batch (a step already retried has
// pulled other batches). If the next batch then fails the same way (same kind, exception type
// and classifier rule, in the same loop), it is the code, not the data: the surgery declines
// and the step escalates as it would without it; later failures of that signature there are
// declined at once. Bounded by Options::max_dropped_batches per run.
#pragma once

#include <daifu/surgery.h>

#include <optional>
#include <set>
#include <string>

namespace daifu::detail {

class RepairServices;

class DataOrCodeSurgery final : public Surgery {
 public:
  DataOrCodeSurgery(SurgeryLimits limits, RepairServices& session);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;

 private:
  struct Dropped {
    std::string where;
    int64_t step;
    std::string signature;
  };
  RepairServices& session_;
  std::optional<Dropped> last_;  // the batch this surgery dropped last
  std::set<std::string> code_;   // "where signature" of failures found to be the code's
  int64_t dropped_ = 0;
};

}  // namespace daifu::detail
