#include "case.h"
#include "environment.h"

#include <boost/core/demangle.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <unistd.h>

namespace crash {
namespace {

std::map<std::pair<std::string, Variant>, Program>& registry() {
  static std::map<std::pair<std::string, Variant>, Program> programs;
  return programs;
}

Variant parse_variant(const std::string& text) {
  if (text == "buggy") return Variant::Buggy;
  if (text == "fixed") return Variant::Fixed;
  if (text == "guarded") return Variant::Guarded;
  throw std::invalid_argument("the variant must be buggy, fixed or guarded, not \"" + text + "\"");
}

int64_t parse_int(const std::string& name, const std::string& text, int64_t min) {
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < min) {
    throw std::invalid_argument(name + " wants an integer >= " + std::to_string(min) + ", got \"" + text + "\"");
  }
  return value;
}

Args parse_args(int argc, char** argv) {
  if (argc < 3) throw std::invalid_argument("usage: crash_case <case> <buggy|fixed|guarded> --out DIR [options]");
  Args args;
  args.name = argv[1];
  args.variant = parse_variant(argv[2]);
  for (int i = 3; i < argc; ++i) {
    const std::string name = argv[i];
    if (name == "--overhead") {
      args.overhead = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument(name + " needs a value");
    const std::string value = argv[++i];
    if (name == "--out") args.out = value;
    else if (name == "--steps") args.steps = parse_int(name, value, 1);
    else if (name == "--stop-at") args.stop_at = parse_int(name, value, 0);
    else if (name == "--resume") args.resume = value;
    else if (name == "--checkpoint-every") args.checkpoint_every = parse_int(name, value, 1);
    else if (name == "--block") args.block = parse_int(name, value, 2);
    else if (name == "--threads") args.threads = static_cast<int>(parse_int(name, value, 1));
    else throw std::invalid_argument("unknown option " + name);
  }
  if (args.out.empty()) throw std::invalid_argument("--out DIR is required");
  return args;
}

std::string checkpoint_path(int64_t step) { return "baseline_checkpoints/step_" + std::to_string(step) + ".pt"; }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

const char* to_string(Variant v) {
  switch (v) {
    case Variant::Buggy: return "buggy";
    case Variant::Fixed: return "fixed";
    case Variant::Guarded: return "guarded";
  }
  return "?";
}

int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Registration::Registration(const char* name, Variant variant, Program program) {
  registry()[{name, variant}] = program;
}

Run::Run(Args args) : args_(std::move(args)) {
  result_["case"] = args_.name;
  result_["variant"] = to_string(args_.variant);
  result_["main_ns"] = monotonic_ns();
}

int64_t Run::start(const Trainees& t) {
  if (args_.resume.empty()) return 0;
  torch::serialize::InputArchive archive;
  archive.load_from(args_.resume.string());
  // Module::load takes a saved tensor's shape as it is: a checkpoint of another model would
  // load "successfully" and break the program later. A checkpoint that does not fit is refused.
  for (const auto& [name, module] : t.modules) {
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& p : module->named_parameters()) shapes[p.key()] = p.value().sizes().vec();
    torch::serialize::InputArchive part;
    archive.read(name, part);
    module->load(part);
    for (const auto& p : module->named_parameters()) {
      if (shapes[p.key()] != p.value().sizes().vec()) {
        throw std::runtime_error("the checkpoint " + args_.resume.string() + " does not fit this program's " + name +
                                 ": " + p.key() + " is " + c10::str(p.value().sizes()) + " there and " +
                                 c10::str(c10::IntArrayRef(shapes[p.key()])) + " here");
      }
    }
  }
  for (const auto& [name, optimizer] : t.optimizers) {
    torch::serialize::InputArchive part;
    archive.read(name, part);
    optimizer->load(part);
  }
  torch::Tensor step;
  archive.read("step", step);
  started_at_ = step.item<int64_t>() + 1;
  result_["resumed_from_step"] = started_at_ - 1;
  result_["resumed_ns"] = monotonic_ns();
  return started_at_;
}

void Run::begin_step(int64_t step) {
  current_step_ = step;
  if (step != args_.stop_at) return;
  result_["reached_step"] = step;
  result_["reached_ns"] = monotonic_ns();
  result_["rerun_steps"] = step - started_at_;
  write_result();
  std::fflush(nullptr);
  std::_Exit(0);  // the baseline is back where the crash was; the rest is not measured
}

void Run::end_step(int64_t step, const Trainees& t) {
  if (args_.checkpoint_every <= 0 || (step + 1) % args_.checkpoint_every != 0) return;
  torch::serialize::OutputArchive archive;
  for (const auto& [name, module] : t.modules) {
    torch::serialize::OutputArchive part;
    module->save(part);
    archive.write(name, part);
  }
  for (const auto& [name, optimizer] : t.optimizers) {
    torch::serialize::OutputArchive part;
    optimizer->save(part);
    archive.write(name, part);
  }
  archive.write("step", torch::tensor(step));
  std::filesystem::create_directories("baseline_checkpoints");
  const std::string path = checkpoint_path(step);
  archive.save_to(path + ".tmp");
  std::filesystem::rename(path + ".tmp", path);
  std::ofstream("baseline_checkpoints/newest") << std::filesystem::absolute(path).string() << "\n";
}

daifu::Options Run::options() const { return daifu::Options().workplace("workplace").inject(""); }

void Run::finish(const std::string& metric, double value, bool higher_is_better) {
  result_["metric"] = metric;
  result_["quality"] = value;
  result_["higher_is_better"] = higher_is_better;
  result_["end_ns"] = monotonic_ns();
  write_result();
}

void Run::write_result() {
  std::ofstream("result.json.tmp") << result_.dump(1) << "\n";
  std::filesystem::rename("result.json.tmp", "result.json");
}

void train(Run& run, const Trainees& t, int64_t last, const std::function<double(int64_t)>& body) {
  const int64_t first = run.start(t);
  if (!run.args().overhead) {
    for (int64_t step = first; step < last; ++step) {
      run.begin_step(step);
      body(step);
      run.end_step(step, t);
    }
    return;
  }
  // Step time: from the start of one body to the start of the next in the same block, so it
  // includes whatever the guard does between bodies. The first step of a block (and a guard's
  // loop entry with its first snapshot) is not counted.
  daifu::Session session(run.options().workplace("overhead_workplace"));
  for (const auto& [name, module] : t.modules) session.track(name, *module);
  for (const auto& [name, optimizer] : t.optimizers) session.track(name, *optimizer);
  std::vector<double> plain_ms, guarded_ms, pair_ratio, plain_block_medians;
  const int64_t block = run.args().block;
  int64_t previous_ns = 0;
  auto timed = [&](std::vector<double>& into, int64_t step, int64_t block_first) {
    const int64_t now = monotonic_ns();
    if (step > block_first) into.push_back(static_cast<double>(now - previous_ns) / 1e6);
    previous_ns = now;
  };
  for (int64_t b = first, k = 0; b < last; b += block, ++k) {
    const int64_t e = std::min(last, b + block);
    const bool guarded = k % 2 == 1;
    std::vector<double>& into = guarded ? guarded_ms : plain_ms;
    const size_t before = into.size();
    if (guarded) {
      DAIFU_GUARD(session, step, b, e) {
        timed(into, step.index(), b);
        session.report("loss", body(step.index()));
      };
    } else {
      for (int64_t step = b; step < e; ++step) {
        timed(into, step, b);
        body(step);
      }
    }
    const int64_t end_ns = monotonic_ns();  // the block's last step ends here
    if (e - b > 1) into.push_back(static_cast<double>(end_ns - previous_ns) / 1e6);
    const std::vector<double> this_block(into.begin() + static_cast<long>(before), into.end());
    if (!guarded) plain_block_medians.push_back(median(this_block));
    // Pairs of adjacent blocks: guarded block median / the plain block before it.
    if (guarded && !plain_block_medians.empty()) pair_ratio.push_back(median(this_block) / plain_block_medians.back() - 1);
  }
  auto& r = run.result();
  r["overhead"] = {{"block", block},
                   {"plain_median_ms", median(plain_ms)},
                   {"guarded_median_ms", median(guarded_ms)},
                   {"plain_steps", plain_ms.size()},
                   {"guarded_steps", guarded_ms.size()},
                   {"median_overhead", median(guarded_ms) / median(plain_ms) - 1},
                   {"pair_overheads", pair_ratio},
                   {"median_pair_overhead", median(pair_ratio)},
                   // The noise floor: how much plain blocks alone differ, (max - min) / median.
                   {"plain_block_spread",
                    plain_block_medians.empty()
                        ? 0.0
                        : (*std::max_element(plain_block_medians.begin(), plain_block_medians.end()) -
                           *std::min_element(plain_block_medians.begin(), plain_block_medians.end())) /
                              median(plain_block_medians)},
                   {"snapshot_captures", session.snapshot_stats().captures}};
}

}  // namespace crash

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--hold-device") {  // the other process of device contention
    return crash::hold_device(argv[2], crash::parse_int("--hold-device", argv[3], 0), /*max_s=*/120);
  }
  if (argc == 2 && std::string(argv[1]) == "--list") {
    for (const auto& [key, program] : crash::registry()) std::cout << key.first << " " << to_string(key.second) << "\n";
    return 0;
  }
  crash::Args args;
  try {
    args = crash::parse_args(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::cerr << "crash_case: " << e.what() << "\n";
    return 2;
  }
  const auto it = crash::registry().find({args.name, args.variant});
  if (it == crash::registry().end()) {
    std::cerr << "crash_case: no program " << args.name << " " << crash::to_string(args.variant) << " (see --list)\n";
    return 2;
  }
  std::filesystem::create_directories(args.out);
  std::filesystem::current_path(args.out);
  at::set_num_threads(args.threads);
  crash::Run run(args);
  // A crash is reported in one line and rethrown: the process ends as the original program
  // would (std::terminate, SIGABRT), and the harness knows where.
  try {
    return it->second(run);
  } catch (const std::exception& e) {
    std::cerr << "crash_case: crashed at step " << run.current_step() << ": " << boost::core::demangle(typeid(e).name()) << ": "
              << std::string(e.what()).substr(0, std::string(e.what()).find('\n')) << std::endl;
    throw;
  }
}
