#include "gan.h"

#include <algorithm>
#include <sstream>

namespace crash::gan {
namespace {

// The reader normalizes pixels p in [0, 1] to (p - kMean) / kStd (fashion_mnist_data.cpp).
constexpr double kReaderMean = 0.2860;
constexpr double kReaderStd = 0.3530;

torch::Tensor to_tanh_range(const torch::Tensor& normalized) {
  return (normalized.flatten(1) * kReaderStd + kReaderMean).clamp(0, 1).mul(2).sub(1).contiguous();
}

torch::Tensor covariance(const torch::Tensor& x) {  // x (n, k) double
  const auto centered = x - x.mean(0, /*keepdim=*/true);
  return centered.t().mm(centered) / static_cast<double>(x.size(0) - 1);
}

}  // namespace

GeneratorImpl::GeneratorImpl()
    : fc1(register_module("fc1", torch::nn::Linear(kNoise, kHidden))),
      fc2(register_module("fc2", torch::nn::Linear(kHidden, kPixels))) {}

torch::Tensor GeneratorImpl::forward(torch::Tensor z, const crash::Probe& probe) {
  return torch::tanh(probed(probe, "g.fc2.out", fc2(probed(probe, "g.fc1.out", torch::leaky_relu(fc1(z), 0.2)))));
}

DiscriminatorImpl::DiscriminatorImpl()
    : fc1(register_module("fc1", torch::nn::Linear(kPixels, kHidden))),
      fc2(register_module("fc2", torch::nn::Linear(kHidden, 1))) {}

torch::Tensor DiscriminatorImpl::forward(torch::Tensor x, const crash::Probe& probe) {
  return torch::sigmoid(probed(probe, "d.fc2.out", fc2(probed(probe, "d.fc1.out", torch::leaky_relu(fc1(x), 0.2)))));
}

torch::optim::AdamOptions adam_options() { return torch::optim::AdamOptions(kLearningRate).betas({0.5, 0.999}); }

Data load() {
  // One intra-op thread, whatever --threads says: this workload's tensors are small (64 x 784)
  // and a step runs ~100 tiny parallel regions. With 2 threads on the shared 2-core machine,
  // libgomp's barriers waited for a descheduled partner thread and a 1500-step run took
  // 120-310 s instead of 11 s with one thread (measured; the results are identical).
  at::set_num_threads(1);
  torch::manual_seed(1);
  auto train = fashion_mnist::load(fashion_mnist::kDefaultDir, "train");
  auto test = fashion_mnist::load(fashion_mnist::kDefaultDir, "t10k");
  const int64_t n = train.size();
  return Data{to_tanh_range(train.images), to_tanh_range(test.images), fashion_mnist::Sampler(n, kBatch, /*seed=*/1)};
}

torch::Tensor real_batch(Data& data, int64_t step, int64_t size) {
  return data.train.index_select(0, data.sampler.indices(step, size));
}

torch::Tensor noise(int64_t n) { return torch::randn({n, kNoise}); }

torch::Tensor bce(const torch::Tensor& p, const torch::Tensor& target) {
  return torch::nn::functional::binary_cross_entropy(p, target);
}

std::string pgm_grid(const torch::Tensor& images, int64_t columns) {
  const int64_t n = images.size(0);
  const int64_t rows = (n + columns - 1) / columns;
  const auto pixels = images.detach().reshape({n, 28, 28}).add(1).mul(127.5).round().clamp(0, 255).to(torch::kUInt8);
  auto grid = torch::zeros({rows * 28, columns * 28}, torch::kUInt8);
  for (int64_t i = 0; i < n; ++i) {
    grid.narrow(0, (i / columns) * 28, 28).narrow(1, (i % columns) * 28, 28).copy_(pixels[i]);
  }
  std::ostringstream out;
  out << "P5\n" << columns * 28 << " " << rows * 28 << "\n255\n";
  out.write(static_cast<const char*>(grid.data_ptr()), grid.numel());
  return out.str();
}

double frechet_distance(Generator& generator, const Data& data) {
  torch::NoGradGuard no_grad;
  generator->eval();
  auto seeded = at::detail::createCPUGenerator(/*seed_in=*/20240009);
  const auto fake = generator->forward(torch::randn({kScoreSamples, kNoise}, seeded)).to(torch::kDouble);
  generator->train();
  // The principal directions of the test images.
  const auto mean = data.test.mean(0, /*keepdim=*/true);
  const auto centered = data.test - mean;
  const auto cov = (centered.t().mm(centered) / static_cast<double>(data.test.size(0) - 1)).to(torch::kDouble);
  const auto [eigenvalues, eigenvectors] = torch::linalg_eigh(cov, "L");  // ascending
  const auto basis = eigenvectors.narrow(1, eigenvectors.size(1) - kPcaDims, kPcaDims);
  const auto real = (centered.to(torch::kDouble)).mm(basis);
  const auto gen = (fake - mean.to(torch::kDouble)).mm(basis);
  const auto c1 = covariance(real), c2 = covariance(gen);
  // tr sqrt(c1 c2) = sum of the square roots of the eigenvalues of sqrt(c1) c2 sqrt(c1).
  const auto [e1, v1] = torch::linalg_eigh(c1, "L");
  const auto sqrt_c1 = v1.mm(torch::diag(e1.clamp_min(0).sqrt())).mm(v1.t());
  const auto m = sqrt_c1.mm(c2).mm(sqrt_c1);
  const auto cross = torch::linalg_eigvalsh((m + m.t()) / 2, "L").clamp_min(0).sqrt().sum();
  const auto d = (real.mean(0) - gen.mean(0)).pow(2).sum() + c1.trace() + c2.trace() - 2 * cross;
  return d.item<double>();
}

}  // namespace crash::gan
