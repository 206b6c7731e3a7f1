// Turns a caught exception into a Failure: by exception type first, then by message patterns
// kept in one table. Users add patterns for their own errors.
#pragma once

#include <daifu/export.h>
#include <daifu/failure.h>

#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace daifu {

/// One row of the message table: a case-insensitive ECMAScript regex and the kind it means.
struct DAIFU_API FailurePattern {
  std::string regex;
  FailureKind kind;
};

/// The built-in message table, most specific rows first.
DAIFU_API const std::vector<FailurePattern>& builtin_failure_patterns();

/// Classifies exceptions. Rules in order: context-poisoning CUDA messages (always Fatal),
/// user patterns, exception type, built-in patterns, then Unknown.
///
/// Example:
///   daifu::Classifier c;
///   c.add_pattern("my loader lost its socket", daifu::FailureKind::TransientRuntime);
///   daifu::Failure f = c.classify(std::current_exception());
class DAIFU_API Classifier {
 public:
  Classifier();
  ~Classifier();
  Classifier(Classifier&&) noexcept;
  Classifier& operator=(Classifier&&) noexcept;

  /// Adds a user pattern, checked before the exception-type rules; it is searched in the
  /// first 1024 characters of a message. Throws daifu::Error if the regex does not compile.
  Classifier& add_pattern(const std::string& regex, FailureKind kind);

  /// Classifies the exception; never throws. Fills kind, exception_type, message, matched_by
  /// and throw_site (when the throw was seen by daifu's throw hook). A torch::data::WorkerException
  /// (what a DataLoader with workers rethrows) is judged by the exception the worker threw, its
  /// message prefixed "in a DataLoader worker thread: ".
  Failure classify(std::exception_ptr error) const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace daifu
