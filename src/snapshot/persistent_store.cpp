#include "snapshot/persistent_store.h"

#include <daifu/errors.h>

#include "core/durable_file.h"
#include "core/regular_file.h"

#include <cstdio>
#include <sstream>

namespace daifu::detail {
namespace {

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::filesystem::path bin_path(const std::filesystem::path& dir, uint64_t hash) {
  return dir / ("snapshot-" + hex(hash) + ".bin");
}

std::filesystem::path layout_path(const std::filesystem::path& dir, uint64_t hash) {
  return dir / ("snapshot-" + hex(hash) + ".layout");
}

// One line per region: "<bytes> <name>".
void write_layout(const std::filesystem::path& path, const std::vector<SnapshotRegion>& layout) {
  std::ostringstream text;
  for (const auto& r : layout) text << r.bytes << ' ' << r.name << '\n';
  try {
    write_file_atomically(path, text.str());
  } catch (const std::exception& e) {
    throw Error(std::string("daifu: snapshot layout: ") + e.what());
  }
}

std::optional<std::vector<SnapshotRegion>> read_layout(const std::filesystem::path& path) {
  constexpr std::size_t kMaxLayoutBytes = 64u << 20;
  const auto text = read_regular_file(path, kMaxLayoutBytes);
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::vector<SnapshotRegion> layout;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    SnapshotRegion r;
    if (!(fields >> r.bytes) || fields.get() != ' ' || !std::getline(fields, r.name) || r.name.empty()) {
      return std::nullopt;
    }
    layout.push_back(std::move(r));
  }
  if (layout.empty()) return std::nullopt;
  return layout;
}

}  // namespace

PersistentStore::PersistentStore(std::filesystem::path dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) throw Error("daifu: cannot create snapshot folder " + dir_.string() + ": " + ec.message());
}

void PersistentStore::write(const std::vector<SnapshotRegion>& layout,
                            const std::function<void(std::size_t, uint8_t*)>& fill, int64_t step, bool durable) {
  const uint64_t hash = layout_hash(layout);
  const bool switching = !file_ || hash != hash_;
  if (switching) {
    write_layout(layout_path(dir_, hash), layout);
    file_.emplace(SnapshotFile::open_for_write(bin_path(dir_, hash), layout));
    hash_ = hash;
  }
  for (std::size_t i = 0; i < layout.size(); ++i) fill(i, file_->region(i));
  file_->commit(step, durable);
  if (!switching) return;
  // The new file holds a verified snapshot now: the files of older layouts can go.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const auto name = entry.path().filename().string();
    const bool ours = name == bin_path(dir_, hash).filename().string() || name == layout_path(dir_, hash).filename().string();
    // An older layout's files, and temporaries a killed process left (".snapshot-...tmp").
    if (!ours && (name.rfind("snapshot-", 0) == 0 || name.rfind(".snapshot-", 0) == 0)) {
      std::filesystem::remove(entry.path(), ec);
    }
  }
}

std::optional<PersistentStore::Found> PersistentStore::load(const std::filesystem::path& dir, std::string* why_not) {
  std::optional<Found> best;
  std::string reasons;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".layout") continue;
    auto bin = entry.path();
    bin.replace_extension(".bin");
    const auto layout = read_layout(entry.path());
    if (!layout) {
      reasons += (reasons.empty() ? "" : "; ") + entry.path().string() + ": unreadable layout";
      continue;
    }
    std::string why;
    auto loaded = load_newest(bin, *layout, &why);
    if (!loaded) {
      reasons += (reasons.empty() ? "" : "; ") + why;
      continue;
    }
    if (!best || loaded->step > best->snapshot.step) best = Found{*layout, std::move(*loaded), bin};
  }
  if (!best && why_not != nullptr) {
    *why_not = reasons.empty() ? "no snapshot in " + dir.string() : reasons;
  }
  return best;
}

}  // namespace daifu::detail
