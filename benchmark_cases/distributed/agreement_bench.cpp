// The cost of the distributed agreement per step (docs/performance.md#distributed-agreement).
// Rank 0 starts the other ranks itself (this binary, on 127.0.0.1, c10d Gloo). Every rank
// trains the same MLP on its own random batch in three modes, interleaved in blocks so that
// the machine's noise falls on all of them alike:
//   plain   - no daifu: backward, one all-reduce of the flattened gradients, SGD step;
//   guarded - DAIFU_GUARD with a single-process session, the same manual all-reduce;
//   agreed  - DAIFU_GUARD with Options::distributed: step.before_update() averages the
//             gradients (the update point) and the end point is one more small all-reduce;
//   plain+1 - plain with one more all-reduce of 4 floats per step: the floor of the end point.
// agreed - guarded is what the agreement costs; guarded - plain the guard itself.
// Usage: bench_agreement [--world N] [--steps S] [--blocks B] [--hidden H] [--threads T] [--json]
// --hidden: the MLP's hidden width (256), which sets the step's length and the gradient's size.
// --threads: each rank's compute threads (1, as torchrun and the data-parallel example set:
// LibTorch's default, one per core in every rank, oversubscribes the cores).
#include <daifu/daifu.h>
#include <daifu/gloo_group.h>
#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

extern char** environ;

namespace {

namespace F = torch::nn::functional;
using Clock = std::chrono::steady_clock;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// What a program does without daifu: all-reduce the flattened gradients, average them.
void all_reduce_gradients(c10d::ProcessGroup& group, const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> flat;
  for (const auto& p : params) flat.push_back(p.grad().reshape(-1));
  std::vector<torch::Tensor> bucket{torch::cat(flat)};
  group.allreduce(bucket)->wait();
  bucket[0].div_(group.getSize());
  int64_t offset = 0;
  for (const auto& p : params) {
    p.mutable_grad().copy_(bucket[0].slice(0, offset, offset + p.numel()).view(p.sizes()));
    offset += p.numel();
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int rank_main(int rank, int world, int port, int64_t steps, int64_t blocks, int64_t hidden, int threads, bool json) {
  torch::set_num_threads(threads);
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(port);
  so.isServer = rank == 0;
  so.numWorkers = world;
  so.timeout = std::chrono::seconds(30);
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  auto group = daifu::make_gloo_group(c10::make_intrusive<c10d::PrefixStore>("bench", store), rank, world,
                                      std::chrono::seconds(30), /*threads=*/1);
  torch::manual_seed(1);
  torch::nn::Sequential net(torch::nn::Linear(784, hidden), torch::nn::ReLU(), torch::nn::Linear(hidden, 10));
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  const auto params = net->parameters();
  torch::manual_seed(100 + rank);
  const auto x = torch::randn({64, 784});
  const auto y = torch::randint(0, 10, {64});

  const auto workplace = std::filesystem::temp_directory_path() / ("daifu_bench_agreement_" + std::to_string(::getpid()));
  std::map<std::string, std::vector<double>> us;  // per mode, one median per block
  {
    daifu::Session local(daifu::Options().workplace((workplace / "local").string()).inject(""));
    daifu::Session agreed(daifu::Options()
                              .workplace((workplace / "agreed").string())
                              .inject("")
                              .distributed(daifu::DistributedOptions().group(*group)));
    for (auto* s : {&local, &agreed}) {
      s->track("model", *net);
      s->track("optimizer", optimizer);
    }
    // A data-parallel step without daifu, with `extra` more all-reduces of 4 floats; µs.
    auto plain_step = [&](int extra) {
      const auto t0 = Clock::now();
      optimizer.zero_grad();
      F::cross_entropy(net->forward(x), y).backward();
      all_reduce_gradients(*group, params);
      optimizer.step();
      for (int i = 0; i < extra; ++i) {
        std::vector<torch::Tensor> flags{torch::zeros({4})};
        group->allreduce(flags)->wait();
      }
      return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    };
    for (int64_t block = 0; block < blocks; ++block) {
      std::vector<double> plain, plain_plus_one, guarded, with_agreement;
      for (int64_t i = 0; i < steps; ++i) plain.push_back(plain_step(0));
      for (int64_t i = 0; i < steps; ++i) plain_plus_one.push_back(plain_step(1));
      auto t = Clock::now();
      DAIFU_GUARD(local, step, 0, steps) {
        optimizer.zero_grad();
        F::cross_entropy(net->forward(x), y).backward();
        all_reduce_gradients(*group, params);
        optimizer.step();
        const auto now = Clock::now();
        guarded.push_back(std::chrono::duration<double, std::micro>(now - t).count());
        t = now;
      };
      t = Clock::now();
      DAIFU_GUARD(agreed, step, 0, steps) {
        optimizer.zero_grad();
        F::cross_entropy(net->forward(x), y).backward();
        step.before_update();
        optimizer.step();
        const auto now = Clock::now();
        with_agreement.push_back(std::chrono::duration<double, std::micro>(now - t).count());
        t = now;
      };
      // The first step of a guarded loop takes its snapshot; the steady state is what counts.
      us["plain"].push_back(median(plain));
      us["plain+1"].push_back(median(plain_plus_one));
      us["guarded"].push_back(median({guarded.begin() + 1, guarded.end()}));
      us["agreed"].push_back(median({with_agreement.begin() + 1, with_agreement.end()}));
    }
  }
  std::filesystem::remove_all(workplace);
  if (rank != 0) return 0;
  const double plain = median(us["plain"]), plain1 = median(us["plain+1"]), guarded = median(us["guarded"]),
               agreed = median(us["agreed"]);
  if (json) {
    std::printf("{\"world\": %d, \"threads\": %d, \"hidden\": %lld, \"steps\": %lld, \"blocks\": %lld, \"plain_us\": %.1f, \"plain_plus_one_us\": %.1f, "
                "\"guarded_us\": %.1f, \"agreed_us\": %.1f, \"agreement_us\": %.1f, \"agreement_fraction\": %.4f}\n",
                world, threads, static_cast<long long>(hidden), static_cast<long long>(steps),
                static_cast<long long>(blocks), plain,
                plain1, guarded, agreed,
                agreed - guarded, (agreed - guarded) / guarded);
  } else {
    std::printf("%d ranks of %d compute threads, MLP 784-%lld-10, batch 64 per rank, %lld steps x %lld blocks (medians per step)\n",
                world, threads, static_cast<long long>(hidden), static_cast<long long>(steps), static_cast<long long>(blocks));
    std::printf("  plain (no daifu, manual all-reduce)   %8.1f us\n", plain);
    std::printf("  plain + one all-reduce of 4 floats    %8.1f us\n", plain1);
    std::printf("  guarded (single-process session)      %8.1f us\n", guarded);
    std::printf("  agreed (distributed session)          %8.1f us\n", agreed);
    std::printf("  agreement: %.1f us per step = %.2f%% of the guarded step\n", agreed - guarded,
                100 * (agreed - guarded) / guarded);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int world = 2, rank = 0, port = 0, threads = 1;
  int64_t steps = 200, blocks = 5, hidden = 256;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json") json = true;
    else if (i + 1 < argc && a == "--world") world = std::atoi(argv[++i]);
    else if (i + 1 < argc && a == "--steps") steps = std::atoll(argv[++i]);
    else if (i + 1 < argc && a == "--blocks") blocks = std::atoll(argv[++i]);
    else if (i + 1 < argc && a == "--hidden") hidden = std::atoll(argv[++i]);
    else if (i + 1 < argc && a == "--threads") threads = std::atoi(argv[++i]);
    else if (i + 1 < argc && a == "--rank") rank = std::atoi(argv[++i]);
    else if (i + 1 < argc && a == "--port") port = std::atoi(argv[++i]);
    else {
      std::cerr << "usage: bench_agreement [--world N] [--steps S] [--blocks B] [--hidden H] [--threads T] [--json]\n";
      return 2;
    }
  }
  if (world < 2 || steps < 2 || blocks < 1 || hidden < 1 || threads < 1) {
    std::cerr << "bench_agreement: needs --world >= 2, --steps >= 2, --blocks >= 1, --hidden >= 1, --threads >= 1\n";
    return 2;
  }
  if (port != 0) return rank_main(rank, world, port, steps, blocks, hidden, threads, json);
  port = free_port();
  std::vector<pid_t> children;
  for (int r = 1; r < world; ++r) {
    std::vector<std::string> args = {"/proc/self/exe", "--rank", std::to_string(r), "--world", std::to_string(world),
                                     "--port", std::to_string(port), "--steps", std::to_string(steps),
                                     "--blocks", std::to_string(blocks), "--hidden", std::to_string(hidden),
                                     "--threads", std::to_string(threads)};
    std::vector<char*> cargs;
    for (auto& s : args) cargs.push_back(s.data());
    cargs.push_back(nullptr);
    pid_t pid = 0;
    if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, cargs.data(), environ) != 0) {
      std::cerr << "bench_agreement: cannot start rank " << r << "\n";
      return 1;
    }
    children.push_back(pid);
  }
  const int rc = rank_main(0, world, port, steps, blocks, hidden, threads, json);
  int worst = rc;
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) worst = 1;
  }
  return worst;
}
