// Silent faults: value faults of the ISCA'23 fault models injected into a real CPU training
// loop (a layer output at a probe, a parameter, a gradient), and the detectors that catch the
// detectable ones, roll back and re-execute, or call a repeating fault persistent.
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>
#include <random>

#include "detect/robust_window.h"
#include "test_util.h"

namespace silent_fault_test {

using daifu::FaultModel;
using daifu::FaultTarget;
using daifu::testing::events;
using daifu::testing::fresh_dir;
namespace F = torch::nn::functional;

constexpr int64_t kSteps = 50;
constexpr int64_t kFaultStep = 30;  // after the spike detectors' warm-up of 20 steps

// fc1 -> probe "fc1.out" -> batch norm -> relu -> fc2. Batch norm, as in the ISCA models, turns
// one huge activation into NaN (its variance overflows).
struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 16));
    bn = register_module("bn", torch::nn::BatchNorm1d(16));
    fc2 = register_module("fc2", torch::nn::Linear(16, 4));
  }
  torch::Tensor forward(daifu::Step& step, torch::Tensor x) {
    x = step.probe("input", x);
    auto h = step.probe("fc1.out", fc1->forward(x));
    return fc2->forward(torch::relu(bn->forward(h)));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};
TORCH_MODULE(Net);

struct Trained {
  std::vector<torch::Tensor> params;  // parameters and buffers at the end
  daifu::SessionStats stats;
  std::filesystem::path workplace;
};

// kSteps of Adam on fixed batches (step i always trains on batch i), guarded, with `options`.
// `before_update`: the step calls Step::before_update() between backward() and step().
Trained train(daifu::Options options, const std::filesystem::path& workplace, bool before_update = true) {
  torch::manual_seed(5);
  Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(1e-2));
  std::vector<std::pair<torch::Tensor, torch::Tensor>> batches;
  for (int64_t i = 0; i < kSteps; ++i) batches.emplace_back(torch::randn({16, 8}), torch::randint(0, 4, {16}));
  Trained run;
  {
    daifu::Session session(options.workplace(workplace.string()));
    session.track("model", *net);
    session.track("optimizer", optimizer);
    DAIFU_GUARD(session, step, 0, kSteps) {
      const auto& [x, y] = batches[static_cast<std::size_t>(step.index())];
      optimizer.zero_grad();
      auto loss = F::cross_entropy(net->forward(step, x), y);
      loss.backward();
      if (before_update) step.before_update();
      optimizer.step();
      session.report("loss", loss.item<double>());
    };
    run.stats = session.stats();
  }
  for (const auto& t : net->parameters()) run.params.push_back(t.detach().clone());
  for (const auto& t : net->buffers()) run.params.push_back(t.detach().clone());
  run.workplace = workplace;
  return run;
}

daifu::Options no_plan() { return daifu::Options().inject(""); }

bool bitwise_equal(const Trained& a, const Trained& b) {
  if (a.params.size() != b.params.size()) return false;
  for (std::size_t i = 0; i < a.params.size(); ++i) {
    if (!torch::equal(a.params[i], b.params[i])) return false;
  }
  return true;
}

std::vector<std::string> detectors_fired(const Trained& run) {
  std::vector<std::string> out;
  for (const auto& d : events(run.workplace, "detection")) out.push_back(d["detector"].get<std::string>());
  return out;
}

const Trained& clean_run() {
  static const Trained run = train(no_plan(), fresh_dir("clean"));
  return run;
}

// (a) ISCA's immediate INF/NaN outcome: 2.9e24 in a layer's output.
TEST(SilentFaults, HugeActivationIsDetectedRolledBackAndReExecutedBitwise) {
  const Trained run = train(no_plan().inject("value=2.9e24:out:fc1.out@30"), fresh_dir());
  const auto fired = detectors_fired(run);
  ASSERT_EQ(fired.size(), 1u);
  const auto detections = events(run.workplace, "detection");
  EXPECT_EQ(detections[0]["step"], kFaultStep);
  const auto injected = events(run.workplace, "injected");
  ASSERT_EQ(injected.size(), 1u);
  EXPECT_DOUBLE_EQ(injected[0]["after"][0].get<double>(), 2.9e24);
  const auto failures = events(run.workplace, "failure");
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0]["kind"], "numeric_fault");
  EXPECT_EQ(run.stats.retries, 1);
  EXPECT_EQ(run.stats.skipped_steps, 0);
  EXPECT_EQ(run.stats.committed_steps, kSteps);
  // Batch norm's batch statistics absorb the value (training stays finite), but its running
  // variance becomes infinite for good.
  EXPECT_EQ(fired[0], "nonfinite_buffer");
  EXPECT_EQ(events(run.workplace, "rollback").size(), 1u);
  EXPECT_TRUE(bitwise_equal(run, clean_run()));
}

// (b) ISCA's SlowDegrade: ~9e17 in a gradient, caught before the optimizer applies it. A
// weight's own gradient is read at the full gradient checks' steps (grad_check_every(): 20, so
// step 39), or at every step with grad_check_every(1).
TEST(SilentFaults, HugeGradientIsCaughtByTheSpikeDetectorBeforeTheUpdate) {
  for (const auto& [options, step] : {std::pair{no_plan().inject("value=9e17:grad:model.fc1.weight@39"), 39},
                                      std::pair{no_plan()
                                                    .inject("value=9e17:grad:model.fc1.weight@30")
                                                    .detectors(daifu::DetectorOptions().grad_check_every(1)),
                                                30}}) {
    const Trained run = train(options, fresh_dir(std::to_string(step)));
    EXPECT_EQ(detectors_fired(run), std::vector<std::string>{"grad_spike"});
    const auto detections = events(run.workplace, "detection");
    ASSERT_EQ(detections.size(), 1u);
    EXPECT_EQ(detections[0]["step"], step);
    EXPECT_GT(detections[0]["value"].get<double>(), 1e17);
    EXPECT_TRUE(bitwise_equal(run, clean_run()));
  }
}

// A weight corrupted between state checks that makes a gradient spike before the update: the
// detection looks at the state first and finds the weight, so the snapshot is restored, instead
// of a retry, a skip, and the same at every later step.
TEST(SilentFaults, AGradientSpikeFromACorruptedWeightRestoresTheSnapshot) {
  const Trained run = train(no_plan().inject("value=1e6:param!:model.fc2.weight@32"), fresh_dir());
  EXPECT_EQ(detectors_fired(run), std::vector<std::string>{"param_spike"});
  const auto detections = events(run.workplace, "detection");
  ASSERT_EQ(detections.size(), 1u);
  EXPECT_EQ(detections[0]["step"], 32) << "found at the gradient spike, not at step 39's state check";
  EXPECT_EQ(events(run.workplace, "rollback").size(), 1u);
  EXPECT_EQ(run.stats.skipped_steps, 0);
  EXPECT_TRUE(bitwise_equal(run, clean_run()));
}

// A fault in a layer's output gradient reaches its bias's gradient, checked at every step.
TEST(SilentFaults, HugeOutputGradientIsCaughtAtEveryStepThroughTheBiasGradients) {
  const Trained run = train(no_plan().inject("value=9e17:grad:fc1.out@30"), fresh_dir());
  EXPECT_EQ(detectors_fired(run), std::vector<std::string>{"grad_spike"});
  const auto detections = events(run.workplace, "detection");
  ASSERT_EQ(detections.size(), 1u);
  EXPECT_EQ(detections[0]["step"], kFaultStep);
  EXPECT_NE(detections[0]["message"].get<std::string>().find("1-D parameters"), std::string::npos);
  EXPECT_TRUE(bitwise_equal(run, clean_run()));
}

// (b) without before_update(): Adam's moments show the gradient after the update; rolled back.
TEST(SilentFaults, HugeGradientIsCaughtByTheAdamMomentBoundAfterTheUpdate) {
  const auto detectors = daifu::DetectorOptions::none().adam_moments(true);
  const Trained clean = train(no_plan().detectors(detectors), fresh_dir("clean"), /*before_update=*/false);
  const Trained run = train(no_plan().detectors(detectors).inject("value=9e17:grad:model.fc1.weight@30"), fresh_dir(),
                        /*before_update=*/false);
  EXPECT_EQ(detectors_fired(run), std::vector<std::string>{"adam_moments"});
  EXPECT_EQ(events(run.workplace, "rollback").size(), 1u);
  EXPECT_TRUE(bitwise_equal(run, clean));
}

// (b) a weight set to 1.6e7, the GAN campaign's one miss (its gradients and losses stayed
// ordinary): the parameter bound catches it at the step's end; rolled back, run again.
TEST(SilentFaults, HugeWeightIsCaughtByTheParameterBound) {
  const auto detectors = daifu::DetectorOptions::none().param_spikes(true);
  const Trained clean = train(no_plan().detectors(detectors), fresh_dir("clean"));
  const Trained run = train(no_plan().detectors(detectors).inject("value=1.6e7:param!:model.fc2.bias@30"), fresh_dir());
  EXPECT_EQ(detectors_fired(run), std::vector<std::string>{"param_spike"});
  const auto detections = events(run.workplace, "detection");
  ASSERT_EQ(detections.size(), 1u);
  EXPECT_NE(detections[0]["message"].get<std::string>().find("model.fc2.bias"), std::string::npos) << detections[0];
  EXPECT_TRUE(bitwise_equal(run, clean));
  const Trained nan = train(no_plan().detectors(detectors).inject("nan:param!:model.fc1.weight@30"), fresh_dir("nan"));
  EXPECT_EQ(detectors_fired(nan), std::vector<std::string>{"nonfinite_param"});
  EXPECT_TRUE(bitwise_equal(nan, clean));
}

// (b) in the detectors' warm-up (a weight set at step 5, before 20 steps make a median): the
// parameter bound judges it against the largest |parameter| so far.
TEST(SilentFaults, HugeWeightInTheWarmUpIsCaughtAgainstTheLargestValueSoFar) {
  const auto detectors = daifu::DetectorOptions::none().param_spikes(true);
  const Trained clean = train(no_plan().detectors(detectors), fresh_dir("clean"));
  const Trained run = train(no_plan().detectors(detectors).inject("value=1.6e7:param!:model.fc2.bias@5"), fresh_dir());
  EXPECT_EQ(detectors_fired(run), std::vector<std::string>{"param_spike"});
  const auto detections = events(run.workplace, "detection");
  ASSERT_EQ(detections.size(), 1u);
  EXPECT_EQ(detections[0]["step"], 5) << "the state checks run every step in the warm-up";
  EXPECT_GT(detections[0]["reference"].get<double>(), 0) << detections[0];
  EXPECT_NE(detections[0]["message"].get<std::string>().find("warm-up"), std::string::npos) << detections[0];
  EXPECT_TRUE(bitwise_equal(run, clean));
}

// The state checks run every state_check_every() steps and before every snapshot: a weight
// set at step 30 is measured when the snapshot of step 35 is due, which is not taken; the check
// at step 35's end fires, and the rollback goes to the snapshot of step 28, which they had seen.
TEST(SilentFaults, TheStateChecksRunEveryKStepsAndBeforeEverySnapshot) {
  const auto detectors = daifu::DetectorOptions::none().param_spikes(true);
  const auto options = no_plan().snapshot_every(7).detectors(detectors);
  const Trained clean = train(options, fresh_dir("clean"));
  const Trained run = train(daifu::Options(options).inject("value=1.6e7:param!:model.fc2.bias@30"), fresh_dir());
  const auto detections = events(run.workplace, "detection");
  ASSERT_EQ(detections.size(), 1u);
  EXPECT_EQ(detections[0]["step"], 35);
  const auto rollbacks = events(run.workplace, "rollback");
  ASSERT_EQ(rollbacks.size(), 1u);
  EXPECT_EQ(rollbacks[0]["to_step"], 28);
  EXPECT_TRUE(bitwise_equal(run, clean));

  const Trained late = train(no_plan().snapshot_every(100).detectors(detectors).inject("value=1.6e7:param!:model.fc2.bias@30"),
                             fresh_dir("late"));
  const auto late_detections = events(late.workplace, "detection");
  ASSERT_EQ(late_detections.size(), 1u);
  EXPECT_EQ(late_detections[0]["step"], 39) << "the next state check's step (step index + 1 a multiple of 20)";
  EXPECT_TRUE(bitwise_equal(late, train(no_plan().snapshot_every(100).detectors(detectors), fresh_dir("late-clean"))));
}

// A linear model trained by SGD for `steps` steps on fixed data, guarded with `options` and
// only the parameter bound; `body_extra` runs at the end of each step's body. Its final weights.
std::vector<torch::Tensor> linear_run(daifu::Options options, const std::filesystem::path& wp, int64_t first, int64_t last,
                                      bool update = true, int64_t snapshot_now_at = -1) {
  torch::manual_seed(5);
  torch::nn::Linear model(4, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(1e-2));
  const auto x = torch::randn({8, 4});
  const auto y = torch::randn({8, 2});
  {
    daifu::Session session(options.workplace(wp.string()).detectors(daifu::DetectorOptions::none().param_spikes(true)));
    session.track("model", *model);
    session.track("optimizer", optimizer);
    auto body = [&](daifu::Step& step) {
      optimizer.zero_grad();
      F::mse_loss(model->forward(x), y).backward();
      if (update) optimizer.step();
      if (step.index() == snapshot_now_at && step.attempt() == 0) session.snapshot_now();
    };
    DAIFU_GUARD(session, step, first, last) { body(step); };
    DAIFU_GUARD(session, step, last, last + 10) { body(step); };
  }
  return {model->weight.detach().clone(), model->bias.detach().clone()};
}

bool same(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  return torch::equal(a[0], b[0]) && torch::equal(a[1], b[1]);
}

// The state checks run every state_check_every() steps, and always at a loop's last step: the next loop's first
// snapshot would hold a fault of the steps since, and no rollback reaches back into a loop.
TEST(SilentFaults, TheStateIsCheckedAtTheLastStepOfALoop) {
  const auto options = no_plan().snapshot_every(1000);
  const auto clean = linear_run(options, fresh_dir("clean"), 0, 25);
  const auto wp = fresh_dir();
  const auto run = linear_run(daifu::Options(options).inject("value=1.6e7:param!:model.bias@22"), wp, 0, 25);
  const auto detections = events(wp, "detection");
  ASSERT_EQ(detections.size(), 1u);
  EXPECT_EQ(detections[0]["step"], 24);
  EXPECT_TRUE(same(run, clean));
}

// A snapshot asked for in the middle of a step (Session::snapshot_now) is due before the state
// checks' next turn: the state they have not seen is measured first, found faulty and not
// captured; the check at that step's end fires and the rollback goes to the older snapshot.
TEST(SilentFaults, ASnapshotIsNotTakenOfAFaultyStateTheChecksHaveNotSeen) {
  const auto options = no_plan().snapshot_every(1000);
  const auto clean = linear_run(options, fresh_dir("clean"), 0, 45, true, 33);
  const auto wp = fresh_dir();
  const auto run = linear_run(daifu::Options(options).inject("value=1.6e7:param!:model.bias@31"), wp, 0, 45, true, 33);
  const auto detections = events(wp, "detection");
  ASSERT_EQ(detections.size(), 1u);
  EXPECT_EQ(detections[0]["step"], 34);
  const auto rollbacks = events(wp, "rollback");
  ASSERT_EQ(rollbacks.size(), 1u);
  EXPECT_EQ(rollbacks[0]["to_step"], 0);
  EXPECT_TRUE(events(wp, "baseline_reset").empty());
  EXPECT_TRUE(same(run, clean));
}

// A state check that fires in a step that changed nothing (an evaluation loop) still restores
// the snapshot: the fault came from before the step, which a retry in place would keep.
TEST(SilentFaults, AStateFaultIsRolledBackEvenInAStepThatChangesNothing) {
  const auto wp = fresh_dir();
  const auto initial = linear_run(no_plan(), fresh_dir("clean"), 0, 40, /*update=*/false);
  const auto run = linear_run(no_plan().inject("value=1.6e7:param!:model.bias@30"), wp, 0, 40, /*update=*/false);
  ASSERT_EQ(events(wp, "detection").size(), 1u);
  EXPECT_EQ(events(wp, "rollback").size(), 1u);
  EXPECT_TRUE(events(wp, "baseline_reset").empty());
  EXPECT_TRUE(same(run, initial));
}

// adam_moments on with an SGD optimizer: nothing to measure, and the warm-up still ends.
TEST(SilentFaults, TheStateChecksWarmUpEndsWithoutAnAdamOptimizer) {
  const auto wp = fresh_dir();
  torch::manual_seed(5);
  torch::nn::Linear model(4, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(1e-2));
  {
    daifu::Session session(no_plan().workplace(wp.string()).snapshot_every(1000).inject("value=1.6e7:param!:model.bias@31")
                               .detectors(daifu::DetectorOptions::none().param_spikes(true).adam_moments(true)));
    session.track("model", *model);
    session.track("optimizer", optimizer);
    DAIFU_GUARD(session, step, 0, 45) {};
  }
  const auto detections = events(wp, "detection");
  ASSERT_EQ(detections.size(), 1u);
  EXPECT_EQ(detections[0]["step"], 39) << "not 31: past the warm-up, the checks run every 20th step";
}

// A weight corrupted at step 31 on every attempt of it (a permanent fault) is caught at step
// 39; the re-run after the rollback checks every step, so step 31 is found, found again on its
// retry, and skipped: not step 39, whose skip would leave step 31 to corrupt the weight again.
TEST(SilentFaults, AStateFaultFoundLateIsBlamedOnTheStepThatBroughtIt) {
  const auto detectors = daifu::DetectorOptions::none().param_spikes(true);
  const Trained run =
      train(no_plan().snapshot_every(100).detectors(detectors).inject("value=1.6e7:param!:model.fc2.bias@31*"), fresh_dir());
  std::vector<int64_t> steps;
  for (const auto& d : events(run.workplace, "detection")) steps.push_back(d["step"].get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{39, 31, 31}));
  const auto skips = events(run.workplace, "skip");
  ASSERT_EQ(skips.size(), 1u);
  EXPECT_EQ(skips[0]["step"], 31);
  EXPECT_EQ(run.stats.skipped_steps, 1);
  EXPECT_TRUE(events(run.workplace, "baseline_reset").empty());
}

// A spike that entered the state unnoticed (a weight doubling every step, by less than the
// ratio each time) is caught once it stands out of the window; the state the rollback restores
// holds it too. It is journaled once as the new baseline, not detected and skipped every step.
TEST(SilentFaults, ASpikeAlreadyInTheRestoredStateBecomesTheBaselineOnce) {
  const auto wp = fresh_dir();
  torch::manual_seed(5);
  torch::nn::Linear model(4, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(1e-3));
  const auto x = torch::randn({8, 4});
  const auto y = torch::randn({8, 2});
  daifu::SessionStats stats;
  {
    daifu::Session session(no_plan().workplace(wp.string()).snapshot_every(1).detectors(
        daifu::DetectorOptions::none().param_spikes(true)));
    session.track("model", *model);
    session.track("optimizer", optimizer);
    DAIFU_GUARD(session, step, 0, 40) {
      optimizer.zero_grad();
      auto loss = F::mse_loss(model->forward(x), y);
      loss.backward();
      optimizer.step();
      if (step.index() >= 5 && step.index() < 25) {
        torch::NoGradGuard no_grad;
        model->bias.mul_(2);
        model->bias.add_(1);
      }
    };
    stats = session.stats();
  }
  const auto detections = events(wp, "detection");
  ASSERT_EQ(detections.size(), 1u);
  EXPECT_EQ(detections[0]["detector"], "param_spike");
  const auto resets = events(wp, "baseline_reset");
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0]["step"], detections[0]["step"]) << "the snapshot restored is the failed step's own";
  EXPECT_EQ(resets[0]["detector"], "param_spike");
  EXPECT_EQ(stats.skipped_steps, 0);
  EXPECT_EQ(stats.rollbacks, 1);
  EXPECT_EQ(stats.committed_steps, 40);
}

// (c) ISCA's Masked outcome: 0.06 written into one weight changes nothing that matters.
TEST(SilentFaults, SmallMaskedFaultTriggersNothing) {
  daifu::ValueFault fault;
  fault.model = FaultModel::Value;
  fault.value = 0.0606911815702915;
  fault.target = FaultTarget::Parameter;
  fault.where = "model.fc2.weight";
  fault.step = kFaultStep;
  const Trained run = train(no_plan().inject(fault), fresh_dir());
  EXPECT_EQ(events(run.workplace, "injected").size(), 1u);
  EXPECT_TRUE(detectors_fired(run).empty());
  EXPECT_EQ(run.stats.failures, 0);
}

// (d) A permanent fault (every attempt) is called persistent after two attempts and skipped.
TEST(SilentFaults, PermanentFaultEndsPersistentAfterABoundedNumberOfAttempts) {
  const Trained run = train(no_plan().inject("nan:out:fc1.out@30*"), fresh_dir());
  EXPECT_EQ(run.stats.failures, 2);
  EXPECT_EQ(run.stats.skipped_steps, 1);
  EXPECT_EQ(run.stats.unrecovered, 0);
  const auto persistent = events(run.workplace, "persistent_fault");
  ASSERT_EQ(persistent.size(), 1u);
  EXPECT_EQ(persistent[0]["step"], kFaultStep);
  const auto repairs = events(run.workplace, "repair");
  ASSERT_EQ(repairs.size(), 2u);
  EXPECT_EQ(repairs[0]["surgery"], "numeric_fault");
  EXPECT_EQ(repairs[1]["surgery"], "exceptional_data");
  EXPECT_EQ(repairs[1]["action"], "skip");
}

// (e) Bit 30 (the top exponent bit) of a weight is caught; bit 0 is far below notice.
TEST(SilentFaults, BitFlipThirtyIsCaughtAndBitZeroIsNot) {
  const Trained high = train(no_plan().inject("flip30:param!:model.fc1.weight@30"), fresh_dir("30"));
  ASSERT_EQ(events(high.workplace, "injected").size(), 1u);
  EXPECT_EQ(detectors_fired(high).size(), 1u);
  EXPECT_TRUE(bitwise_equal(high, clean_run())) << "the rollback restores the flipped weight";

  const Trained low = train(no_plan().inject("flip0:param!:model.fc1.weight@30"), fresh_dir("0"));
  ASSERT_EQ(events(low.workplace, "injected").size(), 1u);
  EXPECT_TRUE(detectors_fired(low).empty());
  EXPECT_EQ(low.stats.failures, 0);
}

TEST(SilentFaults, CleanRunHasNoDetections) {
  EXPECT_TRUE(detectors_fired(clean_run()).empty());
  EXPECT_EQ(clean_run().stats.failures, 0);
}

TEST(SilentFaults, NonFiniteLossIsDetectedWithoutBeforeUpdate) {
  const Trained run = train(no_plan().inject("inf:out:input@30"), fresh_dir(), /*before_update=*/false);
  const auto fired = detectors_fired(run);
  ASSERT_EQ(fired.size(), 1u);
  EXPECT_EQ(fired[0], "nonfinite_loss");
  EXPECT_EQ(events(run.workplace, "rollback").size(), 1u);
  EXPECT_TRUE(bitwise_equal(run, train(no_plan(), fresh_dir("clean"), /*before_update=*/false)));
}

TEST(SilentFaults, InjectionIntoAnUnknownTargetIsJournaledAsMissed) {
  const Trained run = train(no_plan().inject("nan:out:no.such.probe@3, nan:param:model.nothing@4"), fresh_dir());
  const auto missed = events(run.workplace, "injection_missed");
  ASSERT_EQ(missed.size(), 2u);
  EXPECT_NE(missed[0]["reason"].get<std::string>().find("no.such.probe"), std::string::npos);
  EXPECT_NE(missed[1]["reason"].get<std::string>().find("model.nothing"), std::string::npos);
  EXPECT_EQ(run.stats.failures, 0);
}

TEST(SilentFaults, ProbeOutsideAGuardReturnsItsInput) {
  daifu::Step step;
  const auto x = torch::ones({3});
  EXPECT_TRUE(step.probe("anything", x).is_same(x));
  step.before_update();  // no session: nothing to check
}

TEST(SilentFaults, ReplaysAnIscaInjectionFile) {
  const auto isca = daifu::read_isca_injection(DAIFU_TEST_DATA "/isca23/resnet18_inj_immediate_infs_nans.csv");
  EXPECT_EQ(isca.model, "resnet18");
  EXPECT_EQ(isca.stage, "fwrd_inject");
  EXPECT_EQ(isca.fmodel, "RD");
  EXPECT_EQ(isca.target_layer, "basicblock_2_basic_0_conv2");
  EXPECT_EQ(isca.target_epoch, 19);
  EXPECT_EQ(isca.target_step, 38);
  ASSERT_EQ(isca.positions.size(), 1u);
  EXPECT_EQ(isca.positions[0], (std::vector<int64_t>{107, 3, 3, 85}));
  EXPECT_DOUBLE_EQ(isca.values[0], 2.86871514043344e+24);
  EXPECT_EQ(isca.seed, 123u);

  const Trained run = train(no_plan().inject(isca.fault("fc1.out", kFaultStep)), fresh_dir());
  const auto injected = events(run.workplace, "injected");
  ASSERT_EQ(injected.size(), 1u);
  EXPECT_EQ(injected[0]["positions"][0], 3 * 16 + 85 % 16) << "aligned right, each index modulo its dimension";
  EXPECT_EQ(detectors_fired(run).size(), 1u);
  EXPECT_TRUE(bitwise_equal(run, clean_run()));
}

TEST(SilentFaults, ReadsSixteenPositionIscaFilesAndRefusesBadOnes) {
  const auto isca = daifu::read_isca_injection(DAIFU_TEST_DATA "/isca23/densenet_inj_immediate_infs_nans.csv");
  EXPECT_EQ(isca.positions.size(), 16u);
  EXPECT_EQ(isca.values.size(), 16u);
  EXPECT_EQ(isca.fault("x", 1).target, FaultTarget::Output);
  EXPECT_EQ(daifu::read_isca_injection(DAIFU_TEST_DATA "/isca23/resnet18_inj_slow_degrade.csv").fault("x", 1).target,
            FaultTarget::Gradient);

  const auto dir = fresh_dir();
  std::filesystem::create_directories(dir);
  const std::string good = "model,m\nstage,fwrd_inject\nfmodel,RD\ntarget_worker,0\ntarget_layer,l\ntarget_epoch,1\n"
                           "target_step,2\ninj_pos,1/2,3/4\ninj_values,1.5,2.5\nlearning_rate,0.001\nseed,7\n";
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return (dir / name).string();
  };
  EXPECT_EQ(daifu::read_isca_injection(write("good.csv", good)).positions.size(), 2u);
  struct Bad {
    std::string text, says;
  };
  const std::vector<Bad> bad = {
      {"model,m\n", "no \"stage\" row"},
      {std::string(good).replace(good.find("1.5"), 3, "x.5"), "\"x.5\" is not a number"},
      {std::string(good).replace(good.find(",2.5"), 4, ""), "2 positions but 1 values"},
      {std::string(good).replace(good.find("fwrd_inject"), 11, "sideways"), "stage is \"sideways\""},
  };
  for (std::size_t i = 0; i < bad.size(); ++i) {
    const std::string path = write("bad" + std::to_string(i) + ".csv", bad[i].text);
    try {
      daifu::read_isca_injection(path);
      ADD_FAILURE() << bad[i].says << ": accepted";
    } catch (const daifu::Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad[i].says), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(daifu::read_isca_injection((dir / "missing.csv").string()), daifu::Error);
}

TEST(SilentFaults, ParsesValueFaultPlans) {
  const auto plan = daifu::parse_plan("value=2.9e24:out:fc1.out@30, flip30x16+4:param!:model.fc1.weight@12* "
                                      "transient@3; randomx64:grad:h@7 zero:param:model.b@1 copy:out:x@2 inf:out:y@4");
  ASSERT_EQ(plan.crashes.size(), 1u);
  ASSERT_EQ(plan.values.size(), 6u);
  const auto& v = plan.values;
  EXPECT_EQ(v[0].model, FaultModel::Value);
  EXPECT_DOUBLE_EQ(v[0].value, 2.9e24);
  EXPECT_EQ(v[0].target, FaultTarget::Output);
  EXPECT_EQ(v[0].where, "fc1.out");
  EXPECT_EQ(v[0].step, 30);
  EXPECT_EQ(v[1].model, FaultModel::BitFlip);
  EXPECT_EQ(v[1].bit, 30);
  EXPECT_EQ(v[1].count, 16);
  EXPECT_EQ(v[1].offset, 4);
  EXPECT_TRUE(v[1].permanent);
  EXPECT_TRUE(v[1].every_attempt);
  EXPECT_EQ(v[2].model, FaultModel::RandomValue);
  EXPECT_EQ(v[2].count, 64);
  EXPECT_EQ(v[2].target, FaultTarget::Gradient);
  EXPECT_EQ(v[3].model, FaultModel::Zero);
  EXPECT_FALSE(v[3].permanent);
  EXPECT_EQ(v[4].model, FaultModel::CopyValue);
  EXPECT_EQ(v[5].model, FaultModel::Inf);

  const auto isca = daifu::parse_plan("isca:" DAIFU_TEST_DATA "/isca23/resnet18_inj_masked.csv:fc2.out@9");
  ASSERT_EQ(isca.values.size(), 1u);
  EXPECT_EQ(isca.values[0].where, "fc2.out");
  EXPECT_EQ(isca.values[0].step, 9);
  EXPECT_DOUBLE_EQ(isca.values[0].values.at(0), 0.0606911815702915);
}

TEST(SilentFaults, RefusesBadValueFaultPlansNamingTheItem) {
  for (const char* bad : {"nan:sideways:x@3", "flip40:out:x@1", "value=abc:out:x@1", "nan:out:@3", "nanx0:out:x@1",
                          "nan+x:out:x@1", "mist:out:x@1", "nan:out@3"}) {
    try {
      daifu::parse_plan(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const daifu::Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

TEST(SilentFaults, RefusesNonsenseDetectorOptions) {
  const auto dir = fresh_dir();
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(dir.string()).detectors(daifu::DetectorOptions().spike_ratio(0.5))),
               daifu::Error);
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(dir.string()).detectors(daifu::DetectorOptions().window(0))),
               daifu::Error);
  EXPECT_THROW(
      daifu::Session(daifu::Options().workplace(dir.string()).detectors(daifu::DetectorOptions().state_check_every(0))),
      daifu::Error);
  EXPECT_THROW(
      daifu::Session(daifu::Options().workplace(dir.string()).detectors(daifu::DetectorOptions().grad_check_every(-1))),
      daifu::Error);
  daifu::ValueFault fault;
  fault.where = "x";
  fault.bit = 32;
  fault.model = FaultModel::BitFlip;
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(dir.string()).inject(fault)), daifu::Error);
}

TEST(RobustWindow, FlagsHundredfoldSpikesOnlyAfterWarmup) {
  daifu::detail::RobustWindow w(100);
  for (int64_t i = 0; i < 19; ++i) w.add(i, 1.0 + 0.01 * static_cast<double>(i % 5));
  EXPECT_FALSE(w.spike(1e6, 100, 20, 20)) << "19 values: still warming up";
  w.add(19, 1.0);
  EXPECT_TRUE(w.spike(1e6, 100, 20, 20));
  EXPECT_FALSE(w.spike(50, 100, 20, 20)) << "50x the median is under the ratio";
  w.add(19, std::nan(""));
  EXPECT_EQ(w.count(), 20) << "a non-finite value is not recorded";
  for (int64_t i = 20; i < 300; ++i) w.add(i, 2.0);
  EXPECT_EQ(w.count(), 100);
}

TEST(RobustWindow, BoundsTheWarmUpByTheLargestValueSoFarWhenAsked) {
  daifu::detail::RobustWindow w(100);
  EXPECT_FALSE(w.spike(1e9, 100, 20, 20, /*bound_warmup=*/true)) << "no value: nothing to compare with";
  w.add(0, 1.0);
  w.add(1, -2.0);
  EXPECT_FALSE(w.spike(1e9, 100, 20, 20, true)) << "2 values: too few to compare with";
  w.add(2, 1.5);
  EXPECT_FALSE(w.spike(1e9, 100, 20, 20)) << "without the bound, the warm-up judges nothing";
  EXPECT_FALSE(w.spike(199, 100, 20, 20, true)) << "under 100 times the largest |value|, 2";
  const auto s = w.spike(201, 100, 20, 20, true);
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->warmup);
  EXPECT_EQ(s->median, 2.0);
  w.clear();
  EXPECT_EQ(w.count(), 0);
}

// The shortcut past the median (a value at most ratio times the smallest one) never changes a
// verdict: random windows, some with negative values, judged against the rule itself; and the
// smallest value it uses follows the window as values come and go.
TEST(RobustWindow, TheShortcutPastTheMedianAgreesWithTheRule) {
  daifu::detail::RobustWindow small(3);
  for (int64_t i = 0; i < 3; ++i) small.add(i, 1.0);
  EXPECT_FALSE(small.spike(50, 100, 20, 3));
  for (int64_t i = 3; i < 6; ++i) small.add(i, 0.01);  // 1.0, the smallest so far, leaves
  EXPECT_TRUE(small.spike(50, 100, 20, 3));

  std::mt19937 gen(7);
  std::lognormal_distribution<double> size(0, 2);
  std::uniform_real_distribution<double> unit(0, 1);
  for (int trial = 0; trial < 300; ++trial) {
    daifu::detail::RobustWindow w(50);
    std::vector<double> values;
    const bool signed_values = trial % 3 == 0;
    for (int64_t i = 0; i < 50; ++i) {
      const double x = size(gen) * (signed_values && unit(gen) < 0.3 ? -1 : 1);
      w.add(i, x);
      values.push_back(x);
    }
    auto median_of = [](std::vector<double> v) {
      std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
      return v[v.size() / 2];
    };
    const double median = median_of(values);
    std::vector<double> deviations;
    for (const double x : values) deviations.push_back(std::abs(x - median));
    const double mad = median_of(deviations);
    for (const double ratio : {1.5, 10.0, 100.0}) {
      for (int k = 0; k < 20; ++k) {
        const double value = size(gen) * ratio * unit(gen) * 3;
        const bool expected = value - median > (ratio - 1) * std::abs(median) && value - median > 2 * mad;
        EXPECT_EQ(w.spike(value, ratio, 2, 20).has_value(), expected) << value << " against median " << median;
      }
    }
  }
}

// The smallest value behind the shortcut follows the window as values come and go: after every
// add (the next step, a step re-run after a rollback, a step older than the window) a spike
// test, which caches it, agrees with the rule over the window a std::map of the last 20 steps
// holds. A falling series makes most new values the smallest, which the cache must take in.
TEST(RobustWindow, TheShortcutFollowsEvictionsAndReplacedSteps) {
  std::mt19937 gen(11);
  std::lognormal_distribution<double> size(0, 1);
  std::uniform_real_distribution<double> unit(0, 1);
  for (int trial = 0; trial < 50; ++trial) {
    daifu::detail::RobustWindow w(20);
    std::map<int64_t, double> model;
    int64_t next = 0;
    for (int op = 0; op < 200; ++op) {
      const double u = unit(gen);
      // Mostly the next step; sometimes a step re-run (rolled back to), sometimes one long gone.
      const int64_t step = u < 0.9 || next < 25 ? next++ : u < 0.97 ? next - 1 - static_cast<int64_t>(unit(gen) * 5) : next - 40;
      // Values that fall as training goes on (each new one often the smallest), or that do not.
      const double x = trial % 2 == 0 ? std::exp(-0.3 * static_cast<double>(step)) * std::pow(size(gen), 0.3) : size(gen);
      w.add(step, x);
      model[step] = x;
      while (model.size() > 20) model.erase(model.begin());
      if (model.size() < 10) continue;
      std::vector<double> v;
      for (const auto& [s, value] : model) v.push_back(value);
      std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
      const double median = v[v.size() / 2];
      for (double& d : v) d = std::abs(d - median);
      std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
      const double mad = v[v.size() / 2];
      const double value = median * (0.5 + 3 * unit(gen));  // around the threshold, 1.5 x the median
      const bool expected = value - median > 0.5 * median && value - median > 2 * mad;
      ASSERT_EQ(w.spike(value, 1.5, 2, 10).has_value(), expected) << "trial " << trial << ", op " << op;
    }
  }
}

// A gradient of many chunks of the detectors' parallel loop (2^16 floats each): a NaN in its
// last element is found and named.
TEST(SilentFaults, ANanAtTheEndOfAGradientOfSeveralChunksIsDetected) {
  const auto wp = fresh_dir();
  {
    torch::manual_seed(5);
    torch::nn::Linear big(1100, 1000);  // 1.1 M weights
    torch::optim::SGD sgd(big->parameters(), 0.01);
    daifu::Session session(no_plan().workplace(wp.string()));
    session.track("model", *big);
    session.track("optimizer", sgd);
    DAIFU_GUARD(session, step, 0, 2) {
      sgd.zero_grad();
      big->forward(torch::randn({4, 1100})).pow(2).mean().backward();
      if (step.index() == 1 && step.attempt() == 0) big->weight.grad().view(-1)[big->weight.numel() - 1] = std::nanf("");
      step.before_update();
      sgd.step();
    };
  }
  const auto detections = events(wp, "detection");
  ASSERT_EQ(detections.size(), 1u);
  EXPECT_EQ(detections[0]["detector"], "nonfinite_grad");
  EXPECT_EQ(detections[0]["parameter"], "model.weight");
  EXPECT_EQ(detections[0]["nan"], 1);
  EXPECT_EQ(events(wp, "failure").size(), 1u);
}

}  // namespace silent_fault_test
