// The surgeries every Session starts with (docs/surgeries.md).
#pragma once

#include <daifu/surgery.h>

namespace daifu::detail {

class SessionImpl;

/// Registers the built-in surgeries, configured from impl.options. They keep a reference to
/// `impl` (tracked state, knobs, journal), which outlives them.
void add_builtin_surgeries(SessionImpl& impl);

}  // namespace daifu::detail
