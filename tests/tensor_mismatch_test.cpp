// The built-in tensor_mismatch surgery on real libtorch 1.13 errors, with batches memoized by
// Step::once; the batch view surgeries share (batch_tensors); the classifier head widening.
//
// The messages, recorded from libtorch 1.13 (N = 4 or 16, C = 10):
//   nll_loss/cross_entropy, target (N,1) or one-hot (N,C):
//       "0D or 1D target tensor expected, multi-target not supported"
//   cross_entropy, integer one-hot target (N,C):
//       "Expected floating point type for target with class probabilities, got Long"
//   binary_cross_entropy, target (N) vs input (N,1):
//       "Using a target size ([4]) that is different to the input size ([4, 1]) is deprecated.
//        Please ensure they have the same size."
//   binary_cross_entropy_with_logits: "Target size ([4]) must be the same as input size ([4, 1])"
//   mse_loss (N,1) vs (N): no error, only a broadcasting warning (nothing to repair)
//   Linear, float64 input: "mat1 and mat2 must have the same dtype" (2-D input),
//       "expected scalar type Double but found Float" (1-D/3-D input, or no bias)
//   Conv2d, float64 input: "Input type (double) and bias type (float) should be the same"
//   Conv2d(1, ...), input (N,28,28): "Given groups=1, weight of size [4, 1, 3, 3], expected
//       input[1, 4, 28, 28] to have 1 channels, but got 4 channels instead"
//   cross_entropy, input (C) vs target (1): "size mismatch (got input: [10], target: [1])"
//   cross_entropy, logits (N,1) vs class indices: c10::IndexError "Target 7 is out of bounds."
//   cross_entropy, float class indices: "expected scalar type Long but found Float"
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "surgery/batch_tensors.h"
#include "test_util.h"

#include "compat/optimizer_key.h"

namespace tensor_mismatch_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;
namespace F = torch::nn::functional;
using Batch = std::pair<torch::Tensor, torch::Tensor>;

daifu::Options options_for(const std::filesystem::path& wp) { return daifu::Options().workplace(wp.string()).inject(""); }

std::vector<torch::Tensor> clones(const std::vector<torch::Tensor>& ts) {
  std::vector<torch::Tensor> out;
  for (const auto& t : ts) out.push_back(t.detach().clone());
  return out;
}

// The repairs of the journal, in order.
std::vector<nlohmann::json> repairs(const std::filesystem::path& wp) { return events(wp, "repair"); }

nlohmann::json shape(std::vector<int64_t> sizes) { return nlohmann::json(sizes); }

// ---- batch_tensors ----

TEST(BatchTensors, ListsTheTensorsOfTheCommonMemoTypesWithTheirRoles) {
  using daifu::detail::BatchRole;
  daifu::Step step;
  step.once("x", [] { return torch::ones({2}); });
  step.once("labels", [] { return torch::ones({2}); });
  step.once("example", [] { return torch::data::Example<>(torch::ones({1}), torch::zeros({1})); });
  step.once("examples", [] { return std::vector<torch::data::Example<>>{{torch::ones({1}), torch::zeros({1})}}; });
  step.once("pair", [] { return Batch(torch::ones({1}), torch::zeros({1})); });
  step.once("tuple", [] { return std::make_tuple(torch::ones({1}), torch::zeros({1})); });
  step.once("list", [] { return std::vector<torch::Tensor>{torch::ones({1}), torch::Tensor()}; });
  step.once("count", [] { return int64_t{3}; });
  std::vector<std::pair<std::string, BatchRole>> seen;
  for (const auto& b : daifu::detail::batch_tensors(step)) seen.emplace_back(b.name, b.role);
  const std::vector<std::pair<std::string, BatchRole>> expected = {
      {"example.data", BatchRole::Input},       {"example.target", BatchRole::Target},
      {"examples[0].data", BatchRole::Input},   {"examples[0].target", BatchRole::Target},
      {"labels", BatchRole::Target},            {"list[0]", BatchRole::Unknown},
      {"pair.first", BatchRole::Input},         {"pair.second", BatchRole::Target},
      {"tuple<0>", BatchRole::Input},           {"tuple<1>", BatchRole::Target},
      {"x", BatchRole::Input}};
  EXPECT_EQ(seen, expected);
  // The pointers replace the memoized value in place: the next attempt sees the new tensor.
  *daifu::detail::batch_tensors(step).back().tensor = torch::zeros({5});
  EXPECT_EQ(step.once("x", [] { return torch::ones({2}); }).size(0), 5);
}

// ---- target adapters ----

struct NetImpl : torch::nn::Module {
  NetImpl(int64_t in, int64_t hidden, int64_t out) {
    fc1 = register_module("fc1", torch::nn::Linear(in, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, out));
  }
  torch::Tensor forward(torch::Tensor x) { return fc2->forward(torch::relu(fc1->forward(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Net);

TEST(TensorMismatch, NxOneClassIndexTargetsAreSqueezedForCrossEntropy) {
  torch::manual_seed(1);
  Net net(8, 16, 5);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  session.track("optimizer", sgd);
  DAIFU_GUARD(session, step, 0, 3) {
    // A pipeline that yields labels of shape (N, 1).
    auto& batch = step.once("batch", [] { return Batch(torch::randn({16, 8}), torch::randint(0, 5, {16, 1})); });
    sgd.zero_grad();
    F::cross_entropy(net->forward(batch.first), batch.second).backward();
    sgd.step();
  };
  EXPECT_EQ(session.global_step(), 3);
  const auto r = repairs(wp);
  ASSERT_EQ(r.size(), 3u);  // every batch of this pipeline needs it
  for (const auto& repair : r) {
    EXPECT_EQ(repair["surgery"], "tensor_mismatch");
    EXPECT_EQ(repair["action"], "retry");
    EXPECT_EQ(repair["changes"]["batch.second"][0]["shape"], shape({16, 1}));
    EXPECT_EQ(repair["changes"]["batch.second"][1]["shape"], shape({16}));
    EXPECT_EQ(repair["reason"].get<std::string>().rfind("target_rank: ", 0), 0u) << repair;
  }
  EXPECT_EQ(events(wp, "failure").at(0)["message"], "0D or 1D target tensor expected, multi-target not supported");
}

TEST(TensorMismatch, BinaryTargetsAreReshapedToTheOutputShape) {
  torch::manual_seed(2);
  Net net(6, 8, 1);
  torch::optim::Adam adam(net->parameters());
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  session.track("optimizer", adam);
  DAIFU_GUARD(session, step, 0, 4) {
    auto& batch = step.once("batch", [] { return Batch(torch::randn({4, 6}), torch::randint(0, 2, {4}).to(torch::kFloat)); });
    adam.zero_grad();
    auto out = net->forward(batch.first);  // (4, 1)
    auto loss = step.index() % 2 == 0 ? F::binary_cross_entropy(torch::sigmoid(out), batch.second)
                                      : F::binary_cross_entropy_with_logits(out, batch.second);
    loss.backward();
    adam.step();
  };
  EXPECT_EQ(session.global_step(), 4);
  const auto failures = events(wp, "failure");
  ASSERT_EQ(failures.size(), 4u);
  EXPECT_EQ(failures[0]["message"],
            "Using a target size ([4]) that is different to the input size ([4, 1]) is deprecated. Please ensure they "
            "have the same size.");
  EXPECT_EQ(failures[1]["message"], "Target size ([4]) must be the same as input size ([4, 1])");
  for (const auto& repair : repairs(wp)) {
    EXPECT_EQ(repair["changes"]["batch.second"][1]["shape"], shape({4, 1})) << repair;
  }
}

TEST(TensorMismatch, OneHotTargetsBecomeClassIndices) {
  torch::manual_seed(3);
  Net net(8, 16, 10);
  torch::optim::Adam adam(net->parameters());
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  session.track("optimizer", adam);
  std::vector<torch::Tensor> labels;
  DAIFU_GUARD(session, step, 0, 2) {
    auto& batch = step.once("batch", [&] {
      labels.push_back(torch::randint(0, 10, {16}));
      return Batch(torch::randn({16, 8}), F::one_hot(labels.back(), 10));  // int64 one-hot
    });
    adam.zero_grad();
    auto out = net->forward(batch.first);
    auto loss = step.index() == 0 ? torch::nll_loss(torch::log_softmax(out, 1), batch.second)
                                  : F::cross_entropy(out, batch.second);
    loss.backward();
    adam.step();
    EXPECT_TRUE(torch::equal(batch.second, labels.back()));
  };
  const auto failures = events(wp, "failure");
  ASSERT_EQ(failures.size(), 2u);
  EXPECT_EQ(failures[1]["message"], "Expected floating point type for target with class probabilities, got Long");
  const auto r = repairs(wp);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0]["changes"]["batch.second"][1]["shape"], shape({16}));
  EXPECT_EQ(r[1]["reason"].get<std::string>().rfind("class_probabilities: ", 0), 0u) << r[1];
}

TEST(TensorMismatch, ClassIndicesBecomeOneHotWithTheClassCountOfTheError) {
  torch::manual_seed(4);
  Net net(8, 16, 7);
  torch::optim::Adam adam(net->parameters());
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  session.track("optimizer", adam);
  DAIFU_GUARD(session, step, 0, 2) {
    auto& batch = step.once("batch", [] { return Batch(torch::randn({16, 8}), torch::randint(0, 7, {16}).to(torch::kFloat)); });
    adam.zero_grad();
    F::binary_cross_entropy_with_logits(net->forward(batch.first), batch.second).backward();
    adam.step();
  };
  EXPECT_EQ(events(wp, "failure").at(0)["message"], "Target size ([16]) must be the same as input size ([16, 7])");
  const auto change = repairs(wp).at(0)["changes"]["batch.second"];
  EXPECT_EQ(change[0]["shape"], shape({16}));
  EXPECT_EQ(change[1]["shape"], shape({16, 7}));
  EXPECT_EQ(change[1]["dtype"], "Float");
}

TEST(TensorMismatch, FloatClassIndicesAreCastToLong) {
  torch::manual_seed(5);
  Net net(8, 16, 4);
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  DAIFU_GUARD(session, step, 0, 2) {
    auto& batch = step.once("batch", [] { return Batch(torch::randn({16, 8}), torch::randint(0, 4, {16}).to(torch::kFloat)); });
    F::cross_entropy(net->forward(batch.first), batch.second).backward();
  };
  const std::string message = events(wp, "failure").at(0)["message"];
  EXPECT_TRUE(message == "expected scalar type Long but found Float" ||           // LibTorch 1.x
              message == "expected target dtype to be Long or Byte, but got Float")  // 2.x
      << message;
  EXPECT_EQ(repairs(wp).at(0)["changes"]["batch.second"][1]["dtype"], "Long");
}

// ---- input adapters ----

TEST(TensorMismatch, Float64InputsAreCastToTheModelsDtypeForLinearAndConv) {
  torch::manual_seed(6);
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3)), torch::nn::Functional(torch::relu),
                            torch::nn::Flatten(), torch::nn::Linear(4 * 6 * 6, 3));
  torch::nn::Linear mlp(12, 3);
  torch::optim::SGD sgd(net->parameters(), 0.05);
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  session.track("optimizer", sgd);
  DAIFU_GUARD(session, step, 0, 2) {
    auto& images = step.once("images", [] { return torch::randn({5, 1, 8, 8}, torch::kFloat64); });
    auto& labels = step.once("labels", [] { return torch::randint(0, 3, {5}); });
    sgd.zero_grad();
    F::cross_entropy(net->forward(images), labels).backward();
    sgd.step();
  };
  EXPECT_EQ(events(wp, "failure").at(0)["message"], "Input type (double) and bias type (float) should be the same");
  const auto change = repairs(wp).at(0)["changes"]["images"];
  EXPECT_EQ(change[0]["dtype"], "Double");
  EXPECT_EQ(change[1]["dtype"], "Float");
  EXPECT_EQ(session.global_step(), 2);

  const auto wp2 = fresh_dir("_linear");
  daifu::Session linear(options_for(wp2));
  linear.track("model", *mlp);
  DAIFU_GUARD(linear, step, 0, 1) {
    auto& x = step.once("x", [] { return torch::randn({5, 12}, torch::kFloat64); });
    mlp->forward(x).sum().backward();
  };
  // LibTorch 2.x appends ", but got Double and Float".
  const std::string message = events(wp2, "failure").at(0)["message"];
  EXPECT_EQ(message.rfind("mat1 and mat2 must have the same dtype", 0), 0u) << message;
  EXPECT_EQ(repairs(wp2).at(0)["changes"]["x"][1]["dtype"], "Float");
}

TEST(TensorMismatch, AnUint8InputIsNotCastSilently) {
  torch::nn::Linear mlp(12, 3);
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *mlp);
  try {
    // Batch 0 is dropped as data (data_or_code); batch 1 failing the same way is the code.
    DAIFU_GUARD(session, step, 0, 2) {
      auto& x = step.once("x", [] { return torch::randint(0, 255, {5, 12}).to(torch::kUInt8); });
      mlp->forward(x);
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("tensor_mismatch (declined: dtype: x is Byte"), std::string::npos) << e.what();
  }
  // Per step: tensor_mismatch, then hot_patch (no patch in the workplace); at step 1 data_or_code.
  const auto declined = events(wp, "surgery_declined");
  ASSERT_EQ(declined.size(), 5u);
  EXPECT_EQ(declined[0]["surgery"], "tensor_mismatch");
  EXPECT_EQ(declined[4]["surgery"], "data_or_code");
  EXPECT_EQ(events(wp, "repair").at(0)["surgery"], "data_or_code");  // batch 0 skipped
}

struct ConvNetImpl : torch::nn::Module {
  ConvNetImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3)));
    fc = register_module("fc", torch::nn::Linear(4 * 26 * 26, 10));
  }
  torch::Tensor forward(torch::Tensor x) { return fc->forward(torch::relu(conv->forward(x)).flatten(1)); }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ConvNet);

TEST(TensorMismatch, FashionMnistImagesWithoutTheirChannelDimensionAreUnsqueezed) {
  torch::manual_seed(7);
  ConvNet net;
  torch::optim::Adam adam(net->parameters());
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  session.track("optimizer", adam);
  DAIFU_GUARD(session, step, 0, 2) {
    // What a loader of raw (N, 28, 28) Fashion-MNIST images yields.
    auto& batch = step.once("batch", [] { return torch::data::Example<>(torch::rand({4, 28, 28}), torch::randint(0, 10, {4})); });
    adam.zero_grad();
    F::cross_entropy(net->forward(batch.data), batch.target).backward();
    adam.step();
  };
  EXPECT_EQ(events(wp, "failure").at(0)["message"],
            "Given groups=1, weight of size [4, 1, 3, 3], expected input[1, 4, 28, 28] to have 1 channels, but got 4 "
            "channels instead");
  const auto change = repairs(wp).at(0)["changes"]["batch.data"];
  EXPECT_EQ(change[0]["shape"], shape({4, 28, 28}));
  EXPECT_EQ(change[1]["shape"], shape({4, 1, 28, 28}));
  EXPECT_EQ(session.global_step(), 2);
}

TEST(TensorMismatch, ASingleSampleWithoutItsBatchDimensionIsUnsqueezed) {
  torch::manual_seed(8);
  Net net(8, 16, 10);
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  DAIFU_GUARD(session, step, 0, 1) {
    auto& sample = step.once("sample", [] { return Batch(torch::randn({8}), torch::tensor({3})); });
    F::cross_entropy(net->forward(sample.first), sample.second).backward();
  };
  EXPECT_EQ(events(wp, "failure").at(0)["message"], "size mismatch (got input: [10], target: [1])");
  EXPECT_EQ(repairs(wp).at(0)["changes"]["sample.first"][1]["shape"], shape({1, 8}));
}

// ---- what the surgery does not claim ----

TEST(TensorMismatch, ClaimsOnlyTheMessagesItKnows) {
  daifu::Session session(options_for(fresh_dir()));
  auto claims = [&](daifu::FailureKind kind, const std::string& message) {
    return daifu::testing::claims(session, "tensor_mismatch", kind, message);
  };
  using K = daifu::FailureKind;
  EXPECT_TRUE(claims(K::TensorMismatch, "0D or 1D target tensor expected, multi-target not supported"));
  EXPECT_TRUE(claims(K::TensorMismatch, "Target 7 is out of bounds."));
  EXPECT_FALSE(claims(K::TensorMismatch, "mat1 and mat2 shapes cannot be multiplied (4x7 and 10x5)"));
  EXPECT_FALSE(claims(K::TensorMismatch,
                      "The size of tensor a (10) must match the size of tensor b (4) at non-singleton dimension 1"));
  EXPECT_FALSE(claims(K::OutOfMemory, "DefaultCPUAllocator: can't allocate memory: you tried to allocate 4 PiB"));
  EXPECT_FALSE(claims(K::PathProblem, "Parent directory missing-dir does not exist."));
  EXPECT_FALSE(claims(K::ApiMisuse, "expected scalar type Float but found Double"));  // the kind decides first
}

TEST(TensorMismatch, DeclinesWhenNoMemoizedTensorFitsTheMessage) {
  torch::manual_seed(9);
  Net net(8, 16, 5);
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  try {
    DAIFU_GUARD(session, step, 0, 2) {
      // Built anew on every attempt: out of the surgeries' reach.
      F::cross_entropy(net->forward(torch::randn({16, 8})), torch::randint(0, 5, {16, 1})).backward();
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("no surgery repairs tensor_mismatch"), std::string::npos) << what;
    EXPECT_NE(what.find("tensor_mismatch (declined: target_rank: no memoized target"), std::string::npos) << what;
  }
  // Attempt 0: both decline and data_or_code retries on a new batch; attempt 1: all three decline.
  const auto declined = events(wp, "surgery_declined");
  ASSERT_EQ(declined.size(), 5u);
  EXPECT_EQ(declined[0]["surgery"], "tensor_mismatch");
  EXPECT_EQ(declined[1]["surgery"], "hot_patch");
  EXPECT_EQ(declined[4]["surgery"], "data_or_code");
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "data_or_code");
}

// ---- the classifier head (seed 000: Dense(1) for a 10-class problem) ----

struct HeadNetImpl : torch::nn::Module {
  explicit HeadNetImpl(bool batch_norm) {
    fc1 = register_module("fc1", torch::nn::Linear(8, 32));
    if (batch_norm) bn = register_module("bn", torch::nn::BatchNorm1d(32));
    fc2 = register_module("fc2", torch::nn::Linear(32, 1));  // BUG: one output for ten classes
  }
  torch::Tensor forward(torch::Tensor x) {
    x = fc1->forward(x);
    if (bn) x = bn->forward(x);
    return fc2->forward(torch::relu(x));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};
TORCH_MODULE(HeadNet);

// Ten separable classes in 8 features: the class's four bits and class / 10, plus noise.
// `all_zero`: every sample is of class 0.
Batch class_batch(int64_t n, bool all_zero = false) {
  auto y = all_zero ? torch::zeros({n}, torch::kLong) : torch::randint(0, 10, {n});
  auto x = torch::randn({n, 8}) * 0.1;
  for (int64_t bit = 0; bit < 4; ++bit) {
    x.select(1, bit).add_(torch::div(y, int64_t{1} << bit, "floor").remainder(2).to(torch::kFloat));
  }
  x.select(1, 4).add_(y.to(torch::kFloat) / 10);
  return {x, y};
}

int64_t impl_count(const torch::optim::Optimizer& opt, const torch::Tensor& t) {
  int64_t n = 0;
  for (const auto& g : opt.param_groups()) {
    for (const auto& p : g.params()) n += p.unsafeGetTensorImpl() == t.unsafeGetTensorImpl();
  }
  return n;
}

TEST(ClassifierHead, TargetOutOfBoundsWidensTheHeadToNumClassesInPlace) {
  torch::manual_seed(10);
  HeadNet net(false);
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-2));
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp).snapshot_every(100));
  session.knob<int64_t>("num_classes", 10);
  session.track("model", *net);
  session.track("optimizer", adam);
  constexpr int64_t kFirstReal = 3, kSteps = 80;
  std::vector<torch::Tensor> at_failure, others_at_failure;
  torch::Tensor head_row_at_failure, head_after_repair;
  std::vector<double> losses;
  DAIFU_GUARD(session, step, 0, kSteps) {
    // The first batches hold class 0 only (no error with one output), then all ten classes.
    auto& batch = step.once("batch", [&] { return class_batch(32, step.index() < kFirstReal); });
    if (step.index() == kFirstReal && step.attempt() == 0) {
      others_at_failure = clones({net->fc1->weight, net->fc1->bias});
      head_row_at_failure = net->fc2->weight.detach().clone();
    }
    if (step.index() == kFirstReal && step.attempt() == 1) {
      // The repair itself: fc1 untouched, fc2 widened with its old row kept, no stale state.
      EXPECT_TRUE(torch::equal(net->fc1->weight, others_at_failure[0]));
      EXPECT_TRUE(torch::equal(net->fc1->bias, others_at_failure[1]));
      EXPECT_EQ(net->fc2->weight.sizes(), torch::IntArrayRef({10, 32}));
      EXPECT_EQ(net->fc2->bias.sizes(), torch::IntArrayRef({10}));
      EXPECT_EQ(net->fc2->options.out_features(), 10);
      EXPECT_TRUE(torch::equal(net->fc2->weight[0], head_row_at_failure[0]));
      EXPECT_FALSE(net->fc2->weight.grad().defined());
      EXPECT_EQ(adam.state().count(daifu::detail::optimizer_state_key(net->fc2->weight)), 0u);
      EXPECT_EQ(adam.state().count(daifu::detail::optimizer_state_key(net->fc1->weight)), 1u);
      EXPECT_EQ(impl_count(adam, net->fc2->weight), 1);  // the optimizer holds the same tensor
      EXPECT_EQ(net->named_parameters()["fc2.weight"].sizes(), torch::IntArrayRef({10, 32}));
      EXPECT_EQ(session.snapshot_stats().last_step, kFirstReal);  // a fresh snapshot for the new shapes
      head_after_repair = net->fc2->weight.detach().clone();
    }
    adam.zero_grad();
    auto loss = F::cross_entropy(net->forward(batch.first), batch.second);
    loss.backward();
    adam.step();
    if (step.index() >= kFirstReal) losses.push_back(loss.item<double>());
  };
  EXPECT_EQ(session.global_step(), kSteps);
  ASSERT_TRUE(head_after_repair.defined());
  EXPECT_FALSE(torch::equal(net->fc2->weight, head_after_repair));  // the optimizer trains the new rows
  const double first = (losses[0] + losses[1] + losses[2]) / 3;
  const double last = (losses[losses.size() - 1] + losses[losses.size() - 2] + losses[losses.size() - 3]) / 3;
  EXPECT_LT(last, first * 0.5) << first << " -> " << last;

  const auto failure = events(wp, "failure").at(0);
  EXPECT_EQ(failure["exception_type"], "c10::IndexError");
  EXPECT_EQ(failure["message"].get<std::string>().rfind("Target ", 0), 0u);
  const auto r = repairs(wp);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["surgery"], "tensor_mismatch");
  EXPECT_EQ(r[0]["action"], "retry");
  EXPECT_EQ(r[0]["changes"]["model.fc2.weight"][0]["shape"], shape({1, 32}));
  EXPECT_EQ(r[0]["changes"]["model.fc2.weight"][1]["shape"], shape({10, 32}));
  EXPECT_EQ(r[0]["changes"]["model.fc2.bias"][1]["shape"], shape({10}));
  EXPECT_EQ(r[0]["changes"]["model.fc2.out_features"], nlohmann::json::array({1, 10}));
  EXPECT_EQ(r[0]["changes"]["optimizer.state[model.fc2.weight]"], nlohmann::json::array({"kept", "erased"}));
  EXPECT_NE(r[0]["reason"].get<std::string>().find("num_classes"), std::string::npos) << r[0];
}

TEST(ClassifierHead, WithoutEvidenceOfTheClassCountItDeclinesAndSaysWhichKnobToCreate) {
  torch::manual_seed(11);
  HeadNet net(false);
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp));
  session.track("model", *net);
  try {
    DAIFU_GUARD(session, step, 0, 2) {
      auto& batch = step.once("batch", [] { return class_batch(32); });
      F::cross_entropy(net->forward(batch.first), batch.second).backward();
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("create the int64 knob \"num_classes\""), std::string::npos) << e.what();
  }
  EXPECT_EQ(net->fc2->weight.size(0), 1);  // nothing changed
}

TEST(ClassifierHead, OneHotTargetsWidenTheHeadAfterBatchNormModifiedTheStateAndTheRollbackFits) {
  torch::manual_seed(12);
  HeadNet net(true);  // BatchNorm updates its running statistics in forward: state is mutated
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-2));
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp).snapshot_every(3));
  session.track("model", *net);
  session.track("optimizer", adam);
  constexpr int64_t kFirstReal = 4, kSteps = 40;
  std::vector<double> losses;
  DAIFU_GUARD(session, step, 0, kSteps) {
    auto& batch = step.once("batch", [&] {
      Batch b = class_batch(32, step.index() < kFirstReal);
      if (step.index() >= kFirstReal) b.second = F::one_hot(b.second, 10).to(torch::kFloat);  // probabilities
      return b;
    });
    adam.zero_grad();
    auto loss = F::cross_entropy(net->forward(batch.first), batch.second);
    loss.backward();
    adam.step();
    if (step.index() >= kFirstReal) losses.push_back(loss.item<double>());
  };
  EXPECT_EQ(session.global_step(), kSteps);
  EXPECT_EQ(net->fc2->weight.size(0), 10);
  const auto r = repairs(wp);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_NE(r[0]["reason"].get<std::string>().find("holds class probabilities over 10 classes"), std::string::npos);
  const auto rollback = events(wp, "rollback").at(0);
  EXPECT_EQ(rollback["step"], kFirstReal);
  EXPECT_EQ(rollback["to_step"], 3);
  EXPECT_EQ(rollback["mutated"], nlohmann::json::array({"model"}));
  EXPECT_LT(losses.back(), losses.front());
  for (const auto& p : net->parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

TEST(ClassifierHead, AFailureAfterTheOptimizerStepOfTheRetryRollsBackToTheFreshSnapshot) {
  torch::manual_seed(13);
  HeadNet net(false);
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-2));
  const auto wp = fresh_dir();
  daifu::Session session(options_for(wp).snapshot_every(50));
  session.knob<int64_t>("num_classes", 10);
  session.track("model", *net);
  session.track("optimizer", adam);
  session.surgeries().add("retry_io", daifu::match_kind(daifu::FailureKind::TransientRuntime),
                          [](daifu::RepairContext&) { return daifu::Action::Retry; });
  DAIFU_GUARD(session, step, 0, 6) {
    auto& batch = step.once("batch", [&] { return class_batch(32, step.index() < 2); });
    adam.zero_grad();
    F::cross_entropy(net->forward(batch.first), batch.second).backward();
    adam.step();
    if (step.index() == 2 && step.attempt() == 1) {
      throw std::system_error(std::make_error_code(std::errc::io_error), "writing a checkpoint");
    }
  };
  EXPECT_EQ(session.global_step(), 6);
  const auto rollback = events(wp, "rollback").at(0);
  EXPECT_EQ(rollback["step"], 2);
  EXPECT_EQ(rollback["to_step"], 2);  // the snapshot taken after the widening, not the one of step 0
}

}  // namespace tensor_mismatch_test
