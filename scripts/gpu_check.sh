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
# Usage: scripts/gpu_check.sh [--torch wheel-cuda|PREFIX] [--no-install | --deps DIR] [--all] [BUILD_DIR]
#   --torch wheel-cuda  LibTorch 2.14.1 (CUDA 13) from the torch wheel in .venv-cuda/ (the default)
#   --torch PREFIX      a CUDA LibTorch you unpacked yourself, or a CUDA torch wheel's torch/
#   --no-install        install nothing (a machine without a network): scripts/setup.sh --no-install
#   --deps DIR          install nothing; take the dependencies from the Debian packages in DIR
#                       (scripts/offline_deps.sh fetch DIR, run where apt works), unpacked into
#                       /tmp/daifu-deps
#   --all               then run all of daifu_tests too (the CPU suites with a device present)
#   BUILD_DIR           default build-cuda
# Exit codes: 0 every check ran and passed; 1 a check failed; 2 no CUDA device (nothing checked).
set -euo pipefail
cd "$(dirname "$0")/.."

torch=wheel-cuda
setup_options=()
all=
while [[ $# -gt 0 ]]; do
  case $1 in
    --torch) torch=$2; shift 2 ;;
    --no-install) setup_options+=(--no-install); shift ;;
    --deps)
      exports=$(scripts/offline_deps.sh unpack "$2" /tmp/daifu-deps)
      eval "$exports"
      setup_options+=(--no-install)
      shift 2
      ;;
    --all) all=1; shift ;;
    *) break ;;
  esac
done
build_dir=${1:-build-cuda}

echo "== GPU"
nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
echo "== build: daifu's tests against $torch in $build_dir"
start=$(date +%s)
scripts/setup.sh --torch "$torch" "${setup_options[@]}" --target daifu_tests "$build_dir" \
  -DDAIFU_BUILD_EXAMPLES=OFF -DDAIFU_BUILD_BENCHMARKS=OFF
echo "built in $(( $(date +%s) - start )) s"

tests=$build_dir/tests/daifu_tests
filter='Cuda.*:Cuda/DeviceAssert.*:Distributed.OverNccl*:OutOfMemory.*:Snapshot.*'
echo "== $tests --gtest_filter=$filter"
export DAIFU_TEST_TMP=$build_dir/tests/tmp
rm -rf "$DAIFU_TEST_TMP"
set +e
"$tests" --gtest_filter="$filter" --gtest_color=no 2>&1 | tee "$build_dir/gpu_check.log"
status=${PIPESTATUS[0]}
set -e
devices=$(grep -c '^GPU ' <(nvidia-smi -L 2>/dev/null) || true)
echo "== summary: gtest exit $status, $devices GPU(s)"
grep -E '^\[  SKIPPED \]|^\[  FAILED  \]|^\[  PASSED  \]' "$build_dir/gpu_check.log" || true
all_status=0
if [[ -n $all ]]; then
  echo "== $tests --gtest_filter=-$filter: the rest, with a CUDA device present"
  set +e
  "$tests" --gtest_filter="-$filter" --gtest_brief=1 --gtest_color=no > "$build_dir/gpu_check_all.log" 2>&1
  all_status=$?
  set -e
  grep -E '^\[  FAILED  \]|^\[  PASSED  \]|^\[==========\]' "$build_dir/gpu_check_all.log" || true
  echo "== the rest: gtest exit $all_status (log: $build_dir/gpu_check_all.log)"
fi
if [[ $status -ne 0 || $all_status -ne 0 ]]; then exit 1; fi
if grep -q 'no CUDA device on this machine\|built against a CPU-only LibTorch' "$build_dir/gpu_check.log"; then
  echo "gpu_check: no CUDA device was usable: the CUDA checks were skipped, nothing was checked" >&2
  exit 2
fi
