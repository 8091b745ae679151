"""Report generation time for a large search run (issue 6: "report generation time for a 200-trial run").

    python experiments/bench_report.py [--trials 200] [--run-dir DIR] [--repeats 3] [--out FILE.json]

1. Unless ``--run-dir`` already holds a finished search, make one with a real :func:`nas.search.run_search`
   at a tiny proxy budget (random searcher, 2 training steps, 500 training and 200 held-out images,
   latency predicted at 64² from a table kept next to the run directory), so that the run directory
   has exactly what ``nas search`` writes: trials.csv with ``--trials`` rows, pareto.csv, found.json, ...
2. Time :func:`hwnas.report.write_report` on it without reference training (``references=False``: only
   report generation is timed) ``--repeats`` times in this process, and ``nas report --no-references``
   as a command (Python start-up and imports included) as often; report the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAST_MEASURE = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2}


def make_run(run_dir: Path, trials: int) -> float:
    """A real search with ``trials`` trials at a tiny proxy budget; returns its wall time in seconds."""
    from evaluation.evaluate import EvalConfig
    from nas.search import SearchConfig, run_search

    eval_cfg = EvalConfig(holdout=200, train_subset=500, train={"steps": 2, "batch_size": 16, "threads": 1},
                          deploy_resolution=64, measure=FAST_MEASURE,
                          lut_path=str(run_dir.parent / "bench_report.sqlite"))
    cfg = SearchConfig(run_dir=str(run_dir), space="mobilenetv3", searcher="random", trials=trials, target_ms=1.0,
                       eval=eval_cfg)
    t0 = time.perf_counter()
    run_search(cfg, echo=lambda line: print(line, flush=True)
               if line.startswith(("space", "searcher", "re-")) else None)
    return time.perf_counter() - t0


def time_library(run_dir: Path, out_dir: Path, repeats: int) -> list[float]:
    from hwnas.report import write_report

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        write_report([run_dir], out_dir=out_dir, references=False)
        times.append(time.perf_counter() - t0)
    return times


def time_command(run_dir: Path, out_dir: Path, repeats: int) -> list[float]:
    nas = str(Path(sys.executable).with_name("nas"))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([nas, "report", str(run_dir), "--out", str(out_dir), "--no-references", "--json"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--run-dir", help="reuse (or create) this run directory (default: a temporary one)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench_report.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else Path(tmp) / "run"
        search_s = None
        if not (run_dir / "found.json").exists():
            search_s = make_run(run_dir, args.trials)
            print(f"search: {args.trials} trials in {search_s / 60:.1f} min")
        with open(run_dir / "trials.csv") as f:
            rows = sum(1 for _ in f) - 1
        lib = time_library(run_dir, Path(tmp) / "report", args.repeats)
        cmd = time_command(run_dir, Path(tmp) / "report", args.repeats)
        html = (Path(tmp) / "report" / "report.html").stat().st_size
    out = {"trials": rows, "search_s": search_s, "write_report_s": lib, "write_report_median_s": statistics.median(lib),
           "command_s": cmd, "command_median_s": statistics.median(cmd), "html_bytes": html}
    print(f"report of a {rows}-trial run: write_report median {out['write_report_median_s']:.2f} s "
          f"({', '.join(f'{t:.2f}' for t in lib)}); `nas report --no-references` median "
          f"{out['command_median_s']:.2f} s; report.html {html / 1e3:.0f} kB")
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
