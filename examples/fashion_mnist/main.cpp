// The "main job": a small CNN trained on Fashion-MNIST under DAIFU_GUARD. Faults come from
// $DAIFU_INJECT, or from a demo plan when it is unset; daifu's built-in surgeries repair them
// (a batch with NaN is skipped, a missing directory created, an I/O error retried, an
// out-of-memory step retried at half the batch); at the end: test accuracy, wall time and
// every failure and its repair.
//
//   fashion_mnist [--epochs N] [--steps N] [--batch-size N] [--workplace DIR] [--threads N]
//                 [--data DIR]
//   DAIFU_INJECT="" fashion_mnist        # no faults at all
#include "fashion_mnist_data.h"
#include "fashion_net.h"
#include "progress.h"

#include <daifu/daifu.h>
#include <torch/torch.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>

namespace {

constexpr const char* kUsage =
    "usage: fashion_mnist [--epochs N] [--steps N] [--batch-size N] [--workplace DIR]\n"
    "                     [--threads N] [--data DIR]\n";
constexpr const char* kDemoFaults = "transient@40, nan_data@90, path@120, io@150, transient@151";

struct Args {
  int64_t epochs = 1;
  int64_t steps = 0;  ///< cap on the number of steps; 0: all steps of all epochs
  int64_t batch_size = 64;
  std::string workplace = "daifu_workplace";
  int64_t threads = 2;
  std::string data = fashion_mnist::kDefaultDir;
};

int64_t positive(const std::string& name, const std::string& text) {
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < 1) {
    throw std::invalid_argument(name + " wants a positive integer, got \"" + text + "\"");
  }
  return value;
}

// Accepts `--name value` and `--name=value`. Prints why and returns nullopt on a bad command line.
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
      if (name == "--epochs") args.epochs = positive(name, value);
      else if (name == "--steps") args.steps = positive(name, value);
      else if (name == "--batch-size") args.batch_size = positive(name, value);
      else if (name == "--threads") args.threads = positive(name, value);
      else if (name == "--workplace") args.workplace = value;
      else if (name == "--data") args.data = value;
      else throw std::invalid_argument("unknown option " + name);
    }
  } catch (const std::invalid_argument& e) {
    std::cerr << "fashion_mnist: " << e.what() << "\n" << kUsage;
    return std::nullopt;
  }
  return args;
}

int train(const Args& args) {
  at::set_num_threads(static_cast<int>(args.threads));
  torch::manual_seed(1);
  const fashion_mnist::Dataset train_set = fashion_mnist::load(args.data, "train");
  const fashion_mnist::Dataset test_set = fashion_mnist::load(args.data, "t10k");
  fashion_mnist::Sampler sampler(train_set.size(), args.batch_size, /*seed=*/1);
  const int64_t all_steps = args.epochs * sampler.steps_per_epoch();
  const int64_t total = args.steps > 0 ? std::min(args.steps, all_steps) : all_steps;

  fashion_mnist::FashionNet model;
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-3));

  const char* env_faults = std::getenv("DAIFU_INJECT");
  const std::string faults = env_faults != nullptr ? env_faults : kDemoFaults;
  daifu::Options options = daifu::Options().workplace(args.workplace);
  if (env_faults == nullptr) options.inject(faults);
  daifu::Session session(options);
  session.track("model", *model);
  session.track("optimizer", optimizer);
  // The out-of-memory surgery halves it, down to 16 (try DAIFU_INJECT="oom@100").
  auto& batch_size = session.knob<int64_t>("batch_size", args.batch_size).min(std::min<int64_t>(16, args.batch_size));

  std::printf("Fashion-MNIST: %lld steps of %lld images, %lld thread(s), faults: %s, workplace %s\n",
              static_cast<long long>(total), static_cast<long long>(args.batch_size),
              static_cast<long long>(args.threads), faults.empty() ? "none" : faults.c_str(),
              session.workplace().c_str());
  Progress progress(total, sampler.steps_per_epoch());
  const auto start = std::chrono::steady_clock::now();

  DAIFU_GUARD(session, step, 0, total) {
    const int64_t b = batch_size.get();
    // Gathered once per step: a retry trains on the very same samples (the out-of-memory
    // surgery drops it when it shrinks the batch, and the retry gathers b/2 samples).
    const auto& batch = step.once("batch", [&] {
      return fashion_mnist::gather(train_set, sampler.indices(step.index(), b));
    });
    optimizer.zero_grad();
    // A point where a value fault may be injected (try DAIFU_INJECT="nanx16:out:input@300").
    const auto images = step.probe("input", batch.images);
    auto loss = torch::nll_loss(model->forward(images), batch.labels);
    daifu::check_finite(loss, "loss");  // NaN data: the step is skipped before it reaches the weights
    loss.backward();
    step.before_update();  // silent-fault detectors: non-finite or spiking gradients
    optimizer.step();
    const double value = loss.item<double>();
    session.report("loss", value);
    progress.update(step.index(), value, session.stats().failures);
  };

  progress.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double accuracy = fashion_mnist::test_accuracy(model, test_set);
  const daifu::SessionStats stats = session.stats();
  std::printf("trained %lld steps in %.1f s (%.1f steps/s); %lld skipped\n",
              static_cast<long long>(stats.committed_steps), seconds,
              static_cast<double>(stats.committed_steps) / seconds,
              static_cast<long long>(stats.skipped_steps));
  std::printf("test accuracy: %.2f%% on %lld images\n", 100.0 * accuracy,
              static_cast<long long>(test_set.size()));
  std::cout << session.summary();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Args> args = parse_args(argc, argv);
  if (!args) return 2;
  return daifu::run_main(args->workplace, [&] { return train(*args); });
}
