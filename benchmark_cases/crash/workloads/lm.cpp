#include "lm.h"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>

namespace crash::lm {

NetImpl::NetImpl()
    : embed(register_module("embed", torch::nn::Embedding(kVocab, kEmbed))),
      gru(register_module("gru", torch::nn::GRU(torch::nn::GRUOptions(kEmbed, kHidden).batch_first(true)))),
      head(register_module("head", torch::nn::Linear(kHidden, kVocab))) {}

std::tuple<at::Tensor, at::Tensor> NetImpl::forward(const at::Tensor& x, const at::Tensor& h, const crash::Probe& probe) {
  const auto point = [&](const char* name, at::Tensor t) { return probed(probe, name, std::move(t)); };
  auto [out, last] = gru->forward(point("embed.out", embed(x)), h);
  return {point("head.out", head(point("gru.out", out))), last};
}

Sampler::Sampler(int64_t size, int64_t batch, uint64_t seed)
    : size_(size), batch_(batch), steps_per_epoch_(batch > 0 ? size / batch : 0), seed_(seed) {
  if (steps_per_epoch_ <= 0) {
    throw std::invalid_argument("Sampler: batch " + std::to_string(batch) + " does not fit " + std::to_string(size) + " items");
  }
}

std::vector<int64_t> Sampler::items(int64_t step, int64_t count) {
  const int64_t epoch = step / steps_per_epoch_;
  if (epoch != epoch_) {
    order_.resize(static_cast<size_t>(size_));
    std::iota(order_.begin(), order_.end(), int64_t{0});
    std::shuffle(order_.begin(), order_.end(), std::mt19937_64(seed_ + static_cast<uint64_t>(epoch)));
    epoch_ = epoch;
  }
  const int64_t first = (step % steps_per_epoch_) * batch_;
  const int64_t n = std::clamp<int64_t>(count, 1, batch_);
  return {order_.begin() + first, order_.begin() + first + n};
}

Corpus read_corpus(const std::string& dir) {
  namespace fs = std::filesystem;
  Corpus corpus;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (!entry.is_regular_file() || entry.is_symlink() || ends_with(".dat") || ends_with(".u8")) continue;
    corpus.files.push_back(name);
  }
  std::sort(corpus.files.begin(), corpus.files.end());
  if (corpus.files.empty()) throw std::runtime_error("no fortune files in " + dir);
  std::string bytes;
  for (const auto& name : corpus.files) {
    std::ifstream in(dir + "/" + name, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + dir + "/" + name);
    corpus.file_begin.push_back(static_cast<int64_t>(bytes.size()));
    const int64_t begin = static_cast<int64_t>(bytes.size());
    bytes.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    // Fortunes: the lines up to a line "%" (a trailing empty piece after the last "%" is none).
    int64_t entry = begin;
    for (int64_t line = begin; line < static_cast<int64_t>(bytes.size());) {
      auto eol = bytes.find('\n', static_cast<size_t>(line));
      const int64_t next = eol == std::string::npos ? static_cast<int64_t>(bytes.size()) : static_cast<int64_t>(eol) + 1;
      const int64_t len = (eol == std::string::npos ? next : next - 1) - line;
      if (len == 1 && bytes[static_cast<size_t>(line)] == '%') {
        corpus.entries.push_back({entry, line});
        entry = next;
      }
      line = next;
    }
    if (entry < static_cast<int64_t>(bytes.size())) corpus.entries.push_back({entry, static_cast<int64_t>(bytes.size())});
  }
  std::vector<int64_t> tokens(bytes.size());
  std::transform(bytes.begin(), bytes.end(), tokens.begin(), [](char c) { return static_cast<int64_t>(static_cast<uint8_t>(c)); });
  const auto n = static_cast<int64_t>(tokens.size());
  corpus.text = torch::tensor(tokens, torch::kLong);
  corpus.train_size = n - n / 20;
  corpus.entries.erase(std::remove_if(corpus.entries.begin(), corpus.entries.end(),
                                      [&](const Entry& e) { return e.end > corpus.train_size; }),
                       corpus.entries.end());
  return corpus;
}

// Debian's libtorch does its matrix products in OpenBLAS (the pthreads build), which runs a
// thread pool of its own, one thread per core, next to libtorch's OpenMP threads
// (at::set_num_threads). The GRU makes hundreds of small products per step; with both pools
// on the same cores they wait on each other, and with 2 OpenMP threads a step took 1-2 s
// instead of ~40 ms on a busy 2-core machine. So OpenBLAS gets one thread, as
// OPENBLAS_NUM_THREADS=1 would give it; libtorch keeps the threads it was given.
void one_blas_thread() {
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
}

Data load() {
  one_blas_thread();
  torch::manual_seed(1);
  auto corpus = read_corpus();
  const int64_t windows = (corpus.train_size - 1) / kSeq;
  return Data{std::move(corpus), Sampler(windows, kBatch, /*seed=*/1)};
}

Batch windows(const at::Tensor& text, const std::vector<int64_t>& firsts) {
  const at::Tensor starts = torch::tensor(firsts, torch::kLong).unsqueeze(1);
  const at::Tensor rows = text.index({starts + torch::arange(kSeq + 1, torch::kLong)});  // [N, T + 1]
  return {rows.narrow(1, 0, kSeq).contiguous(), rows.narrow(1, 1, kSeq).reshape({-1})};
}

Batch batch(Data& data, int64_t step, int64_t size) {
  auto items = data.windows.items(step, size);
  for (auto& k : items) k *= kSeq;
  return windows(data.corpus.text, items);
}

Batch stream_batch(const Data& data, int64_t step) {
  const int64_t length = (data.corpus.train_size - 1) / kBatch;
  const int64_t chunk = step % ((length - 1) / kSeq);
  std::vector<int64_t> firsts(static_cast<size_t>(kBatch));
  for (int64_t i = 0; i < kBatch; ++i) firsts[static_cast<size_t>(i)] = i * length + chunk * kSeq;
  return windows(data.corpus.text, firsts);
}

Batch entry_batch(const Corpus& corpus, Sampler& sampler, int64_t step, int64_t size) {
  const auto items = sampler.items(step, size);
  at::Tensor rows = torch::full({static_cast<int64_t>(items.size()), kEntryLen + 1}, kPad, torch::kLong);
  for (size_t i = 0; i < items.size(); ++i) {
    const Entry& e = corpus.entries[static_cast<size_t>(items[i])];
    const int64_t n = std::min(e.end - e.begin, kEntryLen + 1);
    if (n > 0) rows[static_cast<int64_t>(i)].narrow(0, 0, n).copy_(corpus.text.narrow(0, e.begin, n));
  }
  return {rows.narrow(1, 0, kEntryLen).contiguous(), rows.narrow(1, 1, kEntryLen).reshape({-1})};
}

at::Tensor loss(const at::Tensor& logits, const at::Tensor& target) {
  return torch::nn::functional::cross_entropy(logits.reshape({-1, kVocab}), target);
}

int64_t heldout_windows(const Corpus& corpus) { return (corpus.text.size(0) - corpus.train_size - 1) / kSeq; }

double bits_per_char(Net& net, const Corpus& corpus, int64_t eval_batch) {
  torch::NoGradGuard no_grad;
  net->eval();
  const int64_t n = heldout_windows(corpus);
  double nats = 0;
  for (int64_t first = 0; first < n; first += eval_batch) {
    std::vector<int64_t> firsts;
    for (int64_t k = first; k < std::min(n, first + eval_batch); ++k) firsts.push_back(corpus.train_size + k * kSeq);
    const auto [x, y] = windows(corpus.text, firsts);
    const auto logits = std::get<0>(net->forward(x));
    nats += torch::nn::functional::cross_entropy(logits.reshape({-1, kVocab}), y,
                                                 torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                .item<double>();
  }
  net->train();
  return nats / static_cast<double>(n * kSeq) / std::log(2.0);
}

std::string sample(Net& net, const std::string& prompt, int64_t length, uint64_t seed) {
  torch::NoGradGuard no_grad;
  net->eval();
  std::mt19937_64 random(seed);
  std::vector<int64_t> tokens;
  for (char c : prompt) tokens.push_back(static_cast<uint8_t>(c));
  at::Tensor x = torch::tensor(tokens, torch::kLong).unsqueeze(0);
  at::Tensor h;
  std::string out = prompt;
  for (int64_t i = 0; i < length; ++i) {
    auto [logits, last] = net->forward(x, h);
    h = last;
    const at::Tensor p = torch::softmax(logits[0][-1] / 0.8, 0).contiguous();
    const float* probs = p.data_ptr<float>();
    std::discrete_distribution<int> next(probs, probs + kVocab);
    const int c = next(random);
    out.push_back(static_cast<char>(c));
    x = torch::full({1, 1}, c, torch::kLong);
  }
  net->train();
  return out;
}

std::string serialize(Net& net) {
  std::ostringstream bytes;
  torch::save(net, bytes);
  return bytes.str();
}

}  // namespace crash::lm
