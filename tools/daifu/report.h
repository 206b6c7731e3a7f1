// `daifu report -o report.html`: one self-contained HTML file (inline SVG, no scripts, no
// network) with each run's timeline — the loss curve from Session::report metrics, a marker per
// failure coloured by kind (hover for what it was and what was done), rollback windows, the
// numeric knobs over the steps — and the table of repairs.
#pragma once

#include "history_commands.h"

#include <filesystem>

namespace daifu::cli {

int report(const ReadOptions& options, const std::filesystem::path& out);

}  // namespace daifu::cli
