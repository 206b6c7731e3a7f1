// The workplace: journal.jsonl lines, torn lines, reports, the human-readable record, and a
// workplace that cannot be created.
#include <daifu/daifu.h>

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <signal.h>
#include <sys/resource.h>

#include <fstream>
#include <set>
#include <string_view>
#include <thread>

#include "journal/journal.h"
#include "journal/workplace.h"
#include "test_util.h"

namespace journal_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;
using daifu::testing::read_text;

TEST(Journal, EveryLineHasVersionEventTimeAndRun) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("transient@1"));
    DAIFU_GUARD(session, step, 0, 3){};
  }
  const auto all = events(wp);
  ASSERT_GE(all.size(), 6u);
  for (const auto& line : all) {
    EXPECT_EQ(line["v"], daifu::kJournalSchemaVersion);
    EXPECT_TRUE(line["event"].is_string());
    EXPECT_TRUE(line["time"].is_number());
    EXPECT_EQ(line["run"], all.front()["run"]);
  }
  EXPECT_EQ(all.front()["event"], "run_start");
  EXPECT_EQ(all.back()["event"], "run_end");
  std::vector<std::string> order;
  for (const auto& line : all) order.push_back(line["event"]);
  const std::vector<std::string> expected = {"run_start", "loop_start", "failure", "repair", "resume", "loop_end", "run_end"};
  EXPECT_EQ(order, expected);
}

TEST(Journal, FailureReportHasTheSymbolizedThrowSite) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("shape@0*"));
    EXPECT_THROW({ DAIFU_GUARD(session, step, 0, 1){}; }, daifu::Unrecovered);
  }
  const auto failure = events(wp, "failure").at(0);
  const std::filesystem::path report_path = failure["report"].get<std::string>();
  EXPECT_EQ(report_path.parent_path(), wp / "failures");
  ASSERT_TRUE(std::filesystem::exists(report_path));
  const auto report = nlohmann::json::parse(read_text(report_path));
  EXPECT_EQ(report["kind"], "tensor_mismatch");
  EXPECT_EQ(report["exception_type"], "c10::Error");
  const std::string stack = report["stack"];
  // Symbolized to file:line, from libtorch's check through the injector to the guard loop.
  EXPECT_NE(stack.find("mm"), std::string::npos) << stack;
  EXPECT_NE(stack.find("inject.cpp:"), std::string::npos) << stack;
  EXPECT_NE(stack.find("journal_test.cpp:"), std::string::npos) << stack;
}

// Symbolizing maps the libraries' symbol tables (~176 MB): not when memory is what is short.
TEST(Journal, AnOutOfMemoryReportNamesItsFramesWithoutSymbolizing) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("oom@0"));
    EXPECT_THROW({ DAIFU_GUARD(session, step, 0, 1){}; }, daifu::Unrecovered);  // no batch knob to halve
  }
  const auto failure = events(wp, "failure").at(0);
  const auto report = nlohmann::json::parse(read_text(failure["report"].get<std::string>()));
  EXPECT_EQ(report["kind"], "out_of_memory");
  EXPECT_EQ(report["stack_symbolized"], false);
  const std::string stack = report["stack"];
  EXPECT_EQ(stack.rfind("#0 ", 0), 0u) << stack;
  EXPECT_NE(stack.find(" in "), std::string::npos) << stack;
  // Frames name their module: the one that holds daifu's code (libdaifu.so in a user's program;
  // this test program itself, which links daifu_internals) is among them.
  Dl_info daifu_module{};
  ASSERT_NE(::dladdr(reinterpret_cast<void*>(&daifu::read_journal), &daifu_module), 0);
  EXPECT_NE(stack.find(std::string(" in ") + daifu_module.dli_fname), std::string::npos)
      << daifu_module.dli_fname << "\n" << stack;
  EXPECT_EQ(stack.find(".cpp:"), std::string::npos) << stack;
}

TEST(Journal, ASkippedStepSaysHowLongTheRecoveryTook) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("io@1"));
    session.surgeries().add("skip", [](const daifu::Failure&) { return true; },
                            [](daifu::RepairContext&) { return daifu::Action::Skip; });
    DAIFU_GUARD(session, step, 0, 3){};
  }
  const auto skip = events(wp, "skip").at(0);
  EXPECT_EQ(skip["step"], 1);
  EXPECT_GT(skip["recovery_us"].get<double>(), 0);
}

// A report is symbolized in the background once the repaired step commits, or at the latest
// kHoldAtMost after the failure: a retry that never ends (or kills the process) still leaves it.
TEST(Journal, AHeldFailureReportIsWrittenDuringALongRetry) {
  const auto wp = fresh_dir();
  bool during_retry = false;
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("transient@1"));
    DAIFU_GUARD(session, step, 0, 3) {
      if (step.index() != 1 || step.attempt() != 1) return;
      // Up to 30 s: the writer runs at nice 19 and symbolizes for ~0.1 s of CPU, which a
      // machine busy with other tests gives it slowly.
      for (int i = 0; i < 3000 && !during_retry; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        during_retry = std::filesystem::exists(wp / "failures" / "0001.json");
      }
    };
  }
  EXPECT_TRUE(during_retry) << "not written while the retry ran";
  EXPECT_TRUE(std::filesystem::exists(wp / "failures" / "0001.json"));
}

TEST(Journal, ReportNumbersContinueAcrossRuns) {
  const auto wp = fresh_dir();
  for (int run = 0; run < 2; ++run) {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("io@0"));
    DAIFU_GUARD(session, step, 0, 1){};
  }
  EXPECT_TRUE(std::filesystem::exists(wp / "failures" / "0001.json"));
  EXPECT_TRUE(std::filesystem::exists(wp / "failures" / "0002.json"));
  EXPECT_EQ(events(wp, "run_start").size(), 2u);
}

TEST(Journal, TheSchemaNamesEachEventOnceAndKnowsItsFields) {
  using daifu::detail::find_journal_event;
  std::set<std::string_view> names;
  for (const auto& e : daifu::detail::kJournalEvents) EXPECT_TRUE(names.insert(e.name).second) << e.name;
  ASSERT_NE(find_journal_event(daifu::detail::event::knob), nullptr);
  EXPECT_TRUE(find_journal_event("knob")->has_field("before"));
  EXPECT_TRUE(find_journal_event("knob")->has_field("reason"));  // the last field
  EXPECT_TRUE(find_journal_event("knob")->has_field("step"));    // every line's
  EXPECT_FALSE(find_journal_event("knob")->has_field("befor"));
  EXPECT_FALSE(find_journal_event("knob")->has_field("ore"));
  EXPECT_EQ(find_journal_event("from_the_future"), nullptr);
}

TEST(Journal, ATornLastLineIsSkippedWithAWarningAndTheNextRunStaysReadable) {
  const auto wp = fresh_dir();
  { daifu::Session session(daifu::Options().workplace(wp.string())); }
  {
    std::ofstream out(wp / "journal.jsonl", std::ios::app);
    out << R"({"v":1,"event":"failure","step":3,"kin)";  // killed mid-write
  }
  { daifu::Session session(daifu::Options().workplace(wp.string())); }
  const auto contents = daifu::read_journal((wp / "journal.jsonl").string());
  ASSERT_EQ(contents.warnings.size(), 1u);
  EXPECT_NE(contents.warnings[0].find("journal.jsonl:3"), std::string::npos) << contents.warnings[0];
  EXPECT_EQ(contents.lines.size(), 4u);  // two runs, start and end each
}

// A disk that fills mid-line (here, a file size limit) tore the journal for good: once space
// came back, the next line was glued onto the fragment and both were lost.
TEST(Journal, ALineTornByAFullDiskIsEndedBeforeTheNextOne) {
  const auto wp = daifu::detail::prepare_workplace(fresh_dir().string());
  daifu::detail::Journal journal(wp, /*echo=*/false);
  journal.write({{"event", "knob"}, {"step", 1}});
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  const auto previous = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit full = old;
  full.rlim_cur = std::filesystem::file_size(wp / "journal.jsonl") + 20;  // room for part of a line
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &full), 0);
  ::testing::internal::CaptureStderr();
  journal.write({{"event", "knob"}, {"step", 2}});  // torn after 20 bytes
  journal.write({{"event", "knob"}, {"step", 3}});  // nothing written
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old), 0);
  ::signal(SIGXFSZ, previous);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cannot write journal.jsonl: File too large"), std::string::npos) << err;
  journal.write({{"event", "knob"}, {"step", 4}});
  const auto contents = daifu::read_journal((wp / "journal.jsonl").string());
  ASSERT_EQ(contents.lines.size(), 2u);
  EXPECT_EQ(contents.lines[0].step, 1);
  EXPECT_EQ(contents.lines[1].step, 4);
  EXPECT_EQ(contents.warnings.size(), 1u);  // the fragment of step 2's line
}

// The check for a torn last line read from a write-only descriptor, failed, and every run
// after the first began with an empty line.
TEST(Journal, ANextRunAppendsToAWholeJournalWithoutAnEmptyLine) {
  const auto wp = fresh_dir();
  for (int run = 0; run < 2; ++run) daifu::Session session(daifu::Options().workplace(wp.string()));
  const std::string text = read_text(wp / "journal.jsonl");
  EXPECT_EQ(text.find("\n\n"), std::string::npos) << text;
  EXPECT_EQ(daifu::read_journal((wp / "journal.jsonl").string()).lines.size(), 4u);
}

TEST(Journal, ReaderSkipsGarbageAndNewerSchemas) {
  const auto dir = fresh_dir();
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir / "journal.jsonl");
    out << R"({"v":1,"event":"run_start","step":0,"time":1.5})" << '\n'
        << "not json\n"
        << R"({"v":1,"step":0})" << '\n'
        << R"({"v":99,"event":"from_the_future"})" << '\n'
        << R"({"v":1,"event":"unknown_event_type","step":4})" << '\n'
        << R"({"v":4294967297,"event":"run_start"})" << '\n'         // read as version 1 by an int
        << R"({"v":18446744073709551615,"event":"run_start"})" << '\n';  // read as -1 by an int64
  }
  const auto contents = daifu::read_journal((dir / "journal.jsonl").string());
  ASSERT_EQ(contents.lines.size(), 2u);
  EXPECT_EQ(contents.lines[1].event, "unknown_event_type");
  EXPECT_EQ(contents.lines[1].step, 4);
  EXPECT_EQ(contents.lines[1].line_number, 5);
  EXPECT_DOUBLE_EQ(contents.lines[0].time, 1.5);
  EXPECT_EQ(contents.warnings.size(), 5u);
  EXPECT_THROW(daifu::read_journal((dir / "missing.jsonl").string()), daifu::Error);
}

TEST(Journal, ExperimentRecordIsHumanReadable) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("transient@1"));
    DAIFU_GUARD(session, step, 0, 2){};
  }
  const std::string record = read_text(wp / "experiment_record.log");
  EXPECT_NE(record.find("Program Start"), std::string::npos) << record;
  EXPECT_NE(record.find("Failure 1 at step 1 attempt 0 (transient_runtime"), std::string::npos) << record;
  EXPECT_NE(record.find("Repair 1 by transient_retry: retry"), std::string::npos) << record;
  EXPECT_NE(record.find("Program End (ok)"), std::string::npos) << record;
}

TEST(Journal, AWorkplaceThatCannotBeCreatedIsAClearErrorAtConstruction) {
  const auto dir = fresh_dir();
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "a_file") << "x";
  try {
    daifu::Session session(daifu::Options().workplace((dir / "a_file" / "wp").string()));
    FAIL() << "expected daifu::Error";
  } catch (const daifu::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cannot create workplace folder"), std::string::npos) << what;
    EXPECT_NE(what.find("a_file"), std::string::npos) << what;
  }
  EXPECT_THROW(daifu::Session(daifu::Options().workplace("")), daifu::Error);
}

TEST(Journal, NonsenseOptionsAreRefusedAtConstruction) {
  const auto wp = fresh_dir();
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(wp.string()).max_attempts(0)), daifu::Error);
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(wp.string()).transient_retries(-1)), daifu::Error);
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(wp.string()).metrics_every(0)), daifu::Error);
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(wp.string()).inject("oom@")), daifu::Error);
  // A wait of 58 days (a mistake in units) was accepted.
  try {
    daifu::Session(daifu::Options().workplace(wp.string()).max_backoff(std::chrono::hours(24 * 58)));
    ADD_FAILURE() << "expected daifu::Error";
  } catch (const daifu::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Options::max_backoff(5011200000000 us) must be between 0 and one hour"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(daifu::Session(daifu::Options().workplace(wp.string()).contention_backoff(std::chrono::hours(2))),
               daifu::Error);
  EXPECT_NO_THROW(daifu::Session(daifu::Options().workplace(wp.string()).max_backoff(std::chrono::hours(1))));
}

}  // namespace journal_test
