// The handle a guarded step body receives: which step, which attempt, and memoized values
// that stay the same across attempts of the step.
#pragma once

#include <daifu/errors.h>
#include <daifu/export.h>
#include <daifu/knob.h>
#include <daifu/torch_fwd.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <utility>

namespace daifu {
namespace detail {
class SessionImpl;
struct StepAccess;  // src/repair/step_access.h: what the step loop and the repairs may change
}

class DAIFU_API Step {
 public:
  /// The step index: in [first, last) in a DAIFU_GUARD loop; counted across the session's
  /// DAIFU_GUARD_EACH loops in one of those (the first loop's steps are 0, 1, ..., the next
  /// loop's go on from where it ended).
  int64_t index() const noexcept { return index_; }
  /// The step's place in its loop: 0 for the loop's first step (`first`, or the range's first
  /// element), whatever its index() is.
  int64_t position() const noexcept { return index_ - first_; }
  /// 0 on the first attempt; incremented each time the step is run again.
  int64_t attempt() const noexcept { return attempt_; }

  /// Calls make() on the first attempt of this step and returns the stored result on every
  /// later attempt, so a retry sees the same data (e.g. the batch pulled from an iterator).
  /// Example:  auto& batch = step.once("batch", [&] { return *iterator++; });
  /// A batch fetched this way is also what the built-in data surgeries can repair in place
  /// (tensor_mismatch casts or reshapes it, exceptional_data scrubs it): they see values of
  /// type at::Tensor, torch::data::Example<>, std::vector<torch::data::Example<>>,
  /// std::pair/std::tuple of two tensors (input, target) and std::vector<at::Tensor>. A bare
  /// tensor is taken for the target when its key contains "target" or "label".
  template <class F>
  auto& once(const std::string& key, F&& make) {
    using V = std::decay_t<decltype(make())>;
    auto it = memo_.find(key);
    if (it != memo_.end()) {
      if (*it->second.type != typeid(V)) {
        throw Error("daifu: Step::once(\"" + key + "\") was called with a different type on a retry");
      }
    } else {
      it = memo_.emplace(key, Memo{std::make_shared<V>(make()), &typeid(V)}).first;
    }
    if (session_ != nullptr) memoized();
    return *static_cast<V*>(it->second.value.get());
  }

  /// The value once(key) stored in this step; nullptr if there is none or it is not a V.
  template <class V>
  V* find(const std::string& key) noexcept {
    auto it = memo_.find(key);
    if (it == memo_.end() || *it->second.type != typeid(V)) return nullptr;
    return static_cast<V*>(it->second.value.get());
  }

  /// Splits a logical batch of `size` samples into consecutive micro-batches of at most
  /// `micro` samples and calls fn(begin, end, weight) for each, weight = (end - begin) / size.
  /// Scale a mean-reduced loss by `weight` before backward() and the accumulated gradients are
  /// those of the whole batch: when the step runs out of memory, the out-of-memory surgery
  /// halves `micro` and each optimizer step still sees the whole logical batch. After the
  /// last micro-batch it calls before_update(), so the gradient detectors see the sum.
  /// Example:
  ///   auto& micro = session.knob<int64_t>("micro_batch", 256).min(1);
  ///   optimizer.zero_grad();
  ///   step.micro_batches(x.size(0), micro, [&](int64_t b, int64_t e, double weight) {
  ///     (loss_fn(model->forward(x.slice(0, b, e)), y.slice(0, b, e)) * weight).backward();
  ///   });
  ///   optimizer.step();
  template <class F>
  void micro_batches(int64_t size, const Knob<int64_t>& micro, F&& fn) {
    micro_knob_ = micro.name();
    if (size < 0) throw Error("daifu: Step::micro_batches() got a negative batch size");
    if (micro.get() < 1) {
      throw Error("daifu: knob \"" + micro.name() + "\" is " + micro.json() + "; a micro-batch needs at least 1 sample");
    }
    if (session_ != nullptr) entering_micro_batches();
    for (int64_t begin = 0; begin < size; begin += micro.get()) {
      const int64_t end = std::min(size, begin + micro.get());
      fn(begin, end, static_cast<double>(end - begin) / static_cast<double>(size));
    }
    before_update();
  }
  /// The knob the last micro_batches() call of this attempt used; empty if none.
  const std::string& micro_batch_knob() const noexcept { return micro_knob_; }

  /// Marks a point where a value fault may be injected (docs/silent-faults.md): returns `x`
  /// itself, or, when a planned fault targets `name` in this attempt, a copy of `x` with the
  /// fault applied (FaultTarget::Output) or `x` with a hook that corrupts the gradient flowing
  /// back through it (FaultTarget::Gradient). Costs a function call when nothing is planned.
  /// Example:  auto h = step.probe("fc1.out", torch::relu(fc1->forward(x)));
  at::Tensor probe(const std::string& name, const at::Tensor& x);

  /// Call between backward() and optimizer.step(): the gradient detectors (non-finite values,
  /// norm spikes) check the tracked parameters' gradients (the 1-D parameters' at every call,
  /// all of them every DetectorOptions::grad_check_every() steps) and throw
  /// daifu::FaultDetected before a bad gradient they read reaches the weights. Without this
  /// call they do not run.
  /// In a distributed session (Options::distributed) the ranks then agree that every one of
  /// them got this far, and the gradients are averaged over them; if another rank failed this
  /// throws daifu::PeerFailed, and the guard repairs the step the same way on every rank.
  void before_update();

  /// Runs fn(): work of the step after its update that changes no tracked state (tensors,
  /// values) and draws no random numbers, such as a checkpoint written with torch::save or a
  /// metric uploaded. If fn throws, re-running the step would apply its update twice, so the
  /// guard would roll back to the newest snapshot and re-run every step since; here instead a
  /// path problem or a transient error is repaired by the surgeries (journaled as any other)
  /// and fn alone runs again, at most Options::max_attempts times per attempt of the step.
  /// Anything else, a failure no surgery retries, a change to tracked state before the throw,
  /// or a distributed session: the exception leaves after_update and fails the step as it
  /// would have without it. Outside a guard: fn().
  /// Example:
  ///   optimizer.step();
  ///   if (step.index() % 1000 == 999) step.after_update([&] { torch::save(model, "ckpt/model.pt"); });
  template <class F>
  void after_update(F&& fn) {
    if (session_ == nullptr) {
      fn();
      return;
    }
    auto call = [&fn] { fn(); };
    run_after_update([](void* f) { (*static_cast<decltype(call)*>(f))(); }, &call);
  }

 private:
  friend struct detail::StepAccess;
  struct Memo {
    std::shared_ptr<void> value;
    const std::type_info* type;
  };
  // Where an injected fault (DAIFU_INJECT) lands as a real one would: nan_data in the batch
  // just memoized, oom in the first micro-batch (src/session/step.cpp).
  void memoized();
  void entering_micro_batches();
  void run_after_update(void (*call)(void*), void* fn);

  int64_t index_ = 0;
  int64_t first_ = 0;  // the index of the loop's first step
  bool from_range_ = false;  // a DAIFU_GUARD_EACH step: its batch comes from the range
  int64_t attempt_ = 0;
  detail::SessionImpl* session_ = nullptr;  // set by the step loop; null outside one
  std::unordered_map<std::string, Memo> memo_;
  std::string micro_knob_;
};

}  // namespace daifu
