// The surgeries every Session starts with (docs/surgeries.md).
#pragma once

#include <daifu/surgery.h>

namespace daifu::detail {

class PatchRunner;
class RepairServices;

/// Registers the built-in surgeries in `registry`, with the priorities and bounds of the table
/// in builtin.cpp, configured from session.options(). They keep references to `session` and
/// `patches`, which outlive them.
void add_builtin_surgeries(SurgeryRegistry& registry, RepairServices& session, PatchRunner& patches);

}  // namespace daifu::detail
