// Helpers shared by the test files: fresh workplaces and journal queries.
#pragma once

#include <daifu/journal.h>
#include <daifu/session.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace daifu::testing {

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

/// The journal lines of `workplace` whose event is `event` (all lines if empty), parsed.
inline std::vector<nlohmann::json> events(const std::filesystem::path& workplace, const std::string& event = "") {
  std::vector<nlohmann::json> out;
  for (const auto& line : read_journal((workplace / "journal.jsonl").string()).lines) {
    if (event.empty() || line.event == event) out.push_back(nlohmann::json::parse(line.json));
  }
  return out;
}

/// The names of the session's surgeries that would be asked to repair a failure of `kind`
/// with `message`, in the order they would be asked.
inline std::vector<std::string> candidate_names(Session& session, FailureKind kind, const std::string& message) {
  Failure f;
  f.kind = kind;
  f.message = message;
  std::vector<std::string> out;
  for (const auto* s : session.surgeries().candidates(f)) out.push_back(s->name());
  return out;
}

/// Whether surgery `name` would be asked to repair a failure of `kind` with `message`.
inline bool claims(Session& session, const std::string& name, FailureKind kind, const std::string& message) {
  const auto names = candidate_names(session, kind, message);
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace daifu::testing
