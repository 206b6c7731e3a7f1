#include "snapshot/snapshot_file.h"

#include "core/durable_file.h"
#include "core/regular_file.h"
#include "snapshot/checksum.h"

#include <daifu/errors.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <utility>

namespace daifu::detail {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the snapshot file format is little-endian");

// See docs/snapshot-file-format.md for what each constant means in the file.
constexpr char kFileMagic[8] = {'D', 'A', 'I', 'F', 'U', 'S', 'N', 'P'};
constexpr char kSlotMagic[8] = {'D', 'A', 'I', 'F', 'U', 'S', 'L', 'T'};
constexpr uint32_t kFormatVersion = 1;
constexpr std::size_t kFileHeaderBytes = 64;
constexpr std::size_t kSlotHeaderBytes = 64;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kPayloadOffset = kPage;  // of a slot's first region, from the slot's start
constexpr uint64_t kRegionAlign = 64;
constexpr uint64_t kMaxFileBytes = uint64_t{1} << 56;  // far beyond any real state; no overflow below it
constexpr uint64_t kMaxLayoutBlockBytes = uint64_t{1} << 30;
constexpr uint64_t kLayoutHashSeed = 0x6461696675;  // "daifu"

using HeaderBytes = std::array<uint8_t, 64>;

uint64_t round_up(uint64_t x, uint64_t to) { return (x + to - 1) / to * to; }

void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t get32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

std::string errno_text(int err) { return err == 0 ? "unexpected end of file" : std::strerror(err); }

// Where everything of a layout lies in the file, and the bytes of its file header and layout
// block. A pure function of the layout: a file is reused only when its first bytes equal these.
struct Plan {
  std::vector<uint64_t> offsets;  // of each region, from the start of a slot
  uint64_t hash = 0;
  uint64_t payload_bytes = 0;  // sum of the region sizes
  uint64_t payload_end = 0;    // end of the last region, from the start of a slot
  uint64_t slot_offset = 0;
  uint64_t slot_stride = 0;
  uint64_t total_bytes = 0;
  std::vector<uint8_t> prefix;  // file header + layout block
};

Plan make_plan(const std::vector<SnapshotRegion>& layout, const std::filesystem::path& path) {
  Plan plan;
  plan.hash = layout_hash(layout);
  uint64_t end = kPayloadOffset;
  uint64_t block_bytes = 0;
  for (const auto& r : layout) {
    if (r.bytes > kMaxFileBytes || end > kMaxFileBytes) {
      throw Error("snapshot file " + path.string() + ": the layout is too large (region '" + r.name + "')");
    }
    end = round_up(end, kRegionAlign);
    plan.offsets.push_back(end);
    end += r.bytes;
    plan.payload_bytes += r.bytes;
    block_bytes += 24 + round_up(r.name.size(), 8);
  }
  plan.payload_end = end;
  plan.slot_stride = round_up(end, kPage);
  plan.slot_offset = round_up(kFileHeaderBytes + block_bytes, kPage);
  plan.total_bytes = plan.slot_offset + 2 * plan.slot_stride;
  if (plan.total_bytes > kMaxFileBytes) throw Error("snapshot file " + path.string() + ": the layout is too large");

  plan.prefix.assign(kFileHeaderBytes + block_bytes, 0);
  uint8_t* h = plan.prefix.data();
  std::memcpy(h, kFileMagic, 8);
  put32(h + 8, kFormatVersion);
  put32(h + 12, kFileHeaderBytes);
  put64(h + 16, plan.hash);
  put64(h + 24, layout.size());
  put64(h + 32, block_bytes);
  put64(h + 40, plan.slot_offset);
  put64(h + 48, plan.slot_stride);
  uint8_t* e = h + kFileHeaderBytes;
  for (std::size_t i = 0; i < layout.size(); ++i) {
    put64(e, layout[i].bytes);
    put64(e + 8, plan.offsets[i]);
    put32(e + 16, static_cast<uint32_t>(layout[i].name.size()));
    std::memcpy(e + 24, layout[i].name.data(), layout[i].name.size());
    e += 24 + round_up(layout[i].name.size(), 8);
  }
  Checksum64 sum;
  sum.update(h, 56);
  sum.update(h + kFileHeaderBytes, block_bytes);
  put64(h + 56, sum.digest());
  return plan;
}

struct StoredRegion {
  std::string name;
  uint64_t bytes = 0;
};

// Parses a layout block whose checksum has been verified; false when it is malformed anyway.
bool parse_layout_block(const uint8_t* p, std::size_t n, uint64_t count, std::vector<StoredRegion>* out) {
  std::size_t at = 0;
  for (uint64_t i = 0; i < count; ++i) {
    if (n - at < 24) return false;
    const uint64_t bytes = get64(p + at);
    const uint32_t name_len = get32(p + at + 16);
    if (n - at - 24 < name_len) return false;
    out->push_back({std::string(reinterpret_cast<const char*>(p + at + 24), name_len), bytes});
    at += 24 + round_up(name_len, 8);
    if (at > n) return false;
  }
  return true;
}

// Empty when the layouts are equal; else the first difference, for the user.
std::string layout_difference(const std::vector<StoredRegion>& file, const std::vector<SnapshotRegion>& here) {
  const std::size_t common = std::min(file.size(), here.size());
  for (std::size_t i = 0; i < common; ++i) {
    if (file[i].name != here[i].name) {
      return "region #" + std::to_string(i) + " is '" + here[i].name + "' here, '" + file[i].name + "' in the file";
    }
    if (file[i].bytes != here[i].bytes) {
      return "region '" + here[i].name + "' is " + std::to_string(here[i].bytes) + " bytes here, " +
             std::to_string(file[i].bytes) + " in the file";
    }
  }
  if (file.size() == here.size()) return "";
  const std::string first_extra = here.size() > file.size() ? "'" + here[common].name + "' is not in the file"
                                                             : "the file's '" + file[common].name + "' is not here";
  return "there are " + std::to_string(here.size()) + " regions here, " + std::to_string(file.size()) +
         " in the file (" + first_extra + ")";
}

struct SlotHeader {
  uint64_t sequence = 0;
  int64_t step = -1;
  uint64_t payload_checksum = 0;
};

HeaderBytes encode_slot_header(std::size_t slot, uint64_t layout_hash, uint64_t payload_bytes, const SlotHeader& s) {
  HeaderBytes h{};
  std::memcpy(h.data(), kSlotMagic, 8);
  put32(h.data() + 8, kFormatVersion);
  put32(h.data() + 12, static_cast<uint32_t>(slot));
  put64(h.data() + 16, layout_hash);
  put64(h.data() + 24, s.sequence);
  put64(h.data() + 32, static_cast<uint64_t>(s.step));
  put64(h.data() + 40, payload_bytes);
  put64(h.data() + 48, s.payload_checksum);
  put64(h.data() + 56, checksum64(h.data(), 56));
  return h;
}

// Empty when `h` is an intact header of slot `slot` of this layout (its payload unchecked).
std::string check_slot_header(const uint8_t* h, std::size_t slot, const Plan& plan, SlotHeader* out) {
  if (std::all_of(h, h + kSlotHeaderBytes, [](uint8_t b) { return b == 0; })) return "never written";
  if (std::memcmp(h, kSlotMagic, 8) != 0) return "no slot header (bad magic)";
  if (get64(h + 56) != checksum64(h, 56)) return "header checksum mismatch (torn or corrupt header)";
  if (get32(h + 8) != kFormatVersion) return "format version " + std::to_string(get32(h + 8));
  if (get32(h + 12) != slot || get64(h + 16) != plan.hash || get64(h + 40) != plan.payload_bytes) {
    return "header belongs to another slot or layout";
  }
  if (get64(h + 24) == 0) return "sequence 0";
  out->sequence = get64(h + 24);
  out->step = static_cast<int64_t>(get64(h + 32));
  out->payload_checksum = get64(h + 48);
  return "";
}

// Reads exactly n bytes at `offset`; false with errno set (0 at end of file) otherwise.
bool read_at(int fd, void* buf, std::size_t n, uint64_t offset) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (got == 0) errno = 0;
      return false;
    }
    p += got, n -= static_cast<std::size_t>(got), offset += static_cast<uint64_t>(got);
  }
  return true;
}

bool write_at(int fd, const void* buf, std::size_t n, uint64_t offset) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    const ssize_t put = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) return false;
    p += put, n -= static_cast<std::size_t>(put), offset += static_cast<uint64_t>(put);
  }
  return true;
}

// True when the open file `fd` starts with `plan`'s header and layout block and is long enough.
bool file_matches(int fd, const Plan& plan) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < plan.total_bytes) return false;
  std::vector<uint8_t> prefix(plan.prefix.size());
  return read_at(fd, prefix.data(), prefix.size(), 0) && prefix == plan.prefix;
}

// msync()s [p, p + n) (rounded out to whole pages); throws on failure.
void sync_range(uint8_t* p, std::size_t n, const std::filesystem::path& path, const char* what) {
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + n;
  if (::msync(reinterpret_cast<void*>(begin), end - begin, MS_SYNC) != 0) {
    throw Error("snapshot file " + path.string() + ": cannot write the " + what + " to disk (msync: " +
                errno_text(errno) + ")");
  }
}

// Reserves every block of the file now, so that a full disk fails here with a clear message
// instead of raising SIGBUS at the first store into the mapping.
void allocate(int fd, const Plan& plan, const std::filesystem::path& path) {
  // posix_fallocate returns the error instead of setting errno.
  if (const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(plan.total_bytes)); err != 0) {
    throw Error("cannot allocate " + std::to_string(plan.total_bytes) + " bytes for the snapshot file " +
                path.string() + ": " + errno_text(err) + " (free disk space, or turn persistent snapshots off)");
  }
}

// Builds a fresh file of `plan` beside `path` and renames it over `path`: a process killed
// meanwhile leaves the old file (or none), never a half-initialized one. Returns the open fd.
int create_fresh(const std::filesystem::path& path, const Plan& plan) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  // A killed writer's temporary goes; O_EXCL and O_NOFOLLOW: never a file a link points to.
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error("cannot create the snapshot file " + path.string() + " (as " + tmp.string() +
                "): " + errno_text(errno));
  }
  auto fail = [&](const std::string& what) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(what);
  };
  try {
    allocate(fd, plan, path);
  } catch (const Error& e) {
    fail(e.what());
  }
  if (!write_at(fd, plan.prefix.data(), plan.prefix.size(), 0)) {
    fail("cannot write the snapshot file " + tmp.string() + ": " + errno_text(errno));
  }
  if (::fsync(fd) != 0) fail("cannot write the snapshot file " + tmp.string() + ": " + errno_text(errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    fail("cannot rename " + tmp.string() + " to " + path.string() + ": " + errno_text(errno));
  }
  sync_directory(path.parent_path());
  return fd;
}

}  // namespace

uint64_t layout_hash(const std::vector<SnapshotRegion>& layout) {
  Checksum64 sum(kLayoutHashSeed);
  const uint64_t count = layout.size();
  sum.update(&count, 8);
  for (const auto& r : layout) {
    const uint64_t name_len = r.name.size();
    sum.update(&name_len, 8);
    sum.update(r.name.data(), r.name.size());
    sum.update(&r.bytes, 8);
  }
  return sum.digest();
}

SnapshotFile SnapshotFile::open_for_write(const std::filesystem::path& path, std::vector<SnapshotRegion> layout) {
  const Plan plan = make_plan(layout, path);
  SnapshotFile file;
  file.path_ = path;
  file.layout_ = std::move(layout);
  file.offsets_ = plan.offsets;
  file.slot_offset_ = plan.slot_offset;
  file.slot_stride_ = plan.slot_stride;
  file.hash_ = plan.hash;

  std::string why;
  file.fd_ = open_regular_file(path, O_RDWR, 0, &why);
  if (file.fd_ < 0 && errno != ENOENT) throw Error("the snapshot file " + path.string() + " " + why);
  const bool reuse = file.fd_ >= 0 && file_matches(file.fd_, plan);
  if (reuse) {
    allocate(file.fd_, plan, path);  // a sparse copy may have holes
  } else {
    if (file.fd_ >= 0) ::close(file.fd_);
    file.fd_ = -1;
    file.fd_ = create_fresh(path, plan);
  }

  // MAP_POPULATE: take most page faults here rather than in the first commits.
  void* map = ::mmap(nullptr, plan.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, file.fd_, 0);
  if (map == MAP_FAILED) {
    throw Error("cannot map the snapshot file " + path.string() + " (" + std::to_string(plan.total_bytes) +
                " bytes): " + errno_text(errno));
  }
  file.map_ = static_cast<uint8_t*>(map);
  file.map_bytes_ = plan.total_bytes;

  if (reuse) {
    // Keep the newest slot whose payload verifies; the next commit overwrites the other one.
    for (std::size_t s = 0; s < 2; ++s) {
      const uint8_t* slot = file.map_ + file.slot_offset_ + s * file.slot_stride_;
      SlotHeader header;
      if (!check_slot_header(slot, s, plan, &header).empty()) continue;
      if (header.sequence <= file.newest_sequence_) continue;
      Checksum64 sum;
      for (std::size_t i = 0; i < file.layout_.size(); ++i) sum.update(slot + file.offsets_[i], file.layout_[i].bytes);
      if (sum.digest() != header.payload_checksum) continue;
      file.newest_sequence_ = header.sequence;
      file.newest_step_ = header.step;
      file.write_slot_ = 1 - s;
    }
  }
  return file;
}

SnapshotFile::SnapshotFile(SnapshotFile&& other) noexcept { *this = std::move(other); }

SnapshotFile& SnapshotFile::operator=(SnapshotFile&& other) noexcept {
  if (this == &other) return *this;
  release();
  path_ = std::move(other.path_);
  layout_ = std::move(other.layout_);
  offsets_ = std::move(other.offsets_);
  slot_offset_ = other.slot_offset_;
  slot_stride_ = other.slot_stride_;
  hash_ = other.hash_;
  fd_ = std::exchange(other.fd_, -1);
  map_ = std::exchange(other.map_, nullptr);
  map_bytes_ = std::exchange(other.map_bytes_, 0);
  write_slot_ = other.write_slot_;
  newest_sequence_ = other.newest_sequence_;
  newest_step_ = other.newest_step_;
  return *this;
}

SnapshotFile::~SnapshotFile() { release(); }

void SnapshotFile::release() noexcept {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  if (fd_ >= 0) ::close(fd_);
  map_ = nullptr;
  fd_ = -1;
}

uint8_t* SnapshotFile::region(std::size_t i) {
  assert(map_ != nullptr && i < layout_.size());
  return map_ + slot_offset_ + write_slot_ * slot_stride_ + offsets_[i];
}

void SnapshotFile::commit(int64_t step, bool durable) {
  assert(map_ != nullptr);
  uint8_t* slot = map_ + slot_offset_ + write_slot_ * slot_stride_;
  // The fences keep the caller's stores into the regions, and the checksum reads, before the
  // header store, for the compiler as for the CPU.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  Checksum64 sum;
  uint64_t payload_bytes = 0;
  for (std::size_t i = 0; i < layout_.size(); ++i) {
    sum.update(slot + offsets_[i], layout_[i].bytes);
    payload_bytes += layout_[i].bytes;
  }
  const HeaderBytes header =
      encode_slot_header(write_slot_, hash_, payload_bytes, {newest_sequence_ + 1, step, sum.digest()});

  if (durable && !layout_.empty()) {
    const uint64_t end = offsets_.back() + layout_.back().bytes;
    sync_range(slot + kPayloadOffset, end - kPayloadOffset, path_, "snapshot payload");
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  std::memcpy(slot, header.data(), header.size());
  std::atomic_thread_fence(std::memory_order_seq_cst);

  newest_sequence_ += 1;
  newest_step_ = step;
  write_slot_ = 1 - write_slot_;
  if (durable) sync_range(slot, kSlotHeaderBytes, path_, "snapshot slot header");
}

std::optional<LoadedSnapshot> load_newest(const std::filesystem::path& path, const std::vector<SnapshotRegion>& layout,
                                          std::string* why_not) {
  auto fail = [&](const std::string& why) -> std::optional<LoadedSnapshot> {
    if (why_not != nullptr) *why_not = "snapshot file " + path.string() + " " + why;
    return std::nullopt;
  };
  Plan plan;
  try {
    plan = make_plan(layout, path);
  } catch (const Error&) {
    return fail("cannot hold this layout: it is too large");
  }

  struct Fd {
    int fd;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  } file{-1};
  std::string why;
  file.fd = open_regular_file(path, O_RDONLY, 0, &why);
  if (file.fd < 0) return fail(errno == ENOENT ? std::string("does not exist") : why);
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) return fail("cannot be read: " + errno_text(errno));
  const uint64_t size = static_cast<uint64_t>(st.st_size);

  uint8_t header[kFileHeaderBytes];
  if (size < kFileHeaderBytes || !read_at(file.fd, header, kFileHeaderBytes, 0)) {
    return fail("is truncated: " + std::to_string(size) + " bytes, less than its 64-byte header");
  }
  if (std::memcmp(header, kFileMagic, 8) != 0) return fail("is not a daifu snapshot file (bad magic)");
  if (get32(header + 8) != kFormatVersion) {
    return fail("has format version " + std::to_string(get32(header + 8)) + "; this build reads version " +
                std::to_string(kFormatVersion));
  }
  const uint64_t block_bytes = get64(header + 32);
  if (block_bytes > kMaxLayoutBlockBytes) return fail("has a corrupt file header");
  if (size < kFileHeaderBytes + block_bytes) {
    return fail("is truncated: " + std::to_string(size) + " bytes, its layout block ends at " +
                std::to_string(kFileHeaderBytes + block_bytes));
  }
  std::vector<uint8_t> block(block_bytes);
  if (!read_at(file.fd, block.data(), block.size(), kFileHeaderBytes)) {
    return fail("cannot be read: " + errno_text(errno));
  }
  Checksum64 sum;
  sum.update(header, 56);
  sum.update(block.data(), block.size());
  std::vector<StoredRegion> stored;
  if (sum.digest() != get64(header + 56) ||
      !parse_layout_block(block.data(), block.size(), get64(header + 24), &stored)) {
    return fail("has a corrupt file header (checksum mismatch)");
  }
  if (const std::string diff = layout_difference(stored, layout); !diff.empty()) {
    return fail("was taken for a different model: " + diff);
  }
  if (!std::equal(header, header + kFileHeaderBytes, plan.prefix.begin()) ||
      !std::equal(block.begin(), block.end(), plan.prefix.begin() + kFileHeaderBytes, plan.prefix.end())) {
    return fail("has a file header that does not match its own layout");
  }

  // Slots with an intact header, newest first; then the first whose payload verifies.
  std::string reasons[2];
  std::vector<std::pair<SlotHeader, std::size_t>> candidates;
  for (std::size_t s = 0; s < 2; ++s) {
    const uint64_t begin = plan.slot_offset + s * plan.slot_stride;
    if (size < begin + plan.payload_end) {
      reasons[s] = "truncated (the file ends at " + std::to_string(size) + ", the slot at " +
                   std::to_string(begin + plan.payload_end) + ")";
      continue;
    }
    uint8_t slot_header[kSlotHeaderBytes];
    if (!read_at(file.fd, slot_header, kSlotHeaderBytes, begin)) {
      reasons[s] = "cannot be read: " + errno_text(errno);
      continue;
    }
    SlotHeader h;
    reasons[s] = check_slot_header(slot_header, s, plan, &h);
    if (reasons[s].empty()) candidates.emplace_back(h, s);
  }
  std::sort(candidates.begin(), candidates.end(),
            [](const auto& a, const auto& b) { return a.first.sequence > b.first.sequence; });

  LoadedSnapshot loaded;
  loaded.regions.resize(layout.size());
  for (const auto& [h, s] : candidates) {
    const uint64_t begin = plan.slot_offset + s * plan.slot_stride;
    Checksum64 payload;
    bool read_ok = true;
    for (std::size_t i = 0; i < layout.size() && read_ok; ++i) {
      auto& bytes = loaded.regions[i];
      bytes.resize(layout[i].bytes);
      read_ok = read_at(file.fd, bytes.data(), bytes.size(), begin + plan.offsets[i]);
      payload.update(bytes.data(), bytes.size());
    }
    if (!read_ok) {
      reasons[s] = "cannot be read: " + errno_text(errno);
    } else if (payload.digest() != h.payload_checksum) {
      reasons[s] = "payload checksum mismatch (torn or corrupt payload)";
    } else {
      loaded.step = h.step;
      loaded.sequence = h.sequence;
      return loaded;
    }
  }
  return fail("has no valid slot: slot 0: " + reasons[0] + "; slot 1: " + reasons[1]);
}

}  // namespace daifu::detail
