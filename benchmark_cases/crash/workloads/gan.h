// Workload 3: a small GAN on Fashion-MNIST (DaiFu's case 009). A generator MLP, noise(64) ->
// 256 -> 784 (tanh), and a discriminator MLP, 784 -> 256 -> 1 (sigmoid, binary cross-entropy),
// each with Adam(2e-4, betas 0.5 / 0.999), batches of 64. The discriminator is trained alone
// for the first kWarmupSteps steps, then both are updated every step.
// Quality: a Frechet distance (lower is better) between 2000 images of the final generator,
// from a fixed-seed noise batch, and the 10,000 test images, in the space of the test images'
// first kPcaDims principal components.
#pragma once

#include "fashion_mnist_data.h"
#include "probe.h"

#include <torch/torch.h>

namespace crash::gan {

inline constexpr int64_t kSteps = 1500;
inline constexpr int64_t kWarmupSteps = 100;  ///< steps in which only the discriminator learns
inline constexpr int64_t kBatch = 64;
inline constexpr int64_t kNoise = 64;
inline constexpr int64_t kHidden = 256;
inline constexpr int64_t kPixels = 28 * 28;
inline constexpr double kLearningRate = 2e-4;
inline constexpr int64_t kPcaDims = 16;
inline constexpr int64_t kScoreSamples = 2000;

/// noise (N, kNoise) -> images (N, 784) in [-1, 1].
struct GeneratorImpl : torch::nn::Module {
  GeneratorImpl();
  /// `probe` sees "g.fc1.out" and "g.fc2.out".
  torch::Tensor forward(torch::Tensor z, const crash::Probe& probe = {});

  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Generator);

/// images (N, 784) -> probability of being real, (N, 1).
struct DiscriminatorImpl : torch::nn::Module {
  DiscriminatorImpl();
  /// `probe` sees "d.fc1.out" and "d.fc2.out".
  torch::Tensor forward(torch::Tensor x, const crash::Probe& probe = {});

  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Discriminator);

/// Adam(kLearningRate, betas 0.5 / 0.999) over `parameters`.
torch::optim::AdamOptions adam_options();

struct Data {
  torch::Tensor train;  ///< (60000, 784) float32 in [-1, 1]
  torch::Tensor test;   ///< (10000, 784) float32 in [-1, 1]
  fashion_mnist::Sampler sampler;
};

/// Reads the data set (rescaled from the reader's mean/std normalization to [-1, 1], for the
/// tanh generator), sets libtorch to one intra-op thread (see gan.cpp) and seeds it
/// (torch::manual_seed(1)), so that models built next start from the same weights in every
/// variant.
Data load();

/// The first `size` real images of step `step` (a fixed permutation per epoch), (size, 784).
torch::Tensor real_batch(Data& data, int64_t step, int64_t size = kBatch);

/// `n` noise vectors from the global generator, (n, kNoise).
torch::Tensor noise(int64_t n);

/// Binary cross-entropy of probabilities `p` against `target` (torch::nn::functional's, which
/// insists that both have the same size).
torch::Tensor bce(const torch::Tensor& p, const torch::Tensor& target);

/// Images (N, 784) in [-1, 1] as a binary PGM grid of `columns` columns.
std::string pgm_grid(const torch::Tensor& images, int64_t columns = 8);

/// The quality: Frechet distance between the generator's images of a fixed noise batch
/// (kScoreSamples, from its own seeded generator) and the test images, after projecting both
/// onto the test images' first kPcaDims principal components. Lower is better.
double frechet_distance(Generator& generator, const Data& data);

}  // namespace crash::gan
