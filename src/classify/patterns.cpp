#include <daifu/classifier.h>

namespace daifu {

// The message table. Rows are case-insensitive ECMAScript regexes; rows without regex
// metacharacters are matched as plain substrings (the fast path). Order matters: the first
// matching row wins, so narrower rows come before broader ones.
const std::vector<FailurePattern>& builtin_failure_patterns() {
  using K = FailureKind;
  static const std::vector<FailurePattern> table = {
      // Errors that poison a CUDA context: the process must end; never retried in place.
      {"an illegal memory access was encountered", K::Fatal},
      {"misaligned address", K::Fatal},
      {"device-side assert triggered", K::Fatal},
      {"unspecified launch failure", K::Fatal},
      {"an illegal instruction was encountered", K::Fatal},
      {"uncorrectable ecc error", K::Fatal},
      {"cuda error: launch failed", K::Fatal},

      {"all cuda-capable devices are busy or unavailable", K::DeviceContention},
      {"cuda-capable device\\(s\\) (is|are) busy or unavailable", K::DeviceContention},
      {"cudaerrordevicesunavailable", K::DeviceContention},

      {"out of memory", K::OutOfMemory},
      {"can't allocate memory", K::OutOfMemory},
      {"cannot allocate memory", K::OutOfMemory},
      {"cublas_status_alloc_failed", K::OutOfMemory},
      {"std::bad_alloc", K::OutOfMemory},

      {"returned nan values", K::NumericFault},
      {"returned inf values", K::NumericFault},
      {"loss is nan", K::NumericFault},
      {"loss is inf", K::NumericFault},
      {"loss is non-finite", K::NumericFault},
      {"non-finite loss", K::NumericFault},
      {"nan loss", K::NumericFault},
      {"non-finite gradient", K::NumericFault},
      {"nan gradient", K::NumericFault},
      {"is non-finite, so it cannot be clipped", K::NumericFault},
      {"is singular", K::NumericFault},
      {"not positive-definite", K::NumericFault},

      // A program's own NaN check (AT_ASSERT is TORCH_INTERNAL_ASSERT; TORCH_CHECK without a
      // message of its own): the message is the condition's text.
      {"(isnan|isinf|isfinite)\\b.* internal assert failed at", K::ExceptionalData},
      {"^expected .*\\b(isnan|isinf|isfinite)\\b.* to be true, but got false", K::ExceptionalData},
      {"contains non-finite", K::ExceptionalData},
      {"non-finite values in", K::ExceptionalData},
      {"contains nan", K::ExceptionalData},
      {"contains inf", K::ExceptionalData},
      {"nan in input", K::ExceptionalData},
      {"nan in batch", K::ExceptionalData},
      {"all elements of input should be between 0 and 1", K::ExceptionalData},

      {"mat1 and mat2 shapes cannot be multiplied", K::TensorMismatch},
      {"must match the size of tensor", K::TensorMismatch},
      {"size mismatch", K::TensorMismatch},
      {"sizes of tensors must match", K::TensorMismatch},
      {"is invalid for input of size", K::TensorMismatch},
      {"expected scalar type \\w+ but found \\w+", K::TensorMismatch},
      {"must have the same dtype", K::TensorMismatch},
      {"found dtype \\w+ but expected \\w+", K::TensorMismatch},
      {"expected target dtype to be \\w+", K::TensorMismatch},  // LibTorch 2.x's nll_loss
      {"to have the same dtype", K::TensorMismatch},
      {"expected input batch_size \\(\\d+\\) to match target batch_size", K::TensorMismatch},
      {"target -?\\d+ is out of bounds", K::TensorMismatch},
      {"dimension out of range", K::TensorMismatch},
      {"expected \\d+d? ?(or \\d+d? )?\\S*-?dimensional input", K::TensorMismatch},
      {"to have \\d+ channels", K::TensorMismatch},
      {"0d or 1d target tensor expected", K::TensorMismatch},
      {"inconsistent tensor size", K::TensorMismatch},
      {"shape mismatch", K::TensorMismatch},
      {"using a target size .* that is different to the input size", K::TensorMismatch},
      {"target size \\(\\[.*\\]\\) must be the same as input size", K::TensorMismatch},
      {"expected floating point type for target with class probabilities", K::TensorMismatch},
      {"input type \\(.+\\) and (bias|weight) type \\(.+\\) should be the same", K::TensorMismatch},

      {"parent directory .* does not exist", K::PathProblem},
      {"no such file or directory", K::PathProblem},
      {"not a directory", K::PathProblem},
      {"is a directory", K::PathProblem},
      {"permission denied", K::PathProblem},
      {"open file failed", K::PathProblem},
      {"cannot open", K::PathProblem},
      {"could not open", K::PathProblem},
      {"failed to open", K::PathProblem},
      {"unable to open", K::PathProblem},

      {"resource temporarily unavailable", K::TransientRuntime},
      {"try again", K::TransientRuntime},
      {"connection (reset|refused|aborted|closed)", K::TransientRuntime},
      {"timed out", K::TransientRuntime},
      {"timeout", K::TransientRuntime},
      {"broken pipe", K::TransientRuntime},
      {"interrupted system call", K::TransientRuntime},
      {"input/output error", K::TransientRuntime},
      {"network is unreachable", K::TransientRuntime},
      {"stale file handle", K::TransientRuntime},
      {"device or resource busy", K::TransientRuntime},

      {"cannot be converted to scalar", K::ApiMisuse},
      {"does not require grad and does not have a grad_fn", K::ApiMisuse},
      {"backward through the graph a second time", K::ApiMisuse},
      {"leaf variable that requires grad", K::ApiMisuse},
      {"modified by an inplace operation", K::ApiMisuse},
      {"expected all tensors to be on the same device", K::ApiMisuse},
      {"grad can be implicitly created only for scalar outputs", K::ApiMisuse},
      {"boolean value of tensor with more than one value is ambiguous", K::ApiMisuse},
      {"not implemented for", K::ApiMisuse},
      {"invalid argument", K::ApiMisuse},
      {"expected a non-empty list of tensors", K::ApiMisuse},
      {"could not infer output dtype", K::ApiMisuse},
  };
  return table;
}

}  // namespace daifu
