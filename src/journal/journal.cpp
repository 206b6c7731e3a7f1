#include "journal/journal.h"

#include "core/durable_file.h"
#include "core/regular_file.h"
#include "core/strings.h"
#include "journal/workplace.h"

#include <daifu/journal.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

namespace daifu::detail {
namespace {

std::string make_run_id() {
  std::random_device rd;
  char buf[64];
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::snprintf(buf, sizeof buf, "%04d%02d%02dT%02d%02d%02dZ-%05d-%04x", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(::getpid() % 100000),
                rd() & 0xffffu);
  return buf;
}

// Highest NNNN among failures/NNNN.json, ignoring numbers too large to count on from.
int64_t highest_report_number(const std::filesystem::path& dir) {
  constexpr int64_t kLargest = int64_t{1} << 40;
  int64_t highest = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".json") continue;
    const auto number = parse_decimal<int64_t>(entry.path().stem().string());
    if (number && *number < kLargest) highest = std::max(highest, *number);
  }
  return highest;
}

// experiment_record.log's sink: appends to a descriptor from open_regular_file (spdlog's file
// sink opens by name, following links). Owns the descriptor.
class RecordSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit RecordSink(int fd) : fd_(fd) {}
  ~RecordSink() override { ::close(fd_); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t text;
    formatter_->format(msg, text);
    for (std::size_t done = 0; done < text.size();) {
      const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw spdlog::spdlog_ex(std::strerror(errno));
      done += static_cast<std::size_t>(n);
    }
  }
  void flush_() override {}

 private:
  int fd_;
};

// True when the file is empty or ends with '\n'.
bool ends_with_newline(int fd) {
  const off_t size = ::lseek(fd, 0, SEEK_END);
  if (size <= 0) return true;
  char last = '\n';
  return ::pread(fd, &last, 1, size - 1) == 1 && last == '\n';
}

// Each frame as "symbol+0xoff in module", from the dynamic symbol tables already in memory
// (dladdr). Symbolizing with file:line maps the libraries' symbol tables (176 MB of address
// space for libtorch, measured), which an out-of-memory failure cannot afford.
std::string frames_from_dladdr(const RawStack& stack) {
  std::string out;
  for (std::size_t i = 0; i < stack.size(); ++i) {
    Dl_info info{};
    char line[512];
    if (dladdr(stack[i], &info) != 0 && info.dli_fname != nullptr) {
      const auto* address = static_cast<const char*>(stack[i]);
      if (info.dli_sname != nullptr) {
        std::snprintf(line, sizeof line, "#%zu %s+0x%tx in %s\n", i, info.dli_sname,
                      address - static_cast<const char*>(info.dli_saddr), info.dli_fname);
      } else {
        std::snprintf(line, sizeof line, "#%zu 0x%tx in %s\n", i, address - static_cast<const char*>(info.dli_fbase),
                      info.dli_fname);
      }
    } else {
      std::snprintf(line, sizeof line, "#%zu %p\n", i, stack[i]);
    }
    out += line;
  }
  return out;
}

}  // namespace

double unix_time_now() noexcept {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count() / 1e6;
}

Journal::Journal(std::filesystem::path workplace, bool echo)
    : workplace_(std::move(workplace)), run_id_(make_run_id()), echo_(echo) {
  const auto journal_path = workplace_ / kJournalFile;
  std::string why;
  // O_RDWR: ends_with_newline reads the last byte (on an O_WRONLY descriptor pread fails, and
  // every journal looked torn).
  fd_ = open_regular_file(journal_path, O_RDWR | O_CREAT | O_APPEND, 0644, &why);
  if (fd_ < 0) report_io_error(journal_path.string() + " " + why);
  // A process killed mid-line left a torn last line: the first line written ends it.
  torn_ = fd_ >= 0 && !ends_with_newline(fd_);

  try {
    const auto record_path = workplace_ / kRecordFile;
    const int record_fd = open_regular_file(record_path, O_WRONLY | O_CREAT | O_APPEND, 0644, &why);
    if (record_fd < 0) throw std::runtime_error(record_path.string() + " " + why);
    std::vector<spdlog::sink_ptr> sinks;
    sinks.push_back(std::make_shared<RecordSink>(record_fd));
    if (echo) sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    record_ = std::make_shared<spdlog::logger>("daifu", sinks.begin(), sinks.end());
    record_->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
    record_->flush_on(spdlog::level::trace);
    record_->set_error_handler([](const std::string& msg) {
      std::fprintf(stderr, "daifu: cannot write experiment_record.log: %s\n", msg.c_str());
    });
  } catch (const std::exception& e) {
    report_io_error(e.what());
  }
  next_report_ = highest_report_number(workplace_ / kFailuresDir) + 1;
}

Journal::~Journal() {
  release_reports();
  {
    std::lock_guard<std::mutex> lock(report_mutex_);
    stopping_ = true;
  }
  report_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (fd_ >= 0) ::close(fd_);
}

void Journal::report_io_error(const std::string& what) noexcept {
  if (io_error_reported_) return;
  io_error_reported_ = true;
  std::fprintf(stderr, "daifu: %s (training continues; the workplace record is incomplete)\n", what.c_str());
}

void Journal::append_line(const std::string& line) noexcept {
  if (fd_ < 0) return;
  std::string buf;
  try {
    buf.reserve(line.size() + 2);
    if (torn_) buf.push_back('\n');  // end the torn line before, so that this one stays whole
    buf += line;
    buf.push_back('\n');
  } catch (const std::bad_alloc&) {
    report_io_error("cannot write journal.jsonl: out of memory");
    return;
  }
  for (std::size_t done = 0; done < buf.size();) {
    const ssize_t n = ::write(fd_, buf.data() + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // The file now ends with buf[0, done): a torn line unless that ends with a newline.
      if (done > 0) torn_ = buf[done - 1] != '\n';
      report_io_error(std::string("cannot write journal.jsonl: ") + std::strerror(n < 0 ? errno : ENOSPC));
      return;
    }
    done += static_cast<std::size_t>(n);
  }
  torn_ = false;
}

void Journal::say_once(const std::string& topic, const std::string& text) noexcept {
  try {
    std::lock_guard<std::mutex> lock(write_mutex_);
    if (!said_.insert(topic).second || echo_) return;
  } catch (...) {
    return;
  }
  std::fprintf(stderr, "daifu: %s\n", text.c_str());
}

void Journal::write(nlohmann::json event) noexcept {
  try {
    event["v"] = kJournalSchemaVersion;
    event["time"] = unix_time_now();
    event["run"] = run_id_;
    if (const int64_t loop = loop_.load(); loop >= 0 && !event.contains("loop")) event["loop"] = loop;
    const std::string line = event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::lock_guard<std::mutex> lock(write_mutex_);
    append_line(line);
  } catch (const std::exception& e) {
    report_io_error(std::string("cannot encode a journal line: ") + e.what());
  }
}

void Journal::record(const std::string& line) noexcept {
  try {
    if (record_) record_->info(line);
  } catch (...) {
  }
}

void Journal::record_warning(const std::string& line) noexcept {
  try {
    if (record_) record_->warn(line);
  } catch (...) {
  }
}

std::pair<int64_t, std::filesystem::path> Journal::reserve_report() {
  std::lock_guard<std::mutex> lock(report_mutex_);
  const int64_t n = next_report_++;
  char name[32];
  std::snprintf(name, sizeof name, "%04lld.json", static_cast<long long>(n));
  return {n, workplace_ / kFailuresDir / name};
}

void Journal::write_report_now(const PendingReport& pending) noexcept {
  try {
    nlohmann::json report = pending.report;
    if (report.value("kind", "") == "out_of_memory") {
      report["stack"] = frames_from_dladdr(pending.stack);
      report["stack_symbolized"] = false;
    } else {
      report["stack"] = symbolize_stack(pending.stack);
    }
    write_file_atomically(pending.path, report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + '\n');
  } catch (const std::exception& e) {
    std::fprintf(stderr, "daifu: cannot write failure report %s: %s\n", pending.path.c_str(), e.what());
  }
}

void Journal::write_report(std::filesystem::path path, nlohmann::json report, RawStack stack,
                           bool synchronous) noexcept {
  PendingReport pending{std::move(path), std::move(report), std::move(stack)};
  if (synchronous) {
    write_report_now(pending);
    return;
  }
  try {
    std::lock_guard<std::mutex> lock(report_mutex_);
    if (!writer_.joinable()) writer_ = std::thread([this] { writer_loop(); });
    held_.push_back(std::move(pending));  // moves only if it succeeds
    holding_ = true;
  } catch (...) {
    write_report_now(pending);
    return;
  }
  report_cv_.notify_one();  // the writer's clock for kHoldAtMost starts
}

void Journal::release_reports() noexcept {
  if (!holding_) return;
  {
    std::lock_guard<std::mutex> lock(report_mutex_);
    while (!held_.empty()) {
      pending_.push_back(std::move(held_.front()));
      held_.pop_front();
    }
    holding_ = false;
  }
  report_cv_.notify_all();
}

void Journal::start_report_writer() {
  std::lock_guard<std::mutex> lock(report_mutex_);
  if (!writer_.joinable()) writer_ = std::thread([this] { writer_loop(); });
}

void Journal::writer_loop() {
  // Reports are background work: yield the CPU to the training thread (nice 19, this thread only).
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);
  std::unique_lock<std::mutex> lock(report_mutex_);
  for (;;) {
    report_cv_.wait(lock, [this] { return stopping_ || !pending_.empty() || !held_.empty(); });
    if (pending_.empty() && !held_.empty()) {
      // Held while a repair runs: written once released, or kHoldAtMost after it was held, so a
      // process that dies in the retry still leaves the report of the failure before.
      if (stopping_ || !report_cv_.wait_for(lock, kHoldAtMost, [this] { return stopping_ || !pending_.empty(); })) {
        while (!held_.empty()) {
          pending_.push_back(std::move(held_.front()));
          held_.pop_front();
        }
        holding_ = false;
      }
      continue;
    }
    if (pending_.empty()) return;  // stopping, nothing left
    PendingReport next = std::move(pending_.front());
    pending_.pop_front();
    writer_busy_ = true;
    lock.unlock();
    write_report_now(next);
    lock.lock();
    writer_busy_ = false;
    report_cv_.notify_all();
  }
}

void Journal::flush_reports() noexcept {
  release_reports();
  std::unique_lock<std::mutex> lock(report_mutex_);
  report_cv_.wait(lock, [this] { return pending_.empty() && !writer_busy_; });
}

nlohmann::json Journal::to_json(const Failure& f) {
  return {{"kind", std::string(to_string(f.kind))},
          {"exception_type", f.exception_type},
          {"message", f.message},
          {"where", f.where},
          {"matched_by", f.matched_by},
          {"step", f.step},
          {"attempt", f.attempt}};
}

}  // namespace daifu::detail
