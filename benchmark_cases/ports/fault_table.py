#!/usr/bin/env python3
"""A ported PyTorch example (examples/mnist_dataloader: mnist or dcgan) under every DAIFU_INJECT fault.

Each repetition runs, for every row (no fault, then each crash fault at one step), the plain
program and right after it the guarded one, each in a fresh folder, and reads what the program
printed (mnist: test loss and accuracy; dcgan: the last D and G losses) and what its journal
says (repairs, unrecovered). Prints a markdown table: fault, finished runs, the repairs, quality
against the plain run, and the guarded run's wall time against the plain run just before it
(median [min, max] over repetitions).

  benchmark_cases/ports/fault_table.py [--program mnist|dcgan] [--build build] [--reps 3] [--step N]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time

FAULTS = ["transient", "io", "oom", "shape", "dtype", "index", "path", "nan_data", "nan_loss", "api",
          "contention", "illegal_address", "unknown"]
# What each program prints at the end, its arguments, the step faults strike at by default.
PROGRAMS = {
    "mnist": {"result": re.compile(r"Test set: Average loss: ([0-9.naif]+) \| Accuracy: ([0-9.]+)"),
              "quality": "test loss / accuracy", "args": [], "step": 300},
    # 3,200 images: 50 batches, ~8 s a run on 2 cores.
    "dcgan": {"result": re.compile(r"Final D_loss: ([0-9.naif]+) \| G_loss: ([0-9.naif]+)"),
              "quality": "last D loss / G loss", "args": ["1", "3200"], "step": 25},
}


def run(binary, args, result, inject):
    with tempfile.TemporaryDirectory(prefix="daifu-port-") as cwd:
        env = dict(os.environ)
        if inject is not None:
            env["DAIFU_INJECT"] = inject
        started = time.monotonic()
        proc = subprocess.run([binary] + args, cwd=cwd, env=env,
                              capture_output=True, text=True)
        wall = time.monotonic() - started
        found = result.findall(proc.stdout.replace("\r", "\n"))
        out = {"rc": proc.returncode, "wall": wall,
               "quality": tuple(float(v) for v in found[-1]) if found else None,
               "repairs": [], "unrecovered": None}
        journal = os.path.join(cwd, "daifu_workplace", "journal.jsonl")
        if os.path.exists(journal):
            with open(journal) as f:
                for line in f:
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue
                    if e.get("event") == "repair":
                        out["repairs"].append(f'{e["surgery"]}: {e["action"]}')
                    elif e.get("event") == "unrecovered":
                        out["unrecovered"] = e.get("reason", "")
        return out


def spread(values, fmt):
    if not values:
        return "-"
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}, {fmt(max(values))}]"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--program", choices=sorted(PROGRAMS), default="mnist")
    p.add_argument("--build", default="build")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--step", type=int)
    args = p.parse_args()
    program = PROGRAMS[args.program]
    step = args.step if args.step is not None else program["step"]
    folder = os.path.abspath(os.path.join(args.build, "examples/mnist_dataloader"))
    plain_bin, guarded_bin = os.path.join(folder, args.program + "_plain"), os.path.join(folder, args.program)
    argv = [os.path.join(folder, "data")] + program["args"] if program["args"] else []
    result = program["result"]
    rows = ["none"] + FAULTS
    plain, guarded = {r: [] for r in rows}, {r: [] for r in rows}
    for rep in range(args.reps):
        for r in rows:
            plain[r].append(run(plain_bin, argv, result, None))
            guarded[r].append(run(guarded_bin, argv, result, "" if r == "none" else f"{r}@{step}"))
            g = guarded[r][-1]
            print(f"# rep {rep} {r}: rc {g['rc']} {g['quality']} {g['wall']:.1f} s "
                  f"{g['repairs']} {g['unrecovered'] or ''}", flush=True)
    all_plain = [p for r in rows for p in plain[r]]
    ref = all_plain[0]
    assert all(p["quality"] == ref["quality"] for p in all_plain), "plain runs differ"
    plain_quality = " / ".join(str(v) for v in ref["quality"])
    print(f"\nplain ({len(all_plain)} runs): {program['quality']} {plain_quality}, "
          f"wall {spread([p['wall'] for p in all_plain], lambda v: f'{v:.1f} s')}\n")
    print(f"| fault | finished | repair | {program['quality']} (plain: {plain_quality}) | time vs plain |")
    print("|---|---|---|---|---|")
    for r in rows:
        runs = guarded[r]
        done = [g for g in runs if g["rc"] == 0]
        repairs = sorted({", ".join(g["repairs"]) or "-" for g in runs})
        if not done:
            why = runs[0]["unrecovered"] or f"exit {runs[0]['rc']}"
            quality = f"unrecovered: {why[:90]}"
        else:
            quality = " ; ".join(sorted({" / ".join(str(v) for v in g["quality"]) for g in done}))
        ratio = [g["wall"] / p["wall"] for g, p in zip(runs, plain[r]) if g["rc"] == 0]
        print(f"| `{r}` | {len(done)}/{len(runs)} | {' / '.join(repairs)} | {quality} | "
              f"{spread([100 * (x - 1) for x in ratio], lambda v: f'{v:+.1f}%')} |")


if __name__ == "__main__":
    main()
