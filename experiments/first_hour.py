"""A new user's first `nas search`, timed from the outside: how long until the first line of output, the
longest silence between lines (overall, and until the first trial's result: after it, a line comes
with each result and "training trial(s) ..." after a minute without one), and whether the run's wall
time is one figure (console, log.txt, elapsed.json, the report).

    python experiments/first_hour.py                       # the README's main job: nas search --target-ms 60
    python experiments/first_hour.py -- --trials 2 --steps 20   # anything after -- goes to nas search

The cache folder (HWNAS_CACHE_DIR) is a fresh temporary one unless --cache-dir is given, so the latency
table is built and calibrated as on a fresh machine. Prints one line per output line (seconds since the
start, the line) and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAS = str(Path(sys.executable).with_name("nas"))
WALL = re.compile(r"(\d+) trials completed, (\d+) failed, in ([\d.]+) min")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-ms", default="60", help="the search's --target-ms (default 60)")
    parser.add_argument("--cache-dir", help="HWNAS_CACHE_DIR (default: a fresh temporary folder)")
    parser.add_argument("--run-dir", help="run directory (default: in a temporary folder)")
    parser.add_argument("extra", nargs="*", help="more `nas search` options (after --)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="first-hour-"))
    cache = args.cache_dir or str(work / "cache")
    run = Path(args.run_dir or work / "run")
    cmd = [NAS, "search", "--target-ms", args.target_ms, "--run-dir", str(run), *args.extra]
    env = {**os.environ, "HWNAS_CACHE_DIR": cache}
    print(f"$ HWNAS_CACHE_DIR={cache} {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    stamps: list[tuple[float, str]] = []
    for line in proc.stdout:
        t = time.monotonic() - t0
        stamps.append((t, line.rstrip("\n")))
        print(f"{t:7.1f}s  {line}", end="", flush=True)
    proc.wait()
    total = time.monotonic() - t0
    times = [t for t, _ in stamps]
    gaps = [b - a for a, b in zip([0.0, *times], times)]
    first_result = next((i for i, (_, line) in enumerate(stamps) if line.startswith("[1/")), len(stamps))
    gaps_before = gaps[:first_result + 1]
    console = [m.group(3) for _, line in stamps if (m := WALL.search(line))]
    log = WALL.findall((run / "log.txt").read_text()) if (run / "log.txt").exists() else []
    elapsed = json.loads((run / "elapsed.json").read_text())["wall_s"] if (run / "elapsed.json").exists() else None
    report = None
    env_csv = run / "report" / "environment.csv"
    if env_csv.exists():
        with open(env_csv, newline="") as f:
            report = next((r[run.name] for r in csv.DictReader(f) if r["setting"] == "wall time"), None)
    summary = {
        "exit_status": proc.returncode,
        "first_line_s": round(times[0], 1) if times else None,
        "first_line": stamps[0][1] if stamps else None,
        "longest_silence_s": round(max(gaps), 1) if gaps else None,
        "longest_silence_before": stamps[gaps.index(max(gaps))][1] if gaps else None,
        "longest_silence_until_first_result_s": round(max(gaps_before), 1) if gaps_before else None,
        "first_trial_result_s": round(times[first_result], 1) if first_result < len(stamps) else None,
        "process_wall_min": round(total / 60, 2),
        "wall_time_console_min": console,
        "wall_time_log_min": [m[2] for m in log],
        "wall_time_elapsed_json_min": round(elapsed / 60, 1) if elapsed is not None else None,
        "wall_time_report": report,
        "run_dir": str(run),
    }
    print(json.dumps(summary, indent=2))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
