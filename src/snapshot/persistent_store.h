// Persistent snapshots in a folder (<workplace>/snapshots): one two-slot SnapshotFile per
// layout, snapshot-<hash>.bin, beside its layout, snapshot-<hash>.layout. When the layout
// changes (an optimizer grew state, a layer was replaced) the new file is written and
// committed before the old one is removed, so a process killed at any instant leaves a
// complete, verified snapshot behind from its first commit on.
#pragma once

#include "snapshot/snapshot_file.h"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace daifu::detail {

class PersistentStore {
 public:
  /// Creates `dir` if needed; throws daifu::Error if it cannot.
  explicit PersistentStore(std::filesystem::path dir);

  /// Writes one snapshot of `layout`: fill(i, region) must fill region i in full.
  void write(const std::vector<SnapshotRegion>& layout, const std::function<void(std::size_t, uint8_t*)>& fill,
             int64_t step, bool durable);

  struct Found {
    std::vector<SnapshotRegion> layout;
    LoadedSnapshot snapshot;
    std::filesystem::path file;
  };
  /// The newest valid snapshot in `dir` (by step), or std::nullopt with `*why_not` saying why
  /// (no snapshot yet; or, for each file, why it was refused).
  static std::optional<Found> load(const std::filesystem::path& dir, std::string* why_not);

  const std::filesystem::path& dir() const noexcept { return dir_; }

 private:
  std::filesystem::path dir_;
  std::optional<SnapshotFile> file_;
  uint64_t hash_ = 0;
};

}  // namespace daifu::detail
