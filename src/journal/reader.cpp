#include <daifu/errors.h>
#include <daifu/journal.h>

#include "core/json_input.h"

#include <nlohmann/json.hpp>

#include <fstream>

namespace daifu {

JournalContents read_journal(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("daifu: cannot open journal " + path);
  JournalContents out;
  std::string line;
  int64_t number = 0;
  auto warn = [&](const std::string& why) {
    out.warnings.push_back(path + ":" + std::to_string(number) + ": " + why + "; line skipped");
  };
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    const bool last_without_newline = in.eof();
    std::string why;
    nlohmann::json j = detail::parse_untrusted_json(line, &why);
    if (j.is_discarded() || !j.is_object()) {
      warn(last_without_newline && why == "not JSON" ? "torn last line (the writer was interrupted)"
           : j.is_discarded()                         ? why
                                                      : "not a JSON object");
      continue;
    }
    if (!j.contains("event") || !j["event"].is_string()) {
      warn("no \"event\" field");
      continue;
    }
    if (j.contains("v") && j["v"].is_number_integer() &&
        (j["v"].is_number_unsigned() ? j["v"].get<uint64_t>() > uint64_t{kJournalSchemaVersion}
                                     : j["v"].get<int64_t>() > kJournalSchemaVersion)) {
      warn("schema version " + j["v"].dump() + " is newer than this reader's " + std::to_string(kJournalSchemaVersion));
      continue;
    }
    JournalLine entry;
    entry.event = j["event"].get<std::string>();
    if (j.contains("step") && j["step"].is_number_integer()) entry.step = j["step"].get<int64_t>();
    if (j.contains("time") && j["time"].is_number()) entry.time = j["time"].get<double>();
    entry.json = std::move(line);
    entry.line_number = number;
    out.lines.push_back(std::move(entry));
  }
  return out;
}

}  // namespace daifu
