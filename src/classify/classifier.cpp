#include <daifu/classifier.h>
#include <daifu/errors.h>

#include "classify/throw_site.h"
#include "compat/typed_errors.h"
#include "core/bounded_regex.h"
#include "core/strings.h"

#include <c10/util/Exception.h>
#include <cxxabi.h>
#include <torch/data/worker_exception.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <ios>
#include <new>
#include <optional>
#include <regex>
#include <system_error>
#include <typeinfo>

namespace daifu {
namespace {

using detail::lowercase;
using detail::regex_search_bounded;

// The longest run of plain characters that every match of `regex` must contain, or "" when
// none can be proven (a top-level '|'). Only unnested characters count; a character followed
// by '?', '*' or '{' is optional. std::regex costs microseconds per row, so the table is
// first filtered by these literals (a substring search) and the regex runs on survivors.
std::string required_literal(const std::string& regex) {
  std::string best, run;
  int depth = 0;
  auto end_run = [&] {
    if (run.size() > best.size()) best = run;
    run.clear();
  };
  auto optional_at = [&](std::size_t i) {
    return i < regex.size() && (regex[i] == '?' || regex[i] == '*' || regex[i] == '{');
  };
  for (std::size_t i = 0; i < regex.size(); ++i) {
    const char c = regex[i];
    if (c == '\\') {
      ++i;  // the escaped character: punctuation stands for itself, a letter is a class (\\d)
      const bool literal = i < regex.size() && std::ispunct(static_cast<unsigned char>(regex[i]));
      if (depth == 0 && literal && !optional_at(i + 1)) {
        run.push_back(regex[i]);
      } else {
        end_run();
      }
    } else if (c == '(' || c == '[') {
      ++depth;
      end_run();
    } else if (c == ')' || c == ']') {
      --depth;
      end_run();
    } else if (c == '|') {
      if (depth == 0) return "";
      end_run();
    } else if (depth > 0) {
      continue;
    } else if (c == '{') {
      while (i < regex.size() && regex[i] != '}') ++i;  // a {m,n} quantifier
      end_run();
    } else if (c == '.' || c == '^' || c == '$' || c == '+' || c == '?' || c == '*' || optional_at(i + 1)) {
      end_run();
    } else {
      run.push_back(c);
    }
  }
  end_run();
  return best;
}

// A table row ready to match: a lowercase literal, plus a regex when the row needs one.
struct CompiledPattern {
  std::string source;
  FailureKind kind;
  std::string literal;  // must occur in the message (the whole pattern when there is no regex)
  std::optional<std::regex> regex;

  bool matches(const std::string& lower_message) const {
    if (!literal.empty() && lower_message.find(literal) == std::string::npos) return false;
    return !regex || regex_search_bounded(lower_message, *regex);
  }
};

CompiledPattern compile(const FailurePattern& p) {
  CompiledPattern out{p.regex, p.kind, {}, std::nullopt};
  const bool literal = p.regex.find_first_of("\\^$.|?*+()[]{}") == std::string::npos;
  if (literal) {
    out.literal = lowercase(p.regex);
  } else {
    out.literal = lowercase(required_literal(p.regex));
    try {
      out.regex.emplace(lowercase(p.regex), std::regex::ECMAScript | std::regex::icase | std::regex::optimize);
    } catch (const std::regex_error& e) {
      throw Error("daifu: failure pattern \"" + p.regex + "\" is not a valid regex: " + e.what());
    }
  }
  return out;
}

const std::vector<CompiledPattern>& builtin_compiled() {
  static const std::vector<CompiledPattern> compiled = [] {
    std::vector<CompiledPattern> out;
    for (const auto& p : builtin_failure_patterns()) out.push_back(compile(p));
    return out;
  }();
  return compiled;
}

std::string demangle(const char* mangled) {
  int status = 0;
  char* name = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string out = (status == 0 && name != nullptr) ? name : mangled;
  std::free(name);
  return out;
}

// Cuts libtorch's appended C++ backtrace from a message.
std::string without_backtrace(std::string message) {
  for (const char* marker : {"\nException raised from ", "\nFrame #0", "\nframe #0"}) {
    const auto pos = message.find(marker);
    if (pos != std::string::npos) message.erase(pos);
  }
  while (!message.empty() && std::isspace(static_cast<unsigned char>(message.back()))) message.pop_back();
  return message;
}

std::optional<FailureKind> kind_of_errno(int code) {
  switch (code) {
    case ENOMEM:
      return FailureKind::OutOfMemory;
    case ENOENT: case ENOTDIR: case EISDIR: case EACCES: case EEXIST: case ENAMETOOLONG: case ELOOP:
      return FailureKind::PathProblem;
    case EAGAIN: case EINTR: case ETIMEDOUT: case ECONNRESET: case ECONNREFUSED: case ECONNABORTED:
    case EPIPE: case EIO: case EBUSY: case ENETDOWN: case ENETUNREACH: case EHOSTUNREACH: case ESTALE:
      return FailureKind::TransientRuntime;
    default:
      return std::nullopt;
  }
}

// Kinds that the exception type settles, whatever the message says.
std::optional<std::pair<FailureKind, const char*>> kind_by_definite_type(const std::exception_ptr& error) {
  using R = std::pair<FailureKind, const char*>;
  if (auto k = detail::kind_by_libtorch2_type(error)) return k;
  try {
    std::rethrow_exception(error);
  } catch (const FaultDetected&) {
    return R{FailureKind::NumericFault, "type:daifu::FaultDetected"};
  } catch (const c10::OutOfMemoryError&) {
    return R{FailureKind::OutOfMemory, "type:c10::OutOfMemoryError"};
  } catch (const std::bad_alloc&) {
    return R{FailureKind::OutOfMemory, "type:std::bad_alloc"};
  } catch (const std::filesystem::filesystem_error& e) {
    if (auto k = kind_of_errno(e.code().value()); k && e.code().category() == std::generic_category()) {
      return R{*k, "type:std::filesystem::filesystem_error"};
    }
    return R{FailureKind::PathProblem, "type:std::filesystem::filesystem_error"};
  } catch (const std::system_error& e) {
    const auto& cat = e.code().category();
    if (cat == std::generic_category() || cat == std::system_category()) {
      if (auto k = kind_of_errno(e.code().value())) return R{*k, "type:std::system_error(errno)"};
    }
  } catch (...) {
  }
  return std::nullopt;
}

// Kinds that the exception type suggests when no message pattern knew better.
std::optional<std::pair<FailureKind, const char*>> kind_by_fallback_type(const std::exception_ptr& error) {
  using R = std::pair<FailureKind, const char*>;
  try {
    std::rethrow_exception(error);
  } catch (const c10::IndexError&) {
    return R{FailureKind::TensorMismatch, "type:c10::IndexError"};
  } catch (const c10::LinAlgError&) {
    return R{FailureKind::NumericFault, "type:c10::LinAlgError"};
  } catch (const c10::EnforceFiniteError&) {
    return R{FailureKind::NumericFault, "type:c10::EnforceFiniteError"};
  } catch (const c10::ValueError&) {
    return R{FailureKind::ApiMisuse, "type:c10::ValueError"};
  } catch (const c10::TypeError&) {
    return R{FailureKind::ApiMisuse, "type:c10::TypeError"};
  } catch (const c10::NotImplementedError&) {
    return R{FailureKind::ApiMisuse, "type:c10::NotImplementedError"};
  } catch (const std::ios_base::failure&) {
    return R{FailureKind::TransientRuntime, "type:std::ios_base::failure"};
  } catch (const std::logic_error&) {
    return R{FailureKind::ApiMisuse, "type:std::logic_error"};
  } catch (...) {
  }
  return std::nullopt;
}

// What a DataLoader worker thread threw, if `error` is the WorkerException the loader rethrew
// it as in the training thread; null otherwise.
std::exception_ptr thrown_in_worker(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const torch::data::WorkerException& e) {
    return e.original_exception;
  } catch (...) {
  }
  return nullptr;
}

void describe(const std::exception_ptr& error, Failure& f) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& e) {
    f.exception_type = demangle(typeid(e).name());
    f.message = without_backtrace(e.what_without_backtrace());
  } catch (const FaultDetected& e) {
    f.exception_type = demangle(typeid(e).name());
    f.message = without_backtrace(e.what());
    f.detector = e.detector();
  } catch (const std::exception& e) {
    f.exception_type = demangle(typeid(e).name());
    f.message = without_backtrace(e.what());
  } catch (...) {
    const std::type_info* type = abi::__cxa_current_exception_type();
    f.exception_type = type != nullptr ? demangle(type->name()) : "unknown";
    f.message = "(a " + f.exception_type + " that is not a std::exception)";
  }
}

}  // namespace

struct Classifier::Impl {
  std::vector<CompiledPattern> user;
};

// The built-in table is compiled here, at session start, not at the first failure: compiling
// its regexes took ~9 ms, all of it on the first recovery (the crash benchmark measured it).
Classifier::Classifier() : impl_(std::make_unique<Impl>()) { (void)builtin_compiled(); }
Classifier::~Classifier() = default;
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;

Classifier& Classifier::add_pattern(const std::string& regex, FailureKind kind) {
  impl_->user.push_back(compile(FailurePattern{regex, kind}));
  return *this;
}

Failure Classifier::classify(std::exception_ptr error) const noexcept {
  Failure f;
  if (!error) {
    f.message = "(no exception)";
    return f;
  }
  try {
    // A loader with workers wraps what a worker threw: the original says what went wrong. The
    // throw hook sees the throws of this thread only, so a worker's throw site is unknown.
    const std::exception_ptr original = thrown_in_worker(error);
    if (original) error = original;
    describe(error, f);
    if (!original) f.throw_site = detail::throw_site_of(detail::exception_object_of(error));
    const std::string lower = lowercase(f.message);
    auto first_match = [&](const std::vector<CompiledPattern>& table, const char* prefix,
                            bool fatal_only) -> bool {
      for (const auto& p : table) {
        if (fatal_only && p.kind != FailureKind::Fatal) continue;
        if (p.matches(lower)) {
          f.kind = p.kind;
          f.matched_by = std::string(prefix) + p.source;
          return true;
        }
      }
      return false;
    };
    auto by_type = [&](std::optional<std::pair<FailureKind, const char*>> k) {
      if (k) {
        f.kind = k->first;
        f.matched_by = k->second;
      }
      return k.has_value();
    };
    const bool judged = first_match(builtin_compiled(), "pattern:", /*fatal_only=*/true) ||
                        first_match(impl_->user, "user_pattern:", false) || by_type(kind_by_definite_type(error)) ||
                        first_match(builtin_compiled(), "pattern:", false) || by_type(kind_by_fallback_type(error));
    if (!judged) {
      f.kind = FailureKind::Unknown;
      f.matched_by = "none";
    }
    if (original) f.message = "in a DataLoader worker thread: " + f.message;
  } catch (...) {
    f.kind = FailureKind::Unknown;
    f.matched_by = "classifier_error";
  }
  return f;
}

}  // namespace daifu
