#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs ctest.
# Usage: scripts/test.sh            (build/)
#        scripts/test.sh --sanitize (build-asan/, AddressSanitizer + UndefinedBehaviorSanitizer)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--sanitize" ]]; then
  scripts/setup.sh build-asan -DDAIFU_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
  # allocator_may_return_null: the out-of-memory tests ask for more memory than exists on purpose.
  export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  cd build-asan
else
  scripts/setup.sh build
  cd build
fi
ctest --output-on-failure -j"$(nproc)"
