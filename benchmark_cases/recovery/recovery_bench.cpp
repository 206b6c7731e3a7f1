// Recovery latency: from the throw inside a step to the same step running again, and the
// pieces of it (throwing a c10::Error, classifying). Google Benchmark; results in
// docs/performance.md.
#include <daifu/daifu.h>

#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <filesystem>
#include <system_error>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

std::string workplace(const char* name) {
  const auto dir = std::filesystem::temp_directory_path() / "daifu_bench" / name;
  std::filesystem::remove_all(dir);
  return dir.string();
}

void shape_error() { torch::mm(torch::ones({4, 7}), torch::ones({10, 5})); }

// A real libtorch shape error, thrown and caught, with libtorch's default eager backtrace.
void BM_ThrowShapeError_LibtorchDefault(benchmark::State& state) {
  for (auto _ : state) {
    try {
      shape_error();
    } catch (const c10::Error& e) {
      benchmark::DoNotOptimize(e.what());
    }
  }
}
BENCHMARK(BM_ThrowShapeError_LibtorchDefault)->Unit(benchmark::kMicrosecond);

// The same while a Session with fast_throws (the default) lives.
void BM_ThrowShapeError_DaifuFastThrows(benchmark::State& state) {
  daifu::Session session(daifu::Options().workplace(workplace("fast_throws")));
  for (auto _ : state) {
    try {
      shape_error();
    } catch (const c10::Error& e) {
      benchmark::DoNotOptimize(e.what());
    }
  }
}
BENCHMARK(BM_ThrowShapeError_DaifuFastThrows)->Unit(benchmark::kMicrosecond);

void BM_Classify(benchmark::State& state) {
  daifu::Session session(daifu::Options().workplace(workplace("classify")));
  std::exception_ptr error;
  try {
    if (state.range(0) == 0) {
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), "loader");
    }
    shape_error();
  } catch (...) {
    error = std::current_exception();
  }
  daifu::Classifier classifier;
  for (auto _ : state) benchmark::DoNotOptimize(classifier.classify(error));
  state.SetLabel(state.range(0) == 0 ? "std::system_error EAGAIN" : "c10::Error shape mismatch");
}
BENCHMARK(BM_Classify)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// The counters of a recovery benchmark: the mean, median and p99 time from the throw to the
// step's body running again, and the runtime's own recovery_us (catch -> running again).
void recovery_counters(benchmark::State& state, std::vector<double> throw_to_resume_us, double recovery_us,
                       int64_t recoveries) {
  std::sort(throw_to_resume_us.begin(), throw_to_resume_us.end());
  double sum = 0;
  for (double v : throw_to_resume_us) sum += v;
  state.counters["throw_to_resume_mean_us"] = sum / static_cast<double>(throw_to_resume_us.size());
  state.counters["throw_to_resume_median_us"] = throw_to_resume_us[throw_to_resume_us.size() / 2];
  state.counters["throw_to_resume_p99_us"] = throw_to_resume_us[throw_to_resume_us.size() * 99 / 100];
  state.counters["recovery_us_mean"] = recovery_us / static_cast<double>(recoveries);
}

// Every step of a guarded MLP + Adam loop fails once (a transient error thrown after forward
// and backward) and is retried. Counters: the mean and median time from the throw to the
// step's body running again, and the runtime's own recovery_us (catch -> running again).
void BM_TransientRecovery(benchmark::State& state) {
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(32, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  torch::optim::Adam optimizer(model->parameters());
  const auto x = torch::randn({16, 32});
  const auto y = torch::randint(0, 4, {16});
  std::vector<double> throw_to_resume_us;
  double recovery_us = 0;
  int64_t recoveries = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto session_owner = std::make_unique<daifu::Session>(
        daifu::Options().workplace(workplace("transient_recovery")).transient_retries(2).inject(""));
    daifu::Session& session = *session_owner;
    session.track("model", *model);
    session.track("optimizer", optimizer);
    state.ResumeTiming();
    Clock::time_point thrown;
    DAIFU_GUARD(session, step, 0, 100) {
      if (step.attempt() == 1) {
        throw_to_resume_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - thrown).count());
      }
      optimizer.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      loss.backward();
      if (step.attempt() == 0) {
        thrown = Clock::now();
        throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), "loader");
      }
      optimizer.step();
    };
    state.PauseTiming();
    for (const auto& incident : session.incidents()) recovery_us += incident.recovery_us;
    recoveries += static_cast<int64_t>(session.incidents().size());
    if (std::getenv("DAIFU_BENCH_DUMP")) {
      for (const auto& incident : session.incidents()) std::fprintf(stderr, "%lld %.1f\n", (long long)incident.failure.step, incident.recovery_us);
    }
    session_owner.reset();  // waits for the failure reports: not part of recovery
    state.ResumeTiming();
  }
  recovery_counters(state, throw_to_resume_us, recovery_us, recoveries);
}
BENCHMARK(BM_TransientRecovery)->Unit(benchmark::kMillisecond)->Iterations(5);

// What this process maps (/proc/self/statm), 0 where it cannot be read.
int64_t mapped_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  long long pages = 0;
  if (f == nullptr || std::fscanf(f, "%lld", &pages) != 1) pages = 0;
  if (f != nullptr) std::fclose(f);
  return pages * sysconf(_SC_PAGESIZE);
}

// Every step of a guarded loop runs out of memory once, for real: under an address-space cap
// (RLIMIT_AS, 512 MiB above what the process maps), attempt 0 asks LibTorch's CPU allocator for
// more than is left. The out_of_memory surgery sizes the knob "batch" to fit and the step is
// retried (attempt 1 allocates nothing). Counters as BM_TransientRecovery's; 40 steps per
// session, whose knob starts high enough for 40 shrinks.
void BM_OutOfMemoryRecovery(benchmark::State& state) {
  rlimit old{};
  getrlimit(RLIMIT_AS, &old);
  std::vector<double> throw_to_resume_us;
  double recovery_us = 0;
  int64_t recoveries = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto session_owner = std::make_unique<daifu::Session>(
        daifu::Options().workplace(workplace("oom_recovery")).batch_knob("batch").inject(""));
    daifu::Session& session = *session_owner;
    session.knob<int64_t>("batch", int64_t{1} << 61).min(1);
    const int64_t mapped = mapped_bytes();
    rlimit cap = old;
    cap.rlim_cur = static_cast<rlim_t>(mapped + (int64_t{512} << 20));
    if (mapped == 0 || setrlimit(RLIMIT_AS, &cap) != 0) {
      state.SkipWithError("cannot cap the address space (RLIMIT_AS)");
      return;
    }
    state.ResumeTiming();
    Clock::time_point thrown;
    DAIFU_GUARD(session, step, 0, 40) {
      if (step.attempt() == 1) {
        throw_to_resume_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - thrown).count());
        return;
      }
      const int64_t floats = (static_cast<int64_t>(cap.rlim_cur) - mapped_bytes() + (int64_t{64} << 20)) / 4;
      thrown = Clock::now();
      benchmark::DoNotOptimize(torch::empty({floats}));
    };
    state.PauseTiming();
    setrlimit(RLIMIT_AS, &old);
    for (const auto& incident : session.incidents()) recovery_us += incident.recovery_us;
    recoveries += static_cast<int64_t>(session.incidents().size());
    session_owner.reset();
    state.ResumeTiming();
  }
  if (throw_to_resume_us.empty()) {
    state.SkipWithError("no step ran out of memory");
    return;
  }
  recovery_counters(state, throw_to_resume_us, recovery_us, recoveries);
  state.counters["recoveries"] = static_cast<double>(recoveries);
}
BENCHMARK(BM_OutOfMemoryRecovery)->Unit(benchmark::kMillisecond)->Iterations(10);

}  // namespace

BENCHMARK_MAIN();
