#include "surgery/builtin.h"

#include "session/session_impl.h"
#include "surgery/exceptional_data.h"
#include "surgery/tensor_mismatch.h"
#include "surgery/transient_retry.h"

namespace daifu::detail {

void add_builtin_surgeries(SessionImpl& impl) {
  const Options& o = impl.options;
  impl.surgeries.add(std::make_unique<TransientRetry>(o.transient_retries(), o.transient_backoff(), o.max_backoff()));
  impl.surgeries.add(std::make_unique<TensorMismatch>(impl));
  impl.surgeries.add(std::make_unique<ExceptionalData>(impl));
}

}  // namespace daifu::detail
