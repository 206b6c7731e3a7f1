// Data-parallel Fashion-MNIST: one process per rank on 127.0.0.1, gradients averaged by
// step.before_update() over c10d Gloo on the CPU, or NCCL with --device cuda (rank R on GPU
// R mod the GPU count), recovery agreed by every rank (docs/distributed.md). Each rank
// draws its own batches; every rank starts from the same weights and, with the gradients
// averaged, keeps the same weights. scripts/distributed_demo.sh starts the ranks, with faults
// on rank 1 only (DAIFU_INJECT): every rank repairs them the same way.
//
//   fashion_mnist_ddp --rank R --world N [--port P] [--steps N] [--batch-size N]
//                     [--workplace DIR] [--threads N] [--data DIR] [--device cpu|cuda]
#include "fashion_mnist_data.h"
#include "fashion_net.h"

#include <daifu/daifu.h>
#include <daifu/gloo_group.h>
#ifdef USE_C10D_NCCL  // CMake defines it where LibTorch is a CUDA build with NCCL's header at hand
#include <daifu/nccl_group.h>
#endif
#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>

namespace {

constexpr const char* kUsage =
    "usage: fashion_mnist_ddp --rank R --world N [--port P] [--steps N] [--batch-size N]\n"
    "                         [--workplace DIR] [--threads N] [--data DIR] [--device cpu|cuda]\n";

struct Args {
  int rank = -1, world = 0, port = 29500;
  int64_t steps = 300, batch_size = 64, threads = 1;
  std::string workplace = "daifu_workplace_ddp";
  std::string data = fashion_mnist::kDefaultDir;
  std::string device = "cpu";
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string name = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(name + " needs a value");
    const std::string value = argv[++i];
    if (name == "--rank") a.rank = std::stoi(value);
    else if (name == "--world") a.world = std::stoi(value);
    else if (name == "--port") a.port = std::stoi(value);
    else if (name == "--steps") a.steps = std::stoll(value);
    else if (name == "--batch-size") a.batch_size = std::stoll(value);
    else if (name == "--threads") a.threads = std::stoll(value);
    else if (name == "--workplace") a.workplace = value;
    else if (name == "--data") a.data = value;
    else if (name == "--device") a.device = value;
    else throw std::invalid_argument("unknown option " + name);
  }
  if (a.world < 1 || a.rank < 0 || a.rank >= a.world) throw std::invalid_argument("--rank must be in [0, --world)");
  if (a.device != "cpu" && a.device != "cuda") throw std::invalid_argument("--device must be cpu or cuda");
  if (a.steps < 1 || a.batch_size < 16 || a.threads < 1) throw std::invalid_argument("--steps, --threads >= 1, --batch-size >= 16");
  return a;
}

c10::intrusive_ptr<c10d::ProcessGroup> make_group(const Args& args, const c10::intrusive_ptr<c10d::Store>& store,
                                                  std::chrono::milliseconds timeout) {
  if (args.device == "cpu") return daifu::make_gloo_group(store, args.rank, args.world, timeout);
  if (!torch::cuda::is_available()) throw std::runtime_error("--device cuda: this machine has no CUDA device");
#ifdef USE_C10D_NCCL
  return daifu::make_gloo_nccl_group(store, args.rank, args.world, timeout);
#else
  throw std::runtime_error("--device cuda: this program was built without NCCL (a CPU-only LibTorch)");
#endif
}

int train(const Args& args) {
  at::set_num_threads(static_cast<int>(args.threads));
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(args.port);
  store_options.isServer = args.rank == 0;
  store_options.numWorkers = args.world;
  store_options.timeout = std::chrono::seconds(60);
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
  // The group's timeout bounds every wait: a rank that dies ends the others within it.
  auto group = make_group(args, c10::make_intrusive<c10d::PrefixStore>("ddp", store), std::chrono::seconds(30));
  const torch::Device device = args.device == "cpu"
                                   ? torch::Device(torch::kCPU)
                                   : torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(
                                                                     args.rank % torch::cuda::device_count()));

  const fashion_mnist::Dataset train_set = fashion_mnist::load(args.data, "train");
  const fashion_mnist::Dataset test_set = fashion_mnist::load(args.data, "t10k");
  fashion_mnist::Sampler sampler(train_set.size(), args.batch_size, /*seed=*/1 + args.rank);  // this rank's batches
  torch::manual_seed(1);  // the same initial weights on every rank
  fashion_mnist::FashionNet model;
  model->to(device);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-3));

  daifu::Session session(daifu::Options()
                             .workplace(args.workplace)  // this rank writes <workplace>/rank-R
                             .distributed(daifu::DistributedOptions().group(*group)));
  session.track("model", *model);
  session.track("optimizer", optimizer);
  // The out-of-memory surgery halves it on every rank, down to 16.
  auto& batch_size = session.knob<int64_t>("batch_size", args.batch_size).min(16);

  const auto start = std::chrono::steady_clock::now();
  DAIFU_GUARD(session, step, 0, args.steps) {
    const auto& batch = step.once("batch", [&] {
      return fashion_mnist::gather(train_set, sampler.indices(step.index(), batch_size.get()));
    });
    optimizer.zero_grad();
    auto loss = torch::nll_loss(model->forward(step.probe("input", batch.images.to(device))), batch.labels.to(device));
    daifu::check_finite(loss, "loss");
    loss.backward();
    step.before_update();  // agree with the other ranks, average the gradients
    optimizer.step();
    session.report("loss", loss.item<double>());
    if (args.rank == 0 && (step.index() + 1) % 50 == 0) {
      std::printf("step %lld/%lld  loss %.4f\n", static_cast<long long>(step.index() + 1),
                  static_cast<long long>(args.steps), loss.item<double>());
      std::fflush(stdout);
    }
  };
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("rank %d of %d: %lld steps in %.1f s, test accuracy %.2f%%\n", args.rank, args.world,
              static_cast<long long>(session.stats().committed_steps), seconds, 100 * fashion_mnist::test_accuracy(model, test_set));
  std::cout << session.summary();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "fashion_mnist_ddp: " << e.what() << "\n" << kUsage;
    return 2;
  }
  return daifu::run_main(args.workplace + "/rank-" + std::to_string(args.rank), [&] { return train(args); });
}
