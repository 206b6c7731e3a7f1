#include <daifu/errors.h>
#include <daifu/knob.h>

#include <nlohmann/json.hpp>

namespace daifu {
namespace detail {
KnobBase::~KnobBase() = default;
}  // namespace detail

namespace {

template <class T>
const char* knob_type_name();
template <>
const char* knob_type_name<int64_t>() { return "int64"; }
template <>
const char* knob_type_name<double>() { return "double"; }
template <>
const char* knob_type_name<bool>() { return "bool"; }
template <>
const char* knob_type_name<std::string>() { return "string"; }

template <class T>
bool fits(const nlohmann::json& j) {
  if constexpr (std::is_same_v<T, int64_t>) return j.is_number_integer();
  if constexpr (std::is_same_v<T, double>) return j.is_number();
  if constexpr (std::is_same_v<T, bool>) return j.is_boolean();
  if constexpr (std::is_same_v<T, std::string>) return j.is_string();
}

}  // namespace

template <class T>
void Knob<T>::check_bounds(const T& value, const std::optional<T>& lower, const std::optional<T>& upper) const {
  const bool below = lower && value < *lower;
  const bool above = upper && *upper < value;
  if (!below && !above) return;
  std::string range = "[" + (lower ? nlohmann::json(*lower).dump() : std::string("-inf")) + ", " +
                      (upper ? nlohmann::json(*upper).dump() : std::string("inf")) + "]";
  throw Error("daifu: knob \"" + name_ + "\" must stay in " + range + "; " + nlohmann::json(value).dump() +
              " is outside");
}

template <class T>
void Knob<T>::set(T value, const std::string& reason) {
  if (value == value_) return;
  check_bounds(value, lower_, upper_);
  const std::string before = json();
  value_ = std::move(value);
  if (observer_ != nullptr) observer_->knob_changed(name_, before, json(), reason);
}

template <class T>
const char* Knob<T>::type_name() const noexcept {
  return knob_type_name<T>();
}

template <class T>
std::string Knob<T>::json() const {
  return nlohmann::json(value_).dump();
}

template <class T>
void Knob<T>::set_json(const std::string& text, const std::string& reason) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !fits<T>(j)) {
    throw Error("daifu: knob \"" + name_ + "\" is " + type_name() + "; cannot set it to " + text);
  }
  set(j.get<T>(), reason);
}

template class Knob<int64_t>;
template class Knob<double>;
template class Knob<bool>;
template class Knob<std::string>;

}  // namespace daifu
