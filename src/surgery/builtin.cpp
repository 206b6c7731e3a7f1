#include "surgery/builtin.h"

#include "patch/hot_patch_surgery.h"
#include "repair/repair_services.h"
#include "surgery/api_misuse.h"
#include "surgery/data_or_code.h"
#include "surgery/device_contention.h"
#include "surgery/exceptional_data.h"
#include "surgery/numeric_fault.h"
#include "surgery/out_of_memory.h"
#include "surgery/path_problem.h"
#include "surgery/tensor_mismatch.h"
#include "surgery/transient_retry.h"

#include <filesystem>

namespace daifu::detail {

void add_builtin_surgeries(SurgeryRegistry& registry, RepairServices& session, PatchRunner& patches) {
  const Options& o = session.options();
  std::vector<std::filesystem::path> roots(o.allowed_roots().begin(), o.allowed_roots().end());
  if (roots.empty()) roots = {std::filesystem::current_path(), session.workplace()};
  constexpr int64_t kUnbounded = 1'000'000;
  // The order the built-ins are asked in (lower priority first) and their bounds. User
  // surgeries default to 100, so they come first. Why this order: docs/surgeries.md.
  //                       priority   per step                    per run
  const SurgeryLimits device_contention{120, o.contention_waits() + 1, kUnbounded};  // the waits, then one move
  const SurgeryLimits tensor_mismatch{140, 4, kUnbounded};
  const SurgeryLimits numeric_fault{145, 3, kUnbounded};        // re-executes before exceptional_data judges
  const SurgeryLimits path_problem{150, 2, 1000};
  const SurgeryLimits exceptional_data{150, 2, kUnbounded};
  const SurgeryLimits out_of_memory{150, 8, 100};               // 8 halvings: a 256-fold shrink
  const SurgeryLimits transient_retry{190, o.transient_retries(), kUnbounded};
  const SurgeryLimits hot_patch{198, 3, 1000};                  // after the repairs, before api_misuse
  const SurgeryLimits api_misuse{199, 1, kUnbounded};           // escalates: a patch is how misuse gets fixed
  const SurgeryLimits data_or_code{199, 2, kUnbounded};         // last: drops a batch (Options::max_dropped_batches)

  registry.add(std::make_unique<DeviceContentionSurgery>(device_contention, session));
  registry.add(std::make_unique<TensorMismatchSurgery>(tensor_mismatch, session));
  registry.add(std::make_unique<PathProblemSurgery>(path_problem, std::move(roots)));
  registry.add(std::make_unique<NumericFaultSurgery>(numeric_fault, session));
  registry.add(std::make_unique<ExceptionalDataSurgery>(exceptional_data, session));
  registry.add(std::make_unique<OutOfMemorySurgery>(out_of_memory, session));
  registry.add(std::make_unique<TransientRetry>(transient_retry, o.transient_backoff(), o.max_backoff()));
  registry.add(std::make_unique<HotPatchSurgery>(hot_patch, patches));
  registry.add(std::make_unique<ApiMisuseSurgery>(api_misuse));
  registry.add(std::make_unique<DataOrCodeSurgery>(data_or_code, session));
}

}  // namespace daifu::detail
