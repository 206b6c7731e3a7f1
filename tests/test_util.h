// Helpers shared by the test files: fresh workplaces and journal queries.
#pragma once

#include <daifu/journal.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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

}  // namespace daifu::testing
