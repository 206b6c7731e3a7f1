// daifu_fuzz: a seeded mutation fuzzer for every reader of workplace files (no libFuzzer).
//
//   daifu_fuzz TARGET SECONDS [SEED]
//
// TARGET is journal, command, paused, report, snapshot, or all (each target for SECONDS).
// SEED (default 20261204) seeds each target's std::mt19937_64, so the mutations a target makes
// are a function of SEED alone, whether it runs alone or under `all`; how many inputs fit in
// SECONDS is not. The seed inputs are written by daifu's own writers (Journal, send_command,
// write_paused, Journal::write_report, PersistentStore) into a scratch folder, a mkdtemp under
// $DAIFU_TEST_TMP or /tmp, mode 0700 (the workplace code refuses anything else); they carry
// times, pids and run ids, so a failure is reproduced from the input it saves, not by rerunning.
//
// Each input is a seed or a mutant the reader accepted earlier, with several edits: truncation,
// byte flips and inserts, chunks duplicated or spliced from another seed, deep nesting, a value
// of another type or a huge number, lines swapped, an empty file; for the snapshot, edits to
// the file and slot headers, sometimes with their checksums recomputed.
//
// A broken invariant prints what broke and where the input was saved (in the scratch folder,
// which is then kept) and exits 1; a crash prints where the input lies. Otherwise one line per
// target, "fuzz <target>: <N> inputs in <S> s, seed <SEED>, <counts>", exit 0, and the scratch
// folder is removed. Exit 2: bad arguments or a scratch folder that cannot be made.
#include <daifu/failure.h>
#include <daifu/journal.h>

#include "control/control_channel.h"
#include "core/json_input.h"
#include "journal/events.h"
#include "journal/journal.h"
#include "journal/workplace.h"
#include "replay/history.h"
#include "replay/replay_plan.h"
#include "snapshot/checksum.h"
#include "snapshot/persistent_store.h"
#include "snapshot/snapshot_file.h"

#include <nlohmann/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace daifu_fuzz {

namespace fs = std::filesystem;
namespace detail = daifu::detail;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr uint64_t kDefaultSeed = 20261204;

// ---------------------------------------------------------------------------------------------
// Files and failures

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Replaces `path` by a new file holding `bytes`. Removed first, not truncated: ext4 flushes a
// file truncated and rewritten at its close (auto_da_alloc), which would make this the bottleneck.
void write_bytes(const fs::path& path, const std::string& bytes) {
  std::error_code ec;
  fs::remove(path, ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
}

// The files of `dir` whose extension is `ext`, sorted.
std::vector<fs::path> files_in(const fs::path& dir, const std::string& ext) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ext) out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// `bytes` as the contents of a C string literal (octal escapes: they end after 3 digits).
std::string escaped(const std::string& bytes) {
  std::string out;
  for (const unsigned char c : bytes) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char octal[8];
      std::snprintf(octal, sizeof octal, "\\%03o", c);
      out += octal;
    }
  }
  return out;
}

// One file of an input, for the failure message.
struct Input {
  std::string name;
  std::string bytes;
};

// What a crash reports (set before a target runs; written by the signal handler).
char g_crash_note[1024] = "daifu_fuzz: crashed\n";

void on_fatal_signal(int sig) {
  const ssize_t written = ::write(2, g_crash_note, std::strlen(g_crash_note));
  (void)written;
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Reports crashes, stack overflows included (on an alternate stack), with g_crash_note.
void install_crash_handler() {
  static char alternate_stack[1 << 16];
  stack_t ss{};
  ss.ss_sp = alternate_stack;
  ss.ss_size = sizeof alternate_stack;
  ::sigaltstack(&ss, nullptr);
  struct sigaction action {};
  action.sa_handler = on_fatal_signal;
  action.sa_flags = SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  for (const int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) ::sigaction(sig, &action, nullptr);
}

// ---------------------------------------------------------------------------------------------
// Mutations

// Random edits of text (JSON, JSON lines, the snapshot layout) and of binary headers. All
// randomness of a target comes from here.
class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  /// A number in [0, n); 0 when n is 0.
  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng_() % n); }
  bool percent(int p) { return below(100) < static_cast<std::size_t>(p); }
  template <class T>
  const T& pick(const std::vector<T>& items) {
    return items[below(items.size())];
  }

  /// `text` after 1..max_edits edits; `donors` lend chunks to splice in. A third of the time
  /// only values are replaced, which keeps JSON valid (mostly) with fields of other types.
  std::string mutate(std::string text, const std::vector<std::string>& donors, int max_edits) {
    const std::size_t edits = 1 + below(static_cast<std::size_t>(max_edits));
    if (percent(33)) {
      for (std::size_t e = 0; e < edits; ++e) replace_value(text, donors);
      return text;
    }
    std::size_t total_weight = 0;
    for (const auto& edit : kEdits) total_weight += edit.weight;
    for (std::size_t e = 0; e < edits; ++e) {
      std::size_t roll = below(total_weight);
      for (const auto& edit : kEdits) {
        if (roll < edit.weight) {
          (this->*edit.apply)(text, donors);
          break;
        }
        roll -= edit.weight;
      }
    }
    return text;
  }

  /// 1..max_edits edits of the bytes in [begin, end) of `bytes`, whose size stays: for binary
  /// headers, where a checksum catches a flip anywhere else. Integers are little-endian.
  void mutate_range(std::string& bytes, std::size_t begin, std::size_t end, int max_edits) {
    end = std::min(end, bytes.size());
    if (begin >= end) return;
    const std::size_t edits = 1 + below(static_cast<std::size_t>(max_edits));
    for (std::size_t e = 0; e < edits; ++e) {
      const std::size_t at = begin + below(end - begin);
      switch (below(5)) {
        case 0: bytes[at] = static_cast<char>(bytes[at] ^ (1 << below(8))); break;
        case 1: bytes[at] = static_cast<char>(below(256)); break;
        case 2: bytes[at] = "\0\x7f\x80\xff"[below(4)]; break;
        case 3: put(bytes, begin + below((end - begin) / 4) * 4, static_cast<uint32_t>(pick(kIntegers)), end); break;
        case 4: {
          const std::size_t word = begin + below((end - begin) / 8) * 8;
          uint64_t value = pick(kIntegers);
          if (percent(30) && word + 8 <= end) {  // off by one from what is there
            std::memcpy(&value, bytes.data() + word, 8);
            value = percent(50) ? value + 1 : value - 1;
          }
          put(bytes, word, value, end);
          break;
        }
      }
    }
  }

 private:
  using Edit = void (Mutator::*)(std::string&, const std::vector<std::string>&);
  struct WeightedEdit {
    std::size_t weight;
    Edit apply;
  };

  template <class T>
  static void put(std::string& bytes, std::size_t at, T value, std::size_t end) {
    if (at + sizeof value <= end) std::memcpy(bytes.data() + at, &value, sizeof value);
  }

  // The position of one of `any_of` at or after a random place, wrapping around; npos if none.
  std::size_t find_random(const std::string& s, const char* any_of) {
    const std::size_t at = s.find_first_of(any_of, below(s.size()));
    return at != std::string::npos ? at : s.find_first_of(any_of);
  }

  std::string random_bytes(std::size_t n) {
    // JSON's syntax, multi-byte and invalid UTF-8, NUL: more likely than a uniform byte to
    // turn valid input into a different valid or subtly broken one.
    static const char kChars[] = "{}[]\":,\\\n\r\t -0123456789eE.+nulltruefalse\0\x7f\x80\xbf\xc3\xe2\xa8\xff";
    static const std::string kSyntax(kChars, sizeof kChars - 1);
    std::string out(n, ' ');
    for (auto& c : out) c = percent(50) ? kSyntax[below(kSyntax.size())] : static_cast<char>(below(256));
    return out;
  }

  // The end of the JSON value that starts at `at`, as far as a scan of quotes and brackets tells.
  static std::size_t value_end(const std::string& s, std::size_t at) {
    if (at >= s.size()) return at;
    if (s[at] == '"' || s[at] == '[' || s[at] == '{') {
      int depth = 0;
      bool in_string = false;
      for (std::size_t i = at; i < s.size(); ++i) {
        const char c = s[i];
        if (in_string) {
          if (c == '\\') {
            ++i;
          } else if (c == '"') {
            in_string = false;
            if (depth == 0) return i + 1;
          }
        } else if (c == '"') {
          in_string = true;
        } else if (c == '[' || c == '{') {
          ++depth;
        } else if ((c == ']' || c == '}') && --depth == 0) {
          return i + 1;
        }
      }
      return s.size();
    }
    const std::size_t end = s.find_first_of(",]}\n\r\t ", at);
    return end == std::string::npos ? s.size() : end;
  }

  // A balanced array about as deep as the readers' limit (kMaxJsonDepth, 64), or far deeper:
  // whole, it gets past the parser, and only the depth check keeps it from code that recurses.
  std::string nested() {
    const std::size_t depth = percent(10) ? 100000 : 60 + below(8);
    return std::string(depth, '[') + "0" + std::string(depth, ']');
  }

  void truncate(std::string& s, const std::vector<std::string>&) { s.resize(below(s.size() + 1)); }
  void flip_bit(std::string& s, const std::vector<std::string>&) {
    if (!s.empty()) s[below(s.size())] ^= static_cast<char>(1 << below(8));
  }
  void replace_bytes(std::string& s, const std::vector<std::string>&) {
    if (s.empty()) return;
    const std::size_t at = below(s.size());
    const std::string bytes = random_bytes(std::min<std::size_t>(1 + below(8), s.size() - at));
    s.replace(at, bytes.size(), bytes);
  }
  void insert_bytes(std::string& s, const std::vector<std::string>&) {
    s.insert(below(s.size() + 1), random_bytes(1 + below(16)));
  }
  void erase(std::string& s, const std::vector<std::string>&) {
    if (!s.empty()) s.erase(below(s.size()), 1 + below(64));
  }
  void duplicate(std::string& s, const std::vector<std::string>&) {
    if (s.empty()) return;
    const std::size_t from = below(s.size());
    const std::string chunk = s.substr(from, 1 + below(256));
    s.insert(below(s.size() + 1), chunk);
  }
  void splice(std::string& s, const std::vector<std::string>& donors) {
    if (donors.empty()) return;
    const std::string& donor = pick(donors);
    if (donor.empty()) return;
    const std::string chunk = donor.substr(below(donor.size()), 1 + below(512));
    const std::size_t at = below(s.size() + 1);
    if (percent(50)) {
      s.insert(at, chunk);
    } else {
      s.replace(at, chunk.size(), chunk);
    }
  }
  void deep_nesting(std::string& s, const std::vector<std::string>&) {
    const std::size_t at = below(s.size() + 1);
    switch (below(3)) {
      case 0: s.insert(at, std::string(100000, '[')); break;
      case 1: {
        std::string objects;
        for (int i = 0; i < 20000; ++i) objects += "{\"a\":";
        s.insert(at, objects);
        break;
      }
      case 2: s.insert(at, nested()); break;
    }
  }
  // A '[' or '"' (or another value's first character) right after a ':'.
  void retype(std::string& s, const std::vector<std::string>&) {
    const std::size_t colon = find_random(s, ":");
    if (colon != std::string::npos) s.insert(colon + 1, 1, "[\"{-0tn"[below(7)]);
  }
  // A member's or element's value replaced whole by one of another type: still JSON, if the
  // scan found the value, so it reaches the code past the parser.
  void replace_value(std::string& s, const std::vector<std::string>&) {
    static const std::vector<std::string> kValues = {
        "null", "true", "false", "0", "-1", "1.5", "-0", "1e308", "-1e308", "1e-320", "99999999999999999999",
        "18446744073709551615", "18446744073709551616", "9223372036854775807", "-9223372036854775808", "4294967297",
        "2147483648", "\"\"", "\"x\"", "\"\\u0000\"", "\"\\ud83d\\ude00\"", "\"line\\nbreak\"", "[]", "{}", "[null]",
        "[1,2]", "[64,32]", "[null,{}]", "[null,{\"path\":7}]", "{\"a\":1}", "[\"x\"]", "{\"x\":[]}"};
    const std::size_t anchor = find_random(s, percent(75) ? ":" : "[,");
    if (anchor == std::string::npos) return;
    std::size_t start = anchor + 1;
    while (start < s.size() && (s[start] == ' ' || s[start] == '\n')) ++start;
    const std::string value = percent(5) ? nested() : pick(kValues);
    s.replace(start, value_end(s, start) - start, value);
  }
  void huge_number(std::string& s, const std::vector<std::string>&) {
    static const std::vector<std::string> kNumbers = {
        "99999999999999999999", "-1", "1e308", "1e309", "-1e400", "NaN", "Infinity", "0", "-0", "4294967297",
        "2147483648", "18446744073709551615", "-9223372036854775809", "1.0", "0.000001",
        "123456789012345678901234567890"};
    const std::size_t digit = find_random(s, "0123456789");
    if (digit == std::string::npos) return;
    static const char* kNumberChars = "-+.eE0123456789";
    std::size_t begin = digit, end = digit;
    while (begin > 0 && std::strchr(kNumberChars, s[begin - 1]) != nullptr && s[begin - 1] != '\0') --begin;
    while (end < s.size() && std::strchr(kNumberChars, s[end]) != nullptr && s[end] != '\0') ++end;
    s.replace(begin, end - begin, pick(kNumbers));
  }
  void shuffle_lines(std::string& s, const std::vector<std::string>&) {
    std::vector<std::string> lines;
    std::istringstream in(s);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    if (lines.empty()) return;
    const bool newline_at_end = !s.empty() && s.back() == '\n';
    const std::size_t a = below(lines.size()), b = below(lines.size());
    switch (below(4)) {
      case 0: std::swap(lines[a], lines[b]); break;
      case 1: lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(a), lines[b]); break;
      case 2: lines.erase(lines.begin() + static_cast<std::ptrdiff_t>(a)); break;
      case 3: lines.push_back(lines[a]); break;
    }
    s.clear();
    for (std::size_t i = 0; i < lines.size(); ++i) s += lines[i] + (i + 1 < lines.size() || newline_at_end ? "\n" : "");
  }
  void empty(std::string& s, const std::vector<std::string>&) { s.clear(); }

  static constexpr WeightedEdit kEdits[] = {
      {6, &Mutator::truncate},       {10, &Mutator::flip_bit},    {10, &Mutator::replace_bytes},
      {8, &Mutator::insert_bytes},   {6, &Mutator::erase},        {6, &Mutator::duplicate},
      {8, &Mutator::splice},         {4, &Mutator::deep_nesting}, {10, &Mutator::retype},
      {14, &Mutator::replace_value}, {9, &Mutator::huge_number},  {8, &Mutator::shuffle_lines},
      {1, &Mutator::empty},
  };

  static inline const std::vector<uint64_t> kIntegers = {
      0, 1, 2, 3, 63, 64, 65, 4095, 4096, 4097, uint64_t{1} << 30, (uint64_t{1} << 30) + 1, uint64_t{1} << 56,
      (uint64_t{1} << 56) + 1, uint64_t{1} << 63, 0x7fffffffffffffff, UINT64_MAX - 1, UINT64_MAX};

  std::mt19937_64 rng_;
};

// The inputs to mutate: the writers' seeds, and mutants a reader accepted, which reach further
// into the reader than random edits of a seed do. Bounded in count and size.
class Corpus {
 public:
  explicit Corpus(std::vector<std::string> seeds) : seeds_(std::move(seeds)) {}

  const std::vector<std::string>& seeds() const { return seeds_; }
  /// A seed half the time, else a kept mutant.
  const std::string& pick(Mutator& m) const { return kept_.empty() || m.percent(50) ? m.pick(seeds_) : m.pick(kept_); }
  void keep(const std::string& mutant, Mutator& m) {
    if (mutant.size() > kMaxKeptBytes) return;
    if (kept_.size() < kMaxKept) {
      kept_.push_back(mutant);
    } else {
      kept_[m.below(kMaxKept)] = mutant;
    }
  }

 private:
  static constexpr std::size_t kMaxKept = 64;
  static constexpr std::size_t kMaxKeptBytes = 64 * 1024;
  std::vector<std::string> seeds_, kept_;
};

// ---------------------------------------------------------------------------------------------
// One target's run

struct Summary {
  int64_t inputs = 0;
  std::string counts;  ///< "12 accepted, 34 refused"
};

class Fuzz {
 public:
  Fuzz(std::string name, fs::path folder, uint64_t seed, double seconds)
      : target(std::move(name)),
        dir(std::move(folder)),
        mutator(seed),
        deadline_(Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds))) {
    fs::create_directories(this->dir);
    std::snprintf(g_crash_note, sizeof g_crash_note, "daifu_fuzz %s: crashed making its seed inputs\n", target.c_str());
  }

  const std::string target;
  const fs::path dir;  ///< this target's own folder in the scratch folder
  Mutator mutator;

  bool more() const { return Clock::now() < deadline_; }

  /// Names, for a crash, where the input of the reader about to run lies.
  void input_is_in(const fs::path& where) const {
    std::snprintf(g_crash_note, sizeof g_crash_note,
                  "daifu_fuzz %s: crashed reading the input in %s (the scratch folder is kept)\n", target.c_str(),
                  where.c_str());
  }

  /// Saves `files` beside this target's folder, says `what` broke and where they are, exits 1.
  [[noreturn]] void fail(const std::string& what, const std::vector<Input>& files) const {
    std::fprintf(stderr, "daifu_fuzz %s: %s\n", target.c_str(), what.c_str());
    for (const auto& file : files) {
      const fs::path saved = dir.parent_path() / ("failure-" + target + "-" + file.name);
      try {
        write_bytes(saved, file.bytes);
        std::fprintf(stderr, "  %s (%zu bytes) saved as %s\n", file.name.c_str(), file.bytes.size(), saved.c_str());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "  %s (%zu bytes) not saved: %s\n", file.name.c_str(), file.bytes.size(), e.what());
      }
      if (file.bytes.size() <= 2048) std::fprintf(stderr, "  \"%s\"\n", escaped(file.bytes).c_str());
    }
    std::exit(1);
  }

 private:
  Clock::time_point deadline_;
};

std::size_t depth_of(const json& value) {
  std::size_t deepest = 0;
  std::vector<std::pair<const json*, std::size_t>> todo = {{&value, 0}};
  while (!todo.empty()) {
    const auto [v, depth] = todo.back();
    todo.pop_back();
    if (!v->is_structured()) continue;
    deepest = std::max(deepest, depth + 1);
    for (const auto& child : *v) todo.emplace_back(&child, depth + 1);
  }
  return deepest;
}

std::size_t nonempty_lines(const std::string& text) {
  std::size_t n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

// ---------------------------------------------------------------------------------------------
// Seeds from daifu's writers

daifu::Failure make_failure(daifu::FailureKind kind, std::string type, std::string message, int64_t step,
                            int64_t attempt) {
  daifu::Failure f;
  f.kind = kind;
  f.exception_type = std::move(type);
  f.message = std::move(message);
  f.where = "train.cpp:88";
  f.matched_by = "type:" + f.exception_type;
  f.step = step;
  f.attempt = attempt;
  return f;
}

// Journals a failure and writes its report as StepLoop::record_failure does. Returns the report's path.
std::string record_failure(detail::Journal& journal, const daifu::Failure& f, const std::vector<std::string>& tracked) {
  const auto reserved = journal.reserve_report();
  json line = detail::Journal::to_json(f);
  line["event"] = detail::event::failure;
  line["report"] = reserved.second.string();
  journal.write(line);
  json full = line;
  full["global_step"] = f.step;
  full["tracked"] = tracked;
  // One real frame, so that the report's stack is written as for a real throw.
  journal.write_report(reserved.second, full, daifu::RawStack{__builtin_return_address(0)}, /*synchronous=*/true);
  return reserved.second.string();
}

// Writes two runs into workplace `wp` as a session would: a retried OOM (batch_size 64 -> 32),
// a data failure skipped by a hot patch, a failure left unrecovered after a pause, metrics;
// then a run that replays the first's repairs. Reports in failures/0001..0003.json.
void write_real_workplace(const fs::path& wp) {
  namespace event = detail::event;
  using daifu::FailureKind;
  {
    detail::Journal j(wp, /*echo=*/false);
    j.write({{"event", event::run_start},
             {"step", 0},
             {"pid", 4242},
             {"workplace", wp.string()},
             {"options",
              {{"max_attempts", 3},
               {"replay", "off"},
               {"transient_retries", 2},
               {"fast_throws", true},
               {"on_unrecovered", "pause"}}},
             {"inject", {"out_of_memory@5"}}});
    j.write({{"event", event::knob_created}, {"step", 0}, {"name", "batch_size"}, {"type", "int64"}, {"value", 64}});
    j.write({{"event", event::knob_created}, {"step", 0}, {"name", "lr"}, {"type", "double"}, {"value", 0.1}});
    j.write({{"event", event::snapshot}, {"step", 4}, {"bytes", 4096}, {"capture_ms", 0.25}, {"step_ms", 3.5},
             {"every", 1}});

    const auto oom = make_failure(FailureKind::OutOfMemory, "c10::OutOfMemoryError",
                                  "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total)", 5, 0);
    const std::string oom_report = record_failure(j, oom, {"model", "optimizer", "rng"});
    j.write({{"event", event::knob}, {"step", 5}, {"name", "batch_size"}, {"before", 64}, {"after", 32},
             {"reason", "out_of_memory: halve the batch"}});
    j.write({{"event", event::repair}, {"step", 5}, {"attempt", 0}, {"surgery", "out_of_memory"},
             {"matched", "out_of_memory"}, {"action", "retry"}, {"changes", {{"batch_size", {64, 32}}}},
             {"report", oom_report}, {"reason", "halved batch_size"}});
    j.write({{"event", event::resume}, {"step", 5}, {"attempt", 1}, {"recovery_us", 1234.5}});

    const auto bad_data = make_failure(FailureKind::ExceptionalData, "std::runtime_error",
                                       "bad sample \"x\"\nsecond line \xff\xfe (not UTF-8) \xc3\xa9", 7, 0);
    const std::string data_report = record_failure(j, bad_data, {"model", "optimizer"});
    const std::string sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    j.write({{"event", event::patch_loading}, {"step", 7}, {"path", "patches/fix.so"}, {"sha256", sha}});
    j.write({{"event", event::knob}, {"step", 7}, {"name", "lr"}, {"before", 0.1}, {"after", 0.05},
             {"reason", "hot patch fix.so"}});
    j.write({{"event", event::repair}, {"step", 7}, {"attempt", 0}, {"surgery", "hot_patch"},
             {"matched", "exceptional_data"}, {"action", "skip"},
             {"changes", {{"patch", {nullptr, {{"path", "patches/fix.so"}, {"sha256", sha}}}}, {"lr", {0.1, 0.05}}}},
             {"report", data_report}});
    j.write({{"event", event::rollback}, {"step", 7}, {"to_step", 4}, {"rerun_steps", 3}, {"restore_ms", 1.5},
             {"mutated", {"model"}}});
    j.write({{"event", event::skip}, {"step", 7}, {"attempt", 0}, {"recovery_us", 99.0}});
    j.write({{"event", event::metrics}, {"step", 8}, {"steps", {4, 8}},
             {"values", {{"loss", {0.5, 0.25}}, {"accuracy", {nullptr, "nan"}}}}});

    const auto transient = make_failure(FailureKind::TransientRuntime, "c10::Error", "NCCL timeout", 9, 2);
    const std::string transient_report = record_failure(j, transient, {});
    const std::string pause_id = j.run_id() + "-3";
    j.write({{"event", event::pause}, {"step", 9}, {"attempt", 2}, {"pause", pause_id}, {"kind", "transient_runtime"},
             {"reason", "the step failed 3 times (max_attempts)"}, {"timeout_s", 600.0}});
    j.write({{"event", event::command}, {"step", 9}, {"id", "00000001733300000000-4242-0"}, {"command", "abort"},
             {"args", {{"pause", pause_id}}}, {"result", "aborted"}});
    j.write({{"event", event::pause_end}, {"step", 9}, {"pause", pause_id}, {"by", "daifu abort"},
             {"action", "escalate"}, {"waited_s", 3.5}});
    j.write({{"event", event::unrecovered}, {"step", 9}, {"attempt", 2}, {"kind", "transient_runtime"},
             {"reason", "aborted by daifu abort"}, {"tried", {"transient_retry: retried 2 times"}},
             {"report", transient_report}});
    j.write({{"event", event::run_end}, {"step", 9}, {"status", "unrecovered"}, {"committed_steps", 8},
             {"failures", 3}, {"retries", 1}, {"skipped_steps", 1}, {"unrecovered", 1}, {"failed_checks", 0}});
  }
  detail::Journal j(wp, /*echo=*/false);
  j.write({{"event", event::run_start}, {"step", 0}, {"pid", 4243}, {"workplace", wp.string()},
           {"options", {{"max_attempts", 3}, {"replay", "eager"}}}, {"inject", json::array()}});
  j.write({{"event", event::knob_created}, {"step", 0}, {"name", "batch_size"}, {"type", "int64"}, {"value", 64}});
  j.write({{"event", event::replay_plan}, {"step", 0}, {"mode", "eager"},
           {"items", {"batch_size 64 -> 32 (out_of_memory repaired out_of_memory at step 5, train.cpp:88)"}},
           {"journal_warnings", 0}});
  j.write({{"event", event::replayed}, {"step", 0}, {"from_run", "20261204T000000Z-04242-abcd"}, {"from_step", 5},
           {"where", "train.cpp:88"}, {"kind", "out_of_memory"}, {"surgery", "out_of_memory"}, {"mode", "eager"},
           {"item", "batch_size"}, {"name", "batch_size"}, {"value", 32}});
  j.write({{"event", event::run_end}, {"step", 12}, {"status", "ok"}, {"committed_steps", 12}, {"failures", 0},
           {"retries", 0}, {"skipped_steps", 0}, {"unrecovered", 0}, {"failed_checks", 0}});
}

// The commands the CLI sends (tools/daifu/control_commands.cpp), with the pause they are for.
std::vector<std::pair<std::string, json>> real_commands() {
  const std::string pause = "20261204T000000Z-04242-abcd-3";
  return {{"apply", {{"patch", "fix.so"}, {"staged", ".fix.so.4242.staged"}, {"pause", pause}}},
          {"set", {{"knobs", {{"batch_size", 16}, {"lr", 0.001}, {"schedule", "cosine"}}}, {"pause", pause}}},
          {"retry", {{"pause", pause}}},
          {"skip", {{"pause", pause}}},
          {"abort", {{"reason", "the data is gone"}, {"pause", pause}}}};
}

// paused.json states with the fields StepLoop::pause writes (src/session/pause.cpp).
std::vector<json> real_paused_states() {
  const std::string wp = "/tmp/wp";
  const std::vector<std::string> how_to_fix = {
      "fix the code in a hot patch: daifu patch build fix.cpp, then daifu apply fix.so --workplace " + wp +
          " (or copy the .so into " + wp + "/patches/)",
      "change a knob and retry: daifu set NAME=VALUE --workplace " + wp + " (knobs: batch_size=32, lr=0.001)",
      "retry as it is (after fixing something outside the process): daifu retry --workplace " + wp,
      "skip this step's data: daifu skip --workplace " + wp,
      "give up (the failure is rethrown): daifu abort --workplace " + wp};
  json full = {{"pause", "20261204T000000Z-04242-abcd-3"},
               {"pid", 4242},
               {"step", 40},
               {"attempt", 2},
               {"where", "train.cpp:88"},
               {"kind", "out_of_memory"},
               {"exception_type", "c10::OutOfMemoryError"},
               {"message", "CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail"},
               {"why", "no surgery repaired it"},
               {"tried", {"out_of_memory: batch_size 64 -> 32", "out_of_memory: declined (batch_size is 1)"}},
               {"report", wp + "/failures/0003.json"},
               {"since", "2026-12-04T00:00:00Z"},
               {"until", "2026-12-04T00:10:00Z"},
               {"timeout_s", 600.0},
               {"knobs", {{"batch_size", 32}, {"lr", 0.001}, {"schedule", {1, 2, 3}}, {"name", "x"}, {"amp", true}}},
               {"how_to_fix", how_to_fix}};
  json bare = full;
  bare["knobs"] = json::object();
  bare["tried"] = json::array();
  bare["timeout_s"] = 0.5;
  return {full, bare};
}

// ---------------------------------------------------------------------------------------------
// Targets

// journal.jsonl through read_journal, read_history and plan_replay. Contract: none throws on an
// existing file; every non-empty line is either read or counted as skipped (with a warning);
// what is read can be written out again (dump), and so can each replay item (describe). And
// every 16th input: a line a Journal then appends is the journal's last readable line, whatever
// (torn) text was there.
Summary fuzz_journal(Fuzz& f) {
  const fs::path seed = detail::prepare_workplace((f.dir / "seed").string());
  write_real_workplace(seed);
  const fs::path wp = detail::prepare_workplace((f.dir / "mutant").string());
  std::vector<std::string> donors = {read_bytes(seed / detail::kJournalFile)};
  for (const auto& report : files_in(seed / detail::kFailuresDir, ".json")) {
    fs::copy_file(report, wp / detail::kFailuresDir / report.filename());  // plan_replay reads the tracked names
    donors.push_back(read_bytes(report));
  }
  Corpus corpus({donors.front()});
  const fs::path path = wp / detail::kJournalFile;
  f.input_is_in(path);
  Summary s;
  int64_t read = 0, skipped = 0, items = 0, appends = 0;
  while (f.more()) {
    const std::string text = f.mutator.mutate(corpus.pick(f.mutator), donors, 8);
    write_bytes(path, text);
    detail::History h;
    daifu::JournalContents contents;
    try {
      h = detail::read_history(wp);
      contents = daifu::read_journal(path.string());
      for (const auto& line : h.lines) {
        if (depth_of(line) > detail::kMaxJsonDepth) {
          f.fail("a line nesting too deep was read", {{"journal.jsonl", text}});
        }
        line.dump();
      }
      for (const auto& i : h.incidents) i.changes.dump();
      for (const auto& item : detail::plan_replay(h, wp, {})) {
        item.describe();
        ++items;
      }
    } catch (const std::exception& e) {
      f.fail(std::string("a reader threw: ") + e.what(), {{"journal.jsonl", text}});
    }
    const std::size_t lines = nonempty_lines(text);
    if (static_cast<std::size_t>(h.skipped_lines) + h.lines.size() != lines) {
      f.fail("read_history read " + std::to_string(h.lines.size()) + " lines and skipped " +
                 std::to_string(h.skipped_lines) + " of " + std::to_string(lines) + " non-empty ones",
             {{"journal.jsonl", text}});
    }
    if (contents.lines.size() + contents.warnings.size() != lines || h.warnings.size() < contents.warnings.size()) {
      f.fail("read_journal read " + std::to_string(contents.lines.size()) + " lines with " +
                 std::to_string(contents.warnings.size()) + " warnings (history: " + std::to_string(h.warnings.size()) +
                 ") of " + std::to_string(lines) + " non-empty ones",
             {{"journal.jsonl", text}});
    }
    for (std::size_t i = 1; i < contents.lines.size(); ++i) {
      if (contents.lines[i].line_number <= contents.lines[i - 1].line_number) {
        f.fail("read_journal's line numbers do not increase", {{"journal.jsonl", text}});
      }
    }
    if (s.inputs % 16 == 0) {
      std::string run;
      try {
        detail::Journal journal(wp, /*echo=*/false);
        run = journal.run_id();
        journal.write({{"event", detail::event::run_end}, {"step", 0}, {"status", "fuzz"}});
      } catch (const std::exception& e) {
        f.fail(std::string("Journal threw on this journal: ") + e.what(), {{"journal.jsonl", text}});
      }
      const auto after = daifu::read_journal(path.string());
      if (after.lines.empty() || detail::json_text(json::parse(after.lines.back().json), "run") != run) {
        f.fail("the line a Journal appended to this journal is not its last readable line",
               {{"journal.jsonl", text}, {"journal.jsonl.appended", read_bytes(path)}});
      }
      ++appends;
    }
    read += static_cast<int64_t>(h.lines.size());
    skipped += h.skipped_lines;
    if (h.skipped_lines == 0 && !h.lines.empty()) corpus.keep(text, f.mutator);
    ++s.inputs;
  }
  s.counts = std::to_string(read) + " lines read, " + std::to_string(skipped) + " skipped, " + std::to_string(items) +
             " replay items, " + std::to_string(appends) + " appends";
  return s;
}

// control/*.json through take_commands. Contract: no throw (the folder is private); each file
// is either taken (removed, and returned as the command it holds: verb, id, args an object) or
// renamed to .rejected and described in `rejected`; no .json file is left.
Summary fuzz_command(Fuzz& f) {
  const fs::path seed = detail::prepare_workplace((f.dir / "seed").string());
  for (const auto& [verb, args] : real_commands()) detail::send_command(seed, verb, args);
  std::vector<std::string> seeds;
  for (const auto& file : files_in(seed / detail::kControlDir, ".json")) seeds.push_back(read_bytes(file));
  std::vector<std::string> rejected;
  if (detail::take_commands(seed, &rejected).size() != seeds.size() || !rejected.empty()) {
    f.fail("take_commands does not take the commands send_command wrote", {});
  }
  const fs::path wp = detail::prepare_workplace((f.dir / "mutant").string());
  const fs::path control = wp / detail::kControlDir;
  f.input_is_in(control);
  Corpus corpus(seeds);
  Summary s;
  int64_t taken = 0, refused = 0;
  while (f.more()) {
    for (const auto& left : files_in(control, ".rejected")) fs::remove(left);
    std::vector<Input> files;
    const std::size_t n = 1 + f.mutator.below(3);
    for (std::size_t k = 0; k < n; ++k) {
      files.push_back({"c" + std::to_string(k) + ".json", f.mutator.mutate(corpus.pick(f.mutator), seeds, 6)});
      write_bytes(control / files.back().name, files.back().bytes);
    }
    rejected.clear();
    std::vector<detail::Command> commands;
    try {
      commands = detail::take_commands(wp, &rejected);
      for (const auto& c : commands) {
        if (depth_of(c.args) > detail::kMaxJsonDepth) f.fail("a command nesting too deep was taken", files);
        json{{"id", c.id}, {"command", c.verb}, {"args", c.args}}.dump(-1, ' ', false, json::error_handler_t::replace);
      }
    } catch (const std::exception& e) {
      f.fail(std::string("take_commands threw: ") + e.what(), files);
    }
    std::size_t next_command = 0, next_rejected = 0;
    for (const auto& file : files) {  // in name order, as they are taken
      if (fs::exists(control / file.name)) f.fail(file.name + " is still in control/", files);
      if (fs::exists(control / (file.name + ".rejected"))) {
        if (next_rejected >= rejected.size() || rejected[next_rejected++].find(file.name) == std::string::npos) {
          f.fail(file.name + " was rejected but `rejected` does not say so", files);
        }
        ++refused;
        continue;
      }
      if (next_command >= commands.size()) f.fail(file.name + " was removed but not returned", files);
      const detail::Command& c = commands[next_command++];
      // Taken, so it is JSON no deeper than the limit: this parse is safe.
      const json j = json::parse(file.bytes, nullptr, /*allow_exceptions=*/false);
      const json args = j.is_object() && j.contains("args") && j["args"].is_object() ? j["args"] : json::object();
      if (!j.is_object() || j.value("command", json()) != c.verb || c.args != args ||
          (j.contains("id") && j["id"] != c.id)) {
        f.fail(file.name + " was returned as another command: " + c.verb + " " + c.args.dump(), files);
      }
      corpus.keep(file.bytes, f.mutator);
      ++taken;
    }
    if (next_command != commands.size() || next_rejected != rejected.size()) {
      f.fail("take_commands returned " + std::to_string(commands.size()) + " commands and " +
                 std::to_string(rejected.size()) + " rejections for " + std::to_string(n) + " files",
             files);
    }
    s.inputs += static_cast<int64_t>(n);
  }
  s.counts = std::to_string(taken) + " taken, " + std::to_string(refused) + " rejected";
  return s;
}

// paused.json through read_paused, then read as `daifu status` and `daifu set/retry/...` read it
// (tools/daifu/control_commands.cpp). Contract: no throw; a state that is returned holds every
// field those read, of the type they read it as; nullopt comes with a reason.
Summary fuzz_paused(Fuzz& f) {
  const fs::path wp = detail::prepare_workplace((f.dir / "mutant").string());
  const fs::path path = wp / detail::kPausedFile;
  std::vector<std::string> seeds;
  for (const auto& state : real_paused_states()) {
    detail::write_paused(wp, state);
    if (!detail::read_paused(wp)) {
      f.fail("read_paused refuses what write_paused wrote", {{"paused.json", read_bytes(path)}});
    }
    seeds.push_back(read_bytes(path));
  }
  f.input_is_in(path);
  Corpus corpus(seeds);
  Summary s;
  int64_t accepted = 0, refused = 0;
  while (f.more()) {
    const std::string text = f.mutator.mutate(corpus.pick(f.mutator), seeds, 6);
    if (f.mutator.percent(2)) {
      fs::remove(path);
    } else {
      write_bytes(path, text);
    }
    std::string why;
    std::optional<json> paused;
    try {
      paused = detail::read_paused(wp, &why);
      if (paused) {
        const json& p = *paused;  // `daifu status` reads it const
        if (depth_of(p) > detail::kMaxJsonDepth) {
          f.fail("a paused.json nesting too deep was read", {{"paused.json", text}});
        }
        for (const char* key : {"pause", "pid", "step", "attempt", "knobs", "timeout_s", "tried"}) {
          if (!p.contains(key)) {
            f.fail(std::string("read_paused returned a state without \"") + key + "\"", {{"paused.json", text}});
          }
        }
        std::ostringstream out;
        (void)detail::process_alive(p.value("pid", int64_t{0}));
        out << p["pid"].get<int64_t>() << p["pid"] << p["step"] << p["attempt"] << p["timeout_s"].get<double>();
        for (const char* key : {"where", "since", "until", "kind", "exception_type", "why", "report"}) {
          out << p.value(key, "");
        }
        out << p.value("message", "").substr(0, p.value("message", "").find('\n'));
        if (!p["knobs"].empty()) {
          for (const auto& [name, value] : p["knobs"].items()) out << name << "=" << value.dump();
        }
        for (const auto& fix : p.value("how_to_fix", json::array())) out << fix.get<std::string>();
        for (const auto& tried : p["tried"]) out << tried.get<std::string>();
        json args = {{"knobs", {{"batch_size", 1}}}};
        args["pause"] = (*paused)["pause"];
        out << args.dump() << p.dump(2);
      }
    } catch (const std::exception& e) {
      f.fail(std::string("reading paused.json threw: ") + e.what(), {{"paused.json", text}});
    }
    if (paused) {
      ++accepted;
      corpus.keep(text, f.mutator);
    } else {
      if (why.empty()) f.fail("read_paused refused paused.json without saying why", {{"paused.json", text}});
      ++refused;
    }
    ++s.inputs;
  }
  s.counts = std::to_string(accepted) + " accepted, " + std::to_string(refused) + " refused";
  return s;
}

// failures/NNNN.json through parse_untrusted_json_file, then as `daifu show` reads it, and
// through plan_replay (the tracked names of a replay item come from its failure's report).
// Contract: a discarded value comes with a reason; a value nests at most kMaxJsonDepth deep and
// can be written out; plan_replay does not throw, and the items of the mutated report's failure
// carry exactly the string elements of its "tracked" array.
Summary fuzz_report(Fuzz& f) {
  const fs::path seed = detail::prepare_workplace((f.dir / "seed").string());
  write_real_workplace(seed);
  const detail::History history = detail::read_history(seed);
  const fs::path wp = detail::prepare_workplace((f.dir / "mutant").string());
  std::vector<std::string> seeds;
  for (const auto& report : files_in(seed / detail::kFailuresDir, ".json")) {
    fs::copy_file(report, wp / detail::kFailuresDir / report.filename());
    seeds.push_back(read_bytes(report));
  }
  // The retried OOM: its replay item (batch_size) carries its report's tracked names.
  if (history.incidents.empty() || detail::plan_replay(history, wp, {}).empty() ||
      detail::plan_replay(history, wp, {}).front().tracked.empty()) {
    f.fail("the seed workplace's replay plan has no item with tracked names", {});
  }
  const detail::IncidentRecord& incident = history.incidents.front();
  const fs::path path = wp / detail::kFailuresDir / fs::path(incident.report).filename();
  f.input_is_in(path);
  Corpus corpus(seeds);
  Summary s;
  int64_t accepted = 0, refused = 0;
  while (f.more()) {
    const std::string text = f.mutator.mutate(corpus.pick(f.mutator), seeds, 6);
    write_bytes(path, text);
    std::string why;
    json report = detail::parse_untrusted_json_file(path, &why);
    std::vector<std::string> tracked;
    try {
      if (report.is_discarded()) {
        if (why.empty()) f.fail("a report was refused without a reason", {{"report.json", text}});
        ++refused;
      } else {
        if (depth_of(report) > detail::kMaxJsonDepth) {
          f.fail("a report nesting " + std::to_string(depth_of(report)) + " levels deep was accepted",
                 {{"report.json", text}});
        }
        report.dump(2, ' ', false, json::error_handler_t::replace);
        if (report.is_object()) {  // as `daifu show` prints it
          std::ostringstream out;
          for (const char* key :
               {"step", "attempt", "where", "kind", "matched_by", "exception_type", "message", "stack"}) {
            const auto it = report.find(key);
            out << (it == report.end() ? std::string() : it->is_string() ? it->get<std::string>() : it->dump());
          }
          report["resolution"] = {{"surgery", "out_of_memory"}, {"outcome", "retry"}};
          out << report.dump(2);
          if (report.contains("tracked") && report["tracked"].is_array()) {
            for (const auto& name : report["tracked"]) {
              if (name.is_string()) tracked.push_back(name.get<std::string>());
            }
          }
        }
        ++accepted;
        corpus.keep(text, f.mutator);
      }
      for (const auto& item : detail::plan_replay(history, wp, {})) {
        item.describe();
        if (item.run == incident.run && item.step == incident.step && item.tracked != tracked) {
          f.fail("plan_replay's tracked names differ from the report's \"tracked\" strings", {{"report.json", text}});
        }
      }
    } catch (const std::exception& e) {
      f.fail(std::string("reading the report threw: ") + e.what(), {{"report.json", text}});
    }
    ++s.inputs;
  }
  s.counts = std::to_string(accepted) + " accepted, " + std::to_string(refused) + " refused";
  return s;
}

// The snapshot's layout and the bytes committed at step 1 and at step 2.
const std::vector<detail::SnapshotRegion> kSnapshotLayout = {
    {"model.weight", 64}, {"optimizer.exp_avg", 200}, {"rng", 8}};

uint8_t committed_byte(int64_t step, std::size_t region, std::size_t i) {
  return static_cast<uint8_t>(static_cast<std::size_t>(step) * 37 + region * 11 + i);
}

bool holds_commit(const detail::LoadedSnapshot& snapshot, int64_t step) {
  for (std::size_t r = 0; r < snapshot.regions.size(); ++r) {
    for (std::size_t i = 0; i < snapshot.regions[r].size(); ++i) {
      if (snapshot.regions[r][i] != committed_byte(step, r, i)) return false;
    }
  }
  return true;
}

bool same_layout(const std::vector<detail::SnapshotRegion>& a, const std::vector<detail::SnapshotRegion>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const auto& x, const auto& y) { return x.name == y.name && x.bytes == y.bytes; });
}

uint64_t get64(const std::string& bytes, std::size_t at) {
  uint64_t v = 0;
  if (at + 8 <= bytes.size()) std::memcpy(&v, bytes.data() + at, 8);
  return v;
}

// Recomputes the checksums of the file header (over bytes 0..55 and the layout block its
// bytes 32..39 give the size of) and of both slot headers, as a writer would.
void reseal(std::string& bin, uint64_t slot_offset, uint64_t slot_stride) {
  const uint64_t block = get64(bin, 32);
  if (bin.size() >= 64 && block <= bin.size() - 64) {
    detail::Checksum64 sum;
    sum.update(bin.data(), 56);
    sum.update(bin.data() + 64, block);
    const uint64_t digest = sum.digest();
    std::memcpy(bin.data() + 56, &digest, 8);
  }
  for (uint64_t slot : {slot_offset, slot_offset + slot_stride}) {
    if (slot + 64 > bin.size()) continue;
    const uint64_t digest = detail::checksum64(bin.data() + slot, 56);
    std::memcpy(bin.data() + slot + 56, &digest, 8);
  }
}

// snapshots/ through PersistentStore::load and the .bin through load_newest. Contract: neither
// throws; nullopt comes with a reason; a snapshot has one region per layout entry, of its size.
// Unless checksums were recomputed, a snapshot of the original layout is one of the two commits
// whole (bytes, step and sequence); if they were, its bytes are still one of the two. With the
// .layout untouched, load and load_newest agree.
Summary fuzz_snapshot(Fuzz& f) {
  const fs::path seed = f.dir / "seed";
  {
    detail::PersistentStore store(seed);
    for (const int64_t step : {1, 2}) {
      store.write(kSnapshotLayout, [&](std::size_t r, uint8_t* p) {
        for (std::size_t i = 0; i < kSnapshotLayout[r].bytes; ++i) p[i] = committed_byte(step, r, i);
      }, step, /*durable=*/step == 2);
    }
  }
  const auto bins = files_in(seed, ".bin");
  const auto layouts = files_in(seed, ".layout");
  if (bins.size() != 1 || layouts.size() != 1) f.fail("PersistentStore did not write one .bin and one .layout", {});
  const std::string bin = read_bytes(bins[0]), layout = read_bytes(layouts[0]);
  const uint64_t block_bytes = get64(bin, 32), slot_offset = get64(bin, 40), slot_stride = get64(bin, 48);
  {
    std::string why;
    const auto found = detail::PersistentStore::load(seed, &why);
    if (!found || found->snapshot.step != 2 || !holds_commit(found->snapshot, 2)) {
      f.fail("PersistentStore::load does not return the last commit: " + why, {});
    }
  }
  const fs::path dir = f.dir / "mutant";
  fs::create_directories(dir);
  const fs::path bin_path = dir / bins[0].filename(), layout_path = dir / layouts[0].filename();
  f.input_is_in(dir);
  Summary s;
  int64_t loaded = 0, refused = 0, forged = 0;
  while (f.more()) {
    std::string b = bin, l = layout;
    bool resealed = false, layout_mutated = false;
    Mutator& m = f.mutator;
    // A header: the file's (0..63), the layout block, or a slot's.
    const auto edit_a_header = [&] {
      const std::size_t which = m.below(4);
      const uint64_t begin = which == 0 ? 0 : which == 1 ? 64 : slot_offset + (which - 2) * slot_stride;
      const uint64_t end = which == 1 ? 64 + block_bytes : begin + 64;
      m.mutate_range(b, begin, end, 3);
    };
    const std::size_t mode = m.below(100);
    if (mode < 45) {
      edit_a_header();
    } else if (mode < 60) {
      edit_a_header();
      if (m.percent(20)) {  // one slot's header over the other's
        const bool down = m.percent(50);
        b.replace(slot_offset + (down ? slot_stride : 0), 64, b.substr(slot_offset + (down ? 0 : slot_stride), 64));
      }
      reseal(b, slot_offset, slot_stride);
      resealed = true;
    } else if (mode < 75) {
      b = m.mutate(b, {bin}, 4);
    } else if (mode < 85) {
      const std::vector<uint64_t> cuts = {0, 63, 64, 65, slot_offset, slot_offset + 64, slot_offset + slot_stride - 1,
                                          slot_offset + slot_stride, slot_offset + slot_stride + 64, bin.size() - 1};
      b.resize(m.pick(cuts));
    } else {
      l = m.mutate(l, {layout}, 3);
      layout_mutated = true;
      if (m.percent(50)) edit_a_header();
    }
    if (m.percent(2)) {
      fs::remove(bin_path);
    } else {
      write_bytes(bin_path, b);
    }
    write_bytes(layout_path, l);
    const std::vector<Input> files = {{"snapshot.bin", b}, {"snapshot.layout", l}};

    std::string why_load, why_newest;
    std::optional<detail::PersistentStore::Found> found;
    std::optional<detail::LoadedSnapshot> newest;
    try {
      found = detail::PersistentStore::load(dir, &why_load);
      newest = detail::load_newest(bin_path, kSnapshotLayout, &why_newest);
    } catch (const std::exception& e) {
      f.fail(std::string("a snapshot reader threw: ") + e.what(), files);
    }
    const auto check = [&](const detail::LoadedSnapshot& snapshot, const std::vector<detail::SnapshotRegion>& of,
                           const char* reader) {
      bool sizes_ok = snapshot.regions.size() == of.size();
      for (std::size_t r = 0; sizes_ok && r < of.size(); ++r) sizes_ok = snapshot.regions[r].size() == of[r].bytes;
      if (!sizes_ok) f.fail(std::string(reader) + " returned regions of other sizes than the layout's", files);
      if (!same_layout(of, kSnapshotLayout)) return;
      const bool whole = resealed ? holds_commit(snapshot, 1) || holds_commit(snapshot, 2)
                                  : (snapshot.step == 1 || snapshot.step == 2) &&
                                        snapshot.sequence == static_cast<uint64_t>(snapshot.step) &&
                                        holds_commit(snapshot, snapshot.step);
      if (!whole) {
        f.fail(std::string(reader) + " returned a snapshot (step " + std::to_string(snapshot.step) + ", sequence " +
                   std::to_string(snapshot.sequence) + ") that was never committed",
               files);
      }
    };
    if (!found && why_load.empty()) f.fail("PersistentStore::load refused without a reason", files);
    if (!newest && why_newest.empty()) f.fail("load_newest refused without a reason", files);
    if (found) check(found->snapshot, found->layout, "PersistentStore::load");
    if (newest) check(*newest, kSnapshotLayout, "load_newest");
    if (!layout_mutated && found.has_value() != newest.has_value()) {
      f.fail("PersistentStore::load and load_newest disagree: " + (found ? why_newest : why_load), files);
    }
    if (!layout_mutated && found && found->snapshot.step != newest->step) {
      f.fail("PersistentStore::load and load_newest return different steps", files);
    }
    ++(newest ? loaded : refused);
    forged += resealed && newest;
    ++s.inputs;
  }
  s.counts = std::to_string(loaded) + " loaded, " + std::to_string(refused) + " refused, " + std::to_string(forged) +
             " loaded with recomputed checksums";
  return s;
}

// ---------------------------------------------------------------------------------------------

struct Target {
  const char* name;
  Summary (*run)(Fuzz&);
};

constexpr Target kTargets[] = {{"journal", fuzz_journal},
                               {"command", fuzz_command},
                               {"paused", fuzz_paused},
                               {"report", fuzz_report},
                               {"snapshot", fuzz_snapshot}};

int usage() {
  std::fprintf(stderr,
               "usage: daifu_fuzz TARGET SECONDS [SEED]\n"
               "  TARGET: journal, command, paused, report, snapshot or all\n"
               "  SEED:   default %llu\n",
               static_cast<unsigned long long>(kDefaultSeed));
  return 2;
}

int run(int argc, char** argv) {
  if (argc < 3 || argc > 4) return usage();
  const std::string which = argv[1];
  char* end = nullptr;
  const double seconds = std::strtod(argv[2], &end);
  if (end == argv[2] || *end != '\0' || !(seconds >= 0)) return usage();
  uint64_t seed = kDefaultSeed;
  if (argc == 4) {
    seed = std::strtoull(argv[3], &end, 10);
    if (end == argv[3] || *end != '\0') return usage();
  }
  std::vector<std::size_t> chosen;
  for (std::size_t t = 0; t < std::size(kTargets); ++t) {
    if (which == "all" || which == kTargets[t].name) chosen.push_back(t);
  }
  if (chosen.empty()) return usage();

  const char* tmp = std::getenv("DAIFU_TEST_TMP");
  const fs::path root = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  std::error_code ec;
  fs::create_directories(root, ec);
  std::string scratch = (root / "daifu_fuzz.XXXXXX").string();
  if (::mkdtemp(scratch.data()) == nullptr) {  // mode 0700
    std::fprintf(stderr, "daifu_fuzz: cannot create a scratch folder in %s: %s\n", root.c_str(), std::strerror(errno));
    return 2;
  }
  install_crash_handler();
  for (const std::size_t t : chosen) {
    const auto started = Clock::now();
    // Each target's own stream, the same under `all` as alone.
    const uint64_t target_seed = seed ^ (0x9E3779B97F4A7C15ull * (t + 1));
    Fuzz fuzz(kTargets[t].name, fs::path(scratch) / kTargets[t].name, target_seed, seconds);
    Summary summary;
    try {
      summary = kTargets[t].run(fuzz);
    } catch (const std::exception& e) {  // outside a reader: making seeds, the scratch folder
      std::fprintf(stderr, "daifu_fuzz %s: %s (the scratch folder %s is kept)\n", kTargets[t].name, e.what(),
                   scratch.c_str());
      return 1;
    }
    const double took = std::chrono::duration<double>(Clock::now() - started).count();
    std::printf("fuzz %s: %lld inputs in %.1f s, seed %llu, %s\n", kTargets[t].name,
                static_cast<long long>(summary.inputs), took, static_cast<unsigned long long>(seed),
                summary.counts.c_str());
    std::fflush(stdout);
  }
  fs::remove_all(scratch, ec);
  return 0;
}

}  // namespace daifu_fuzz

int main(int argc, char** argv) { return daifu_fuzz::run(argc, argv); }
