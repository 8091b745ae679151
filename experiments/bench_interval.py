"""Does a measurement's 95 % interval cover the run-to-run variation? (issue 15: an interval that means what it says)

Measures one network N times, each time in a fresh Python process (``measure_onnx`` as ``nas latency
measure`` calls it), alternating protocols run by run so that each sees the same host conditions:
protocol ``1`` is the single-session protocol (CI from one session's samples), the default
``MeasureConfig.sessions`` the multi-session one (CI over the session medians), ``S:SECONDS``
times S sessions for exactly that long (``1:10``: one session for 10 s, to tell "more sessions" from
"more time"), and ``anchor=NAME`` the anchored measurement (``nas latency measure --anchor NAME``:
interleaved ratio to NAME × NAME's reference latency stored for this device, measured by the first such
run if there is none: ``nas latency measure NAME --anchor NAME --remeasure-anchor`` renews it); for it the
coverage is also given with the shared reference held fixed (the ratio's interval alone).
For each protocol it reports how often one run's interval contains another run's
median (over all ordered pairs; goal >= 90 %), the CV of the N medians (goal <= 1 %), the mean
relative half-width, and the wall time per measurement. The 1-minute load average
(``/proc/loadavg``) is recorded before each run: the machine is shared, and measurements hold the
device lock, so they never overlap each other but may overlap other work.

    python experiments/bench_interval.py --runs 20 --out runs/bench_interval.jsonl

Resumable: rows already in ``--out`` are kept and only the missing runs are measured.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = """
import json, sys
from latency.measure import MeasureConfig, measure_onnx
if sys.argv[2].startswith("anchor="):
    from latency.anchored import measure_anchored_one
    from search_spaces import resolve_arch
    m = measure_anchored_one(sys.argv[1], resolve_arch(sys.argv[2][7:]).replace(resolution=int(sys.argv[3])),
                             MeasureConfig())
    print(json.dumps({"median_ms": m.median_ms, "ci_low_ms": m.ci_low_ms, "ci_high_ms": m.ci_high_ms,
                      "relative_ci": [m.relative_ci_low_ms, m.relative_ci_high_ms], "ratio": m.ratio,
                      "ci_confidence": m.ci_confidence, "wall_s": m.paired.wall_s, "n_pairs": m.paired.n_pairs,
                      "reference_ms": m.reference.median_ms, "reference_ci": [m.reference.ci_low_ms,
                      m.reference.ci_high_ms], "stop_reason": m.paired.stop_reason, "contended": m.paired.contended}))
    sys.exit(0)
sessions, _, cap = sys.argv[2].partition(":")
kwargs = {"time_cap_s": float(cap), "target_rel_ci": 1e-6, "max_runs": 10**6} if cap else {}
m = measure_onnx(sys.argv[1], MeasureConfig(sessions=int(sessions), **kwargs))
print(json.dumps({"median_ms": m.median_ms, "ci_low_ms": m.ci_low_ms, "ci_high_ms": m.ci_high_ms,
                  "ci_confidence": m.ci_confidence, "n_samples": m.n_samples, "wall_s": m.wall_s,
                  "timed_s": m.timed_s, "sessions": m.sessions, "session_medians_ms": m.session_medians_ms,
                  "within_ci": [m.within_ci_low_ms, m.within_ci_high_ms], "stop_reason": m.stop_reason,
                  "contended": m.contended}))
"""


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def coverage(rows: list[dict], interval) -> float:
    """How often one run's interval (``interval(row)`` → (low, high)) contains another run's median."""
    pairs = hits = 0
    for i, r in enumerate(rows):
        low, high = interval(r)
        for j, other in enumerate(rows):
            if i != j:
                pairs += 1
                hits += low <= other["median_ms"] <= high
    return hits / pairs if pairs else float("nan")


def summarize(rows: list[dict]) -> dict:
    medians = [r["median_ms"] for r in rows]
    return {
        "runs": len(rows),
        "coverage_of_other_medians": coverage(rows, lambda r: (r["ci_low_ms"], r["ci_high_ms"])),
        # anchored runs: the interval with the (shared) reference held fixed, the ratio's alone
        "coverage_relative": coverage(rows, lambda r: r["relative_ci"]) if all("relative_ci" in r for r in rows)
        else None,
        "cv_of_medians": statistics.stdev(medians) / statistics.fmean(medians) if len(rows) > 1 else float("nan"),
        "median_ms": statistics.median(medians),
        "min_max_ms": [min(medians), max(medians)],
        "mean_rel_half_width": statistics.fmean(
            max(r["median_ms"] - r["ci_low_ms"], r["ci_high_ms"] - r["median_ms"]) / r["median_ms"] for r in rows),
        "mean_wall_s": statistics.fmean(r["wall_s"] for r in rows),
        "mean_process_s": statistics.fmean(r["process_s"] for r in rows),
        "load1_min_max": [min(r["load1"] for r in rows), max(r["load1"] for r in rows)],
        "contended_runs": sum(bool(r["contended"]) for r in rows),
    }


SESSION_VARIANTS = {
    "default": {},
    "no-arena": {"enable_cpu_mem_arena": False},
    "no-mem-pattern": {"enable_mem_pattern": False},
}


def session_effect(model: Path, trials: int, pairs: int = 60, burst: int = 3) -> dict:
    """Size of the between-session effect, free of host drift: two sessions of the same model, created
    side by side in one process and timed in alternating (ABBA) bursts; the spread of log(median A /
    median B) over trials, divided by sqrt(2), is the SD of one session's level. Per variant of the
    session options (memory arena, memory pattern), interleaved trial by trial."""
    import numpy as np
    import onnxruntime as ort

    from latency.device import device_lock
    from latency.measure import MeasureConfig

    def session(options: dict):
        o = ort.SessionOptions()
        o.intra_op_num_threads = o.inter_op_num_threads = 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        o.log_severity_level = 3
        for k, v in options.items():
            setattr(o, k, v)
        s = ort.InferenceSession(str(model), sess_options=o, providers=["CPUExecutionProvider"])
        x = {s.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
        return lambda: s.run(None, x)

    logs: dict[str, list[float]] = {v: [] for v in SESSION_VARIANTS}
    with device_lock(MeasureConfig().fingerprint(), timeout_s=600):
        for _ in range(trials):
            for name, options in SESSION_VARIANTS.items():
                a, b = session(options), session(options)
                for _ in range(10):
                    a(), b()
                ta, tb = [], []
                for i in range(pairs):
                    for run, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
                        run()  # untimed: the other session's cache state
                        for _ in range(burst):
                            t0 = time.perf_counter_ns()
                            run()
                            out.append(time.perf_counter_ns() - t0)
                logs[name].append(math.log(statistics.median(ta) / statistics.median(tb)))
    return {name: {"trials": len(v), "session_sd": statistics.stdev(v) / math.sqrt(2),
                   "max_abs_log_ratio": max(abs(x) for x in v)} for name, v in logs.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="mobilenetv3_large", help="registered network (default mobilenetv3_large)")
    parser.add_argument("--runs", type=int, default=20, help="independent runs per protocol (default 20)")
    parser.add_argument("--protocols", nargs="+", default=None,
                        help="protocols to compare, SESSIONS, SESSIONS:SECONDS (timed for exactly that long, "
                             "e.g. 1:10 = one session for 10 s) or anchor=NAME (anchored on NAME); default: 1 and "
                             "MeasureConfig's default")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_interval.jsonl"), help="rows (JSON lines)")
    parser.add_argument("--session-effect", type=int, metavar="TRIALS", default=0,
                        help="instead: size of the between-session effect (two sessions side by side, interleaved) "
                             "for each session-option variant, over TRIALS pairs of sessions")
    args = parser.parse_args(argv)

    from latency.measure import MeasureConfig
    from search_spaces import resolve_arch
    from search_spaces.export import export_onnx

    protocols = args.protocols or [str(n) for n in sorted({1, MeasureConfig().sessions})]
    spec = resolve_arch(args.arch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    rows = [r for r in rows if r["arch"] == args.arch]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.onnx"
        export_onnx(spec, model)
        if args.session_effect:
            load = load1()
            effect = session_effect(model, args.session_effect)
            print(f"{args.arch}: between-session SD (drift-free), load {load:.2f} -> {load1():.2f}")
            for name, e in effect.items():
                print(f"  {name:<15} {e['session_sd']:.2%} over {e['trials']} pairs of sessions "
                      f"(largest |log ratio| {e['max_abs_log_ratio']:.2%})")
            return 0
        for run in range(args.runs):
            for sessions in protocols:
                if any(r["run"] == run and r["protocol"] == sessions for r in rows):
                    continue
                load = load1()
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-c", WORKER, str(model), sessions, str(spec.resolution)],
                                      capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return 1
                row = {"arch": args.arch, "run": run, "load1": load, "process_s": time.perf_counter() - t0,
                       **json.loads(proc.stdout.strip().splitlines()[-1]), "protocol": sessions}
                rows.append(row)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"run {run:2d} protocol {sessions}: {row['median_ms']:.3f} ms [{row['ci_low_ms']:.3f}, "
                      f"{row['ci_high_ms']:.3f}]  wall {row['wall_s']:.1f} s  load {load:.2f}", flush=True)
    print(f"{args.arch}, {args.runs} fresh processes per protocol, interleaved")
    result = {}
    for sessions in protocols:
        s = summarize([r for r in rows if r["protocol"] == sessions])
        result[sessions] = s
        print(f"protocol {sessions}: coverage of other runs' medians {s['coverage_of_other_medians']:.1%}, "
              f"CV of medians {s['cv_of_medians']:.2%}, medians {s['min_max_ms'][0]:.3f}-{s['min_max_ms'][1]:.3f} ms, "
              f"mean CI half-width {s['mean_rel_half_width']:.2%}, {s['mean_wall_s']:.1f} s per measurement "
              f"({s['mean_process_s']:.1f} s with process start), load {s['load1_min_max'][0]:.2f}-"
              f"{s['load1_min_max'][1]:.2f}, contended runs {s['contended_runs']}"
              + (f"; coverage with the reference held fixed {s['coverage_relative']:.1%}"
                 if s.get("coverage_relative") is not None else ""))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
