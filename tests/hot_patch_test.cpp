// Hot patches: a patch dropped into <workplace>/patches repairs a failure no built-in fixes, in
// the same process; bad patches and unsafe folders are refused with a clear message.
#include <daifu/daifu.h>
#include <daifu/patch.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "patch/sha256.h"
#include "test_util.h"

#include <filesystem>

#include <unistd.h>

namespace hot_patch_test {

namespace fs = std::filesystem;
using daifu::testing::events;
using daifu::testing::fresh_dir;

fs::path built_patch(const std::string& name) { return fs::path(DAIFU_PATCH_DIR) / (name + ".so"); }

// Copies the built patches into the workplace's patches folder, as a user would.
void drop(const fs::path& workplace, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    fs::copy_file(built_patch(name), workplace / "patches" / (std::string(name) + ".so"),
                  fs::copy_options::overwrite_existing);
  }
}

TEST(Sha256, MatchesTheFips180Vectors) {
  using daifu::detail::sha256_hex;
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
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
  EXPECT_EQ(patches[0]["sha256"], daifu::detail::sha256_file((wp / "patches" / "patch_lower_lr.so").string()));
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
  EXPECT_NE(refused[0]["reason"].get<std::string>().find("is not a regular file"), std::string::npos);
}

}  // namespace hot_patch_test
