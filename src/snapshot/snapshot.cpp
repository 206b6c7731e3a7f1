#include "snapshot/snapshot.h"

#include <daifu/errors.h>

#include "state/cuda_runtime.h"
#include "compat/optimizer_key.h"
#include "state/cpu_rng.h"
#include "state/optimizer_state.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstring>

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

// dst = src. Between contiguous CPU tensors of one dtype, a memcpy split over libtorch's
// intra-op threads: 2.5-4x faster than copy_() here (which neither streams nor splits well).
void copy_into(at::Tensor dst, const at::Tensor& src) {
  if (dst.is_cpu() && src.is_cpu() && dst.is_contiguous() && src.is_contiguous() &&
      dst.scalar_type() == src.scalar_type() && dst.numel() == src.numel()) {
    auto* to = static_cast<char*>(dst.data_ptr());
    const auto* from = static_cast<const char*>(src.data_ptr());
    at::parallel_for(0, static_cast<int64_t>(src.nbytes()), int64_t{1} << 20, [&](int64_t begin, int64_t end) {
      std::memcpy(to + begin, from + begin, static_cast<std::size_t>(end - begin));
    });
    // An in-place write: bump the version like copy_() would.
    dst.unsafeGetTensorImpl()->bump_version();
    return;
  }
  dst.detach().copy_(src);
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
    copy_into(buffer, t);
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
    copy_into(*live, saved);
    return *live;
  }
  return saved.to(device, /*non_blocking=*/false, /*copy=*/true);
}

struct ModuleImage {
  std::vector<at::Tensor> tensors;  // parameters then buffers, as gathered
};

struct ParamStateImage {
  OptimizerStateKey key;
  at::Device device = at::kCPU;
  std::unique_ptr<OptimizerParamState> state;  // nullptr: the entry did not exist yet
};

struct OptimizerImage {
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> group_options;
  std::vector<ParamStateImage> states;
};

}  // namespace

struct Snapshot::Impl {
  bool valid = false;
  int64_t step = -1;
  int64_t global_step = 0;
  BufferPool pool;
  std::vector<ModuleImage> modules;         // one per tracked object, used by modules
  std::vector<OptimizerImage> optimizers;   // one per tracked object, used by optimizers
  std::vector<at::Tensor> tensors;          // one per tracked object, used by tensors
  std::vector<std::string> kinds;           // "module", "optimizer" or "tensor", per object
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
  s.kinds.assign(objects.size(), "");
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const TrackedObject& o = objects[i];
    s.kinds[i] = o.module != nullptr ? "module" : o.optimizer != nullptr ? "optimizer" : "tensor";
    if (o.module != nullptr) {
      for (const auto& t : module_tensors(*o.module)) s.modules[i].tensors.push_back(s.pool.take(t));
    } else if (o.optimizer != nullptr) {
      OptimizerImage& image = s.optimizers[i];
      const auto& live = o.optimizer->state();
      for (const auto& group : o.optimizer->param_groups()) {
        image.group_options.push_back(group.options().clone());
        for (const auto& param : group.params()) {
          ParamStateImage entry{optimizer_state_key(param), param.device(), nullptr};
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
  const int gpus = cuda_device_count();
  for (int d = 0; d < gpus; ++d) {
    at::Generator gen = cuda_default_generator(static_cast<c10::DeviceIndex>(d));
    std::lock_guard<std::mutex> lock(gen.mutex());
    s.cuda_rng.push_back(gen.get_state());
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
  // Check every layout before changing anything: a refused restore leaves the state as it was.
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
      }
    } else if (o.tensor != nullptr && !same_layout(*o.tensor, s.tensors[i])) {
      throw Error("daifu: tensor \"" + o.name + "\" changed shape since the snapshot");
    }
  }
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const TrackedObject& o = objects[i];
    if (o.module != nullptr) {
      const auto live = module_tensors(*o.module);
      const auto& saved = s.modules[i].tensors;
      for (std::size_t j = 0; j < live.size(); ++j) copy_into(live[j], saved[j]);
    } else if (o.optimizer != nullptr) {
      const OptimizerImage& image = s.optimizers[i];
      auto& groups = o.optimizer->param_groups();
      for (std::size_t g = 0; g < groups.size() && g < image.group_options.size(); ++g) {
        groups[g].set_options(image.group_options[g]->clone());
      }
      auto& live = o.optimizer->state();
      // Entries that did not exist at capture time are removed; the others are rebuilt from
      // the image, reusing the live tensors' memory where the layout fits.
      std::unordered_map<OptimizerStateKey, const ParamStateImage*> saved;
      for (const auto& entry : image.states) saved.emplace(entry.key, &entry);
      for (auto it = live.begin(); it != live.end();) {
        auto found = saved.find(it->first);
        if (found == saved.end() || found->second->state == nullptr) {
          it = live.erase(it);
        } else {
          ++it;
        }
      }
      // State goes to the device its parameter is on now (a surgery may have moved it).
      std::unordered_map<OptimizerStateKey, at::Device> param_device;
      for (const auto& group : groups) {
        for (const auto& param : group.params()) param_device.emplace(optimizer_state_key(param), param.device());
      }
      for (const auto& entry : image.states) {
        if (entry.state == nullptr) continue;
        const auto device_now = param_device.find(entry.key);
        const at::Device device = device_now != param_device.end() ? device_now->second : entry.device;
        std::vector<at::Tensor> old;
        auto it = live.find(entry.key);
        if (it != live.end()) old = state_tensors(*it->second);
        auto rebuilt = entry.state->clone();
        std::size_t slot = 0;
        map_state_tensors(*rebuilt, [&](const at::Tensor& t) {
          const at::Tensor* previous = slot < old.size() ? &old[slot] : nullptr;
          ++slot;
          return restored(t, previous, device);
        });
        live[entry.key] = std::move(rebuilt);
      }
    } else {
      copy_into(*o.tensor, s.tensors[i]);
    }
  }
  s.cpu_rng.restore();
  for (std::size_t d = 0; d < s.cuda_rng.size(); ++d) {
    at::Generator gen = cuda_default_generator(static_cast<c10::DeviceIndex>(d));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s.cuda_rng[d]);
  }
}

namespace {

// A tensor of the persisted snapshot: its region name and the host buffer holding it.
struct PersistedTensor {
  std::string name;
  at::Tensor tensor;
};

nlohmann::json describe(const at::Tensor& t) {
  return {{"dtype", static_cast<int>(t.scalar_type())}, {"sizes", t.sizes().vec()}};
}

bool fits(const nlohmann::json& description, const at::Tensor& t) {
  return description.at("dtype").get<int>() == static_cast<int>(t.scalar_type()) &&
         description.at("sizes").get<std::vector<int64_t>>() == t.sizes().vec();
}

std::string shape_text(const nlohmann::json& d) { return d.at("sizes").dump(); }

// The bytes of region `name` as a tensor described by `d` (a view: clone before keeping it).
at::Tensor region_tensor(const PersistentStore::Found& found, const std::string& name, const nlohmann::json& d) {
  for (std::size_t i = 0; i < found.layout.size(); ++i) {
    if (found.layout[i].name != name) continue;
    auto options = at::TensorOptions().dtype(static_cast<at::ScalarType>(d.at("dtype").get<int>()));
    auto t = at::from_blob(const_cast<uint8_t*>(found.snapshot.regions[i].data()), d.at("sizes").get<std::vector<int64_t>>(),
                           options);
    if (t.nbytes() != found.layout[i].bytes) throw Error("daifu: snapshot region " + name + " has the wrong size");
    return t;
  }
  throw Error("daifu: snapshot has no region " + name);
}

constexpr uint64_t kMetaHeader = sizeof(uint64_t);

uint64_t meta_capacity(std::size_t json_bytes) {
  uint64_t capacity = 4096;
  while (capacity < kMetaHeader + json_bytes) capacity *= 2;
  return capacity;
}

}  // namespace

void Snapshot::persist(PersistentStore& store, const std::string& extra_json, bool durable) const {
  const Impl& s = *impl_;
  if (!s.valid) throw Error("daifu: no snapshot to persist");
  std::vector<PersistedTensor> tensors;
  nlohmann::json objects = nlohmann::json::array();
  for (std::size_t i = 0; i < s.modules.size(); ++i) {
    const std::string prefix = std::to_string(i);
    nlohmann::json object;
    if (s.kinds[i] == "module") {
      object = {{"kind", "module"}, {"tensors", nlohmann::json::array()}};
      for (std::size_t j = 0; j < s.modules[i].tensors.size(); ++j) {
        object["tensors"].push_back(describe(s.modules[i].tensors[j]));
        tensors.push_back({"m/" + prefix + "/" + std::to_string(j), s.modules[i].tensors[j]});
      }
    }
    if (s.kinds[i] == "optimizer") {
      object = {{"kind", "optimizer"}, {"lr", nlohmann::json::array()}, {"params", nlohmann::json::array()}};
      for (const auto& options : s.optimizers[i].group_options) object["lr"].push_back(options->get_lr());
      for (std::size_t j = 0; j < s.optimizers[i].states.size(); ++j) {
        const auto& entry = s.optimizers[i].states[j];
        if (entry.state == nullptr) {
          object["params"].push_back(nullptr);
          continue;
        }
        nlohmann::json param = {{"type", state_type_name(*entry.state)},
                                {"scalars", state_scalars(*entry.state)},
                                {"slots", nlohmann::json::array()}};
        const auto held = state_tensors(*entry.state);
        for (std::size_t k = 0; k < held.size(); ++k) {
          if (!held[k].defined()) {
            param["slots"].push_back(nullptr);
            continue;
          }
          param["slots"].push_back(describe(held[k]));
          tensors.push_back({"o/" + prefix + "/" + std::to_string(j) + "/" + std::to_string(k), held[k]});
        }
        object["params"].push_back(std::move(param));
      }
    }
    if (s.kinds[i] == "tensor") {
      object = {{"kind", "tensor"}, {"tensor", describe(s.tensors[i])}};
      tensors.push_back({"t/" + prefix, s.tensors[i]});
    }
    objects.push_back(std::move(object));
  }
  // Each CUDA device's generator state (its seed and offset), restored where the device exists.
  nlohmann::json cuda_rng = nlohmann::json::array();
  for (std::size_t d = 0; d < s.cuda_rng.size(); ++d) {
    cuda_rng.push_back(describe(s.cuda_rng[d]));
    tensors.push_back({"cuda_rng/" + std::to_string(d), s.cuda_rng[d]});
  }
  const at::mt19937_data_pod rng = s.cpu_rng.engine.data();
  nlohmann::json meta = {{"format", 1},
                         {"cuda_rng", cuda_rng},
                         {"step", s.step},
                         {"global_step", s.global_step},
                         {"objects", objects},
                         {"rng_next_float_normal", s.cpu_rng.next_float_normal ? nlohmann::json(*s.cpu_rng.next_float_normal) : nlohmann::json()},
                         {"rng_next_double_normal", s.cpu_rng.next_double_normal ? nlohmann::json(*s.cpu_rng.next_double_normal) : nlohmann::json()},
                         {"extra", nlohmann::json::parse(extra_json)}};
  const std::string meta_text = meta.dump();

  std::vector<SnapshotRegion> layout = {{"meta", meta_capacity(meta_text.size())}, {"rng", sizeof(rng)}};
  for (const auto& t : tensors) layout.push_back({t.name, static_cast<uint64_t>(t.tensor.nbytes())});
  store.write(
      layout,
      [&](std::size_t i, uint8_t* region) {
        if (i == 0) {
          const uint64_t n = meta_text.size();
          std::memcpy(region, &n, sizeof n);
          std::memcpy(region + kMetaHeader, meta_text.data(), n);
          std::memset(region + kMetaHeader + n, 0, layout[0].bytes - kMetaHeader - n);
        } else if (i == 1) {
          std::memcpy(region, &rng, sizeof rng);
        } else {
          const at::Tensor& t = tensors[i - 2].tensor;
          std::memcpy(region, t.contiguous().data_ptr(), t.nbytes());
        }
      },
      s.step, durable);
}

Snapshot::Persisted Snapshot::restore_persisted(const TrackedState& state, const PersistentStore::Found& found) {
  const auto& regions = found.snapshot.regions;
  if (found.layout.size() < 2 || found.layout[0].name != "meta" || found.layout[1].name != "rng" ||
      regions[1].size() != sizeof(at::mt19937_data_pod)) {
    throw Error("daifu: " + found.file.string() + " is not a daifu state snapshot");
  }
  uint64_t meta_bytes = 0;
  std::memcpy(&meta_bytes, regions[0].data(), sizeof meta_bytes);
  if (meta_bytes > regions[0].size() - kMetaHeader) throw Error("daifu: " + found.file.string() + " has a corrupt header");
  const auto meta = nlohmann::json::parse(regions[0].begin() + kMetaHeader, regions[0].begin() + kMetaHeader + meta_bytes,
                                          nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded() || meta.value("format", 0) != 1) {
    throw Error("daifu: " + found.file.string() + " has an unreadable header");
  }
  const auto& objects = state.objects();
  const auto& saved = meta.at("objects");
  const std::string where = "daifu: the snapshot " + found.file.string() + " does not fit this program: ";
  if (saved.size() != objects.size()) {
    throw Error(where + std::to_string(saved.size()) + " objects were tracked when it was taken, " +
                std::to_string(objects.size()) + " now");
  }
  torch::NoGradGuard no_grad;
  // Check everything before changing anything.
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const TrackedObject& o = objects[i];
    const auto& d = saved[i];
    const std::string kind = d.at("kind");
    if (o.module != nullptr) {
      if (kind != "module") throw Error(where + "\"" + o.name + "\" is a module now, a " + kind + " in the snapshot");
      const auto live = module_tensors(*o.module);
      const auto named = o.module->named_parameters(true);
      if (live.size() != d.at("tensors").size()) {
        throw Error(where + "module \"" + o.name + "\" has " + std::to_string(live.size()) + " tensors, the snapshot " +
                    std::to_string(d.at("tensors").size()));
      }
      for (std::size_t j = 0; j < live.size(); ++j) {
        if (!fits(d.at("tensors")[j], live[j])) {
          const std::string name = j < named.size() ? named.keys()[j] : "buffer " + std::to_string(j - named.size());
          throw Error(where + "module \"" + o.name + "\" " + name + " is " + nlohmann::json(live[j].sizes().vec()).dump() +
                      " here, " + shape_text(d.at("tensors")[j]) + " in the snapshot");
        }
      }
    } else if (o.optimizer != nullptr) {
      if (kind != "optimizer") throw Error(where + "\"" + o.name + "\" is an optimizer now, a " + kind + " in the snapshot");
      std::size_t params = 0;
      for (const auto& group : o.optimizer->param_groups()) params += group.params().size();
      if (params != d.at("params").size() || o.optimizer->param_groups().size() != d.at("lr").size()) {
        throw Error(where + "optimizer \"" + o.name + "\" holds " + std::to_string(params) + " parameters, the snapshot " +
                    std::to_string(d.at("params").size()));
      }
      for (const auto& p : d.at("params")) {
        if (!p.is_null() && !make_state(p.at("type"), p.at("scalars").get<std::vector<double>>())) {
          throw Error(where + "optimizer \"" + o.name + "\" has state of an unknown type " + p.at("type").dump());
        }
      }
    } else {
      if (kind != "tensor" || !fits(d.at("tensor"), *o.tensor)) {
        throw Error(where + "tensor \"" + o.name + "\" does not match its snapshot (" + kind + ")");
      }
    }
  }
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const TrackedObject& o = objects[i];
    const auto& d = saved[i];
    const std::string prefix = std::to_string(i);
    if (o.module != nullptr) {
      const auto live = module_tensors(*o.module);
      for (std::size_t j = 0; j < live.size(); ++j) {
        at::Tensor target = live[j];
        target.detach().copy_(region_tensor(found, "m/" + prefix + "/" + std::to_string(j), d.at("tensors")[j]));
      }
    } else if (o.optimizer != nullptr) {
      auto& groups = o.optimizer->param_groups();
      auto& live = o.optimizer->state();
      live.clear();
      std::size_t j = 0;
      for (std::size_t g = 0; g < groups.size(); ++g) {
        groups[g].options().set_lr(d.at("lr")[g].get<double>());
        for (const auto& param : groups[g].params()) {
          const auto& p = d.at("params")[j];
          if (!p.is_null()) {
            auto rebuilt = make_state(p.at("type"), p.at("scalars").get<std::vector<double>>());
            std::size_t k = 0;
            map_state_tensors(*rebuilt, [&](const at::Tensor&) {
              const auto& slot = p.at("slots").at(k);
              const std::string name = "o/" + prefix + "/" + std::to_string(j) + "/" + std::to_string(k);
              ++k;
              if (slot.is_null()) return at::Tensor();
              return region_tensor(found, name, slot).to(param.device(), /*non_blocking=*/false, /*copy=*/true);
            });
            live[optimizer_state_key(param)] = std::move(rebuilt);
          }
          ++j;
        }
      }
    } else {
      o.tensor->detach().copy_(region_tensor(found, "t/" + prefix, d.at("tensor")));
    }
  }
  at::mt19937_data_pod rng;
  std::memcpy(&rng, regions[1].data(), sizeof rng);
  CpuRngState restored{at::mt19937(), c10::nullopt, c10::nullopt};
  restored.engine.set_data(rng);
  if (!meta.at("rng_next_float_normal").is_null()) restored.next_float_normal = meta.at("rng_next_float_normal").get<float>();
  if (!meta.at("rng_next_double_normal").is_null()) restored.next_double_normal = meta.at("rng_next_double_normal").get<double>();
  restored.restore();
  // Snapshots written before CUDA generators were persisted have no "cuda_rng".
  const auto cuda_rng = meta.value("cuda_rng", nlohmann::json::array());
  const int gpus = cuda_device_count();
  for (std::size_t d = 0; d < cuda_rng.size() && static_cast<int>(d) < gpus; ++d) {
    at::Generator gen = cuda_default_generator(static_cast<c10::DeviceIndex>(d));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(region_tensor(found, "cuda_rng/" + std::to_string(d), cuda_rng[d]).clone());
  }
  impl_->valid = false;
  return {meta.at("step").get<int64_t>(), meta.at("global_step").get<int64_t>(), meta.at("extra").dump()};
}

bool Snapshot::valid() const noexcept { return impl_->valid; }
int64_t Snapshot::step() const noexcept { return impl_->step; }
int64_t Snapshot::global_step() const noexcept { return impl_->global_step; }
uint64_t Snapshot::bytes() const noexcept { return impl_->pool.bytes(); }

}  // namespace daifu::detail
