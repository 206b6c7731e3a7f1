#include "snapshot/snapshot.h"

#include <daifu/errors.h>

#include "state/cpu_rng.h"
#include "state/optimizer_state.h"

#include <c10/util/string_utils.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace daifu::detail {
namespace {

using torch::optim::OptimizerParamState;

bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  return a.defined() && b.defined() && a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type();
}

// Host buffers handed out in order and kept for the next capture: `take(t)` returns a host
// tensor holding a copy of t, reusing the buffer of the same position when its layout fits.
class BufferPool {
 public:
  void rewind() { next_ = 0; }
  at::Tensor take(const at::Tensor& t) {
    if (!t.defined()) return t;
    if (next_ == buffers_.size()) buffers_.emplace_back();
    at::Tensor& buffer = buffers_[next_++];
    if (!same_layout(buffer, t)) {
      auto options = t.options().device(at::kCPU).requires_grad(false);
      if (t.is_cuda()) options = options.pinned_memory(true);
      buffer = at::empty(t.sizes(), options);
    }
    buffer.copy_(t.detach(), /*non_blocking=*/t.is_cuda());
    return buffer;
  }
  uint64_t bytes() const {
    uint64_t n = 0;
    for (const auto& b : buffers_) n += b.defined() ? b.nbytes() : 0;
    return n;
  }

 private:
  std::vector<at::Tensor> buffers_;
  std::size_t next_ = 0;
};

// Copies `saved` into `live` in place when the layout fits; otherwise returns a fresh copy on
// `device`.
at::Tensor restored(const at::Tensor& saved, const at::Tensor* live, const at::Device& device) {
  if (!saved.defined()) return saved;
  if (live != nullptr && same_layout(*live, saved) && live->device() == device) {
    at::Tensor target = *live;
    target.detach().copy_(saved);
    return target;
  }
  return saved.to(device, /*non_blocking=*/false, /*copy=*/true);
}

struct ModuleImage {
  std::vector<at::Tensor> tensors;  // parameters then buffers, as gathered
};

struct ParamStateImage {
  std::string key;
  at::Device device = at::kCPU;
  std::unique_ptr<OptimizerParamState> state;  // nullptr: the entry did not exist yet
};

struct OptimizerImage {
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> group_options;
  std::vector<ParamStateImage> states;
};

std::vector<at::Tensor> module_tensors(torch::nn::Module& m) {
  auto tensors = m.parameters(/*recurse=*/true);
  auto buffers = m.buffers(/*recurse=*/true);
  tensors.insert(tensors.end(), buffers.begin(), buffers.end());
  return tensors;
}

std::string state_key(const at::Tensor& param) { return c10::guts::to_string(param.unsafeGetTensorImpl()); }

}  // namespace

struct Snapshot::Impl {
  bool valid = false;
  int64_t step = -1;
  int64_t global_step = 0;
  BufferPool pool;
  std::vector<ModuleImage> modules;         // one per tracked object, used by modules
  std::vector<OptimizerImage> optimizers;   // one per tracked object, used by optimizers
  std::vector<at::Tensor> tensors;          // one per tracked object, used by tensors
  CpuRngState cpu_rng;
  std::vector<at::Tensor> cuda_rng;
};

Snapshot::Snapshot() : impl_(std::make_unique<Impl>()) {}
Snapshot::~Snapshot() = default;

void Snapshot::capture(const TrackedState& state, int64_t step, int64_t global_step) {
  torch::NoGradGuard no_grad;
  Impl& s = *impl_;
  s.valid = false;
  s.pool.rewind();
  const auto& objects = state.objects();
  s.modules.assign(objects.size(), {});
  s.optimizers.clear();
  s.optimizers.resize(objects.size());
  s.tensors.assign(objects.size(), {});
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const TrackedObject& o = objects[i];
    if (o.module != nullptr) {
      for (const auto& t : module_tensors(*o.module)) s.modules[i].tensors.push_back(s.pool.take(t));
    } else if (o.optimizer != nullptr) {
      OptimizerImage& image = s.optimizers[i];
      const auto& live = o.optimizer->state();
      for (const auto& group : o.optimizer->param_groups()) {
        image.group_options.push_back(group.options().clone());
        for (const auto& param : group.params()) {
          ParamStateImage entry{state_key(param), param.device(), nullptr};
          auto it = live.find(entry.key);
          if (it != live.end()) {
            entry.state = it->second->clone();  // copies scalars; tensors are replaced next
            if (!map_state_tensors(*entry.state, [&](const at::Tensor& t) { return s.pool.take(t); })) {
              throw Error("daifu: optimizer \"" + o.name +
                          "\" keeps per-parameter state of a type daifu cannot snapshot (known: SGD, Adam, "
                          "AdamW, RMSprop, Adagrad, LBFGS)");
            }
          }
          image.states.push_back(std::move(entry));
        }
      }
    } else {
      s.tensors[i] = s.pool.take(*o.tensor);
    }
  }
  s.cpu_rng = CpuRngState::capture();
  s.cuda_rng.clear();
  const auto& cuda = at::detail::getCUDAHooks();
  if (cuda.hasCUDA()) {
    for (int d = 0; d < cuda.getNumGPUs(); ++d) {
      at::Generator gen = cuda.getDefaultCUDAGenerator(static_cast<c10::DeviceIndex>(d));
      std::lock_guard<std::mutex> lock(gen.mutex());
      s.cuda_rng.push_back(gen.get_state());
    }
  }
  s.step = step;
  s.global_step = global_step;
  s.valid = true;
}

void Snapshot::restore(const TrackedState& state) const {
  const Impl& s = *impl_;
  if (!s.valid) throw Error("daifu: no snapshot to restore");
  torch::NoGradGuard no_grad;
  const auto& objects = state.objects();
  if (objects.size() != s.modules.size()) {
    throw Error("daifu: objects were tracked after the snapshot was taken; it cannot be restored");
  }
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const TrackedObject& o = objects[i];
    if (o.module != nullptr) {
      const auto live = module_tensors(*o.module);
      const auto& saved = s.modules[i].tensors;
      if (live.size() != saved.size()) {
        throw Error("daifu: module \"" + o.name + "\" has " + std::to_string(live.size()) + " tensors now, " +
                    std::to_string(saved.size()) + " in the snapshot");
      }
      for (std::size_t j = 0; j < live.size(); ++j) {
        if (!same_layout(live[j], saved[j])) {
          throw Error("daifu: module \"" + o.name + "\" tensor " + std::to_string(j) + " changed shape since the snapshot");
        }
        at::Tensor target = live[j];
        target.detach().copy_(saved[j]);
      }
    } else if (o.optimizer != nullptr) {
      const OptimizerImage& image = s.optimizers[i];
      auto& groups = o.optimizer->param_groups();
      for (std::size_t g = 0; g < groups.size() && g < image.group_options.size(); ++g) {
        groups[g].set_options(image.group_options[g]->clone());
      }
      auto& live = o.optimizer->state();
      // Entries that did not exist at capture time are removed; the others are rebuilt from
      // the image, reusing the live tensors' memory where the layout fits.
      std::unordered_map<std::string, const ParamStateImage*> saved;
      for (const auto& entry : image.states) saved.emplace(entry.key, &entry);
      for (auto it = live.begin(); it != live.end();) {
        auto found = saved.find(it->first);
        if (found == saved.end() || found->second->state == nullptr) {
          it = live.erase(it);
        } else {
          ++it;
        }
      }
      for (const auto& entry : image.states) {
        if (entry.state == nullptr) continue;
        std::vector<at::Tensor> old;
        auto it = live.find(entry.key);
        if (it != live.end()) old = state_tensors(*it->second);
        auto rebuilt = entry.state->clone();
        std::size_t slot = 0;
        map_state_tensors(*rebuilt, [&](const at::Tensor& t) {
          const at::Tensor* previous = slot < old.size() ? &old[slot] : nullptr;
          ++slot;
          return restored(t, previous, entry.device);
        });
        live[entry.key] = std::move(rebuilt);
      }
    } else {
      if (!same_layout(*o.tensor, s.tensors[i])) {
        throw Error("daifu: tensor \"" + o.name + "\" changed shape since the snapshot");
      }
      o.tensor->detach().copy_(s.tensors[i]);
    }
  }
  s.cpu_rng.restore();
  const auto& cuda = at::detail::getCUDAHooks();
  for (std::size_t d = 0; d < s.cuda_rng.size(); ++d) {
    at::Generator gen = cuda.getDefaultCUDAGenerator(static_cast<c10::DeviceIndex>(d));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s.cuda_rng[d]);
  }
}

bool Snapshot::valid() const noexcept { return impl_->valid; }
int64_t Snapshot::step() const noexcept { return impl_->step; }
int64_t Snapshot::global_step() const noexcept { return impl_->global_step; }
uint64_t Snapshot::bytes() const noexcept { return impl_->pool.bytes(); }

}  // namespace daifu::detail
