// Reading a workplace's history: runs, failures and what became of them, knob changes,
// metrics; and reading journals that are torn, from a newer schema, or garbage, as far as
// they make sense (a randomized test mutates a real journal thousands of times); the replay
// plan a later run would follow.
#include <daifu/daifu.h>

#include <gtest/gtest.h>

#include "control/control_channel.h"
#include "replay/history.h"
#include "replay/replay_plan.h"
#include "test_util.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>
#include <tuple>

#include <sys/wait.h>

namespace history_test {

namespace fs = std::filesystem;
using daifu::detail::read_history;
using daifu::testing::events;
using daifu::testing::fresh_dir;
using daifu::testing::read_text;

// A real workplace: a transient retry at step 3, an injected OOM at step 5 (batch 64 -> 32),
// a NaN batch skipped at 7, metrics every 4 steps.
fs::path real_workplace() {
  const auto wp = fresh_dir();
  daifu::Session session(daifu::Options().workplace(wp.string()).inject("transient@3,oom@5,nan_data@7").metrics_every(4));
  session.knob<int64_t>("batch_size", 64);
  DAIFU_GUARD(session, step, 0, 10) { session.report("loss", 1.0 / (1 + step.index())); };
  return wp;
}

TEST(History, FoldsARealJournalIntoFailuresAndWhatBecameOfThem) {
  const auto wp = real_workplace();
  const auto h = read_history(wp);
  EXPECT_TRUE(h.warnings.empty());
  ASSERT_EQ(h.runs.size(), 1u);
  EXPECT_EQ(h.runs[0].status, "ok");
  EXPECT_EQ(h.runs[0].committed_steps, 9);
  ASSERT_EQ(h.incidents.size(), 3u);
  EXPECT_EQ(h.incidents[0].kind, "transient_runtime");
  EXPECT_EQ(h.incidents[0].surgery, "transient_retry");
  EXPECT_EQ(h.incidents[0].outcome, "retry");
  EXPECT_GT(h.incidents[0].recovery_us, 0);
  EXPECT_EQ(h.incidents[1].kind, "out_of_memory");
  EXPECT_EQ(h.incidents[1].changes["batch_size"], nlohmann::json::array({64, 32}));
  EXPECT_EQ(h.incidents[2].outcome, "skip");
  ASSERT_EQ(h.knob_changes.size(), 1u);
  EXPECT_EQ(h.knob_changes[0].after, 32);
  EXPECT_EQ(h.metrics.size(), 9u);  // one loss per committed step
  EXPECT_EQ(h.metrics.back().step, 9);
}

TEST(History, TornNewerAndGarbageLinesAreSkippedAndCounted) {
  const auto wp = real_workplace();
  const std::string good = read_text(wp / "journal.jsonl");
  {
    std::ofstream out(wp / "journal.jsonl", std::ios::app);
    out << "{\"event\":\"from_the_future\",\"v\":1,\"step\":3,\"run\":\"x\"}\n";  // unknown: kept, ignored
    out << "{\"event\":\"failure\",\"v\":9,\"step\":1}\n";                         // newer schema
    out << "\x01\x02 not json at all\n";
    out << "{\"event\":\"repair\",\"report\":\"nowhere.json\",\"v\":1}\n";          // names no failure
    out << "{\"event\":\"failure\",\"v\":1,\"step\":\"seven\",\"kind\":[1,2]}\n";  // wrong types
    out << "{\"event\":\"metrics\",\"v\":1,\"steps\":3,\"values\":[]}\n";
    out << "{\"event\":\"run_end\",\"tor";                                        // torn last line
  }
  const auto h = read_history(wp);
  EXPECT_EQ(h.skipped_lines, 3);  // newer, not JSON, torn
  EXPECT_EQ(h.incidents.size(), 4u);  // the wrong-typed failure is kept with defaults
  EXPECT_EQ(h.incidents.back().step, -1);
  EXPECT_EQ(h.incidents.back().kind, "unknown");
  EXPECT_EQ(h.warnings.size(), 5u);  // + the unattributed repair and the bad metrics line
}

// Mutates a real journal at random (cut, flip bytes, duplicate, insert garbage, swap lines)
// and reads each mutant: never a crash or an exception, and every line is either read or
// counted as skipped. Also plans a replay from each.
TEST(History, RandomizedJournalsAreReadAsFarAsTheyMakeSense) {
  const auto wp = real_workplace();
  const std::string original = read_text(wp / "journal.jsonl");
  std::vector<std::string> lines;
  {
    std::stringstream s(original);
    for (std::string l; std::getline(s, l);) lines.push_back(l);
  }
  std::mt19937_64 rng(20261201);
  const auto budget = std::chrono::seconds(3);
  const auto start = std::chrono::steady_clock::now();
  int64_t inputs = 0, skipped = 0;
  const fs::path mutant_dir = wp / "mutant";
  fs::create_directories(mutant_dir);
  while (std::chrono::steady_clock::now() - start < budget) {
    std::vector<std::string> m = lines;
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits && !m.empty(); ++e) {
      auto& l = m[rng() % m.size()];
      switch (rng() % 6) {
        case 0: l = l.substr(0, rng() % (l.size() + 1)); break;
        case 1:
          if (!l.empty()) l[rng() % l.size()] = static_cast<char>(rng() % 256);
          break;
        case 2: m.push_back(m[rng() % m.size()]); break;
        case 3: {
          std::string garbage(rng() % 64, ' ');
          for (auto& c : garbage) c = static_cast<char>(rng() % 256);
          m.insert(m.begin() + static_cast<std::ptrdiff_t>(rng() % m.size()), garbage);
          break;
        }
        case 4: std::swap(m[rng() % m.size()], m[rng() % m.size()]); break;
        case 5: {  // a field of another type
          const auto at = l.find(":");
          if (at != std::string::npos) l.insert(at + 1, rng() % 2 ? "[" : "\"");
          break;
        }
      }
    }
    std::string text;
    for (const auto& l : m) text += l + "\n";
    if (rng() % 2) text.pop_back();  // sometimes torn
    {
      std::ofstream out(mutant_dir / "journal.jsonl", std::ios::binary | std::ios::trunc);
      out << text;
    }
    daifu::detail::History h;
    ASSERT_NO_THROW(h = read_history(mutant_dir)) << text;
    ASSERT_NO_THROW(daifu::detail::plan_replay(h, mutant_dir, {}));
    // Every non-empty line (random bytes may add newlines) is read or counted as skipped.
    std::size_t nonempty = 0;
    std::stringstream split(text);
    for (std::string l; std::getline(split, l);) nonempty += !l.empty();
    EXPECT_EQ(static_cast<std::size_t>(h.skipped_lines) + h.lines.size(), nonempty);
    skipped += h.skipped_lines;
    ++inputs;
  }
  RecordProperty("inputs", std::to_string(inputs));
  std::printf("read %lld mutated journals in %lld s, %lld lines skipped\n", static_cast<long long>(inputs),
              static_cast<long long>(budget.count()), static_cast<long long>(skipped));
  EXPECT_GT(inputs, 100);
}

std::pair<int, std::string> cli(const std::string& args) {
  FILE* pipe = ::popen((std::string(DAIFU_CLI) + " " + args + " 2>&1").c_str(), "r");
  std::string out;
  char buffer[4096];
  while (pipe != nullptr && std::fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
  const int status = pipe != nullptr ? ::pclose(pipe) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Per-epoch DAIFU_GUARD loops count their steps from 0 each: the loop tells their failures apart.
TEST(History, TheLogShowsTheLoopOfEachFailureWhenThereAreSeveral) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
    for (int epoch = 0; epoch < 2; ++epoch) {
      DAIFU_GUARD(session, step, 0, 3) {
        if (step.index() == 1 && step.attempt() == 0) {
          throw std::system_error(std::make_error_code(std::errc::io_error), "shard " + std::to_string(epoch));
        }
      };
    }
  }
  EXPECT_EQ(read_history(wp).incidents.at(1).loop, 1);
  auto [code, out] = cli("log --no-color -w " + wp.string());
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("loop"), std::string::npos) << out;
  std::tie(std::ignore, out) = cli("log --json -w " + wp.string());
  const auto rows = nlohmann::json::parse(out);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["loop"], 0);
  EXPECT_EQ(rows[1]["loop"], 1);
  EXPECT_EQ(rows[1]["step"], 1);
}

TEST(History, TheReportPlotsEveryMetricOnItsOwnScale) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("transient@2"));
    DAIFU_GUARD(session, step, 0, 6) {
      session.report("d_loss", 1.0 / (1 + step.index()));
      session.report("g_loss", 100.0 + step.index());
    };
  }
  const auto [code, out] = cli("report -o " + (wp / "report.html").string() + " -w " + wp.string());
  ASSERT_EQ(code, 0) << out;
  const std::string html = read_text(wp / "report.html");
  EXPECT_NE(html.find("<title>d_loss</title>"), std::string::npos);
  EXPECT_NE(html.find("<title>g_loss</title>"), std::string::npos);
  EXPECT_NE(html.find("g_loss [100, 105]"), std::string::npos);
}

// DAIFU_GUARD_EACH loops number their steps across epochs: the report marks where each begins.
TEST(History, TheReportMarksWhereEachLaterLoopBegins) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject(""));
    const std::vector<int> batches{1, 2, 3};
    for (int epoch = 0; epoch < 3; ++epoch) {
      DAIFU_GUARD_EACH(session, step, x, batches) { session.report("loss", 1.0 / x); };
    }
  }
  const auto [code, out] = cli("report -o " + (wp / "report.html").string() + " -w " + wp.string());
  ASSERT_EQ(code, 0) << out;
  const std::string html = read_text(wp / "report.html");
  EXPECT_NE(html.find("<title>loop 1 ("), std::string::npos) << html;
  EXPECT_NE(html.find(") starts at step 3</title>"), std::string::npos) << html;
  EXPECT_NE(html.find(") starts at step 6</title>"), std::string::npos) << html;
  EXPECT_EQ(html.find("starts at step 0<"), std::string::npos) << html;
}

TEST(History, TheCliShowsLogStatsAFailureTheReplayPlanAndAnHtmlReport) {
  const auto wp = real_workplace();
  const std::string w = " -w " + wp.string();
  auto [code, out] = cli("log --no-color" + w);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("1 run(s), 3 failure(s)"), std::string::npos) << out;
  EXPECT_NE(out.find("out_of_memory      c10::Error         out_of_memory     retry"), std::string::npos) << out;
  std::tie(code, out) = cli("stats --json" + w);
  EXPECT_EQ(code, 0) << out;
  const auto stats = nlohmann::json::parse(out);
  EXPECT_EQ(stats["per_kind"]["transient_runtime"], 1);
  EXPECT_EQ(stats["per_outcome"]["skip"], 1);
  // The OOM and the NaN batch were the configuration's and the data's: a restart meets them again.
  EXPECT_EQ(stats["recovered_restart_would_repeat"], 2);
  EXPECT_GE(stats["restart_cost_avoided_s"].get<double>(), 0.0);
  std::tie(code, out) = cli("show 2" + w);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("changed   batch_size: 64 -> 32"), std::string::npos) << out;
  EXPECT_NE(out.find("stack (throw site):"), std::string::npos) << out;
  EXPECT_EQ(cli("show 99" + w).first, 1);
  std::tie(code, out) = cli("replay --dry-run" + w);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("batch_size 64 -> 32 (out_of_memory repaired out_of_memory at step 5"), std::string::npos) << out;
  std::tie(code, out) = cli("report -o " + (wp / "report.html").string() + w);
  ASSERT_EQ(code, 0) << out;
  const std::string html = read_text(wp / "report.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("<polyline"), std::string::npos);      // the loss curve
  EXPECT_NE(html.find("knob batch_size"), std::string::npos);  // the knob over the steps
  EXPECT_EQ(html.find("http"), html.find("http://www.w3.org/2000/svg"));  // nothing to fetch
  EXPECT_EQ(cli("log -w " + (wp / "nothing").string()).first, 1);
}

// A journal line nesting 100 000 levels (copying it recursed until the stack overflowed, and
// `daifu log` died) is skipped with a warning; the rest of the history is read.
TEST(History, ALineNestedTooDeeplyIsSkippedWithAWarning) {
  const auto wp = real_workplace();
  const std::size_t depth = 100000;
  std::ofstream(wp / "journal.jsonl", std::ios::app)
      << "{\"event\":\"knob\",\"v\":1,\"name\":\"batch_size\",\"after\":" << std::string(depth, '[')
      << std::string(depth, ']') << "}\n";
  const auto h = read_history(wp);
  ASSERT_EQ(h.warnings.size(), 1u);
  EXPECT_NE(h.warnings[0].find("nested deeper than 64 levels; line skipped"), std::string::npos) << h.warnings[0];
  EXPECT_EQ(h.knob_changes.size(), 1u);
  EXPECT_EQ(h.incidents.size(), 3u);
  const auto [code, out] = cli("log --no-color -w " + wp.string());
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("1 run(s), 3 failure(s)"), std::string::npos) << out;
}

// Each of these ended the CLI: `daifu log` by std::stoi on a rank folder's number, `daifu
// status` by a paused.json field of the wrong type, `replay --dry-run` by hashing /dev/zero
// forever (a repair may name any file as its patch).
TEST(History, HostileWorkplaceFilesAreRefusedByTheCliWithoutEndingIt) {
  const auto wp = real_workplace();
  const auto ranks = fresh_dir("-ranks");
  fs::create_directories(ranks / "rank-99999999999");
  fs::copy(wp, ranks / "rank-0", fs::copy_options::recursive);
  auto [code, out] = cli("log --no-color -w " + ranks.string());
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("transient_runtime  std::system_error  transient_retry"), std::string::npos) << out;

  std::ofstream(wp / "paused.json") << nlohmann::json{{"pid", ::getpid()}, {"step", 3}, {"attempt", 0}, {"where", 17}}.dump();
  std::tie(code, out) = cli("status -w " + wp.string());
  EXPECT_NE(code, -1) << out;
  EXPECT_NE(out.find("no session is paused"), std::string::npos) << out;
  std::string why;
  EXPECT_FALSE(daifu::detail::read_paused(wp, &why).has_value());
  EXPECT_EQ(why, "no string \"pause\"");
  EXPECT_FALSE(daifu::detail::process_alive(4294967295));  // was kill(-1, 0): "alive"
  EXPECT_FALSE(daifu::detail::process_alive(4294967297));  // was kill(1, 0)

  std::ofstream(wp / "journal.jsonl", std::ios::app)
      << R"({"v":1,"event":"failure","step":8,"run":"r","kind":"api_misuse","report":"failures/0099.json"})" << '\n'
      << R"({"v":1,"event":"repair","step":8,"run":"r","surgery":"hot_patch","action":"retry","report":"failures/0099.json",)"
      << R"("changes":{"patch":[null,{"path":"/dev/zero","sha256":"00"}]}})" << '\n'
      << R"({"v":1,"event":"resume","step":8,"run":"r","attempt":1})" << '\n';
  std::tie(code, out) = cli("replay --dry-run -w " + wp.string());
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("skipped: daifu: cannot hash /dev/zero: the file is a device, not a regular file"),
            std::string::npos)
      << out;
}

TEST(History, AMissingJournalIsAClearError) {
  try {
    read_history(fresh_dir() / "nothing_here");
    FAIL() << "expected daifu::Error";
  } catch (const daifu::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open journal"), std::string::npos);
  }
}

TEST(Replay, ItemsOfAnotherGuardOrWithOtherTrackedObjectsAreSkippedWithTheReason) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("oom@2"));
    auto& batch = session.knob<int64_t>("batch_size", 64);
    DAIFU_GUARD(session, step, 0, 4){};
    EXPECT_EQ(batch.get(), 32);
  }
  {  // the same tracked objects (none), another guard loop: never reached
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("").replay(true));
    auto& batch = session.knob<int64_t>("batch_size", 64);
    DAIFU_GUARD(session, step, 0, 4){};
    EXPECT_EQ(batch.get(), 64);
  }
  const auto skipped = events(wp, "replay_skipped");
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0]["reason"].get<std::string>().find("never started in this run"), std::string::npos);
  const auto plan = daifu::detail::plan_replay(read_history(wp), wp, {});
  ASSERT_EQ(plan.size(), 1u);  // replays are not replayed again
  EXPECT_EQ(plan[0].describe().rfind("batch_size 64 -> 32 (out_of_memory repaired out_of_memory at step 2, ", 0), 0u)
      << plan[0].describe();
}

TEST(Replay, AnOutOfMemoryShrinkThatGrewBackIsNotReplayed) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("oom@2").oom_grow_back(3));
    auto& batch = session.knob<int64_t>("batch_size", 64);
    DAIFU_GUARD(session, step, 0, 8){};
    EXPECT_EQ(batch.get(), 64);
  }
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("oom@1").oom_grow_back(0));
    auto& batch = session.knob<int64_t>("batch_size", 64);
    DAIFU_GUARD(session, step, 0, 8){};
    EXPECT_EQ(batch.get(), 32);
  }
  const auto plan = daifu::detail::plan_replay(read_history(wp), wp, {});
  ASSERT_EQ(plan.size(), 1u);  // the second run's shrink, which stayed
  EXPECT_EQ(plan[0].step, 1);
  EXPECT_EQ(plan[0].after, 32);
}

}  // namespace history_test
