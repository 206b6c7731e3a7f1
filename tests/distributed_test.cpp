// Distributed sessions for real: 2 and 4 processes of dist_target on 127.0.0.1, data-parallel
// over c10d Gloo, with a fault on rank 1 at step 20. Every rank must repair the same step the
// same way and end with the same parameters as a fault-free run; a killed rank must end the
// others within the group's timeout, with a clear escalation, not a hang.
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "test_util.h"

namespace distributed_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;

// A TCP port nobody listens on now (the kernel's choice for port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct Ranks {
  std::vector<int> exit_codes;  // -signal for a rank killed by a signal
  std::vector<std::vector<torch::Tensor>> params;
  std::filesystem::path workplace;
  double seconds = 0;
};

// Runs `world` ranks of dist_target; `extra(rank)` gives a rank's extra flags. Each rank is
// killed if all have not ended within `limit` (the test then fails).
Ranks run(int world, const std::filesystem::path& dir, const std::function<std::vector<std::string>(int)>& extra,
          std::chrono::seconds limit = std::chrono::seconds(90)) {
  std::filesystem::create_directories(dir);
  const std::string port = std::to_string(free_port());
  std::vector<pid_t> pids;
  const auto started = std::chrono::steady_clock::now();
  for (int rank = 0; rank < world; ++rank) {
    std::vector<std::string> args = {DAIFU_DIST_TARGET, std::to_string(rank), std::to_string(world), port,
                                     (dir / "workplace").string(), (dir / ("params-" + std::to_string(rank) + ".pt")).string()};
    for (auto& a : extra(rank)) args.push_back(a);
    pids.push_back(daifu::testing::spawn_logged(std::move(args), dir / ("rank-" + std::to_string(rank) + ".log")));
  }
  Ranks out;
  out.exit_codes.assign(world, -1000);
  int running = world;
  while (running > 0) {
    for (int rank = 0; rank < world; ++rank) {
      if (out.exit_codes[rank] != -1000) continue;
      int status = 0;
      if (::waitpid(pids[rank], &status, WNOHANG) == pids[rank]) {
        out.exit_codes[rank] = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        --running;
      }
    }
    if (running > 0 && std::chrono::steady_clock::now() - started > limit) {
      ADD_FAILURE() << running << " ranks still running after " << limit.count() << " s: killed";
      for (int rank = 0; rank < world; ++rank) {
        if (out.exit_codes[rank] == -1000) ::kill(pids[rank], SIGKILL);
      }
      limit = std::chrono::seconds(1 << 20);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  out.workplace = dir / "workplace";
  for (int rank = 0; rank < world; ++rank) {
    std::vector<torch::Tensor> p;
    const auto file = dir / ("params-" + std::to_string(rank) + ".pt");
    if (std::filesystem::exists(file)) torch::load(p, file.string());
    out.params.push_back(std::move(p));
  }
  return out;
}

std::filesystem::path rank_workplace(const Ranks& r, int rank) { return r.workplace / ("rank-" + std::to_string(rank)); }

bool bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size() || a.empty()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

bool all_close(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size() || a.empty()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!torch::allclose(a[i], b[i], 1e-4, 1e-5)) return false;
  }
  return true;
}

std::function<std::vector<std::string>(int)> on_rank1(std::vector<std::string> flags, std::vector<std::string> all = {}) {
  return [flags, all](int rank) {
    std::vector<std::string> out = all;
    if (rank == 1) out.insert(out.end(), flags.begin(), flags.end());
    return out;
  };
}

void expect_all_trained(const Ranks& r) {
  for (std::size_t rank = 0; rank < r.exit_codes.size(); ++rank) {
    EXPECT_EQ(r.exit_codes[rank], 0) << "rank " << rank;
    EXPECT_TRUE(bitwise_equal(r.params[rank], r.params[0])) << "rank " << rank << " differs from rank 0";
  }
}

TEST(Distributed, ATransientErrorOnRank1IsRetriedByBothRanksAndEndsBitwiseAsWithoutIt) {
  const Ranks clean = run(2, fresh_dir("clean"), on_rank1({}));
  expect_all_trained(clean);
  const Ranks faulty = run(2, fresh_dir("faulty"), on_rank1({"--plan", "transient@20"}));
  expect_all_trained(faulty);
  EXPECT_TRUE(bitwise_equal(faulty.params[0], clean.params[0]));
  const auto failures = events(rank_workplace(faulty, 1), "failure");
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0]["step"], 20);
  EXPECT_EQ(failures[0]["kind"], "transient_runtime");
  const auto told = events(rank_workplace(faulty, 0), "peer_failure");
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0]["step"], 20);
  EXPECT_EQ(told[0]["leader"], 1);
  EXPECT_EQ(told[0]["action"], "retry");
  EXPECT_EQ(told[0]["kind"], "transient_runtime");
  EXPECT_TRUE(events(rank_workplace(faulty, 0), "failure").empty());
  for (int rank = 0; rank < 2; ++rank) {
    const auto end = events(rank_workplace(faulty, rank), "run_end");
    ASSERT_EQ(end.size(), 1u);
    EXPECT_EQ(end[0]["status"], "ok");
    EXPECT_EQ(end[0]["committed_steps"], 40);
  }
  // `daifu log` on the workplace merges the ranks' journals.
  std::string out;
  FILE* pipe = ::popen((std::string(DAIFU_CLI) + " -w " + faulty.workplace.string() + " log --json 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
  ASSERT_EQ(::pclose(pipe), 0) << out;
  const auto rows = nlohmann::json::parse(out);
  ASSERT_EQ(rows.size(), 1u) << out;
  EXPECT_EQ(rows[0]["rank"], 1);
  EXPECT_EQ(rows[0]["step"], 20);
  EXPECT_EQ(rows[0]["surgery"], "transient_retry");
}

// The same over NCCL, each rank on its own GPU (a CUDA LibTorch with NCCL and 2 devices).
TEST(Distributed, OverNcclATransientErrorOnRank1IsRetriedByBothRanksAndEndsBitwiseAsWithoutIt) {
#ifndef DAIFU_DIST_TARGET_NCCL
  GTEST_SKIP() << "dist_target was built without NCCL (a CPU-only LibTorch)";
#endif
  if (torch::cuda::device_count() < 2) {
    GTEST_SKIP() << "needs 2 CUDA devices, this machine has " << static_cast<int>(torch::cuda::device_count());
  }
  const Ranks clean = run(2, fresh_dir("clean"), on_rank1({}, {"--device", "cuda"}));
  expect_all_trained(clean);
  const Ranks faulty = run(2, fresh_dir("faulty"), on_rank1({"--plan", "transient@20"}, {"--device", "cuda"}));
  expect_all_trained(faulty);
  EXPECT_TRUE(bitwise_equal(faulty.params[0], clean.params[0]));
  const auto failures = events(rank_workplace(faulty, 1), "failure");
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0]["kind"], "transient_runtime");
  const auto told = events(rank_workplace(faulty, 0), "peer_failure");
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0]["step"], 20);
  EXPECT_EQ(told[0]["action"], "retry");
}

// Rank 1 fails after its optimizer step: every rank has updated its weights, so every rank
// restores the same snapshot and re-runs the steps since it together. The others learn of it
// at the next step's update point, which carries that step's end (22), when they settle the end point before
// the snapshot of the next step (24: snapshots every 5 steps), or at the loop's end (39).
class AfterUpdate : public ::testing::TestWithParam<int> {};

TEST_P(AfterUpdate, EveryRankRollsBackToTheSameSnapshotAndEndsBitwiseAsWithoutTheFault) {
  const int failed_step = GetParam();
  static const Ranks clean = run(2, fresh_dir("clean"), on_rank1({}));
  const Ranks r = run(2, fresh_dir("faulty"), on_rank1({"--fail-after-update", std::to_string(failed_step)}));
  expect_all_trained(r);
  EXPECT_TRUE(bitwise_equal(r.params[0], clean.params[0]));
  for (int rank = 0; rank < 2; ++rank) {
    const auto rollbacks = events(rank_workplace(r, rank), "rollback");
    ASSERT_EQ(rollbacks.size(), 1u) << rank;
    EXPECT_EQ(rollbacks[0]["step"], failed_step);
    EXPECT_EQ(rollbacks[0]["to_step"], failed_step / 5 * 5);
    const auto end = events(rank_workplace(r, rank), "run_end");
    ASSERT_EQ(end.size(), 1u);
    EXPECT_EQ(end[0]["committed_steps"], 40) << rank;
  }
  const auto told = events(rank_workplace(r, 0), "peer_failure");
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0]["step"], failed_step);
  EXPECT_EQ(told[0]["rollback"], true);
}

INSTANTIATE_TEST_SUITE_P(Distributed, AfterUpdate, ::testing::Values(22, 24, 39));

TEST(Distributed, FourRanksRetryTheSameStepAndEndBitwiseAsWithoutTheFault) {
  const Ranks clean = run(4, fresh_dir("clean"), on_rank1({}));
  expect_all_trained(clean);
  const Ranks faulty = run(4, fresh_dir("faulty"), on_rank1({"--plan", "transient@20"}));
  expect_all_trained(faulty);
  EXPECT_TRUE(bitwise_equal(faulty.params[0], clean.params[0]));
  for (int rank : {0, 2, 3}) EXPECT_EQ(events(rank_workplace(faulty, rank), "peer_failure").size(), 1u) << rank;
}

// A weight set to 1e6 on rank 1 at step 21 leaves the 1-D gradients bounded (the loss's
// gradient is), and all gradients are read every 20th step only, so step 21's averaged
// gradients carry it to rank 0's next layer. The state checks, at every step of a distributed
// session, find both ranks' weights at step 21's end (param_spike on each), and every rank
// restores step 20's snapshot. Training ends as without the fault.
TEST(Distributed, AWeightCorruptedOnRank1AndSpreadByTheAverageIsRolledBackOnEveryRank) {
  const Ranks clean = run(2, fresh_dir("clean"), on_rank1({}));
  expect_all_trained(clean);
  const Ranks faulty = run(2, fresh_dir("faulty"), on_rank1({"--plan", "value=1e6:param!:model.0.weight@21"}));
  expect_all_trained(faulty);
  EXPECT_TRUE(bitwise_equal(faulty.params[0], clean.params[0]));
  for (int rank = 0; rank < 2; ++rank) {
    const auto detections = events(rank_workplace(faulty, rank), "detection");
    ASSERT_EQ(detections.size(), 1u) << rank;
    EXPECT_EQ(detections[0]["detector"], "param_spike") << rank;
    EXPECT_EQ(detections[0]["step"], 21) << rank;
    const auto rollbacks = events(rank_workplace(faulty, rank), "rollback");
    ASSERT_EQ(rollbacks.size(), 1u) << rank;
    EXPECT_EQ(rollbacks[0]["to_step"], 20) << rank;
    EXPECT_TRUE(events(rank_workplace(faulty, rank), "skip").empty()) << rank;
  }
}

// 2 and 4 ranks.
class Ranked : public ::testing::TestWithParam<int> {};

TEST_P(Ranked, ANanBatchOnRank1IsReExecutedThenSkippedOnEveryRank) {
  // A NaN in rank 1's input at step 20 on every attempt: its gradients are NaN before they are
  // averaged, the detector fires on rank 1 alone, the re-execution repeats it, and
  // exceptional_data skips the step everywhere.
  const int world = GetParam();
  const Ranks r = run(world, fresh_dir(), on_rank1({"--plan", "nan:out:input@20*"}));
  expect_all_trained(r);
  const auto detections = events(rank_workplace(r, 1), "detection");
  ASSERT_EQ(detections.size(), 2u);
  EXPECT_EQ(detections[0]["detector"], "nonfinite_grad");
  EXPECT_EQ(events(rank_workplace(r, 1), "persistent_fault").size(), 1u);
  EXPECT_TRUE(events(rank_workplace(r, 0), "detection").empty());
  for (int rank = 0; rank < world; ++rank) {
    const auto skips = events(rank_workplace(r, rank), "skip");
    ASSERT_EQ(skips.size(), 1u) << rank;
    EXPECT_EQ(skips[0]["step"], 20);
    for (const auto& p : r.params[rank]) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
  }
}

TEST_P(Ranked, AnOutOfMemoryOnRank1HalvesTheMicroBatchOnEveryRank) {
  const int world = GetParam();
  const Ranks clean = run(world, fresh_dir("clean"), on_rank1({}, {"--micro", "16"}));
  expect_all_trained(clean);
  const Ranks r = run(world, fresh_dir("oom"), on_rank1({"--oom-above", "8"}, {"--micro", "16"}));
  expect_all_trained(r);
  const auto repairs = events(rank_workplace(r, 1), "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "out_of_memory");
  EXPECT_EQ(repairs[0]["changes"]["micro_batch"], nlohmann::json({16, 8}));
  for (int rank = 0; rank < world; ++rank) {
    if (rank == 1) continue;
    const auto knobs = events(rank_workplace(r, rank), "knob");
    ASSERT_EQ(knobs.size(), 1u) << rank;
    EXPECT_EQ(knobs[0]["name"], "micro_batch");
    EXPECT_EQ(knobs[0]["after"], 8);
  }
  // Two micro-batches of 8 rows add up the gradient of 16 in another order: close, not bitwise.
  EXPECT_TRUE(all_close(r.params[0], clean.params[0]));
}

INSTANTIATE_TEST_SUITE_P(Distributed, Ranked, ::testing::Values(2, 4));

TEST(Distributed, AKilledRankEndsTheOthersWithAClearEscalationWithinTheTimeout) {
  // The group's timeout is 10 s; run() fails the test if a rank is still running after 60.
  const Ranks r = run(3, fresh_dir(), on_rank1({"--die-at", "20"}), std::chrono::seconds(60));
  EXPECT_EQ(r.exit_codes[1], -SIGKILL);
  for (int rank : {0, 2}) {
    EXPECT_EQ(r.exit_codes[rank], 3) << rank;
    const auto lost = events(rank_workplace(r, rank), "peers_lost");
    ASSERT_EQ(lost.size(), 1u) << rank;
    EXPECT_EQ(lost[0]["step"], 20);
    const std::string reason = lost[0]["reason"];
    EXPECT_NE(reason.find("a peer died"), std::string::npos) << reason;
    EXPECT_EQ(events(rank_workplace(r, rank), "unrecovered").size(), 1u);
  }
}

}  // namespace distributed_test
