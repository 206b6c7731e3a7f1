// Options::on_unrecovered(Pause): a failure no surgery repairs waits for a hot patch or a
// command in the workplace; PatchContext's helpers (replace_module, set_learning_rate,
// add_transform); the `daifu` CLI against a paused training process. The tests that drop a
// patch into a session paused in this process are in hot_patch_test.cpp.
#include <daifu/daifu.h>
#include <daifu/patch.h>

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <torch/torch.h>

#include "control/control_channel.h"
#include "test_util.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

namespace pause_test {

namespace fs = std::filesystem;
using daifu::testing::events;
using daifu::testing::await_pause;
using daifu::testing::fresh_dir;
using daifu::testing::paused_options;
using daifu::testing::paused_state;
using daifu::testing::wait_until;
using namespace std::chrono_literals;

// Sends one command to the session paused in `workplace` (as the CLI does, with its pause id).
void command(const fs::path& workplace, const std::string& verb, nlohmann::json args = nlohmann::json::object()) {
  args["pause"] = await_pause(workplace)["pause"];
  daifu::detail::send_command(workplace, verb, args);
}

// Waits (bounded) for the next "command" journal line after `seen` of them; returns its result.
std::string await_result(const fs::path& workplace, std::size_t seen) {
  for (int i = 0; i < 3000; ++i) {
    const auto lines = events(workplace, "command");
    if (lines.size() > seen) return lines[seen]["result"];
    std::this_thread::sleep_for(10ms);
  }
  return "no answer";
}

std::vector<std::string> results(const fs::path& workplace) {
  std::vector<std::string> out;
  for (const auto& e : events(workplace, "command")) out.push_back(e["result"]);
  return out;
}

struct UserBug : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs a one-step guard loop whose first attempt throws a UserBug (no surgery repairs it, so
// the session pauses), then joins `fixer`, which answers the pause; returns the attempts made.
int run_flaky_step(daifu::Session& session, std::thread& fixer) {
  int attempts = 0;
  DAIFU_GUARD(session, step, 0, 1) {
    if (attempts++ == 0) throw UserBug("flaky outside dependency");
  };
  fixer.join();
  return attempts;
}

TEST(Pause, SetRefusesUnknownKnobsAndBadValuesKeepsWaitingThenRetries) {
  const auto wp = fresh_dir();
  daifu::Session session(paused_options(wp));
  auto& batch = session.knob<int64_t>("batch_size", 64).min(1);
  auto& mode = session.knob("mode", "fast");
  std::thread fixer([&] {
    command(wp, "set", {{"knobs", {{"batch_size", "banana"}}}});
    EXPECT_NE(await_result(wp, 0).find("refused"), std::string::npos);
    command(wp, "set", {{"knobs", {{"mode", "careful"}, {"nope", 1}}}});  // mode is put back
    EXPECT_NE(await_result(wp, 1).find("refused: no knob named \"nope\" (knobs: batch_size, mode)"), std::string::npos);
    command(wp, "set", {{"knobs", {{"batch_size", 0}}}});  // below the knob's floor
    EXPECT_NE(await_result(wp, 2).find("refused"), std::string::npos);
    command(wp, "set", {{"knobs", {{"batch_size", 16}}}});
  });
  int64_t steps = 0;
  DAIFU_GUARD(session, step, 0, 4) {
    if (batch.get() > 16) throw UserBug("batch too large for this loss");
    ++steps;
  };
  fixer.join();
  EXPECT_EQ(steps, 4);
  EXPECT_EQ(batch.get(), 16);
  EXPECT_EQ(mode.get(), "fast");
  const auto r = results(wp);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[3], "ok");
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "daifu set");
  EXPECT_EQ(repairs[0]["changes"]["batch_size"], nlohmann::json::array({64, 16}));
  EXPECT_EQ(repairs[0]["step"], 0);
}

TEST(Pause, SkipGoesOnWithTheNextStepAndAbortRethrows) {
  const auto wp = fresh_dir();
  daifu::Session session(paused_options(wp));
  std::thread fixer([&] {
    command(wp, "skip");
    EXPECT_EQ(await_result(wp, 0), "ok");
    EXPECT_TRUE(wait_until([&] { return events(wp, "pause").size() >= 2; }));  // step 3 fails too
    command(wp, "abort", {{"reason", "needs a code change"}});
  });
  std::vector<int64_t> done;
  try {
    DAIFU_GUARD(session, step, 0, 6) {
      if (step.index() >= 2) {
        if (step.index() == 2 || step.index() == 3) throw UserBug("bad record " + std::to_string(step.index()));
      }
      done.push_back(step.index());
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("step 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("aborted by daifu abort: \"needs a code change\""), std::string::npos) << e.what();
  }
  fixer.join();
  EXPECT_EQ(done, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(session.stats().skipped_steps, 1);
  EXPECT_EQ(results(wp), (std::vector<std::string>{"ok", "aborted"}));
  EXPECT_FALSE(paused_state(wp).has_value());
}

TEST(Pause, WithoutAnInstructionThePauseEndsAtItsTimeoutAndRethrows) {
  const auto wp = fresh_dir();
  daifu::Session session(paused_options(wp).pause_timeout(300ms));
  const auto started = std::chrono::steady_clock::now();
  try {
    DAIFU_GUARD(session, step, 0, 3) {
      if (step.index() == 1) throw UserBug("no rule fixes this");
    };
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("none came within the pause timeout"), std::string::npos) << e.what();
  }
  EXPECT_GE(std::chrono::steady_clock::now() - started, 300ms);
  EXPECT_FALSE(paused_state(wp).has_value());
  EXPECT_EQ(events(wp, "unrecovered").size(), 1u);
}

TEST(Pause, AtMaxAttemptsTheStepPausesInsteadOfThrowing) {
  const auto wp = fresh_dir();
  daifu::Session session(paused_options(wp).max_attempts(2).inject("transient@1*"));
  std::thread fixer([&] {
    const auto state = await_pause(wp);
    EXPECT_NE(state["why"].get<std::string>().find("max_attempts"), std::string::npos) << state;
    command(wp, "skip");
  });
  int64_t steps = 0;
  DAIFU_GUARD(session, step, 0, 3) { ++steps; };
  fixer.join();
  EXPECT_EQ(steps, 2);
  EXPECT_EQ(session.stats().skipped_steps, 1);
}

TEST(Pause, CommandsForAnotherPauseAreIgnoredAndAnUnsafeControlFolderIsRefused) {
  const auto wp = fresh_dir();
  daifu::Session session(paused_options(wp));
  std::thread fixer([&] {
    await_pause(wp);
    daifu::detail::send_command(wp, "skip", {{"pause", "an-old-pause"}});
    EXPECT_NE(await_result(wp, 0).find("ignored: it was sent to pause \"an-old-pause\""), std::string::npos);
    std::ofstream(wp / "control" / "zz-garbage.json") << "{not json";
    EXPECT_TRUE(wait_until([&] { return !events(wp, "command_rejected").empty(); }));
    EXPECT_TRUE(fs::exists(wp / "control" / "zz-garbage.json.rejected"));
    command(wp, "frobnicate");
    EXPECT_NE(await_result(wp, 1).find("refused: unknown command \"frobnicate\""), std::string::npos);
    command(wp, "retry");
  });
  EXPECT_EQ(run_flaky_step(session, fixer), 2);

  fs::permissions(wp / "control", fs::perms::all);
  try {
    daifu::detail::send_command(wp, "retry", nlohmann::json::object());
    FAIL() << "expected daifu::Error";
  } catch (const daifu::Error& e) {
    EXPECT_NE(std::string(e.what()).find("control folder"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("run chmod go-w"), std::string::npos) << e.what();
  }
}

// A command whose args nest 100 000 levels (copying such a value recursed until the stack
// overflowed) is refused like any file that is not a command, and the pause goes on.
TEST(Pause, ACommandTooDeepAFifoOrArgumentsOfTheWrongTypeAreRefusedAndWaitingGoesOn) {
  const auto wp = fresh_dir();
  daifu::Session session(paused_options(wp));
  std::thread fixer([&] {
    await_pause(wp);
    const std::size_t depth = 100000;
    std::ofstream(wp / "control" / "aa-deep.json")
        << "{\"command\":\"retry\",\"args\":{\"x\":" << std::string(depth, '[') << std::string(depth, ']') << "}}";
    // Opening a FIFO without a writer blocked the paused session past its timeout.
    ASSERT_EQ(::mkfifo((wp / "control" / "ab-fifo.json").c_str(), 0600), 0);
    EXPECT_TRUE(wait_until([&] { return events(wp, "command_rejected").size() == 2; }));
    EXPECT_TRUE(fs::exists(wp / "control" / "aa-deep.json.rejected"));
    command(wp, "apply", {{"patch", 5}});  // threw nlohmann's type_error out of the guard
    EXPECT_NE(await_result(wp, 0).find("refused: apply needs {\"patch\": FILE_NAME in patches/}"), std::string::npos);
    command(wp, "retry");
  });
  EXPECT_EQ(run_flaky_step(session, fixer), 2);
  const auto rejected = events(wp, "command_rejected");
  ASSERT_EQ(rejected.size(), 2u);
  EXPECT_NE(rejected[0]["reason"].get<std::string>().find("nested deeper than 64 levels"), std::string::npos)
      << rejected[0];
  EXPECT_NE(rejected[1]["reason"].get<std::string>().find("ab-fifo.json is not a daifu command (is a FIFO, not a regular file)"),
            std::string::npos)
      << rejected[1];
}

TEST(Pause, TheEnvironmentChoosesItAndNonsenseIsRefused) {
  const auto wp = fresh_dir();
  ::setenv("DAIFU_ON_UNRECOVERED", "sometimes", 1);
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(wp.string())), daifu::Error);
  ::setenv("DAIFU_ON_UNRECOVERED", "pause", 1);
  ::setenv("DAIFU_PAUSE_TIMEOUT", "-3", 1);
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(wp.string())), daifu::Error);
  ::setenv("DAIFU_PAUSE_TIMEOUT", "0.2", 1);
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
    EXPECT_THROW({ DAIFU_GUARD(session, step, 0, 1) { throw UserBug("x"); }; }, daifu::Unrecovered);
    EXPECT_EQ(events(wp, "pause").size(), 1u);
  }
  ::unsetenv("DAIFU_ON_UNRECOVERED");
  ::unsetenv("DAIFU_PAUSE_TIMEOUT");
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(wp.string()).pause_timeout(0ms)), daifu::Error);
}

struct TwoLayer : torch::nn::Module {
  TwoLayer()
      : fc1(register_module("fc1", torch::nn::Linear(6, 8))), fc2(register_module("fc2", torch::nn::Linear(8, 3))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1, fc2;
};

TEST(PatchContext, ReplaceModuleSwapsWhatTheProgramHoldsAndTheOptimizersParameters) {
  const auto wp = fresh_dir();
  torch::manual_seed(2);
  auto net = std::make_shared<TwoLayer>();
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-2));
  daifu::Session session(daifu::Options().workplace(wp.string()).snapshot_every(1).inject(""));
  session.surgeries().remove("tensor_mismatch");
  session.track("model", *net);
  session.track("optimizer", adam);
  const at::TensorImpl* old_weight = net->fc2->weight.unsafeGetTensorImpl();
  session.surgeries().add("widen", daifu::match_kind(daifu::FailureKind::TensorMismatch), [&](daifu::RepairContext& r) {
    daifu::PatchContext ctx(r);
    EXPECT_THROW(ctx.replace_module("model", "fc3", torch::nn::Linear(8, 5).ptr()), daifu::Error);
    EXPECT_THROW(ctx.replace_module("model", "fc2", torch::nn::ReLU().ptr()), daifu::Error);
    ctx.replace_module("model", "fc2", torch::nn::Linear(8, 5).ptr());
    ctx.set_learning_rate("optimizer", 5e-3);
    return daifu::Action::Retry;
  });
  session.surgeries().add("retry_late", daifu::match_kind(daifu::FailureKind::Unknown),
                          [](daifu::RepairContext&) { return daifu::Action::Retry; });
  const auto x = torch::randn({16, 6});
  DAIFU_GUARD(session, step, 0, 12) {
    const auto y = torch::full({16}, step.index() < 4 ? 2 : 4, torch::kLong);  // class 4 from step 4
    adam.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    adam.step();
    // After the update: the rollback restores the snapshot taken with the new layout.
    if (step.index() == 9 && step.attempt() == 0) throw UserBug("late failure");
  };
  EXPECT_EQ(net->fc2->options.out_features(), 5);
  EXPECT_EQ(net->fc2->weight.size(0), 5);
  EXPECT_NE(net->fc2->weight.unsafeGetTensorImpl(), old_weight);
  // The optimizer holds exactly the model's parameters, all of them trained.
  const auto params = net->parameters();
  ASSERT_EQ(adam.param_groups()[0].params().size(), params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(adam.param_groups()[0].params()[i].is_same(params[i]));
  }
  EXPECT_EQ(adam.state().size(), params.size());
  EXPECT_DOUBLE_EQ(adam.param_groups()[0].options().get_lr(), 5e-3);
  EXPECT_EQ(net->forward(x).argmax(1).eq(4).sum().item<int64_t>(), 16);  // it learned class 4
  const auto repairs = events(wp, "repair");
  ASSERT_GE(repairs.size(), 2u);
  EXPECT_EQ(repairs[0]["surgery"], "widen");
  EXPECT_EQ(repairs[0]["changes"]["optimizer.params[model.fc2]"], nlohmann::json::array({2, 2}));
  EXPECT_EQ(repairs[0]["changes"]["model.fc2"][0]["weight"]["shape"], nlohmann::json::array({3, 8})) << repairs[0];
  EXPECT_EQ(repairs[0]["changes"]["model.fc2"][1]["weight"]["shape"], nlohmann::json::array({5, 8})) << repairs[0];
  EXPECT_EQ(repairs[0]["changes"]["optimizer.param_groups[0].lr"], nlohmann::json::array({0.01, 0.005}));
  EXPECT_EQ(repairs[1]["surgery"], "retry_late");
  ASSERT_EQ(events(wp, "rollback").size(), 1u);
  EXPECT_EQ(events(wp, "rollback")[0]["step"], 9);
}

TEST(PatchContext, ATransformIsTheIdentityUntilOneIsRegistered) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
  const auto y = torch::tensor({1, 2, 3});
  EXPECT_TRUE(session.transform("targets", y).is_same(y));
  session.surgeries().add("shift_targets", daifu::match_kind(daifu::FailureKind::Unknown), [](daifu::RepairContext& r) {
    daifu::PatchContext(r).add_transform("targets", [](const at::Tensor& t) { return t - 1; });
    return daifu::Action::Retry;
  });
  std::vector<int64_t> seen;
  DAIFU_GUARD(session, step, 0, 2) {
    const auto t = session.transform("targets", y);
    if (t.max().item<int64_t>() > 2) throw UserBug("target 3 is out of range");
    seen.push_back(t.sum().item<int64_t>());
  };
  EXPECT_EQ(seen, (std::vector<int64_t>{3, 3}));
  const auto lines = events(wp, "transform");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["name"], "targets");
  EXPECT_EQ(events(wp, "repair")[0]["changes"]["transform.targets"][1], "registered");
}

// ---- The CLI against a paused training process (tests/pause_target.cpp) ----

struct Ran {
  int code = -1;
  std::string output;
};

Ran run_cli(const std::string& args) {
  const std::string cmd = std::string(DAIFU_CLI) + " " + args + " 2>&1";
  Ran ran;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return ran;
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) ran.output += buffer;
  const int status = ::pclose(pipe);
  ran.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return ran;
}

pid_t spawn_target(const fs::path& wp, const fs::path& result, bool fixed, const fs::path& log) {
  std::vector<std::string> args = {DAIFU_PAUSE_TARGET, wp.string(), result.string()};
  if (fixed) args.push_back("--fixed");
  return daifu::testing::spawn_logged(std::move(args), log);
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

nlohmann::json read_json(const fs::path& file) {
  std::ifstream in(file);
  return nlohmann::json::parse(in);
}

TEST(PauseCli, APatchBuiltAndAppliedWithTheCliFixesTheHeadAndTrainingGoesOnInTheSameProcess) {
  const auto dir = fresh_dir();
  fs::create_directories(dir);
  const fs::path wp = dir / "wp";
  const pid_t child = spawn_target(wp, dir / "result.json", false, dir / "target.log");
  const auto state = await_pause(wp, 120s);
  EXPECT_EQ(state["pid"], child);
  EXPECT_EQ(state["step"], 60);
  EXPECT_EQ(state["kind"], "tensor_mismatch");
  EXPECT_EQ(state["exception_type"], "c10::IndexError");

  const Ran status = run_cli("status -w " + wp.string());
  EXPECT_EQ(status.code, 0) << status.output;
  EXPECT_NE(status.output.find("step 60"), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("daifu apply fix.so"), std::string::npos) << status.output;

  const Ran refused = run_cli("set lr=fast -w " + wp.string());
  EXPECT_EQ(refused.code, 4) << refused.output;
  EXPECT_NE(refused.output.find("refused"), std::string::npos) << refused.output;

  const Ran built = run_cli("patch build " + std::string(DAIFU_PATCH_SOURCE_DIR) + "/widen_head.cpp -o " +
                            (dir / "widen_head.so").string());
  ASSERT_EQ(built.code, 0) << built.output;
  const Ran applied = run_cli("apply " + (dir / "widen_head.so").string() + " -w " + wp.string());
  EXPECT_EQ(applied.code, 0) << applied.output;
  EXPECT_NE(applied.output.find("ran: retry"), std::string::npos) << applied.output;
  ASSERT_EQ(wait_exit(child), 0);

  const auto result = read_json(dir / "result.json");
  EXPECT_EQ(result["pid"], child);  // the same process
  EXPECT_EQ(result["global_step"], 200);
  EXPECT_EQ(result["committed_steps"], 200);
  EXPECT_EQ(result["distinct_steps"], 200);
  EXPECT_EQ(result["repeated"], nlohmann::json::array({nlohmann::json::array({60, 2})}));  // only the failed step
  EXPECT_EQ(result["head_outputs"], 10);
  const auto patch_lines = events(wp, "patch");
  ASSERT_EQ(patch_lines.size(), 1u);
  EXPECT_TRUE(fs::exists(patch_lines[0]["path"].get<std::string>()));  // kept in the workplace
  const auto end = events(wp, "pause_end");
  ASSERT_EQ(end.size(), 1u);
  EXPECT_EQ(end[0]["step"], 60);

  // The fixed program (a 10-class head from the start) as the reference accuracy.
  const pid_t reference = spawn_target(dir / "wp_fixed", dir / "fixed.json", true, dir / "fixed.log");
  ASSERT_EQ(wait_exit(reference), 0);
  const double fixed = read_json(dir / "fixed.json")["accuracy"];
  const double patched = result["accuracy"];
  EXPECT_GT(fixed, 0.8);
  EXPECT_NEAR(patched, fixed, 0.03) << "patched " << patched << " vs fixed " << fixed;
}

TEST(PauseCli, SkipThenAbortThroughTheCli) {
  const auto dir = fresh_dir();
  fs::create_directories(dir);
  const fs::path wp = dir / "wp";
  const pid_t child = spawn_target(wp, dir / "result.json", false, dir / "target.log");
  EXPECT_EQ(await_pause(wp, 120s)["step"], 60);
  const Ran skipped = run_cli("skip -w " + wp.string());
  EXPECT_EQ(skipped.code, 0) << skipped.output;
  // The head is still too narrow: step 61 pauses next.
  EXPECT_TRUE(wait_until([&] { return events(wp, "pause").size() >= 2; }));
  EXPECT_EQ(await_pause(wp)["step"], 61);
  const Ran aborted = run_cli("abort --reason 'wrong head' -w " + wp.string());
  EXPECT_EQ(aborted.code, 0) << aborted.output;
  EXPECT_NE(wait_exit(child), 0);  // daifu::Unrecovered ended the program
  const auto unrecovered = events(wp, "unrecovered");
  ASSERT_EQ(unrecovered.size(), 1u);
  EXPECT_NE(unrecovered[0]["reason"].get<std::string>().find("aborted by daifu abort"), std::string::npos);
  const Ran after = run_cli("status -w " + wp.string());
  EXPECT_EQ(after.code, 2) << after.output;
  const Ran nobody = run_cli("retry -w " + wp.string());
  EXPECT_EQ(nobody.code, 2) << nobody.output;
}

}  // namespace pause_test
