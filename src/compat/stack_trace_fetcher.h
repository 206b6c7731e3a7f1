// The fetcher c10::Error calls for a backtrace at every throw inside LibTorch. LibTorch 1.x
// fetches a symbolized string (~4 ms a throw); 2.x fetches a lazy backtrace, symbolized only
// when what() is read, but still walks the stack. This is the one place that knows which.
#pragma once

#include <c10/util/Backtrace.h>
#include <c10/util/Logging.h>

#include <string>

#if __has_include(<c10/util/Lazy.h>)
#include <c10/util/Lazy.h>
#define DAIFU_LAZY_BACKTRACE 1
#endif

namespace daifu::detail {

/// Makes c10::Error capture no backtrace at all.
inline void set_empty_stack_trace_fetcher() {
#ifdef DAIFU_LAZY_BACKTRACE
  static const c10::Backtrace empty = std::make_shared<c10::PrecomputedLazyValue<std::string>>(std::string());
  c10::SetStackTraceFetcher([]() -> c10::Backtrace { return empty; });
#else
  c10::SetStackTraceFetcher([] { return std::string(); });
#endif
}

/// Puts back the fetcher LibTorch installs by default.
inline void set_default_stack_trace_fetcher() {
#ifdef DAIFU_LAZY_BACKTRACE
  c10::SetStackTraceFetcher([]() -> c10::Backtrace { return c10::get_lazy_backtrace(/*frames_to_skip=*/1); });
#else
  c10::SetStackTraceFetcher([] { return c10::get_backtrace(/*frames_to_skip=*/2); });
#endif
}

}  // namespace daifu::detail
