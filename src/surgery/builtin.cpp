#include "surgery/builtin.h"

#include "session/session_impl.h"
#include "surgery/out_of_memory.h"
#include "surgery/transient_retry.h"

namespace daifu::detail {

void add_builtin_surgeries(SessionImpl& impl) {
  const Options& o = impl.options;
  impl.surgeries.add(std::make_unique<OutOfMemorySurgery>(impl));
  impl.surgeries.add(std::make_unique<TransientRetry>(o.transient_retries(), o.transient_backoff(), o.max_backoff()));
}

}  // namespace daifu::detail
