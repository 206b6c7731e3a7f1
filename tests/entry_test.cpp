// The entry-function guard: uncaught exceptions and std::terminate are recorded.
#include <daifu/daifu.h>

#include <gtest/gtest.h>

#include <fstream>
#include <stdexcept>

#include "test_util.h"

namespace entry_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;

// An exception escaping a noexcept function calls std::terminate.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wterminate"
void escape_a_noexcept_function() noexcept { throw std::logic_error("escaped a noexcept destructor"); }
#pragma GCC diagnostic pop

TEST(Entry, ReturnsTheFunctionsExitCode) {
  const auto wp = fresh_dir();
  EXPECT_EQ(daifu::run_main(wp.string(), [] { return 7; }), 7);
  EXPECT_FALSE(std::filesystem::exists(wp / "journal.jsonl"));  // nothing to record
}

TEST(Entry, AnUncaughtExceptionIsRecordedAndBecomesExitCodeOne) {
  const auto wp = fresh_dir();
  const int code = daifu::run_main(wp.string(), [&]() -> int {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("shape@2*"));
    DAIFU_GUARD(session, step, 0, 5){};
    return 0;
  });
  EXPECT_EQ(code, 1);
  const auto uncaught = events(wp, "uncaught");
  ASSERT_EQ(uncaught.size(), 1u);
  EXPECT_EQ(uncaught[0]["exception_type"], "daifu::Unrecovered");
  EXPECT_TRUE(std::filesystem::exists(uncaught[0]["report"].get<std::string>()));
  EXPECT_EQ(events(wp, "run_end").at(0)["status"], "unrecovered");
  // The journal opened for the uncaught line took the whole journal for torn (issue 20).
  const std::string journal = daifu::testing::read_text(wp / "journal.jsonl");
  EXPECT_EQ(journal.find("\n\n"), std::string::npos) << journal;
  // One "Program End", the Session's; run_main's line says what it did.
  const std::string record = daifu::testing::read_text(wp / "experiment_record.log");
  EXPECT_EQ(record.find("Program End"), record.rfind("Program End")) << record;
  EXPECT_NE(record.find("Uncaught exception, run_main returns 1: "), std::string::npos) << record;
}

// It threw daifu::Error out of run_main, which ended the program by "terminate called".
TEST(Entry, AnUnusableWorkplaceIsExitCodeOneWithItsReasonAndTheFunctionDoesNotRun) {
  const auto dir = fresh_dir();
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "a_file") << "x";
  bool ran = false;
  ::testing::internal::CaptureStderr();
  const int code = daifu::run_main((dir / "a_file" / "wp").string(), [&] {
    ran = true;
    return 0;
  });
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 1);
  EXPECT_FALSE(ran);
  EXPECT_NE(err.find("daifu: cannot create workplace folder " + (dir / "a_file" / "wp").string()), std::string::npos)
      << err;
}

TEST(EntryDeathTest, TerminateIsRecordedBeforeTheProcessEnds) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto wp = fresh_dir();
  EXPECT_DEATH(
      {
        daifu::run_main(wp.string(), []() -> int {
          escape_a_noexcept_function();
          return 0;
        });
      },
      "daifu: the program ended by terminate");
  const auto ended = events(wp, "terminate");
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0]["exception_type"], "std::logic_error");
  EXPECT_EQ(ended[0]["message"], "escaped a noexcept destructor");
}

}  // namespace entry_test
