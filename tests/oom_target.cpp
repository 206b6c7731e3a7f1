// A guarded training run that really runs out of memory, for out_of_memory_test.cpp.
// A 16 -> kHidden -> 4 MLP trains kSteps SGD steps on a logical batch of kBatch samples,
// split by Step::micro_batches() with the "micro_batch" knob (initially kBatch).
//   limited:   at the start of the first step (after the warm-up, the session's snapshot
//              buffers and threads) the address space is capped at the current VmSize plus
//              MARGIN_MB (default 640). The backward of a 512-sample micro-batch holds three
//              512 x kHidden float tensors (768 MiB) and is refused by the allocator; a
//              256-sample one needs 384 MiB and fits (daifu's report of an out-of-memory
//              failure does not symbolize its stack, which would map ~176 MiB).
//   reference: the same training with no cap (micro_batch stays kBatch).
//   validate:  no training; kSteps validation steps run the first layer, under the cap with
//              MARGIN_MB (default 300), on the "eval_batch" knob's samples (initially 4096: one
//              2 GiB activation; 512 samples, 256 MiB, would be the first halving that fits).
// Writes the final parameters to OUT_FILE (torch::save), "micro_batch=N" (validate:
// "eval_batch=N") to stdout and, when capped, the address space used after the cap to stderr.
// Usage: oom_target limited|reference|validate WORKPLACE OUT_FILE [MARGIN_MB]
#include <daifu/daifu.h>
#include <torch/torch.h>

#include <malloc.h>
#include <sys/resource.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

namespace {

constexpr int64_t kBatch = 512;
constexpr int64_t kIn = 16;
constexpr int64_t kHidden = 131072;  // one 512 x kHidden float activation is 256 MiB
constexpr int64_t kOut = 4;
constexpr int64_t kSteps = 4;
constexpr int64_t kDefaultMarginMb = 640;

// A size field of /proc/self/status ("VmSize:", "VmPeak:") in bytes; -1 if it is not there.
int64_t vm_bytes(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) return std::atoll(line.c_str() + std::string(field).size()) * 1024;
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc >= 2 ? argv[1] : "";
  if (argc < 4 || argc > 5 || (mode != "limited" && mode != "reference" && mode != "validate")) {
    std::cerr << "usage: oom_target limited|reference|validate WORKPLACE OUT_FILE [MARGIN_MB]\n";
    return 2;
  }
  const bool limited = mode != "reference";
  const int64_t margin = (argc == 5 ? std::atoll(argv[4]) : mode == "validate" ? 300 : kDefaultMarginMb) << 20;
  // One malloc arena (a thread's own arena reserves 64 MiB of address space) and a fixed mmap
  // threshold, so that every large tensor is its own mapping, returned to the system when freed.
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  torch::set_num_threads(1);

  torch::manual_seed(11);
  torch::nn::Sequential net(torch::nn::Linear(kIn, kHidden), torch::nn::ReLU(), torch::nn::Linear(kHidden, kOut));
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(0.05));
  const auto x = torch::randn({kSteps, kBatch, kIn});
  const auto y = torch::randint(0, kOut, {kSteps, kBatch});
  {  // Warm-up outside the cap: BLAS and autograd set up their buffers on first use.
    torch::nn::functional::cross_entropy(net->forward(x[0].slice(0, 0, 2)), y[0].slice(0, 0, 2)).backward();
    for (auto& p : net->parameters()) p.mutable_grad().reset();
  }

  daifu::Session session(daifu::Options().workplace(argv[2]).max_attempts(6).batch_knob("eval_batch").inject(""));
  session.track("model", *net);
  session.track("optimizer", optimizer);
  auto& micro = session.knob<int64_t>("micro_batch", kBatch).min(1);
  auto& eval_batch = session.knob<int64_t>("eval_batch", 4096).min(1);

  rlimit saved{};
  getrlimit(RLIMIT_AS, &saved);
  bool capped = false;
  int64_t vm_at_cap = 0;
  DAIFU_GUARD(session, step, 0, kSteps) {
    if (limited && !capped) {
      const int64_t now = vm_at_cap = vm_bytes("VmSize:");
      rlimit cap = saved;
      cap.rlim_cur = static_cast<rlim_t>(now + margin);
      if (now < 0 || setrlimit(RLIMIT_AS, &cap) != 0) throw std::runtime_error("oom_target: cannot cap the address space");
      capped = true;
    }
    if (mode == "validate") {
      torch::NoGradGuard no_grad;
      const auto h = net[0]->as<torch::nn::Linear>()->forward(torch::randn({eval_batch.get(), kIn}));
      (void)h.max().item<float>();
      return;
    }
    const auto xs = x[step.index()];
    const auto ys = y[step.index()];
    optimizer.zero_grad();
    step.micro_batches(kBatch, micro, [&](int64_t begin, int64_t end, double weight) {
      auto loss = torch::nn::functional::cross_entropy(net->forward(xs.slice(0, begin, end)), ys.slice(0, begin, end));
      (loss * weight).backward();
    });
    optimizer.step();
  };
  if (capped) {
    setrlimit(RLIMIT_AS, &saved);
    std::cerr << "oom_target: address space capped at VmSize " << (vm_at_cap >> 20) << " MiB + " << (margin >> 20)
              << " MiB; VmPeak after the cap: +" << ((vm_bytes("VmPeak:") - vm_at_cap) >> 20) << " MiB\n";
  }

  std::vector<torch::Tensor> params;
  for (const auto& p : net->parameters()) params.push_back(p.detach().clone());
  torch::save(params, argv[3]);
  std::cout << "micro_batch=" << micro.get() << "\n";
  if (mode == "validate") std::cout << "eval_batch=" << eval_batch.get() << "\n";
  return 0;
}
