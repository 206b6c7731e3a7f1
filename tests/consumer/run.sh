#!/usr/bin/env bash
# Installs the built daifu into a scratch prefix, then configures, builds and runs the consumer
# project against it with find_package(daifu) and the LibTorch daifu was built with.
# Usage: run.sh BUILD_DIR SCRATCH_DIR TORCH_PREFIX [CXX_FLAGS]
set -euo pipefail
build=$1
scratch=$2
torch=$3
flags=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$scratch"
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
cmake -S "$here" -B "$scratch/build" -DCMAKE_PREFIX_PATH="$scratch/prefix;$torch" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
cmake --build "$scratch/build" >/dev/null
"$scratch/build/consumer" "$scratch/workplace"
# The installed CLI runs and reads that workplace: nothing is paused there (exit code 2).
set +e
"$scratch/prefix/bin/daifu" status -w "$scratch/workplace"
code=$?
set -e
if [[ $code -ne 2 ]]; then
  echo "consumer: the installed daifu CLI exited $code, expected 2 (no paused session)" >&2
  exit 1
fi
