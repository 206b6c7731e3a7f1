// The guarded step loop on real training: retries, bounds, escalation, memoized data.
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <fstream>
#include <system_error>
#include <thread>

#include "compat/optimizer_key.h"

#include "test_util.h"

namespace guard_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 16));
    drop = register_module("drop", torch::nn::Dropout(0.3));
    fc2 = register_module("fc2", torch::nn::Linear(16, 3));
  }
  torch::Tensor forward(torch::Tensor x) { return fc2->forward(drop->forward(torch::relu(fc1->forward(x)))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(Net);

// A small training problem with data fixed up front, so any step's batch is a function of
// its index.
struct Problem {
  Problem() {
    torch::manual_seed(7);
    net = Net();
    x = torch::randn({40 * 16, 8});
    y = torch::randint(0, 3, {40 * 16});
    optimizer = std::make_unique<torch::optim::Adam>(net->parameters(), torch::optim::AdamOptions(1e-2));
  }
  // One training step; `fault` runs between backward and the optimizer step.
  template <class Fault>
  void train_step(int64_t i, Fault&& fault) {
    auto xb = x.narrow(0, i * 16, 16), yb = y.narrow(0, i * 16, 16);
    optimizer->zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(xb), yb);
    loss.backward();
    fault();
    optimizer->step();
  }
  std::vector<torch::Tensor> params() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : net->parameters()) out.push_back(p.detach().clone());
    return out;
  }
  Net net{nullptr};
  torch::Tensor x, y;
  std::unique_ptr<torch::optim::Adam> optimizer;
};

void expect_bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

TEST(Guard, TransientErrorAtStep12FinishesBitwiseEqualToAFaultFreeRun) {
  Problem plain;
  for (int64_t i = 0; i < 40; ++i) plain.train_step(i, [] {});

  Problem guarded;
  const auto wp = fresh_dir();
  int64_t bodies = 0;
  {
    daifu::Session session(daifu::Options().workplace(wp.string()));
    session.track("model", *guarded.net);
    session.track("optimizer", *guarded.optimizer);
    DAIFU_GUARD(session, step, 0, 40) {
      ++bodies;
      // Fails after forward and backward consumed dropout's random numbers.
      guarded.train_step(step.index(), [&] {
        if (step.index() == 12 && step.attempt() == 0) {
          throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), "loader");
        }
      });
    };
    EXPECT_EQ(session.global_step(), 40);
    EXPECT_EQ(session.stats().failures, 1);
    EXPECT_EQ(session.stats().retries, 1);
  }
  EXPECT_EQ(bodies, 41);
  expect_bitwise_equal(plain.params(), guarded.params());

  auto failures = events(wp, "failure");
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0]["kind"], "transient_runtime");
  EXPECT_EQ(failures[0]["step"], 12);
  EXPECT_NE(failures[0]["where"].get<std::string>().find("guard_test.cpp:"), std::string::npos);
  auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "transient_retry");
  auto resumes = events(wp, "resume");
  ASSERT_EQ(resumes.size(), 1u);
  EXPECT_GT(resumes[0]["recovery_us"].get<double>(), 0.0);
  EXPECT_EQ(events(wp, "run_end").at(0)["status"], "ok");
}

TEST(Guard, PermanentFaultEndsUnrecoveredAfterExactlyMaxAttempts) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).max_attempts(3).transient_retries(100));
  int64_t attempts_at_5 = 0;
  try {
    DAIFU_GUARD(session, step, 0, 10) {
      if (step.index() == 5) {
        ++attempts_at_5;
        throw std::system_error(std::make_error_code(std::errc::connection_reset), "shard server");
      }
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_EQ(e.failure().kind, daifu::FailureKind::TransientRuntime);
    EXPECT_EQ(e.failure().step, 5);
    EXPECT_EQ(e.failure().attempt, 2);
    const std::string what = e.what();
    EXPECT_NE(what.find("failed 3 times"), std::string::npos) << what;
    EXPECT_NE(what.find("transient_retry"), std::string::npos) << what;
    EXPECT_TRUE(std::filesystem::exists(e.report_path())) << e.report_path();
    // The original exception is nested.
    EXPECT_THROW(std::rethrow_if_nested(e), std::system_error);
  }
  EXPECT_EQ(attempts_at_5, 3);
  EXPECT_EQ(session.global_step(), 5);
  EXPECT_EQ(events(wp, "unrecovered").size(), 1u);
}

// The data-or-code test: the step memoized no batch, so it is retried once (a stream would
// yield its next batch); failing the same way again, it is the code.
TEST(Guard, RealShapeMismatchThatNoSurgeryRepairsEscalatesAfterOneRetryWithAReport) {
  const auto wp = fresh_dir();
  torch::nn::Linear layer(10, 5);
  daifu::Session session(daifu::Options().workplace(wp.string()));
  int64_t calls = 0;
  try {
    DAIFU_GUARD(session, step, 0, 3) {
      ++calls;
      layer->forward(torch::ones({4, 7}));
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_EQ(e.failure().kind, daifu::FailureKind::TensorMismatch);
    EXPECT_NE(std::string(e.what()).find("no surgery repairs tensor_mismatch"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("the code, not the data"), std::string::npos) << e.what();
    std::ifstream in(e.report_path());
    const auto report = nlohmann::json::parse(in);
    EXPECT_EQ(report["kind"], "tensor_mismatch");
    EXPECT_NE(report["stack"].get<std::string>().find("#0 "), std::string::npos);
  }
  EXPECT_EQ(calls, 2);
}

TEST(Guard, StateModifiedBeforeTheFailureIsRolledBackNotRetriedBlindly) {
  Problem plain;
  for (int64_t i = 0; i < 6; ++i) plain.train_step(i, [] {});
  Problem p;
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()));
  session.track("model", *p.net);
  session.track("optimizer", *p.optimizer);
  int64_t calls = 0;
  DAIFU_GUARD(session, step, 0, 6) {
    ++calls;
    p.train_step(step.index(), [] {});
    if (step.index() == 3 && step.attempt() == 0) {
      throw std::system_error(std::make_error_code(std::errc::io_error), "after step()");
    }
  };
  expect_bitwise_equal(plain.params(), p.params());
  EXPECT_GE(calls, 7);
  EXPECT_EQ(events(wp, "rollback").size(), 1u);
}

// An inner loop (an evaluation, say) in a step moved the outer step's rollback point: a
// failure after optimizer.step() was retried without a rollback, and the update applied twice.
TEST(Guard, AGuardLoopNestedInAStepOfTheSameSessionIsRefused) {
  Problem p;
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()));
  session.track("model", *p.net);
  session.track("optimizer", *p.optimizer);
  try {
    DAIFU_GUARD(session, step, 0, 2) {
      p.train_step(step.index(), [] {});
      DAIFU_GUARD(session, evaluation, 0, 1){};
      if (step.attempt() == 0) throw std::system_error(std::make_error_code(std::errc::io_error), "after step()");
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("nested guard loops are not supported"), std::string::npos) << e.what();
    EXPECT_EQ(e.failure().step, 0);
  }
  EXPECT_EQ(events(wp, "repair").size(), 0u);
  EXPECT_EQ(events(wp, "unrecovered").size(), 1u);
  // The session is usable again: its loop ended.
  DAIFU_GUARD(session, step, 0, 1){};
}

TEST(Guard, AGuardLoopOfASessionWhoseLoopRunsOnAnotherThreadIsRefused) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()));
  std::atomic<bool> started{false}, release{false};
  std::thread other([&] {
    DAIFU_GUARD(session, step, 0, 1) {
      started = true;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
  });
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  try {
    DAIFU_GUARD(session, step, 0, 1){};
    ADD_FAILURE() << "expected daifu::Error";
  } catch (const daifu::Error& e) {
    EXPECT_NE(std::string(e.what()).find("while another thread runs a guard loop of the same session"),
              std::string::npos)
        << e.what();
  }
  release = true;
  other.join();
}

// It segfaulted without a word.
TEST(GuardDeathTest, ASessionDestroyedWhileItsLoopRunsSaysSo) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto wp = fresh_dir();
  EXPECT_DEATH(
      {
        auto* session = new daifu::Session(daifu::Options().workplace(wp.string()));
        std::atomic<bool> started{false};
        std::thread([&] {
          DAIFU_GUARD(*session, step, 0, 1000000) {
            started = true;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          };
        }).detach();
        while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        delete session;
      },
      "daifu: a Session .* is being destroyed while its guard loop runs");
}

// An optimizer whose per-parameter state daifu does not know how to copy.
struct OpaqueState : torch::optim::OptimizerCloneableParamState<OpaqueState> {
  TORCH_ARG(int64_t, count) = 0;
};
class OpaqueOptimizer : public torch::optim::Optimizer {
 public:
  explicit OpaqueOptimizer(std::vector<torch::Tensor> params)
      : Optimizer({torch::optim::OptimizerParamGroup(std::move(params))},
                  std::make_unique<torch::optim::AdamOptions>(0.1)) {}
  torch::Tensor step(LossClosure) override {
    torch::NoGradGuard no_grad;
    for (auto& p : param_groups_.at(0).params()) {
      auto& state = state_[daifu::detail::optimizer_state_key(p)];
      if (!state) state = std::make_unique<OpaqueState>();
      p.add_(p.grad(), -0.1);
    }
    return {};
  }
};

TEST(Guard, WithoutASnapshotAFailureAfterAnUpdateEscalates) {
  Problem p;
  OpaqueOptimizer optimizer(p.net->parameters());
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).snapshot_every(2));
  session.track("model", *p.net);
  session.track("optimizer", optimizer);
  int64_t calls = 0;
  try {
    DAIFU_GUARD(session, step, 0, 5) {
      ++calls;
      optimizer.zero_grad();
      torch::nn::functional::cross_entropy(p.net->forward(p.x.narrow(0, 0, 16)), p.y.narrow(0, 0, 16)).backward();
      optimizer.step(nullptr);
      if (step.index() == 3) throw std::system_error(std::make_error_code(std::errc::io_error), "after step()");
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("no snapshot"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model"), std::string::npos) << e.what();
  }
  EXPECT_EQ(calls, 4);
  EXPECT_FALSE(events(wp, "snapshot_failed").empty());
  EXPECT_NE(events(wp, "snapshot_failed").back()["message"].get<std::string>().find("cannot snapshot"),
            std::string::npos);
}

TEST(Guard, StepOnceKeepsTheSameDataAcrossAttempts) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("transient@2, io@4"));
  int64_t pulled = 0;
  std::vector<int64_t> seen;
  DAIFU_GUARD(session, step, 0, 6) {
    const int64_t& batch = step.once("batch", [&] { return pulled++; });
    seen.push_back(batch);
  };
  EXPECT_EQ(pulled, 6);
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(session.stats().retries, 2);
}

TEST(Guard, UserSurgeryCanSkipABatchOfBadData) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("nan_data@3"));
  session.surgeries().add("skip_bad_batch", daifu::match_kind(daifu::FailureKind::ExceptionalData),
                          [](daifu::RepairContext&) { return daifu::Action::Skip; });
  std::vector<int64_t> done;
  DAIFU_GUARD(session, step, 0, 6) { done.push_back(step.index()); };
  EXPECT_EQ(done, (std::vector<int64_t>{0, 1, 2, 4, 5}));
  EXPECT_EQ(session.stats().skipped_steps, 1);
  EXPECT_EQ(session.global_step(), 5);
  ASSERT_EQ(events(wp, "skip").size(), 1u);
  EXPECT_EQ(events(wp, "skip")[0]["step"], 3);
  EXPECT_EQ(events(wp, "repair").at(0)["action"], "skip");
}

// The transient retry ran next, on weights the declining surgery had changed.
TEST(Guard, ASurgeryThatChangesTheStateAndDeclinesEscalates) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("transient@1"));
  auto weights = torch::zeros({4});
  session.track("weights", weights);
  session.surgeries().add("meddler", daifu::match_kind(daifu::FailureKind::TransientRuntime),
                          [&](daifu::RepairContext&) {
                            weights.add_(1);
                            return daifu::Action::Decline;
                          },
                          {0});
  try {
    DAIFU_GUARD(session, step, 0, 3){};
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("surgery meddler declined after modifying the tracked state"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(events(wp, "repair").size(), 0u);
}

TEST(Guard, FatalErrorsAreNeverRetriedInPlace) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("illegal_address@1"));
  int64_t surgery_calls = 0;
  session.surgeries().add("retry_everything", [](const daifu::Failure&) { return true; },
                          [&](daifu::RepairContext&) {
                            ++surgery_calls;
                            return daifu::Action::Retry;
                          });
  EXPECT_THROW({ DAIFU_GUARD(session, step, 0, 3){}; }, daifu::Unrecovered);
  EXPECT_EQ(surgery_calls, 0);
  EXPECT_EQ(events(wp, "failure").at(0)["kind"], "fatal");
}

TEST(Guard, SurgeryKnobChangesAreJournaledWithTheRepair) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("oom@2"));
  auto& batch = session.knob<int64_t>("batch_size", 64);
  session.surgeries().add("halve_batch", daifu::match_kind(daifu::FailureKind::OutOfMemory),
                          [&](daifu::RepairContext&) {
                            batch.set(batch.get() / 2, "out of memory");
                            return daifu::Action::Retry;
                          });
  std::vector<int64_t> sizes;
  DAIFU_GUARD(session, step, 0, 4) { sizes.push_back(batch); };
  EXPECT_EQ(sizes, (std::vector<int64_t>{64, 64, 32, 32}));
  auto repair = events(wp, "repair").at(0);
  EXPECT_EQ(repair["surgery"], "halve_batch");
  EXPECT_EQ(repair["changes"]["batch_size"], nlohmann::json::array({64, 32}));
  auto knob = events(wp, "knob").at(0);
  EXPECT_EQ(knob["reason"], "out of memory");
  EXPECT_EQ(knob["step"], 2);
  ASSERT_EQ(session.incidents().size(), 1u);
  EXPECT_EQ(session.incidents()[0].changes.at(0), "batch_size: 64 -> 32");
  EXPECT_NE(session.summary().find("halve_batch"), std::string::npos);
}

TEST(Guard, MetricsAreJournaledCompactly) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).metrics_every(4));
    DAIFU_GUARD(session, step, 0, 10) { session.report("loss", 1.0 / (1 + step.index())); };
  }
  auto lines = events(wp, "metrics");
  ASSERT_EQ(lines.size(), 3u);  // steps 0-3, 4-7, 8-9 (flushed at the end)
  EXPECT_EQ(lines[0]["steps"], nlohmann::json::array({0, 1, 2, 3}));
  EXPECT_DOUBLE_EQ(lines[2]["values"]["loss"][1].get<double>(), 0.1);
}

// Plain values have no version counter: they are put back at every failure, and to the
// snapshot's copy on a rollback, so the re-run steps count once.
TEST(Guard, ATrackedValueIsPutBackWhenAStepFailsAndOnARollback) {
  const auto wp = fresh_dir();
  auto w = torch::zeros({1});
  double running = 0;
  struct Counters {
    double sum;
    int64_t steps;
  } counters{0, 0};
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("").snapshot_every(4));
  session.track("w", w);
  session.track_value("running", running);
  session.track_value("counters", counters);
  DAIFU_GUARD(session, step, 0, 8) {
    running += 1.0;
    counters.sum += 0.5;
    ++counters.steps;
    if (step.index() == 2 && step.attempt() == 0) throw std::system_error(std::make_error_code(std::errc::io_error), "x");
    w.add_(1);
    if (step.index() == 5 && step.attempt() == 0) throw std::system_error(std::make_error_code(std::errc::io_error), "y");
  };
  EXPECT_EQ(session.stats().rollbacks, 1);
  EXPECT_EQ(running, 8.0);
  EXPECT_EQ(counters.sum, 4.0);
  EXPECT_EQ(counters.steps, 8);
  EXPECT_EQ(w.item<float>(), 8.0f);
  EXPECT_THROW(session.track_value("running", running), daifu::Error);
  EXPECT_THROW(session.track_value("w", running), daifu::Error);
}

TEST(Guard, SeveralLoopsShareTheGlobalStep) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()));
  for (int epoch = 0; epoch < 3; ++epoch) {
    DAIFU_GUARD(session, step, 0, 4) {};
  }
  EXPECT_EQ(session.global_step(), 12);
  EXPECT_EQ(events(wp, "loop_start").size(), 3u);
}

TEST(Guard, MicroBatchesCoverTheBatchWithWeightsSummingToOne) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()));
  auto& micro = session.knob<int64_t>("micro_batch", 4);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  double total = 0;
  DAIFU_GUARD(session, step, 0, 1) {
    step.micro_batches(10, micro, [&](int64_t b, int64_t e, double w) {
      ranges.emplace_back(b, e);
      total += w;
    });
    EXPECT_EQ(step.micro_batch_knob(), "micro_batch");
  };
  EXPECT_EQ(ranges, (std::vector<std::pair<int64_t, int64_t>>{{0, 4}, {4, 8}, {8, 10}}));
  EXPECT_DOUBLE_EQ(total, 1.0);
  micro.set(0);
  daifu::Step step_outside_a_loop;
  EXPECT_THROW(step_outside_a_loop.micro_batches(10, micro, [](int64_t, int64_t, double) {}), daifu::Error);
}

}  // namespace guard_test
