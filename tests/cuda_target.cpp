// A guarded training run on cuda:0 with persistent snapshots, for cuda_test.cpp: it resumes
// from the workplace's newest snapshot, trains to the last step and saves the final parameters.
// With --assert-at STEP, that step ends by indexing a tensor out of range on the GPU, which
// trips a device-side assert in the kernel. By default nothing in the step waits for the
// kernel, so the error can only surface when daifu synchronizes at the step's end; with
// --sync the step reads the result back, so it surfaces inside the step.
// Prints "start N" and "end N" around each step's body.
// Usage: cuda_target WORKPLACE STEPS OUT_FILE [--assert-at STEP] [--sync]
// Exit codes: 0 trained, 3 daifu::Unrecovered (its message on stderr), 2 usage.
#include <daifu/daifu.h>
#include <torch/torch.h>

#include <cstdlib>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: cuda_target WORKPLACE STEPS OUT_FILE [--assert-at STEP] [--sync]\n";
    return 2;
  }
  const int64_t steps = std::atoll(argv[2]);
  int64_t assert_at = -1;
  bool sync = false;
  for (int i = 4; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--assert-at" && i + 1 < argc) {
      assert_at = std::atoll(argv[++i]);
    } else if (flag == "--sync") {
      sync = true;
    } else {
      std::cerr << "cuda_target: unknown flag " << flag << "\n";
      return 2;
    }
  }
  if (!torch::cuda::is_available()) {
    std::cerr << "cuda_target: no CUDA device\n";
    return 2;
  }
  const torch::Device cuda(torch::kCUDA, 0);
  torch::manual_seed(5);  // CPU and CUDA generators
  torch::nn::Sequential net(torch::nn::Linear(16, 256), torch::nn::ReLU(), torch::nn::Dropout(0.25),
                            torch::nn::Linear(256, 4));
  net->to(cuda);
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(1e-3));
  const auto x = torch::randn({256, 16}).to(cuda);
  const auto y = torch::randn({256, 4}).to(cuda);
  const auto out_of_range = torch::full({1}, int64_t{1} << 20, torch::TensorOptions().dtype(torch::kLong).device(cuda));

  try {
    daifu::Session session(
        daifu::Options().workplace(argv[1]).persist(true).resume(true).snapshot_every(5).inject(""));
    session.track("model", *net);
    session.track("optimizer", optimizer);
    DAIFU_GUARD(session, step, 0, steps) {
      std::cout << "start " << step.index() << std::endl;
      const auto rows = torch::arange(step.index() * 32, step.index() * 32 + 32, torch::TensorOptions().device(cuda)) % 256;
      optimizer.zero_grad();
      torch::mse_loss(net->forward(x.index_select(0, rows)), y.index_select(0, rows)).backward();
      optimizer.step();
      if (step.index() == assert_at) {
        const auto picked = x.index_select(0, out_of_range);  // queued; the kernel asserts later
        if (sync) (void)picked.sum().item<float>();
      }
      std::cout << "end " << step.index() << std::endl;
    };
  } catch (const daifu::Unrecovered& e) {
    std::cerr << "cuda_target: " << e.what() << std::endl;
    return 3;
  }
  std::vector<torch::Tensor> params;
  for (const auto& p : net->parameters()) params.push_back(p.detach().cpu());
  torch::save(params, argv[3]);
  return 0;
}
