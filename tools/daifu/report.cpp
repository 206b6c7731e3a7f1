#include "report.h"

#include <daifu/errors.h>

#include "core/durable_file.h"
#include "journal/events.h"
#include "replay/history.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

namespace daifu::cli {
namespace fs = std::filesystem;
using detail::History;
using detail::IncidentRecord;
using detail::json_text;
namespace event = detail::event;

namespace {

constexpr int kWidth = 960, kPlotHeight = 260, kKnobHeight = 90, kLeft = 60, kRight = 20, kTop = 20;

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

const char* color_of(const std::string& kind) {
  static const std::map<std::string, const char*> colors = {
      {"api_misuse", "#d62728"},        {"tensor_mismatch", "#9467bd"}, {"out_of_memory", "#ff7f0e"},
      {"device_contention", "#8c564b"}, {"path_problem", "#2ca02c"},    {"exceptional_data", "#e377c2"},
      {"transient_runtime", "#17becf"}, {"numeric_fault", "#bcbd22"},   {"fatal", "#000000"}};
  auto it = colors.find(kind);
  return it == colors.end() ? "#7f7f7f" : it->second;
}

std::string fmt(double v) {
  std::ostringstream out;
  out.precision(4);
  out << v;
  return out.str();
}

// A reported metric over the steps, drawn on its own scale.
struct Curve {
  std::string name;
  std::vector<std::pair<int64_t, double>> points;
  double lo = 0, hi = 1;
};

// One run's timeline: every metric's curve (each on its own scale, "loss" first), failure
// markers, rollback windows, where later guard loops begin, numeric knobs.
std::string timeline(const History& h, const std::string& run) {
  std::vector<Curve> curves;
  for (const auto& m : h.metrics) {
    if (m.run != run) continue;
    auto it = std::find_if(curves.begin(), curves.end(), [&](const Curve& c) { return c.name == m.name; });
    if (it == curves.end()) it = curves.insert(m.name == "loss" ? curves.begin() : curves.end(), Curve{m.name, {}});
    it->points.emplace_back(m.step, m.value);
  }
  for (Curve& c : curves) {
    bool first = true;
    for (const auto& [s, v] : c.points) {
      if (!std::isfinite(v)) continue;
      c.lo = first ? v : std::min(c.lo, v);
      c.hi = first ? v : std::max(c.hi, v);
      first = false;
    }
    if (c.hi - c.lo < 1e-12) c.hi = c.lo + 1;
  }
  std::vector<const IncidentRecord*> incidents;
  for (const auto& i : h.incidents) {
    if (i.run == run) incidents.push_back(&i);
  }
  std::map<std::string, std::vector<std::pair<int64_t, double>>> knobs;  // numeric knobs over steps
  for (const auto& k : h.knob_changes) {
    if (k.run != run || !k.after.is_number() || !k.before.is_number()) continue;
    auto& series = knobs[k.name];
    if (series.empty()) series.emplace_back(0, k.before.get<double>());
    series.emplace_back(k.step, k.after.get<double>());
  }
  int64_t max_step = 1;
  for (const Curve& c : curves) {
    for (const auto& [s, v] : c.points) max_step = std::max(max_step, s);
  }
  for (const auto* i : incidents) max_step = std::max(max_step, i->step);
  const int plot_w = kWidth - kLeft - kRight;
  const int height = kTop + kPlotHeight + 30 + static_cast<int>(knobs.size()) * (kKnobHeight + 20);
  auto x = [&](double step) { return kLeft + plot_w * step / static_cast<double>(max_step); };
  auto y = [&](const Curve& c, double v) { return kTop + kPlotHeight * (1 - (v - c.lo) / (c.hi - c.lo)); };

  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << kWidth << "' height='" << height << "' viewBox='0 0 "
      << kWidth << " " << height << "'>\n"
      << "<rect x='" << kLeft << "' y='" << kTop << "' width='" << plot_w << "' height='" << kPlotHeight
      << "' fill='#fafafa' stroke='#ccc'/>\n";
  // Rollback windows: the steps re-run for a failure.
  for (const auto* i : incidents) {
    if (i->rerun_steps <= 0) continue;
    svg << "<rect x='" << x(static_cast<double>(i->step - i->rerun_steps)) << "' y='" << kTop << "' width='"
        << std::max(1.0, x(static_cast<double>(i->step)) - x(static_cast<double>(i->step - i->rerun_steps)))
        << "' height='" << kPlotHeight << "' fill='#ffd8a8' opacity='0.6'><title>rollback: steps "
        << i->step - i->rerun_steps << "-" << i->step << " re-run</title></rect>\n";
  }
  // Where a later guard loop (the next epoch's DAIFU_GUARD_EACH) begins.
  for (const auto& j : h.lines) {
    if (json_text(j, "event") != event::loop_start || json_text(j, "run") != run) continue;
    const int64_t step = detail::json_integer(j, "step", -1);
    if (step <= 0 || step > max_step) continue;
    const double px = x(static_cast<double>(step));
    svg << "<line x1='" << px << "' x2='" << px << "' y1='" << kTop << "' y2='" << kTop + kPlotHeight
        << "' stroke='#999' stroke-dasharray='2 3'><title>loop " << detail::json_integer(j, "loop", -1) << " ("
        << escape(json_text(j, "where")) << ") starts at step " << step << "</title></line>\n";
  }
  static const char* const kCurveColors[] = {"#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  for (std::size_t k = 0; k < curves.size(); ++k) {
    const Curve& c = curves[k];
    svg << "<polyline fill='none' stroke='" << kCurveColors[k % std::size(kCurveColors)]
        << "' stroke-width='1.5' points='";
    for (const auto& [s, v] : c.points) {
      if (std::isfinite(v)) svg << fmt(x(static_cast<double>(s))) << "," << fmt(y(c, v)) << " ";
    }
    svg << "'><title>" << escape(c.name) << "</title></polyline>\n";
  }
  for (const auto* i : incidents) {
    const double px = x(static_cast<double>(i->step));
    svg << "<g><title>step " << i->step << " attempt " << i->attempt << ": " << escape(i->kind) << ", "
        << escape(i->exception_type) << ": " << escape(i->message.substr(0, 160)) << " -> "
        << escape(i->surgery.empty() ? "-" : i->surgery) << " (" << escape(i->outcome.empty() ? "-" : i->outcome)
        << ")</title><line x1='" << px << "' x2='" << px << "' y1='" << kTop << "' y2='" << kTop + kPlotHeight
        << "' stroke='" << color_of(i->kind) << "' stroke-width='2'"
        << (i->outcome == "unrecovered" ? " stroke-dasharray='4 3'" : "") << "/><circle cx='" << px << "' cy='"
        << kTop + 6 << "' r='5' fill='" << color_of(i->kind) << "'/></g>\n";
  }
  // Axes labels; the left axis is the first curve's, the others say their range in their label.
  if (!curves.empty()) {
    svg << "<text x='4' y='" << kTop + 10 << "' font-size='11'>" << fmt(curves[0].hi) << "</text>"
        << "<text x='4' y='" << kTop + kPlotHeight << "' font-size='11'>" << fmt(curves[0].lo) << "</text>";
  }
  svg << "<text x='" << kLeft << "' y='" << kTop + kPlotHeight + 16 << "' font-size='11'>step 0</text>"
      << "<text x='" << kWidth - kRight - 60 << "' y='" << kTop + kPlotHeight + 16 << "' font-size='11'>step "
      << max_step << "</text>";
  if (curves.empty()) {
    svg << "<text x='" << kLeft + 8 << "' y='" << kTop + 28 << "' font-size='12'>no metrics reported</text>";
  }
  for (std::size_t k = 0; k < curves.size(); ++k) {
    const Curve& c = curves[k];
    svg << "<text x='" << kLeft + 8 << "' y='" << kTop + 28 + 16 * static_cast<int>(k) << "' font-size='12' fill='"
        << kCurveColors[k % std::size(kCurveColors)] << "'>" << escape(c.name)
        << (k == 0 ? std::string() : " [" + fmt(c.lo) + ", " + fmt(c.hi) + "]") << "</text>";
  }
  svg << "\n";
  int top = kTop + kPlotHeight + 30;
  for (const auto& [name, series] : knobs) {
    double klo = series[0].second, khi = series[0].second;
    for (const auto& [s, v] : series) klo = std::min(klo, v), khi = std::max(khi, v);
    if (khi - klo < 1e-12) khi = klo + 1;
    auto ky = [&](double v) { return top + kKnobHeight * (1 - (v - klo) / (khi - klo)) * 0.8 + 8; };
    svg << "<rect x='" << kLeft << "' y='" << top << "' width='" << plot_w << "' height='" << kKnobHeight
        << "' fill='#fafafa' stroke='#ccc'/><text x='" << kWidth - kRight - 140 << "' y='" << top + 14
        << "' font-size='12' fill='#2ca02c'>knob " << escape(name) << "</text>\n<polyline fill='none' stroke='#2ca02c' "
        << "stroke-width='2' points='";
    double last = series[0].second;
    for (const auto& [s, v] : series) {
      svg << fmt(x(static_cast<double>(s))) << "," << fmt(ky(last)) << " " << fmt(x(static_cast<double>(s))) << ","
          << fmt(ky(v)) << " ";
      last = v;
    }
    svg << fmt(x(static_cast<double>(max_step))) << "," << fmt(ky(last)) << "'/>\n";
    for (const auto& [s, v] : series) {
      svg << "<text x='" << x(static_cast<double>(s)) + 3 << "' y='" << ky(v) - 3 << "' font-size='11'>" << fmt(v)
          << "</text>";
    }
    svg << "\n";
    top += kKnobHeight + 20;
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace

int report(const ReadOptions& options, const fs::path& out) {
  History h;
  try {
    h = detail::read_history(options.workplace);
  } catch (const Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  std::ostringstream html;
  html << "<!doctype html>\n<html><head><meta charset='utf-8'><title>daifu report: "
       << escape(options.workplace.string()) << "</title>\n<style>body{font-family:sans-serif;margin:24px;color:#222}"
       << "table{border-collapse:collapse;font-size:13px;max-width:" << kWidth << "px}td,th{border:1px solid #ddd;"
       << "padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:break-word}th{background:#f0f0f0}.k{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}"
       << "</style></head><body>\n<h1>daifu report</h1>\n<p>Workplace <code>" << escape(options.workplace.string())
       << "</code>: " << h.runs.size() << " run(s), " << h.incidents.size() << " failure(s)";
  if (h.skipped_lines > 0) html << ", " << h.skipped_lines << " journal line(s) skipped";
  html << ".</p>\n<p>";
  std::set<std::string> kinds;
  for (const auto& i : h.incidents) kinds.insert(i.kind);
  for (const auto& k : kinds) html << "<span class='k' style='background:" << color_of(k) << "'></span>" << escape(k);
  html << (kinds.empty() ? "" : "<span class='k' style='background:#ffd8a8'></span>rollback window") << "</p>\n";
  for (const auto& r : h.runs) {
    html << "<h2>Run " << escape(r.id) << "</h2>\n<p>pid " << r.pid << ", " << r.committed_steps
         << " steps committed, " << r.failures << " failure(s), status " << escape(r.status.empty() ? "(no end)" : r.status)
         << "</p>\n"
         << timeline(h, r.id);
  }
  html << "<h2>Repairs</h2>\n<table><tr><th>run</th><th>step</th><th>kind</th><th>exception</th><th>message</th>"
       << "<th>surgery</th><th>outcome</th><th>changes</th><th>recovery</th></tr>\n";
  for (const auto& i : h.incidents) {
    std::string changes;
    for (const auto& [what, c] : i.changes.items()) {
      changes += escape(what) + ": " +
                 escape(c.is_array() && c.size() == 2 ? c[0].dump() + " → " + c[1].dump() : c.dump()).substr(0, 200) + "<br>";
    }
    std::ostringstream recovery;
    if (i.paused_s > 0) {
      recovery << fmt(i.paused_s) << " s paused";
    } else if (i.recovery_us >= 0) {
      recovery << fmt(i.recovery_us / 1000) << " ms";
    }
    html << "<tr><td>" << escape(i.run.substr(i.run.size() > 4 ? i.run.size() - 4 : 0)) << "</td><td>" << i.step
         << "</td><td><span class='k' style='background:" << color_of(i.kind) << "'></span>" << escape(i.kind)
         << "</td><td>" << escape(i.exception_type) << "</td><td>" << escape(i.message.substr(0, 120))
         << "</td><td>" << escape(i.surgery) << "</td><td>" << escape(i.outcome) << "</td><td>" << changes
         << "</td><td>" << recovery.str() << "</td></tr>\n";
  }
  html << "</table>\n</body></html>\n";
  try {
    detail::write_file_atomically(out, html.str());  // a link named like `out` is replaced, not followed
  } catch (const std::exception& e) {
    std::cerr << "daifu: " << e.what() << "\n";
    return 1;
  }
  std::cout << "daifu: wrote " << out.string() << " (" << html.str().size() << " bytes, " << h.incidents.size()
            << " failure(s), " << h.runs.size() << " run(s))\n";
  return 0;
}

}  // namespace daifu::cli
