#include "surgery/builtin.h"

#include "patch/hot_patch_surgery.h"
#include "session/session_impl.h"
#include "surgery/api_misuse.h"
#include "surgery/device_contention.h"
#include "surgery/exceptional_data.h"
#include "surgery/numeric_fault.h"
#include "surgery/out_of_memory.h"
#include "surgery/path_problem.h"
#include "surgery/tensor_mismatch.h"
#include "surgery/transient_retry.h"

#include <filesystem>

namespace daifu::detail {

void add_builtin_surgeries(SessionImpl& impl) {
  const Options& o = impl.options;
  std::vector<std::filesystem::path> roots(o.allowed_roots().begin(), o.allowed_roots().end());
  if (roots.empty()) roots = {std::filesystem::current_path(), impl.workplace};
  impl.surgeries.add(std::make_unique<DeviceContentionSurgery>(impl));
  impl.surgeries.add(std::make_unique<TensorMismatchSurgery>(impl));
  impl.surgeries.add(std::make_unique<PathProblemSurgery>(std::move(roots)));
  impl.surgeries.add(std::make_unique<NumericFaultSurgery>(impl));
  impl.surgeries.add(std::make_unique<ExceptionalDataSurgery>(impl));
  impl.surgeries.add(std::make_unique<OutOfMemorySurgery>(impl));
  impl.surgeries.add(std::make_unique<TransientRetry>(o.transient_retries(), o.transient_backoff(), o.max_backoff()));
  impl.surgeries.add(std::make_unique<HotPatchSurgery>(impl));
  impl.surgeries.add(std::make_unique<ApiMisuseSurgery>());
}

}  // namespace daifu::detail
