// Snapshot costs on a 10M-parameter MLP + Adam (120 MB of state), measured side by side in
// one run: capture vs memcpy of the same bytes, restore, resident memory, and recovery after a
// failure vs restarting the process from a torch::save checkpoint. Results: docs/performance.md.
//
// Usage: bench_snapshot [--json FILE] [--repeats N]
//        bench_snapshot --restart-child CHECKPOINT STEPS   (the baseline's restarted process)
#include <daifu/daifu.h>

#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// ~10.5M parameters.
torch::nn::Sequential make_mlp() {
  torch::manual_seed(0);
  return torch::nn::Sequential(torch::nn::Linear(1024, 4096), torch::nn::ReLU(), torch::nn::Linear(4096, 1024),
                               torch::nn::ReLU(), torch::nn::Linear(1024, 512), torch::nn::ReLU(),
                               torch::nn::Linear(512, 10));
}

struct Batch {
  torch::Tensor x, y;
};
Batch batch_of(int64_t step) {
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(step));
  return {torch::randn({64, 1024}, gen), torch::randint(0, 10, {64}, gen)};
}

void train_step(torch::nn::Sequential& net, torch::optim::Optimizer& opt, int64_t step) {
  const auto b = batch_of(step);
  opt.zero_grad();
  torch::nn::functional::cross_entropy(net->forward(b.x), b.y).backward();
  opt.step();
}

int64_t state_bytes(torch::nn::Sequential& net) {
  int64_t n = 0;
  for (const auto& p : net->parameters()) n += p.nbytes();
  return n * 3;  // parameters + Adam's two moments
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      long kib = 0;
      in >> kib;
      return kib;
    }
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

int restart_child(const std::string& checkpoint, int64_t steps) {
  auto net = make_mlp();
  torch::optim::Adam opt(net->parameters());
  torch::load(net, checkpoint + ".model");
  torch::load(opt, checkpoint + ".optim");
  for (int64_t s = 0; s < steps; ++s) train_step(net, opt, s);
  return 0;
}

// Wall time of a new process that loads the checkpoint and runs `steps` steps.
double restart_ms(const char* self, const std::string& checkpoint, int64_t steps) {
  const auto t = Clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string s = std::to_string(steps);
    ::execl(self, self, "--restart-child", checkpoint.c_str(), s.c_str(), nullptr);
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return ms_since(t);
}

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(2);
  if (argc == 4 && std::string(argv[1]) == "--restart-child") return restart_child(argv[2], std::atoll(argv[3]));
  std::string json_path;
  int repeats = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--json") json_path = argv[i + 1];
    if (std::string(argv[i]) == "--repeats") repeats = std::atoi(argv[i + 1]);
  }
  const auto dir = std::filesystem::temp_directory_path() / "daifu_bench_snapshot";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  auto net = make_mlp();
  torch::optim::Adam opt(net->parameters());
  const auto step_t = Clock::now();
  train_step(net, opt, 0);  // creates Adam's state
  train_step(net, opt, 1);
  const double step_ms = ms_since(step_t) / 2;
  const int64_t bytes = state_bytes(net);

  // 1. memcpy of the same tensors into preallocated buffers (the bound for a copy).
  std::vector<torch::Tensor> sources;
  for (const auto& p : net->parameters()) sources.push_back(p);
  for (const auto& [key, state] : opt.state()) {
    auto& adam = static_cast<torch::optim::AdamParamState&>(*state);
    sources.push_back(adam.exp_avg());
    sources.push_back(adam.exp_avg_sq());
  }
  std::vector<std::vector<char>> targets;
  for (const auto& s : sources) targets.emplace_back(s.nbytes(), 1);  // touched: no first-touch faults
  std::vector<double> memcpy_ms;
  for (int r = 0; r < repeats; ++r) {
    const auto t = Clock::now();
    for (std::size_t i = 0; i < sources.size(); ++i) std::memcpy(targets[i].data(), sources[i].data_ptr(), sources[i].nbytes());
    memcpy_ms.push_back(ms_since(t));
  }
  targets.clear();

  // 2. daifu capture and restore, through the public API: a snapshot every step, and a failure
  // after the update that rolls back to it.
  const long rss_before = rss_kib();
  daifu::Session session(daifu::Options().workplace((dir / "wp").string()).snapshot_every(1).inject(""));
  session.track("model", *net);
  session.track("optimizer", opt);
  session.surgeries().add("retry", [](const daifu::Failure&) { return true; },
                          [](daifu::RepairContext&) { return daifu::Action::Retry; });
  std::vector<double> capture_ms, restore_ms, rollback_recovery_ms;
  Clock::time_point thrown;
  DAIFU_GUARD(session, step, 0, repeats + 1) {
    if (step.attempt() == 1) rollback_recovery_ms.push_back(ms_since(thrown));
    if (step.index() > 0 && step.attempt() == 0) capture_ms.push_back(session.snapshot_stats().last_capture_ms);
    {
      torch::NoGradGuard no_grad;
      net->parameters()[0].add_(0);  // an in-place update: the step has modified the state
    }
    if (step.attempt() == 0) {
      thrown = Clock::now();
      throw std::runtime_error("failure after the update");
    }
    restore_ms.push_back(session.snapshot_stats().last_restore_ms);
  };
  const long rss_after = rss_kib();
  const auto stats = session.snapshot_stats();

  // 3. A failure before the update: retried in place, nothing restored.
  std::vector<double> retry_us;
  {
    daifu::Session plain(daifu::Options().workplace((dir / "wp2").string()).inject(""));
    plain.track("model", *net);
    plain.track("optimizer", opt);
    Clock::time_point t;
    DAIFU_GUARD(plain, step, 0, repeats) {
      if (step.attempt() == 1) {
        retry_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
        return;
      }
      t = Clock::now();
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), "loader");
    };
  }

  // 4. The checkpoint-retry baseline: a new process loads a torch::save checkpoint of the same
  // state (and runs no step, like daifu's rollback to the snapshot of the failing step).
  const std::string checkpoint = (dir / "checkpoint").string();
  const auto save_t = Clock::now();
  torch::save(net, checkpoint + ".model");
  torch::save(opt, checkpoint + ".optim");
  const double save_ms = ms_since(save_t);
  std::vector<double> restart;
  for (int r = 0; r < std::max(2, repeats / 2); ++r) restart.push_back(restart_ms(argv[0], checkpoint, 0));

  const double mb = bytes / 1e6;
  const double memcpy_med = median(memcpy_ms), capture_med = median(capture_ms);
  const double restore_med = median(restore_ms), rollback_med = median(rollback_recovery_ms);
  const double retry_med = median(retry_us), restart_med = median(restart);
  std::cout << "| measurement (10.5M-parameter MLP + Adam, " << mb << " MB of state, 2 threads) | value |\n"
            << "|---|---|\n"
            << "| training step (batch 64) | " << step_ms << " ms |\n"
            << "| memcpy of the same bytes into touched buffers (1 thread) | " << memcpy_med << " ms (" << mb / memcpy_med
            << " GB/s) |\n"
            << "| daifu capture (parallel memcpy into reused host buffers) | " << capture_med << " ms (" << mb / capture_med
            << " GB/s) |\n"
            << "| capture throughput / memcpy throughput | " << memcpy_med / capture_med << " |\n"
            << "| daifu restore | " << restore_med << " ms |\n"
            << "| snapshot host memory (snapshot_stats().bytes) | " << stats.bytes / 1e6 << " MB |\n"
            << "| resident memory added by the session (VmRSS) | " << (rss_after - rss_before) / 1024.0 << " MB |\n"
            << "| recovery, failure before the update (throw -> step running again) | " << retry_med << " us |\n"
            << "| recovery, failure after the update (throw -> restored, step running again) | " << rollback_med
            << " ms |\n"
            << "| torch::save of the same state | " << save_ms << " ms |\n"
            << "| restart: new process + torch::load of the checkpoint | " << restart_med << " ms |\n"
            << "| restart / daifu retry (failure before the update) | " << restart_med * 1000 / retry_med << "x |\n"
            << "| restart / daifu rollback (failure after the update) | " << restart_med / rollback_med << "x |\n";
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\"state_mb\": " << mb << ", \"step_ms\": " << step_ms << ", \"memcpy_ms\": " << memcpy_med
        << ", \"capture_ms\": " << capture_med << ", \"restore_ms\": " << restore_med
        << ", \"snapshot_mb\": " << stats.bytes / 1e6 << ", \"rss_added_mb\": " << (rss_after - rss_before) / 1024.0
        << ", \"retry_us\": " << retry_med << ", \"rollback_ms\": " << rollback_med << ", \"save_ms\": " << save_ms
        << ", \"restart_ms\": " << restart_med << "}\n";
  }
  return 0;
}
