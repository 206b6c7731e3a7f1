// DAIFU_GUARD_EACH over ranges and LibTorch data loaders (steps numbered across epochs, the same
// batch on a retry and a re-run, resume inside an epoch), and the data-or-code test
// (the data_or_code surgery) on real LibTorch errors.
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <memory>
#include <system_error>
#include <tuple>

#include "test_util.h"

namespace each_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;

// 50 samples of a 3-class problem: a data loader with batch size 16 yields 16, 16, 16, 2.
class Samples : public torch::data::datasets::Dataset<Samples> {
 public:
  Samples() {
    torch::manual_seed(3);
    x_ = torch::randn({50, 8});
    y_ = torch::randint(0, 3, {50});
  }
  torch::data::Example<> get(size_t i) override {
    if (static_cast<int64_t>(i) == fail_at_ && !failed_->exchange(true)) {  // once, in whichever copy
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), "sample shard");
    }
    return {x_[static_cast<int64_t>(i)], y_[static_cast<int64_t>(i)]};
  }
  torch::optional<size_t> size() const override { return 50; }
  int64_t fail_at_ = -1;  ///< get() of this sample throws a transient error, once

 private:
  torch::Tensor x_, y_;
  std::shared_ptr<std::atomic<bool>> failed_ = std::make_shared<std::atomic<bool>>(false);  // shared by copies
};

// With `workers` > 0 each worker thread loads batches from its own copy of `samples`, and the
// loader hands them out in the sampler's order.
auto make_loader(Samples samples = Samples(), size_t workers = 0) {
  return torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(
      std::move(samples).map(torch::data::transforms::Stack<>()),
      torch::data::DataLoaderOptions().batch_size(16).workers(workers));
}

struct Model {
  Model() {
    torch::manual_seed(11);
    net = torch::nn::Linear(8, 3);
    optimizer = std::make_unique<torch::optim::Adam>(net->parameters(), torch::optim::AdamOptions(1e-2));
  }
  void train(const torch::data::Example<>& batch) {
    optimizer->zero_grad();
    torch::nn::functional::cross_entropy(net->forward(batch.data), batch.target).backward();
    optimizer->step();
  }
  std::vector<torch::Tensor> params() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : net->parameters()) out.push_back(p.detach().clone());
    return out;
  }
  torch::nn::Linear net{nullptr};
  std::unique_ptr<torch::optim::Adam> optimizer;
};

void expect_bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

std::system_error transient() { return std::system_error(std::make_error_code(std::errc::connection_reset), "peer"); }

// ---- DAIFU_GUARD_EACH ----

TEST(Each, StepsOverEveryElementOnceNumberedAcrossLoopsWithTheSameElementOnARetry) {
  const auto wp = fresh_dir();
  const std::vector<int> data{10, 11, 12};
  std::vector<std::tuple<int64_t, int64_t, int64_t, int>> seen;  // index, position, attempt, element
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
    for (int epoch = 0; epoch < 2; ++epoch) {
      DAIFU_GUARD_EACH(session, step, x, data) {
        seen.emplace_back(step.index(), step.position(), step.attempt(), x);
        if (step.index() == 4 && step.attempt() == 0) throw transient();
      };
    }
    EXPECT_EQ(session.global_step(), 6);
  }
  const std::vector<std::tuple<int64_t, int64_t, int64_t, int>> expected{
      {0, 0, 0, 10}, {1, 1, 0, 11}, {2, 2, 0, 12}, {3, 0, 0, 10}, {4, 1, 0, 11}, {4, 1, 1, 11}, {5, 2, 0, 12}};
  EXPECT_EQ(seen, expected);
  const auto starts = events(wp, "loop_start");
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_EQ(starts[1]["step"], 3);
  EXPECT_EQ(starts[1]["loop"], 1);
  EXPECT_EQ(starts[1]["each"], true);
  EXPECT_FALSE(starts[1].contains("last"));
  EXPECT_EQ(events(wp, "loop_end").at(1)["step"], 6);
  EXPECT_EQ(events(wp, "failure").at(0)["step"], 4);
  EXPECT_EQ(events(wp, "failure").at(0)["loop"], 1);  // every line written in a loop names it
  EXPECT_FALSE(events(wp, "run_end").at(0).contains("loop"));
}

TEST(Each, AnEmptyRangeRunsNoStep) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
  const std::vector<int> none;
  int64_t steps = 0;
  DAIFU_GUARD_EACH(session, step, x, none) { ++steps; };
  EXPECT_EQ(steps, 0);
  EXPECT_EQ(events(wp, "loop_end").at(0)["step"], 0);
}

// A failure after the optimizer step rolls back to the loop's snapshot and re-runs the steps
// since it on their memoized batches: the loader is not asked again, and the weights end as
// the plain range-for loop's, last partial batch included.
TEST(Each, ADataLoaderLoopWithARollbackEndsBitwiseEqualToThePlainLoop) {
  Model plain;
  auto plain_loader = make_loader();
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (auto& batch : *plain_loader) plain.train(batch);
  }

  Model guarded;
  auto loader = make_loader();
  const auto wp = fresh_dir();
  std::vector<int64_t> rows;
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("").snapshot_every(3));
    session.track("model", *guarded.net);
    session.track("optimizer", *guarded.optimizer);
    for (int epoch = 0; epoch < 2; ++epoch) {
      DAIFU_GUARD_EACH(session, step, batch, *loader) {
        rows.push_back(batch.data.size(0));
        guarded.train(batch);
        if (step.index() == 6 && step.attempt() == 0) throw transient();  // after the update
      };
    }
    EXPECT_EQ(session.global_step(), 8);
    EXPECT_EQ(session.stats().rollbacks, 1);
  }
  // Epoch 2 is steps 4-7; its snapshot at step 4; step 6 failed, 4 and 5 were re-run.
  EXPECT_EQ(rows, (std::vector<int64_t>{16, 16, 16, 2, 16, 16, 16, 16, 16, 16, 2}));
  expect_bitwise_equal(plain.params(), guarded.params());
  EXPECT_EQ(events(wp, "rollback").at(0)["to_step"], 4);
}

// A rollback re-runs the steps since the snapshot on their memoized batches; a step skipped
// among them has none, and is passed again rather than handed the range's next element.
TEST(Each, ARollbackPassesAStepSkippedSinceTheSnapshotAgain) {
  const auto wp = fresh_dir();
  const std::vector<int> data{0, 1, 2, 3, 4, 5, 6, 7};
  auto w = torch::zeros({1});
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("").snapshot_every(8));
  session.track("w", w);
  session.surgeries().add("skip_bad_record", daifu::Match().message("bad record"),
                          [](daifu::RepairContext&) { return daifu::Action::Skip; });
  std::vector<int> trained;
  DAIFU_GUARD_EACH(session, step, x, data) {
    if (x == 1) throw std::runtime_error("bad record");
    w.add_(1);
    trained.push_back(x);
    if (x == 3 && step.attempt() == 0) throw transient();  // after the update: rollback to step 0
  };
  EXPECT_EQ(trained, (std::vector<int>{0, 2, 3, 0, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(w.item<float>(), 7.0f);
  EXPECT_EQ(session.stats().skipped_steps, 1);
  EXPECT_EQ(events(wp, "skip").size(), 1u);
}

// The loader fetches a batch on ++: a sample that fails to load fails the step that wanted it
// (not the step before), and that step goes on with the loader's next batch.
TEST(Each, ABatchThatFailsToLoadFailsTheStepThatWantedIt) {
  Samples samples;
  samples.fail_at_ = 20;  // in the second batch
  auto loader = make_loader(std::move(samples));
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
  std::vector<int64_t> firsts;
  DAIFU_GUARD_EACH(session, step, batch, *loader) { firsts.push_back(batch.target.size(0)); };
  const auto failures = events(wp, "failure");
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0]["step"], 1);
  EXPECT_EQ(failures[0]["kind"], "transient_runtime");
  // The batch of samples 16-31 is lost with its sampler indices; 32-47 and 48-49 follow.
  EXPECT_EQ(firsts, (std::vector<int64_t>{16, 16, 2}));
  EXPECT_EQ(session.global_step(), 3);
}

// A loader with worker threads: they prefetch ahead of the loop, a load that fails in a worker
// fails the step that wanted that batch, and a rollback re-runs memoized batches without asking
// the loader; the weights end as a plain loop's over the same loader.
TEST(Each, AMultiWorkerLoaderWithAFailedLoadAndARollbackEndsAsThePlainLoop) {
  Model plain;
  std::vector<int64_t> plain_rows;
  {
    Samples samples;
    samples.fail_at_ = 20;
    auto loader = make_loader(std::move(samples), 2);
    for (int epoch = 0; epoch < 2; ++epoch) {
      auto it = loader->begin();
      while (true) {
        try {
          if (it == loader->end()) break;
          plain_rows.push_back(it->data.size(0));
          plain.train(*it);
          ++it;
        } catch (const torch::data::WorkerException&) {  // the batch that failed to load is lost: go on
          ++it;
        }
      }
    }
  }
  Model guarded;
  Samples samples;
  samples.fail_at_ = 20;
  auto loader = make_loader(std::move(samples), 2);
  const auto wp = fresh_dir();
  std::vector<int64_t> rows;
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("").snapshot_every(2));
    session.track("model", *guarded.net);
    session.track("optimizer", *guarded.optimizer);
    for (int epoch = 0; epoch < 2; ++epoch) {
      DAIFU_GUARD_EACH(session, step, batch, *loader) {
        rows.push_back(batch.data.size(0));
        guarded.train(batch);
        if (step.index() == 6 && step.attempt() == 0) throw transient();  // after the update
      };
    }
    EXPECT_EQ(session.stats().rollbacks, 1);
  }
  const auto failure = events(wp, "failure").at(0);
  EXPECT_EQ(failure["step"], 1);
  EXPECT_EQ(failure["kind"], "transient_runtime");  // what the worker threw, not the wrapper
  EXPECT_EQ(failure["exception_type"], "std::system_error");
  EXPECT_EQ(failure["matched_by"], "type:std::system_error(errno)");
  EXPECT_EQ(failure["message"], "in a DataLoader worker thread: sample shard: Resource temporarily unavailable");
  EXPECT_EQ(plain_rows, (std::vector<int64_t>{16, 16, 2, 16, 16, 16, 2}));
  // Epoch 2 is steps 3-6; step 6 failed after its update: back to the snapshot of step 5, which
  // ran again on its memoized batch.
  EXPECT_EQ(rows, (std::vector<int64_t>{16, 16, 2, 16, 16, 16, 2, 16, 2}));
  EXPECT_EQ(events(wp, "rollback").at(0)["to_step"], 5);
  expect_bitwise_equal(plain.params(), guarded.params());
}

// A run that ends unrecovered inside its second epoch resumes from its persisted snapshot:
// the first epoch's loop is skipped, the second moves its loader past the batches it had done,
// and the weights end as an uninterrupted run's.
TEST(Each, AResumedRunPassesTheBatchesItsLoopHadDone) {
  Model plain;
  auto plain_loader = make_loader();
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (auto& batch : *plain_loader) plain.train(batch);
  }

  const auto wp = fresh_dir();
  const auto options = daifu::Options().workplace(wp.string()).inject("").persist(true).snapshot_every(1);
  {
    Model first;
    auto loader = make_loader();
    int64_t trained = 0;  // a plain counter: the persisted snapshot carries it
    daifu::Session session(options);
    session.track("model", *first.net);
    session.track("optimizer", *first.optimizer);
    session.track_value("trained", trained);
    bool unrecovered = false;
    try {
      for (int epoch = 0; epoch < 2; ++epoch) {
        DAIFU_GUARD_EACH(session, step, batch, *loader) {
          if (step.index() == 6) throw std::logic_error("a bug nobody repairs");
          first.train(batch);
          ++trained;
        };
      }
    } catch (const daifu::Unrecovered&) {
      unrecovered = true;
    }
    ASSERT_TRUE(unrecovered);
  }
  Model resumed;
  auto loader = make_loader();
  std::vector<int64_t> steps;
  {
    int64_t trained = 0;
    daifu::Session session(daifu::Options(options).resume(true));
    session.track("model", *resumed.net);
    session.track("optimizer", *resumed.optimizer);
    session.track_value("trained", trained);
    for (int epoch = 0; epoch < 2; ++epoch) {
      DAIFU_GUARD_EACH(session, step, batch, *loader) {
        steps.push_back(step.index());
        resumed.train(batch);
        ++trained;
      };
    }
    EXPECT_EQ(session.global_step(), 8);
    EXPECT_EQ(trained, 8);  // 6 from the snapshot, 2 here
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{6, 7}));
  expect_bitwise_equal(plain.params(), resumed.params());
  const auto starts = events(wp, "loop_start");
  ASSERT_FALSE(starts.empty());
  EXPECT_EQ(starts.back()["step"], 6);
  EXPECT_EQ(starts.back()["first"], 4);
  EXPECT_EQ(starts.back()["passed"], 2);
  EXPECT_EQ(events(wp, "loop_skipped").size(), 1u);
}

// A resumed run moves its loader on as often as the first run did, the move that failed to
// load included, so it trains on the batches the first run would have.
TEST(Each, AResumedRunAfterAFailedLoadStaysAlignedWithTheLoader) {
  const auto wp = fresh_dir();
  const auto options = daifu::Options().workplace(wp.string()).inject("").persist(true).snapshot_every(1);
  std::vector<int64_t> sizes;  // first run: batches 0-15, (16-31 lost), 32-47; resumed: 48-49
  {
    Model first;
    Samples samples;
    samples.fail_at_ = 20;
    auto loader = make_loader(std::move(samples));
    daifu::Session session(options);
    session.track("model", *first.net);
    bool unrecovered = false;
    try {
      DAIFU_GUARD_EACH(session, step, batch, *loader) {
        if (step.index() == 2) throw std::logic_error("a bug nobody repairs");
        sizes.push_back(batch.target.size(0));
      };
    } catch (const daifu::Unrecovered&) {
      unrecovered = true;
    }
    ASSERT_TRUE(unrecovered);
  }
  Model resumed;
  auto loader = make_loader();  // loads fine this time
  daifu::Session session(daifu::Options(options).resume(true));
  session.track("model", *resumed.net);
  DAIFU_GUARD_EACH(session, step, batch, *loader) { sizes.push_back(batch.target.size(0)); };
  EXPECT_EQ(sizes, (std::vector<int64_t>{16, 16, 2}));
  EXPECT_EQ(session.global_step(), 3);
}

// ---- the data-or-code test (data_or_code) ----

// A stream the step pulls from without memoizing: its fourth batch is float64 and all NaN.
struct Stream {
  std::pair<torch::Tensor, torch::Tensor> next() {
    const int64_t n = pulled++;
    if (n == 3) return {torch::full({16, 8}, std::nan(""), torch::kFloat64), torch::zeros({16}, torch::kLong)};
    return {torch::randn({16, 8}), torch::randint(0, 3, {16})};
  }
  int64_t pulled = 0;
};

TEST(DataOrCode, AStreamThatYieldsOneFloat64NanBatchFinishesAndDropsIt) {
  const auto wp = fresh_dir();
  Model model;
  Stream stream;
  daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
  session.track("model", *model.net);
  session.track("optimizer", *model.optimizer);
  DAIFU_GUARD(session, step, 0, 6) {
    auto [x, y] = stream.next();
    model.train({x, y});
  };
  EXPECT_EQ(session.global_step(), 6);
  EXPECT_EQ(stream.pulled, 7);
  EXPECT_EQ(session.stats().dropped_batches, 1);
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "data_or_code");
  EXPECT_EQ(repairs[0]["matched"], "tensor_mismatch");
  EXPECT_EQ(repairs[0]["action"], "retry");
  EXPECT_NE(repairs[0]["reason"].get<std::string>().find("dropped batch 3 as data"), std::string::npos)
      << repairs[0].dump();
  EXPECT_NE(session.summary().find("1 batches dropped as data"), std::string::npos) << session.summary();
}

TEST(DataOrCode, AMemoizedBatchWithMismatchedInputsAndTargetsIsSkipped) {
  const auto wp = fresh_dir();
  torch::manual_seed(5);
  std::vector<torch::data::Example<>> batches;
  for (int i = 0; i < 5; ++i) batches.push_back({torch::randn({16, 8}), torch::randint(0, 3, {16})});
  batches[2].data = batches[2].data.narrow(0, 0, 12);  // cropped inputs, whole targets
  Model model;
  daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
  session.track("model", *model.net);
  session.track("optimizer", *model.optimizer);
  std::vector<int64_t> trained;
  DAIFU_GUARD_EACH(session, step, batch, batches) {
    model.train(batch);
    trained.push_back(step.index());
  };
  EXPECT_EQ(trained, (std::vector<int64_t>{0, 1, 3, 4}));
  EXPECT_EQ(session.stats().skipped_steps, 1);
  EXPECT_EQ(session.stats().dropped_batches, 1);
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "data_or_code");
  EXPECT_EQ(repairs[0]["action"], "skip");
  EXPECT_EQ(repairs[0]["changes"]["dropped_batches"], nlohmann::json::array({0, 1}));
}

TEST(DataOrCode, CodeThatIsWrongOnEveryBatchEndsUnrecoveredAtTheNextBatch) {
  const auto wp = fresh_dir();
  torch::nn::Linear layer(10, 5);
  const std::vector<int> batches{0, 1, 2, 3};
  daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
  std::vector<int64_t> tried;
  try {
    DAIFU_GUARD_EACH(session, step, batch, batches) {
      tried.push_back(batch);
      layer->forward(torch::ones({4, 7}));  // a real shape bug: mat1 and mat2 shapes cannot be multiplied
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_EQ(e.failure().kind, daifu::FailureKind::TensorMismatch);
    EXPECT_EQ(e.failure().step, 1);
    EXPECT_NE(std::string(e.what()).find("the code, not the data"), std::string::npos) << e.what();
  }
  EXPECT_EQ(tried, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(session.stats().dropped_batches, 1);
}

TEST(DataOrCode, NoBatchIsDroppedWithMaxDroppedBatchesZero) {
  const auto wp = fresh_dir();
  torch::nn::Linear layer(10, 5);
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("").max_dropped_batches(0));
  int64_t calls = 0;
  try {
    DAIFU_GUARD(session, step, 0, 3) {
      ++calls;
      layer->forward(torch::ones({4, 7}));
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("max_dropped_batches(0)"), std::string::npos) << e.what();
  }
  EXPECT_EQ(calls, 1);
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(fresh_dir().string()).max_dropped_batches(-1)),
               daifu::Error);
}

// ---- injected faults land where real ones would ----

TEST(InjectedFaults, AnInjectedOomInAMicroBatchedProgramHalvesTheMicroBatch) {
  const auto wp = fresh_dir();
  Model model;
  auto loader = make_loader();
  // Step 0: the first step of a range loop, before any step has shown micro-batches.
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("oom@0"));
  session.track("model", *model.net);
  session.track("optimizer", *model.optimizer);
  auto& micro = session.knob<int64_t>("micro_batch", 8).min(2);
  std::vector<int64_t> calls;  // micro-batches per step
  DAIFU_GUARD_EACH(session, step, batch, *loader) {
    model.optimizer->zero_grad();
    int64_t n = 0;
    step.micro_batches(batch.data.size(0), micro, [&](int64_t b, int64_t e, double weight) {
      ++n;
      auto loss = torch::nn::functional::cross_entropy(model.net->forward(batch.data.slice(0, b, e)),
                                                       batch.target.slice(0, b, e));
      (loss * weight).backward();
    });
    model.optimizer->step();
    calls.push_back(n);
  };
  EXPECT_EQ(micro.get(), 4);
  EXPECT_EQ(calls, (std::vector<int64_t>{4, 4, 4, 1}));
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "out_of_memory");
  EXPECT_EQ(repairs[0]["changes"]["micro_batch"], nlohmann::json::array({8, 4}));
}

// In a loader loop an injected fault strikes once the step holds its batch, so the repair
// meets what a real shape fault would: a memoized batch, which data_or_code drops.
TEST(InjectedFaults, AnInjectedShapeFaultInALoaderLoopDropsThatBatch) {
  const auto wp = fresh_dir();
  const std::vector<int> batches{0, 1, 2, 3};
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("shape@2"));
  std::vector<int> trained;
  DAIFU_GUARD_EACH(session, step, batch, batches) { trained.push_back(batch); };
  EXPECT_EQ(trained, (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(events(wp, "repair").at(0)["action"], "skip");
  EXPECT_EQ(session.stats().dropped_batches, 1);
}

// A batch knob would not change what the loader yields: the surgery says to split the batch.
TEST(InjectedFaults, AnOomInALoaderLoopWithoutMicroBatchesEscalatesWithAdviceAndLeavesTheBatchKnob) {
  const auto wp = fresh_dir();
  auto loader = make_loader();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("oom@1"));
  auto& batch_size = session.knob<int64_t>("batch_size", 16);
  try {
    DAIFU_GUARD_EACH(session, step, batch, *loader) { (void)batch; };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_EQ(e.failure().kind, daifu::FailureKind::OutOfMemory);
    EXPECT_NE(std::string(e.what()).find("split it with Step::micro_batches"), std::string::npos) << e.what();
  }
  EXPECT_EQ(batch_size.get(), 16);
}

TEST(InjectedFaults, InjectedNanDataLandsInTheMemoizedBatchAndIsScrubbed) {
  const auto wp = fresh_dir();
  Model model;
  auto loader = make_loader();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("nan_data@1"));
  session.track("model", *model.net);
  session.track("optimizer", *model.optimizer);
  session.knob("data_policy", "scrub");
  int64_t finite_losses = 0;
  DAIFU_GUARD_EACH(session, step, batch, *loader) {
    model.optimizer->zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model.net->forward(batch.data), batch.target);
    daifu::check_finite(loss, "loss");
    loss.backward();
    model.optimizer->step();
    ++finite_losses;
  };
  EXPECT_EQ(finite_losses, 4);
  EXPECT_EQ(session.stats().scrubbed_batches, 1);
  const auto injected = events(wp, "injected");
  ASSERT_EQ(injected.size(), 1u);
  EXPECT_EQ(injected[0]["step"], 1);
  EXPECT_EQ(injected[0]["where"], "batch.data");
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "exceptional_data");
  EXPECT_EQ(repairs[0]["action"], "retry");
  for (const auto& p : model.net->parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

}  // namespace each_test
