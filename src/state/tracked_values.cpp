#include "state/tracked_values.h"

#include <daifu/errors.h>

#include "core/strings.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>

namespace daifu::detail {

void TrackedValues::add(const std::string& name, void* value, std::size_t size) {
  if (contains(name)) throw Error("daifu: a value named \"" + name + "\" is tracked already");
  if (size > kMaxBytes) {
    throw Error("daifu: the value \"" + name + "\" has " + std::to_string(size) + " bytes; track_value takes at most " +
                std::to_string(kMaxBytes) + " (track a tensor instead)");
  }
  auto* data = static_cast<unsigned char*>(value);
  values_.push_back(Value{name, data, size, std::vector<unsigned char>(data, data + size),
                          std::vector<unsigned char>(data, data + size)});
}

bool TrackedValues::contains(const std::string& name) const noexcept {
  return std::any_of(values_.begin(), values_.end(), [&](const Value& v) { return v.name == name; });
}

void TrackedValues::begin_step() noexcept {
  for (Value& v : values_) std::memcpy(v.at_step.data(), v.data, v.size);
}
void TrackedValues::restore_step() noexcept {
  for (Value& v : values_) std::memcpy(v.data, v.at_step.data(), v.size);
}
void TrackedValues::capture() noexcept {
  for (Value& v : values_) std::memcpy(v.at_snapshot.data(), v.data, v.size);
}
void TrackedValues::restore_snapshot() noexcept {
  for (Value& v : values_) std::memcpy(v.data, v.at_snapshot.data(), v.size);
}

std::string TrackedValues::snapshot_json() const {
  nlohmann::json out = nlohmann::json::object();
  for (const Value& v : values_) out[v.name] = to_hex(v.at_snapshot.data(), v.at_snapshot.size());
  return out.dump();
}

std::vector<std::string> TrackedValues::restore_json(const std::string& json) {
  const nlohmann::json in = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  std::vector<std::string> missing;
  std::vector<unsigned char> bytes;
  for (Value& v : values_) {
    const auto it = in.is_object() ? in.find(v.name) : in.end();
    if (it == in.end() || !it->is_string() || !from_hex(it->get<std::string>(), bytes) || bytes.size() != v.size) {
      missing.push_back(v.name);
      continue;
    }
    std::memcpy(v.data, bytes.data(), v.size);
    v.at_snapshot = bytes;
  }
  return missing;
}

}  // namespace daifu::detail
