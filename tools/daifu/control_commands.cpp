#include "control_commands.h"

#include <daifu/errors.h>
#include <daifu/journal.h>

#include "control/control_channel.h"
#include "core/json_input.h"
#include "journal/events.h"
#include "patch/patch_library.h"
#include "patch/sha256.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <iostream>
#include <optional>
#include <thread>

#include <sys/stat.h>
#include <unistd.h>

namespace daifu::cli {
namespace fs = std::filesystem;
using detail::read_paused;

namespace {

// The paused state of a live session, or nullopt (with a message on stderr).
std::optional<nlohmann::json> live_pause(const fs::path& workplace, bool quiet = false) {
  std::string why;
  auto paused = read_paused(workplace, &why);
  if (!paused) {
    if (!quiet) {
      std::cerr << "daifu: no session is paused in " << workplace.string();
      if (!why.empty() && fs::exists(fs::symlink_status(workplace / detail::kPausedFile))) {
        std::cerr << " (" << (workplace / detail::kPausedFile).string() << " is not a daifu pause: " << why << ")";
      }
      std::cerr << "\n";
    }
    return std::nullopt;
  }
  const int64_t pid = paused->value("pid", int64_t{0});
  if (!detail::process_alive(pid)) {
    if (!quiet) {
      std::cerr << "daifu: " << (workplace / detail::kPausedFile).string() << " names pid " << pid
                << ", which is no longer running; nothing is paused\n";
    }
    return std::nullopt;
  }
  return paused;
}

// Waits for the session's "command" journal line of `id`; its "result", or nullopt.
std::optional<std::string> await_result(const fs::path& workplace, const std::string& id, double wait_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_s);
  const std::string journal = (workplace / detail::kJournalFile).string();
  int64_t seen = 0;
  for (;;) {
    try {
      const auto contents = read_journal(journal);
      for (const auto& line : contents.lines) {
        if (line.line_number <= seen || line.event != detail::event::command) continue;
        const auto json = nlohmann::json::parse(line.json);
        if (json.value("id", std::string()) == id) return json.value("result", std::string("ok"));
      }
      if (!contents.lines.empty()) seen = contents.lines.back().line_number;
    } catch (const std::exception&) {
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Sends `verb` to the paused session and reports its answer.
int send(const ControlOptions& options, const std::string& verb, nlohmann::json args) {
  const auto paused = live_pause(options.workplace);
  if (!paused) return kNotPaused;
  args["pause"] = (*paused)["pause"];
  std::string id;
  try {
    id = detail::send_command(options.workplace, verb, args);
  } catch (const Error& e) {
    std::cerr << e.what() << "\n";
    return kError;
  }
  const auto result = await_result(options.workplace, id, options.wait_s);
  if (!result) {
    std::error_code ec;
    fs::remove(options.workplace / detail::kControlDir / (id + ".json"), ec);  // withdrawn, if not taken yet
    std::cerr << "daifu: sent " << verb << " (" << id << ") to pid " << (*paused)["pid"]
              << ", but it has not answered within " << options.wait_s << " s\n";
    return kNoAnswer;
  }
  const bool refused = result->rfind("refused", 0) == 0 || result->rfind("ignored", 0) == 0 ||
                       result->rfind("failed", 0) == 0;
  (refused ? std::cerr : std::cout) << "daifu: " << verb << " at step " << (*paused)["step"] << " (pid "
                                    << (*paused)["pid"] << "): " << *result << "\n";
  return refused ? kRefused : kOk;
}

}  // namespace

int status(const ControlOptions& options) {
  const auto paused = live_pause(options.workplace, /*quiet=*/true);
  if (!paused) {
    std::cout << "daifu: no session is paused in " << options.workplace.string() << "\n";
    return kNotPaused;
  }
  const auto& p = *paused;
  std::cout << "paused   pid " << p["pid"] << ", step " << p["step"] << " attempt " << p["attempt"] << " at "
            << p.value("where", "") << "\n"
            << "since    " << p.value("since", "") << ", waits until " << p.value("until", "") << "\n"
            << "failure  " << p.value("kind", "") << ", " << p.value("exception_type", "") << ": "
            << p.value("message", "").substr(0, p.value("message", "").find('\n')) << "\n"
            << "why      " << p.value("why", "") << "\n"
            << "report   " << p.value("report", "") << "\n";
  if (p.contains("knobs") && !p["knobs"].empty()) {
    std::cout << "knobs   ";
    for (const auto& [name, value] : p["knobs"].items()) std::cout << " " << name << "=" << value.dump();
    std::cout << "\n";
  }
  std::cout << "to go on:\n";
  for (const auto& fix : p.value("how_to_fix", nlohmann::json::array())) std::cout << "  - " << fix.get<std::string>() << "\n";
  return kOk;
}

int apply(const ControlOptions& options, const fs::path& patch) {
  struct stat st {};
  if (::stat(patch.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    std::cerr << "daifu: " << patch.string() << " is not a file; build one with: daifu patch build fix.cpp\n";
    return kError;
  }
  const fs::path folder = options.workplace / detail::kPatchesDir;
  const fs::path target = folder / patch.filename();
  // Copied under a name the session's folder scan ignores (not .so), then renamed: the session
  // never sees half a library. A paused session is told to install and run it itself, so the
  // command (and its answer) is what runs it, not the scan.
  const fs::path staged = folder / ("." + patch.filename().string() + "." + std::to_string(::getpid()) + ".staged");
  const bool paused = live_pause(options.workplace, /*quiet=*/true).has_value();
  try {
    detail::check_patch_folder(folder);
    if (fs::exists(target) && detail::sha256_file(target.string()) != detail::sha256_file(patch.string())) {
      std::cerr << "daifu: " << target.string()
                << " exists with other contents; a patch file is kept as the record of what ran: give the new "
                   "patch another name\n";
      return kError;
    }
    fs::copy_file(patch, staged, fs::copy_options::overwrite_existing);
    fs::permissions(staged, fs::perms::owner_read | fs::perms::owner_write | fs::perms::owner_exec |
                                fs::perms::group_read | fs::perms::others_read);
    if (!paused) fs::rename(staged, target);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(staged, ec);
    std::cerr << e.what() << "\n";
    return kError;
  }
  if (!paused) {
    std::cout << "daifu: " << target.string()
              << " installed; no session is paused, so it runs at the next failure no surgery repairs\n";
    return kOk;
  }
  const int rc = send(options, "apply", {{"patch", target.filename().string()}, {"staged", staged.filename().string()}});
  if (rc == kNotPaused || rc == kError) {
    std::error_code ec;
    fs::remove(staged, ec);  // nothing was sent
  }
  return rc;
}

int set(const ControlOptions& options, const std::map<std::string, std::string>& assignments) {
  nlohmann::json knobs = nlohmann::json::object();
  for (const auto& [name, text] : assignments) {
    nlohmann::json value = detail::parse_untrusted_json(text);
    knobs[name] = value.is_discarded() ? nlohmann::json(text) : value;
  }
  return send(options, "set", {{"knobs", knobs}});
}

int simple(const ControlOptions& options, const std::string& verb, const std::string& reason) {
  nlohmann::json args = nlohmann::json::object();
  if (!reason.empty()) args["reason"] = reason;
  return send(options, verb, args);
}

}  // namespace daifu::cli
