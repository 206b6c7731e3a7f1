#include "state/tracked_state.h"

#include <daifu/errors.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <mutex>

namespace daifu::detail {

// One tracked object. `tensors` lists what may change in place; `extra_version` adds a
// count that changes when the object grows state (an optimizer's first step).
struct Entry {
  std::string name;
  std::function<std::vector<at::Tensor>()> gather;
  std::function<int64_t()> extra_version;
  std::vector<at::Tensor> tensors;
  std::vector<int64_t> versions;
  int64_t extra = 0;
};

struct TrackedState::Impl {
  std::vector<Entry> entries;
  std::vector<int64_t> cuda_devices;
  // The CPU generator's whole state, copied without allocating (get_state() would allocate
  // and serialize a 5 KB tensor every step).
  struct CpuRng {
    at::mt19937 engine;
    c10::optional<float> next_float_normal;
    c10::optional<double> next_double_normal;
  };
  CpuRng rng;
  bool rng_saved = false;

  void add(Entry entry) {
    for (const auto& e : entries) {
      if (e.name == entry.name) throw Error("daifu: \"" + entry.name + "\" is already tracked");
    }
    entry.tensors = entry.gather();
    for (const auto& t : entry.tensors) {
      if (t.defined() && t.is_cuda() &&
          std::find(cuda_devices.begin(), cuda_devices.end(), t.get_device()) == cuda_devices.end()) {
        cuda_devices.push_back(t.get_device());
      }
    }
    entries.push_back(std::move(entry));
  }
};

TrackedState::TrackedState() : impl_(std::make_unique<Impl>()) {}
TrackedState::~TrackedState() = default;

void TrackedState::add_module(const std::string& name, torch::nn::Module& module) {
  impl_->add(Entry{name,
                   [&module] {
                     auto tensors = module.parameters(/*recurse=*/true);
                     auto buffers = module.buffers(/*recurse=*/true);
                     tensors.insert(tensors.end(), buffers.begin(), buffers.end());
                     return tensors;
                   },
                   nullptr, {}, {}, 0});
}

void TrackedState::add_optimizer(const std::string& name, torch::optim::Optimizer& optimizer) {
  impl_->add(Entry{name,
                   [&optimizer] {
                     std::vector<at::Tensor> tensors;
                     for (const auto& group : optimizer.param_groups()) {
                       tensors.insert(tensors.end(), group.params().begin(), group.params().end());
                     }
                     return tensors;
                   },
                   [&optimizer] { return static_cast<int64_t>(optimizer.state().size()); }, {}, {}, 0});
}

void TrackedState::add_tensor(const std::string& name, at::Tensor& tensor) {
  impl_->add(Entry{name, [&tensor] { return std::vector<at::Tensor>{tensor}; }, nullptr, {}, {}, 0});
}

std::vector<std::string> TrackedState::names() const {
  std::vector<std::string> out;
  for (const auto& e : impl_->entries) out.push_back(e.name);
  return out;
}

void TrackedState::begin_step() {
  for (auto& e : impl_->entries) {
    e.versions.resize(e.tensors.size());
    for (std::size_t i = 0; i < e.tensors.size(); ++i) {
      e.versions[i] = e.tensors[i].defined() ? static_cast<int64_t>(e.tensors[i]._version()) : 0;
    }
    if (e.extra_version) e.extra = e.extra_version();
  }
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  auto* cpu = at::check_generator<at::CPUGeneratorImpl>(gen);
  impl_->rng = {cpu->engine(), cpu->next_float_normal_sample(), cpu->next_double_normal_sample()};
  impl_->rng_saved = true;
}

std::vector<std::string> TrackedState::mutated_since_begin() const {
  std::vector<std::string> out;
  for (const auto& e : impl_->entries) {
    bool mutated = e.extra_version && e.extra_version() != e.extra;
    for (std::size_t i = 0; !mutated && i < e.tensors.size(); ++i) {
      mutated = e.tensors[i].defined() && static_cast<int64_t>(e.tensors[i]._version()) != e.versions[i];
    }
    if (mutated) out.push_back(e.name);
  }
  return out;
}

void TrackedState::restore_rng() const {
  if (!impl_->rng_saved) return;
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  auto* cpu = at::check_generator<at::CPUGeneratorImpl>(gen);
  cpu->set_engine(impl_->rng.engine);
  cpu->set_next_float_normal_sample(impl_->rng.next_float_normal);
  cpu->set_next_double_normal_sample(impl_->rng.next_double_normal);
}

const std::vector<int64_t>& TrackedState::cuda_devices() const noexcept { return impl_->cuda_devices; }

void TrackedState::synchronize_devices() const {
  for (const int64_t device : impl_->cuda_devices) at::detail::getCUDAHooks().deviceSynchronize(device);
}

}  // namespace daifu::detail
