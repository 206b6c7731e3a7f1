// Snapshots and rollback: a failure after the tracked state was modified is rolled back to the
// newest snapshot, the steps since are re-run, and training ends bitwise equal to a fault-free
// run.
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compat/optimizer_key.h"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "test_util.h"

namespace snapshot_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;

enum class Opt { SGD, Adam, AdamW, RMSprop, Adagrad };

const char* name_of(Opt o) {
  switch (o) {
    case Opt::SGD: return "SGD";
    case Opt::Adam: return "Adam";
    case Opt::AdamW: return "AdamW";
    case Opt::RMSprop: return "RMSprop";
    case Opt::Adagrad: return "Adagrad";
  }
  return "?";
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(Opt o, const std::vector<torch::Tensor>& params) {
  using namespace torch::optim;
  switch (o) {
    case Opt::SGD: return std::make_unique<SGD>(params, SGDOptions(0.05).momentum(0.9));
    case Opt::Adam: return std::make_unique<Adam>(params, AdamOptions(1e-2));
    case Opt::AdamW: return std::make_unique<AdamW>(params, AdamWOptions(1e-2).amsgrad(true));
    case Opt::RMSprop: return std::make_unique<RMSprop>(params, RMSpropOptions(1e-3).momentum(0.5).centered(true));
    case Opt::Adagrad: return std::make_unique<Adagrad>(params, AdagradOptions(1e-2));
  }
  return nullptr;
}

// A classifier with dropout and batch norm (a buffer that changes every step), on data fixed
// up front so any step's batch is a function of its index.
struct Trainer {
  explicit Trainer(Opt o, double dropout = 0.2) {
    torch::manual_seed(11);
    net = torch::nn::Sequential(torch::nn::Linear(6, 24), torch::nn::BatchNorm1d(24), torch::nn::ReLU(),
                                torch::nn::Dropout(dropout), torch::nn::Linear(24, 3));
    x = torch::randn({64 * 8, 6});
    y = torch::randint(0, 3, {64 * 8});
    optimizer = make_optimizer(o, net->parameters());
  }
  torch::Tensor forward_backward(int64_t i) {
    for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x.narrow(0, (i % 64) * 8, 8)),
                                                     y.narrow(0, (i % 64) * 8, 8));
    loss.backward();
    return loss;
  }
  // optimizer.step() that fails half-way: every parameter but the last is updated, then it
  // throws (each LibTorch optimizer skips parameters without a gradient).
  void step_failing_halfway() {
    auto last = net->parameters().back();
    auto grad = last.grad();
    last.mutable_grad() = torch::Tensor();
    optimizer->step();
    last.mutable_grad() = grad;
    throw std::runtime_error("lost the device in the middle of optimizer.step()");
  }
  std::vector<torch::Tensor> state() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : net->parameters()) out.push_back(p.detach().clone());
    for (const auto& b : net->buffers()) out.push_back(b.detach().clone());
    return out;
  }
  torch::nn::Sequential net{nullptr};
  torch::Tensor x, y;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
};

void expect_bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "tensor " << i;
}

// Each parameter's optimizer state (step counters and buffers), serialized in parameter order,
// to compare two optimizers bitwise (their state keys are addresses, so whole-optimizer
// archives of two instances always differ).
std::vector<std::string> optimizer_bytes(torch::optim::Optimizer& o) {
  std::vector<std::string> out;
  for (const auto& group : o.param_groups()) {
    for (const auto& p : group.params()) {
      auto it = o.state().find(daifu::detail::optimizer_state_key(p));
      if (it == o.state().end()) {
        out.emplace_back("(none)");
        continue;
      }
      torch::serialize::OutputArchive archive;
      it->second->serialize(archive);
      std::ostringstream bytes;
      archive.save_to(bytes);
      out.push_back(bytes.str());
    }
  }
  return out;
}

daifu::Options options_for(const std::filesystem::path& wp) {
  return daifu::Options().workplace(wp.string()).inject("");
}

// Retries failures of the kind the fault raises (a user surgery: the built-ins do not retry
// unknown errors).
void retry_everything(daifu::Session& session) {
  session.surgeries().add("retry", [](const daifu::Failure&) { return true; },
                          [](daifu::RepairContext&) { return daifu::Action::Retry; });
}

class EveryOptimizer : public ::testing::TestWithParam<Opt> {};

TEST_P(EveryOptimizer, FailureInsideOptimizerStepAtStep37EndsBitwiseEqualToAFaultFreeRun) {
  Trainer plain(GetParam());
  for (int64_t i = 0; i < 50; ++i) {
    plain.forward_backward(i);
    plain.optimizer->step();
  }

  Trainer guarded(GetParam());
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp).snapshot_every(10));
  session.track("model", *guarded.net);
  session.track("optimizer", *guarded.optimizer);
  retry_everything(session);
  DAIFU_GUARD(session, step, 0, 50) {
    guarded.forward_backward(step.index());
    if (step.index() == 37 && step.attempt() == 0) guarded.step_failing_halfway();
    guarded.optimizer->step();
  };

  expect_bitwise_equal(plain.state(), guarded.state());
  EXPECT_TRUE(optimizer_bytes(*plain.optimizer) == optimizer_bytes(*guarded.optimizer)) << "optimizer state differs";
  EXPECT_EQ(session.global_step(), 50);
  EXPECT_EQ(session.stats().rollbacks, 1);
  EXPECT_EQ(session.stats().rerun_steps, 7);
  const auto rollback = events(wp, "rollback");
  ASSERT_EQ(rollback.size(), 1u);
  EXPECT_EQ(rollback[0]["step"], 37);
  EXPECT_EQ(rollback[0]["to_step"], 30);
  EXPECT_EQ(rollback[0]["rerun_steps"], 7);
  EXPECT_EQ(rollback[0]["mutated"], nlohmann::json::array({"model", "optimizer"}));
  // Recovery ends when the re-run is back at the failed step.
  const auto caught_up = events(wp, "caught_up");
  ASSERT_EQ(caught_up.size(), 1u);
  EXPECT_EQ(caught_up[0]["step"], 37);
  EXPECT_EQ(caught_up[0]["rerun_from"], 30);
  EXPECT_EQ(caught_up[0]["rerun_steps"], 7);
  EXPECT_GE(caught_up[0]["recovery_us"].get<double>(), events(wp, "resume").at(0)["recovery_us"].get<double>());
}

INSTANTIATE_TEST_SUITE_P(Snapshot, EveryOptimizer,
                         ::testing::Values(Opt::SGD, Opt::Adam, Opt::AdamW, Opt::RMSprop, Opt::Adagrad),
                         [](const auto& info) { return std::string(name_of(info.param)); });

TEST(Snapshot, RealAdamErrorAfterSomeParametersWereUpdated) {
  Trainer plain(Opt::Adam, 0.0);
  for (int64_t i = 0; i < 45; ++i) {
    plain.forward_backward(i);
    plain.optimizer->step();
  }
  Trainer guarded(Opt::Adam, 0.0);
  daifu::Session session(options_for(fresh_dir()));  // automatic snapshot interval
  session.track("model", *guarded.net);
  session.track("optimizer", *guarded.optimizer);
  session.classifier().add_pattern("does not support sparse gradients", daifu::FailureKind::TransientRuntime);
  DAIFU_GUARD(session, step, 0, 45) {
    guarded.forward_backward(step.index());
    if (step.index() == 37 && step.attempt() == 0) {
      // Adam updates the parameters in order and checks each gradient as it goes: a sparse
      // gradient on the last one fails after the others were updated.
      auto last = guarded.net->parameters().back();
      last.mutable_grad() = last.grad().to_sparse();
    }
    guarded.optimizer->step();
  };
  expect_bitwise_equal(plain.state(), guarded.state());
  EXPECT_TRUE(optimizer_bytes(*plain.optimizer) == optimizer_bytes(*guarded.optimizer)) << "optimizer state differs";
  EXPECT_EQ(session.incidents().at(0).failure.exception_type, "c10::Error");
  EXPECT_GE(session.stats().rollbacks, 1);
}

TEST(Snapshot, NanThatReachedTheWeightsIsRolledBack) {
  Trainer plain(Opt::Adam);
  for (int64_t i = 0; i < 50; ++i) {
    plain.forward_backward(i);
    plain.optimizer->step();
  }
  Trainer guarded(Opt::Adam);
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp).snapshot_every(8));
  session.track("model", *guarded.net);
  session.track("optimizer", *guarded.optimizer);
  retry_everything(session);
  DAIFU_GUARD(session, step, 0, 50) {
    if (step.index() == 37 && step.attempt() == 0) {
      guarded.x[(37 % 64) * 8][2] = std::numeric_limits<float>::quiet_NaN();  // a corrupt sample
    }
    guarded.forward_backward(step.index());
    guarded.optimizer->step();
    if (step.index() == 37 && step.attempt() == 0) guarded.x[(37 % 64) * 8][2] = plain.x[(37 % 64) * 8][2];
    for (const auto& p : guarded.net->parameters()) {
      TORCH_CHECK(torch::isfinite(p).all().item<bool>(), "non-finite gradient reached the weights");
    }
  };
  expect_bitwise_equal(plain.state(), guarded.state());
  EXPECT_TRUE(optimizer_bytes(*plain.optimizer) == optimizer_bytes(*guarded.optimizer)) << "optimizer state differs";
  EXPECT_EQ(events(wp, "failure").at(0)["kind"], "numeric_fault");
  EXPECT_EQ(events(wp, "rollback").at(0)["to_step"], 32);
}

TEST(Snapshot, FailureInTheVeryFirstOptimizerStepRemovesTheNewStateEntries) {
  Trainer plain(Opt::Adam);
  for (int64_t i = 0; i < 5; ++i) {
    plain.forward_backward(i);
    plain.optimizer->step();
  }
  Trainer guarded(Opt::Adam);
  daifu::Session session(options_for(fresh_dir()));
  session.track("model", *guarded.net);
  session.track("optimizer", *guarded.optimizer);
  retry_everything(session);
  DAIFU_GUARD(session, step, 0, 5) {
    guarded.forward_backward(step.index());
    if (step.index() == 0 && step.attempt() == 0) guarded.step_failing_halfway();
    guarded.optimizer->step();
  };
  expect_bitwise_equal(plain.state(), guarded.state());
  EXPECT_TRUE(optimizer_bytes(*plain.optimizer) == optimizer_bytes(*guarded.optimizer)) << "optimizer state differs";
}

TEST(Snapshot, RerunStepsSeeTheirMemoizedDataAndInjectionsFireOnce) {
  Trainer guarded(Opt::SGD);
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).snapshot_every(10).inject("io@33"));
  session.track("model", *guarded.net);
  session.track("optimizer", *guarded.optimizer);
  retry_everything(session);
  int64_t pulled = 0;
  std::vector<int64_t> executed;
  DAIFU_GUARD(session, step, 0, 40) {
    const int64_t batch = step.once("batch", [&] { return pulled++; });
    EXPECT_EQ(batch, step.index());
    executed.push_back(step.index());
    guarded.forward_backward(batch);
    if (step.index() == 36 && step.attempt() == 0) guarded.step_failing_halfway();
    guarded.optimizer->step();
  };
  EXPECT_EQ(pulled, 40);  // no batch pulled twice
  EXPECT_EQ(events(wp, "failure").size(), 2u);  // io@33 once, the optimizer fault once
  EXPECT_EQ(std::count(executed.begin(), executed.end(), 33), 2);  // first run, re-run
  EXPECT_EQ(std::count(executed.begin(), executed.end(), 36), 2);  // failed attempt, retry
  EXPECT_EQ(std::count(executed.begin(), executed.end(), 37), 1);
}

TEST(Snapshot, SkipAfterRollbackReRunsTheStepsBeforeAndDropsOnlyTheFailedOne) {
  Trainer plain(Opt::Adam, 0.0);
  for (int64_t i = 0; i < 20; ++i) {
    if (i == 13) continue;
    plain.forward_backward(i);
    plain.optimizer->step();
  }
  Trainer guarded(Opt::Adam, 0.0);
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp).snapshot_every(5));
  session.track("model", *guarded.net);
  session.track("optimizer", *guarded.optimizer);
  session.surgeries().add("skip", [](const daifu::Failure&) { return true; },
                          [](daifu::RepairContext&) { return daifu::Action::Skip; });
  DAIFU_GUARD(session, step, 0, 20) {
    guarded.forward_backward(step.index());
    if (step.index() == 13) guarded.step_failing_halfway();
    guarded.optimizer->step();
  };
  expect_bitwise_equal(plain.state(), guarded.state());
  EXPECT_EQ(session.stats().skipped_steps, 1);
  EXPECT_EQ(session.global_step(), 19);
  // Steps 10-12 re-run, then 13 skipped: the recovery is timed by caught_up, not by the skip.
  const auto caught_up = events(wp, "caught_up");
  ASSERT_EQ(caught_up.size(), 1u);
  EXPECT_EQ(caught_up[0]["step"], 13);
  EXPECT_EQ(caught_up[0]["rerun_steps"], 3);
  EXPECT_FALSE(events(wp, "skip").at(0).contains("recovery_us"));
}

TEST(Snapshot, PermanentFaultAfterTheUpdateIsStillBounded) {
  Trainer guarded(Opt::SGD);
  daifu::Session session(options_for(fresh_dir()).snapshot_every(4).max_attempts(3));
  session.track("model", *guarded.net);
  session.track("optimizer", *guarded.optimizer);
  retry_everything(session);
  int64_t attempts_at_6 = 0;
  EXPECT_THROW(
      {
        DAIFU_GUARD(session, step, 0, 10) {
          guarded.forward_backward(step.index());
          guarded.optimizer->step();
          if (step.index() == 6) {
            ++attempts_at_6;
            throw std::runtime_error("checkpoint hook failed");
          }
        };
      },
      daifu::Unrecovered);
  EXPECT_EQ(attempts_at_6, 3);
  EXPECT_EQ(session.stats().rollbacks, 2);
}

TEST(Snapshot, LbfgsStateIsRestored) {
  auto run = [](bool fault) {
    torch::manual_seed(3);
    torch::nn::Linear model(4, 1);
    torch::optim::LBFGS lbfgs(model->parameters(), torch::optim::LBFGSOptions(0.5).max_iter(4));
    const auto x = torch::randn({32, 4});
    const auto y = x.sum(1, true);
    daifu::Session session(daifu::Options().workplace(fresh_dir(fault ? "f" : "p").string()).inject(""));
    session.track("model", *model);
    session.track("optimizer", lbfgs);
    retry_everything(session);
    DAIFU_GUARD(session, step, 0, 8) {
      lbfgs.step([&] {
        lbfgs.zero_grad();
        auto loss = torch::mse_loss(model->forward(x), y);
        loss.backward();
        return loss;
      });
      if (fault && step.index() == 5 && step.attempt() == 0) throw std::runtime_error("after the update");
    };
    // LibTorch cannot serialize an LBFGS state with undefined tensors: compare field by field.
    const auto& state = static_cast<const torch::optim::LBFGSParamState&>(*lbfgs.state().begin()->second);
    std::vector<torch::Tensor> tensors = {model->weight.detach().clone(), state.d(), state.H_diag(),
                                          state.prev_flat_grad()};
    for (const auto* deque : {&state.old_dirs(), &state.old_stps(), &state.ro()}) {
      tensors.insert(tensors.end(), deque->begin(), deque->end());
    }
    const std::vector<double> scalars = {static_cast<double>(state.func_evals()), static_cast<double>(state.n_iter()),
                                         state.t(), state.prev_loss()};
    return std::make_pair(tensors, scalars);
  };
  const auto plain = run(false);
  const auto guarded = run(true);
  ASSERT_EQ(plain.first.size(), guarded.first.size());
  EXPECT_GT(plain.first.size(), 4u);
  for (std::size_t i = 0; i < plain.first.size(); ++i) {
    EXPECT_EQ(plain.first[i].defined(), guarded.first[i].defined()) << i;
    if (plain.first[i].defined()) EXPECT_TRUE(torch::equal(plain.first[i], guarded.first[i])) << i;
  }
  EXPECT_EQ(plain.second, guarded.second);
}

TEST(Snapshot, TrackedTensorsAreRestoredAndStatsAreReported) {
  torch::Tensor ema = torch::zeros({3});
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
  session.track("ema", ema);
  retry_everything(session);
  DAIFU_GUARD(session, step, 0, 6) {
    ema.add_(1);
    if (step.index() == 4 && step.attempt() == 0) throw std::runtime_error("after the update");
  };
  EXPECT_TRUE(torch::equal(ema, torch::full({3}, 6.0)));
  const auto stats = session.snapshot_stats();
  EXPECT_GE(stats.captures, 1);
  EXPECT_EQ(stats.bytes, 3 * sizeof(float));
  EXPECT_GE(stats.every, 1);
  EXPECT_EQ(events(wp, "snapshot").at(0)["bytes"], 12);
}

TEST(Snapshot, ARestoreThatDoesNotFitIsRefusedBeforeAnythingChanges) {
  torch::manual_seed(14);
  torch::nn::Sequential net(torch::nn::Linear(4, 4), torch::nn::Linear(4, 2));
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  retry_everything(session);
  auto params = net->parameters();
  torch::Tensor changed;
  try {
    DAIFU_GUARD(session, step, 0, 2) {
      if (step.index() == 1) {
        torch::NoGradGuard no_grad;
        params[0].add_(1);
        changed = params[0].clone();
        params[3].set_data(torch::zeros({3}));  // the last tensor no longer fits (a widened layer)
        throw std::system_error(std::make_error_code(std::errc::io_error), "after the change");
      }
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("restoring the snapshot failed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("changed shape since the snapshot"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(torch::equal(params[0], changed));  // refused before anything was copied back
}

TEST(Snapshot, SnapshotNowIsTakenAtTheNextStep) {
  torch::Tensor counter = torch::zeros({1});
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).snapshot_every(1000).inject(""));
  session.track("counter", counter);
  retry_everything(session);
  DAIFU_GUARD(session, step, 0, 10) {
    if (step.index() == 5 && step.attempt() == 0) session.snapshot_now();
    counter.add_(1);
    if (step.index() == 8 && step.attempt() == 0) throw std::runtime_error("after the update");
  };
  EXPECT_EQ(events(wp, "rollback").at(0)["to_step"], 6);
  EXPECT_EQ(session.stats().rerun_steps, 2);  // steps 6 and 7
  EXPECT_EQ(session.snapshot_stats().last_step, 8);  // the retry after a rollback starts from its own
  EXPECT_EQ(session.snapshot_stats().captures, 3);   // steps 0, 6 and 8
  EXPECT_TRUE(torch::equal(counter, torch::full({1}, 10.0)));
}

TEST(Snapshot, ASecondFailureOfARolledBackStepReRunsNothing) {
  torch::Tensor counter = torch::zeros({1});
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).snapshot_every(1000).inject(""));
  session.track("counter", counter);
  retry_everything(session);
  DAIFU_GUARD(session, step, 0, 10) {
    counter.add_(1);
    if (step.index() == 8 && step.attempt() < 2) throw std::runtime_error("after the update");
  };
  const auto rollbacks = events(wp, "rollback");
  ASSERT_EQ(rollbacks.size(), 2u);
  EXPECT_EQ(rollbacks[0]["rerun_steps"], 8);  // back to step 0's snapshot
  EXPECT_EQ(rollbacks[1]["rerun_steps"], 0);  // the retry's own
  EXPECT_EQ(session.stats().rerun_steps, 8);
  EXPECT_TRUE(torch::equal(counter, torch::full({1}, 10.0)));
}

// --- Persistent snapshots -----------------------------------------------------------------

// How a kill_target run ends: run to completion, or SIGKILL after a delay from its start, or
// SIGKILL a few microseconds after it reported `steps` more steps (progress, not time, so
// that the test does not depend on how loaded the machine is).
struct Kill {
  std::chrono::microseconds after{0};
  int64_t after_steps = -1;  // -1: count time from the start instead
};

// Returns true when the run finished (exit status 0).
bool run_kill_target(const std::filesystem::path& wp, int64_t steps, const std::filesystem::path& out,
                     std::optional<Kill> kill) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) throw std::runtime_error("pipe");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    const std::string steps_text = std::to_string(steps);
    ::execl(DAIFU_KILL_TARGET, DAIFU_KILL_TARGET, wp.c_str(), steps_text.c_str(), out.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  if (kill) {
    if (kill->after_steps < 0) {
      std::this_thread::sleep_for(kill->after);
    } else {
      FILE* progress = ::fdopen(pipe_fds[0], "r");
      char line[64];
      for (int64_t seen = 0; seen < kill->after_steps && std::fgets(line, sizeof line, progress) != nullptr;) ++seen;
      std::this_thread::sleep_for(kill->after);
      ::kill(pid, SIGKILL);
      std::fclose(progress);
      pipe_fds[0] = -1;
    }
    ::kill(pid, SIGKILL);
  }
  if (pipe_fds[0] >= 0) {
    char sink[4096];
    while (::read(pipe_fds[0], sink, sizeof sink) > 0) {
    }
    ::close(pipe_fds[0]);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) ADD_FAILURE() << "kill_target exited with " << WEXITSTATUS(status);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::vector<torch::Tensor> load_params(const std::filesystem::path& file) {
  std::vector<torch::Tensor> params;
  torch::load(params, file.string());
  return params;
}

TEST(PersistentSnapshot, KilledAt20RandomInstantsAndRestartedEndsBitwiseEqual) {
  const int64_t steps = 3000;
  const auto dir = fresh_dir();
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(run_kill_target(dir / "uninterrupted", steps, dir / "uninterrupted.pt", std::nullopt));

  // A quarter of the kills strike during start-up (within ~0.5 s); the others a random
  // 0-3 ms after 1-100 more steps, which lands them anywhere in a step: forward, backward,
  // capturing the snapshot, committing it.
  std::mt19937 rng(20261122);
  std::uniform_int_distribution<int> coin(0, 3);
  std::uniform_int_distribution<int64_t> startup_us(0, 500'000), step_count(1, 100), jitter_us(0, 3000);
  int kills = 0;
  bool finished = false;
  for (int i = 0; i < 20 && !finished; ++i) {
    Kill kill;
    if (coin(rng) == 0) {
      kill.after = std::chrono::microseconds(startup_us(rng));
    } else {
      kill.after_steps = step_count(rng);
      kill.after = std::chrono::microseconds(jitter_us(rng));
    }
    finished = run_kill_target(dir / "killed", steps, dir / "killed.pt", kill);
    kills += finished ? 0 : 1;
  }
  if (!finished) finished = run_kill_target(dir / "killed", steps, dir / "killed.pt", std::nullopt);
  ASSERT_TRUE(finished);
  EXPECT_EQ(kills, 20);
  expect_bitwise_equal(load_params(dir / "uninterrupted.pt"), load_params(dir / "killed.pt"));
  EXPECT_GE(events(dir / "killed", "resumed").size(), 1u);
}

struct SmallRun {
  explicit SmallRun(int64_t width) : net(torch::nn::Linear(4, width)), optimizer(net->parameters(), 0.01) {}
  torch::nn::Linear net;
  torch::optim::Adam optimizer;
  void train(daifu::Session& session, int64_t steps) {
    session.track("model", *net);
    session.track("optimizer", optimizer);
    DAIFU_GUARD(session, step, 0, steps) {
      optimizer.zero_grad();
      net->forward(torch::ones({2, 4}) * static_cast<double>(step.index())).pow(2).mean().backward();
      optimizer.step();
    };
  }
};

TEST(PersistentSnapshot, ResumesAtTheStepOfTheNewestSnapshot) {
  const auto wp = fresh_dir();
  {
    SmallRun run(3);
    daifu::Session session(daifu::Options().workplace(wp.string()).persist(true).snapshot_every(4).inject(""));
    run.train(session, 10);  // snapshots at steps 0, 4, 8
  }
  SmallRun resumed(3);
  daifu::Session session(daifu::Options().workplace(wp.string()).persist(true).resume(true).inject(""));
  int64_t first_index = -1;
  session.track("model", *resumed.net);
  session.track("optimizer", resumed.optimizer);
  DAIFU_GUARD(session, step, 0, 10) {
    if (first_index < 0) first_index = step.index();
  };
  EXPECT_EQ(first_index, 8);
  EXPECT_EQ(session.global_step(), 10);
  EXPECT_EQ(events(wp, "resumed").at(0)["step"], 8);
  EXPECT_EQ(resumed.optimizer.state().size(), 2u);  // Adam state came back from disk
}

TEST(PersistentSnapshot, AMismatchingModelIsRefusedAndNothingIsLoaded) {
  const auto wp = fresh_dir();
  {
    SmallRun run(3);
    daifu::Session session(daifu::Options().workplace(wp.string()).persist(true).inject(""));
    run.train(session, 3);
  }
  SmallRun other(5);
  const auto before = other.net->weight.detach().clone();
  daifu::Session session(daifu::Options().workplace(wp.string()).resume(true).inject(""));
  try {
    other.train(session, 3);
    FAIL() << "expected daifu::Error";
  } catch (const daifu::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("does not fit this program"), std::string::npos) << what;
    EXPECT_NE(what.find("weight is [5,4] here, [3,4] in the snapshot"), std::string::npos) << what;
  }
  EXPECT_TRUE(torch::equal(before, other.net->weight));
  EXPECT_TRUE(other.optimizer.state().empty());
}

TEST(PersistentSnapshot, ATruncatedSnapshotFileIsRefusedWithAReasonAndTrainingStartsFresh) {
  const auto wp = fresh_dir();
  {
    SmallRun run(3);
    daifu::Session session(daifu::Options().workplace(wp.string()).persist(true).inject(""));
    run.train(session, 3);
  }
  for (const auto& entry : std::filesystem::directory_iterator(wp / "snapshots")) {
    if (entry.path().extension() == ".bin") std::filesystem::resize_file(entry.path(), 100);
  }
  SmallRun fresh(3);
  daifu::Session session(daifu::Options().workplace(wp.string()).resume(true).inject(""));
  fresh.train(session, 3);
  EXPECT_EQ(session.global_step(), 3);
  const auto skipped = events(wp, "resume_skipped");
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0]["reason"].get<std::string>().find("truncated"), std::string::npos) << skipped[0]["reason"];
}

TEST(PersistentSnapshot, ACorruptNewestSlotFallsBackToTheOlderOne) {
  const auto wp = fresh_dir();
  {
    SmallRun run(3);
    daifu::Session session(daifu::Options().workplace(wp.string()).persist(true).snapshot_every(2).inject(""));
    run.train(session, 6);  // snapshots at 0, 2, 4: the slots hold 2 and 4
  }
  std::filesystem::path bin;
  for (const auto& entry : std::filesystem::directory_iterator(wp / "snapshots")) {
    if (entry.path().extension() == ".bin") bin = entry.path();
  }
  ASSERT_FALSE(bin.empty());
  // Flip every byte of the last quarter of the file: the payload of the second slot.
  {
    std::fstream f(bin, std::ios::in | std::ios::out | std::ios::binary);
    const auto size = std::filesystem::file_size(bin);
    for (auto pos = size - size / 4; pos < size; pos += 8) {
      f.seekg(static_cast<std::streamoff>(pos));
      const char c = static_cast<char>(f.get());
      f.seekp(static_cast<std::streamoff>(pos));
      f.put(static_cast<char>(~c));
    }
  }
  SmallRun resumed(3);
  daifu::Session session(daifu::Options().workplace(wp.string()).resume(true).inject(""));
  resumed.train(session, 6);
  const auto step = events(wp, "resumed").at(0)["step"].get<int64_t>();
  EXPECT_TRUE(step == 2 || step == 4) << step;
  EXPECT_EQ(session.global_step(), 6);
}

std::map<std::string, std::vector<float>> parameter_values(const torch::nn::Module& net) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& item : net.named_parameters()) {
    const auto values = item.value().detach().contiguous();
    out[item.key()] = std::vector<float>(values.data_ptr<float>(), values.data_ptr<float>() + values.numel());
  }
  return out;
}

// tests/data/snapshot-a5e5e75: the snapshots folder of a SmallRun(3) run of 10 steps with a
// snapshot every 4 steps, written by commit a5e5e75 (hand-written XXH64), and the parameters
// at the start of step 8 (the newest snapshot). Later builds must verify and resume it: the
// checksum is the same algorithm whichever code computes it. DAIFU_WRITE_SNAPSHOT_DATA=DIR
// writes a new such folder (a run of the same program) before the test reads it back.
TEST(PersistentSnapshot, AFileWrittenByAnEarlierBuildVerifiesAndResumes) {
  const std::filesystem::path data = std::string(DAIFU_TEST_DATA) + "/snapshot-a5e5e75";
  if (const char* out = std::getenv("DAIFU_WRITE_SNAPSHOT_DATA")) {
    const auto wp = fresh_dir("-writer");
    torch::manual_seed(8);
    SmallRun run(3);
    nlohmann::json expected;
    daifu::Session session(daifu::Options().workplace(wp.string()).persist(true).snapshot_every(4).inject(""));
    session.track("model", *run.net);
    session.track("optimizer", run.optimizer);
    DAIFU_GUARD(session, step, 0, 10) {
      if (step.index() == 8) {
        expected = parameter_values(*run.net);
      }
      run.optimizer.zero_grad();
      run.net->forward(torch::ones({2, 4}) * static_cast<double>(step.index())).pow(2).mean().backward();
      run.optimizer.step();
    };
    std::filesystem::create_directories(out);
    std::filesystem::copy(wp / "snapshots", std::filesystem::path(out) / "snapshots",
                          std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
    std::ofstream(std::filesystem::path(out) / "expected.json") << expected.dump(1) << "\n";
  }
  ASSERT_TRUE(std::filesystem::exists(data / "snapshots")) << data;
  const auto wp = fresh_dir();
  std::filesystem::create_directories(wp);
  std::filesystem::copy(data / "snapshots", wp / "snapshots", std::filesystem::copy_options::recursive);
  nlohmann::json expected;
  std::ifstream(data / "expected.json") >> expected;

  torch::manual_seed(9);  // other initial weights: everything checked below came from the file
  SmallRun resumed(3);
  daifu::Session session(daifu::Options().workplace(wp.string()).resume(true).inject(""));
  session.track("model", *resumed.net);
  session.track("optimizer", resumed.optimizer);
  std::map<std::string, std::vector<float>> at_resume;
  DAIFU_GUARD(session, step, 0, 10) {
    if (at_resume.empty()) {
      EXPECT_EQ(step.index(), 8);
      at_resume = parameter_values(*resumed.net);
    }
  };
  ASSERT_EQ(events(wp, "resumed").size(), 1u) << "not resumed: " << nlohmann::json(events(wp, "resume_skipped")).dump();
  EXPECT_EQ(events(wp, "resumed").at(0)["step"], 8);
  EXPECT_EQ(resumed.optimizer.state().size(), 2u);
  ASSERT_EQ(at_resume.size(), 2u);
  for (const auto& [name, values] : at_resume) {
    EXPECT_EQ(values, expected.at(name).get<std::vector<float>>()) << name;  // bitwise: floats survive JSON
  }
}

}  // namespace snapshot_test
