// The persistent snapshot file: a training-state snapshot, as an ordered list of named binary
// regions, kept in an mmap'ed file with two slots so that a process killed at any instant
// (SIGKILL included) leaves at least one complete, verified slot. Torch-free: bytes in, bytes
// out. Byte layout and commit protocol: docs/snapshot-file-format.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace daifu::detail {

/// One named binary region of a snapshot. A layout is an ordered list of them.
struct SnapshotRegion {
  std::string name;
  uint64_t bytes = 0;
};

/// 64-bit hash of a layout (names, sizes and order): equal hashes mean "the same model shapes".
uint64_t layout_hash(const std::vector<SnapshotRegion>& layout);

/// Writes snapshots of one layout into a two-slot file. Each commit goes to the slot that does
/// not hold the newest valid snapshot, so the newest survives until the next commit is whole.
/// Not thread-safe; movable, not copyable; the destructor unmaps and closes (no flush needed:
/// stores into the mapping are in the page cache and outlive the process).
///
/// Example:
///   auto file = SnapshotFile::open_for_write(wp / "snapshot.bin", {{"model.w", 400}, {"opt.m", 400}});
///   std::memcpy(file.region(0), w.data_ptr(), 400);
///   std::memcpy(file.region(1), m.data_ptr(), 400);
///   file.commit(step, /*durable=*/false);
class SnapshotFile {
 public:
  /// Opens `path` for writing snapshots of `layout`. A missing file, or one that holds another
  /// layout or cannot be read, is replaced by a fresh one (built beside it, then renamed over
  /// it); a file of this layout is reused and its valid slots kept. Space for both slots is
  /// allocated here (posix_fallocate), so a full disk fails here rather than with SIGBUS later.
  /// Throws daifu::Error naming the path on any I/O error.
  static SnapshotFile open_for_write(const std::filesystem::path& path, std::vector<SnapshotRegion> layout);

  SnapshotFile(SnapshotFile&& other) noexcept;
  SnapshotFile& operator=(SnapshotFile&& other) noexcept;
  SnapshotFile(const SnapshotFile&) = delete;
  SnapshotFile& operator=(const SnapshotFile&) = delete;
  ~SnapshotFile();

  /// Region i (layout()[i].bytes long, 64-byte aligned) in the slot the next commit makes
  /// newest. Stable until commit(). It holds whatever that slot held before (an older
  /// snapshot, or zeros): write every region in full before each commit.
  uint8_t* region(std::size_t i);

  /// Makes the write slot the newest: checksums the payload, then writes the slot header
  /// (sequence = newest + 1, `step`). A process killed at any instant before, during or after
  /// this call leaves a valid slot. `durable` also msyncs the payload before the header and the
  /// header after, so the commit survives a power loss once commit() returns (a guarantee that
  /// holds when every commit is durable: see the format doc). Throws
  /// daifu::Error when an msync fails; if the header's msync fails the commit is still visible
  /// to load_newest, only not known to be on disk.
  void commit(int64_t step, bool durable);

  /// Step of the newest valid slot; -1 when no slot is valid.
  int64_t newest_step() const noexcept { return newest_step_; }
  /// Sequence number of the newest valid slot (1 for the first commit of a file); 0 when none.
  uint64_t newest_sequence() const noexcept { return newest_sequence_; }
  /// The slot (0 or 1) that region() points into and the next commit writes.
  std::size_t write_slot() const noexcept { return write_slot_; }
  const std::vector<SnapshotRegion>& layout() const noexcept { return layout_; }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  SnapshotFile() = default;
  void release() noexcept;

  std::filesystem::path path_;
  std::vector<SnapshotRegion> layout_;
  std::vector<uint64_t> offsets_;  // of each region, from the start of a slot
  uint64_t slot_offset_ = 0;       // of slot 0, from the start of the file
  uint64_t slot_stride_ = 0;
  uint64_t hash_ = 0;
  int fd_ = -1;
  uint8_t* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  std::size_t write_slot_ = 0;
  uint64_t newest_sequence_ = 0;
  int64_t newest_step_ = -1;
};

/// A verified slot, read back for resuming.
struct LoadedSnapshot {
  int64_t step = -1;
  uint64_t sequence = 0;
  /// One buffer per region of the layout, in layout order.
  std::vector<std::vector<uint8_t>> regions;
};

/// Reads the newest slot of `path` whose header and payload checksums verify and whose layout
/// (names and sizes) equals `layout`, falling back to the older slot when the newest is torn or
/// corrupt. Returns std::nullopt (never a partial snapshot) with `*why_not` (if not null) saying
/// why: no file, truncated, not a snapshot file, another layout ("... region
/// 'model.fc1.weight' is 400 bytes here, 200 in the file"), no valid slot. Does not throw on
/// a bad file; a failed allocation still throws std::bad_alloc.
std::optional<LoadedSnapshot> load_newest(const std::filesystem::path& path,
                                          const std::vector<SnapshotRegion>& layout,
                                          std::string* why_not);

}  // namespace daifu::detail
