#include <daifu/errors.h>
#include <daifu/session.h>
#include <daifu/surgery.h>

#include "core/bounded_regex.h"
#include "surgery/registry_access.h"

#include <algorithm>
#include <regex>
#include <thread>

namespace daifu {
namespace detail {
struct MessagePattern {
  std::regex regex;
};
}  // namespace detail

const char* to_string(Action action) noexcept {
  switch (action) {
    case Action::Retry: return "retry";
    case Action::Skip: return "skip";
    case Action::Escalate: return "escalate";
    case Action::Decline: return "decline";
  }
  return "escalate";
}

RepairContext::RepairContext(Session& session, Step& step, const Failure& failure, int64_t fired_this_step)
    : session_(session), step_(step), failure_(failure), fired_this_step_(fired_this_step) {}

void RepairContext::note(const std::string& what, const std::string& before_json, const std::string& after_json) {
  changes_.push_back({what, before_json, after_json});
}

void RepairContext::wait(std::chrono::microseconds d) {
  if (d.count() <= 0) return;
  std::this_thread::sleep_for(d);
  note("wait_us", "0", std::to_string(d.count()));
}

Surgery::~Surgery() = default;

void Surgery::step_committed(Session&, int64_t) {}

void Surgery::committed(Session& session, int64_t step) noexcept {
  try {
    step_committed(session, step);
  } catch (...) {
  }
}

bool Surgery::match(const Failure& failure) const noexcept {
  try {
    return matches(failure);
  } catch (...) {
    return false;
  }
}

namespace {

class FunctionSurgery final : public Surgery {
 public:
  FunctionSurgery(std::string name, MatchFn match, ApplyFn apply, SurgeryLimits limits)
      : Surgery(std::move(name), limits), match_(std::move(match)), apply_(std::move(apply)) {}

 protected:
  bool matches(const Failure& failure) const override { return match_ && match_(failure); }
  Action operate(RepairContext& context) override { return apply_ ? apply_(context) : Action::Escalate; }

 private:
  MatchFn match_;
  ApplyFn apply_;
};

}  // namespace

MatchFn match_kind(FailureKind kind) {
  return [kind](const Failure& f) { return f.kind == kind; };
}

Match& Match::kind(FailureKind kind) {
  kind_ = kind;
  return *this;
}

Match& Match::exception_type(std::string type) {
  type_ = std::move(type);
  return *this;
}

Match& Match::message(const std::string& regex) {
  try {
    message_ = std::make_shared<const detail::MessagePattern>(
        detail::MessagePattern{std::regex(regex, std::regex::ECMAScript | std::regex::icase)});
  } catch (const std::regex_error& e) {
    throw Error("daifu: Match::message(\"" + regex + "\") is not a valid regex: " + e.what());
  }
  return *this;
}

Match& Match::steps(int64_t first, int64_t last) {
  first_ = first;
  last_ = last;
  return *this;
}

bool Match::operator()(const Failure& failure) const {
  return (!kind_ || failure.kind == *kind_) && (!type_ || failure.exception_type == *type_) &&
         failure.step >= first_ && failure.step < last_ &&
         (!message_ || detail::regex_search_bounded(failure.message, message_->regex));
}

struct SurgeryRegistry::Entry {
  std::unique_ptr<Surgery> surgery;
  int64_t fired_step = 0;
  int64_t fired_run = 0;
};

SurgeryRegistry::SurgeryRegistry() = default;
SurgeryRegistry::~SurgeryRegistry() = default;

Surgery& SurgeryRegistry::add(std::unique_ptr<Surgery> surgery) {
  if (!surgery) throw Error("daifu: SurgeryRegistry::add() got a null surgery");
  for (const auto& e : entries_) {
    if (e->surgery->name() == surgery->name()) {
      throw Error("daifu: a surgery named \"" + surgery->name() + "\" is already registered");
    }
  }
  auto entry = std::make_unique<Entry>();
  entry->surgery = std::move(surgery);
  Surgery& ref = *entry->surgery;
  // Stable: among equal priorities, earlier registrations go first.
  auto pos = std::upper_bound(entries_.begin(), entries_.end(), ref.limits().priority,
                              [](int p, const std::unique_ptr<Entry>& e) { return p < e->surgery->limits().priority; });
  entries_.insert(pos, std::move(entry));
  return ref;
}

Surgery& SurgeryRegistry::add(std::string name, MatchFn match, ApplyFn apply, SurgeryLimits limits) {
  return add(std::make_unique<FunctionSurgery>(std::move(name), std::move(match), std::move(apply), limits));
}

bool SurgeryRegistry::remove(const std::string& name) {
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const auto& e) { return e->surgery->name() == name; });
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

std::vector<std::string> SurgeryRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e->surgery->name());
  return out;
}

std::vector<Surgery*> SurgeryRegistry::candidates(const Failure& failure) const {
  std::vector<Surgery*> out;
  for (const auto& e : entries_) {
    const auto& limits = e->surgery->limits();
    if (e->fired_step >= limits.max_per_step || e->fired_run >= limits.max_per_run) continue;
    if (e->surgery->match(failure)) out.push_back(e->surgery.get());
  }
  return out;
}

int64_t SurgeryRegistry::fired(const std::string& name) const {
  for (const auto& e : entries_) {
    if (e->surgery->name() == name) return e->fired_run;
  }
  return 0;
}

namespace detail {

void SurgeryRegistryAccess::record_fire(SurgeryRegistry& registry, const Surgery& surgery) {
  for (auto& e : registry.entries_) {
    if (e->surgery.get() == &surgery) {
      ++e->fired_step;
      ++e->fired_run;
    }
  }
}

void SurgeryRegistryAccess::step_committed(SurgeryRegistry& registry, Session& session, int64_t step) {
  for (auto& e : registry.entries_) e->surgery->committed(session, step);
}

void SurgeryRegistryAccess::reset_step(SurgeryRegistry& registry) {
  for (auto& e : registry.entries_) e->fired_step = 0;
}

int64_t SurgeryRegistryAccess::fired_this_step(const SurgeryRegistry& registry, const Surgery& surgery) {
  for (const auto& e : registry.entries_) {
    if (e->surgery.get() == &surgery) return e->fired_step;
  }
  return 0;
}

}  // namespace detail
}  // namespace daifu
