// daifu: the command-line tool for a workplace: its history (log, show, stats), the live
// control of a session paused by Options::on_unrecovered(Pause), and building hot patches
// (docs/cli.md, docs/hot-patching.md).
#include "control_commands.h"
#include "history_commands.h"
#include "patch_build.h"
#include "report.h"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <iostream>

#include <unistd.h>

int main(int argc, char** argv) {
  using namespace daifu::cli;
  CLI::App app{"daifu: read a training workplace, control a paused session, build hot patches"};
  app.require_subcommand(1);
  app.fallthrough();  // -w and --wait also after the subcommand
  ControlOptions control;
  const char* env = std::getenv("DAIFU_WORKPLACE");
  std::string workplace = env != nullptr ? env : "daifu_workplace";
  app.add_option("-w,--workplace", workplace, "the session's workplace folder ($DAIFU_WORKPLACE)")
      ->capture_default_str();
  app.add_option("--wait", control.wait_s, "seconds to wait for the session's answer")->capture_default_str();

  bool json = false, no_color = false;
  app.add_flag("--json", json, "machine-readable output (log, show, stats)");
  app.add_flag("--no-color", no_color, "no ANSI colours (also: $NO_COLOR, or not a terminal)");
  auto* log_cmd = app.add_subcommand("log", "a table of every failure and what became of it");
  int number = 0;
  auto* show_cmd = app.add_subcommand("show", "one failure in full, with its throw-site stack");
  show_cmd->add_option("number", number, "the failure's number (failures/NNNN.json)")->required();
  auto* stats_cmd = app.add_subcommand("stats", "counts per kind and surgery, time lost and saved");
  std::string report_out = "report.html";
  auto* report_cmd = app.add_subcommand("report", "a self-contained HTML report: timelines and repairs");
  report_cmd->add_option("-o,--output", report_out, "the HTML file to write")->capture_default_str();
  bool dry_run = false;
  auto* replay_cmd = app.add_subcommand("replay", "what a rerun with replay would re-apply");
  replay_cmd->add_flag("--dry-run", dry_run, "list the items and their checks (the only mode: replay runs in the program)");

  auto* status_cmd = app.add_subcommand("status", "is a session paused here, on what, and how to go on");

  std::string patch;
  auto* apply_cmd = app.add_subcommand("apply", "install a patch into patches/ and run it in the paused session");
  apply_cmd->add_option("patch", patch, "the patch library (.so)")->required();

  std::vector<std::string> assignments;
  auto* set_cmd = app.add_subcommand("set", "set knobs of the paused session and retry the step");
  set_cmd->add_option("assignments", assignments, "NAME=VALUE (VALUE is JSON if it parses, else a string)")
      ->required();

  auto* retry_cmd = app.add_subcommand("retry", "retry the failed step as it is");
  auto* skip_cmd = app.add_subcommand("skip", "skip the failed step's data and go on");
  std::string reason;
  auto* abort_cmd = app.add_subcommand("abort", "give up: the session rethrows the failure");
  abort_cmd->add_option("--reason", reason, "why, for the journal");

  PatchBuildOptions build;
  std::string source, output, daifu_dir;
  auto* patch_cmd = app.add_subcommand("patch", "hot patches");
  patch_cmd->require_subcommand(1);
  auto* build_cmd = patch_cmd->add_subcommand("build", "build a patch against this daifu and libtorch");
  build_cmd->add_option("source", source, "the patch's C++ file (defines DAIFU_PATCH(fn))")->required();
  build_cmd->add_option("-o,--output", output, "the library to write (default ./<name>.so)");
  build_cmd->add_option("--daifu-dir", daifu_dir, "folder of daifuConfig.cmake (default: next to this tool)");
  build_cmd->add_option("--build-type", build.build_type, "CMAKE_BUILD_TYPE")->capture_default_str();
  build_cmd->add_flag("-v,--verbose", build.verbose, "print the build's output");

  CLI11_PARSE(app, argc, argv);
  control.workplace = workplace;
  ReadOptions read{workplace, json, !no_color && std::getenv("NO_COLOR") == nullptr && ::isatty(1) == 1};

  if (log_cmd->parsed()) return daifu::cli::log(read);
  if (show_cmd->parsed()) return daifu::cli::show(read, number);
  if (stats_cmd->parsed()) return daifu::cli::stats(read);
  if (report_cmd->parsed()) return daifu::cli::report(read, report_out);
  if (replay_cmd->parsed()) {
    if (!dry_run) {
      std::cerr << "daifu: replay happens in the training program (Options().replay(true) or DAIFU_REPLAY=1); "
                   "daifu replay --dry-run shows what it would re-apply\n";
      return kError;
    }
    return daifu::cli::replay_dry_run(read);
  }

  if (status_cmd->parsed()) return daifu::cli::status(control);
  if (apply_cmd->parsed()) return daifu::cli::apply(control, patch);
  if (set_cmd->parsed()) {
    std::map<std::string, std::string> knobs;
    for (const auto& a : assignments) {
      const auto eq = a.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::cerr << "daifu: \"" << a << "\" is not NAME=VALUE\n";
        return kError;
      }
      knobs[a.substr(0, eq)] = a.substr(eq + 1);
    }
    return daifu::cli::set(control, knobs);
  }
  if (retry_cmd->parsed()) return simple(control, "retry", "");
  if (skip_cmd->parsed()) return simple(control, "skip", "");
  if (abort_cmd->parsed()) return simple(control, "abort", reason);
  if (build_cmd->parsed()) {
    build.source = source;
    build.output = output;
    build.daifu_dir = daifu_dir;
    return patch_build(build, argv[0]);
  }
  return kError;
}
