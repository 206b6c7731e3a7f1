// What a session tracks, seen from the step loop: which tensors may change during a step,
// whether any did, the CPU RNG state at the step start, and the devices to synchronize.
// The header is torch-free so that the step loop compiles without <torch/torch.h>.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace at {
class Tensor;
}
namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace daifu::detail {

/// One tracked object; exactly one of the pointers is set. The objects outlive the session.
struct TrackedObject {
  std::string name;
  torch::nn::Module* module = nullptr;
  torch::optim::Optimizer* optimizer = nullptr;
  at::Tensor* tensor = nullptr;
};

/// A module's parameters, then its buffers (recursively): what a snapshot of it holds.
std::vector<at::Tensor> module_tensors(torch::nn::Module& module);

class TrackedState {
 public:
  TrackedState();
  ~TrackedState();

  /// Throws daifu::Error if `name` is already tracked.
  void add_module(const std::string& name, torch::nn::Module& module);
  void add_optimizer(const std::string& name, torch::optim::Optimizer& optimizer);
  void add_tensor(const std::string& name, at::Tensor& tensor);
  const std::vector<TrackedObject>& objects() const noexcept;
  std::vector<std::string> names() const;

  /// Records version counters and the CPU RNG state. Cheap: no tensor data is copied.
  void begin_step();
  /// The tracked names whose tensors were modified in place since begin_step().
  std::vector<std::string> mutated_since_begin() const;
  /// A number that changes whenever a tracked tensor is modified in place or an optimizer
  /// grows or drops state: compare two stamps to see whether code in between touched the state.
  int64_t version_stamp() const;
  /// Changes when refresh() looked the tracked tensors up again.
  int64_t generation() const noexcept;
  /// Puts the CPU RNG, and the generators of the CUDA devices in cuda_devices(), back to
  /// their state at begin_step().
  void restore_rng() const;

  /// Moves every tracked module, optimizer state and tensor to `device` ("cpu", "cuda:1"):
  /// parameters keep their identity (the optimizers' parameter lists stay valid); a tracked
  /// tensor is replaced by its copy on `device`. Throws c10::Error for a device name libtorch
  /// does not parse or cannot use.
  void move_to(const std::string& device);

  /// Looks up the tensors of every tracked object again, after code replaced some of them
  /// (a submodule swapped by a hot patch); changes version_stamp().
  void refresh();

  /// Makes the .grad() of every parameter of the tracked modules and optimizers undefined, so
  /// the memory a failed step's gradients held is freed (unless the program holds them too).
  /// Returns the bytes of the gradients dropped.
  int64_t release_grads() const;

  /// CUDA device indices that tracked tensors live on (empty on a CPU run).
  const std::vector<int64_t>& cuda_devices() const noexcept;
  /// Synchronizes every CUDA device in cuda_devices(), so that an asynchronous CUDA error
  /// surfaces in the step that caused it. A no-op when nothing tracked is on CUDA.
  void synchronize_devices() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace daifu::detail
