#include <daifu/errors.h>

namespace daifu {

FaultDetected::FaultDetected(std::string detector, const std::string& message)
    : Error("daifu detector " + detector + ": " + message), detector_(std::move(detector)) {}

Unrecovered::Unrecovered(const std::string& message, Failure failure, std::string report_path)
    : std::runtime_error(message), failure_(std::move(failure)), report_path_(std::move(report_path)) {}

}  // namespace daifu
