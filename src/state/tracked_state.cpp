#include "state/tracked_state.h"

#include <daifu/errors.h>

#include "state/cpu_rng.h"
#include "state/cuda_runtime.h"
#include "state/optimizer_state.h"

#include <torch/torch.h>

#include <algorithm>

namespace daifu::detail {

std::vector<at::Tensor> module_tensors(torch::nn::Module& module) {
  auto tensors = module.parameters(/*recurse=*/true);
  auto buffers = module.buffers(/*recurse=*/true);
  tensors.insert(tensors.end(), buffers.begin(), buffers.end());
  return tensors;
}

namespace {

// The tensors of an object that may change in place during a step: a module's parameters and
// buffers, an optimizer's parameters and the tensors of its per-parameter state.
std::vector<at::Tensor> tensors_of(const TrackedObject& o) {
  if (o.module != nullptr) return module_tensors(*o.module);
  if (o.optimizer != nullptr) {
    std::vector<at::Tensor> tensors;
    for (const auto& group : o.optimizer->param_groups()) {
      tensors.insert(tensors.end(), group.params().begin(), group.params().end());
    }
    for (const auto& [key, state] : o.optimizer->state()) {
      auto held = state_tensors(*state);
      tensors.insert(tensors.end(), held.begin(), held.end());
    }
    return tensors;
  }
  return {*o.tensor};
}

// A count that changes when the object grows state: an optimizer's first step() creates its
// per-parameter entries without touching the parameters' versions yet.
int64_t extra_version_of(const TrackedObject& o) {
  return o.optimizer != nullptr ? static_cast<int64_t>(o.optimizer->state().size()) : 0;
}

}  // namespace

struct TrackedState::Impl {
  std::vector<TrackedObject> objects;
  // Per object: its tensors, their versions and extra version at the step start.
  struct Watch {
    std::vector<at::Tensor> tensors;
    std::vector<int64_t> versions;
    int64_t extra = 0;
  };
  std::vector<Watch> watches;
  std::vector<int64_t> cuda_devices;
  CpuRngState rng;
  bool rng_saved = false;
  std::vector<std::pair<int64_t, at::Tensor>> cuda_rng;  // (device, generator state) at begin_step
  int64_t generation = 0;  // bumped by refresh(): the set of tracked tensors changed

  void add(TrackedObject object) {
    for (const auto& o : objects) {
      if (o.name == object.name) throw Error("daifu: \"" + object.name + "\" is already tracked");
    }
    Watch watch;
    watch.tensors = tensors_of(object);
    note_devices(watch.tensors);
    objects.push_back(std::move(object));
    watches.push_back(std::move(watch));
  }

  void note_devices(const std::vector<at::Tensor>& tensors) {
    for (const auto& t : tensors) {
      if (t.defined() && t.is_cuda() &&
          std::find(cuda_devices.begin(), cuda_devices.end(), t.get_device()) == cuda_devices.end()) {
        cuda_devices.push_back(t.get_device());
      }
    }
  }
};

TrackedState::TrackedState() : impl_(std::make_unique<Impl>()) {}
TrackedState::~TrackedState() = default;

void TrackedState::add_module(const std::string& name, torch::nn::Module& module) {
  impl_->add(TrackedObject{name, &module, nullptr, nullptr});
}

void TrackedState::add_optimizer(const std::string& name, torch::optim::Optimizer& optimizer) {
  impl_->add(TrackedObject{name, nullptr, &optimizer, nullptr});
}

void TrackedState::add_tensor(const std::string& name, at::Tensor& tensor) {
  impl_->add(TrackedObject{name, nullptr, nullptr, &tensor});
}

const std::vector<TrackedObject>& TrackedState::objects() const noexcept { return impl_->objects; }
int64_t TrackedState::generation() const noexcept { return impl_->generation; }

std::vector<std::string> TrackedState::names() const {
  std::vector<std::string> out;
  for (const auto& o : impl_->objects) out.push_back(o.name);
  return out;
}

void TrackedState::begin_step() {
  for (std::size_t i = 0; i < impl_->objects.size(); ++i) {
    auto& w = impl_->watches[i];
    // An optimizer's state tensors are created by its first step and replaced by a rollback.
    if (impl_->objects[i].optimizer != nullptr) w.tensors = tensors_of(impl_->objects[i]);
    w.versions.resize(w.tensors.size());
    for (std::size_t j = 0; j < w.tensors.size(); ++j) {
      w.versions[j] = w.tensors[j].defined() ? static_cast<int64_t>(w.tensors[j]._version()) : 0;
    }
    w.extra = extra_version_of(impl_->objects[i]);
  }
  impl_->rng = CpuRngState::capture();
  impl_->rng_saved = true;
  impl_->cuda_rng.clear();
  for (const int64_t device : impl_->cuda_devices) {
    at::Generator gen = cuda_default_generator(static_cast<c10::DeviceIndex>(device));
    std::lock_guard<std::mutex> lock(gen.mutex());
    impl_->cuda_rng.emplace_back(device, gen.get_state());
  }
}

std::vector<std::string> TrackedState::mutated_since_begin() const {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < impl_->objects.size(); ++i) {
    const auto& w = impl_->watches[i];
    const TrackedObject& o = impl_->objects[i];
    bool mutated = extra_version_of(o) != w.extra || (o.optimizer != nullptr && updates_untraceably(*o.optimizer));
    for (std::size_t j = 0; !mutated && j < w.tensors.size(); ++j) {
      mutated = w.tensors[j].defined() && static_cast<int64_t>(w.tensors[j]._version()) != w.versions[j];
    }
    if (mutated) out.push_back(impl_->objects[i].name);
  }
  return out;
}

int64_t TrackedState::version_stamp() const {
  int64_t stamp = impl_->generation;
  for (std::size_t i = 0; i < impl_->objects.size(); ++i) {
    const TrackedObject& o = impl_->objects[i];
    stamp += extra_version_of(o);
    for (const auto& t : tensors_of(o)) stamp += t.defined() ? static_cast<int64_t>(t._version()) : 0;
  }
  return stamp;
}

void TrackedState::restore_rng() const {
  if (impl_->rng_saved) impl_->rng.restore();
  for (const auto& [device, state] : impl_->cuda_rng) {
    at::Generator gen = cuda_default_generator(static_cast<c10::DeviceIndex>(device));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  }
}

void TrackedState::move_to(const std::string& device_name) {
  const c10::Device device(device_name);
  torch::NoGradGuard no_grad;
  for (auto& o : impl_->objects) {
    if (o.module != nullptr) {
      o.module->to(device);
    } else if (o.optimizer != nullptr) {
      for (auto& [key, state] : o.optimizer->state()) {
        map_state_tensors(*state, [&](const at::Tensor& t) { return t.defined() ? t.to(device) : t; });
      }
    } else {
      *o.tensor = o.tensor->to(device);
    }
  }
  refresh();
}

void TrackedState::refresh() {
  ++impl_->generation;
  impl_->cuda_devices.clear();
  for (std::size_t i = 0; i < impl_->objects.size(); ++i) {
    impl_->watches[i].tensors = tensors_of(impl_->objects[i]);
    impl_->note_devices(impl_->watches[i].tensors);
  }
}

int64_t TrackedState::release_grads() const {
  int64_t bytes = 0;
  auto release = [&](const at::Tensor& param) {
    at::Tensor& grad = param.mutable_grad();
    if (!grad.defined()) return;
    bytes += static_cast<int64_t>(grad.numel() * grad.element_size());
    grad.reset();
  };
  for (const auto& o : impl_->objects) {
    if (o.module != nullptr) {
      for (const auto& p : o.module->parameters(/*recurse=*/true)) release(p);
    }
    if (o.optimizer != nullptr) {
      for (const auto& group : o.optimizer->param_groups()) {
        for (const auto& p : group.params()) release(p);
      }
    }
  }
  return bytes;
}

const std::vector<int64_t>& TrackedState::cuda_devices() const noexcept { return impl_->cuda_devices; }

void TrackedState::synchronize_devices() const {
  for (const int64_t device : impl_->cuda_devices) synchronize_cuda_device(device);
}

}  // namespace daifu::detail
