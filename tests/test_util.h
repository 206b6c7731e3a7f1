// Helpers shared by the test files: fresh workplaces, journal queries and waiting for a pause.
// Both test programs include it, so it calls only daifu's public API and header-only internals
// (daifu_patch_tests links libdaifu.so, whose internals are hidden).
#pragma once

#include <daifu/journal.h>
#include <daifu/session.h>

#include "journal/events.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace daifu::testing {

/// Starts `args` (args[0]: the program's path) with its stdout and stderr written to `log`.
/// Returns its pid, or -1 (and a test failure) if it could not be started.
inline pid_t spawn_logged(std::vector<std::string> args, const std::filesystem::path& log) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ), 0) << args[0];
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

/// The whole of file `path` ("" if it cannot be read).
inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// An empty folder unique to the running test.
inline std::filesystem::path fresh_dir(const std::string& tag = "") {
  const char* root = std::getenv("DAIFU_TEST_TMP");
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir = std::filesystem::path(root ? root : ::testing::TempDir()) /
                              (std::string(info->test_suite_name()) + "." + info->name() + tag);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir.parent_path());
  return dir;
}

/// Adds a test failure unless `line` is an event of src/journal/events.h carrying only the
/// fields declared there: every test that reads a journal checks the schema as it goes.
inline void expect_declared(const nlohmann::json& line) {
  const std::string name = line.value("event", "");
  const auto* declared = detail::find_journal_event(name);
  if (declared == nullptr) {
    ADD_FAILURE() << "journal event \"" << name << "\" is not in src/journal/events.h: " << line.dump();
    return;
  }
  for (const auto& [field, value] : line.items()) {
    EXPECT_TRUE(declared->has_field(field)) << "the " << name << " line carries \"" << field
                                            << "\", which src/journal/events.h does not declare: " << line.dump();
  }
}

/// The journal lines of `workplace` whose event is `event` (all lines if empty), parsed; each
/// line of the journal is checked against the declared schema (expect_declared).
inline std::vector<nlohmann::json> events(const std::filesystem::path& workplace, const std::string& event = "") {
  std::vector<nlohmann::json> out;
  for (const auto& line : read_journal((workplace / "journal.jsonl").string()).lines) {
    auto parsed = nlohmann::json::parse(line.json);
    expect_declared(parsed);
    if (event.empty() || line.event == event) out.push_back(std::move(parsed));
  }
  return out;
}

/// The names of the session's surgeries that would be asked to repair a failure of `kind`
/// with `message` (thrown as `exception_type`), in the order they would be asked.
inline std::vector<std::string> candidate_names(Session& session, FailureKind kind, const std::string& message,
                                                const std::string& exception_type = "") {
  Failure f;
  f.kind = kind;
  f.message = message;
  f.exception_type = exception_type;
  std::vector<std::string> out;
  for (const auto* s : session.surgeries().candidates(f)) out.push_back(s->name());
  return out;
}

/// Whether surgery `name` would be asked to repair a failure of `kind` with `message`.
inline bool claims(Session& session, const std::string& name, FailureKind kind, const std::string& message,
                   const std::string& exception_type = "") {
  const auto names = candidate_names(session, kind, message, exception_type);
  return std::find(names.begin(), names.end(), name) != names.end();
}

/// A session that pauses when no surgery repairs a failure (for at most 60 s), with no injections.
inline Options paused_options(const std::filesystem::path& workplace) {
  return Options().workplace(workplace.string()).on_unrecovered(OnUnrecovered::Pause).pause_timeout(std::chrono::seconds(60)).inject("");
}

/// Waits (bounded) until `done()`; false if it did not happen within `limit`.
template <class F>
bool wait_until(F done, std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

/// <workplace>/paused.json (docs/workplace.md) while a session there waits for a fix; nullopt
/// while none does. The session writes it atomically.
inline std::optional<nlohmann::json> paused_state(const std::filesystem::path& workplace) {
  std::ifstream in(workplace / "paused.json");
  if (!in) return std::nullopt;
  return nlohmann::json::parse(in);
}

/// Waits (bounded) until a session in `workplace` is paused; returns its paused.json.
inline nlohmann::json await_pause(const std::filesystem::path& workplace,
                                  std::chrono::seconds limit = std::chrono::seconds(60)) {
  std::optional<nlohmann::json> state;
  if (!wait_until([&] { return (state = paused_state(workplace)).has_value(); }, limit)) {
    ADD_FAILURE() << "no pause in " << workplace << " within " << limit.count() << " s";
    return nlohmann::json::object();
  }
  return *state;
}

}  // namespace daifu::testing
