// Silent-bug checks (Options::bug_checks) on real CPU training loops: each bug of seed 003 the
// runtime can see is planted for real (an unregistered tensor member, a layer swapped behind
// the optimizer's back, a learning-rate knob nobody applies, losses kept with their graphs),
// and a clean loop must pass every check without its training changing by a bit.
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_util.h"

namespace bug_check_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;
namespace F = torch::nn::functional;

// fc1 -> relu -> dropout -> fc2 (dropout draws from the CPU generator every step, which the
// checks must leave alone); `scale` multiplies the input. As a registered buffer it is saved with
// the module; as a plain member (the bug) it is not, and a reloaded module starts from 1.
struct NetImpl : torch::nn::Module {
  explicit NetImpl(bool register_scale = true, int64_t width = 16, int64_t hidden = 32) {
    fc1 = register_module("fc1", torch::nn::Linear(width, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, 4));
    scale = torch::ones({1});
    if (register_scale) scale = register_buffer("scale", scale);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (is_training()) {
      torch::NoGradGuard no_grad;
      scale.mul_(0.9).add_(0.1 / (x.abs().mean() + 1));
    }
    return fc2->forward(F::dropout(torch::relu(fc1->forward(x * scale)), F::DropoutFuncOptions().p(0.1).training(is_training())));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::Tensor scale;
};
TORCH_MODULE(Net);

struct Batch {
  torch::Tensor x, y;
};

std::vector<Batch> batches(int64_t n, int64_t rows = 16, int64_t width = 16) {
  torch::manual_seed(3);
  std::vector<Batch> out;
  for (int64_t i = 0; i < n; ++i) out.push_back({torch::randn({rows, width}), torch::randint(0, 4, {rows})});
  return out;
}

// The program's planted bug, if any.
enum class Bug { None, UnregisteredMember, SwappedLayer, LrNotApplied, KeptGraphs };

struct Trained {
  std::vector<torch::Tensor> params;
  daifu::SessionStats stats;
  std::filesystem::path workplace;
};

constexpr int64_t kSteps = 40;
constexpr int64_t kLrChange = 12;  // the step at which the program lowers its lr knob

// kSteps of Adam, guarded; checks every `every` steps (0: none), with a module round trip.
Trained train(Bug bug, int64_t every, const std::filesystem::path& workplace) {
  const auto data = batches(kSteps);
  torch::manual_seed(7);
  Net net(bug != Bug::UnregisteredMember);
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(1e-2));
  torch::Tensor ema = torch::zeros({1});
  const Batch probe = data.front();
  daifu::RoundTrip rt{"model", [bug] { return std::make_shared<NetImpl>(bug != Bug::UnregisteredMember); },
                      [&](torch::nn::Module& m) {
                        auto& n = static_cast<NetImpl&>(m);
                        return F::cross_entropy(n.forward(probe.x), probe.y).item<double>();
                      }};
  Trained run;
  {
    daifu::Session session(daifu::Options()
                               .workplace(workplace.string())
                               .inject("")
                               .lr_knob("lr")
                               .bug_checks(daifu::BugCheckOptions().every(every).round_trip(rt)));
    session.track("model", *net);
    session.track("optimizer", optimizer);
    session.track("ema", ema);
    auto& lr = session.knob<double>("lr", 1e-2);
    DAIFU_GUARD(session, step, 0, kSteps) {
      if (step.index() == kLrChange) lr.set(5e-3, "schedule");
      if (bug != Bug::LrNotApplied) {
        for (auto& group : optimizer.param_groups()) group.options().set_lr(lr.get());
      }
      if (bug == Bug::SwappedLayer && step.index() == 10) {
        net->fc2 = net->replace_module("fc2", torch::nn::Linear(32, 4));
      }
      const auto& [x, y] = data[static_cast<std::size_t>(step.index())];
      optimizer.zero_grad();
      auto loss = F::cross_entropy(net->forward(x), y);
      loss.backward();
      optimizer.step();
      ema.mul_(0.9).add_(loss.detach() * 0.1);
      session.report("loss", loss.item<double>());
    };
    run.stats = session.stats();
  }
  for (const auto& t : net->parameters()) run.params.push_back(t.detach().clone());
  for (const auto& t : net->buffers()) run.params.push_back(t.detach().clone());
  run.workplace = workplace;
  return run;
}

std::vector<nlohmann::json> failed(const Trained& run, const std::string& check) {
  std::vector<nlohmann::json> out;
  for (const auto& e : events(run.workplace, "check_failed")) {
    if (e["check"] == check) out.push_back(e);
  }
  return out;
}

TEST(BugChecks, CleanTrainingPassesEveryCheckAndIsUnchangedByThem) {
  const Trained plain = train(Bug::None, 0, fresh_dir("plain"));
  const Trained checked = train(Bug::None, 5, fresh_dir("checked"));
  EXPECT_TRUE(events(checked.workplace, "check_failed").empty());
  EXPECT_EQ(checked.stats.failed_checks, 0);
  const auto runs = events(checked.workplace, "checks");
  ASSERT_EQ(runs.size(), static_cast<std::size_t>(kSteps / 5));
  EXPECT_EQ(runs[0]["step"], 4);
  EXPECT_EQ(runs[0]["ran"], nlohmann::json({"serialization", "optimizer_params", "lr_reaches_optimizer", "memory_growth"}));
  EXPECT_EQ(runs[0]["failing"], 0);
  EXPECT_TRUE(events(plain.workplace, "checks").empty());
  // The round trips set the optimizer's state aside, build a module (drawing initial weights)
  // and put the modules in eval mode for the loss: what training sees afterwards is exactly what it would have seen without them.
  ASSERT_EQ(plain.params.size(), checked.params.size());
  for (std::size_t i = 0; i < plain.params.size(); ++i) EXPECT_TRUE(torch::equal(plain.params[i], checked.params[i])) << i;
}

TEST(BugChecks, AnUnregisteredTensorMemberFailsTheRoundTripLoss) {
  const Trained run = train(Bug::UnregisteredMember, 5, fresh_dir());
  const auto f = failed(run, "round_trip");
  ASSERT_EQ(f.size(), 1u);  // journaled once while it lasts
  EXPECT_EQ(f[0]["step"], 4);
  const std::string message = f[0]["message"];
  EXPECT_NE(message.find("module \"model\": the reloaded module's loss is"), std::string::npos) << message;
  EXPECT_NE(message.find("not registered as a parameter or buffer"), std::string::npos) << message;
  EXPECT_EQ(run.stats.failed_checks, 1);
  EXPECT_EQ(run.stats.committed_steps, kSteps);  // a check never stops training
  for (const auto& e : events(run.workplace, "checks")) EXPECT_EQ(e["failing"], 1);
}

TEST(BugChecks, ALayerSwappedBehindTheOptimizersBackIsStaleAndMissing) {
  const Trained run = train(Bug::SwappedLayer, 5, fresh_dir());
  const auto f = failed(run, "optimizer_params");
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0]["step"], 14);  // the first check after the swap at step 10
  EXPECT_EQ(f[1]["step"], 14);
  std::string messages = f[0]["message"].get<std::string>() + "\n" + f[1]["message"].get<std::string>();
  EXPECT_NE(messages.find("optimizer \"optimizer\" updates 2 tensors that are no parameters of the tracked modules "
                          "(a tensor of shape [4, 32], a tensor of shape [4])"),
            std::string::npos)
      << messages;
  EXPECT_NE(messages.find("model.fc2.bias, model.fc2.weight require gradients, but no tracked optimizer updates them"),
            std::string::npos)
      << messages;
  EXPECT_TRUE(failed(run, "round_trip").empty());
  EXPECT_TRUE(failed(run, "serialization").empty());
}

TEST(BugChecks, ALearningRateKnobNobodyAppliesIsReported) {
  const Trained run = train(Bug::LrNotApplied, 5, fresh_dir());
  const auto f = failed(run, "lr_reaches_optimizer");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0]["step"], 14);
  EXPECT_EQ(f[0]["message"],
            "knob \"lr\" changed from 0.01 to 0.005 after step 9, but param group 0 of optimizer \"optimizer\" still "
            "has lr 0.01: the program does not apply the knob to the optimizer");
  EXPECT_EQ(events(run.workplace, "check_failed").size(), 1u);
}

// Losses kept with their autograd graphs (a history for plotting): every step's activations
// stay alive. 256 x 1024 floats are 1 MiB per activation.
daifu::SessionStats leak_run(bool keep_graphs, const std::filesystem::path& workplace) {
  torch::manual_seed(1);
  Net net(true, 256, 1024);
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(1e-3));
  const auto x = torch::randn({256, 256});
  const auto y = torch::randint(0, 4, {256});
  std::vector<torch::Tensor> history;
  daifu::Session session(daifu::Options().workplace(workplace.string()).inject("").bug_checks(
      daifu::BugCheckOptions().every(4).memory_window(4).memory_growth_bytes(16 << 20)));
  session.track("model", *net);
  session.track("optimizer", optimizer);
  DAIFU_GUARD(session, step, 0, 48) {
    optimizer.zero_grad();
    auto loss = F::cross_entropy(net->forward(x), y);
    loss.backward({}, /*retain_graph=*/keep_graphs);
    optimizer.step();
    history.push_back(keep_graphs ? loss : loss.detach());
  };
  return session.stats();
}

TEST(BugChecks, MemoryThatGrowsAcrossIdenticalStepsIsReported) {
  const auto workplace = fresh_dir();
  leak_run(true, workplace);
  const auto f = events(workplace, "check_failed");
  ASSERT_FALSE(f.empty());
  EXPECT_EQ(f[0]["check"], "memory_growth");
  const std::string message = f[0]["message"];
  EXPECT_NE(message.find("resident memory grew at each of the last 4 checks"), std::string::npos) << message;
  // The same loop without the kept graphs stays flat.
  const auto clean = fresh_dir("clean");
  leak_run(false, clean);
  EXPECT_TRUE(events(clean, "check_failed").empty());
}

TEST(BugChecks, NonsenseOptionsAreRefusedAndAnUnknownModuleIsReported) {
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(fresh_dir("a").string()).bug_checks(daifu::BugCheckOptions().every(-1))),
               daifu::Error);
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(fresh_dir("b").string()).bug_checks(
                   daifu::BugCheckOptions().every(1).round_trip({"model", nullptr, nullptr}))),
               daifu::Error);
  const auto workplace = fresh_dir("c");
  {
    daifu::Session session(daifu::Options().workplace(workplace.string()).inject("").bug_checks(
        daifu::BugCheckOptions().every(1).round_trip({"modle", [] { return std::make_shared<NetImpl>(); }, nullptr})));
    Net net;
    session.track("model", *net);
    DAIFU_GUARD(session, step, 0, 3) { (void)step; };
    EXPECT_EQ(session.stats().failed_checks, 1);
  }
  const auto f = events(workplace, "check_failed");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0]["message"], "module \"modle\": no module is tracked under this name");
}

}  // namespace bug_check_test
