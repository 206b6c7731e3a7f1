#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs ctest, on both LibTorch versions
# daifu supports here: 2.13 (CPU) from the torch wheel in build/, then Debian's libtorch-dev
# (1.13) in build-debian/.
# Usage: scripts/test.sh            (both versions)
#        scripts/test.sh --sanitize (LibTorch 2.13 in build-asan/, AddressSanitizer + UndefinedBehaviorSanitizer)
#        scripts/test.sh --cuda     (LibTorch 2.14.1 for CUDA in build-cuda/; without a GPU the
#                                    CUDA tests skip: scripts/gpu_check.sh is the GPU run)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--cuda" ]]; then
  scripts/setup.sh --torch wheel-cuda build-cuda -DDAIFU_BUILD_BENCHMARKS=OFF
  # The consumer tests configure against the same LibTorch, whose config needs the toolkit.
  [[ -n ${CUDA_PATH:-} || ! -d /usr/local/cuda ]] || export CUDA_PATH=/usr/local/cuda
  (cd build-cuda && ctest --output-on-failure -j"$(nproc)")
  exit
fi

if [[ "${1:-}" == "--sanitize" ]]; then
  scripts/setup.sh build-asan -DDAIFU_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
  # allocator_may_return_null: the out-of-memory tests ask for more memory than exists on purpose.
  export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd build-asan && ctest --output-on-failure -j"$(nproc)")
  exit
fi

scripts/setup.sh --torch debian --install-only  # each build's mismatch test uses the other LibTorch
scripts/setup.sh --torch wheel --install-only
wheel_torch=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)

echo "== LibTorch 2.13 (the torch wheel): build/"
scripts/setup.sh build -DDAIFU_OTHER_TORCH=/usr
(cd build && ctest --output-on-failure -j"$(nproc)")

echo "== LibTorch 1.13 (Debian's libtorch-dev): build-debian/"
# The benchmarks are built and run against the primary version only.
scripts/setup.sh --torch debian build-debian -DDAIFU_BUILD_BENCHMARKS=OFF -DDAIFU_OTHER_TORCH="$wheel_torch"
(cd build-debian && ctest --output-on-failure -j"$(nproc)")
