// A tensor described for the journal: its shape and dtype, not its values. Repairs record a
// changed tensor as a before/after pair of these; replay compares them with the modules it
// finds.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace at {
class Tensor;
}

namespace daifu::detail {

/// {"shape": [10, 128], "dtype": "Float"}.
nlohmann::json tensor_description(const at::Tensor& t);

/// tensor_description(t) as JSON text, for RepairContext::note.
std::string describe_tensor(const at::Tensor& t);

}  // namespace daifu::detail
