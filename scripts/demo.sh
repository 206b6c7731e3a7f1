#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains the guarded Fashion-MNIST example
# with crashes injected (DAIFU_INJECT, or the example's own demo plan) and repaired in place.
# Extra arguments go to the example (e.g. --epochs 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --target fashion_mnist --target daifu_cli build
exec build/examples/fashion_mnist/fashion_mnist --workplace daifu_workplace "$@"
