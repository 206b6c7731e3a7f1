#include "control/control_channel.h"

#include <daifu/errors.h>

#include "core/durable_file.h"
#include "core/json_input.h"
#include "core/private_folder.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <limits>
#include <sstream>

#include <signal.h>
#include <unistd.h>

namespace daifu::detail {
namespace fs = std::filesystem;

namespace {

constexpr const char* kSuffix = ".json";

// Writes `text` to `target` whole (its temporary is a dot file, which the folder scan skips).
void write_atomically(const fs::path& target, const std::string& text) {
  try {
    write_file_atomically(target, text + '\n');
  } catch (const std::exception& e) {
    throw Error(std::string("daifu: ") + e.what());
  }
}

std::string new_id() {
  static int counter = 0;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  std::ostringstream id;
  id << std::setw(20) << std::setfill('0') << ns << '-' << ::getpid() << '-' << counter++;
  return id.str();
}

// What is wrong with `state` as a paused.json that write_paused wrote; empty if nothing. Every
// field a reader uses is checked, so that reading it cannot throw.
std::string paused_state_problem(const nlohmann::json& state) {
  if (!state.is_object()) return "not a JSON object";
  for (const char* name : {"pid", "step", "attempt"}) {
    if (!state.contains(name) || !state[name].is_number_integer()) return std::string("no integer \"") + name + "\"";
  }
  for (const char* name : {"pause", "where", "kind", "exception_type", "message", "why", "report", "since", "until"}) {
    if (!state.contains(name) || !state[name].is_string()) return std::string("no string \"") + name + "\"";
  }
  if (!state.contains("timeout_s") || !state["timeout_s"].is_number()) return "no number \"timeout_s\"";
  if (!state.contains("knobs") || !state["knobs"].is_object()) return "no object \"knobs\"";
  for (const char* name : {"tried", "how_to_fix"}) {
    if (!state.contains(name) || !state[name].is_array()) return std::string("no array \"") + name + "\"";
    for (const auto& item : state[name]) {
      if (!item.is_string()) return std::string("\"") + name + "\" holds something that is not a string";
    }
  }
  return "";
}

}  // namespace

std::string send_command(const fs::path& workplace, const std::string& verb, const nlohmann::json& args) {
  const fs::path folder = workplace / kControlDir;
  check_private_folder(folder, "control folder");
  const std::string id = new_id();
  write_atomically(folder / (id + kSuffix), nlohmann::json{{"id", id}, {"command", verb}, {"args", args}}.dump());
  return id;
}

std::vector<Command> take_commands(const fs::path& workplace, std::vector<std::string>* rejected) {
  const fs::path folder = workplace / kControlDir;
  check_private_folder(folder, "control folder");
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.front() != '.' && entry.path().extension() == kSuffix) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<Command> commands;
  for (const auto& file : files) {
    std::string problem;
    const auto json = parse_untrusted_json_file(file, &problem);
    try {
      if (json.is_discarded()) {
        problem = problem.empty() ? "not readable" : problem;
      } else if (!json.is_object() || !json.contains("command") || !json["command"].is_string()) {
        problem = "no \"command\" string";
      } else {
        Command c;
        c.id = json.value("id", file.stem().string());
        c.verb = json["command"].get<std::string>();
        c.args = json.value("args", nlohmann::json::object());
        if (!c.args.is_object()) c.args = nlohmann::json::object();
        commands.push_back(std::move(c));
      }
    } catch (const nlohmann::json::exception& e) {
      problem = e.what();
    }
    if (problem.empty()) {
      fs::remove(file, ec);
    } else {
      fs::rename(file, fs::path(file.string() + ".rejected"), ec);
      if (rejected != nullptr) rejected->push_back(file.string() + " is not a daifu command (" + problem + "); kept as .rejected");
    }
  }
  return commands;
}

void write_paused(const fs::path& workplace, const nlohmann::json& state) {
  write_atomically(workplace / kPausedFile, state.dump(2));
}

void clear_paused(const fs::path& workplace) noexcept {
  std::error_code ec;
  fs::remove(workplace / kPausedFile, ec);
}

std::optional<nlohmann::json> read_paused(const fs::path& workplace, std::string* why) {
  std::string problem;
  auto json = parse_untrusted_json_file(workplace / kPausedFile, &problem);
  if (!json.is_discarded()) problem = paused_state_problem(json);
  if (problem.empty()) return json;
  if (why != nullptr) *why = problem;
  return std::nullopt;
}

bool process_alive(int64_t pid) noexcept {
  // A pid beyond pid_t would wrap: 4294967295 became kill(-1, 0), "alive".
  return pid > 0 && pid <= std::numeric_limits<pid_t>::max() && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
}

}  // namespace daifu::detail
