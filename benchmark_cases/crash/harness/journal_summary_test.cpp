// crash::summarize_journal on journals written by hand: what a crashed step's recovery counts.
#include "journal_summary.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace {

std::filesystem::path journal_of(const std::string& name, const std::string& text) {
  const char* tmp = std::getenv("TMPDIR");
  const auto dir = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") / "crash_journal_summary_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / (name + ".jsonl");
  std::ofstream(path) << text;
  return path;
}

}  // namespace

// The second attempt of step 100 computed for 200 ms before it failed again: that counts.
TEST(JournalSummary, AStepThatFailedTwiceCountsTheAttemptBetween) {
  const auto s = crash::summarize_journal(journal_of("twice", R"({"event":"run_start","time":10.0}
{"event":"failure","step":100,"attempt":0,"kind":"out_of_memory","time":10.0001}
{"event":"resume","step":100,"attempt":1,"recovery_us":300,"time":10.0003}
{"event":"failure","step":100,"attempt":1,"kind":"out_of_memory","time":10.2002}
{"event":"resume","step":100,"attempt":2,"recovery_us":250,"time":10.2003}
{"event":"failure","step":150,"attempt":0,"kind":"path_problem","time":11.0}
{"event":"resume","step":150,"attempt":1,"recovery_us":400,"time":11.0004}
)"));
  EXPECT_EQ(s.failures, 3);
  EXPECT_NEAR(crash::back_past_us(s, 100), 300 + 200000, 1);
  EXPECT_NEAR(crash::back_past_us(s, 150), 400, 1e-6);
  EXPECT_EQ(crash::back_past_us(s, 7), 0);
  EXPECT_NEAR(crash::back_past_total_us(s), 300 + 200000 + 400, 1);
}

// A rollback's step is past once the re-run caught up; a step that fails again in a later loop
// (the same index) is a new recovery, not one stretch across the training between.
TEST(JournalSummary, RollbacksAndLaterLoopsAreTheirOwnRecoveries) {
  const auto s = crash::summarize_journal(journal_of("loops", R"({"event":"loop_start","time":1.0}
{"event":"failure","step":49,"attempt":0,"time":1.5}
{"event":"resume","step":49,"attempt":1,"rerun_from":48,"recovery_us":2000,"time":1.502}
{"event":"caught_up","step":49,"rerun_from":48,"rerun_steps":1,"recovery_us":9000,"time":1.509}
{"event":"loop_end","time":2.0}
{"event":"loop_start","time":2.0}
{"event":"failure","step":49,"attempt":0,"time":3.0}
{"event":"skip","step":49,"attempt":0,"recovery_us":100,"time":3.0001}
)"));
  ASSERT_EQ(s.step_recoveries.size(), 2u);
  EXPECT_NEAR(s.step_recoveries[0].us, 9000, 1e-6);
  EXPECT_NEAR(s.step_recoveries[1].us, 100, 1e-6);
  EXPECT_NEAR(crash::back_past_us(s, 49), 9000, 1e-6);
}

// Without a time on a line the stretch falls back to its recovery_us summed.
TEST(JournalSummary, LinesWithoutATimeAreSummed) {
  const auto s = crash::summarize_journal(journal_of("untimed", R"({"event":"resume","step":5,"recovery_us":30,"time":4.0}
{"event":"resume","step":5,"recovery_us":20}
)"));
  EXPECT_NEAR(crash::back_past_us(s, 5), 50, 1e-9);
}
