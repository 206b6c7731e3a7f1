// The handle a guarded step body receives: which step, which attempt, and memoized values
// that stay the same across attempts of the step.
#pragma once

#include <daifu/export.h>
#include <daifu/errors.h>

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <utility>

namespace daifu {
namespace detail {
class StepLoop;
}

class DAIFU_API Step {
 public:
  /// The step index of the guard loop, in [first, last).
  int64_t index() const noexcept { return index_; }
  /// 0 on the first attempt; incremented each time the step is run again.
  int64_t attempt() const noexcept { return attempt_; }

  /// Calls make() on the first attempt of this step and returns the stored result on every
  /// later attempt, so a retry sees the same data (e.g. the batch pulled from an iterator).
  /// Example:  auto& batch = step.once("batch", [&] { return *iterator++; });
  template <class F>
  auto& once(const std::string& key, F&& make) {
    using V = std::decay_t<decltype(make())>;
    auto it = memo_.find(key);
    if (it != memo_.end()) {
      if (*it->second.type != typeid(V)) {
        throw Error("daifu: Step::once(\"" + key + "\") was called with a different type on a retry");
      }
      return *static_cast<V*>(it->second.value.get());
    }
    auto value = std::make_shared<V>(make());
    V& ref = *value;
    memo_.emplace(key, Memo{std::move(value), &typeid(V)});
    return ref;
  }

 private:
  friend class detail::StepLoop;
  struct Memo {
    std::shared_ptr<void> value;
    const std::type_info* type;
  };
  int64_t index_ = 0;
  int64_t attempt_ = 0;
  std::unordered_map<std::string, Memo> memo_;
};

}  // namespace daifu
