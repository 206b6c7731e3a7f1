// The built-in exceptional_data surgery and daifu::check_finite, on real training loops whose
// batches are memoized with Step::once.
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "test_util.h"

namespace exceptional_data_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;
namespace F = torch::nn::functional;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 16));
    fc2 = register_module("fc2", torch::nn::Linear(16, 3));
  }
  torch::Tensor forward(torch::Tensor x) { return fc2->forward(torch::relu(fc1->forward(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Net);

using Batch = std::pair<torch::Tensor, torch::Tensor>;

// A classifier, its optimizer and a fixed list of batches (so a step's batch depends only on
// its index). The same seed gives the same initial weights.
struct Problem {
  explicit Problem(int64_t steps) {
    torch::manual_seed(11);
    net = Net();
    optimizer = std::make_unique<torch::optim::Adam>(net->parameters(), torch::optim::AdamOptions(1e-2));
    for (int64_t i = 0; i < steps; ++i) batches.emplace_back(torch::randn({16, 8}), torch::randint(0, 3, {16}));
  }
  torch::Tensor loss_of(const Batch& b) { return F::cross_entropy(net->forward(b.first), b.second); }
  void train(const Batch& b) {
    optimizer->zero_grad();
    loss_of(b).backward();
    optimizer->step();
  }
  std::vector<torch::Tensor> params() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : net->parameters()) out.push_back(p.detach().clone());
    return out;
  }
  bool finite() const {
    for (const auto& p : net->parameters()) {
      if (!torch::isfinite(p).all().item<bool>()) return false;
    }
    return true;
  }
  Net net{nullptr};
  std::unique_ptr<torch::optim::Adam> optimizer;
  std::vector<Batch> batches;
};

void expect_bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

daifu::Options options_for(const std::filesystem::path& wp) { return daifu::Options().workplace(wp.string()).inject(""); }

TEST(CheckFinite, CountsNanAndInfAndIsClassifiedAsExceptionalData) {
  auto t = torch::zeros({3, 2});
  t[0][0] = kNaN;
  t[1][1] = kNaN;
  t[2][0] = -kInf;
  try {
    daifu::check_finite(t, "loss");
    FAIL() << "expected daifu::Error";
  } catch (const daifu::Error& e) {
    EXPECT_EQ(std::string(e.what()), "loss contains non-finite values (2 NaN, 1 Inf) in a tensor of shape [3, 2]");
    const auto failure = daifu::Classifier().classify(std::current_exception());
    EXPECT_EQ(failure.kind, daifu::FailureKind::ExceptionalData) << failure.matched_by;
  }
  EXPECT_NO_THROW(daifu::check_finite(torch::ones({4}, torch::requires_grad()), "weights"));
  EXPECT_NO_THROW(daifu::check_finite(torch::ones({4}, torch::kLong), "labels"));
  EXPECT_THROW(daifu::check_finite(torch::Tensor(), "nothing"), daifu::Error);
}

TEST(ExceptionalData, NanThatReachedTheWeightsIsRolledBackAndTheBatchSkipped) {
  constexpr int64_t kSteps = 12, kBad = 6;
  Problem plain(kSteps);
  for (int64_t i = 0; i < kSteps; ++i) {
    if (i != kBad) plain.train(plain.batches[i]);
  }
  Problem guarded(kSteps);
  guarded.batches[kBad].first[3][5] = kNaN;  // one corrupt sample
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp).snapshot_every(4));
  session.track("model", *guarded.net);
  session.track("optimizer", *guarded.optimizer);
  DAIFU_GUARD(session, step, 0, kSteps) {
    auto& batch = step.once("batch", [&] { return guarded.batches[step.index()]; });
    guarded.train(batch);
    // After optimizer.step(): the NaN is in the weights when this throws.
    for (const auto& p : guarded.net->parameters()) daifu::check_finite(p, "model weights");
  };
  EXPECT_TRUE(guarded.finite());
  expect_bitwise_equal(plain.params(), guarded.params());
  EXPECT_EQ(session.stats().skipped_steps, 1);
  EXPECT_EQ(events(wp, "failure").at(0)["kind"], "exceptional_data");
  const auto repair = events(wp, "repair").at(0);
  EXPECT_EQ(repair["surgery"], "exceptional_data");
  EXPECT_EQ(repair["action"], "skip");
  EXPECT_EQ(repair["changes"]["skipped_batches"], nlohmann::json::array({0, 1}));
  EXPECT_NE(repair["reason"].get<std::string>().find("data_policy is \"skip\""), std::string::npos);
  const auto rollback = events(wp, "rollback").at(0);
  EXPECT_EQ(rollback["step"], kBad);
  EXPECT_EQ(rollback["to_step"], 4);
  EXPECT_EQ(events(wp, "skip").at(0)["step"], kBad);
}

// PyTorch's cpp/mnist checks its loss with AT_ASSERT(!std::isnan(...)): classified unknown,
// the NaN batch that the built-in surgery skips ended the run in daifu::Unrecovered.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
TEST(ExceptionalData, AProgramsOwnNanAssertIsRepairedLikeCheckFinite) {
  constexpr int64_t kSteps = 8, kBad = 5;
  Problem guarded(kSteps);
  guarded.batches[kBad].first[2][1] = kNaN;
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *guarded.net);
  session.track("optimizer", *guarded.optimizer);
  DAIFU_GUARD(session, step, 0, kSteps) {
    auto& batch = step.once("batch", [&] { return guarded.batches[step.index()]; });
    guarded.optimizer->zero_grad();
    auto loss = guarded.loss_of(batch);
    AT_ASSERT(!std::isnan(loss.template item<float>()));
    loss.backward();
    guarded.optimizer->step();
  };
  EXPECT_TRUE(guarded.finite());
  EXPECT_EQ(session.stats().skipped_steps, 1);
  EXPECT_EQ(events(wp, "failure").at(0)["kind"], "exceptional_data");
  EXPECT_EQ(events(wp, "repair").at(0)["surgery"], "exceptional_data");
}
#pragma GCC diagnostic pop

TEST(ExceptionalData, ScrubReplacesTheNonFiniteValuesAndRetries) {
  constexpr int64_t kSteps = 6;
  Problem p(kSteps);
  auto& x = p.batches[3].first;
  x[0][0] = kNaN;
  x[1][1] = kNaN;
  x[2][2] = kInf;
  const double finite_max = x.masked_select(torch::isfinite(x)).max().item<double>();
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.knob("data_policy", "scrub");
  session.track("model", *p.net);
  session.track("optimizer", *p.optimizer);
  torch::Tensor seen_on_retry;
  DAIFU_GUARD(session, step, 0, kSteps) {
    auto& batch = step.once("batch", [&] { return p.batches[step.index()]; });
    if (step.attempt() > 0) seen_on_retry = batch.first;
    p.optimizer->zero_grad();
    auto loss = p.loss_of(batch);
    daifu::check_finite(loss, "loss");  // before backward(): nothing tracked changed yet
    loss.backward();
    p.optimizer->step();
  };
  EXPECT_TRUE(p.finite());
  EXPECT_EQ(session.global_step(), kSteps);
  EXPECT_EQ(session.stats().skipped_steps, 0);
  EXPECT_EQ(session.stats().scrubbed_batches, 1);
  ASSERT_TRUE(seen_on_retry.defined());
  EXPECT_EQ(seen_on_retry[0][0].item<double>(), 0.0);
  EXPECT_EQ(seen_on_retry[1][1].item<double>(), 0.0);
  EXPECT_EQ(seen_on_retry[2][2].item<double>(), finite_max);
  EXPECT_TRUE(events(wp, "rollback").empty());
  const auto repair = events(wp, "repair").at(0);
  EXPECT_EQ(repair["surgery"], "exceptional_data");
  EXPECT_EQ(repair["action"], "retry");
  const auto change = repair["changes"]["batch.first"];
  EXPECT_EQ(change[0]["nan"], 2);
  EXPECT_EQ(change[0]["inf"], 1);
  EXPECT_EQ(change[1]["scrubbed"], 3);
  EXPECT_EQ(change[1]["shape"], nlohmann::json::array({16, 8}));
  EXPECT_FALSE(repair["changes"].contains("batch.second"));  // integer labels are left alone
  EXPECT_NE(session.summary().find("1 scrubbed"), std::string::npos) << session.summary();
}

TEST(ExceptionalData, ScrubSkipsWhenTheNanArosInTheComputationNotTheBatch) {
  Problem p(5);
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.knob("data_policy", "scrub");
  session.track("model", *p.net);
  session.track("optimizer", *p.optimizer);
  std::vector<int64_t> done;
  DAIFU_GUARD(session, step, 0, 5) {
    auto& batch = step.once("batch", [&] { return p.batches[step.index()]; });
    torch::autograd::DetectAnomalyGuard anomaly;
    p.optimizer->zero_grad();
    auto loss = p.loss_of(batch);
    if (step.index() == 2) loss = loss + torch::sqrt(loss - loss - 1);  // NaN from the arithmetic
    loss.backward();  // anomaly mode: "Function 'SqrtBackward0' returned nan values in its 0th output."
    p.optimizer->step();
    done.push_back(step.index());
  };
  EXPECT_EQ(done, (std::vector<int64_t>{0, 1, 3, 4}));
  EXPECT_TRUE(p.finite());
  const auto failure = events(wp, "failure").at(0);
  EXPECT_EQ(failure["kind"], "numeric_fault");
  EXPECT_NE(failure["message"].get<std::string>().find("returned nan values"), std::string::npos);
  // A non-finite value the program (here anomaly mode) found is not re-executed: the same step
  // would find it again. Skipped at once, the step ran once.
  EXPECT_EQ(events(wp, "failure").size(), 1u);
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_TRUE(events(wp, "persistent_fault").empty());
  const auto& repair = repairs[0];
  EXPECT_EQ(repair["surgery"], "exceptional_data");
  EXPECT_EQ(repair["action"], "skip");
  EXPECT_NE(repair["reason"].get<std::string>().find("the memoized batch is finite"), std::string::npos) << repair;
  EXPECT_EQ(session.stats().scrubbed_batches, 0);
}

TEST(ExceptionalData, AnUnknownPolicyEscalatesNamingTheAcceptedValues) {
  Problem p(3);
  p.batches[1].first[0][0] = kNaN;
  daifu::Session session(options_for(fresh_dir()));
  session.knob("data_policy", "drop");
  try {
    DAIFU_GUARD(session, step, 0, 3) {
      auto& batch = step.once("batch", [&] { return p.batches[step.index()]; });
      daifu::check_finite(batch.first, "input batch");
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("surgery exceptional_data escalated"), std::string::npos) << what;
    EXPECT_NE(what.find("it must be \"skip\" or \"scrub\""), std::string::npos) << what;
  }
}

TEST(ExceptionalData, ClaimsOnlyNonFiniteFailures) {
  daifu::Session session(options_for(fresh_dir()));
  auto claims = [&](daifu::FailureKind kind, const std::string& message) {
    return daifu::testing::claims(session, "exceptional_data", kind, message);
  };
  using K = daifu::FailureKind;
  EXPECT_TRUE(claims(K::ExceptionalData, "input batch contains non-finite values (1 NaN, 0 Inf)"));
  EXPECT_TRUE(claims(K::NumericFault, "Function 'SqrtBackward0' returned nan values in its 0th output."));
  EXPECT_TRUE(claims(K::NumericFault, "loss is inf"));
  EXPECT_FALSE(claims(K::NumericFault, "linalg.inv: The diagonal element 2 is zero, the inversion could not be "
                                       "completed because the input matrix is singular."));
  EXPECT_FALSE(claims(K::OutOfMemory, "DefaultCPUAllocator: can't allocate memory: you tried to allocate 4 PiB"));
  EXPECT_FALSE(claims(K::PathProblem, "Parent directory missing-dir does not exist."));
  EXPECT_FALSE(claims(K::TensorMismatch, "mat1 and mat2 shapes cannot be multiplied (4x7 and 10x5)"));
}

// numeric_fault re-executes a step only where that may help: a detector's finding (a transient
// corruption) or a numeric fault that is not a non-finite value. A NaN the program found comes
// back on re-execution; exceptional_data alone is asked.
TEST(ExceptionalData, ANonFiniteValueTheProgramFoundIsNotReExecutedFirst) {
  daifu::Session session(options_for(fresh_dir()));
  using daifu::testing::candidate_names;
  using K = daifu::FailureKind;
  const auto program = candidate_names(session, K::NumericFault, "loss is NaN at step 78", "std::runtime_error");
  ASSERT_FALSE(program.empty());
  EXPECT_EQ(program.front(), "exceptional_data");
  EXPECT_EQ(std::count(program.begin(), program.end(), "numeric_fault"), 0);
  const auto detector =
      candidate_names(session, K::NumericFault, "non-finite gradient norm (nan) at step 20", "daifu::FaultDetected");
  ASSERT_GE(detector.size(), 2u);
  EXPECT_EQ(detector[0], "numeric_fault");
  EXPECT_EQ(detector[1], "exceptional_data");
  const auto singular = candidate_names(session, K::NumericFault, "the input matrix is singular.", "c10::Error");
  ASSERT_FALSE(singular.empty());
  EXPECT_EQ(singular.front(), "numeric_fault");
}

// Seed 000's "exceptional data" case: augment() returns torch.full_like(item, nan).to(float64)
// for one batch. The float64 batch fails in the float32 model first (tensor_mismatch casts
// it), then its NaN loss is caught by check_finite and the batch is skipped or scrubbed.
class Seed000 : public ::testing::TestWithParam<std::string> {};

TEST_P(Seed000, Float64NanBatchIntoAFloat32ModelIsCastThenHandledAndTrainingFinishes) {
  const std::string policy = GetParam();
  constexpr int64_t kSteps = 8, kBad = 5;
  Problem plain(kSteps);
  for (int64_t i = 0; i < kSteps; ++i) {
    if (i != kBad) plain.train(plain.batches[i]);
  }
  Problem p(kSteps);
  p.batches[kBad].first = torch::full_like(p.batches[kBad].first, kNaN).to(torch::kFloat64);
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.knob("data_policy", policy);
  session.track("model", *p.net);
  session.track("optimizer", *p.optimizer);
  DAIFU_GUARD(session, step, 0, kSteps) {
    auto& batch = step.once("batch", [&] { return p.batches[step.index()]; });
    p.optimizer->zero_grad();
    auto loss = p.loss_of(batch);
    daifu::check_finite(loss, "loss");
    loss.backward();
    p.optimizer->step();
  };
  EXPECT_TRUE(p.finite());
  const auto failures = events(wp, "failure");
  ASSERT_EQ(failures.size(), 2u);
  EXPECT_EQ(failures[0]["kind"], "tensor_mismatch");
  const std::string message = failures[0]["message"];  // 2.x appends ", but got Double and Float"
  EXPECT_EQ(message.rfind("mat1 and mat2 must have the same dtype", 0), 0u) << message;
  EXPECT_EQ(failures[1]["kind"], "exceptional_data");
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 2u);
  EXPECT_EQ(repairs[0]["surgery"], "tensor_mismatch");
  EXPECT_EQ(repairs[0]["changes"]["batch.first"][0]["dtype"], "Double");
  EXPECT_EQ(repairs[0]["changes"]["batch.first"][1]["dtype"], "Float");
  EXPECT_EQ(repairs[1]["surgery"], "exceptional_data");
  if (policy == "skip") {
    EXPECT_EQ(repairs[1]["action"], "skip");
    EXPECT_EQ(session.stats().skipped_steps, 1);
    expect_bitwise_equal(plain.params(), p.params());  // as if the bad batch had never come
  } else {
    EXPECT_EQ(repairs[1]["action"], "retry");
    EXPECT_EQ(repairs[1]["changes"]["batch.first"][1]["scrubbed"], 16 * 8);
    EXPECT_EQ(session.stats().scrubbed_batches, 1);
    EXPECT_EQ(session.global_step(), kSteps);
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, Seed000, ::testing::Values("skip", "scrub"));

}  // namespace exceptional_data_test
