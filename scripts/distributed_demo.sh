#!/usr/bin/env bash
# Data-parallel Fashion-MNIST with N ranks on 127.0.0.1 over c10d Gloo (default 2), with faults
# injected on rank 1 only; every rank repairs them the same way (docs/distributed.md).
# Usage: scripts/distributed_demo.sh [N] [fashion_mnist_ddp options, e.g. --steps 600]
#   DAIFU_DEMO_FAULTS   rank 1's plan (default "transient@40, nan_data@90, oom@120")
#   DAIFU_DEMO_WORKPLACE  (default daifu_workplace_ddp; rank r writes rank-r/ in it)
#   DAIFU_DEMO_BIN        the fashion_mnist_ddp to run (default build/'s; with DAIFU_DEMO_NO_BUILD=1)
set -euo pipefail
cd "$(dirname "$0")/.."
world=${1:-2}
shift || true
if ((world < 2)); then
  echo "distributed_demo: needs at least 2 ranks (the faults go to rank 1)" >&2
  exit 2
fi
[[ -n "${DAIFU_DEMO_NO_BUILD:-}" ]] || scripts/setup.sh --target fashion_mnist_ddp --target daifu_cli build >/dev/null
bin=${DAIFU_DEMO_BIN:-build/examples/fashion_mnist_ddp/fashion_mnist_ddp}
workplace=${DAIFU_DEMO_WORKPLACE:-daifu_workplace_ddp}
faults=${DAIFU_DEMO_FAULTS-"transient@40, nan_data@90, oom@120"}
rm -rf "$workplace"
mkdir -p "$workplace"
port=$((20000 + RANDOM % 20000))
echo "distributed_demo: $world ranks on 127.0.0.1:$port, faults on rank 1: ${faults:-none}, workplace $workplace"
pids=()
for ((r = 0; r < world; r++)); do
  plan=""
  if ((r == 1)); then plan=$faults; fi
  DAIFU_INJECT="$plan" OMP_NUM_THREADS=1 "$bin" --rank "$r" --world "$world" --port "$port" \
    --workplace "$workplace" "$@" >"$workplace/rank-$r.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
for ((r = 0; r < world; r++)); do
  echo "== rank $r ($workplace/rank-$r.log) =="
  grep -v "Logging before InitGoogleLogging" "$workplace/rank-$r.log" || true
done
exit $status
