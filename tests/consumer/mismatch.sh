#!/usr/bin/env bash
# A consumer project that finds another LibTorch than the one daifu was built against must
# stop at find_package(daifu) with daifu's message, not link and fail at run time.
# Usage: mismatch.sh BUILD_DIR SCRATCH_DIR OTHER_TORCH_PREFIX
set -euo pipefail
build=$1
scratch=$2
other=$3
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$scratch"
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
set +e
out=$(cmake -S "$here" -B "$scratch/build" -DCMAKE_PREFIX_PATH="$scratch/prefix;$other" 2>&1)
code=$?
set -e
echo "$out"
if [[ $code -eq 0 ]]; then
  echo "mismatch: configuring against $other succeeded; expected daifu to refuse it" >&2
  exit 1
fi
if ! grep -q "daifu was built against LibTorch" <<<"$out"; then
  echo "mismatch: configuring failed, but without daifu's message about the LibTorch version" >&2
  exit 1
fi
