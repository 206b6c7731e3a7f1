// The steady-state cost of DAIFU_GUARD when nothing fails. For each workload the same training
// step runs in blocks of N steps, plain (a for loop) and guarded (DAIFU_GUARD, the model and the
// optimizer tracked, report("loss") every step), alternating plain/guarded, guarded/plain, ...
// in one process after a warm-up of both. A step's time runs from the start of its body to the
// start of the next one, so it includes everything the guard does between two bodies.
//
//   bench_overhead [--reps N] [--cnn-steps N] [--mlp-steps N] [--warmup N] [--threads N]
//                  [--only cnn|mlp] [--json PATH] [--workplace DIR] [--data DIR]
#include "fashion_mnist_data.h"
#include "fashion_net.h"

#include <daifu/daifu.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: bench_overhead [--reps N] [--cnn-steps N] [--mlp-steps N] [--warmup N] [--threads N]\n"
    "                      [--only cnn|mlp] [--json PATH] [--workplace DIR] [--data DIR]\n";

struct Args {
  int64_t reps = 5;
  int64_t cnn_steps = 100;
  int64_t mlp_steps = 400;
  int64_t warmup = 30;
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

// Step times (seconds) and wall time of one block.
struct Block {
  std::vector<double> steps;
  double wall = 0;
};

std::vector<double> step_times(const std::vector<Clock::time_point>& stamps) {
  std::vector<double> times;
  for (size_t i = 1; i < stamps.size(); ++i) times.push_back(std::chrono::duration<double>(stamps[i] - stamps[i - 1]).count());
  return times;
}

Block run_plain(Workload& w, int64_t first, int64_t count) {
  std::vector<Clock::time_point> stamps;
  stamps.reserve(static_cast<size_t>(count) + 1);
  double sink = 0;
  const auto begin = Clock::now();
  for (int64_t i = first; i < first + count; ++i) {
    stamps.push_back(Clock::now());
    sink += w.step(i);
  }
  stamps.push_back(Clock::now());
  if (!std::isfinite(sink)) std::fprintf(stderr, "warning: %s: non-finite loss\n", w.name().c_str());
  return {step_times(stamps), std::chrono::duration<double>(stamps.back() - begin).count()};
}

Block run_guarded(Workload& w, daifu::Session& session, int64_t first, int64_t count) {
  std::vector<Clock::time_point> stamps;
  stamps.reserve(static_cast<size_t>(count) + 1);
  const auto begin = Clock::now();
  DAIFU_GUARD(session, step, first, first + count) {
    stamps.push_back(Clock::now());
    session.report("loss", w.step(step.index()));
  };
  stamps.push_back(Clock::now());
  return {step_times(stamps), std::chrono::duration<double>(stamps.back() - begin).count()};
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

nlohmann::json measure(Workload& w, daifu::Session& session, const Args& args, int64_t steps) {
  int64_t next = 0;
  run_plain(w, next, args.warmup);
  next += args.warmup;
  run_guarded(w, session, next, args.warmup);
  next += args.warmup;

  std::vector<Block> plain, guarded;
  for (int64_t rep = 0; rep < args.reps; ++rep) {
    for (int half = 0; half < 2; ++half) {
      if ((rep + half) % 2 == 0) plain.push_back(run_plain(w, next, steps));
      else guarded.push_back(run_guarded(w, session, next, steps));
      next += steps;
    }
    std::fprintf(stderr, "  %s: repetition %lld/%lld done\n", w.name().c_str(),
                 static_cast<long long>(rep + 1), static_cast<long long>(args.reps));
  }

  std::vector<double> all_plain, all_guarded, plain_medians, guarded_medians, paired;
  double plain_wall = 0, guarded_wall = 0;
  for (size_t r = 0; r < plain.size(); ++r) {
    all_plain.insert(all_plain.end(), plain[r].steps.begin(), plain[r].steps.end());
    all_guarded.insert(all_guarded.end(), guarded[r].steps.begin(), guarded[r].steps.end());
    plain_medians.push_back(median(plain[r].steps));
    guarded_medians.push_back(median(guarded[r].steps));
    paired.push_back(percent(guarded_medians.back() / plain_medians.back()));
    plain_wall += plain[r].wall;
    guarded_wall += guarded[r].wall;
  }
  const double plain_median = median(all_plain), guarded_median = median(all_guarded);
  const auto [lo, hi] = std::minmax_element(plain_medians.begin(), plain_medians.end());
  const auto [paired_lo, paired_hi] = std::minmax_element(paired.begin(), paired.end());
  const daifu::SessionStats stats = session.stats();

  return {
      {"workload", w.name()},
      {"description", w.description()},
      {"steps_per_block", steps},
      {"repetitions", args.reps},
      {"plain_median_ms", 1e3 * plain_median},
      {"guarded_median_ms", 1e3 * guarded_median},
      {"overhead_median_pct", percent(guarded_median / plain_median)},
      {"plain_mean_ms", 1e3 * plain_wall / static_cast<double>(all_plain.size())},
      {"guarded_mean_ms", 1e3 * guarded_wall / static_cast<double>(all_guarded.size())},
      {"overhead_mean_pct", percent(guarded_wall / plain_wall)},
      {"paired_overhead_pct_min", *paired_lo},
      {"paired_overhead_pct_max", *paired_hi},
      {"plain_block_spread_pct", 100.0 * (*hi - *lo) / median(plain_medians)},
      {"plain_block_medians_ms", [&] { auto v = plain_medians; for (auto& x : v) x *= 1e3; return v; }()},
      {"guarded_block_medians_ms", [&] { auto v = guarded_medians; for (auto& x : v) x *= 1e3; return v; }()},
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
              "| overhead (mean) | per-rep overhead | plain block spread |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : results) {
    std::printf("| %s | %lld x %lld | %.3f ms | %.3f ms | %+.2f%% | %+.2f%% | %+.2f%% .. %+.2f%% | %.2f%% |\n",
                r["workload"].get<std::string>().c_str(), r["steps_per_block"].get<long long>(),
                r["repetitions"].get<long long>(), r["plain_median_ms"].get<double>(),
                r["guarded_median_ms"].get<double>(), r["overhead_median_pct"].get<double>(),
                r["overhead_mean_pct"].get<double>(), r["paired_overhead_pct_min"].get<double>(),
                r["paired_overhead_pct_max"].get<double>(), r["plain_block_spread_pct"].get<double>());
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
