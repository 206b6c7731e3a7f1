#include "fashion_mnist_data.h"

#include <ATen/ATen.h>
#include <zlib.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

namespace fashion_mnist {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // idx3: unsigned byte, 3 dimensions
constexpr uint32_t kLabelsMagic = 0x00000801;  // idx1: unsigned byte, 1 dimension
constexpr double kMean = 0.2860;                // of the training images, scaled to [0, 1]
constexpr double kStd = 0.3530;

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};

class GzReader {
 public:
  explicit GzReader(std::string path) : path_(std::move(path)), file_(gzopen(path_.c_str(), "rb")) {
    if (!file_) throw std::runtime_error("cannot open " + path_ + " (is dataset-fashion-mnist installed?)");
  }

  void read(void* out, size_t bytes) {
    auto* p = static_cast<unsigned char*>(out);
    while (bytes > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(bytes, 1u << 30));
      const int n = gzread(file_.get(), p, chunk);
      if (n <= 0) throw std::runtime_error(path_ + ": truncated or not gzip");
      p += n;
      bytes -= static_cast<size_t>(n);
    }
  }

  uint32_t read_be32() {
    unsigned char b[4];
    read(b, sizeof b);
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
  }

  void expect(uint32_t value, uint32_t expected, const char* what) const {
    if (value != expected) {
      throw std::runtime_error(path_ + ": bad " + std::string(what) + " " + std::to_string(value) +
                               ", expected " + std::to_string(expected));
    }
  }

 private:
  std::string path_;
  std::unique_ptr<gzFile_s, GzCloser> file_;
};

}  // namespace

Dataset load(const std::string& dir, const std::string& split) {
  GzReader images(dir + "/" + split + "-images-idx3-ubyte.gz");
  images.expect(images.read_be32(), kImagesMagic, "magic");
  const uint32_t count = images.read_be32();
  images.expect(images.read_be32(), 28, "row count");
  images.expect(images.read_be32(), 28, "column count");
  at::Tensor pixels = at::empty({count, 1, 28, 28}, at::kByte);
  images.read(pixels.data_ptr(), static_cast<size_t>(pixels.numel()));

  GzReader labels(dir + "/" + split + "-labels-idx1-ubyte.gz");
  labels.expect(labels.read_be32(), kLabelsMagic, "magic");
  labels.expect(labels.read_be32(), count, "label count");
  at::Tensor classes = at::empty({count}, at::kByte);
  labels.read(classes.data_ptr(), static_cast<size_t>(classes.numel()));

  Dataset data;
  data.images = pixels.to(at::kFloat).div_(255.0).sub_(kMean).div_(kStd);
  data.labels = classes.to(at::kLong);
  return data;
}

Sampler::Sampler(int64_t dataset_size, int64_t batch_size, uint64_t seed)
    : dataset_size_(dataset_size), batch_size_(batch_size),
      steps_per_epoch_(batch_size > 0 ? dataset_size / batch_size : 0), seed_(seed) {
  if (steps_per_epoch_ <= 0) {
    throw std::invalid_argument("Sampler: batch size " + std::to_string(batch_size) +
                                " does not fit a data set of " + std::to_string(dataset_size));
  }
}

at::Tensor Sampler::indices(int64_t step, int64_t batch_size) {
  const int64_t epoch = step / steps_per_epoch_;
  if (epoch != epoch_) {
    std::vector<int64_t> order(static_cast<size_t>(dataset_size_));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::shuffle(order.begin(), order.end(), std::mt19937_64(seed_ + static_cast<uint64_t>(epoch)));
    permutation_ = at::tensor(order, at::kLong);
    epoch_ = epoch;
  }
  const int64_t count = std::clamp<int64_t>(batch_size, 1, batch_size_);
  return permutation_.narrow(0, (step % steps_per_epoch_) * batch_size_, count);
}

Batch gather(const Dataset& data, const at::Tensor& indices) {
  return {data.images.index_select(0, indices), data.labels.index_select(0, indices)};
}

}  // namespace fashion_mnist
