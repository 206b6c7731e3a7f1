#include "core/json_input.h"

#include "core/regular_file.h"

namespace daifu::detail {
namespace {

// A SAX pass that only counts nesting and stops at the first level too deep.
class DepthCheck final : public nlohmann::json_sax<nlohmann::json> {
 public:
  bool too_deep = false;

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool key(string_t&) override { return true; }
  bool start_object(std::size_t) override { return enter(); }
  bool end_object() override { return leave(); }
  bool start_array(std::size_t) override { return enter(); }
  bool end_array() override { return leave(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  bool enter() {
    too_deep = ++depth_ > kMaxJsonDepth;
    return !too_deep;
  }
  bool leave() {
    --depth_;
    return true;
  }
  std::size_t depth_ = 0;
};

}  // namespace

nlohmann::json parse_untrusted_json(std::string_view text, std::string* why) noexcept {
  try {
    DepthCheck check;
    if (!nlohmann::json::sax_parse(text, &check)) {
      if (why != nullptr) {
        *why = check.too_deep ? "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels" : "not JSON";
      }
      return nlohmann::json(nlohmann::json::value_t::discarded);
    }
    return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  } catch (const std::exception&) {  // std::bad_alloc
    if (why != nullptr) *why = "not readable";
    return nlohmann::json(nlohmann::json::value_t::discarded);
  }
}

nlohmann::json parse_untrusted_json_file(const std::filesystem::path& path, std::string* why) noexcept {
  const auto text = read_regular_file(path, kMaxJsonFileBytes, why);
  if (!text) return nlohmann::json(nlohmann::json::value_t::discarded);
  return parse_untrusted_json(*text, why);
}

}  // namespace daifu::detail
