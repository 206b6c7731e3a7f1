// One rank of a data-parallel training run over c10d Gloo on 127.0.0.1 (or NCCL on GPU RANK
// with --device cuda), for distributed_test.cpp. Every rank trains the same MLP on its own shard; Step::before_update()
// agrees with the other ranks and averages the gradients.
// Usage: dist_target RANK WORLD PORT WORKPLACE OUT_FILE [options]
//   --steps N          steps to train (default 40)
//   --plan PLAN        daifu injection plan of this rank (default none)
//   --micro N          train in micro-batches of N rows through a "micro_batch" knob
//   --oom-above N      with --micro, at step 20 and later, a micro-batch of more than N rows
//                      makes a real allocation fail (an activation buffer of 2^50 bytes)
//   --die-at STEP      SIGKILL this process in that step
//   --fail-after-update STEP
//                      throw EAGAIN after optimizer.step() in the first attempt of that step
//   --device cuda      train on cuda:RANK, gradients averaged over NCCL (built with NCCL only)
// Exit codes: 0 trained, 3 daifu::Unrecovered (its message on stderr), 2 usage.
#include <daifu/daifu.h>
#include <daifu/gloo_group.h>
#ifdef USE_C10D_NCCL
#include <daifu/nccl_group.h>
#endif
#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <system_error>

namespace F = torch::nn::functional;

int main(int argc, char** argv) {
  if (argc < 6) {
    std::cerr << "usage: dist_target RANK WORLD PORT WORKPLACE OUT_FILE [--steps N] [--plan PLAN] [--micro N] "
                 "[--oom-above N] [--die-at STEP]\n";
    return 2;
  }
  const int rank = std::atoi(argv[1]);
  const int world = std::atoi(argv[2]);
  const int port = std::atoi(argv[3]);
  int64_t steps = 40, micro = 0, oom_above = 0, die_at = -1, fail_after_update = -1;
  std::string plan, device = "cpu";
  for (int i = 6; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--steps") steps = std::atoll(argv[i + 1]);
    else if (flag == "--plan") plan = argv[i + 1];
    else if (flag == "--micro") micro = std::atoll(argv[i + 1]);
    else if (flag == "--oom-above") oom_above = std::atoll(argv[i + 1]);
    else if (flag == "--die-at") die_at = std::atoll(argv[i + 1]);
    else if (flag == "--fail-after-update") fail_after_update = std::atoll(argv[i + 1]);
    else if (flag == "--device") device = argv[i + 1];
    else {
      std::cerr << "dist_target: unknown flag " << flag << "\n";
      return 2;
    }
  }

  // One intra-op thread per rank: several ranks share this machine's cores, and OpenMP
  // threads spinning after their parallel regions starve the others' collectives.
  at::set_num_threads(1);
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(port);
  store_options.isServer = rank == 0;
  store_options.numWorkers = world;
  store_options.timeout = std::chrono::seconds(20);
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("daifu", store);
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  torch::Device on(torch::kCPU);
  if (device == "cuda") {
#ifdef USE_C10D_NCCL
    group = daifu::make_gloo_nccl_group(prefixed, rank, world, std::chrono::seconds(10));
    on = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(rank));
#else
    std::cerr << "dist_target: --device cuda needs a build with NCCL\n";
    return 2;
#endif
  } else {
    group = daifu::make_gloo_group(prefixed, rank, world, std::chrono::seconds(10), /*threads=*/1);
  }

  torch::manual_seed(11);  // the same initial weights on every rank
  torch::nn::Sequential net(torch::nn::Linear(16, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  net->to(on);
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  torch::manual_seed(100 + rank);  // each rank its own shard
  const auto xs = torch::randn({steps, 32, 16}).to(on);
  const auto ys = torch::randint(0, 4, {steps, 32}).to(on);

  std::vector<torch::Tensor> params;
  try {
    daifu::Session session(daifu::Options()
                               .workplace(argv[4])
                               .inject(plan)
                               .snapshot_every(5)
                               .distributed(daifu::DistributedOptions().group(*group)));
    session.track("model", *net);
    session.track("optimizer", optimizer);
    auto& micro_batch = session.knob<int64_t>("micro_batch", micro > 0 ? micro : 32).min(1);
    DAIFU_GUARD(session, step, 0, steps) {
      if (step.index() == die_at) std::raise(SIGKILL);
      const auto x = step.probe("input", xs[step.index()]);
      const auto& y = ys[step.index()];
      optimizer.zero_grad();
      if (micro > 0) {
        step.micro_batches(x.size(0), micro_batch, [&](int64_t b, int64_t e, double weight) {
          if (oom_above > 0 && step.index() >= 20 && e - b > oom_above) {
            (void)torch::empty({int64_t{1} << 48, e - b}, torch::kFloat);  // really fails: 2^50+ bytes
          }
          (F::cross_entropy(net->forward(x.slice(0, b, e)), y.slice(0, b, e)) * weight).backward();
        });
      } else {
        F::cross_entropy(net->forward(x), y).backward();
        step.before_update();
      }
      optimizer.step();
      if (step.index() == fail_after_update && step.attempt() == 0) {
        throw std::system_error(EAGAIN, std::generic_category(), "uploading the step's metrics");
      }
    };
    std::cout << session.summary();
  } catch (const daifu::Unrecovered& e) {
    std::cerr << "rank " << rank << ": " << e.what() << std::endl;
    return 3;
  }
  for (const auto& p : net->parameters()) params.push_back(p.detach().cpu());
  torch::save(params, argv[5]);
  return 0;
}
