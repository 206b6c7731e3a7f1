#include "surgery/tensor_mismatch.h"

#include <daifu/session.h>
#include <daifu/step.h>

#include "core/strings.h"
#include "core/tensor_description.h"
#include "repair/repair_services.h"
#include "surgery/batch_tensors.h"
#include "surgery/classifier_head.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/accumulate.h>

#include <regex>
#include <sstream>
#include <vector>

namespace daifu::detail {
namespace {

using Sizes = std::vector<int64_t>;

// "4, 1" -> {4, 1}
Sizes parse_sizes(const std::string& text) {
  Sizes out;
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.find_first_not_of(' ') != std::string::npos) out.push_back(std::stoll(item));
  }
  return out;
}

std::string sizes_text(const Sizes& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

std::string sizes_text(const at::Tensor& t) { return sizes_text(t.sizes().vec()); }

bool integral_values(const at::Tensor& t) {
  if (at::isIntegralType(t.scalar_type(), /*includeBool=*/false)) return true;
  if (!at::isFloatingType(t.scalar_type())) return false;
  return at::isfinite(t).all().item<bool>() && at::equal(t, t.round());
}

// Rows of class probabilities: (N, C), C > 1, values in [0, 1], each row summing to 1.
bool class_rows(const at::Tensor& t) {
  if (t.dim() != 2 || t.size(1) < 2 || t.numel() == 0) return false;
  const at::Tensor d = t.to(at::kDouble);
  return (d >= 0).all().item<bool>() && (d <= 1).all().item<bool>() &&
         (d.sum(1) - 1).abs().max().item<double>() < 1e-6;
}

bool one_hot_rows(const at::Tensor& t) {
  if (!class_rows(t)) return false;
  const at::Tensor d = t.to(at::kDouble);
  return ((d == 0) | (d == 1)).all().item<bool>();
}

// What an adapter works with; its verdicts carry the adapter's name into the explanation.
struct Fix {
  RepairContext& context;
  RepairServices& session;
  std::vector<BatchTensor> batch;
  std::string adapter;

  std::vector<BatchTensor> tensors(bool inputs, bool targets) const {
    std::vector<BatchTensor> out;
    for (const auto& b : batch) {
      const bool input_side = b.role != BatchRole::Target;
      if ((inputs && input_side) || (targets && !input_side)) out.push_back(b);
    }
    return out;
  }
  void replace(const BatchTensor& b, const at::Tensor& t) {
    context.note(b.name, describe_tensor(*b.tensor), describe_tensor(t));
    *b.tensor = t;
  }
  Action retry(const std::string& why) {
    context.explain(adapter + ": " + why);
    return Action::Retry;
  }
  Action decline(const std::string& why) {
    context.explain(adapter + ": " + why);
    return Action::Decline;
  }
  // Widens the classifier head to `classes`, `evidence` saying where the count comes from.
  Action widen(int64_t classes, const std::string& evidence) {
    const auto head = classifier_head(session.state());
    widen_classifier_head(session, classes, context);
    return retry("the classifier head " + head->name + " had " + std::to_string(head->out_features) +
                 " output(s) for " + std::to_string(classes) + " classes (" + evidence + "); widened to " +
                 std::to_string(classes));
  }
};

const char* const kNoTarget =
    "memoize the batch with Step::once; a bare tensor is a target when its key contains \"target\" or \"label\"";

// "0D or 1D target tensor expected, multi-target not supported" (nll_loss, cross_entropy).
Action target_rank(Fix& fix, const std::smatch&) {
  std::vector<BatchTensor> wide;
  for (const auto& b : fix.tensors(false, true)) {
    if (b.tensor->dim() == 2) wide.push_back(b);
  }
  if (wide.empty()) return fix.decline(std::string("no memoized target of 2 dimensions (") + kNoTarget + ")");
  for (const auto& b : wide) {
    if (b.tensor->size(1) == 1) {
      const std::string before = sizes_text(*b.tensor);
      fix.replace(b, b.tensor->squeeze(1));
      return fix.retry(b.name + " " + before + " squeezed to " + sizes_text(*b.tensor) +
                       ": nll_loss and cross_entropy take class indices of shape (N)");
    }
  }
  const auto head = classifier_head(fix.session.state());
  for (const auto& b : wide) {
    const int64_t classes = b.tensor->size(1);
    if (head && head->out_features == 1 && class_rows(*b.tensor)) {
      return fix.widen(classes, b.name + " holds class probabilities over " + std::to_string(classes) + " classes");
    }
    if (one_hot_rows(*b.tensor)) {
      const std::string before = sizes_text(*b.tensor);
      fix.replace(b, b.tensor->argmax(1));
      return fix.retry(b.name + " " + before + " is one-hot; replaced by its class indices " + sizes_text(*b.tensor));
    }
  }
  return fix.decline("the memoized targets are (N, C) but neither (N, 1) nor one-hot: multi-label targets need a "
                     "multi-label loss (binary_cross_entropy_with_logits)");
}

// "Expected floating point type for target with class probabilities, got Long" (cross_entropy
// with an integer one-hot target).
Action class_probabilities(Fix& fix, const std::smatch&) {
  for (const auto& b : fix.tensors(false, true)) {
    if (at::isIntegralType(b.tensor->scalar_type(), /*includeBool=*/false) && one_hot_rows(*b.tensor)) {
      const std::string before = sizes_text(*b.tensor);
      fix.replace(b, b.tensor->argmax(1));
      return fix.retry(b.name + " " + before + " is an integer one-hot target; replaced by its class indices " +
                       sizes_text(*b.tensor));
    }
  }
  return fix.decline(std::string("no memoized integer one-hot target (") + kNoTarget + ")");
}

// "Using a target size ([4]) that is different to the input size ([4, 1]) is deprecated. ..."
// (binary_cross_entropy) and "Target size ([4]) must be the same as input size ([4, 1])"
// (binary_cross_entropy_with_logits): m[1] the target's sizes, m[2] the input's.
Action target_size(Fix& fix, const std::smatch& m) {
  const Sizes target = parse_sizes(m[1]);
  const Sizes input = parse_sizes(m[2]);
  const BatchTensor* found = nullptr;
  const auto targets = fix.tensors(false, true);
  for (const auto& b : targets) {
    if (b.tensor->sizes().vec() == target) found = &b;
  }
  if (found == nullptr) return fix.decline("no memoized target of shape " + sizes_text(target) + " (" + kNoTarget + ")");
  const at::Tensor& t = *found->tensor;
  const bool same_batch = !target.empty() && !input.empty() && target[0] == input[0];
  if (same_batch && t.numel() == c10::multiply_integers(input)) {
    fix.replace(*found, t.reshape(input));
    return fix.retry(found->name + " reshaped from " + sizes_text(target) + " to the loss input's " + sizes_text(input));
  }
  if (same_batch && target.size() == 1 && input.size() == 2 && input[1] > 1 && integral_values(t) &&
      t.min().item<double>() >= 0 && t.max().item<double>() < static_cast<double>(input[1])) {
    const auto dtype = at::isFloatingType(t.scalar_type()) ? t.scalar_type() : model_dtype(fix.session.state()).value_or(at::kFloat);
    fix.replace(*found, at::one_hot(t.to(at::kLong), input[1]).to(dtype));
    return fix.retry(found->name + " holds class indices; one-hot encoded over the " + std::to_string(input[1]) +
                     " classes of the loss input " + sizes_text(input));
  }
  const auto head = classifier_head(fix.session.state());
  if (same_batch && target.size() == 2 && input.size() == 2 && input[1] == 1 && target[1] > 1 && head &&
      head->out_features == 1 && (t >= 0).all().item<bool>() && (t <= 1).all().item<bool>()) {
    return fix.widen(target[1], "the loss compares outputs " + sizes_text(input) + " with targets " + sizes_text(target));
  }
  return fix.decline("the target " + sizes_text(target) + " cannot be adapted to the input " + sizes_text(input));
}

// "Target 7 is out of bounds." (c10::IndexError from nll_loss/cross_entropy): the head has
// fewer outputs than there are classes. The class count comes from the int64 knob num_classes.
Action class_count(Fix& fix, const std::smatch& m) {
  const int64_t label = std::stoll(m[1]);
  if (label < 0) return fix.decline("target " + std::to_string(label) + " is negative: a label error in the data");
  const auto head = classifier_head(fix.session.state());
  if (!head) return fix.decline("no torch::nn::Linear among the tracked modules to widen");
  detail::KnobBase* knob = fix.session.find_knob("num_classes");
  if (knob == nullptr) {
    return fix.decline("target " + std::to_string(label) + " is out of bounds for the head " + head->name + " (" +
                       std::to_string(head->out_features) +
                       " outputs) and the class count is unknown: create the int64 knob \"num_classes\" "
                       "(session.knob<int64_t>(\"num_classes\", C)) so that the head can be widened to C");
  }
  auto* count = dynamic_cast<Knob<int64_t>*>(knob);
  if (count == nullptr) return fix.decline(std::string("the knob \"num_classes\" is ") + knob->type_name() + ", not int64");
  const int64_t classes = count->get();
  if (label >= classes) {
    return fix.decline("target " + std::to_string(label) + " is out of bounds for num_classes = " +
                       std::to_string(classes) + ": a label error in the data or a wrong num_classes");
  }
  if (head->out_features >= classes) {
    return fix.decline("the head " + head->name + " already has " + std::to_string(head->out_features) +
                       " outputs for num_classes = " + std::to_string(classes));
  }
  return fix.widen(classes, "the knob num_classes; the loss saw target " + std::to_string(label));
}

// "mat1 and mat2 must have the same dtype" (Linear), "expected scalar type Double but found
// Float" (Linear on 1-D/3-D input, Conv without bias), "Input type (double) and bias type
// (float) should be the same" (Conv), "Found dtype Double but expected Float" (loss backward
// with a double target); "expected scalar type Long but found Float" (class-index targets,
// LibTorch 1.x) or "expected target dtype to be Long or Byte, but got Float" (2.x).
Action dtype(Fix& fix, const std::smatch& m) {
  const std::string said = lowercase(m.str(0));
  if (said.find("expected scalar type long but found") != std::string::npos ||
      said.find("expected target dtype to be long") != std::string::npos) {
    std::vector<BatchTensor> indices;
    for (const auto& b : fix.tensors(false, true)) {
      if (b.tensor->scalar_type() != at::kLong && b.tensor->dim() <= 1 && integral_values(*b.tensor)) indices.push_back(b);
    }
    if (indices.empty()) return fix.decline(std::string("no memoized 0-D or 1-D target holding class indices (") + kNoTarget + ")");
    for (const auto& b : indices) fix.replace(b, b.tensor->to(at::kLong));
    return fix.retry("class-index targets cast to Long");
  }
  const auto dtype = model_dtype(fix.session.state());
  if (!dtype) return fix.decline("no tracked module with floating parameters to take the dtype from");
  std::vector<BatchTensor> casts;
  for (const auto& b : fix.batch) {
    if (at::isFloatingType(b.tensor->scalar_type()) && b.tensor->scalar_type() != *dtype) casts.push_back(b);
  }
  if (!casts.empty()) {
    for (const auto& b : casts) fix.replace(b, b.tensor->to(*dtype));
    return fix.retry(std::to_string(casts.size()) + " memoized tensor(s) cast to the model's dtype " + c10::toString(*dtype));
  }
  for (const auto& b : fix.tensors(true, false)) {
    if (at::isIntegralType(b.tensor->scalar_type(), /*includeBool=*/true)) {
      return fix.decline(b.name + " is " + c10::toString(b.tensor->scalar_type()) + "; a cast to " +
                         c10::toString(*dtype) + " would keep its scale (e.g. 0..255): convert and normalize it in "
                         "the data pipeline");
    }
  }
  return fix.decline(std::string("every floating memoized tensor is already ") + c10::toString(*dtype));
}

// "Given groups=1, weight of size [4, 1, 3, 3], expected input[1, 4, 28, 28] to have 1
// channels, but got 4 channels instead" (Conv): input[1, ...] means libtorch took the input
// for one unbatched sample, i.e. a batch of images without their channel dimension;
// "expected input[4, 32, 32, 3] to have 3 channels" with the channels last is an NHWC batch.
Action channels(Fix& fix, const std::smatch& m) {
  const Sizes input = parse_sizes(m[2]);
  const int64_t expected = std::stoll(m[3]);
  const auto inputs = fix.tensors(true, false);
  if (input.size() >= 3 && input[0] == 1 && expected == 1) {
    const Sizes unbatched(input.begin() + 1, input.end());
    for (const auto& b : inputs) {
      if (b.tensor->sizes().vec() != unbatched) continue;
      fix.replace(b, b.tensor->unsqueeze(1));
      return fix.retry(b.name + " " + sizes_text(unbatched) + " is a batch without its channel dimension; unsqueezed to " +
                       sizes_text(*b.tensor));
    }
  }
  if (input.size() >= 3 && input.back() == expected) {
    for (const auto& b : inputs) {
      if (b.tensor->sizes().vec() != input) continue;
      fix.replace(b, b.tensor->movedim(-1, 1).contiguous());
      return fix.retry(b.name + " " + sizes_text(input) + " has its channels last; moved to " + sizes_text(*b.tensor));
    }
  }
  return fix.decline("no memoized input of shape " + sizes_text(input) + " (or that shape without its leading 1) whose "
                     "channels could be restored");
}

// "size mismatch (got input: [10], target: [1])" (nll_loss/cross_entropy): an input without a
// batch dimension, a single sample, against a target of one entry.
Action batch_dim(Fix& fix, const std::smatch& m) {
  if (std::stoll(m[2]) != 1) return fix.decline("the target has " + m[2].str() + " entries: not one sample without its batch dimension");
  const auto inputs = fix.tensors(true, false);
  bool one_target = false;
  for (const auto& b : fix.tensors(false, true)) one_target = one_target || b.tensor->sizes().vec() == Sizes{1};
  if (inputs.size() != 1 || !one_target) {
    return fix.decline("needs exactly one memoized input and a memoized target of shape (1) (" + std::string(kNoTarget) + ")");
  }
  const BatchTensor& b = inputs.front();
  const std::string before = sizes_text(*b.tensor);
  fix.replace(b, b.tensor->unsqueeze(0));
  return fix.retry(b.name + " " + before + " is one sample without its batch dimension; unsqueezed to " + sizes_text(*b.tensor));
}

struct Adapter {
  const char* name;
  std::regex message;
  Action (*adapt)(Fix&, const std::smatch&);
};

const std::vector<Adapter>& adapters() {
  constexpr auto flags = std::regex::ECMAScript | std::regex::icase | std::regex::optimize;
  static const std::vector<Adapter> table = {
      {"target_rank", std::regex(R"(0D or 1D target tensor expected, multi-target not supported)", flags), target_rank},
      {"class_probabilities", std::regex(R"(Expected floating point type for target with class probabilities)", flags),
       class_probabilities},
      {"target_size",
       std::regex(R"(Using a target size \(\[([\d, ]*)\]\) that is different to the input size \(\[([\d, ]*)\]\))", flags),
       target_size},
      {"target_size", std::regex(R"(Target size \(\[([\d, ]*)\]\) must be the same as input size \(\[([\d, ]*)\]\))", flags),
       target_size},
      {"class_count", std::regex(R"(Target (-?\d+) is out of bounds)", flags), class_count},
      {"dtype", std::regex(R"(mat1 and mat2 must have the same dtype)", flags), dtype},
      {"dtype", std::regex(R"(expected scalar type (\w+) but found (\w+))", flags), dtype},
      {"dtype", std::regex(R"(Input type \(([\w ]+)\) and (?:bias|weight) type \(([\w ]+)\) should be the same)", flags), dtype},
      {"dtype", std::regex(R"(Found dtype (\w+) but expected (\w+))", flags), dtype},
      {"dtype", std::regex(R"(expected target dtype to be (\w+)(?: or \w+)?, but got (\w+))", flags), dtype},
      {"channels",
       std::regex(R"(weight of size \[([\d, ]+)\], expected input\[([\d, ]+)\] to have (\d+) channels, but got (\d+) channels instead)",
                  flags),
       channels},
      {"batch_dim", std::regex(R"(size mismatch \(got input: \[(\d+)\], target: \[(\d+)\]\))", flags), batch_dim},
  };
  return table;
}

const Adapter* adapter_for(const std::string& message, std::smatch& m) {
  for (const auto& a : adapters()) {
    if (std::regex_search(message, m, a.message)) return &a;
  }
  return nullptr;
}

}  // namespace

TensorMismatchSurgery::TensorMismatchSurgery(SurgeryLimits limits, RepairServices& session)
    : Surgery("tensor_mismatch", limits), session_(session) {
  adapters();  // compiles the messages' regexes now (~0.5 ms), not at the first failure
}

bool TensorMismatchSurgery::matches(const Failure& failure) const {
  std::smatch m;
  return failure.kind == FailureKind::TensorMismatch && adapter_for(failure.message, m) != nullptr;
}

Action TensorMismatchSurgery::operate(RepairContext& context) {
  const std::string& message = context.failure().message;
  std::smatch m;
  const Adapter* adapter = adapter_for(message, m);
  if (adapter == nullptr) {
    context.explain("no adapter knows this message");
    return Action::Decline;
  }
  c10::NoGradGuard no_grad;
  Fix fix{context, session_, batch_tensors(context.step()), adapter->name};
  return adapter->adapt(fix, m);
}

}  // namespace daifu::detail
