#include <daifu/errors.h>
#include <daifu/inject.h>

#include <torch/torch.h>

#include <filesystem>
#include <sstream>
#include <system_error>

namespace daifu {
namespace {

// Each fault raises what a real bug of its kind raises, produced by the real code path where
// this machine can: libtorch's own checks, its allocator, its serializer.
[[noreturn]] void raise(const std::string& fault, const std::string& scratch_dir) {
  if (fault == "transient") {
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                            "data loader: reading the next batch");
  }
  if (fault == "io") {
    throw std::system_error(std::make_error_code(std::errc::io_error), "data loader: reading shard");
  }
  if (fault == "oom") {
    // A real allocation that the CPU allocator refuses (2^50 floats = 4 PiB).
    auto t = torch::empty({int64_t{1} << 50}, torch::kFloat);
    throw Error("daifu inject: the allocator accepted a 4 PiB tensor (" + std::to_string(t.numel()) + ")");
  }
  if (fault == "shape") {
    torch::mm(torch::ones({4, 7}), torch::ones({10, 5}));  // mat1 and mat2 shapes cannot be multiplied
  }
  if (fault == "dtype") {
    torch::mm(torch::ones({2, 2}, torch::kFloat), torch::ones({2, 2}, torch::kDouble));
  }
  if (fault == "index") {
    torch::ones({3}).index_select(0, torch::tensor({int64_t{7}}));  // c10::IndexError
  }
  if (fault == "path") {
    const auto missing = std::filesystem::path(scratch_dir) / "missing-dir" / "checkpoint.pt";
    std::error_code ignored;
    std::filesystem::remove_all(missing.parent_path(), ignored);
    torch::save(torch::ones({2}), missing.string());  // Parent directory ... does not exist
  }
  if (fault == "nan_data") {
    auto batch = torch::ones({4, 3});
    batch[1][2] = std::numeric_limits<float>::quiet_NaN();
    TORCH_CHECK(torch::isfinite(batch).all().item<bool>(), "input batch contains non-finite values (NaN or Inf)");
  }
  if (fault == "nan_loss") {
    auto x = torch::full({1}, -1.0, torch::requires_grad());
    torch::autograd::DetectAnomalyGuard anomaly;
    torch::sqrt(x).sum().backward();  // Function 'SqrtBackward0' returned nan values
  }
  if (fault == "api") {
    torch::ones({4}).item<float>();  // a Tensor with 4 elements cannot be converted to Scalar
  }
  if (fault == "contention") {
    // Needs a GPU held by another process; the message is CUDA's, the exception libtorch's.
    TORCH_CHECK(false, "CUDA error: all CUDA-capable devices are busy or unavailable");
  }
  if (fault == "illegal_address") {
    TORCH_CHECK(false, "CUDA error: an illegal memory access was encountered");
  }
  if (fault == "unknown") {
    throw 42;  // not a std::exception
  }
  throw Error("daifu inject: unknown fault \"" + fault + "\"");
}

}  // namespace

void throw_injected(const std::string& fault, const std::string& scratch_dir) { raise(fault, scratch_dir); }

}  // namespace daifu
