// A c10d process group over Gloo on 127.0.0.1 or any host, made the same way on every
// LibTorch daifu supports (1.13 to 2.x): in 1.x ProcessGroupGloo is itself a ProcessGroup, in
// 2.x it is a Backend that a ProcessGroup dispatches to. Hand the result to
// DistributedOptions::group().
//
// Header-only, and not part of <daifu/daifu.h>: compile the file that includes it with
// USE_C10D_GLOO defined and gloo's headers on the include path (Debian: libgloo-dev).
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/version.h>

#include <chrono>
#include <string>

namespace daifu {

/// Rank `rank` of `world` ranks that meet through `store`. `timeout` bounds every collective
/// (a dead or stalled peer ends the wait after it); `threads` is Gloo's worker thread count;
/// `hostname` is the address this rank's Gloo device listens on.
inline c10::intrusive_ptr<c10d::ProcessGroup> make_gloo_group(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                              int world, std::chrono::milliseconds timeout,
                                                              int threads = 2,
                                                              const std::string& hostname = "127.0.0.1") {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
  options->threads = threads;
  auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
#if TORCH_VERSION_MAJOR >= 2
  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
  group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
  group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  return group;
#else
  return gloo;
#endif
}

}  // namespace daifu
