#include "distributed/agreement.h"

#include "core/strings.h"
#include "state/tracked_state.h"

#include <daifu/errors.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/nn/module.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>

namespace daifu::detail {
namespace {

constexpr int64_t kExchangeBytes = 16 * 1024;

enum class Phase { Start, UpdatePassed, EndIssued, Failed };

}  // namespace

struct Agreement::Impl {
  Impl(c10d::ProcessGroup& g, const DistributedOptions& o, TrackedState& s)
      : group(g), options(o), state(s), rank(g.getRank()), world(g.getSize()) {}

  c10d::ProcessGroup& group;
  DistributedOptions options;
  TrackedState& state;
  int64_t rank, world;
  int64_t step = 0, attempt = 0;
  bool next_follows = false;
  bool want_snapshot = false;
  Phase phase = Phase::Start;
  Outcome outcome;
  bool snapshot_next = false;
  std::string broken;
  // The end point of the previous step, issued and not yet waited for.
  struct PendingEnd {
    c10::intrusive_ptr<c10d::Work> work;
    at::Tensor payload;
    int64_t step = 0, attempt = 0;
  };
  std::optional<PendingEnd> pending;
  // The previous step ended well on this rank and its end point rides on this step's update
  // point: {step, attempt}.
  std::optional<std::pair<int64_t, int64_t>> deferred;
  std::optional<std::pair<int64_t, int64_t>> previous_failed;  // {step, attempt} told by settle()

  // The tracked parameters that require gradients, each once, in tracking order: the same
  // list on every rank, since every rank builds the same model. Looked up again when the
  // tracked state changes.
  std::vector<at::Tensor> params;
  int64_t params_generation = -1;
  std::size_t params_objects = 0;
  const std::vector<at::Tensor>& parameters() {
    if (params_generation == state.generation() && params_objects == state.objects().size()) return params;
    params.clear();
    std::set<const c10::TensorImpl*> seen;
    for (const auto& o : state.objects()) {
      if (o.module == nullptr) continue;
      for (const auto& p : o.module->parameters(/*recurse=*/true)) {
        if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) params.push_back(p);
      }
    }
    params_generation = state.generation();
    params_objects = state.objects().size();
    return params;
  }

  // Whether this attempt's end point rides on the next step's update point.
  bool defers_end() const { return next_follows && !snapshot_next; }

  int64_t flag_count() const { return 2 * world + 2; }

  at::TensorOptions payload_options(const std::vector<at::Tensor>& params) const {
    if (params.empty()) return at::TensorOptions().dtype(at::kFloat);
    return at::TensorOptions().dtype(params.front().scalar_type()).device(params.front().device());
  }

  // Starts an all-reduce (sum) of `payload` in place; a throw breaks the agreement for good.
  c10::intrusive_ptr<c10d::Work> issue(at::Tensor& payload) {
    if (!broken.empty()) throw Error("daifu: the agreement with the other ranks is broken: " + broken);
    try {
      std::vector<at::Tensor> tensors{payload};
      return group.allreduce(tensors);
    } catch (const std::exception& e) {
      broke("an all-reduce", e);
      throw;
    }
  }

  void wait(c10d::Work& work) {
    try {
      work.wait();
    } catch (const std::exception& e) {
      broke("an all-reduce", e);
      throw;
    }
  }

  void broke(const std::string& what, const std::exception& e) {
    broken = what + " over " + std::to_string(world) + " ranks failed on rank " + std::to_string(rank) + ": " +
             first_line(e);
  }

  // Flags after the gradients: one per rank (failed), then mutated, then snapshot wanted, then
  // one per rank (its previous step failed after its update, told on this update point).
  void write_flags(at::Tensor flags, bool failed, bool mutated, bool snapshot, bool previous = false) const {
    std::vector<float> f(static_cast<std::size_t>(flag_count()), 0.0F);
    if (failed) f[rank] = 1;
    f[world] = mutated ? 1 : 0;
    f[world + 1] = snapshot ? 1 : 0;
    if (previous) f[world + 2 + rank] = 1;
    flags.copy_(at::from_blob(f.data(), {flag_count()}, at::kFloat));
  }

  // Reads summed flags; true if some rank failed (outcome and phase are then set). A failure of
  // the previous step, told on an update point, is that step's: previous_failed() says which
  // on the ranks that ended it well.
  bool read_flags(const at::Tensor& summed, bool update_point) {
    const at::Tensor flags = summed.to(at::kCPU, at::kDouble);
    const double* f = flags.data_ptr<double>();
    std::vector<int64_t> failed, previous;
    for (int64_t r = 0; r < world; ++r) {
      if (f[r] > 0.5) failed.push_back(r);
      if (f[world + 2 + r] > 0.5) previous.push_back(r);
    }
    if (update_point) snapshot_next = f[world + 1] > 0.5;
    const std::optional<std::pair<int64_t, int64_t>> ended = std::exchange(deferred, std::nullopt);
    if (!previous.empty()) {
      if (ended) previous_failed = ended;
      outcome = Outcome{std::move(previous), true};  // the other ranks committed that step's update
      phase = Phase::Failed;
      return true;
    }
    if (failed.empty()) return false;
    outcome = Outcome{std::move(failed), f[world] > 0.5};
    phase = Phase::Failed;
    return true;
  }

  // Waits for the previous step's end point; false if it told of a failure.
  bool settle() {
    if (!pending) return true;
    PendingEnd end = std::move(*pending);
    pending.reset();
    wait(*end.work);
    if (!read_flags(end.payload, false)) return true;
    previous_failed = std::make_pair(end.step, end.attempt);
    outcome.mutated = true;  // the other ranks committed that step's update
    return false;
  }

  // The update point: gradients (zeros from a failed rank) and flags in one all-reduce.
  // `previous`: this rank's previous step failed after its update (its end point rides here).
  void update(bool failed, bool mutated, bool previous = false) {
    static const std::vector<at::Tensor> none;
    const auto& params = options.average_gradients() ? parameters() : none;
    std::vector<at::Tensor> parts;
    const auto opts = payload_options(params);
    const bool sends = !failed && !previous;
    for (const auto& p : params) {
      const at::Tensor& g = p.grad();
      parts.push_back(sends && g.defined() ? g.detach().reshape(-1).to(opts) : at::zeros({p.numel()}, opts));
    }
    parts.push_back(at::empty({flag_count()}, opts));
    write_flags(parts.back(), failed, mutated, sends && want_snapshot, previous);
    at::Tensor payload = at::cat(parts);
    wait(*issue(payload));
    phase = Phase::UpdatePassed;
    const int64_t grads = payload.numel() - flag_count();
    if (read_flags(payload.slice(0, grads), true)) return;
    c10::NoGradGuard no_grad;
    int64_t offset = 0;
    for (const auto& p : params) {
      const at::Tensor mean = payload.slice(0, offset, offset + p.numel()).view(p.sizes()).div_(world);
      offset += p.numel();
      if (p.grad().defined()) {
        p.mutable_grad().copy_(mean);
      } else {
        p.mutable_grad() = mean.to(p.options()).clone();
      }
    }
  }

  // The end point of an attempt that failed after its update point, waited for: on the next
  // step's update point if that is where the others tell their end (they learn of it there),
  // else an all-reduce of its own (they learn of it when they settle).
  void end_failed(bool mutated) {
    if (defers_end()) {
      update(false, mutated, /*previous=*/true);
      return;
    }
    at::Tensor payload = at::empty({flag_count()}, payload_options(parameters()));
    write_flags(payload, true, mutated, false);
    wait(*issue(payload));
    read_flags(payload, false);
  }

  [[noreturn]] void peer_failed(const char* point) const {
    std::string ranks;
    for (int64_t r : outcome.failed) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    const std::string which = previous_failed ? "step " + std::to_string(previous_failed->first) + " (after its update)"
                                              : "this attempt of the step";
    throw PeerFailed(outcome.failed, "daifu: rank " + ranks + " failed " + which + " (told at the " + point +
                                         " point); every rank repairs it the same way");
  }
};

int64_t group_rank(c10d::ProcessGroup& group) { return group.getRank(); }

Agreement::Agreement(const DistributedOptions& options, TrackedState& state) {
  if (options.group() == nullptr) throw Error("daifu: DistributedOptions names no process group");
  impl_ = std::make_unique<Impl>(*options.group(), options, state);
}

Agreement::~Agreement() = default;

int64_t Agreement::rank() const noexcept { return impl_->rank; }
int64_t Agreement::world() const noexcept { return impl_->world; }

void Agreement::begin_attempt(int64_t step, int64_t attempt, bool next_follows) noexcept {
  impl_->step = step;
  impl_->attempt = attempt;
  impl_->next_follows = next_follows;
  impl_->want_snapshot = false;
  impl_->phase = Phase::Start;
  impl_->outcome = Outcome{};
  impl_->previous_failed.reset();
}

void Agreement::vote_snapshot(bool want) noexcept { impl_->want_snapshot = want; }

void Agreement::raise_if_failed() const {
  if (impl_->phase == Phase::Failed) impl_->peer_failed("previous step's end");
}

void Agreement::update_point() {
  if (impl_->phase != Phase::Start) return;
  if (!impl_->settle()) impl_->peer_failed("previous step's end");
  impl_->update(false, !impl_->state.mutated_since_begin().empty());
  if (impl_->phase == Phase::Failed) impl_->peer_failed("update");
}

void Agreement::end_point() {
  update_point();
  if (impl_->phase != Phase::UpdatePassed) return;
  impl_->phase = Phase::EndIssued;
  if (impl_->defers_end()) {
    impl_->deferred = std::make_pair(impl_->step, impl_->attempt);
    return;
  }
  // This rank ran its whole step: its optimizer has updated the weights, traceably or not.
  Impl::PendingEnd end;
  end.payload = at::empty({impl_->flag_count()}, impl_->payload_options(impl_->parameters()));
  impl_->write_flags(end.payload, false, true, false);
  end.work = impl_->issue(end.payload);
  end.step = impl_->step;
  end.attempt = impl_->attempt;
  impl_->pending = std::move(end);
}

bool Agreement::settle() {
  if (impl_->phase == Phase::Failed) return false;
  return impl_->settle();
}

const Agreement::Outcome& Agreement::fail(bool mutated) {
  if (impl_->phase == Phase::EndIssued) throw Error("daifu: a step failed after its end point was issued");
  if (impl_->phase == Phase::Start) {
    if (impl_->settle()) impl_->update(true, mutated);
  } else if (impl_->phase == Phase::UpdatePassed) {
    impl_->end_failed(mutated);
  }
  return impl_->outcome;
}

bool Agreement::failed() const noexcept { return impl_->phase == Phase::Failed; }
bool Agreement::previous_confirmed() const noexcept { return !impl_->pending && !impl_->deferred; }
std::optional<std::pair<int64_t, int64_t>> Agreement::previous_failed() const noexcept {
  return impl_->previous_failed;
}
bool Agreement::snapshot_next() const noexcept { return impl_->snapshot_next; }

std::string Agreement::exchange(const std::string& decision) {
  const bool leader = impl_->rank == impl_->outcome.leader();
  if (leader && static_cast<int64_t>(decision.size()) > kExchangeBytes - 8) {
    throw Error("daifu: a repair of " + std::to_string(decision.size()) + " bytes does not fit the exchange");
  }
  at::Tensor bytes = at::zeros({kExchangeBytes}, at::kByte);
  if (leader) {
    const uint64_t n = decision.size();
    std::memcpy(bytes.data_ptr<uint8_t>(), &n, 8);
    std::memcpy(bytes.data_ptr<uint8_t>() + 8, decision.data(), decision.size());
  }
  const auto params = impl_->parameters();
  if (!params.empty() && !params.front().device().is_cpu()) bytes = bytes.to(params.front().device());
  if (!impl_->broken.empty()) throw Error("daifu: the agreement with the other ranks is broken: " + impl_->broken);
  try {
    std::vector<at::Tensor> tensors{bytes};
    c10d::BroadcastOptions options;
    options.rootRank = impl_->outcome.leader();
    impl_->group.broadcast(tensors, options)->wait();
  } catch (const std::exception& e) {
    impl_->broke("the broadcast of rank " + std::to_string(impl_->outcome.leader()) + "'s repair", e);
    throw;
  }
  const at::Tensor cpu = bytes.cpu();
  uint64_t n = 0;
  std::memcpy(&n, cpu.data_ptr<uint8_t>(), 8);
  if (n > static_cast<uint64_t>(kExchangeBytes - 8)) throw Error("daifu: the exchanged repair is malformed");
  return std::string(reinterpret_cast<const char*>(cpu.data_ptr<uint8_t>()) + 8, n);
}

bool Agreement::broken() const noexcept { return !impl_->broken.empty(); }
const std::string& Agreement::broken_reason() const noexcept { return impl_->broken; }

}  // namespace daifu::detail
