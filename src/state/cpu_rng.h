// The default CPU generator's whole state, copied without allocating (get_state() allocates
// and serializes a 5 KB tensor).
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include <mutex>

namespace daifu::detail {

struct CpuRngState {
  at::mt19937 engine;
  c10::optional<float> next_float_normal;
  c10::optional<double> next_double_normal;

  static CpuRngState capture() {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    auto* cpu = at::check_generator<at::CPUGeneratorImpl>(gen);
    return {cpu->engine(), cpu->next_float_normal_sample(), cpu->next_double_normal_sample()};
  }

  void restore() const {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    auto* cpu = at::check_generator<at::CPUGeneratorImpl>(gen);
    cpu->set_engine(engine);
    cpu->set_next_float_normal_sample(next_float_normal);
    cpu->set_next_double_normal_sample(next_double_normal);
  }
};

}  // namespace daifu::detail
