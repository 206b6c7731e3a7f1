// Parsing of injection plans (Options::inject, $DAIFU_INJECT): crash and value fault items.
#include <daifu/errors.h>
#include <daifu/inject.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace daifu {
namespace {

[[noreturn]] void bad(const std::string& item, const std::string& why) {
  throw Error("daifu: injection \"" + item + "\" " + why);
}

// A non-negative decimal integer of at most 18 digits, or nullopt-like -1.
int64_t non_negative(const std::string& text) {
  if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(text);
}

double number(const std::string& item, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size()) bad(item, "has \"" + text + "\" where a number belongs");
  return v;
}

// MODEL[xN][+OFFSET]
void parse_model(const std::string& item, std::string text, ValueFault& f) {
  // The suffix starts after the model's name, or after the number of value=V.
  std::size_t name_end = text.find_first_of("x+");
  if (text.compare(0, 6, "value=") == 0) {
    const char* begin = text.c_str() + 6;
    char* end = nullptr;
    std::strtod(begin, &end);
    if (end == begin) bad(item, "needs a number after \"value=\"");
    name_end = static_cast<std::size_t>(end - text.c_str());
  }
  std::string suffix = name_end == std::string::npos ? "" : text.substr(name_end);
  text = text.substr(0, name_end);
  if (const auto plus = suffix.find('+'); plus != std::string::npos) {
    f.offset = non_negative(suffix.substr(plus + 1));
    if (f.offset < 0) bad(item, "needs a non-negative element offset after '+'");
    suffix.erase(plus);
  }
  if (!suffix.empty()) {
    f.count = suffix[0] == 'x' ? non_negative(suffix.substr(1)) : -1;
    if (f.count < 1) bad(item, "needs a positive element count after 'x'");
  }
  if (text == "nan") {
    f.model = FaultModel::NaN;
  } else if (text == "inf") {
    f.model = FaultModel::Inf;
  } else if (text == "zero") {
    f.model = FaultModel::Zero;
  } else if (text == "random") {
    f.model = FaultModel::RandomValue;
  } else if (text == "copy") {
    f.model = FaultModel::CopyValue;
  } else if (text.compare(0, 4, "flip") == 0) {
    f.model = FaultModel::BitFlip;
    if (text.size() > 4) {
      const int64_t bit = non_negative(text.substr(4));
      if (bit < 0 || bit > 31) bad(item, "flips bit \"" + text.substr(4) + "\"; a float32 has bits 0..31");
      f.bit = static_cast<int>(bit);
    }
  } else if (text.compare(0, 6, "value=") == 0) {
    f.model = FaultModel::Value;
    f.value = number(item, text.substr(6));
  } else {
    bad(item, "names an unknown fault model \"" + text + "\"; known: nan, inf, zero, random, copy, flip, flipK, value=V");
  }
}

ValueFault parse_value_fault(const std::string& item, const std::string& body) {
  ValueFault f;
  if (body.compare(0, 5, "isca:") == 0) {
    const auto colon = body.rfind(':');
    if (colon <= 5 || colon + 1 == body.size()) bad(item, "is not isca:PATH:NAME@step");
    return read_isca_injection(body.substr(5, colon - 5)).fault(body.substr(colon + 1), 0);
  }
  const auto first = body.find(':');
  const auto second = first == std::string::npos ? first : body.find(':', first + 1);
  if (second == std::string::npos || second + 1 == body.size()) bad(item, "is not MODEL:TARGET:NAME@step (for example nan:out:fc1.out@30)");
  parse_model(item, body.substr(0, first), f);
  const std::string target = body.substr(first + 1, second - first - 1);
  if (target == "out") {
    f.target = FaultTarget::Output;
  } else if (target == "grad") {
    f.target = FaultTarget::Gradient;
  } else if (target == "param" || target == "param!") {
    f.target = FaultTarget::Parameter;
    f.permanent = target == "param!";
  } else {
    bad(item, "names an unknown target \"" + target + "\"; known: out, grad, param, param!");
  }
  f.where = body.substr(second + 1);
  return f;
}

}  // namespace

const std::vector<std::string>& injectable_faults() {
  static const std::vector<std::string> faults = {"transient", "io",  "oom",        "shape",      "dtype",
                                                  "index",     "path", "nan_data",  "nan_loss",   "api",
                                                  "contention", "illegal_address", "unknown"};
  return faults;
}

InjectionPlan parse_plan(const std::string& plan) {
  InjectionPlan out;
  std::string item;
  auto flush = [&] {
    if (item.empty()) return;
    const auto at = item.rfind('@');
    if (at == std::string::npos || at == 0 || at + 1 == item.size()) {
      bad(item, "is not fault@step (for example transient@12 or nan:out:fc1.out@30)");
    }
    std::string step = item.substr(at + 1);
    const bool every_attempt = step.back() == '*';
    if (every_attempt) step.pop_back();
    const int64_t index = non_negative(step);
    if (index < 0) bad(item, "needs a non-negative step number after '@'");
    const std::string body = item.substr(0, at);
    if (body.find(':') == std::string::npos) {
      const auto& faults = injectable_faults();
      if (std::find(faults.begin(), faults.end(), body) == faults.end()) {
        std::string known;
        for (const auto& f : faults) known += (known.empty() ? "" : ", ") + f;
        bad(item, "names an unknown fault; known: " + known + " (value faults are MODEL:TARGET:NAME@step)");
      }
      out.crashes.push_back(Injection{body, index, every_attempt});
    } else {
      ValueFault f = parse_value_fault(item, body);
      f.step = index;
      f.every_attempt = every_attempt;
      out.values.push_back(std::move(f));
    }
    item.clear();
  };
  for (char c : plan) {
    if (c == ',' || c == ';' || std::isspace(static_cast<unsigned char>(c))) {
      flush();
    } else {
      item.push_back(c);
    }
  }
  flush();
  return out;
}

const char* to_string(FaultModel model) noexcept {
  switch (model) {
    case FaultModel::BitFlip: return "bit_flip";
    case FaultModel::RandomValue: return "random_value";
    case FaultModel::CopyValue: return "copy_value";
    case FaultModel::Zero: return "zero";
    case FaultModel::Value: return "value";
    case FaultModel::Inf: return "inf";
    case FaultModel::NaN: return "nan";
  }
  return "nan";
}

const char* to_string(FaultTarget target) noexcept {
  switch (target) {
    case FaultTarget::Output: return "output";
    case FaultTarget::Gradient: return "gradient";
    case FaultTarget::Parameter: return "parameter";
  }
  return "output";
}

}  // namespace daifu
