#include "surgery/api_misuse.h"

#include <nlohmann/json.hpp>

namespace daifu::detail {

// Last among the built-ins: a user surgery that knows the call may still repair it.
ApiMisuseSurgery::ApiMisuseSurgery(SurgeryLimits limits) : Surgery("api_misuse", limits) {}

bool ApiMisuseSurgery::matches(const Failure& failure) const { return failure.kind == FailureKind::ApiMisuse; }

Action ApiMisuseSurgery::operate(RepairContext& context) {
  const Failure& f = context.failure();
  const std::string site = user_frame(f.throw_site);
  context.note("throw_site", "null", nlohmann::json(site).dump());
  context.explain("API misuse is not repaired by guessing: " + f.exception_type + " \"" + f.message + "\"" +
                  (site.empty() ? std::string(" (throw site not captured)") : " thrown from " + site) +
                  "; fix that call, or drop a hot patch into <workplace>/patches/ (docs/hot-patching.md), or "
                  "register a surgery that knows it");
  return Action::Escalate;
}

}  // namespace daifu::detail
