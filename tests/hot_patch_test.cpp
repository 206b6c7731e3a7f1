// Hot patches: a patch dropped into <workplace>/patches repairs a failure no built-in fixes, in
// the same process, also while a session is paused waiting for one; bad patches and unsafe
// folders are refused with a clear message. These tests load patches into the test process, so
// they run in daifu_patch_tests, against libdaifu.so as a user's program does.
#include <daifu/daifu.h>
#include <daifu/patch.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_util.h"

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include <unistd.h>

namespace hot_patch_test {

namespace fs = std::filesystem;
using daifu::testing::events;
using daifu::testing::await_pause;
using daifu::testing::fresh_dir;
using daifu::testing::paused_options;
using daifu::testing::paused_state;
using daifu::testing::wait_until;

fs::path built_patch(const std::string& name) { return fs::path(DAIFU_PATCH_DIR) / (name + ".so"); }

// Copies the built patches into the workplace's patches folder, as a user would: each appears
// whole (copied beside, then renamed), so a paused session polling the folder never sees half.
void drop(const fs::path& workplace, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const fs::path part = workplace / "patches" / (std::string(name) + ".part");
    fs::copy_file(built_patch(name), part, fs::copy_options::overwrite_existing);
    fs::rename(part, workplace / "patches" / (std::string(name) + ".so"));
  }
}

// The SHA-256 of `file` as coreutils' sha256sum prints it: an oracle independent of daifu's.
std::string sha256sum(const fs::path& file) {
  std::string out;
  if (FILE* pipe = ::popen(("sha256sum '" + file.string() + "'").c_str(), "r")) {
    char hex[64];
    if (std::fread(hex, 1, sizeof hex, pipe) == sizeof hex) out.assign(hex, sizeof hex);
    ::pclose(pipe);
  }
  return out;
}

TEST(HotPatch, APatchInThePatchesFolderRepairsApiMisuseInTheSameProcess) {
  const auto wp = fresh_dir();
  torch::nn::Linear model(3, 2);
  daifu::Session session(daifu::Options().workplace(wp.string()));
  session.track("model", *model);
  auto& lr = session.knob("lr", 0.1);
  EXPECT_EQ(fs::status(wp / "patches").permissions(), fs::perms::owner_all);  // created private
  drop(wp, {"patch_lower_lr"});
  int64_t steps = 0;
  DAIFU_GUARD(session, step, 0, 5) {
    if (step.index() == 2 && lr.get() > 0.05) torch::ones({4}).item<float>();  // real API misuse
    ++steps;
  };
  EXPECT_EQ(steps, 5);
  EXPECT_DOUBLE_EQ(lr.get(), 0.01);
  const auto patches = events(wp, "patch");
  ASSERT_EQ(patches.size(), 1u);
  EXPECT_EQ(patches[0]["step"], 2);
  EXPECT_EQ(patches[0]["action"], "retry");
  EXPECT_EQ(patches[0]["sha256"], sha256sum(wp / "patches" / "patch_lower_lr.so"));
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0]["surgery"], "hot_patch");
  EXPECT_EQ(repairs[0]["matched"], "api_misuse");
  EXPECT_EQ(repairs[0]["changes"]["lr"], nlohmann::json::array({0.1, 0.01}));
  EXPECT_EQ(repairs[0]["changes"]["model_parameters"][1], 2);
  EXPECT_EQ(repairs[0]["changes"]["patch"][1]["sha256"], patches[0]["sha256"]);
  EXPECT_EQ(repairs[0]["reason"], "lower_lr: lr divided by 10");
}

TEST(HotPatch, WithoutAPatchApiMisuseEscalatesAndSaysNoPatchWasThere) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()).inject("api@1"));
  try {
    DAIFU_GUARD(session, step, 0, 3){};
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("hot_patch (declined: no new patch in"), std::string::npos) << e.what();
  }
}

TEST(HotPatch, BadPatchesAreRefusedOneByOneWithClearMessagesAndNothingChanges) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("api@1"));
  auto& lr = session.knob("lr", 0.1);
  drop(wp, {"patch_wrong_abi", "patch_no_entry", "patch_throws", "patch_garbage"});
  fs::copy_file(built_patch("patch_lower_lr"), wp / "patches" / "patch_lower_lr.so.disabled");  // not a .so: ignored
  EXPECT_THROW({ DAIFU_GUARD(session, step, 0, 3){}; }, daifu::Unrecovered);
  EXPECT_DOUBLE_EQ(lr.get(), 0.1);
  std::vector<std::string> reasons;
  for (const auto& e : events(wp)) {
    if (e["event"] == "patch_refused" || e["event"] == "patch_failed") reasons.push_back(e["reason"]);
  }
  ASSERT_EQ(reasons.size(), 4u);  // in name order
  EXPECT_NE(reasons[0].find("patch_garbage.so returned 42, which is not a daifu::Action"), std::string::npos) << reasons[0];
  EXPECT_NE(reasons[1].find("patch_no_entry.so exports no daifu_patch_abi_version(); define its entry point with "
                            "DAIFU_PATCH"),
            std::string::npos)
      << reasons[1];
  EXPECT_NE(reasons[2].find("patch_throws.so threw: patch bug: index 3 out of range"), std::string::npos) << reasons[2];
  EXPECT_NE(reasons[3].find("was built for patch ABI version 2; this daifu speaks version 1"), std::string::npos)
      << reasons[3];
  EXPECT_TRUE(events(wp, "patch").empty());
}

TEST(HotPatch, AFolderOthersMayWriteIsRefused) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("api@0"));
  auto& lr = session.knob("lr", 0.1);
  drop(wp, {"patch_lower_lr"});
  fs::permissions(wp / "patches", fs::perms::all);
  try {
    DAIFU_GUARD(session, step, 0, 1){};
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("is writable by group or others (mode 0777); run chmod go-w"),
              std::string::npos)
        << e.what();
  }
  EXPECT_DOUBLE_EQ(lr.get(), 0.1);
}

TEST(HotPatch, AFolderOrPatchOwnedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "giving a folder to another user needs root";
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("api@0,api@1"));
  auto& lr = session.knob("lr", 0.1);
  drop(wp, {"patch_lower_lr"});
  constexpr uid_t kNobody = 65534;
  ASSERT_EQ(::chown((wp / "patches").c_str(), kNobody, kNobody), 0);
  try {
    DAIFU_GUARD(session, step, 0, 1){};
    FAIL() << "expected daifu::Unrecovered";
  } catch (const daifu::Unrecovered& e) {
    EXPECT_NE(std::string(e.what()).find("is owned by uid 65534, not by this process's user (uid 0)"), std::string::npos)
        << e.what();
  }
  // The folder is ours again, the file is not.
  ASSERT_EQ(::chown((wp / "patches").c_str(), 0, 0), 0);
  ASSERT_EQ(::chown((wp / "patches" / "patch_lower_lr.so").c_str(), kNobody, kNobody), 0);
  EXPECT_THROW({ DAIFU_GUARD(session, step, 1, 2){}; }, daifu::Unrecovered);
  const auto refused = events(wp, "patch_refused");
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0]["reason"].get<std::string>().find("patch_lower_lr.so is owned by uid 65534"), std::string::npos);
  EXPECT_DOUBLE_EQ(lr.get(), 0.1);
}

TEST(HotPatch, ALinkIntoThePatchesFolderIsRefused) {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("api@0"));
  session.knob("lr", 0.1);
  fs::create_symlink(built_patch("patch_lower_lr"), wp / "patches" / "linked.so");
  EXPECT_THROW({ DAIFU_GUARD(session, step, 0, 1){}; }, daifu::Unrecovered);
  const auto refused = events(wp, "patch_refused");
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0]["reason"].get<std::string>().find("linked.so: the file is a symbolic link, not a regular file"),
            std::string::npos)
      << refused[0];
}

// A session paused on a failure no surgery repairs (Options::on_unrecovered(Pause)) takes a
// patch dropped in while it waits (the other pause tests are in pause_test.cpp).
TEST(Pause, APatchDroppedInWhileWaitingRepairsTheStepInTheSameProcess) {
  const auto wp = fresh_dir();
  torch::nn::Linear model(3, 2);
  daifu::Session session(paused_options(wp));
  session.track("model", *model);
  auto& lr = session.knob("lr", 0.1);
  std::thread fixer([&] {
    const auto state = await_pause(wp);
    EXPECT_EQ(state["step"], 2);
    EXPECT_EQ(state["pid"], static_cast<int64_t>(::getpid()));
    EXPECT_EQ(state["kind"], "api_misuse");
    EXPECT_NE(state["why"].get<std::string>().find("surgery api_misuse escalated"), std::string::npos) << state;
    EXPECT_TRUE(fs::exists(state["report"].get<std::string>()));  // flushed before the pause
    drop(wp, {"patch_lower_lr"});
  });
  std::vector<std::pair<int64_t, int64_t>> runs;
  DAIFU_GUARD(session, step, 0, 5) {
    runs.emplace_back(step.index(), step.attempt());
    if (step.index() == 2 && lr.get() > 0.05) torch::ones({4}).item<float>();  // real API misuse
  };
  fixer.join();
  EXPECT_EQ(runs, (std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {1, 0}, {2, 0}, {2, 1}, {3, 0}, {4, 0}}));
  EXPECT_DOUBLE_EQ(lr.get(), 0.01);
  EXPECT_FALSE(paused_state(wp).has_value());
  ASSERT_EQ(events(wp, "pause").size(), 1u);
  const auto end = events(wp, "pause_end");
  ASSERT_EQ(end.size(), 1u);
  EXPECT_EQ(end[0]["by"], "hot_patch");
  const auto repairs = events(wp, "repair");
  ASSERT_EQ(repairs.size(), 2u);  // api_misuse's escalation, then the patch
  EXPECT_EQ(repairs[1]["surgery"], "hot_patch");
  EXPECT_EQ(repairs[1]["changes"]["lr"], nlohmann::json::array({0.1, 0.01}));
  EXPECT_EQ(session.stats().unrecovered, 0);
}

// A patch that zeroes the model, then throws: the snapshot puts the model back and the
// session waits on; a good patch then repairs the step, and training ends bitwise equal to a
// run that never failed.
TEST(Pause, APatchThatThrowsAfterChangingStateIsUndoneFromTheSnapshotAndWaitingGoesOn) {
  auto train = [](const fs::path& wp, bool fail) {
    torch::manual_seed(1);
    torch::nn::Linear model(4, 3);
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
    daifu::Session session(paused_options(wp).snapshot_every(1));
    session.track("model", *model);
    session.track("optimizer", opt);
    auto& lr = session.knob("lr", 0.1);
    std::thread fixer;
    if (fail) {
      fixer = std::thread([&] {
        await_pause(wp);
        drop(wp, {"patch_damages"});
        EXPECT_TRUE(wait_until([&] { return !events(wp, "patch_failed").empty(); }));
        drop(wp, {"patch_lower_lr"});
      });
    }
    const auto x = torch::randn({8, 4});
    const auto y = torch::randint(0, 3, {8});
    DAIFU_GUARD(session, step, 0, 5) {
      if (fail && step.index() == 3 && lr.get() > 0.05) torch::ones({2}).item<float>();
      if (!fail && step.index() == 3) lr.set(0.01);
      for (auto& g : opt.param_groups()) g.options().set_lr(lr.get());
      opt.zero_grad();
      torch::nll_loss(torch::log_softmax(model->forward(x), 1), y).backward();
      opt.step();
    };
    if (fixer.joinable()) fixer.join();
    return std::vector<torch::Tensor>{model->weight.detach().clone(), model->bias.detach().clone()};
  };
  const auto wp = fresh_dir();
  const auto repaired = train(wp, true);
  const auto reference = train(fresh_dir("_ref"), false);
  EXPECT_TRUE(torch::equal(repaired[0], reference[0]));
  EXPECT_TRUE(torch::equal(repaired[1], reference[1]));
  const auto failed = events(wp, "patch_failed");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_NE(failed[0]["reason"].get<std::string>().find("patch_damages.so threw: half-done"), std::string::npos);
  int undone = 0;
  for (const auto& r : events(wp, "rollback")) undone += r["mutated"] == nlohmann::json::array({"hot patch"});
  EXPECT_EQ(undone, 1);
  EXPECT_EQ(events(wp, "pause_end")[0]["by"], "hot_patch");
}

}  // namespace hot_patch_test
