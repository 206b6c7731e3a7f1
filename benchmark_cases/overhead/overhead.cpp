// The steady-state cost of DAIFU_GUARD when nothing fails, for two workloads (docs/performance.md).
//
// Direct: the same training step runs in blocks of N steps, plain (a for loop) and guarded
// (DAIFU_GUARD, the model and the optimizer tracked, report("loss") every step), in the order
// plain/guarded, guarded/plain, ... in one process after a warm-up of both. A step's time runs
// from the start of its body to the start of the next one, so it includes everything the guard
// does between two bodies. The spread between plain blocks is the noise floor; the CPU time other
// processes took meanwhile is reported with it.
// Decomposed: the guard's bookkeeping per step (median step time of an empty body, guarded minus
// plain, same session and tracked state) plus the periodic snapshots the runtime took during the
// guarded blocks, each costed at a loop entry, as a share of the plain mean step time (training
// time, what Options::overhead_budget bounds). Precise where the direct figure is noisy.
// Each guarded block is its own DAIFU_GUARD loop: its entry (a first snapshot) is not in the step
// times and not counted as periodic.
// Detectors: the median step of a body that runs only the silent-fault detectors (before_update()
// on the last training step's gradients, report("loss")), default set against none, as a share
// of the plain mean training step.
//
//   bench_overhead [--reps N] [--cnn-steps N] [--mlp-steps N] [--empty-steps N] [--warmup N]
//                  [--threads N] [--only cnn|mlp] [--json PATH] [--workplace DIR] [--data DIR]
#include "fashion_mnist_data.h"
#include "fashion_net.h"

#include <sys/resource.h>
#include <unistd.h>

#include <daifu/daifu.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: bench_overhead [--reps N] [--cnn-steps N] [--mlp-steps N] [--empty-steps N] [--warmup N]\n"
    "                      [--threads N] [--only cnn|mlp] [--json PATH] [--workplace DIR] [--data DIR]\n";

struct Args {
  int64_t reps = 20;
  int64_t cnn_steps = 50;
  int64_t mlp_steps = 250;
  int64_t warmup = 30;
  int64_t empty_steps = 2000;
  int64_t threads = 2;
  std::string only;
  std::string json;
  std::string workplace = "bench_overhead_workplace";
  std::string data = fashion_mnist::kDefaultDir;
};

// One training step of a model, as a pure function of the global step index.
class Workload {
 public:
  virtual ~Workload() = default;
  virtual std::string name() const = 0;
  virtual std::string description() const = 0;
  virtual torch::nn::Module& model() = 0;
  virtual torch::optim::Optimizer& optimizer() = 0;
  /// Trains on the batch of step `index` and returns the loss.
  virtual double step(int64_t index) = 0;
};

class CnnWorkload final : public Workload {
 public:
  explicit CnnWorkload(const std::string& data_dir)
      : data_(fashion_mnist::load(data_dir, "train")), sampler_(data_.size(), kBatch, /*seed=*/1),
        optimizer_(net_->parameters(), torch::optim::AdamOptions(1e-3)) {}

  std::string name() const override { return "cnn"; }
  std::string description() const override {
    return "Fashion-MNIST CNN (examples/fashion_mnist), batch 64, Adam";
  }
  torch::nn::Module& model() override { return *net_; }
  torch::optim::Optimizer& optimizer() override { return optimizer_; }
  double step(int64_t index) override {
    const fashion_mnist::Batch batch = fashion_mnist::gather(data_, sampler_.indices(index, kBatch));
    optimizer_.zero_grad();
    auto loss = torch::nll_loss(net_->forward(batch.images), batch.labels);
    loss.backward();
    optimizer_.step();
    return loss.item<double>();
  }

 private:
  static constexpr int64_t kBatch = 64;
  fashion_mnist::Dataset data_;
  fashion_mnist::Sampler sampler_;
  fashion_mnist::FashionNet net_;
  torch::optim::Adam optimizer_;
};

class MlpWorkload final : public Workload {
 public:
  MlpWorkload()
      : inputs_(torch::randn({kRows, 256})),
        labels_(inputs_.matmul(torch::randn({256, 10})).argmax(1)),
        net_(torch::nn::Linear(256, 512), torch::nn::ReLU(), torch::nn::Linear(512, 512),
             torch::nn::ReLU(), torch::nn::Linear(512, 10), torch::nn::LogSoftmax(1)),
        optimizer_(net_->parameters(), torch::optim::AdamOptions(1e-3)) {}

  std::string name() const override { return "mlp"; }
  std::string description() const override {
    return "MLP 256-512-512-10 on synthetic data, batch 128, Adam";
  }
  torch::nn::Module& model() override { return *net_; }
  torch::optim::Optimizer& optimizer() override { return optimizer_; }
  double step(int64_t index) override {
    const int64_t first = (index % (kRows / kBatch)) * kBatch;
    optimizer_.zero_grad();
    auto loss = torch::nll_loss(net_->forward(inputs_.narrow(0, first, kBatch)), labels_.narrow(0, first, kBatch));
    loss.backward();
    optimizer_.step();
    return loss.item<double>();
  }

 private:
  static constexpr int64_t kRows = 8192;
  static constexpr int64_t kBatch = 128;
  torch::Tensor inputs_, labels_;
  torch::nn::Sequential net_;
  torch::optim::Adam optimizer_;
};

// CPU seconds used by the whole machine and by this process since construction; their
// difference is what other processes took while a block ran (10 ms resolution).
class CpuProbe {
 public:
  CpuProbe() : machine_(machine_busy()), self_(self_cpu()) {}
  double foreign_seconds() const { return std::max(0.0, (machine_busy() - machine_) - (self_cpu() - self_)); }

 private:
  static double machine_busy() {
    std::ifstream in("/proc/stat");
    std::string cpu;
    double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
    return (user + nice + system + irq + softirq + steal) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  static double self_cpu() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  }
  double machine_, self_;
};

// One block: the time of each step (start of its body to start of the next body, the last one
// to the end of the loop), the time before the first body (loop entry), and the CPU seconds
// other processes took meanwhile.
struct Block {
  std::vector<double> steps;
  double entry = 0;
  double foreign_cpu = 0;
};

Block finish_block(const std::vector<Clock::time_point>& stamps, Clock::time_point begin, const CpuProbe& probe) {
  Block block;
  for (size_t i = 1; i < stamps.size(); ++i) {
    block.steps.push_back(std::chrono::duration<double>(stamps[i] - stamps[i - 1]).count());
  }
  block.entry = std::chrono::duration<double>(stamps.front() - begin).count();
  block.foreign_cpu = probe.foreign_seconds();
  return block;
}

// `step(i)` trains on step i and returns its loss.
template <class StepFn>
Block run_plain(StepFn& step, int64_t first, int64_t count) {
  std::vector<Clock::time_point> stamps;
  stamps.reserve(static_cast<size_t>(count) + 1);
  double sink = 0;
  const CpuProbe probe;
  const auto begin = Clock::now();
  for (int64_t i = first; i < first + count; ++i) {
    stamps.push_back(Clock::now());
    sink += step(i);
  }
  stamps.push_back(Clock::now());
  if (!std::isfinite(sink)) std::fprintf(stderr, "warning: non-finite loss in a plain block\n");
  return finish_block(stamps, begin, probe);
}

template <class StepFn>
Block run_guarded(daifu::Session& session, StepFn& step, int64_t first, int64_t count) {
  std::vector<Clock::time_point> stamps;
  stamps.reserve(static_cast<size_t>(count) + 1);
  const CpuProbe probe;
  const auto begin = Clock::now();
  DAIFU_GUARD(session, s, first, first + count) {
    stamps.push_back(Clock::now());
    session.report("loss", step(s.index()));
  };
  stamps.push_back(Clock::now());
  return finish_block(stamps, begin, probe);
}

// Blocks in the order plain, guarded | guarded, plain | plain, guarded | ...
struct Series {
  std::vector<Block> plain, guarded;
};

template <class StepFn>
Series interleave(daifu::Session& session, StepFn& step, int64_t& next, int64_t steps, int64_t reps) {
  Series series;
  for (int64_t rep = 0; rep < reps; ++rep) {
    for (int half = 0; half < 2; ++half) {
      if ((rep + half) % 2 == 0) series.plain.push_back(run_plain(step, next, steps));
      else series.guarded.push_back(run_guarded(session, step, next, steps));
      next += steps;
    }
  }
  return series;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  const double upper = v[mid];
  if (v.size() % 2 == 1) return upper;
  return (*std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid)) + upper) / 2;
}

double percent(double ratio) { return 100.0 * (ratio - 1.0); }

// Over the blocks of one kind, in seconds: the median and mean step time, per-block medians,
// the median loop entry, and the busy time of other processes.
struct Timing {
  double median = 0, mean = 0, entry = 0, foreign_cpu = 0, busy = 0;
  std::vector<double> block_medians;
};

Timing timing(const std::vector<Block>& blocks) {
  Timing t;
  std::vector<double> all, entries;
  for (const Block& b : blocks) {
    all.insert(all.end(), b.steps.begin(), b.steps.end());
    t.block_medians.push_back(median(b.steps));
    entries.push_back(b.entry);
    t.foreign_cpu += b.foreign_cpu;
  }
  for (double x : all) t.busy += x;
  t.median = median(all);
  t.mean = all.empty() ? 0 : t.busy / static_cast<double>(all.size());
  t.entry = median(entries);
  return t;
}

std::vector<double> scaled(std::vector<double> v, double factor) {
  for (double& x : v) x *= factor;
  return v;
}

// One block of steps whose body runs only the silent-fault detectors: before_update() on the
// gradients the last training step left, and report("loss"). Returns each step's time.
std::vector<double> detector_block(daifu::Session& session, int64_t first, int64_t count, bool before_update) {
  std::vector<Clock::time_point> stamps;
  stamps.reserve(static_cast<size_t>(count) + 1);
  DAIFU_GUARD(session, s, first, first + count) {
    stamps.push_back(Clock::now());
    if (before_update) s.before_update();
    session.report("loss", 1.0 + 1e-3 * static_cast<double>(s.index() % 7));
  };
  stamps.push_back(Clock::now());
  std::vector<double> out;
  for (size_t i = 1; i < stamps.size(); ++i) out.push_back(std::chrono::duration<double>(stamps[i] - stamps[i - 1]).count());
  return out;
}

// The mean step of each run of `group` consecutive steps of `block` (a partial last run is dropped).
std::vector<double> group_means(const std::vector<double>& block, int64_t group) {
  std::vector<double> out;
  for (size_t at = 0; at + static_cast<size_t>(group) <= block.size(); at += static_cast<size_t>(group)) {
    double sum = 0;
    for (size_t i = at; i < at + static_cast<size_t>(group); ++i) sum += block[i];
    out.push_back(sum / static_cast<double>(group));
  }
  return out;
}

// The detectors' cost per step, in seconds: the median over runs of lcm(state_check_every(),
// grad_check_every()) consecutive steps of detector_block() (each run holds the steps with the
// state checks and with all gradients checked, so their cost is counted and a rare snapshot is
// not) in a session with `detectors`, minus that in
// a session with none; blocks interleaved, the same tracked state.
double detector_cost(Workload& w, const daifu::DetectorOptions& detectors, const Args& args, int64_t& next,
                     bool before_update = true) {
  daifu::Session on(daifu::Options().workplace(args.workplace + "/" + w.name() + "-detectors").inject("").detectors(detectors));
  daifu::Session off(daifu::Options().workplace(args.workplace + "/" + w.name() + "-no-detectors").inject("")
                         .detectors(daifu::DetectorOptions::none()));
  for (daifu::Session* s : {&on, &off}) {
    s->track("model", w.model());
    s->track("optimizer", w.optimizer());
  }
  std::vector<double> with, without;
  for (int64_t rep = 0; rep < args.reps; ++rep) {
    for (int half = 0; half < 2; ++half) {
      auto& into = (rep + half) % 2 == 0 ? with : without;
      const auto block = group_means(
          detector_block((rep + half) % 2 == 0 ? on : off, next, args.empty_steps, before_update),
          std::lcm(detectors.state_check_every(), detectors.grad_check_every()));
      into.insert(into.end(), block.begin(), block.end());
      next += args.empty_steps;
    }
  }
  return median(with) - median(without);
}

nlohmann::json measure(Workload& w, daifu::Session& session, const Args& args, int64_t steps) {
  auto train = [&w](int64_t i) { return w.step(i); };
  auto empty = [](int64_t) { return 0.0; };
  int64_t next = 0;
  run_plain(train, next, args.warmup);
  next += args.warmup;
  run_guarded(session, train, next, args.warmup);
  next += args.warmup;

  const int64_t captures_before = session.snapshot_stats().captures;
  const Series series = interleave(session, train, next, steps, args.reps);
  const daifu::SnapshotStats snapshots = session.snapshot_stats();
  // Every guarded block begins with a snapshot (a new loop); the others are the periodic ones.
  const int64_t periodic = snapshots.captures - captures_before - args.reps;
  const double guarded_steps = static_cast<double>(steps * args.reps);
  const daifu::SessionStats stats = session.stats();
  const Timing plain = timing(series.plain), guarded = timing(series.guarded);
  std::vector<double> paired;
  for (size_t r = 0; r < plain.block_medians.size(); ++r) {
    paired.push_back(percent(guarded.block_medians[r] / plain.block_medians[r]));
  }
  const auto [lo, hi] = std::minmax_element(plain.block_medians.begin(), plain.block_medians.end());
  const auto [paired_lo, paired_hi] = std::minmax_element(paired.begin(), paired.end());

  // The guard's bookkeeping per step: the same session and tracked state around an empty body.
  // The median leaves out the rare empty steps that take a snapshot.
  const Series fixed = interleave(session, empty, next, args.empty_steps, args.reps);
  const double bookkeeping = timing(fixed.guarded).median - timing(fixed.plain).median;
  // A capture costs about a loop entry (the entry is a capture plus one journal line).
  const double snapshot_share = guarded.entry * static_cast<double>(periodic) / guarded_steps;

  // The silent-fault detectors: the default set, the same with every check at every step, and
  // Adam's moment bound alone.
  const double detectors = detector_cost(w, daifu::DetectorOptions(), args, next);
  const double every_step = detector_cost(w, daifu::DetectorOptions().state_check_every(1).grad_check_every(1), args, next);
  const double step_end = detector_cost(w, daifu::DetectorOptions(), args, next, /*before_update=*/false);
  const double moments = detector_cost(w, daifu::DetectorOptions::none().adam_moments(true), args, next);

  const double cpus = std::thread::hardware_concurrency();
  return {
      {"workload", w.name()},
      {"description", w.description()},
      {"steps_per_block", steps},
      {"repetitions", args.reps},
      {"plain_median_ms", 1e3 * plain.median},
      {"guarded_median_ms", 1e3 * guarded.median},
      {"overhead_median_pct", percent(guarded.median / plain.median)},
      {"plain_mean_ms", 1e3 * plain.mean},
      {"guarded_mean_ms", 1e3 * guarded.mean},
      {"overhead_mean_pct", percent(guarded.mean / plain.mean)},
      {"paired_overhead_pct_median", median(paired)},
      {"paired_overhead_pct_min", *paired_lo},
      {"paired_overhead_pct_max", *paired_hi},
      {"plain_block_spread_pct", 100.0 * (*hi - *lo) / median(plain.block_medians)},
      {"plain_block_medians_ms", scaled(plain.block_medians, 1e3)},
      {"guarded_block_medians_ms", scaled(guarded.block_medians, 1e3)},
      {"foreign_cpu_pct", 100.0 * (plain.foreign_cpu + guarded.foreign_cpu) / ((plain.busy + guarded.busy) * cpus)},
      {"guard_entry_ms", 1e3 * guarded.entry},
      {"snapshot_every_at_end", snapshots.every},
      {"snapshot_periodic_captures", periodic},
      {"snapshot_effective_every", periodic > 0 ? guarded_steps / static_cast<double>(periodic) : 0.0},
      {"snapshot_last_capture_ms", snapshots.last_capture_ms},
      {"snapshot_bytes", snapshots.bytes},
      {"empty_steps_per_block", args.empty_steps},
      {"bookkeeping_us", 1e6 * bookkeeping},
      {"snapshot_share_us", 1e6 * snapshot_share},
      {"estimated_overhead_pct", 100.0 * (bookkeeping + snapshot_share) / plain.mean},
      {"detectors_default_us", 1e6 * detectors},
      {"detectors_default_pct", 100.0 * detectors / plain.mean},
      {"detectors_every_step_us", 1e6 * every_step},
      {"detectors_every_step_pct", 100.0 * every_step / plain.mean},
      {"detectors_step_end_us", 1e6 * step_end},
      {"detectors_step_end_pct", 100.0 * step_end / plain.mean},
      {"detectors_adam_moments_us", 1e6 * moments},
      {"detectors_adam_moments_pct", 100.0 * moments / plain.mean},
      {"guard_failures", stats.failures},
      {"guard_committed_steps", stats.committed_steps},
  };
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown";
}

void print_table(const nlohmann::json& results) {
  std::printf("\n| workload | steps x reps | plain median | guarded median | overhead (median) "
              "| overhead (mean) | per-rep overhead: median [min, max] | plain block spread "
              "| other processes' CPU |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : results) {
    std::printf("| %s | %lld x %lld | %.3f ms | %.3f ms | %+.2f%% | %+.2f%% | %+.2f%% [%+.2f%%, %+.2f%%] "
                "| %.2f%% | %.1f%% |\n",
                r["workload"].get<std::string>().c_str(), r["steps_per_block"].get<long long>(),
                r["repetitions"].get<long long>(), r["plain_median_ms"].get<double>(),
                r["guarded_median_ms"].get<double>(), r["overhead_median_pct"].get<double>(),
                r["overhead_mean_pct"].get<double>(), r["paired_overhead_pct_median"].get<double>(),
                r["paired_overhead_pct_min"].get<double>(), r["paired_overhead_pct_max"].get<double>(),
                r["plain_block_spread_pct"].get<double>(), r["foreign_cpu_pct"].get<double>());
  }
  std::printf("\n| workload | bookkeeping per step | guard loop entry (= one snapshot) | snapshots taken "
              "| snapshot cost per step | estimated overhead (of mean step) |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const auto& r : results) {
    std::printf("| %s | %.2f us | %.3f ms (%.1f MB) | every %.1f steps | %.2f us | %.3f%% |\n",
                r["workload"].get<std::string>().c_str(), r["bookkeeping_us"].get<double>(),
                r["guard_entry_ms"].get<double>(), r["snapshot_bytes"].get<double>() / 1e6,
                r["snapshot_effective_every"].get<double>(), r["snapshot_share_us"].get<double>(),
                r["estimated_overhead_pct"].get<double>());
  }
  std::printf("\n| workload | plain mean step | default detectors, with before_update() | share "
              "| the same, every check every step | share | default, without before_update() | share "
              "| adam_moments alone | share |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : results) {
    std::printf("| %s | %.3f ms | %.2f us | %.3f%% | %.2f us | %.3f%% | %.2f us | %.3f%% | %.2f us | %.3f%% |\n",
                r["workload"].get<std::string>().c_str(), r["plain_mean_ms"].get<double>(),
                r["detectors_default_us"].get<double>(), r["detectors_default_pct"].get<double>(),
                r["detectors_every_step_us"].get<double>(), r["detectors_every_step_pct"].get<double>(),
                r["detectors_step_end_us"].get<double>(), r["detectors_step_end_pct"].get<double>(),
                r["detectors_adam_moments_us"].get<double>(), r["detectors_adam_moments_pct"].get<double>());
  }
}

int64_t positive(const std::string& name, const std::string& text) {
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < 1) {
    throw std::invalid_argument(name + " wants a positive integer, got \"" + text + "\"");
  }
  return value;
}

std::optional<Args> parse_args(int argc, char** argv) {
  Args args;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string name = argv[i], value;
      if (name == "-h" || name == "--help") {
        std::cout << kUsage;
        std::exit(0);
      }
      if (const auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        throw std::invalid_argument(name + " needs a value");
      }
      if (name == "--reps") args.reps = positive(name, value);
      else if (name == "--cnn-steps") args.cnn_steps = positive(name, value);
      else if (name == "--mlp-steps") args.mlp_steps = positive(name, value);
      else if (name == "--warmup") args.warmup = positive(name, value);
      else if (name == "--empty-steps") args.empty_steps = positive(name, value);
      else if (name == "--threads") args.threads = positive(name, value);
      else if (name == "--json") args.json = value;
      else if (name == "--workplace") args.workplace = value;
      else if (name == "--data") args.data = value;
      else if (name == "--only" && (value == "cnn" || value == "mlp")) args.only = value;
      else throw std::invalid_argument("unknown option or value: " + name + " " + value);
    }
  } catch (const std::invalid_argument& e) {
    std::cerr << "bench_overhead: " << e.what() << "\n" << kUsage;
    return std::nullopt;
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Args> args = parse_args(argc, argv);
  if (!args) return 2;
  at::set_num_threads(static_cast<int>(args->threads));

  std::string command = argv[0];
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  nlohmann::json report = {
      {"command", command},
      {"cpu", cpu_model()},
      {"hardware_threads", std::thread::hardware_concurrency()},
      {"torch_threads", at::get_num_threads()},
      {"warmup_steps", args->warmup},
      {"results", nlohmann::json::array()},
  };

  for (const std::string name : {"cnn", "mlp"}) {
    if (!args->only.empty() && args->only != name) continue;
    torch::manual_seed(0);
    std::unique_ptr<Workload> w;
    if (name == "cnn") w = std::make_unique<CnnWorkload>(args->data);
    else w = std::make_unique<MlpWorkload>();
    // inject(""): no faults, whatever $DAIFU_INJECT says.
    daifu::Session session(daifu::Options().workplace(args->workplace + "/" + name).inject(""));
    session.track("model", w->model());
    session.track("optimizer", w->optimizer());
    std::fprintf(stderr, "%s: %s\n", name.c_str(), w->description().c_str());
    report["results"].push_back(measure(*w, session, *args, name == "cnn" ? args->cnn_steps : args->mlp_steps));
  }

  std::printf("cpu: %s, %u hardware threads, torch threads %d\ncommand: %s\n",
              report["cpu"].get<std::string>().c_str(), std::thread::hardware_concurrency(),
              at::get_num_threads(), command.c_str());
  print_table(report["results"]);
  for (const auto& r : report["results"]) {
    if (r["guard_failures"].get<int64_t>() != 0) {
      std::printf("\nwarning: %s: the guard saw %lld failure(s) during the measurement\n",
                  r["workload"].get<std::string>().c_str(), r["guard_failures"].get<long long>());
    }
  }
  if (!args->json.empty()) {
    std::ofstream out(args->json);
    out << report.dump(2) << "\n";
    if (!out) {
      std::cerr << "bench_overhead: cannot write " << args->json << "\n";
      return 1;
    }
  }
  return 0;
}
