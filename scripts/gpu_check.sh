#!/usr/bin/env bash
# The CUDA checks, for anyone with a GPU: builds daifu's tests against a CUDA LibTorch and runs
# the tests that need a GPU, printing what each did (or why it skipped):
#   Cuda.ARealOutOfMemoryIsRepairedByHalvingTheMicroBatch   a real CUDA OOM, micro-batch halved
#   Cuda.ARetryStartsFromTheStepsCudaStateToTheBit          CUDA parameters, Adam state, generator
#   Cuda/DeviceAssert.*                                     a device-side assert, read back in the
#                                                           step or left queued (then surfaced at
#                                                           the step boundary): fatal, exit 3, and
#                                                           a new process resumes from the snapshot
#   Distributed.OverNccl*                                   2 ranks over NCCL (needs 2 GPUs)
#   OutOfMemory.*, Snapshot.*                               the CPU suites, with CUDA present
# Usage: scripts/gpu_check.sh [--torch wheel-cuda|PREFIX] [BUILD_DIR]
#   --torch wheel-cuda  LibTorch 2.14.1 (CUDA 13) from the torch wheel in .venv-cuda/ (the default)
#   --torch PREFIX      a CUDA LibTorch you unpacked yourself
#   BUILD_DIR           default build-cuda
# Exit codes: 0 every check ran and passed; 1 a check failed; 2 no CUDA device (nothing checked).
set -euo pipefail
cd "$(dirname "$0")/.."

torch=wheel-cuda
if [[ ${1:-} == --torch ]]; then
  torch=$2
  shift 2
fi
build_dir=${1:-build-cuda}

echo "== GPU"
nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
echo "== build: daifu's tests against $torch in $build_dir"
start=$(date +%s)
scripts/setup.sh --torch "$torch" --target daifu_tests "$build_dir" -DDAIFU_BUILD_BENCHMARKS=OFF
echo "built in $(( $(date +%s) - start )) s"

tests=$build_dir/tests/daifu_tests
filter='Cuda.*:Cuda/DeviceAssert.*:Distributed.OverNccl*:OutOfMemory.*:Snapshot.*'
echo "== $tests --gtest_filter=$filter"
export DAIFU_TEST_TMP=$build_dir/tests/tmp
set +e
"$tests" --gtest_filter="$filter" --gtest_color=no 2>&1 | tee "$build_dir/gpu_check.log"
status=${PIPESTATUS[0]}
set -e
devices=$(grep -c '^GPU ' <(nvidia-smi -L 2>/dev/null) || true)
echo "== summary: gtest exit $status, $devices GPU(s)"
grep -E '^\[  SKIPPED \]|^\[  FAILED  \]|^\[  PASSED  \]' "$build_dir/gpu_check.log" || true
if [[ $status -ne 0 ]]; then exit 1; fi
if grep -q 'no CUDA device on this machine\|built against a CPU-only LibTorch' "$build_dir/gpu_check.log"; then
  echo "gpu_check: no CUDA device was usable: the CUDA checks were skipped, nothing was checked" >&2
  exit 2
fi
