// The ISCA'23 artifact's injection files: one "key,value[,value...]" row per field.
#include <daifu/errors.h>
#include <daifu/inject.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace daifu {
namespace {

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream in(text);
  while (std::getline(in, cell, sep)) out.push_back(cell);
  if (!text.empty() && text.back() == sep) out.emplace_back();
  return out;
}

std::string trimmed(std::string s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t\r") + 1 - first);
}

class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& why) const {
    throw Error("daifu: ISCA injection file " + path_ + ": " + why);
  }

  void read() {
    std::ifstream in(path_);
    if (!in) fail("cannot be read");
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      line = trimmed(line);
      if (line.empty()) continue;
      auto cells = split(line, ',');
      const std::string key = trimmed(cells[0]);
      cells.erase(cells.begin());
      for (auto& c : cells) c = trimmed(c);
      if (key.empty() || cells.empty()) fail("line " + std::to_string(number) + " is not \"key,value\": " + line);
      rows_[key] = {number, std::move(cells)};
    }
  }

  const std::vector<std::string>& cells(const std::string& key) const {
    auto it = rows_.find(key);
    if (it == rows_.end()) fail("has no \"" + key + "\" row");
    return it->second.cells;
  }
  std::string text(const std::string& key) const { return cells(key).front(); }

  double real(const std::string& key, const std::string& cell) const {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(cell.c_str(), &end);
    if (cell.empty() || end != cell.c_str() + cell.size()) {
      fail("line " + std::to_string(rows_.at(key).line) + " (" + key + "): \"" + cell + "\" is not a number");
    }
    return v;
  }
  int64_t integer(const std::string& key, const std::string& cell) const {
    const double v = real(key, cell);
    if (v != static_cast<double>(static_cast<int64_t>(v)) || v < 0) {
      fail("line " + std::to_string(rows_.at(key).line) + " (" + key + "): \"" + cell + "\" is not a non-negative integer");
    }
    return static_cast<int64_t>(v);
  }
  int64_t integer(const std::string& key) const { return integer(key, text(key)); }

 private:
  struct Row {
    int line;
    std::vector<std::string> cells;
  };
  std::string path_;
  std::map<std::string, Row> rows_;
};

}  // namespace

IscaInjection read_isca_injection(const std::string& path) {
  Reader r(path);
  r.read();
  IscaInjection inj;
  inj.model = r.text("model");
  inj.stage = r.text("stage");
  if (inj.stage != "fwrd_inject" && inj.stage != "bkwd_inject") {
    r.fail("stage is \"" + inj.stage + "\"; expected fwrd_inject or bkwd_inject");
  }
  inj.fmodel = r.text("fmodel");
  inj.target_worker = r.integer("target_worker");
  inj.target_layer = r.text("target_layer");
  inj.target_epoch = r.integer("target_epoch");
  inj.target_step = r.integer("target_step");
  for (const auto& cell : r.cells("inj_pos")) {
    std::vector<int64_t> position;
    for (const auto& index : split(cell, '/')) position.push_back(r.integer("inj_pos", trimmed(index)));
    if (position.empty()) r.fail("an inj_pos cell is empty");
    inj.positions.push_back(std::move(position));
  }
  for (const auto& cell : r.cells("inj_values")) inj.values.push_back(r.real("inj_values", cell));
  if (inj.positions.size() != inj.values.size()) {
    r.fail(std::to_string(inj.positions.size()) + " positions but " + std::to_string(inj.values.size()) + " values");
  }
  inj.learning_rate = r.real("learning_rate", r.text("learning_rate"));
  inj.seed = static_cast<uint64_t>(r.integer("seed"));
  return inj;
}

ValueFault IscaInjection::fault(const std::string& where, int64_t step) const {
  ValueFault f;
  f.model = FaultModel::Value;
  f.target = stage == "bkwd_inject" ? FaultTarget::Gradient : FaultTarget::Output;
  f.where = where;
  f.step = step;
  f.positions = positions;
  f.values = values;
  f.count = static_cast<int64_t>(positions.size());
  f.seed = seed;
  return f;
}

}  // namespace daifu
