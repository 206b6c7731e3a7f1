// The training progress line: on a terminal one live line rewritten with '\r' (at most ten
// times a second); otherwise (a log file, CI) one line per tenth of the run.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>

class Progress {
 public:
  Progress(int64_t total_steps, int64_t steps_per_epoch)
      : total_(total_steps), per_epoch_(steps_per_epoch), live_(isatty(fileno(stdout)) == 1),
        start_(Clock::now()) {}

  /// Records the loss of step `index`; `repairs`: failures so far. A second call for the same
  /// index (the step was run again) replaces the first; an earlier index is ignored.
  void update(int64_t index, double loss, int64_t repairs) {
    if (index < last_index_) return;
    const int64_t epoch = index / per_epoch_;
    if (epoch != epoch_) {
      epoch_ = epoch;
      loss_sum_ = 0;
      losses_ = 0;
    }
    if (index == last_index_) {
      loss_sum_ -= last_loss_;
    } else {
      ++losses_;
      ++done_;
    }
    loss_sum_ += loss;
    last_index_ = index;
    last_loss_ = loss;
    repairs_ = repairs;

    const auto now = Clock::now();
    const bool last = index + 1 == total_;
    if (live_) {
      if (last || now - drawn_ >= std::chrono::milliseconds(100)) {
        draw(now, '\r');
        drawn_ = now;
      }
    } else if (const int64_t tenth = (index + 1) * 10 / total_; tenth > tenth_ || last) {
      draw(now, '\n');
      tenth_ = tenth;
    }
  }

  /// Ends the live line so that later output starts on a fresh one; also when an exception
  /// leaves the training loop.
  void finish() {
    if (live_ && done_ > 0 && !finished_) std::fputc('\n', stdout);
    finished_ = true;
    std::fflush(stdout);
  }
  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

 private:
  using Clock = std::chrono::steady_clock;

  void draw(Clock::time_point now, char end) {
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const int64_t epochs = (total_ + per_epoch_ - 1) / per_epoch_;
    std::printf("step %lld/%lld  epoch %lld/%lld  avg loss %.4f  %.1f steps/s  repairs %lld   %c",
                static_cast<long long>(last_index_ + 1), static_cast<long long>(total_),
                static_cast<long long>(epoch_ + 1), static_cast<long long>(epochs),
                loss_sum_ / static_cast<double>(losses_), seconds > 0 ? done_ / seconds : 0.0,
                static_cast<long long>(repairs_), end);
    std::fflush(stdout);
  }

  int64_t total_, per_epoch_;
  bool live_;
  bool finished_ = false;
  Clock::time_point start_, drawn_{};
  int64_t epoch_ = -1, last_index_ = -1, losses_ = 0, done_ = 0, repairs_ = 0, tenth_ = 0;
  double loss_sum_ = 0, last_loss_ = 0;
};
