#include <daifu/errors.h>
#include <daifu/knob.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

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

// The JSON text of a knob's value, which the journal and a resume read back as the same value.
// Throws daifu::Error naming the knob for what JSON cannot carry: NaN and the infinities
// (nlohmann writes them as null, and no resume could set a knob to null) and strings that are
// not UTF-8 (nlohmann refuses to write them).
template <class T>
std::string json_text(const std::string& knob, const T& value) {
  if constexpr (std::is_same_v<T, double>) {
    if (!std::isfinite(value)) {
      throw Error("daifu: knob \"" + knob + "\" cannot be " + std::to_string(value) +
                  ": the journal keeps numbers as JSON, which has no NaN or infinity");
    }
  }
  try {
    return nlohmann::json(value).dump();
  } catch (const nlohmann::json::exception&) {
    throw Error("daifu: knob \"" + knob + "\" cannot hold a string that is not UTF-8: the journal keeps it as JSON");
  }
}

// Whether JSON `j` holds a value of T: for int64, an integer within its range (nlohmann reads
// 2^63 and above as unsigned, which get<int64_t>() would wrap).
template <class T>
bool fits(const nlohmann::json& j) {
  if constexpr (std::is_same_v<T, int64_t>) {
    return j.is_number_integer() &&
           (!j.is_number_unsigned() || j.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
  }
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
  const std::string after = json_text(name_, value);
  check_bounds(value, lower_, upper_);
  const std::string before = json();
  value_ = std::move(value);
  if (observer_ != nullptr) observer_->knob_changed(name_, before, after, reason);
}

template <class T>
const char* Knob<T>::type_name() const noexcept {
  return knob_type_name<T>();
}

template <class T>
std::string Knob<T>::json() const {
  return json_text(name_, value_);
}

template <class T>
void Knob<T>::set_json(const std::string& text, const std::string& reason) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !fits<T>(j)) {
    throw Error("daifu: knob \"" + name_ + "\" is " + type_name() + "; cannot set it to " + text +
                (std::is_same_v<T, int64_t> && j.is_number_unsigned() ? " (outside the int64 range)" : ""));
  }
  set(j.get<T>(), reason);
}

template class Knob<int64_t>;
template class Knob<double>;
template class Knob<bool>;
template class Knob<std::string>;

}  // namespace daifu
