// The surgery registry: order, bounds, failing surgeries, and the built-in transient retry.
#include <daifu/daifu.h>

#include <gtest/gtest.h>

#include "test_util.h"

namespace surgery_test {

using daifu::Action;
using daifu::FailureKind;
using daifu::testing::events;
using daifu::testing::fresh_dir;

TEST(Surgery, LowerPriorityRunsFirstAndRegistrationOrderBreaksTies) {
  daifu::SurgeryRegistry registry;
  auto any = [](const daifu::Failure&) { return true; };
  auto retry = [](daifu::RepairContext&) { return Action::Retry; };
  registry.add("b", any, retry, {50});
  registry.add("a", any, retry, {10});
  registry.add("c", any, retry, {50});
  EXPECT_EQ(registry.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_THROW(registry.add("a", any, retry), daifu::Error);
  EXPECT_TRUE(registry.remove("b"));
  EXPECT_FALSE(registry.remove("b"));
}

TEST(Surgery, OnlyMatchingSurgeriesAreCandidates) {
  daifu::SurgeryRegistry registry;
  registry.add("oom_only", daifu::match_kind(FailureKind::OutOfMemory), [](auto&) { return Action::Retry; });
  registry.add("throws_in_match", [](const daifu::Failure&) -> bool { throw std::runtime_error("bad match"); },
               [](auto&) { return Action::Retry; });
  daifu::Failure shape;
  shape.kind = FailureKind::TensorMismatch;
  EXPECT_TRUE(registry.candidates(shape).empty());
  daifu::Failure oom;
  oom.kind = FailureKind::OutOfMemory;
  ASSERT_EQ(registry.candidates(oom).size(), 1u);
  EXPECT_EQ(registry.candidates(oom)[0]->name(), "oom_only");
}

// Match::message searches the first 1024 characters: std::regex recurses per character, and a
// 100 KB message once overflowed the stack inside the registry's noexcept match().
TEST(Surgery, AMessageMatchSearchesTheStartOfAHugeMessageWithoutOverflowingTheStack) {
  const auto flux = daifu::Match().message("flux .* drifted");
  daifu::Failure f;
  f.message = "flux capacitor drifted " + std::string(100000, 'x');
  EXPECT_TRUE(flux(f));
  f.message = std::string(100000, 'x') + " flux capacitor drifted";
  EXPECT_FALSE(flux(f));
}

TEST(Surgery, PerStepBoundStopsASurgeryFromFiringForever) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).max_attempts(50).inject("shape@1*"));
  int64_t fired = 0;
  session.surgeries().add("hopeful", daifu::match_kind(FailureKind::TensorMismatch),
                          [&](daifu::RepairContext&) {
                            ++fired;
                            return Action::Retry;
                          },
                          daifu::SurgeryLimits{100, /*max_per_step=*/2, /*max_per_run=*/10});
  try {
    DAIFU_GUARD(session, step, 0, 3){};
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_EQ(e.failure().attempt, 2);
    EXPECT_NE(std::string(e.what()).find("attempt 0: tensor_mismatch -> hopeful (retry)"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(fired, 2);
}

TEST(Surgery, PerRunBoundCountsAcrossSteps) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("api@1, api@2, api@3"));
  session.surgeries().add("twice", daifu::match_kind(FailureKind::ApiMisuse), [](auto&) { return Action::Retry; },
                          daifu::SurgeryLimits{100, 5, /*max_per_run=*/2});
  EXPECT_THROW({ DAIFU_GUARD(session, step, 0, 5){}; }, daifu::Unrecovered);
  EXPECT_EQ(session.global_step(), 3);
}

TEST(Surgery, AThrowingSurgeryIsJournaledAndTheNextOneTried) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("path@1"));
  session.surgeries().add("broken", daifu::match_kind(FailureKind::PathProblem),
                          [](daifu::RepairContext&) -> Action { throw std::runtime_error("surgery bug"); }, {10});
  session.surgeries().add("works", daifu::match_kind(FailureKind::PathProblem),
                          [](daifu::RepairContext& ctx) {
                            ctx.note("note", "\"before\"", "\"after\"");
                            return Action::Retry;
                          },
                          {20});
  DAIFU_GUARD(session, step, 0, 3){};
  EXPECT_EQ(session.global_step(), 3);
  auto failed = events(wp, "surgery_failed");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0]["surgery"], "broken");
  EXPECT_EQ(failed[0]["message"], "surgery bug");
  auto repair = events(wp, "repair").at(0);
  EXPECT_EQ(repair["surgery"], "works");
  EXPECT_EQ(repair["changes"]["note"], nlohmann::json::array({"before", "after"}));
}

TEST(Surgery, EscalateActionEndsTheLoop) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("api@0"));
  session.surgeries().add("no", daifu::match_kind(FailureKind::ApiMisuse), [](auto&) { return Action::Escalate; });
  try {
    DAIFU_GUARD(session, step, 0, 2){};
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("surgery no escalated"), std::string::npos) << e.what();
  }
}

TEST(Surgery, TransientRetryBacksOffAfterTheFirstRetryAndIsBounded) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options()
                             .workplace(wp.string())
                             .max_attempts(10)
                             .transient_retries(3)
                             .transient_backoff(std::chrono::microseconds(200))
                             .inject("transient@0*"));
  EXPECT_THROW({ DAIFU_GUARD(session, step, 0, 1){}; }, daifu::Unrecovered);
  auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 3u);
  EXPECT_FALSE(repairs[0]["changes"].contains("wait_us"));
  const int64_t second = repairs[1]["changes"]["wait_us"][1].get<int64_t>();
  const int64_t third = repairs[2]["changes"]["wait_us"][1].get<int64_t>();
  EXPECT_GE(second, 100);
  EXPECT_LE(second, 300);
  EXPECT_GE(third, 200);
  EXPECT_LE(third, 600);
  EXPECT_EQ(events(wp, "failure").size(), 4u);  // 3 retries, then nothing matches
}

TEST(Surgery, ADecliningSurgeryIsNotCountedAndTheNextOneRepairs) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("shape@1"));
  int64_t declined = 0;
  session.surgeries().add("decliner", daifu::match_kind(FailureKind::TensorMismatch),
                          [&](daifu::RepairContext& ctx) {
                            ++declined;
                            ctx.explain("not my shape");
                            return Action::Decline;
                          },
                          {10});
  session.surgeries().add("fixer", daifu::match_kind(FailureKind::TensorMismatch),
                          [](daifu::RepairContext& ctx) {
                            ctx.explain("fixed it");
                            return Action::Retry;
                          },
                          {20});
  DAIFU_GUARD(session, step, 0, 3){};
  EXPECT_EQ(declined, 1);
  EXPECT_EQ(session.surgeries().fired("decliner"), 0);
  EXPECT_EQ(session.surgeries().fired("fixer"), 1);
  const auto d = events(wp, "surgery_declined");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0]["reason"], "not my shape");
  const auto r = events(wp, "repair");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["surgery"], "fixer");
  EXPECT_EQ(r[0]["reason"], "fixed it");
}

TEST(Surgery, AnEscalationCarriesTheSurgerysExplanation) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()).inject("api@0"));
  session.surgeries().add("explainer", daifu::match_kind(FailureKind::ApiMisuse), [](daifu::RepairContext& ctx) {
    ctx.explain("the call is wrong; fix the code");
    return Action::Escalate;
  });
  try {
    DAIFU_GUARD(session, step, 0, 1){};
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("surgery explainer escalated: the call is wrong; fix the code"),
              std::string::npos)
        << e.what();
  }
}

TEST(Surgery, MatchChecksKindTypeMessageAndStepRangeTogether) {
  const auto match = daifu::Match()
                         .kind(FailureKind::TensorMismatch)
                         .exception_type("c10::IndexError")
                         .message(R"(target \d+ is out of bounds)")
                         .steps(10, 20);
  daifu::Failure f;
  f.kind = FailureKind::TensorMismatch;
  f.exception_type = "c10::IndexError";
  f.message = "Target 7 is out of bounds.";
  f.step = 10;
  EXPECT_TRUE(match(f));
  f.step = 20;
  EXPECT_FALSE(match(f));
  f.step = 15;
  f.exception_type = "c10::Error";
  EXPECT_FALSE(match(f));
  f.exception_type = "c10::IndexError";
  f.message = "Target -1 is out of bounds.";
  EXPECT_FALSE(match(f));
  f.message = "Target 7 is out of bounds.";
  f.kind = FailureKind::ApiMisuse;
  EXPECT_FALSE(match(f));
  EXPECT_TRUE(daifu::Match()(f));  // no condition: everything
  EXPECT_THROW(daifu::Match().message("(unclosed"), daifu::Error);
}

TEST(Surgery, AMatchRepairsARealIndexErrorOnlyInItsStepRange) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("index@2, index@5*"));
  session.surgeries().add("early_index_errors",
                          daifu::Match().exception_type("c10::IndexError").message("out of range").steps(0, 3),
                          [](daifu::RepairContext&) { return Action::Retry; });
  EXPECT_THROW({ DAIFU_GUARD(session, step, 0, 8){}; }, daifu::Unrecovered);
  // Step 2 repaired; step 5 outside the range, retried once by data_or_code (it memoized no batch).
  EXPECT_EQ(session.global_step(), 5);
}

}  // namespace surgery_test
