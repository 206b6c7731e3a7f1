// Built-in surgery: a path_problem failure on an OUTPUT whose directory is missing (torch::save,
// an archive, a std::filesystem copy) is repaired by creating that directory, only under the
// allowed roots; a missing input, a path outside the roots or a permission problem escalates
// with the path named.
#pragma once

#include <daifu/surgery.h>

#include <filesystem>
#include <string>
#include <vector>

namespace daifu::detail {

/// What a path_problem message says: the paths it names and which of them are outputs.
struct PathMention {
  std::filesystem::path path;
  bool is_directory = false;  ///< the message names the missing directory itself
  bool output = false;        ///< the message shows it is written ("Parent directory", copy target)
  bool input = false;         ///< the message shows it is read (torch::load's fopen failure)
};
/// The paths in a failure message (libtorch's serializer, std::filesystem_error, quoted or
/// slash-containing words), in order of appearance.
std::vector<PathMention> paths_in_message(const std::string& message);

class PathProblemSurgery final : public Surgery {
 public:
  /// `roots` are the folders under which directories may be created (made absolute here).
  PathProblemSurgery(SurgeryLimits limits, std::vector<std::filesystem::path> roots);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;

 private:
  bool allowed(const std::filesystem::path& dir) const;
  std::vector<std::filesystem::path> roots_;
};

}  // namespace daifu::detail
