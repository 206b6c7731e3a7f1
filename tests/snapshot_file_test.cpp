// The persistent snapshot file: XXH64 against published vectors (and SHA-256, the patches'
// identity), round trips, slot rotation, fallback from a torn or corrupt newest slot, truncated
// and foreign files, re-initialization for another layout, a full disk, and processes SIGKILLed
// at random instants while committing.
#include "patch/sha256.h"
#include "snapshot/checksum.h"
#include "snapshot/snapshot_file.h"

#include <daifu/errors.h>

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>

#include "test_util.h"

namespace snapshot_file_test {

using daifu::detail::checksum64;
using daifu::detail::Checksum64;
using daifu::detail::load_newest;
using daifu::detail::LoadedSnapshot;
using daifu::detail::SnapshotFile;
using daifu::detail::SnapshotRegion;
using daifu::testing::fresh_dir;
using Layout = std::vector<SnapshotRegion>;

// The payload the tests write: every 8-byte word (the last one cut short) is a function of the
// step, the region and the word's index, so a region holding bytes of two steps is detected.
uint64_t pattern_word(int64_t step, std::size_t region, std::size_t index) {
  return static_cast<uint64_t>(step) * 1000003u + index + (static_cast<uint64_t>(region) << 40);
}

void fill(uint8_t* p, uint64_t n, int64_t step, std::size_t region) {
  for (uint64_t at = 0, j = 0; at < n; at += 8, ++j) {
    const uint64_t w = pattern_word(step, region, j);
    std::memcpy(p + at, &w, std::min<uint64_t>(8, n - at));
  }
}

// Offset of the first byte of `bytes` that is not the pattern of `step`; -1 when all are.
int64_t first_mismatch(const std::vector<uint8_t>& bytes, int64_t step, std::size_t region) {
  std::vector<uint8_t> expected(bytes.size());
  fill(expected.data(), expected.size(), step, region);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != expected[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

void fill_all(SnapshotFile& file, int64_t step) {
  for (std::size_t i = 0; i < file.layout().size(); ++i) fill(file.region(i), file.layout()[i].bytes, step, i);
}

void commit_step(SnapshotFile& file, int64_t step, bool durable = false) {
  fill_all(file, step);
  file.commit(step, durable);
}

void expect_pattern(const LoadedSnapshot& loaded, const Layout& layout) {
  ASSERT_EQ(loaded.regions.size(), layout.size());
  for (std::size_t i = 0; i < layout.size(); ++i) {
    ASSERT_EQ(loaded.regions[i].size(), layout[i].bytes) << layout[i].name;
    EXPECT_EQ(first_mismatch(loaded.regions[i], loaded.step, i), -1)
        << "region '" << layout[i].name << "' is not the pattern of step " << loaded.step;
  }
}

// Odd sizes on purpose: empty, shorter than a word, not a multiple of 8, across pages.
const Layout kLayout = {{"model.fc1.weight", 400}, {"model.fc1.bias", 3}, {"empty", 0}, {"optimizer.m", 70001}};

// snapshot.bin in a fresh folder of the running test.
std::filesystem::path snapshot_path() {
  const auto dir = fresh_dir();
  std::filesystem::create_directories(dir);
  return dir / "snapshot.bin";
}

// The header of the slot that region(0) points into: the payload starts one page after it.
uint8_t* slot_header_of(SnapshotFile& file) { return file.region(0) - 4096; }

TEST(SnapshotFileChecksum, MatchesPublishedXxh64Vectors) {
  EXPECT_EQ(checksum64("", 0), 0xEF46DB3751D8E999ULL);
  EXPECT_EQ(checksum64("a", 1), 0xD24EC4F1A98C6E5BULL);
  EXPECT_EQ(checksum64("abc", 3), 0x44BC2CF5AD770999ULL);
  // xxHash's sanity-check buffer: byte i is the top byte of 2654435761 * 11400714785074694797^i.
  std::vector<uint8_t> buffer(2367);
  uint64_t gen = 2654435761ULL;
  for (auto& b : buffer) {
    b = static_cast<uint8_t>(gen >> 56);
    gen *= 11400714785074694797ULL;
  }
  const uint64_t prime = 2654435761ULL;
  struct Vector {
    std::size_t n;
    uint64_t seed, hash;
  };
  for (const Vector& v : {Vector{0, 0, 0xEF46DB3751D8E999ULL}, Vector{0, prime, 0xAC75FDA2929B17EFULL},
                          Vector{1, 0, 0xE934A84ADB052768ULL}, Vector{1, prime, 0x5014607643A9B4C3ULL},
                          Vector{4, 0, 0x9136A0DCA57457EEULL}, Vector{14, 0, 0x8282DCC4994E35C8ULL},
                          Vector{14, prime, 0xC3BD6BF63DEB6DF0ULL}, Vector{222, 0, 0xB641AE8CB691C174ULL},
                          Vector{222, prime, 0x20CB8AB7AE10C14AULL}, Vector{2367, 0, 0xA82418DDEC0EA581ULL},
                          Vector{2367, prime, 0xA36A93C18052673AULL}}) {
    EXPECT_EQ(checksum64(buffer.data(), v.n, v.seed), v.hash) << "length " << v.n << ", seed " << v.seed;
  }
}

TEST(Sha256, MatchesTheFips180Vectors) {
  using daifu::detail::sha256_hex;
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(SnapshotFileChecksum, PiecesHashLikeTheWhole) {
  std::vector<uint8_t> data(5000);
  std::mt19937_64 rng(42);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  for (std::size_t n : {0, 1, 31, 32, 33, 100, 5000}) {
    for (int trial = 0; trial < 20; ++trial) {
      Checksum64 sum(7);
      std::size_t at = 0;
      while (at < n) {
        const std::size_t piece = std::min<std::size_t>(n - at, rng() % 70);
        sum.update(data.data() + at, piece);
        at += piece;
      }
      EXPECT_EQ(sum.digest(), checksum64(data.data(), n, 7)) << "length " << n;
    }
  }
}

TEST(SnapshotFile, LayoutHashDependsOnNamesSizesAndOrder) {
  using daifu::detail::layout_hash;
  const Layout a = {{"w", 8}, {"b", 4}};
  EXPECT_EQ(layout_hash(a), layout_hash(Layout{{"w", 8}, {"b", 4}}));
  EXPECT_NE(layout_hash(a), layout_hash(Layout{{"b", 4}, {"w", 8}}));
  EXPECT_NE(layout_hash(a), layout_hash(Layout{{"w", 8}, {"b", 5}}));
  EXPECT_NE(layout_hash(a), layout_hash(Layout{{"w", 8}, {"c", 4}}));
  EXPECT_NE(layout_hash(Layout{{"ab", 1}, {"c", 1}}), layout_hash(Layout{{"a", 1}, {"bc", 1}}));
}

TEST(SnapshotFile, RoundTripsSeveralRegions) {
  const auto path = snapshot_path();
  auto file = SnapshotFile::open_for_write(path, kLayout);
  EXPECT_EQ(file.newest_step(), -1);
  for (std::size_t i = 0; i < kLayout.size(); ++i) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(file.region(i)) % 64, 0u) << kLayout[i].name;
  }
  std::vector<std::vector<uint8_t>> written;
  std::mt19937_64 rng(1);
  for (std::size_t i = 0; i < kLayout.size(); ++i) {
    written.emplace_back(kLayout[i].bytes);
    for (auto& b : written.back()) b = static_cast<uint8_t>(rng());
    std::copy(written.back().begin(), written.back().end(), file.region(i));
  }
  file.commit(7, false);
  EXPECT_EQ(file.newest_step(), 7);

  std::string why;
  const auto loaded = load_newest(path, kLayout, &why);
  ASSERT_TRUE(loaded) << why;
  EXPECT_EQ(loaded->step, 7);
  EXPECT_EQ(loaded->sequence, 1u);
  EXPECT_EQ(loaded->regions, written);
}

TEST(SnapshotFile, NewestOfTwoCommitsWins) {
  const auto path = snapshot_path();
  auto file = SnapshotFile::open_for_write(path, kLayout);
  commit_step(file, 10);
  commit_step(file, 11);
  std::string why;
  const auto loaded = load_newest(path, kLayout, &why);
  ASSERT_TRUE(loaded) << why;
  EXPECT_EQ(loaded->step, 11);
  EXPECT_EQ(loaded->sequence, 2u);
  expect_pattern(*loaded, kLayout);
}

TEST(SnapshotFile, SequenceAlternatesSlots) {
  const auto path = snapshot_path();
  auto file = SnapshotFile::open_for_write(path, kLayout);
  uint8_t* const first = file.region(0);
  for (int64_t step = 0; step < 6; ++step) {
    EXPECT_EQ(file.write_slot(), static_cast<std::size_t>(step % 2));
    EXPECT_EQ(file.region(0) == first, step % 2 == 0);
    commit_step(file, step);
    EXPECT_EQ(file.newest_sequence(), static_cast<uint64_t>(step + 1));
    EXPECT_EQ(file.newest_step(), step);
    const auto loaded = load_newest(path, kLayout, nullptr);
    ASSERT_TRUE(loaded);
    EXPECT_EQ(loaded->sequence, static_cast<uint64_t>(step + 1));
    EXPECT_EQ(loaded->step, step);
  }
}

TEST(SnapshotFile, CorruptPayloadInNewestFallsBackToOlder) {
  const auto path = snapshot_path();
  auto file = SnapshotFile::open_for_write(path, kLayout);
  commit_step(file, 1);
  uint8_t* newest = file.region(3);
  commit_step(file, 2);
  newest[12345] ^= 0x10;  // a bit flip in the newest slot's payload, through the shared mapping

  std::string why;
  const auto loaded = load_newest(path, kLayout, &why);
  ASSERT_TRUE(loaded) << why;
  EXPECT_EQ(loaded->step, 1);
  EXPECT_EQ(loaded->sequence, 1u);
  expect_pattern(*loaded, kLayout);
}

TEST(SnapshotFile, TornNewestHeaderFallsBackToOlder) {
  const auto path = snapshot_path();
  auto file = SnapshotFile::open_for_write(path, kLayout);
  commit_step(file, 1);
  uint8_t* newest_header = slot_header_of(file);
  commit_step(file, 2);
  newest_header[30] ^= 0x01;  // the sequence field, as if the header store were cut short

  std::string why;
  const auto loaded = load_newest(path, kLayout, &why);
  ASSERT_TRUE(loaded) << why;
  EXPECT_EQ(loaded->step, 1);
  expect_pattern(*loaded, kLayout);
}

TEST(SnapshotFile, BothSlotsCorruptLoadsNothing) {
  const auto path = snapshot_path();
  auto file = SnapshotFile::open_for_write(path, kLayout);
  commit_step(file, 1);
  uint8_t* older = file.region(0);
  commit_step(file, 2);
  uint8_t* newest = file.region(0);
  older[0] ^= 1;
  newest[399] ^= 1;

  std::string why;
  EXPECT_FALSE(load_newest(path, kLayout, &why));
  EXPECT_NE(why.find(path.string()), std::string::npos) << why;
  EXPECT_NE(why.find("no valid slot"), std::string::npos) << why;
  EXPECT_NE(why.find("slot 0: payload checksum mismatch"), std::string::npos) << why;
  EXPECT_NE(why.find("slot 1: payload checksum mismatch"), std::string::npos) << why;
}

TEST(SnapshotFile, NeverCommittedFileLoadsNothing) {
  const auto path = snapshot_path();
  auto file = SnapshotFile::open_for_write(path, kLayout);
  std::string why;
  EXPECT_FALSE(load_newest(path, kLayout, &why));
  EXPECT_NE(why.find("slot 0: never written; slot 1: never written"), std::string::npos) << why;
}

TEST(SnapshotFile, TruncatedFileLoadsNothing) {
  const auto path = snapshot_path();
  {
    auto file = SnapshotFile::open_for_write(path, kLayout);
    commit_step(file, 1);
    commit_step(file, 2);
  }
  const auto full = std::filesystem::file_size(path);
  std::string why;

  std::filesystem::resize_file(path, full - 4096);  // the end of slot 1's payload: slot 0 still loads
  auto loaded = load_newest(path, kLayout, &why);
  ASSERT_TRUE(loaded) << why;
  EXPECT_EQ(loaded->step, 1);

  std::filesystem::resize_file(path, 4096 + 2000);  // into slot 0's payload
  EXPECT_FALSE(load_newest(path, kLayout, &why));
  EXPECT_NE(why.find("truncated"), std::string::npos) << why;
  EXPECT_NE(why.find(path.string()), std::string::npos) << why;

  std::filesystem::resize_file(path, 10);
  EXPECT_FALSE(load_newest(path, kLayout, &why));
  EXPECT_NE(why.find("is truncated"), std::string::npos) << why;

  std::filesystem::resize_file(path, 0);
  EXPECT_FALSE(load_newest(path, kLayout, &why));
  EXPECT_NE(why.find("is truncated"), std::string::npos) << why;
}

TEST(SnapshotFile, MissingOrForeignFileLoadsNothing) {
  const auto path = snapshot_path();
  std::string why;
  EXPECT_FALSE(load_newest(path, kLayout, &why));
  EXPECT_NE(why.find("does not exist"), std::string::npos) << why;

  std::ofstream(path) << std::string(100000, 'x');
  EXPECT_FALSE(load_newest(path, kLayout, &why));
  EXPECT_NE(why.find("not a daifu snapshot file"), std::string::npos) << why;
}

TEST(SnapshotFile, CorruptLayoutBlockLoadsNothing) {
  const auto path = snapshot_path();
  {
    auto file = SnapshotFile::open_for_write(path, kLayout);
    commit_step(file, 1);
  }
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(64 + 24);  // the first region's name
  io.put('M');
  io.close();
  std::string why;
  EXPECT_FALSE(load_newest(path, kLayout, &why));
  EXPECT_NE(why.find("corrupt file header"), std::string::npos) << why;
}

TEST(SnapshotFile, DifferentLayoutLoadsNothingAndNamesTheRegion) {
  const auto path = snapshot_path();
  const Layout small = {{"model.fc1.weight", 200}, {"model.fc1.bias", 3}};
  {
    auto file = SnapshotFile::open_for_write(path, small);
    commit_step(file, 5);
  }
  std::string why;
  EXPECT_FALSE(load_newest(path, Layout{{"model.fc1.weight", 400}, {"model.fc1.bias", 3}}, &why));
  EXPECT_NE(why.find("was taken for a different model: region 'model.fc1.weight' is 400 bytes here, 200 in the file"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find(path.string()), std::string::npos) << why;

  EXPECT_FALSE(load_newest(path, Layout{{"model.fc1.weight", 200}, {"model.fc2.bias", 3}}, &why));
  EXPECT_NE(why.find("region #1 is 'model.fc2.bias' here, 'model.fc1.bias' in the file"), std::string::npos) << why;

  EXPECT_FALSE(load_newest(path, Layout{{"model.fc1.weight", 200}}, &why));
  EXPECT_NE(why.find("1 regions here, 2 in the file"), std::string::npos) << why;

  EXPECT_FALSE(load_newest(path, Layout{small[0], small[1], {"model.fc2.weight", 8}}, &why));
  EXPECT_NE(why.find("'model.fc2.weight' is not in the file"), std::string::npos) << why;

  const auto loaded = load_newest(path, small, &why);
  ASSERT_TRUE(loaded) << why;
  EXPECT_EQ(loaded->step, 5);
}

TEST(SnapshotFile, OpenForWriteOverAnotherLayoutReinitializes) {
  const auto path = snapshot_path();
  const Layout other = {{"model.fc1.weight", 200}};
  {
    auto file = SnapshotFile::open_for_write(path, other);
    commit_step(file, 3);
    commit_step(file, 4);
  }
  auto file = SnapshotFile::open_for_write(path, kLayout);
  EXPECT_EQ(file.newest_step(), -1);
  EXPECT_EQ(file.newest_sequence(), 0u);
  std::string why;
  EXPECT_FALSE(load_newest(path, other, &why));
  EXPECT_NE(why.find("different model"), std::string::npos) << why;
  EXPECT_FALSE(load_newest(path, kLayout, &why));
  EXPECT_NE(why.find("never written"), std::string::npos) << why;

  commit_step(file, 9);
  const auto loaded = load_newest(path, kLayout, &why);
  ASSERT_TRUE(loaded) << why;
  EXPECT_EQ(loaded->step, 9);
  EXPECT_EQ(loaded->sequence, 1u);
  expect_pattern(*loaded, kLayout);
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp"));
}

TEST(SnapshotFile, OpenForWriteOverGarbageReinitializes) {
  const auto path = snapshot_path();
  std::ofstream(path) << "not a snapshot";
  auto file = SnapshotFile::open_for_write(path, kLayout);
  commit_step(file, 1);
  const auto loaded = load_newest(path, kLayout, nullptr);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->step, 1);
}

TEST(SnapshotFile, ReopenKeepsNewestValidSlotAndOverwritesTheOther) {
  const auto path = snapshot_path();
  {
    auto file = SnapshotFile::open_for_write(path, kLayout);
    commit_step(file, 1);
    commit_step(file, 2);
  }
  {
    auto file = SnapshotFile::open_for_write(path, kLayout);
    EXPECT_EQ(file.newest_step(), 2);
    EXPECT_EQ(file.newest_sequence(), 2u);
    EXPECT_EQ(file.write_slot(), 0u);  // slot 0 holds step 1, the older
    commit_step(file, 3);  // into slot 0
    EXPECT_EQ(file.newest_sequence(), 3u);
    uint8_t* slot1 = file.region(0);
    commit_step(file, 4);  // into slot 1
    slot1[0] ^= 1;         // step 4 is corrupt: a reopen must keep step 3 and write over slot 1
  }
  auto file = SnapshotFile::open_for_write(path, kLayout);
  EXPECT_EQ(file.newest_step(), 3);
  EXPECT_EQ(file.write_slot(), 1u);
  commit_step(file, 5);
  const auto loaded = load_newest(path, kLayout, nullptr);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->step, 5);
  EXPECT_EQ(loaded->sequence, 4u);
  expect_pattern(*loaded, kLayout);
}

TEST(SnapshotFile, DurableCommitRoundTrips) {
  const auto path = snapshot_path();
  auto file = SnapshotFile::open_for_write(path, kLayout);
  commit_step(file, 1, true);
  commit_step(file, 2, true);
  const auto loaded = load_newest(path, kLayout, nullptr);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->step, 2);
  expect_pattern(*loaded, kLayout);
}

TEST(SnapshotFile, MovedFileKeepsWriting) {
  const auto path = snapshot_path();
  auto first = SnapshotFile::open_for_write(path, kLayout);
  commit_step(first, 1);
  SnapshotFile second = std::move(first);
  commit_step(second, 2);
  auto third = SnapshotFile::open_for_write(path.parent_path() / "other.bin", {{"x", 8}});
  third = std::move(second);
  commit_step(third, 3);
  EXPECT_EQ(third.newest_step(), 3);
  const auto loaded = load_newest(path, kLayout, nullptr);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->step, 3);
}

TEST(SnapshotFile, UnwritableFileIsAnErrorNamingThePath) {
  const auto path = snapshot_path();
  const auto missing_dir = path.parent_path() / "no" / "such" / "dir" / "snapshot.bin";
  try {
    SnapshotFile::open_for_write(missing_dir, kLayout);
    FAIL() << "open_for_write succeeded in a missing folder";
  } catch (const daifu::Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing_dir.string()), std::string::npos) << e.what();
  }
}

// A full disk, simulated with RLIMIT_FSIZE in a child process: posix_fallocate fails, and
// open_for_write throws daifu::Error naming the path instead of crashing later with SIGBUS.
TEST(SnapshotFile, AllocationFailureIsAnErrorNamingThePath) {
  const auto path = snapshot_path();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{1 << 20, 1 << 20};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    int code = 1;  // no exception
    try {
      SnapshotFile::open_for_write(path, {{"big", 8 << 20}});
    } catch (const daifu::Error& e) {
      const std::string what = e.what();
      code = what.find(path.string()) != std::string::npos && what.find("cannot allocate") != std::string::npos ? 0 : 2;
      if (code != 0) std::fprintf(stderr, "unexpected message: %s\n", e.what());
    } catch (...) {
      code = 3;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no exception, 2: a message without the path, 3: another exception";
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp"));
}

// A child commits snapshots in a loop; the parent SIGKILLs it at a random instant (including
// while it creates or reopens the file). Whatever instant that was, the newest loadable slot
// must be whole: every byte the pattern of its step, and its step the last one whose commit()
// returned, or the one after it.
TEST(SnapshotFile, KillAtAnyInstantLeavesACompleteSlot) {
  const auto path = snapshot_path();
  const Layout layout = {{"model.w", 300001}, {"model.b", 7}, {"optimizer.state", (1 << 20) + 13}};
  auto* last_committed = static_cast<std::atomic<int64_t>*>(
      ::mmap(nullptr, sizeof(std::atomic<int64_t>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(last_committed, MAP_FAILED);

  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  constexpr int kRepetitions = 20;
  std::vector<int> delays_us;
  for (int rep = 0; rep < kRepetitions; ++rep) delays_us.push_back(rep * 50000 / (kRepetitions - 1));
  std::shuffle(delays_us.begin(), delays_us.end(), rng);

  int64_t previous_newest = -1;  // in the file as the repetition starts
  int64_t commits_min = INT64_MAX, commits_max = 0;
  for (int rep = 0; rep < kRepetitions; ++rep) {
    if (rep % 4 == 0) {  // sometimes a fresh file, to kill the creation too
      std::filesystem::remove(path);
      previous_newest = -1;
    }
    const int64_t base = int64_t{rep} * 1000000;  // steps unique across repetitions
    last_committed->store(-1);
    const int delay_us = delays_us[rep] + static_cast<int>(rng() % 1000);
    SCOPED_TRACE("repetition " + std::to_string(rep) + ", kill after " + std::to_string(delay_us) + " us");

    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::alarm(20);  // never outlive a parent that failed to kill us
      try {
        auto file = SnapshotFile::open_for_write(path, layout);
        for (int64_t step = base;; ++step) {
          commit_step(file, step);
          last_committed->store(step);
        }
      } catch (...) {
      }
      ::_exit(3);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the child exited by itself";

    const int64_t last = last_committed->load();
    std::string why;
    const auto loaded = load_newest(path, layout, &why);
    if (last >= base) {
      ASSERT_TRUE(loaded) << why;
      EXPECT_TRUE(loaded->step == last || loaded->step == last + 1)
          << "loaded step " << loaded->step << ", last committed " << last;
      commits_min = std::min(commits_min, last - base + 1);
      commits_max = std::max(commits_max, last - base + 1);
    } else if (loaded) {  // killed before its first commit() returned
      EXPECT_TRUE(loaded->step == previous_newest || loaded->step == base)
          << "loaded step " << loaded->step << ", before this repetition " << previous_newest;
    } else {
      EXPECT_EQ(previous_newest, -1) << why;
    }
    if (loaded) {
      expect_pattern(*loaded, layout);
      previous_newest = loaded->step;
    }
  }
  ::munmap(last_committed, sizeof(std::atomic<int64_t>));
  std::cout << "[ info ] commits completed before the kill: " << commits_min << " to " << commits_max << "\n";
}

}  // namespace snapshot_file_test
