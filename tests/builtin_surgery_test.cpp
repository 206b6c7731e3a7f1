// The built-in path, device-contention and API-misuse surgeries, on real errors.
#include <daifu/daifu.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "surgery/device_contention.h"
#include "surgery/path_problem.h"
#include "test_util.h"

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>

namespace builtin_surgery_test {

namespace fs = std::filesystem;
using daifu::FailureKind;
using daifu::testing::candidate_names;
using daifu::testing::events;
using daifu::testing::fresh_dir;

// --- path_problem ---------------------------------------------------------------------------

TEST(PathSurgery, ReadsThePathsOutOfRealMessages) {
  using daifu::detail::paths_in_message;
  auto save = paths_in_message("Parent directory /tmp/x/checkpoints does not exist.");
  ASSERT_EQ(save.size(), 1u);
  EXPECT_EQ(save[0].path, "/tmp/x/checkpoints");
  EXPECT_TRUE(save[0].is_directory);
  EXPECT_TRUE(save[0].output);
  auto load = paths_in_message("open file failed because of errno 2 on fopen: , file path: /tmp/x/model.pt");
  ASSERT_EQ(load.size(), 1u);
  EXPECT_EQ(load[0].path, "/tmp/x/model.pt");
  EXPECT_TRUE(load[0].input);
  auto copy = paths_in_message("filesystem error: cannot copy file: No such file or directory [/a/b.txt] [/c/d.txt]");
  ASSERT_EQ(copy.size(), 2u);
  EXPECT_TRUE(copy[0].input);
  EXPECT_TRUE(copy[1].output);
  EXPECT_EQ(copy[1].path, "/c/d.txt");
  auto size = paths_in_message("filesystem error: cannot get file size: No such file or directory [/a/x.pt]");
  ASSERT_EQ(size.size(), 1u);
  EXPECT_TRUE(size[0].input);
  auto quoted = paths_in_message("cannot open 'runs/exp 1/log.txt' for writing");
  ASSERT_FALSE(quoted.empty());
  EXPECT_EQ(quoted[0].path, "runs/exp 1/log.txt");
  EXPECT_TRUE(paths_in_message("No such file or directory").empty());
}

TEST(PathSurgery, TorchSaveIntoAMissingDirectoryCreatesItAndTrainingFinishes) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()));
  const fs::path checkpoint = wp / "checkpoints" / "epoch1" / "model.pt";
  int64_t saved = 0;
  DAIFU_GUARD(session, step, 0, 3) {
    if (step.index() == 1) {
      torch::save(torch::ones({3}), checkpoint.string());  // real libtorch error on the first attempt
      ++saved;
    }
  };
  EXPECT_EQ(saved, 1);
  EXPECT_TRUE(fs::exists(checkpoint));
  const auto failures = events(wp, "failure");
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0]["kind"], "path_problem");
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "path_problem");
  EXPECT_EQ(repairs[0]["action"], "retry");
  EXPECT_EQ(repairs[0]["changes"]["created_directory"][1], fs::weakly_canonical(checkpoint.parent_path()).string());
}

TEST(PathSurgery, FilesystemCopyToAMissingDirectoryCreatesTheTargetsParent) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()));
  const fs::path source = wp / "source.txt";
  const fs::path target = wp / "exports" / "copy.txt";
  DAIFU_GUARD(session, step, 0, 1) {
    if (!fs::exists(source)) torch::save(torch::ones({1}), source.string());
    fs::copy_file(source, target, fs::copy_options::overwrite_existing);  // std::filesystem_error
  };
  EXPECT_TRUE(fs::exists(target));
  EXPECT_EQ(events(wp, "repair").at(0)["surgery"], "path_problem");
}

TEST(PathSurgery, AMissingInputIsNotCreatedAndTheMessageNamesIt) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()));
  const fs::path input = wp / "data" / "weights.pt";
  try {
    DAIFU_GUARD(session, step, 0, 1) {
      torch::Tensor t;
      torch::load(t, input.string());
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("the input \"" + input.string() + "\" does not exist"), std::string::npos) << what;
    EXPECT_EQ(e.failure().kind, FailureKind::PathProblem);
  }
  EXPECT_FALSE(fs::exists(input.parent_path()));
}

TEST(PathSurgery, NeverCreatesOutsideTheAllowedRootsByDotDotOrBySymlink) {
  const auto wp = fresh_dir();
  const fs::path outside = fresh_dir("-outside");
  fs::create_directories(wp);
  fs::create_directories(outside);
  fs::create_symlink(outside, wp / "link");
  for (const fs::path& escape : {wp / ".." / (wp.filename().string() + "-outside") / "a" / "m.pt",
                                 wp / "link" / "b" / "m.pt"}) {
    daifu::Session session(daifu::Options().workplace(wp.string()).allowed_roots({wp.string()}));
    try {
      DAIFU_GUARD(session, step, 0, 1) { torch::save(torch::ones({1}), escape.string()); };
      FAIL() << "expected daifu::Unrecovered for " << escape;
    } catch (const daifu::Unrecovered& e) {
      EXPECT_NE(std::string(e.what()).find("is outside the allowed roots"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(fs::exists(outside / "a"));
  EXPECT_FALSE(fs::exists(outside / "b"));
}

TEST(PathSurgery, OwnsOnlyPathProblems) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()));
  const std::string message = "Parent directory /tmp/nowhere does not exist.";
  for (FailureKind kind : daifu::all_failure_kinds()) {
    EXPECT_EQ(daifu::testing::claims(session, "path_problem", kind, message), kind == FailureKind::PathProblem)
        << daifu::to_string(kind);
  }
}

// --- Step::after_update: a failure after the update without a rollback ------------------------

// Trains a small model 6 SGD steps; at step 4, after the update, `after` runs (guarded through
// Step::after_update when `session` is given). Returns the final parameters.
std::vector<torch::Tensor> train_with_checkpoint(daifu::Session* session, const std::function<void(torch::nn::Linear&)>& after) {
  torch::manual_seed(0);
  torch::nn::Linear model(4, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  auto body = [&](int64_t index, daifu::Step* step) {
    optimizer.zero_grad();
    model->forward(torch::full({3, 4}, static_cast<double>(index))).pow(2).sum().backward();
    optimizer.step();
    if (index != 4) return;
    if (step != nullptr) {
      step->after_update([&] { after(model); });
    } else {
      after(model);
    }
  };
  if (session == nullptr) {
    for (int64_t i = 0; i < 6; ++i) body(i, nullptr);
  } else {
    session->track("model", *model);
    session->track("optimizer", optimizer);
    DAIFU_GUARD(*session, step, 0, 6) { body(step.index(), &step); };
  }
  std::vector<torch::Tensor> out;
  for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
  return out;
}

void expect_bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

TEST(AfterUpdate, ACheckpointIntoAMissingFolderIsRepairedWithoutARollbackAndTrainsLikeThePlainRun) {
  const auto dir = fresh_dir();
  const auto wp = dir / "wp";
  const auto checkpoint = dir / "runs" / "exp1" / "model.pt";
  daifu::Session session(daifu::Options().workplace(wp.string()).allowed_roots({dir.string()}).snapshot_every(100));
  const auto guarded = train_with_checkpoint(&session, [&](torch::nn::Linear& m) { torch::save(m, checkpoint.string()); });
  const auto plain = train_with_checkpoint(nullptr, [](torch::nn::Linear&) {});
  expect_bitwise_equal(guarded, plain);
  EXPECT_TRUE(fs::exists(checkpoint));

  const auto failures = events(wp, "failure");
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0]["kind"], "path_problem");
  EXPECT_EQ(failures[0]["step"], 4);
  EXPECT_EQ(failures[0]["after_update"], true);
  EXPECT_NE(failures[0]["message"].get<std::string>().find("does not exist"), std::string::npos) << failures[0];
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "path_problem");
  EXPECT_TRUE(events(wp, "rollback").empty()) << "the snapshot of step 0 was 4 steps old";
  const auto resumes = events(wp, "resume");
  ASSERT_EQ(resumes.size(), 1u);
  EXPECT_EQ(resumes[0]["after_update"], true);
  EXPECT_EQ(session.stats().rollbacks, 0);
  EXPECT_EQ(session.stats().rerun_steps, 0);
  EXPECT_EQ(session.global_step(), 6);
}

TEST(AfterUpdate, AFunctionThatChangedTrackedStateBeforeFailingIsRepairedByTheRollback) {
  const auto dir = fresh_dir();
  const auto wp = dir / "wp";
  const auto checkpoint = dir / "missing" / "model.pt";
  daifu::Session session(daifu::Options().workplace(wp.string()).allowed_roots({dir.string()}));
  // Changes a weight, then writes: the change must not be applied twice.
  auto nudge_and_save = [&](torch::nn::Linear& m) {
    torch::NoGradGuard no_grad;
    m->weight.add_(1.0);
    torch::save(m, checkpoint.string());
  };
  const auto guarded = train_with_checkpoint(&session, nudge_and_save);
  fs::remove_all(dir / "missing");
  fs::create_directories(dir / "missing");
  const auto plain = train_with_checkpoint(nullptr, nudge_and_save);
  expect_bitwise_equal(guarded, plain);
  const auto failures = events(wp, "failure");
  ASSERT_EQ(failures.size(), 1u);  // journaled once, as the step's
  EXPECT_FALSE(failures[0].contains("after_update"));
  EXPECT_EQ(events(wp, "rollback").size(), 1u);
}

TEST(AfterUpdate, AFailureThatNeverGoesAwayEndsUnrecoveredAfterABoundedNumberOfTries) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).transient_backoff(std::chrono::microseconds(10)));
  int calls = 0;
  try {
    train_with_checkpoint(&session, [&](torch::nn::Linear&) {
      ++calls;
      throw std::runtime_error("Connection reset by peer");  // transient, every time
    });
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_EQ(e.failure().step, 4);
  }
  EXPECT_GE(calls, 2);
  EXPECT_LE(calls, 16);  // max_attempts (4) tries in after_update per attempt of the step, at most
  const auto failures = events(wp, "failure");
  EXPECT_GE(failures.size(), 2u);
  EXPECT_EQ(failures.front()["after_update"], true);
}

// --- device_contention ------------------------------------------------------------------------

TEST(ContentionSurgery, NextDeviceGoesToTheNextGpuThenCpuOnlyIfAllowed) {
  using daifu::detail::next_device;
  EXPECT_EQ(next_device("cuda:0", 2, false), "cuda:1");
  EXPECT_EQ(next_device("cuda", 2, false), "cuda:1");
  EXPECT_EQ(next_device("cuda:1", 2, false), std::nullopt);
  EXPECT_EQ(next_device("cuda:1", 2, true), "cpu");
  EXPECT_EQ(next_device("cpu", 2, true), std::nullopt);
  EXPECT_EQ(next_device("cuda:x", 2, true), std::nullopt);
}

TEST(ContentionSurgery, WaitsWithBackoffAndRetries) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("contention@1").contention_backoff(
      std::chrono::milliseconds(2)));
  DAIFU_GUARD(session, step, 0, 3){};
  EXPECT_EQ(session.global_step(), 3);
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "device_contention");
  const int64_t waited = repairs[0]["changes"]["wait_us"][1];
  EXPECT_GE(waited, 1000);  // 2 ms +-50%
  EXPECT_LE(waited, 3000);
}

TEST(ContentionSurgery, WithAProbeTheRetryComesSoonAfterTheDeviceFreesNotAtTheEndOfTheBackoff) {
  const auto wp = fresh_dir();
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> freed_at;  // the other process lets go 30 ms after the refusal
  auto freed = [&] { return freed_at && Clock::now() >= *freed_at; };
  daifu::Session session(daifu::Options()
                             .workplace(wp.string())
                             .contention_backoff(std::chrono::seconds(10))
                             .device_probe([&] { return freed(); }));
  std::optional<Clock::time_point> ran_again;
  DAIFU_GUARD(session, step, 0, 3) {
    if (step.index() != 1) return;
    if (!freed()) {
      if (!freed_at) freed_at = Clock::now() + std::chrono::milliseconds(30);
      TORCH_CHECK(false, "CUDA error: all CUDA-capable devices are busy or unavailable");
    }
    ran_again = Clock::now();
  };
  ASSERT_TRUE(ran_again.has_value());
  const auto late_ms = std::chrono::duration<double, std::milli>(*ran_again - *freed_at).count();
  EXPECT_GE(late_ms, 0);
  EXPECT_LT(late_ms, 1000) << "the retry waited for the 10 s backoff instead of the probe";
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_GE(repairs[0]["changes"]["wait_us"][1].get<int64_t>(), 30'000);
  EXPECT_GE(repairs[0]["changes"]["probes"][1].get<int64_t>(), 2);
  EXPECT_NE(repairs[0]["reason"].get<std::string>().find("probe said free"), std::string::npos) << repairs[0];
}

TEST(ContentionSurgery, AProbeThatThrowsCountsAsBusyAndTheWaitStaysBounded) {
  const auto wp = fresh_dir();
  int probes = 0;
  daifu::Session session(daifu::Options()
                             .workplace(wp.string())
                             .inject("contention@1")
                             .contention_backoff(std::chrono::milliseconds(20))
                             .device_probe([&]() -> bool {
                               ++probes;
                               throw std::runtime_error("the probe itself failed");
                             }));
  DAIFU_GUARD(session, step, 0, 3){};
  EXPECT_EQ(session.global_step(), 3);
  EXPECT_GE(probes, 2);
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  const int64_t waited = repairs[0]["changes"]["wait_us"][1];
  EXPECT_GE(waited, 10'000);  // the whole backoff: 20 ms +-50%
  EXPECT_NE(repairs[0]["reason"].get<std::string>().find("still said busy"), std::string::npos) << repairs[0];
}

TEST(ContentionSurgery, ABusyDeviceThatStaysBusyEscalatesAfterTheBoundedWaits) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options()
                             .workplace(wp.string())
                             .inject("contention@1*")
                             .max_attempts(10)
                             .contention_waits(2)
                             .contention_backoff(std::chrono::microseconds(100)));
  try {
    DAIFU_GUARD(session, step, 0, 3){};
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("no string knob \"device\""), std::string::npos) << e.what();
    EXPECT_EQ(e.failure().attempt, 2);
  }
}

TEST(ContentionSurgery, MovesTrainingToTheCpuWhenAllowedAfterTheWaits) {
  torch::manual_seed(0);
  torch::nn::Linear model(4, 2);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(0.01));
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options()
                             .workplace(wp.string())
                             .max_attempts(6)
                             .contention_waits(1)
                             .contention_backoff(std::chrono::microseconds(100))
                             .cpu_fallback(true));
  session.track("model", *model);
  session.track("optimizer", optimizer);
  auto& device = session.knob("device", "cuda:7");  // a GPU held by another process
  DAIFU_GUARD(session, step, 0, 4) {
    // What CUDA reports for a device in exclusive use by another process.
    TORCH_CHECK(device.get() == "cpu", "CUDA error: all CUDA-capable devices are busy or unavailable");
    optimizer.zero_grad();
    model->forward(torch::ones({3, 4}).to(device.get())).sum().backward();
    optimizer.step();
  };
  EXPECT_EQ(device.get(), "cpu");
  EXPECT_EQ(session.global_step(), 4);
  const auto knobs = events(wp, "knob");
  ASSERT_EQ(knobs.size(), 1u);
  EXPECT_EQ(knobs[0]["before"], "cuda:7");
  EXPECT_EQ(knobs[0]["after"], "cpu");
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 2u);  // one wait, one move
  EXPECT_EQ(repairs[1]["changes"]["device"][1], "cpu");
}

TEST(ContentionSurgery, WithoutCpuFallbackAndNoOtherGpuItEscalates) {
  daifu::Session session(daifu::Options()
                             .workplace(fresh_dir().string())
                             .inject("contention@0*")
                             .contention_waits(0));
  session.knob("device", "cuda:0");
  try {
    DAIFU_GUARD(session, step, 0, 1){};
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("Options::cpu_fallback is off"), std::string::npos) << e.what();
  }
}

// --- api_misuse -----------------------------------------------------------------------------

TEST(ApiMisuseSurgery, EscalatesNamingTheFailedCallAndItsThrowSite) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()));
  try {
    DAIFU_GUARD(session, step, 0, 2) {
      if (step.index() == 1) torch::ones({4}).item<float>();  // real libtorch API misuse
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.failure().kind, FailureKind::ApiMisuse);
    EXPECT_NE(what.find("API misuse is not repaired by guessing"), std::string::npos) << what;
    EXPECT_NE(what.find("cannot be converted to Scalar"), std::string::npos) << what;
    EXPECT_NE(what.find("builtin_surgery_test.cpp"), std::string::npos) << what;
    EXPECT_EQ(e.failure().attempt, 0);  // escalated at once, no blind retries
  }
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["action"], "escalate");
}

TEST(ApiMisuseSurgery, AUserSurgeryWithHigherPriorityStillGetsToRepair) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()).inject("api@0"));
  session.surgeries().add("knows_the_call", daifu::match_kind(FailureKind::ApiMisuse),
                          [](daifu::RepairContext&) { return daifu::Action::Retry; });
  DAIFU_GUARD(session, step, 0, 1){};
  EXPECT_EQ(session.global_step(), 1);
}

// --- all built-ins ------------------------------------------------------------------------------

TEST(BuiltinSurgeries, EachFiresOnlyOnTheKindsItOwnsWhateverTheMessageSays) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()));
  std::map<std::string, std::set<FailureKind>> owners = {
      {"out_of_memory", {FailureKind::OutOfMemory}},
      {"device_contention", {FailureKind::DeviceContention}},
      {"path_problem", {FailureKind::PathProblem}},
      {"exceptional_data", {FailureKind::ExceptionalData, FailureKind::NumericFault}},
      {"numeric_fault", {FailureKind::NumericFault}},
      {"tensor_mismatch", {FailureKind::TensorMismatch}},
      {"transient_retry", {FailureKind::TransientRuntime}},
      {"api_misuse", {FailureKind::ApiMisuse}},
      {"data_or_code", {FailureKind::TensorMismatch, FailureKind::ExceptionalData, FailureKind::NumericFault}},
  };
  std::set<FailureKind> all_but_fatal(daifu::all_failure_kinds().begin(), daifu::all_failure_kinds().end());
  all_but_fatal.erase(FailureKind::Fatal);
  owners["hot_patch"] = all_but_fatal;  // new code may fix anything that can be retried
  for (const auto& [name, kinds] : owners) {
    const auto names = session.surgeries().names();
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name << " is not registered";
  }
  // A message carrying the words every built-in reacts to: only the kind may decide.
  const std::string everything =
      "0D or 1D target tensor expected, multi-target not supported; Function 'SqrtBackward0' returned nan "
      "values; Parent directory /tmp/daifu-nowhere does not exist; loss contains non-finite values; "
      "DefaultCPUAllocator: can't allocate memory; all CUDA-capable devices are busy or unavailable";
  for (FailureKind kind : daifu::all_failure_kinds()) {
    for (const auto& name : candidate_names(session, kind, everything)) {
      ASSERT_TRUE(owners.count(name)) << name;
      EXPECT_TRUE(owners.at(name).count(kind)) << name << " claimed a " << daifu::to_string(kind) << " failure";
    }
  }
  EXPECT_TRUE(candidate_names(session, FailureKind::Fatal, everything).empty());
  EXPECT_EQ(candidate_names(session, FailureKind::Unknown, everything), std::vector<std::string>{"hot_patch"});
}

}  // namespace builtin_surgery_test
