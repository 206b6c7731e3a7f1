#include "surgery/batch_tensors.h"

#include <daifu/step.h>

#include "core/strings.h"
#include "repair/step_access.h"
#include "state/tracked_state.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/data/example.h>

#include <algorithm>
#include <cctype>
#include <tuple>
#include <typeinfo>
#include <utility>

namespace daifu::detail {
namespace {

using Example = torch::data::Example<>;

bool names_a_target(const std::string& name) {
  const std::string key = lowercase(name);
  return key.find("target") != std::string::npos || key.find("label") != std::string::npos;
}

}  // namespace

const char* to_string(BatchRole role) noexcept {
  switch (role) {
    case BatchRole::Input: return "input";
    case BatchRole::Target: return "target";
    case BatchRole::Unknown: return "unknown";
  }
  return "unknown";
}

std::vector<BatchTensor> batch_tensors(Step& step) {
  std::vector<BatchTensor> out;
  auto add = [&](std::string name, BatchRole role, at::Tensor& t) {
    if (t.defined()) out.push_back({std::move(name), role, &t});
  };
  StepAccess::for_each_memo(step, [&](const std::string& key, const std::type_info& type, void* value) {
    const BatchRole bare = names_a_target(key) ? BatchRole::Target : BatchRole::Input;
    if (type == typeid(at::Tensor)) {
      add(key, bare, *static_cast<at::Tensor*>(value));
    } else if (type == typeid(Example)) {
      auto& e = *static_cast<Example*>(value);
      add(key + ".data", BatchRole::Input, e.data);
      add(key + ".target", BatchRole::Target, e.target);
    } else if (type == typeid(std::vector<Example>)) {
      auto& v = *static_cast<std::vector<Example>*>(value);
      for (std::size_t i = 0; i < v.size(); ++i) {
        add(key + "[" + std::to_string(i) + "].data", BatchRole::Input, v[i].data);
        add(key + "[" + std::to_string(i) + "].target", BatchRole::Target, v[i].target);
      }
    } else if (type == typeid(std::pair<at::Tensor, at::Tensor>)) {
      auto& p = *static_cast<std::pair<at::Tensor, at::Tensor>*>(value);
      add(key + ".first", BatchRole::Input, p.first);
      add(key + ".second", BatchRole::Target, p.second);
    } else if (type == typeid(std::tuple<at::Tensor, at::Tensor>)) {
      auto& t = *static_cast<std::tuple<at::Tensor, at::Tensor>*>(value);
      add(key + "<0>", BatchRole::Input, std::get<0>(t));
      add(key + "<1>", BatchRole::Target, std::get<1>(t));
    } else if (type == typeid(std::vector<at::Tensor>)) {
      auto& v = *static_cast<std::vector<at::Tensor>*>(value);
      const BatchRole role = names_a_target(key) ? BatchRole::Target : BatchRole::Unknown;
      for (std::size_t i = 0; i < v.size(); ++i) add(key + "[" + std::to_string(i) + "]", role, v[i]);
    }
  });
  std::sort(out.begin(), out.end(), [](const BatchTensor& a, const BatchTensor& b) { return a.name < b.name; });
  return out;
}

std::optional<c10::ScalarType> model_dtype(const TrackedState& state) {
  for (const auto& o : state.objects()) {
    if (o.module == nullptr) continue;
    for (const auto& t : module_tensors(*o.module)) {
      if (t.defined() && at::isFloatingType(t.scalar_type())) return t.scalar_type();
    }
  }
  return std::nullopt;
}

}  // namespace daifu::detail
