// Writes the workplace: journal.jsonl (machine-readable, one JSON object per line),
// experiment_record.log (human-readable) and failures/NNNN.json reports.
// Never throws into the training program: a write error is reported once on stderr.
#pragma once

#include <daifu/failure.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace spdlog {
class logger;
}

namespace daifu::detail {

class Journal {
 public:
  /// `workplace` must exist (prepare_workplace). `echo` also prints the record on stderr.
  Journal(std::filesystem::path workplace, bool echo);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  const std::filesystem::path& workplace() const noexcept { return workplace_; }
  const std::string& run_id() const noexcept { return run_id_; }

  /// Appends one line; adds "v", "time" and "run", and "loop" while set_loop() says a guard
  /// loop runs (unless the line has one). Safe from several threads.
  void write(nlohmann::json event) noexcept;
  /// The number of the guard loop now running (its place among the session's loops); -1: none.
  void set_loop(int64_t loop) noexcept { loop_ = loop; }
  /// One line of the human-readable record.
  void record(const std::string& line) noexcept;
  void record_warning(const std::string& line) noexcept;
  /// Prints "daifu: <text>" on stderr the first time it is called with `topic` (unless the
  /// record is echoed there already): for conditions the user must hear of without watching
  /// the record, such as snapshots that cannot be persisted.
  void say_once(const std::string& topic, const std::string& text) noexcept;

  /// Reserves the next report number (unique in the workplace) and returns its path.
  std::pair<int64_t, std::filesystem::path> reserve_report();
  /// Writes a report: `report` plus the symbolized `stack`. Symbolizing takes milliseconds,
  /// so unless `synchronous` the work is held for a background thread, which starts on it at
  /// release_reports(), flush_reports() or kHoldAtMost after it was held: while a failure is
  /// being repaired it would compete with the repair for the CPU and for the address space's
  /// lock (its mappings and page faults).
  void write_report(std::filesystem::path path, nlohmann::json report, RawStack stack,
                    bool synchronous) noexcept;
  /// Hands the held reports to the background thread (cheap when none is held).
  void release_reports() noexcept;
  /// Releases the held reports and waits until every report is written.
  void flush_reports() noexcept;
  /// Starts the report thread now rather than at the first failure, keeping its start-up
  /// (tens of microseconds) off the first recovery.
  void start_report_writer();

  /// The JSON form of a failure, as used on journal lines and in reports.
  static nlohmann::json to_json(const Failure& failure);

  static constexpr std::chrono::milliseconds kHoldAtMost{10};

 private:
  struct PendingReport {
    std::filesystem::path path;
    nlohmann::json report;
    RawStack stack;
  };
  void append_line(const std::string& line) noexcept;
  void report_io_error(const std::string& what) noexcept;
  void writer_loop();
  static void write_report_now(const PendingReport& pending) noexcept;

  std::filesystem::path workplace_;
  std::string run_id_;
  std::atomic<int64_t> loop_{-1};
  bool echo_;
  int fd_ = -1;
  std::mutex write_mutex_;
  bool torn_ = false;  // the journal's last line has no newline yet (guarded by write_mutex_)
  std::set<std::string> said_;
  bool io_error_reported_ = false;
  std::shared_ptr<spdlog::logger> record_;

  std::mutex report_mutex_;
  int64_t next_report_ = 1;
  std::condition_variable report_cv_;
  std::deque<PendingReport> held_;     // written, not yet released to the thread
  std::atomic<bool> holding_{false};   // held_ is not empty
  std::deque<PendingReport> pending_;  // released, not yet written
  bool writer_busy_ = false;
  bool stopping_ = false;
  std::thread writer_;
};

/// Seconds since the Unix epoch, with microseconds.
double unix_time_now() noexcept;

}  // namespace daifu::detail
