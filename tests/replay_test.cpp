// Options::replay: a rerun re-applies the repairs an earlier run recorded (knob values,
// patches), each checked against where it was recorded; what does not fit is skipped with a
// warning that says why.
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_util.h"

#include <filesystem>

namespace replay_test {

namespace fs = std::filesystem;
using daifu::testing::events;
using daifu::testing::fresh_dir;

struct Net : torch::nn::Module {
  explicit Net(int64_t hidden)
      : fc1(register_module("fc1", torch::nn::Linear(8, hidden))), fc2(register_module("fc2", torch::nn::Linear(hidden, 3))) {}
  torch::Tensor forward(const torch::Tensor& x) { return torch::log_softmax(fc2(torch::relu(fc1(x))), 1); }
  torch::nn::Linear fc1, fc2;
};

struct RunResult {
  int64_t failures = 0;
  int64_t batch_at_start = 0;
  int64_t batch_at_end = 0;
  int64_t head_outputs = 0;
  int64_t steps = 0;
};

// 80 steps. From step 40 a batch above 32 needs more memory than there is (a real allocator
// refusal); from step 60 the targets have 10 classes and the head has 3 (a real IndexError),
// which only the widen_head patch in patches/ fixes.
RunResult train(const fs::path& wp, int64_t hidden, std::optional<daifu::ReplayMode> replay, int64_t batch_size = 64) {
  torch::manual_seed(4);
  auto net = std::make_shared<Net>(hidden);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.5));
  daifu::Options options = daifu::Options().workplace(wp.string()).inject("").snapshot_every(10);
  options.replay(replay.has_value());
  if (replay) options.replay_mode(*replay);
  daifu::Session session(options);
  session.surgeries().remove("tensor_mismatch");  // the head is the patch's business
  session.track("model", *net);
  session.track("optimizer", opt);
  auto& batch = session.knob<int64_t>("batch_size", batch_size).min(8);
  RunResult r;
  r.batch_at_start = -1;
  DAIFU_GUARD(session, step, 0, 80) {
    if (r.batch_at_start < 0) r.batch_at_start = batch.get();
    if (step.index() >= 40 && batch.get() > 32) torch::empty({batch.get() << 44}, torch::kByte);
    const int64_t classes = step.index() >= 60 ? 10 : 3;
    auto x = torch::randn({batch.get(), 8});
    auto y = torch::randint(0, classes, {batch.get()});
    opt.zero_grad();
    torch::nll_loss(net->forward(x), y).backward();
    opt.step();
    ++r.steps;
  };
  r.failures = session.stats().failures;
  r.batch_at_end = batch.get();
  r.head_outputs = net->fc2->options.out_features();
  return r;
}

void install_patch(const fs::path& wp) {
  fs::create_directories(wp / "patches");
  fs::permissions(wp / "patches", fs::perms::owner_all);
  fs::copy_file(fs::path(DAIFU_PATCH_DIR) / "patch_widen_head.so", wp / "patches" / "widen_head.so");
}

TEST(Replay, ARerunStartsWithTheRepairsOfTheLastRunAndAChangedModelRefusesTheLayerReplacement) {
  const auto wp = fresh_dir();
  install_patch(wp);

  // Run 1: out of memory at step 40 (batch 64 -> 32), the head widened by the patch at 60.
  const RunResult first = train(wp, 16, std::nullopt);
  EXPECT_EQ(first.steps, 80);
  EXPECT_EQ(first.failures, 2);
  EXPECT_EQ(first.batch_at_end, 32);
  EXPECT_EQ(first.head_outputs, 10);
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 2u);
  EXPECT_EQ(repairs[0]["surgery"], "out_of_memory");
  EXPECT_EQ(repairs[0]["step"], 40);
  EXPECT_EQ(repairs[1]["surgery"], "hot_patch");
  EXPECT_EQ(repairs[1]["step"], 60);

  // Run 2, replayed eagerly: it starts at batch 32 with the wide head and never fails.
  const RunResult second = train(wp, 16, daifu::ReplayMode::Eager);
  EXPECT_EQ(second.failures, 0);
  EXPECT_EQ(second.batch_at_start, 32);
  EXPECT_EQ(second.head_outputs, 10);
  auto replayed = events(wp, "replayed");
  ASSERT_EQ(replayed.size(), 2u);
  EXPECT_EQ(replayed[0]["item"], "knob");
  EXPECT_EQ(replayed[0]["name"], "batch_size");
  EXPECT_EQ(replayed[0]["value"], 32);
  EXPECT_EQ(replayed[0]["from_step"], 40);
  EXPECT_EQ(replayed[0]["mode"], "eager");
  EXPECT_EQ(replayed[1]["item"], "patch");
  EXPECT_EQ(replayed[1]["from_step"], 60);
  EXPECT_EQ(replayed[1]["changes"]["model.fc2"][1]["weight"]["shape"], nlohmann::json::array({10, 16}));
  EXPECT_TRUE(events(wp, "replay_skipped").empty());

  // Run 3, a changed model (hidden width 24): the batch size still applies; the layer
  // replacement recorded on a 16-wide fc2 is refused with the reason, and the patch repairs
  // the head when the failure comes.
  const RunResult third = train(wp, 24, daifu::ReplayMode::Eager);
  EXPECT_EQ(third.batch_at_start, 32);
  EXPECT_EQ(third.failures, 1);
  const auto skipped = events(wp, "replay_skipped");
  ASSERT_EQ(skipped.size(), 1u);
  const std::string reason = skipped[0]["reason"];
  EXPECT_NE(reason.find("model.fc2 is {\"bias\":{\"dtype\":\"Float\",\"shape\":[3]},\"weight\":{\"dtype\":\"Float\","
                        "\"shape\":[3,24]}} here; the patch was recorded on"),
            std::string::npos)
      << reason;
  EXPECT_NE(reason.find("[3,16]"), std::string::npos) << reason;
  EXPECT_EQ(events(wp, "replayed").size(), 3u);  // run 2's two and run 3's batch size
}

TEST(Replay, AtStepAppliesEachItemWhenItsStepComesAndAChangedStartingValueIsNotOverwritten) {
  const auto wp = fresh_dir();
  install_patch(wp);
  train(wp, 16, std::nullopt);
  const RunResult second = train(wp, 16, daifu::ReplayMode::AtStep);
  EXPECT_EQ(second.failures, 0);
  EXPECT_EQ(second.batch_at_start, 64);  // until step 40
  EXPECT_EQ(second.batch_at_end, 32);
  const auto replayed = events(wp, "replayed");
  ASSERT_EQ(replayed.size(), 2u);
  EXPECT_EQ(replayed[0]["step"], 40);
  EXPECT_EQ(replayed[1]["step"], 60);
  EXPECT_EQ(replayed[1]["mode"], "at_step");

  // The program now starts at batch 48: the recorded 64 -> 32 does not describe it.
  const RunResult third = train(wp, 16, daifu::ReplayMode::Eager, 48);
  EXPECT_EQ(third.batch_at_start, 48);
  const auto skipped = events(wp, "replay_skipped");
  ASSERT_GE(skipped.size(), 1u);
  EXPECT_NE(skipped[0]["reason"].get<std::string>().find(
                "batch_size is 48 here, 64 when the repair was recorded: the program changed, not applied"),
            std::string::npos)
      << skipped[0];
}

TEST(Replay, NonsenseInTheEnvironmentIsRefused) {
  ::setenv("DAIFU_REPLAY", "sometimes", 1);
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(fresh_dir().string())), daifu::Error);
  ::unsetenv("DAIFU_REPLAY");
}

}  // namespace replay_test
