#include "surgery/path_problem.h"

#include "core/strings.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <regex>
#include <system_error>

namespace daifu::detail {
namespace fs = std::filesystem;

namespace {

// The absolute, normalized form with symlinks of the existing part resolved: what `p` really
// names, so that neither ".." nor a link leads out of a root unnoticed.
fs::path resolved(const fs::path& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::absolute(p), ec);
  return (ec ? fs::absolute(p) : r).lexically_normal();
}

std::string quoted(const fs::path& p) { return nlohmann::json(p.string()).dump(); }

}  // namespace

std::vector<PathMention> paths_in_message(const std::string& message) {
  std::vector<PathMention> out;
  auto add = [&](std::string text, PathMention m) {
    while (!text.empty() && std::string(".,;:)'\"").find(text.back()) != std::string::npos) text.pop_back();
    if (text.empty()) return;
    for (const auto& seen : out) {
      if (seen.path == text) return;
    }
    m.path = text;
    out.push_back(std::move(m));
  };
  std::smatch m;
  // libtorch's serializer: "Parent directory <dir> does not exist." (torch::save, OutputArchive)
  static const std::regex parent(R"(Parent directory (.+) does not exist)");
  if (std::regex_search(message, m, parent)) add(m[1].str(), {{}, /*is_directory=*/true, /*output=*/true, false});
  // libtorch's reader: "open file failed because of errno 2 on fopen: ..., file path: <path>"
  static const std::regex reader(R"(open file failed.*file path: (\S+))");
  if (std::regex_search(message, m, reader)) add(m[1].str(), {{}, false, false, /*input=*/true});
  // std::filesystem_error: "filesystem error: cannot copy file: <reason> [from] [to]"
  static const std::regex bracket(R"(\[([^\]]+)\])");
  std::vector<std::string> brackets;
  for (auto it = std::sregex_iterator(message.begin(), message.end(), bracket); it != std::sregex_iterator(); ++it) {
    brackets.push_back((*it)[1].str());
  }
  // Its operations that write: a copy or rename (to the second path), create_directory.
  // Any other operation (file_size, status, ...) reads what it names.
  const std::string low = lowercase(message);
  const bool filesystem = low.find("filesystem error:") != std::string::npos;
  const bool copies = low.find("cannot copy") != std::string::npos || low.find("cannot rename") != std::string::npos;
  const bool creates = low.find("cannot create") != std::string::npos;
  for (std::size_t i = 0; i < brackets.size(); ++i) {
    const bool output = creates || (copies && brackets.size() == 2 && i == 1);
    add(brackets[i], {{}, false, output, /*input=*/filesystem && !output});
  }
  // Anything quoted, then bare words that contain a slash.
  static const std::regex quoted_text(R"re("([^"]+)"|'([^']+)')re");
  for (auto it = std::sregex_iterator(message.begin(), message.end(), quoted_text); it != std::sregex_iterator(); ++it) {
    add((*it)[1].matched ? (*it)[1].str() : (*it)[2].str(), {});
  }
  static const std::regex slashed(R"((?:^|\s)(\.{0,2}/?[^\s\[\]"']*/[^\s\[\]"']*))");
  for (auto it = std::sregex_iterator(message.begin(), message.end(), slashed); it != std::sregex_iterator(); ++it) {
    add((*it)[1].str(), {});
  }
  return out;
}

PathProblemSurgery::PathProblemSurgery(SurgeryLimits limits, std::vector<fs::path> roots)
    : Surgery("path_problem", limits) {
  paths_in_message("");  // compiles its regexes now, not at the first failure
  for (const auto& r : roots) roots_.push_back(resolved(r));
}

bool PathProblemSurgery::matches(const Failure& failure) const { return failure.kind == FailureKind::PathProblem; }

bool PathProblemSurgery::allowed(const fs::path& dir) const {
  for (const auto& root : roots_) {
    auto [r, d] = std::mismatch(root.begin(), root.end(), dir.begin(), dir.end());
    if (r == root.end()) return true;
  }
  return false;
}

Action PathProblemSurgery::operate(RepairContext& context) {
  const std::string& message = context.failure().message;
  const std::string low = lowercase(message);
  const auto mentions = paths_in_message(message);
  if (mentions.empty()) {
    context.explain("the message names no path");
    return Action::Decline;
  }
  if (low.find("permission denied") != std::string::npos) {
    context.explain("permission denied on " + quoted(mentions.front().path) + "; daifu does not change permissions");
    return Action::Escalate;
  }
  for (const auto& m : mentions) {
    if (m.input) {
      std::error_code ec;
      if (fs::exists(m.path, ec)) continue;
      context.explain("the input " + quoted(m.path) +
                      " does not exist; daifu creates missing output directories, never inputs");
      return Action::Escalate;
    }
  }
  // The directory to create: named by the message, or the missing parent of a named path.
  std::string unwritable;  // a named file that is missing although its directory exists
  for (const auto& m : mentions) {
    std::error_code ec;
    const fs::path target = resolved(m.path);
    if (fs::exists(target, ec)) continue;
    const fs::path dir = m.is_directory ? target : target.parent_path();
    if (fs::exists(dir, ec)) {
      if (unwritable.empty()) unwritable = quoted(m.path);
      continue;
    }
    if (!allowed(dir)) {
      std::string roots;
      for (const auto& r : roots_) roots += (roots.empty() ? "" : ", ") + quoted(r);
      context.explain("the missing directory " + quoted(dir) + " is outside the allowed roots (" + roots +
                      "); add a root with Options::allowed_roots to let daifu create it");
      return Action::Escalate;
    }
    fs::create_directories(dir);  // throws filesystem_error: journaled as a failed surgery
    context.note("created_directory", "null", quoted(dir));
    context.explain("created the missing directory " + quoted(dir));
    return Action::Retry;
  }
  if (!unwritable.empty()) {
    context.explain(unwritable + " does not exist but its directory does: a missing input or a file that cannot "
                    "be written; nothing to create");
  } else {
    std::string named;
    for (const auto& m : mentions) named += (named.empty() ? "" : ", ") + quoted(m.path);
    context.explain("every path the message names exists (" + named + "): nothing to create");
  }
  return Action::Escalate;
}

}  // namespace daifu::detail
