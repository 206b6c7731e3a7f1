// A named value that repairs may change (batch size, learning rate, a mode switch).
// Every change is journaled with the old and new value and the reason.
#pragma once

#include <daifu/export.h>

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

namespace daifu {
namespace detail {

/// Receives knob changes (the Session journals them).
class KnobObserver {
 public:
  virtual void knob_changed(const std::string& name, const std::string& old_json,
                            const std::string& new_json, const std::string& reason) = 0;

 protected:
  ~KnobObserver() = default;
};

/// Type-erased face of a knob, for the journal, replay and the CLI.
class DAIFU_API KnobBase {
 public:
  virtual ~KnobBase();
  const std::string& name() const noexcept { return name_; }
  /// "int64", "double", "bool" or "string".
  virtual const char* type_name() const noexcept = 0;
  /// The current value as JSON text.
  virtual std::string json() const = 0;
  /// Sets the value from JSON text; throws daifu::Error if it does not fit the type.
  virtual void set_json(const std::string& json, const std::string& reason) = 0;

 protected:
  KnobBase(std::string name, KnobObserver* observer) : name_(std::move(name)), observer_(observer) {}
  std::string name_;
  KnobObserver* observer_;
};

}  // namespace detail

/// Example:
///   auto& batch = session.knob<int64_t>("batch_size", 64);
///   loader.next(batch.get());
///   batch.set(32, "out of memory at step 80");   // journaled
/// T is one of int64_t, double, bool, std::string. The address is stable for the session.
template <class T>
class DAIFU_API Knob final : public detail::KnobBase {
 public:
  Knob(std::string name, T initial, detail::KnobObserver* observer)
      : KnobBase(std::move(name), observer), value_(std::move(initial)) {}

  const T& get() const noexcept { return value_; }
  operator const T&() const noexcept { return value_; }

  /// Changes the value and journals old -> new with the reason. No-op if unchanged.
  /// Throws daifu::Error (and keeps the old value) if `value` is outside [min, max].
  void set(T value, const std::string& reason = "");

  /// Bounds for numeric knobs, e.g. the floor the out-of-memory surgery shrinks a batch to:
  ///   auto& batch = session.knob<int64_t>("batch_size", 64).min(8);
  /// Throws daifu::Error if the current value is outside the new bound.
  template <class U = T, class = std::enable_if_t<std::is_arithmetic_v<U>>>
  Knob& min(T bound) {
    check_bounds(value_, bound, upper_);
    lower_ = bound;
    return *this;
  }
  template <class U = T, class = std::enable_if_t<std::is_arithmetic_v<U>>>
  Knob& max(T bound) {
    check_bounds(value_, lower_, bound);
    upper_ = bound;
    return *this;
  }
  const std::optional<T>& lower() const noexcept { return lower_; }
  const std::optional<T>& upper() const noexcept { return upper_; }

  const char* type_name() const noexcept override;
  std::string json() const override;
  void set_json(const std::string& json, const std::string& reason) override;

 private:
  /// Throws daifu::Error naming the knob if `value` is outside [lower, upper].
  void check_bounds(const T& value, const std::optional<T>& lower, const std::optional<T>& upper) const;
  T value_;
  std::optional<T> lower_, upper_;
};

extern template class DAIFU_API Knob<int64_t>;
extern template class DAIFU_API Knob<double>;
extern template class DAIFU_API Knob<bool>;
extern template class DAIFU_API Knob<std::string>;

}  // namespace daifu
