// DAIFU_INJECT plans and the real exceptions each fault raises.
#include <daifu/daifu.h>

#include <gtest/gtest.h>

#include <cstdlib>

#include "test_util.h"

namespace inject_test {

using daifu::FailureKind;
using daifu::testing::events;
using daifu::testing::fresh_dir;

TEST(Inject, ParsesPlans) {
  const auto plan = daifu::parse_plan(" transient@12, shape@30*;oom@80  nan_data@0 ").crashes;
  ASSERT_EQ(plan.size(), 4u);
  EXPECT_EQ(plan[0].fault, "transient");
  EXPECT_EQ(plan[0].step, 12);
  EXPECT_FALSE(plan[0].every_attempt);
  EXPECT_TRUE(plan[1].every_attempt);
  EXPECT_EQ(plan[3].step, 0);
  EXPECT_TRUE(daifu::parse_plan("").crashes.empty());
}

TEST(Inject, RefusesBadPlansNamingTheItem) {
  for (const char* bad : {"oom", "@3", "oom@", "oom@x", "oom@-1", "flood@3", "oom@99999999999999999999"}) {
    try {
      daifu::parse_plan(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const daifu::Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

struct Expected {
  const char* fault;
  FailureKind kind;
  friend void PrintTo(const Expected& e, std::ostream* os) { *os << e.fault << " -> " << daifu::to_string(e.kind); }
};

class InjectedFault : public ::testing::TestWithParam<Expected> {};

TEST_P(InjectedFault, IsClassifiedAsItsKind) {
  daifu::Failure failure;
  try {
    daifu::throw_injected(GetParam().fault, fresh_dir().string());
  } catch (...) {
    failure = daifu::Classifier().classify(std::current_exception());
  }
  EXPECT_EQ(failure.kind, GetParam().kind) << failure.exception_type << ": " << failure.message;
  EXPECT_FALSE(failure.throw_site.empty());
}

INSTANTIATE_TEST_SUITE_P(
    AllFaults, InjectedFault,
    ::testing::Values(Expected{"transient", FailureKind::TransientRuntime}, Expected{"io", FailureKind::TransientRuntime},
                      Expected{"oom", FailureKind::OutOfMemory}, Expected{"shape", FailureKind::TensorMismatch},
                      Expected{"dtype", FailureKind::TensorMismatch}, Expected{"index", FailureKind::TensorMismatch},
                      Expected{"path", FailureKind::PathProblem}, Expected{"nan_data", FailureKind::ExceptionalData},
                      Expected{"nan_loss", FailureKind::NumericFault}, Expected{"api", FailureKind::ApiMisuse},
                      Expected{"contention", FailureKind::DeviceContention},
                      Expected{"illegal_address", FailureKind::Fatal}, Expected{"unknown", FailureKind::Unknown}),
    [](const auto& info) { return std::string(info.param.fault); });

TEST(Inject, EveryFaultNameIsCovered) { EXPECT_EQ(daifu::injectable_faults().size(), 13u); }

TEST(Inject, TakenFromTheEnvironmentWhenOptionsSayNothing) {
  const auto wp = fresh_dir();
  ::setenv("DAIFU_INJECT", "transient@1", 1);
  {
    daifu::Session session(daifu::Options().workplace(wp.string()));
    DAIFU_GUARD(session, step, 0, 3){};
    EXPECT_EQ(session.stats().failures, 1);
  }
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
    DAIFU_GUARD(session, step, 0, 3){};
    EXPECT_EQ(session.stats().failures, 0);
  }
  ::unsetenv("DAIFU_INJECT");
  EXPECT_EQ(events(wp, "run_start").at(0)["inject"], nlohmann::json::array({"transient@1"}));
}

}  // namespace inject_test
