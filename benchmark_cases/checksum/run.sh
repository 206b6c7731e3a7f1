#!/usr/bin/env bash
# Builds and runs xxh64_bench.cpp: libxxhash's XXH64 against the hand-written one of commit
# a5e5e75 (taken from git, so this needs a clone with history), g++ -O2, one core.
# Usage: benchmark_cases/checksum/run.sh   (needs g++ and libxxhash-dev: scripts/setup.sh installs them)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/snapshot"
git -C "$repo" show a5e5e75:src/snapshot/checksum.h |
  sed -e 's/namespace daifu::detail/namespace old_impl/' -e 's/DAIFU_API //' -e '/daifu\/export.h/d' >"$work/snapshot/checksum.h"
git -C "$repo" show a5e5e75:src/snapshot/checksum.cpp | sed 's/namespace daifu::detail/namespace old_impl/' >"$work/old.cpp"
g++ -O2 -std=c++17 -I"$work" "$here/xxh64_bench.cpp" "$work/old.cpp" -lxxhash -o "$work/bench"
"$work/bench"
