// Workload 2: a character-level language model on the text of Debian's `fortunes` package
// (/usr/share/games/fortunes: the plain-text files, fortunes separated by lines "%"). Bytes are
// the tokens (256); embedding -> one GRU layer -> linear; Adam; batches of fixed-length windows
// drawn from a fixed-seed permutation per epoch. Quality: mean cross-entropy in bits per
// character on the held-out last 5% of the corpus (all its windows), lower is better.
#pragma once

#include "probe.h"

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace crash::lm {

inline constexpr const char* kFortunesDir = "/usr/share/games/fortunes";
inline constexpr int64_t kSteps = 200;
inline constexpr int64_t kBatch = 32;   ///< windows per step
inline constexpr int64_t kSeq = 64;     ///< characters per window (the targets are the next 64)
inline constexpr int64_t kVocab = 256;  ///< bytes
inline constexpr int64_t kEmbed = 64;
inline constexpr int64_t kHidden = 128;
inline constexpr double kLearningRate = 3e-3;
inline constexpr int64_t kEvalBatch = 512;  ///< held-out windows per forward pass
inline constexpr int64_t kPad = 0;          ///< the padding byte of fortune-per-row batches
inline constexpr int64_t kEntryBatch = 32;  ///< fortunes per fortune-per-row batch
inline constexpr int64_t kEntryLen = 64;    ///< characters per fortune-per-row row

/// (input [N, T] int64 tokens, target [N * T] int64: the next token of each input position).
using Batch = std::pair<at::Tensor, at::Tensor>;

/// Embedding -> GRU -> linear over the next byte.
struct NetImpl : torch::nn::Module {
  NetImpl();
  /// x: [N, T] token indices; h: [1, N, kHidden] or undefined (zeros). Returns the logits
  /// [N, T, kVocab] and the last hidden state [1, N, kHidden]. `probe` sees "embed.out",
  /// "gru.out" and "head.out".
  std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& h = {}, const crash::Probe& probe = {});

  torch::nn::Embedding embed;
  torch::nn::GRU gru;
  torch::nn::Linear head;
};
TORCH_MODULE(Net);

/// A fortune: bytes [begin, end) of Corpus::text (without its "%" line).
struct Entry {
  int64_t begin = 0;
  int64_t end = 0;
};

struct Corpus {
  std::vector<std::string> files;   ///< file names, in the order they were read (sorted)
  std::vector<int64_t> file_begin;  ///< offset of each file in `text`
  at::Tensor text;                  ///< every byte of every file, int64 [n]
  int64_t train_size = 0;           ///< the first 95% are for training, the rest held out
  std::vector<Entry> entries;       ///< the fortunes that lie in the training part
};

/// Fixed-seed permutations of `size` items, one per epoch, `batch` items per step (like
/// examples/fashion_mnist's Sampler).
class Sampler {
 public:
  Sampler(int64_t size, int64_t batch, uint64_t seed);
  int64_t steps_per_epoch() const noexcept { return steps_per_epoch_; }
  /// The items of global step `step` (the first `count` of them, count <= batch).
  std::vector<int64_t> items(int64_t step, int64_t count);

 private:
  int64_t size_;
  int64_t batch_;
  int64_t steps_per_epoch_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> order_;
};

struct Data {
  Corpus corpus;
  Sampler windows;  ///< over the training windows text[k * kSeq, (k + 1) * kSeq + 1)
};

/// Reads the corpus from `dir` (sorted plain-text files; *.dat, *.u8, links and folders are
/// skipped).
Corpus read_corpus(const std::string& dir = kFortunesDir);

/// Reads the corpus and seeds libtorch (torch::manual_seed(1)), so that the models built next
/// start from the same weights in every variant. Also keeps OpenBLAS to one thread (see lm.cpp).
Data load();

/// The windows of step `step` (the first `size` of them).
Batch batch(Data& data, int64_t step, int64_t size = kBatch);

/// Consecutive windows for truncated backpropagation through time: the training text cut into
/// kBatch streams, and step `step` takes the next kSeq characters of each (wrapping around), so
/// that row i of step s + 1 continues row i of step s.
Batch stream_batch(const Data& data, int64_t step);

/// The windows of `text` starting at `firsts`: their kSeq characters, and the kSeq that follow
/// by one as targets.
Batch windows(const at::Tensor& text, const std::vector<int64_t>& firsts);

/// Fortune-per-row batches: row i holds the first kEntryLen + 1 bytes of fortune
/// `sampler.items(step)[i]`, padded with kPad (input: bytes [0, kEntryLen), target: [1, kEntryLen]).
Batch entry_batch(const Corpus& corpus, Sampler& sampler, int64_t step, int64_t size = kEntryBatch);

/// Mean cross-entropy (nats) of the logits [N, T, V] against the targets [N * T].
at::Tensor loss(const at::Tensor& logits, const at::Tensor& target);

/// Number of held-out windows.
int64_t heldout_windows(const Corpus& corpus);

/// Mean cross-entropy in bits per character on every held-out window, `eval_batch` windows per
/// forward pass (the result does not depend on it beyond rounding).
double bits_per_char(Net& net, const Corpus& corpus, int64_t eval_batch = kEvalBatch);

/// `length` characters generated after `prompt`, sampled at temperature 0.8 from a generator
/// seeded with `seed` (libtorch's global generator is not touched).
std::string sample(Net& net, const std::string& prompt, int64_t length, uint64_t seed);

/// The model's parameters as bytes (torch::save to a string), e.g. for an upload.
std::string serialize(Net& net);

}  // namespace crash::lm
