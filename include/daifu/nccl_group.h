// A c10d process group for training on CUDA: NCCL carries CUDA tensors (the gradients, and
// daifu's agreement, whose messages go on the parameters' device), Gloo carries CPU tensors.
// The group PyTorch's init_process_group("cpu:gloo,cuda:nccl") makes, for LibTorch 2.x built
// with CUDA. Hand the result to DistributedOptions::group(). NCCL takes one GPU per rank:
// put rank R's model on its own device (e.g. cuda:R) before the first collective.
//
// Header-only, and not part of <daifu/daifu.h>: compile the file that includes it with
// USE_C10D_NCCL and USE_C10D_GLOO defined, NCCL's nccl.h (a torch wheel: nvidia/nccl/include)
// and gloo's headers (Debian: libgloo-dev) on the include path.
#pragma once

#include <daifu/gloo_group.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>
#include <string>

namespace daifu {

/// Rank `rank` of `world` ranks that meet through `store`: CUDA tensors go over NCCL, CPU
/// tensors over Gloo (listening on `hostname`). `timeout` bounds every Gloo collective and
/// NCCL's watchdog: a rank that dies ends the others' waits within it.
inline c10::intrusive_ptr<c10d::ProcessGroup> make_gloo_nccl_group(const c10::intrusive_ptr<c10d::Store>& store,
                                                                   int rank, int world,
                                                                   std::chrono::milliseconds timeout,
                                                                   const std::string& hostname = "127.0.0.1") {
  // Each backend meets its peers under its own prefix of the store, as init_process_group's do.
  auto group = make_gloo_group(c10::make_intrusive<c10d::PrefixStore>("cpu", store), rank, world, timeout,
                               /*threads=*/2, hostname);
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("cuda", store), rank,
                                                          world, options);
  group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
  return group;
}

}  // namespace daifu
