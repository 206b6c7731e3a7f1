#include <daifu/step.h>

namespace daifu::detail {

void StepMemos::for_each(Step& step,
                         const std::function<void(const std::string&, const std::type_info&, void*)>& fn) {
  for (auto& [key, memo] : step.memo_) fn(key, *memo.type, memo.value.get());
}

}  // namespace daifu::detail
