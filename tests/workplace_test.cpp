// The workplace as ground others may have touched: a folder another user owns or may write,
// links and special files planted where daifu writes, a second writer, leftovers of killed runs.
#include <daifu/daifu.h>

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "test_util.h"

namespace workplace_test {

namespace fs = std::filesystem;
using daifu::testing::events;
using daifu::testing::fresh_dir;
using daifu::testing::read_text;
using daifu::testing::wait_until;

constexpr uid_t kNobody = 65534;

// A file outside the workplace that an attacker wants daifu to overwrite.
fs::path make_victim(const fs::path& dir) {
  fs::create_directories(dir);
  const fs::path victim = dir / "victim.txt";
  std::ofstream(victim) << "precious\n";
  return victim;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const daifu::Error& e) {
    return e.what();
  }
  return "(no daifu::Error)";
}

// Another user made the folder first and planted links to a file of its own, which a run as
// root could write: the folder is refused before anything is written.
TEST(Workplace, AFolderOwnedByAnotherUserIsRefusedAndItsLinksAreNotWritten) {
  if (::geteuid() != 0) GTEST_SKIP() << "giving a folder to another user needs root";
  const auto dir = fresh_dir();
  const auto victim = make_victim(dir / "elsewhere");
  ASSERT_EQ(::chown(victim.c_str(), kNobody, kNobody), 0);
  ASSERT_EQ(::chmod(victim.c_str(), 0600), 0);
  const auto wp = dir / "wp";
  fs::create_directories(wp / "failures");
  for (const char* name : {"journal.jsonl", "experiment_record.log", "failures/.0001.json.tmp"}) {
    fs::create_symlink(victim, wp / name);
    ASSERT_EQ(::lchown((wp / name).c_str(), kNobody, kNobody), 0);
  }
  ASSERT_EQ(::chown(wp.c_str(), kNobody, kNobody), 0);
  ASSERT_EQ(::chown((wp / "failures").c_str(), kNobody, kNobody), 0);

  const std::string what = error_of([&] { daifu::Session session(daifu::Options().workplace(wp.string())); });
  EXPECT_NE(what.find("workplace folder " + wp.string() + " is owned by uid 65534"), std::string::npos) << what;
  EXPECT_NE(what.find("run chown 0 " + wp.string()), std::string::npos) << what;
  EXPECT_EQ(read_text(victim), "precious\n");
}

TEST(Workplace, AFolderOthersMayWriteIsRefusedWithTheChmodToRun) {
  const auto wp = fresh_dir();
  fs::create_directories(wp);
  fs::permissions(wp, fs::perms::all);
  const std::string what = error_of([&] { daifu::Session session(daifu::Options().workplace(wp.string())); });
  EXPECT_NE(what.find("is writable by group or others (mode 0777); run chmod go-w " + wp.string()), std::string::npos)
      << what;
  EXPECT_FALSE(fs::exists(wp / "journal.jsonl"));
}

TEST(Workplace, ANewWorkplaceIsPrivate) {
  const auto wp = fresh_dir();
  { daifu::Session session(daifu::Options().workplace(wp.string())); }
  for (const auto& folder : {wp, wp / "failures", wp / "patches", wp / "control"}) {
    EXPECT_EQ(fs::status(folder).permissions(), fs::perms::owner_all) << folder;
  }
}

// In a workplace of our own, links found where daifu writes are replaced or refused, never
// followed: the report's name and its temporary's name lead to a file outside.
TEST(Workplace, LinksWhereDaifuWritesAreNeverFollowed) {
  const auto dir = fresh_dir();
  const auto victim = make_victim(dir / "elsewhere");
  const auto wp = dir / "wp";
  fs::create_directories(wp / "failures");
  fs::create_symlink(victim, wp / "journal.jsonl");
  std::string what = error_of([&] { daifu::Session session(daifu::Options().workplace(wp.string())); });
  EXPECT_NE(what.find("journal.jsonl is a symbolic link, not a regular file"), std::string::npos) << what;
  fs::remove(wp / "journal.jsonl");

  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("io@0"));
    // Planted after the session numbered its reports (and removed stale temporaries).
    fs::create_symlink(victim, wp / "failures" / "0001.json");
    fs::create_symlink(victim, wp / "failures" / (".0001.json." + std::to_string(::getpid()) + ".tmp"));
    DAIFU_GUARD(session, step, 0, 1){};
  }
  EXPECT_EQ(read_text(victim), "precious\n");
  EXPECT_FALSE(fs::is_symlink(wp / "failures" / "0001.json"));
  EXPECT_NE(read_text(wp / "failures" / "0001.json").find("\"kind\": \"transient_runtime\""), std::string::npos);
}

// A FIFO blocked the constructor (opening it for writing waits for a reader).
TEST(Workplace, AFifoAsTheJournalIsRefused) {
  const auto wp = fresh_dir();
  fs::create_directories(wp);
  ASSERT_EQ(::mkfifo((wp / "journal.jsonl").c_str(), 0600), 0);
  const std::string what = error_of([&] { daifu::Session session(daifu::Options().workplace(wp.string())); });
  EXPECT_NE(what.find("journal.jsonl is a FIFO, not a regular file"), std::string::npos) << what;
}

// Two writers numbered their reports alike and deleted each other's snapshots.
TEST(Workplace, OneWorkplaceHasOneWriter) {
  const auto wp = fresh_dir();
  {
    daifu::Session first(daifu::Options().workplace(wp.string()));
    const std::string what = error_of([&] { daifu::Session second(daifu::Options().workplace(wp.string())); });
    EXPECT_NE(what.find("is in use by another Session of this process"), std::string::npos) << what;
  }
  { daifu::Session again(daifu::Options().workplace(wp.string())); }  // the first one let go

  // Another process: its pid is named; once it is killed the kernel drops its lock.
  const pid_t pid = daifu::testing::spawn_logged({DAIFU_KILL_TARGET, wp.string(), "1000000", (wp / "out.pt").string()},
                                                 fresh_dir("-log"));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(wait_until([&] { return !events(wp, "loop_start").empty(); }, std::chrono::seconds(60)));
  const std::string what = error_of([&] { daifu::Session second(daifu::Options().workplace(wp.string())); });
  EXPECT_NE(what.find("is in use by process " + std::to_string(pid)), std::string::npos) << what;
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  daifu::Session after(daifu::Options().workplace(wp.string()));
}

// Leftovers of killed runs: a temporary report (which made `daifu show` fail) goes; a report
// number too large to count on from (std::stoll threw, so every start failed) is ignored.
TEST(Workplace, LeftoversOfKilledRunsAreCleanedOrIgnored) {
  const auto wp = fresh_dir();
  fs::create_directories(wp / "failures");
  std::ofstream(wp / "failures" / ".0002.json.99999.tmp");
  std::ofstream(wp / "failures" / "99999999999999999999.json") << "{}";
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).inject("io@0"));
    DAIFU_GUARD(session, step, 0, 1){};
  }
  EXPECT_FALSE(fs::exists(wp / "failures" / ".0002.json.99999.tmp"));
  EXPECT_TRUE(fs::exists(wp / "failures" / "0001.json"));
}

// A full disk: persisting fails at every snapshot, and the user hears of it once on stderr,
// not only in the journal; so does a resume that found nothing.
TEST(Workplace, FailingPersistenceAndAnEmptyResumeAreSaidOnceOnStderr) {
  const auto wp = fresh_dir();
  auto big = torch::zeros({1 << 20});  // 4 MB: above the file size limit below
  ::testing::internal::CaptureStderr();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()).persist(true).resume(true).snapshot_every(1));
    session.track("big", big);
    struct rlimit old {};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
    const auto previous = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = 1 << 20;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    DAIFU_GUARD(session, step, 0, 4) { big.add_(1); };
    ::setrlimit(RLIMIT_FSIZE, &old);
    ::signal(SIGXFSZ, previous);
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  const auto count = [&](const std::string& what) {
    std::size_t n = 0;
    for (auto at = err.find(what); at != std::string::npos; at = err.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("daifu: nothing to resume from in " + (wp / "snapshots").string()), 1u) << err;
  EXPECT_EQ(count("daifu: snapshots cannot be persisted"), 1u) << err;
  EXPECT_GE(events(wp, "persist_failed").size(), 2u);
}

}  // namespace workplace_test
