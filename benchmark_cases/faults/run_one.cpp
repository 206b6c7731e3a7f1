// One run of the silent-fault campaign (docs/silent-faults.md#the-campaign): a workload of the
// crash benchmark trained with at most one value fault, plain or guarded; prints one JSON line.
//
//   fault_campaign_run --workload cnn|lm|gan --mode plain|guarded --workplace DIR
//                      [--seed S] [--fault PLAN] [--fault-seed N] [--steps N]
//   fault_campaign_run --targets WORKLOAD   # what a fault may hit: {"probes": [...], "params": [...]}
//
// Both modes inject through daifu (Options::inject with PLAN, a value fault such as
// "flip30:grad:model.fc1.weight@120*", its random choices drawn from --fault-seed).
// plain: nothing looks for the fault: no detectors and one attempt per step, so an exception
// ends the run ("crashed"), as it would end a program without daifu. guarded: the default
// options (the default detectors), Step::before_update() before each optimizer step.
// --seed seeds libtorch once the data is read: the initial weights (and the GAN's noise)
// differ per seed, the data order is the workload's. One intra-op thread (the driver runs two
// of these at a time on two cores). The runs are short, so that thousands fit in a few hours:
// 150 CNN steps (accuracy on the first 2,000 test images), 80 LM steps, 500 GAN steps.
#include "workloads/cnn.h"
#include "workloads/gan.h"
#include "workloads/lm.h"

#include <daifu/daifu.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

/// The workloads' probe points as daifu's Step::probe of `step`.
crash::Probe probe_of(daifu::Step& step) {
  return [&step](const char* name, torch::Tensor t) { return step.probe(name, t); };
}

/// A workload as the campaign trains it.
class Workload {
 public:
  virtual ~Workload() = default;
  /// Steps per run: short enough for thousands of runs, long enough to see a fault degrade.
  virtual int64_t default_steps() const = 0;
  /// Tracks its modules and optimizers.
  virtual void track(daifu::Session& session) = 0;
  /// Trains step `step`, probing its layer outputs; calls step.before_update() before each
  /// optimizer step when `check`. Returns the step's loss.
  virtual double train(daifu::Step& step, bool check) = 0;
  virtual double quality() = 0;
  virtual const char* quality_name() const = 0;
  virtual bool higher_is_better() const = 0;
  virtual std::vector<std::string> probes() const = 0;
  /// The modules, by tracked name: every parameter and buffer must stay finite.
  virtual std::vector<std::pair<std::string, torch::nn::Module*>> modules() = 0;
};

class Cnn final : public Workload {
 public:
  Cnn() : data_(crash::cnn::load()) {
    data_.test = {data_.test.images.narrow(0, 0, kTestImages), data_.test.labels.narrow(0, 0, kTestImages)};
  }
  void make_model() {
    net_ = crash::cnn::Net();
    optimizer_ = std::make_unique<torch::optim::Adam>(net_->parameters(), crash::cnn::kLearningRate);
  }
  int64_t default_steps() const override { return 150; }
  void track(daifu::Session& session) override {
    session.track("model", *net_);
    session.track("optimizer", *optimizer_);
  }
  double train(daifu::Step& step, bool check) override {
    auto batch = crash::cnn::batch(data_, step.index());
    optimizer_->zero_grad();
    auto loss = torch::nll_loss(net_->forward(batch.images, probe_of(step)), batch.labels);
    loss.backward();
    if (check) step.before_update();
    optimizer_->step();
    return loss.item<double>();
  }
  double quality() override { return crash::cnn::accuracy(net_, data_.test); }
  const char* quality_name() const override { return "accuracy"; }
  bool higher_is_better() const override { return true; }
  std::vector<std::string> probes() const override { return {"input", "conv1.out", "conv2.out", "fc1.out", "fc2.out"}; }
  std::vector<std::pair<std::string, torch::nn::Module*>> modules() override { return {{"model", net_.get()}}; }

  static constexpr int64_t kTestImages = 2000;

 private:
  crash::cnn::Data data_;
  crash::cnn::Net net_{nullptr};
  std::unique_ptr<torch::optim::Adam> optimizer_;
};

class Lm final : public Workload {
 public:
  Lm() : data_(crash::lm::load()) {}
  void make_model() {
    net_ = crash::lm::Net();
    optimizer_ = std::make_unique<torch::optim::Adam>(net_->parameters(), crash::lm::kLearningRate);
  }
  int64_t default_steps() const override { return 80; }
  void track(daifu::Session& session) override {
    session.track("model", *net_);
    session.track("optimizer", *optimizer_);
  }
  double train(daifu::Step& step, bool check) override {
    const auto [input, target] = crash::lm::batch(data_, step.index());
    optimizer_->zero_grad();
    auto loss = crash::lm::loss(std::get<0>(net_->forward(input, {}, probe_of(step))), target);
    loss.backward();
    if (check) step.before_update();
    optimizer_->step();
    return loss.item<double>();
  }
  double quality() override { return crash::lm::bits_per_char(net_, data_.corpus); }
  const char* quality_name() const override { return "bits_per_char"; }
  bool higher_is_better() const override { return false; }
  std::vector<std::string> probes() const override { return {"embed.out", "gru.out", "head.out"}; }
  std::vector<std::pair<std::string, torch::nn::Module*>> modules() override { return {{"model", net_.get()}}; }

 private:
  crash::lm::Data data_;
  crash::lm::Net net_{nullptr};
  std::unique_ptr<torch::optim::Adam> optimizer_;
};

class Gan final : public Workload {
 public:
  Gan() : data_(crash::gan::load()) {}
  void make_model() {
    generator_ = crash::gan::Generator();
    discriminator_ = crash::gan::Discriminator();
    g_optimizer_ = std::make_unique<torch::optim::Adam>(generator_->parameters(), crash::gan::adam_options());
    d_optimizer_ = std::make_unique<torch::optim::Adam>(discriminator_->parameters(), crash::gan::adam_options());
  }
  int64_t default_steps() const override { return 500; }
  void track(daifu::Session& session) override {
    session.track("generator", *generator_);
    session.track("discriminator", *discriminator_);
    session.track("g_optimizer", *g_optimizer_);
    session.track("d_optimizer", *d_optimizer_);
  }
  // The crash benchmark's GAN step, with both gradients zeroed first: the first
  // before_update() sees the discriminator's gradients, the second adds the generator's (and
  // what g_loss put into the discriminator's, which its next step zeroes).
  double train(daifu::Step& step, bool check) override {
    namespace gan = crash::gan;
    const auto probe = probe_of(step);
    const auto real = gan::real_batch(data_, step.index());
    const int64_t b = real.size(0);
    const auto fake = generator_->forward(gan::noise(b), probe);
    d_optimizer_->zero_grad();
    g_optimizer_->zero_grad();
    auto d_loss = gan::bce(discriminator_->forward(real, probe), torch::ones({b, 1})) +
                  gan::bce(discriminator_->forward(fake.detach(), probe), torch::zeros({b, 1}));
    d_loss.backward();
    if (check) step.before_update();
    d_optimizer_->step();
    double loss = d_loss.item<double>();
    if (step.index() >= gan::kWarmupSteps) {
      auto g_loss = gan::bce(discriminator_->forward(fake, probe), torch::ones({b, 1}));
      g_loss.backward();
      if (check) step.before_update();
      g_optimizer_->step();
      loss += g_loss.item<double>();
    }
    return loss;
  }
  double quality() override { return crash::gan::frechet_distance(generator_, data_); }
  const char* quality_name() const override { return "frechet_distance"; }
  bool higher_is_better() const override { return false; }
  std::vector<std::string> probes() const override { return {"g.fc1.out", "g.fc2.out", "d.fc1.out", "d.fc2.out"}; }
  std::vector<std::pair<std::string, torch::nn::Module*>> modules() override {
    return {{"generator", generator_.get()}, {"discriminator", discriminator_.get()}};
  }

 private:
  crash::gan::Data data_;
  crash::gan::Generator generator_{nullptr};
  crash::gan::Discriminator discriminator_{nullptr};
  std::unique_ptr<torch::optim::Adam> g_optimizer_, d_optimizer_;
};

/// Reads the workload's data, seeds libtorch with `seed` and builds its models.
std::unique_ptr<Workload> make_workload(const std::string& name, uint64_t seed) {
  const auto build = [&](auto workload) {
    torch::manual_seed(seed);
    workload->make_model();
    return std::unique_ptr<Workload>(std::move(workload));
  };
  if (name == "cnn") return build(std::make_unique<Cnn>());
  if (name == "lm") return build(std::make_unique<Lm>());
  if (name == "gan") return build(std::make_unique<Gan>());
  throw std::invalid_argument("unknown workload \"" + name + "\" (cnn, lm, gan)");
}

bool all_finite(Workload& w) {
  torch::NoGradGuard no_grad;
  for (auto& [name, module] : w.modules()) {
    for (const auto& p : module->parameters()) {
      if (!torch::isfinite(p).all().item<bool>()) return false;
    }
    for (const auto& b : module->buffers()) {
      if (b.is_floating_point() && !torch::isfinite(b).all().item<bool>()) return false;
    }
  }
  return true;
}

struct Args {
  std::string workload, mode, fault, workplace, targets;
  uint64_t seed = 1, fault_seed = 0;
  int64_t steps = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--workload") a.workload = value;
    else if (flag == "--mode") a.mode = value;
    else if (flag == "--fault") a.fault = value;
    else if (flag == "--workplace") a.workplace = value;
    else if (flag == "--targets") a.targets = value;
    else if (flag == "--seed") a.seed = std::stoull(value);
    else if (flag == "--fault-seed") a.fault_seed = std::stoull(value);
    else if (flag == "--steps") a.steps = std::stoll(value);
    else throw std::invalid_argument("unknown flag " + flag);
  }
  if (a.targets.empty() && (a.workload.empty() || (a.mode != "plain" && a.mode != "guarded") || a.workplace.empty())) {
    throw std::invalid_argument("need --workload, --mode plain|guarded and --workplace (or --targets WORKLOAD)");
  }
  return a;
}

/// The detections, failures and injections the run's journal holds.
void read_journal(const std::filesystem::path& workplace, nlohmann::json& out) {
  nlohmann::json detections = nlohmann::json::array();
  int64_t injected = 0, missed = 0;
  std::ifstream in(workplace / "journal.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) continue;
    const std::string event = j.value("event", "");
    if (event == "detection") {
      detections.push_back({{"detector", j.value("detector", "")}, {"step", j.value("step", -1)},
                            {"attempt", j.value("attempt", 0)}});
    } else if (event == "injected") {
      ++injected;
    } else if (event == "injection_missed") {
      ++missed;
    }
  }
  out["detections"] = detections;
  out["injected"] = injected;
  out["injection_missed"] = missed;
}

int run(const Args& a) {
  torch::set_num_threads(1);
  auto workload = make_workload(a.workload, a.seed);
  const int64_t steps = a.steps > 0 ? a.steps : workload->default_steps();
  const bool guarded = a.mode == "guarded";
  daifu::InjectionPlan plan = daifu::parse_plan(a.fault);
  for (auto& f : plan.values) f.seed = a.fault_seed;
  if (!plan.crashes.empty()) throw std::invalid_argument("the campaign injects value faults only: " + a.fault);

  std::filesystem::remove_all(a.workplace);
  daifu::Options options;
  options.workplace(a.workplace).inject("").on_unrecovered(daifu::OnUnrecovered::Rethrow);
  for (const auto& f : plan.values) options.inject(f);
  if (!guarded) options.detectors(daifu::DetectorOptions::none()).max_attempts(1);

  nlohmann::json out = {{"workload", a.workload}, {"mode", a.mode},      {"seed", a.seed},
                        {"fault", a.fault},       {"fault_seed", a.fault_seed}, {"steps", steps}};
  int64_t first_nonfinite = -1;
  const auto started = Clock::now();
  {
    daifu::Session session(options);
    workload->track(session);
    try {
      DAIFU_GUARD(session, step, 0, steps) {
        const double loss = workload->train(step, guarded);
        session.report("loss", loss);
        if (!std::isfinite(loss) && first_nonfinite < 0) first_nonfinite = step.index();
      };
      out["crashed"] = false;
    } catch (const std::exception& e) {
      out["crashed"] = true;
      out["error"] = std::string(e.what()).substr(0, 300);
    }
    const auto stats = session.stats();
    out["committed_steps"] = stats.committed_steps;
    out["failures"] = stats.failures;
    out["retries"] = stats.retries;
    out["rollbacks"] = stats.rollbacks;
    out["skipped_steps"] = stats.skipped_steps;
  }
  out["train_s"] = std::chrono::duration<double>(Clock::now() - started).count();
  read_journal(a.workplace, out);
  out["first_nonfinite_loss_step"] = first_nonfinite;
  out["weights_finite"] = all_finite(*workload);
  double q = NAN;
  try {
    q = workload->quality();
  } catch (const std::exception& e) {  // e.g. an eigendecomposition of non-finite features
    out["quality_error"] = std::string(e.what()).substr(0, 300);
  }
  out["quality_name"] = workload->quality_name();
  out["higher_is_better"] = workload->higher_is_better();
  out["quality"] = std::isfinite(q) ? nlohmann::json(q) : nlohmann::json(nullptr);
  out["wall_s"] = std::chrono::duration<double>(Clock::now() - started).count();
  std::cout << out.dump() << std::endl;
  return 0;
}

int targets(const std::string& name) {
  auto workload = make_workload(name, 1);
  nlohmann::json params = nlohmann::json::array();
  for (auto& [tracked, module] : workload->modules()) {
    for (const auto& item : module->named_parameters()) params.push_back(tracked + "." + item.key());
  }
  std::cout << nlohmann::json{{"workload", name}, {"probes", workload->probes()}, {"params", params},
                              {"steps", workload->default_steps()}}
                   .dump()
            << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    return a.targets.empty() ? run(a) : targets(a.targets);
  } catch (const std::exception& e) {
    std::cerr << "fault_campaign_run: " << e.what() << "\n";
    return 2;
  }
}
