// DAIFU_GUARD: runs a loop of steps; a step that throws is classified, repaired and run again.
#pragma once

#include <daifu/export.h>
#include <daifu/step.h>

#include <cstdint>
#include <iterator>
#include <optional>
#include <type_traits>
#include <utility>

namespace daifu {
class Session;

namespace detail {

/// A non-owning reference to a callable `void(Step&)`, valid for the duration of one call.
class StepBodyRef {
 public:
  template <class F>
  StepBodyRef(F& body) noexcept  // NOLINT: implicit by design
      : object_(&body), call_([](void* o, Step& s) { (*static_cast<F*>(o))(s); }) {}
  void operator()(Step& step) const { call_(object_, step); }

 private:
  void* object_;
  void (*call_)(void*, Step&);
};

/// What a DAIFU_GUARD_EACH loop steps over: hands each step an element of a range.
class BatchSource {
 public:
  /// The Step::once key a step's element is kept under.
  static constexpr const char* kKey = "batch";
  /// Makes `step` hold an element: the one it holds already (a retry, a re-run after a
  /// rollback), or the range's next one, memoized under kKey. False when the range is exhausted.
  virtual bool fill(Step& step) = 0;
  /// Where the source stands: how often it moved on (`++`, those that threw included) and
  /// whether the element it stands at was handed out.
  struct Position {
    int64_t moves = 0;
    bool handed_out = false;
  };
  virtual Position position() const noexcept = 0;
  /// Starts the range again and moves on as often as `at` says (a resumed run's place); a move
  /// that throws counts, as it did in the run that saved `at`. False if the range ended first.
  virtual bool seek(Position at) = 0;

 protected:
  ~BatchSource() = default;
};

// begin(r) and end(r) as a range-for finds them: members, std::begin/std::end, or by ADL.
namespace range_access {
using std::begin;
using std::end;
template <class R>
auto begin_of(R& r) -> decltype(begin(r)) {
  return begin(r);
}
template <class R>
auto end_of(R& r) -> decltype(end(r)) {
  return end(r);
}
}  // namespace range_access

/// A BatchSource over anything a range-for accepts: a torch::data data loader (`*loader`), a
/// std::vector, ... The range's iterator is taken on the first fill() or seek(), moved on only
/// when the next element is needed (a data loader fetches a batch on `++`, so a batch that
/// fails to load fails the step that wanted it), and copies of elements are handed out.
template <class Range>
class RangeSource final : public BatchSource {
 public:
  using Iterator = decltype(range_access::begin_of(std::declval<Range&>()));
  using Sentinel = decltype(range_access::end_of(std::declval<Range&>()));
  using Value = std::decay_t<decltype(*std::declval<Iterator&>())>;

  explicit RangeSource(Range& range) noexcept : range_(range) {}

  bool fill(Step& step) override {
    const bool fresh = step.template find<Value>(kKey) == nullptr;
    if (fresh && !next()) return false;
    step.once(kKey, [&] { return Value(**it_); });
    if (fresh) handed_out_ = true;
    return true;
  }
  Position position() const noexcept override { return {moves_, handed_out_}; }
  bool seek(Position at) override {
    start();
    for (; moves_ < at.moves; ++moves_) {
      if (!(*it_ != *end_)) return false;
      try {
        ++*it_;
      } catch (...) {  // it threw in the saving run too, or the range would be misaligned now
      }
    }
    handed_out_ = at.handed_out;
    return *it_ != *end_;
  }

 private:
  void start() {
    it_.emplace(range_access::begin_of(range_));
    end_.emplace(range_access::end_of(range_));
    moves_ = 0;
    handed_out_ = false;
  }
  // Positions the iterator at an element not handed out yet; false at the end. If `++` throws,
  // the element still counts as handed out and the next call moves on again.
  bool next() {
    if (!it_) {
      start();
    } else if (handed_out_) {
      ++moves_;
      ++*it_;
      handed_out_ = false;
    }
    return *it_ != *end_;
  }

  Range& range_;
  std::optional<Iterator> it_;
  std::optional<Sentinel> end_;
  int64_t moves_ = 0;
  bool handed_out_ = false;
};

/// The object behind DAIFU_GUARD: `GuardLoop(...) + body` runs steps [first, last).
class DAIFU_API GuardLoop {
 public:
  GuardLoop(Session& session, int64_t first, int64_t last, const char* file, int line) noexcept
      : session_(session), first_(first), last_(last), file_(file), line_(line) {}

  template <class F>
  void operator+(F&& body) && {
    run(StepBodyRef(body), nullptr);
  }

 protected:
  /// Runs the loop; with a `source`, over its elements instead of [first, last).
  void run(StepBodyRef body, BatchSource* source);

 private:
  Session& session_;
  int64_t first_, last_;
  const char* file_;
  int line_;
};

/// The object behind DAIFU_GUARD_EACH: `GuardEach(...) + body` runs a step per element of a range.
template <class Range>
class GuardEach : private GuardLoop {
 public:
  GuardEach(Session& session, Range& range, const char* file, int line) noexcept
      : GuardLoop(session, 0, 0, file, line), range_(range) {}

  template <class F>
  void operator+(F&& body) && {
    using Source = RangeSource<Range>;
    Source source(range_);
    auto each = [&](Step& step) { body(step, *step.template find<typename Source::Value>(BatchSource::kKey)); };
    run(StepBodyRef(each), &source);
  }

 private:
  Range& range_;
};

template <class Range>
GuardEach<std::remove_reference_t<Range>> guard_each(Session& session, Range&& range, const char* file, int line) {
  return {session, range, file, line};
}

}  // namespace detail
}  // namespace daifu

/// DAIFU_GUARD(session, step, first, last) { ...body using step... };
/// Runs the body for step indices [first, last). `step` names a daifu::Step& inside the body.
/// A throwing step is classified, journaled, repaired by the session's surgeries and run again,
/// at most Options::max_attempts times; then daifu::Unrecovered is thrown.
#define DAIFU_GUARD(session, step, first, last)                                        \
  ::daifu::detail::GuardLoop((session), (first), (last), __FILE__, __LINE__) +         \
      [&](::daifu::Step & step)

/// DAIFU_GUARD_EACH(session, step, batch, range) { ...body using step and batch... };
/// Runs the body once per element of `range` (anything a range-for accepts, such as
/// `*data_loader` of torch::data::make_data_loader), with `batch` naming the element, a copy
/// memoized in the step: a retry, and a re-run after a rollback, see the very same batch, and
/// the built-in data surgeries can repair it in place. The loop ends when the range does, so
/// the last partial batch and ranges of unknown length need nothing special.
/// Steps are numbered across the session's DAIFU_GUARD_EACH loops: with one loop per epoch,
/// the second epoch's first step comes right after the first epoch's last one, in the journal,
/// the report and DAIFU_INJECT plans alike, and a resumed run moves past the batches of its
/// loop that were done. The step's Step::once key "batch" holds the element: the body must not
/// use that key itself. Repairs, bounds and daifu::Unrecovered as in DAIFU_GUARD.
/// Example:
///   for (int epoch = 1; epoch <= 10; ++epoch) {
///     DAIFU_GUARD_EACH(session, step, batch, *data_loader) {
///       optimizer.zero_grad();
///       auto loss = torch::nll_loss(model->forward(batch.data), batch.target);
///       loss.backward();
///       optimizer.step();
///     };
///   }
#define DAIFU_GUARD_EACH(session, step, batch, range)                                   \
  ::daifu::detail::guard_each((session), (range), __FILE__, __LINE__) +               \
      [&](::daifu::Step & step, auto & batch)
