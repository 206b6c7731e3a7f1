// The workplace's control channel: how a paused session and the `daifu` CLI talk without a
// terminal. A command is one JSON file in <workplace>/control/, written to a temporary name and
// renamed into place (so a reader never sees half of one); the session takes the files in name
// order, deletes each, and journals a "command" line with the command's id and its result.
// While a session waits for a fix it keeps <workplace>/paused.json up to date.
// The folder must be owned by this user and not writable by group or others, as patches/ is:
// a command can make the process load code.
#pragma once

#include "journal/workplace.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace daifu::detail {

inline constexpr const char* kPausedFile = "paused.json";

/// A command sent to a session: {"id", "command", "args"}.
struct Command {
  std::string id;       ///< unique and sortable by sending time
  std::string verb;     ///< apply, set, retry, skip, abort
  nlohmann::json args;  ///< object; e.g. {"knobs": {"batch_size": 16}} for set
};

/// Writes a command into <workplace>/control/ and returns its id. Throws daifu::Error if the
/// folder is missing, not private, or cannot be written.
std::string send_command(const std::filesystem::path& workplace, const std::string& verb, const nlohmann::json& args);

/// Takes (reads and deletes) the commands waiting in <workplace>/control/, oldest first. A
/// file that is not a command is renamed to <name>.rejected and described in `rejected`.
/// Throws daifu::Error if the folder is not private (nothing is taken then).
std::vector<Command> take_commands(const std::filesystem::path& workplace, std::vector<std::string>* rejected);

/// paused.json: written atomically while a session waits for a fix, removed when it goes on.
void write_paused(const std::filesystem::path& workplace, const nlohmann::json& state);
void clear_paused(const std::filesystem::path& workplace) noexcept;
/// The paused state if a session is waiting, with every field write_paused writes of the type
/// it writes; nullopt if none is, or the file is unreadable or malformed (then `why`, when given,
/// says how).
std::optional<nlohmann::json> read_paused(const std::filesystem::path& workplace, std::string* why = nullptr);

/// Whether process `pid` is alive on this machine.
bool process_alive(int64_t pid) noexcept;

}  // namespace daifu::detail
