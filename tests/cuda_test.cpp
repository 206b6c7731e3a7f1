// daifu on a real GPU: a real CUDA out-of-memory repaired by the micro-batch surgery, rollback of
// CUDA parameters, optimizer state and generators to the bit, and a real device-side assert
// (synchronous, or asynchronous and surfaced at the end of the step that queued it) ending the
// process with the snapshot the next process resumes from. Each test skips, and says why,
// without a CUDA device; scripts/gpu_check.sh runs them on a GPU machine.
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/wait.h>

#include <cerrno>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>

#include "state/cuda_runtime.h"
#include "test_util.h"


namespace cuda_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;

#define DAIFU_SKIP_WITHOUT_CUDA()                                                                       \
  if (!torch::cuda::is_available())                                                                   \
  GTEST_SKIP() << (daifu::detail::built_with_cuda() ? "no CUDA device on this machine"                \
                                                    : "daifu was built against a CPU-only LibTorch")

// Everything torch::save writes for `module` and `optimizer`: equal strings, bitwise equal state.
template <class Module, class Optimizer>
std::string serialized(Module& module, Optimizer& optimizer) {
  std::ostringstream out;
  torch::save(module, out);
  torch::save(optimizer, out);
  return out.str();
}

TEST(Cuda, ARealOutOfMemoryIsRepairedByHalvingTheMicroBatch) {
  DAIFU_SKIP_WITHOUT_CUDA();
  const auto wp = fresh_dir();
  const torch::Device cuda(torch::kCUDA, 0);
  torch::manual_seed(1);
  torch::nn::Linear model(64, 8);
  model->to(cuda);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
  session.track("model", *model);
  session.track("optimizer", optimizer);
  auto& micro = session.knob<int64_t>("micro_batch", 64).min(1);
  const auto x = torch::randn({64, 64}, cuda);
  std::vector<int64_t> sizes;
  DAIFU_GUARD(session, step, 0, 3) {
    optimizer.zero_grad();
    step.micro_batches(x.size(0), micro, [&](int64_t b, int64_t e, double weight) {
      sizes.push_back(e - b);
      // A working buffer that grows with the micro-batch: 2^40 bytes a row beyond 16 rows, more
      // than any GPU has; the caching allocator throws a real CUDA out-of-memory error.
      if (e - b > 16) (void)torch::empty({(e - b) << 38}, torch::TensorOptions().dtype(torch::kFloat).device(cuda));
      (model->forward(x.slice(0, b, e)).pow(2).mean() * weight).backward();
    });
    optimizer.step();
  };
  EXPECT_EQ(micro.get(), 16);
  EXPECT_EQ(session.stats().committed_steps, 3);
  const auto failures = events(wp, "failure");
  ASSERT_EQ(failures.size(), 2u);  // 64 and 32 rows did not fit
  EXPECT_EQ(failures[0]["kind"], "out_of_memory");
  EXPECT_NE(failures[0]["message"].get<std::string>().find("out of memory"), std::string::npos) << failures[0];
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 2u);
  EXPECT_EQ(repairs[0]["surgery"], "out_of_memory");
  EXPECT_EQ(repairs[0]["changes"]["micro_batch"], nlohmann::json::array({64, 32}));
  EXPECT_EQ(repairs[0]["changes"]["cuda_cache_emptied"], nlohmann::json::array({false, true}));
  EXPECT_TRUE(repairs[0]["changes"].contains("cuda_reserved_bytes")) << repairs[0];
  EXPECT_EQ(repairs[1]["changes"]["micro_batch"], nlohmann::json::array({32, 16}));
}

TEST(Cuda, ARetryStartsFromTheStepsCudaStateToTheBit) {
  DAIFU_SKIP_WITHOUT_CUDA();
  const auto wp = fresh_dir();
  const torch::Device cuda(torch::kCUDA, 0);
  torch::manual_seed(2);
  torch::nn::Sequential model(torch::nn::Linear(32, 64), torch::nn::ReLU(), torch::nn::Dropout(0.5),
                              torch::nn::Linear(64, 4));
  model->to(cuda);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-2));
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("").snapshot_every(1));
  session.track("model", *model);
  session.track("optimizer", optimizer);
  const auto x = torch::randn({8, 32}, cuda);
  std::map<int64_t, std::vector<std::string>> state_at_start;
  std::map<int64_t, std::vector<torch::Tensor>> draws;
  DAIFU_GUARD(session, step, 0, 5) {
    state_at_start[step.index()].push_back(serialized(model, optimizer));
    draws[step.index()].push_back(torch::rand({16}, cuda).cpu());  // the CUDA generator
    // Step 1 fails before it changes anything (a retry without a rollback), step 3 after its
    // update (the retry rolls back to the snapshot of the step's start).
    if (step.index() == 1 && step.attempt() == 0) throw std::system_error(EAGAIN, std::generic_category(), "reading");
    optimizer.zero_grad();
    model->forward(x).pow(2).mean().backward();  // dropout draws from the CUDA generator
    optimizer.step();
    if (step.index() == 3 && step.attempt() == 0) throw std::system_error(EAGAIN, std::generic_category(), "uploading");
  };
  for (const int64_t s : {1, 3}) {
    ASSERT_EQ(state_at_start[s].size(), 2u) << "step " << s;
    EXPECT_TRUE(state_at_start[s][0] == state_at_start[s][1]) << "step " << s << ": the retry began from other parameters or optimizer state";
    EXPECT_TRUE(torch::equal(draws[s][0], draws[s][1])) << "step " << s << ": the retry drew other random numbers";
  }
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 2u);
  EXPECT_EQ(repairs[0]["surgery"], "transient_retry");
  EXPECT_EQ(events(wp, "rollback").size(), 1u);
}

// cuda_target's exit code (or -signal) with stdout and stderr in `log`.
int run_cuda_target(const std::vector<std::string>& args, const std::filesystem::path& log) {
  std::vector<std::string> all = {DAIFU_CUDA_TARGET};
  all.insert(all.end(), args.begin(), args.end());
  const pid_t pid = daifu::testing::spawn_logged(std::move(all), log);
  if (pid < 0) return -1000;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

std::string text_of(const std::filesystem::path& file) {
  std::ifstream in(file);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<torch::Tensor> load_params(const std::filesystem::path& file) {
  std::vector<torch::Tensor> params;
  torch::load(params, file.string());
  return params;
}

// GetParam(): the step reads the faulty kernel's result (true) or leaves it queued (false).
class DeviceAssert : public ::testing::TestWithParam<bool> {};

TEST_P(DeviceAssert, IsFatalInTheStepThatQueuedItAndTheNextProcessResumesFromTheSnapshot) {
  DAIFU_SKIP_WITHOUT_CUDA();
  const bool sync = GetParam();
  const auto dir = fresh_dir();
  std::filesystem::create_directories(dir);
  ASSERT_EQ(run_cuda_target({(dir / "clean").string(), "20", (dir / "clean.pt").string()}, dir / "clean.log"), 0)
      << text_of(dir / "clean.log");

  std::vector<std::string> faulty = {(dir / "wp").string(), "20", (dir / "faulty.pt").string(), "--assert-at", "12"};
  if (sync) faulty.push_back("--sync");
  EXPECT_EQ(run_cuda_target(faulty, dir / "faulty.log"), 3) << text_of(dir / "faulty.log");
  const std::string log = text_of(dir / "faulty.log");
  // Queued, the error surfaced when daifu synchronized at the end of step 12: after its body
  // ended, before step 13 began. Read back, it surfaced inside the body.
  EXPECT_EQ(log.find("end 12") != std::string::npos, !sync) << log;
  EXPECT_EQ(log.find("start 13"), std::string::npos) << log;
  const auto failures = events(dir / "wp", "failure");
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0]["step"], 12);
  EXPECT_EQ(failures[0]["kind"], "fatal");
  EXPECT_NE(failures[0]["message"].get<std::string>().find("device-side assert"), std::string::npos) << failures[0];

  // A new process (the device is usable again) resumes from the snapshot of step 10.
  ASSERT_EQ(run_cuda_target({(dir / "wp").string(), "20", (dir / "faulty.pt").string()}, dir / "resumed.log"), 0)
      << text_of(dir / "resumed.log");
  const auto resumed = events(dir / "wp", "resumed");
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0]["step"], 10);
  const auto clean = load_params(dir / "clean.pt");
  const auto ended = load_params(dir / "faulty.pt");
  ASSERT_EQ(clean.size(), ended.size());
  for (std::size_t i = 0; i < clean.size(); ++i) EXPECT_TRUE(torch::equal(clean[i], ended[i])) << "parameter " << i;
}

INSTANTIATE_TEST_SUITE_P(Cuda, DeviceAssert, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? std::string("ReadBack") : std::string("Queued"); });

}  // namespace cuda_test
