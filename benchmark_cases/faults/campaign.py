#!/usr/bin/env python3
"""The silent-fault campaign (docs/silent-faults.md#the-campaign).

Seed 002's experiment on the crash benchmark's workloads: each injection is one value fault
drawn at random (a step, a layer output, a gradient or a weight, a fault model of the ISCA'23
study, transient or permanent), reproducible from the campaign seed and its id, trained twice by
fault_campaign_run: plain (nothing looks) and guarded (daifu's default detectors and repairs).
Clean runs with other seeds give the seed-to-seed spread that defines "within"; clean guarded
runs count false alarms. Runs go `--jobs` at a time; every finished run is appended to
OUT/runs.jsonl, so a campaign that was stopped resumes where it was. Prints the tables.

  campaign.py --runner build/benchmark_cases/faults/fault_campaign_run --out DIR
              [--seed 1] [--injections 2000] [--workloads cnn,lm,gan] [--clean-seeds 8]
              [--fp-steps 100000] [--fp-length 10] [--jobs 2]
  campaign.py --smoke --runner ... --out DIR     # a few short runs: the pipeline works
  campaign.py --report --out DIR                 # the tables of what OUT/runs.jsonl holds
  campaign.py --recheck OLD/runs.jsonl --runner ... --out DIR
      # after a change to the detectors: the guarded runs again, of the injections of an earlier
      # campaign that plain training did not mask or that its guarded run hurt
"""
import argparse
import concurrent.futures
import json
import os
import random
import subprocess
import sys
import threading

# The ISCA'23 software fault models the injector has: a random bit flip (RBFLIP), a random
# value (RD), zero (ZERO), another element's value (INPUT/WT: a wrong operand); 1 or 16 elements.
MODELS = ["flip", "random", "zero", "copy"]
COUNTS = [1, 16]


def draw(rng, targets, steps):
    """One injection: the plan item for fault_campaign_run --fault, and its seed."""
    step = rng.randrange(steps)
    kind = rng.choices(["out", "grad", "param"], weights=[4, 4, 2])[0]
    permanent = rng.random() < 0.25
    if kind == "out":
        where = rng.choice(targets["probes"])
    elif kind == "grad":  # backward pass: the gradient of a layer output or of a weight
        where = rng.choice([p for p in targets["probes"] if p != "input"] + targets["params"])
    else:
        where = rng.choice(targets["params"])
    model, count = rng.choice(MODELS), rng.choice(COUNTS)
    target = "param!" if kind == "param" and permanent else kind
    plan = f"{model}{'x16' if count == 16 else ''}:{target}:{where}@{step}{'*' if permanent else ''}"
    return {"fault": plan, "fault_seed": rng.getrandbits(32), "step": step, "target": kind,
            "where": where, "model": model, "count": count, "permanent": permanent}


class Campaign:
    def __init__(self, args):
        self.args = args
        os.makedirs(args.out, exist_ok=True)
        self.path = os.path.join(args.out, "runs.jsonl")
        self.lock = threading.Lock()
        self.done = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue  # a line cut short when the campaign was stopped
                    self.done[r["key"]] = r

    def targets(self, workload):
        out = subprocess.run([self.args.runner, "--targets", workload], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def run(self, key, meta, workload, mode, seed, steps, fault="", fault_seed=0):
        if key in self.done:
            return
        workplace = os.path.join(self.args.out, "workplaces", key.replace("/", "_"))
        cmd = [self.args.runner, "--workload", workload, "--mode", mode, "--seed", str(seed),
               "--workplace", workplace, "--steps", str(steps), "--fault", fault, "--fault-seed", str(fault_seed)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess(cmd, "timeout", "", f"no result after {self.args.timeout} s")
        if proc.returncode in (-2, -9, -15):  # stopped from outside (the campaign was interrupted): run it again
            return
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
        result = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
            "process_died": proc.returncode, "error": proc.stderr[-300:]}
        record = dict(meta, key=key, workload=workload, mode=mode, seed=seed, result=result)
        subprocess.run(["rm", "-rf", workplace])
        with self.lock:
            self.done[key] = record
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{len(self.done)} {key}: {summary(result)}", flush=True)


def summary(r):
    d = ",".join(sorted({x["detector"] for x in r.get("detections", [])}))
    return (f"quality {r.get('quality')} crashed {r.get('crashed')} nonfinite@{r.get('first_nonfinite_loss_step')} "
            f"detections [{d}] {r.get('wall_s', 0):.1f} s")


def jobs(args, campaign):
    """The runs of the campaign, in the order to run them: clean spread, injections, false alarms."""
    todo = []
    workloads = args.workloads.split(",")
    targets = {w: campaign.targets(w) for w in workloads}
    steps = {w: args.steps or targets[w]["steps"] for w in workloads}
    for w in workloads:
        for s in range(1, args.clean_seeds + 1):
            todo.append((f"clean/{w}/{s}", {"kind": "clean"}, w, "plain", s, steps[w]))
    per = {w: args.injections // len(workloads) + (i < args.injections % len(workloads)) for i, w in enumerate(workloads)}
    for i in range(max(per.values(), default=0)):
        for w in workloads:
            if i >= per[w]:
                continue
            inj = draw(random.Random(f"{args.seed}:{w}:{i}"), targets[w], steps[w])
            for mode in ("plain", "guarded"):
                todo.append((f"inj/{args.seed}/{w}/{i}/{mode}", dict(inj, kind="injection", id=i), w, mode, 1,
                             steps[w], inj["fault"], inj["fault_seed"]))
    # False alarms: clean guarded runs, --fp-length times as long as the others, with seeds past
    # the spread's, until the workloads share --fp-steps steps.
    for w in workloads:
        length = steps[w] * args.fp_length
        for s in range(-(-args.fp_steps // (length * len(workloads)))):
            seed = 1000 + s
            todo.append((f"fp/{w}/{seed}/{length}", {"kind": "false_positive"}, w, "guarded", seed, length))
    return todo


def rechecks(args, campaign):
    """The guarded runs of the injections whose plain runs --recheck kept in OUT/runs.jsonl."""
    plains = [r for r in campaign.done.values() if r["kind"] == "injection" and r["mode"] == "plain"]
    steps = {w: args.steps or campaign.targets(w)["steps"] for w in {r["workload"] for r in plains}}
    todo = []
    for r in plains:
        meta = {k: v for k, v in r.items() if k not in ("key", "workload", "mode", "seed", "result")}
        todo.append((r["key"].rsplit("/", 1)[0] + "/guarded", meta, r["workload"], "guarded", r["seed"],
                     steps[r["workload"]], r["fault"], r["fault_seed"]))
    return todo


def fmt(q):
    return "n/a" if q is None else f"{q:.4g}"


def within(q, reference, width, higher):
    """Whether quality `q` is worse than `reference` by no more than `width`."""
    return q is not None and ((reference - q) if higher else (q - reference)) <= width


def classify(records, w, reference, width, higher):
    """The injections of workload `w` with both runs: (rows, not_applied, died), a row being
    (key, plain record, plain outcome, guarded outcome, guarded result)."""
    pairs = {}  # inj/<seed>/<workload>/<id> -> {"plain": record, "guarded": record}
    for r in records.values():
        if r["kind"] == "injection" and r["workload"] == w:
            pairs.setdefault(r["key"].rsplit("/", 1)[0], {})[r["mode"]] = r
    plain_outcomes, rows, not_applied, died = {}, [], 0, []
    for i, p in sorted(pairs.items()):
        if "plain" not in p or "guarded" not in p:
            continue
        pr, gr = p["plain"]["result"], p["guarded"]["result"]
        if "process_died" in pr or "process_died" in gr:
            died.append(i)  # not the fault's outcome: a runner that did not finish
            continue
        if pr.get("injected", 0) == 0 and not pr.get("crashed"):
            not_applied += 1  # its target never came (a gradient that did not flow there)
            continue
        if pr.get("crashed"):
            outcome = "crash"
        elif pr.get("first_nonfinite_loss_step", -1) >= 0 or not pr.get("weights_finite", True) or pr.get("quality") is None:
            outcome = "inf_nan"
        elif within(pr["quality"], reference, width, higher):
            outcome = "masked"
        else:
            outcome = "slow_degrade"
        # A detection before the fault's step is not about the fault.
        detections = [d for d in gr.get("detections", []) if d["step"] >= p["plain"]["step"]]
        gr = dict(gr, detections=detections)
        detected = bool(detections)
        ok = not gr.get("crashed") and gr.get("weights_finite", False) and within(gr.get("quality"), reference, width, higher)
        if outcome == "masked":
            g = "false_alarm" if detected else "quiet"
            if not ok:
                g = "hurt"  # masked plain, but the guarded run ended outside the spread
        elif detected:
            g = "recovered" if ok else "detected_not_recovered"
        else:
            g = "fine_undetected" if ok else "missed"
        rows.append((i, p["plain"], outcome, g, gr))
        plain_outcomes.setdefault(outcome, {}).setdefault(g, 0)
        plain_outcomes[outcome][g] += 1
    return rows, plain_outcomes, not_applied, died


def load(path):
    records = {}
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut short when the campaign was stopped
            records[r["key"]] = r
    return records


def spread(records, w):
    """(reference, width, higher_is_better) of workload w's clean runs; None without them."""
    clean = [r["result"] for r in records.values() if r["kind"] == "clean" and r["workload"] == w]
    if not clean or any(c.get("quality") is None for c in clean):
        return None
    qs = [c["quality"] for c in clean]
    # The injections train with seed 1: their reference is the clean run of seed 1.
    reference = next((c["quality"] for c in clean if c["seed"] == 1), None)
    return None if reference is None else (reference, max(qs) - min(qs), clean[0]["higher_is_better"])


def recheck_selection(path):
    """For --recheck: the clean runs of a finished campaign, and the plain runs of its injections
    that plain training did not mask or whose guarded run was hurt."""
    records = load(path)
    keep = [r for r in records.values() if r["kind"] == "clean"]
    for w in sorted({r["workload"] for r in records.values()}):
        s = spread(records, w)
        if s is None:
            continue
        rows = classify(records, w, *s)[0]
        keep += [plain for _, plain, outcome, g, _ in rows if outcome != "masked" or g == "hurt"]
    return keep


def report(out):
    records = load(os.path.join(out, "runs.jsonl"))
    workloads = sorted({r["workload"] for r in records.values()})
    lines = []
    for w in workloads:
        s = spread(records, w)
        if s is None:
            lines.append(f"{w}: no clean spread yet (or no clean run of seed 1)")
            continue
        reference, width, higher = s
        clean = [r["result"] for r in records.values() if r["kind"] == "clean" and r["workload"] == w]
        qs = [c["quality"] for c in clean]
        name = clean[0]["quality_name"]
        lines.append(f"\n### {w}: {name}; clean runs, {len(qs)} seeds: {min(qs):.4f} .. {max(qs):.4f} "
                     f"(spread {width:.4f}); seed 1: {reference:.4f}; within: at most {width:.4f} "
                     f"{'below' if higher else 'above'} seed 1\n")
        rows, plain_outcomes, not_applied, died = classify(records, w, reference, width, higher)
        n = len(rows)
        lines.append(f"{n} injections ({not_applied} more never applied: their target was not reached"
                     + (f"; {len(died)} whose runner died: {died[:5]}" if died else "") + ")\n")
        lines.append("| plain outcome | runs | guarded: " + " / ".join(
            ["recovered", "detected_not_recovered", "fine_undetected", "missed", "quiet", "false_alarm", "hurt"]) + " |")
        lines.append("|---|---|---|")
        for o in ["masked", "inf_nan", "slow_degrade", "crash"]:
            g = plain_outcomes.get(o, {})
            total = sum(g.values())
            cells = " / ".join(str(g.get(k, 0)) for k in
                               ["recovered", "detected_not_recovered", "fine_undetected", "missed", "quiet", "false_alarm", "hurt"])
            lines.append(f"| {o} | {total} | {cells} |")
        bad = [r for r in rows if r[2] != "masked"]
        if bad:
            good = sum(1 for r in bad if r[3] in ("recovered", "fine_undetected"))
            det = sum(1 for r in bad if r[4].get("detections"))
            lines.append(f"\nnot masked: {len(bad)}; ended guarded within the spread: {good} ({100 * good / len(bad):.1f}%); "
                         f"detected: {det} ({100 * det / len(bad):.1f}%)")
            lines.append("")
            for r in bad:
                first = r[4]["detections"][0] if r[4].get("detections") else None
                seen = f"{first['detector']} at step {first['step']}" if first else "nothing"
                lines.append(f"- {r[2]} -> {r[3]}: `{r[1]['fault']}`: plain {fmt(r[1]['result'].get('quality'))}, "
                             f"guarded {fmt(r[4].get('quality'))}; detected: {seen}")
        fp = [r["result"] for r in records.values() if r["kind"] == "false_positive" and r["workload"] == w]
        steps = sum(r.get("committed_steps", 0) for r in fp)
        alarms = sum(len(r.get("detections", [])) for r in fp)
        if fp:
            lines.append(f"\nclean guarded runs: {len(fp)}, {steps} steps, {alarms} detections "
                         f"({10000 * alarms / max(steps, 1):.2f} per 10,000 steps)")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runner")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--injections", type=int, default=2000)
    p.add_argument("--workloads", default="cnn,lm,gan")
    p.add_argument("--clean-seeds", type=int, default=8)
    p.add_argument("--fp-steps", type=int, default=100000)
    p.add_argument("--fp-length", type=int, default=10, help="false-alarm runs are this many times longer")
    p.add_argument("--steps", type=int, default=0, help="steps per run; 0: the workload's")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=int, default=900, help="seconds one run may take")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--report", action="store_true")
    p.add_argument("--recheck", metavar="OLD_RUNS_JSONL")
    args = p.parse_args()
    if args.report:
        if not os.path.exists(os.path.join(args.out, "runs.jsonl")):
            sys.exit(f"no campaign in {args.out}: {os.path.join(args.out, 'runs.jsonl')} does not exist")
        print(report(args.out))
        return
    if args.smoke:  # every workload: 2 clean seeds, 1 injection, 1 short false-alarm run
        args.steps, args.injections, args.clean_seeds, args.fp_steps, args.fp_length = 12, 3, 2, 36, 1
        subprocess.run(["rm", "-rf", args.out])
    if args.recheck:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "runs.jsonl")
        if not os.path.exists(path):
            with open(path, "w") as f:
                for r in recheck_selection(args.recheck):
                    f.write(json.dumps(r) + "\n")
    campaign = Campaign(args)
    todo = rechecks(args, campaign) if args.recheck else jobs(args, campaign)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs)
    try:
        for f in [pool.submit(campaign.run, *job) for job in todo]:
            f.result()
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    text = report(args.out)
    print(text)
    if args.smoke:
        records = list(campaign.done.values())
        broken = [r["key"] for r in records if r["result"].get("process_died") is not None]
        assert not broken, f"runs that died: {broken}"
        assert sum(r["kind"] == "injection" for r in records) == 6, "3 injections, plain and guarded"
        assert all(r["result"].get("injected", 0) + r["result"].get("injection_missed", 0) >= 1
                   for r in records if r["kind"] == "injection"), "a fault that was neither injected nor missed"
        assert "; clean runs, 2 seeds: " in text and "| masked |" in text, text


if __name__ == "__main__":
    sys.exit(main())
