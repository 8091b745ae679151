"""Accuracy of the default lookup table on unseen architectures, plain validation (issue 15, item 4).

    python experiments/bench_lut_accuracy.py [--threads 1] [--precision fp32] [--n 100] [--seed 1000]
                                             [--cache DIR] [--csv FILE] [--passes 1] [--refit 12,20,30]

1. builds (or reuses) the table exactly as ``nas search`` does with no extra flags
   (:func:`nas.search.ensure_calibration` on a default ``SearchConfig``: the space's seeds and random
   architectures drawn with seed 0, its layer entries and the space's corners), in a cache folder of
   its own (``--cache``, default ``/tmp/hwnas_bench_lut``; set as ``HWNAS_CACHE_DIR``) so that the
   user's table is not touched; the build time is written to ``<csv>.build.json``;
2. draws ``--n`` random ``mobilenetv3`` architectures with ``--seed`` (the calibration uses seed 0),
   predicts each from the warm table (timed) and measures it whole with ``measure_onnx`` (plain
   median, no anchor), appending one row per architecture to ``--csv`` as it goes, so a killed run
   goes on where it stopped;
3. prints the share within ±5 % and ±10 %, the median and max |error|, Kendall τ, the prediction
   time per architecture and the table build time, with the machine's load (``uptime``).

``--passes K`` measures every network K times, one pass over all of them after another: the errors are
then against the median of its passes, and the share of networks whose first two measurements lie
within ±5 % of each other is the ceiling any predictor can reach against one plain measurement on this
host. ``--refit N,...`` asks how many calibration networks the table needs: the calibration
(:func:`latency.lut_store.fit_calibration`, as a table fits it) is refitted on N of the validation
networks drawn at random (20 draws), the others are predicted, and the median [IQR] of their share
within ±5 % is printed; the calibration and the held-out networks were then measured in the same
window, so the host's drift between a build and a later validation is not in these figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FIELDS = ("i", "arch_id", "predicted_ms", "measured_ms", "error", "predict_ms", "load1", "measured_at", "sums", "pass")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"load {os.getloadavg()}"


def read_rows(path: Path) -> list[dict]:
    """The rows of ``path``; a file written before ``pass`` existed is rewritten with it (its rows: pass 0)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [{**r, "pass": r.get("pass") or "0"} for r in reader]
        old_header = "pass" not in (reader.fieldnames or ())
    if old_header:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)
    return rows


def pass_agreement(by_arch: dict[str, list[float]]) -> dict | None:
    """How far a network's first two measurements (``by_arch``: its measured ms, pass by pass) are apart:
    the ceiling of any prediction judged against one measurement (None with a single pass)."""
    diffs = [abs(m[1] - m[0]) / m[0] for m in by_arch.values() if len(m) >= 2]
    if not diffs:
        return None
    return {"networks": len(diffs), "within_5pct": sum(d <= 0.05 for d in diffs) / len(diffs),
            "within_10pct": sum(d <= 0.10 for d in diffs) / len(diffs), "median_abs_diff": statistics.median(diffs),
            "max_abs_diff": max(diffs)}


def refit(sizes: list[int], rows: list[dict], overhead_ms: float, draws: int = 20) -> dict:
    """For each N in ``sizes``: refit the table's calibration on N of ``rows`` (their sums and measured
    latency) drawn at random, ``draws`` times, and score the held-out rows (share within ±5 %)."""
    from collections import Counter

    from latency.lut_store import fit_calibration

    sums = [json.loads(r["sums"]) for r in rows]
    measured = [float(r["measured_ms"]) for r in rows]
    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        if not 3 <= n < len(rows):
            raise SystemExit(f"bench_lut_accuracy: error: --refit {n}: between 3 and {len(rows) - 1}")
        shares, models = [], Counter()
        for _ in range(draws):
            order = rng.permutation(len(rows))
            cal = fit_calibration([(sums[i], measured[i] - overhead_ms) for i in order[:n]])
            held = order[n:]
            shares.append(float(np.mean([abs(cal.predict(sums[i], overhead_ms) / measured[i] - 1) <= 0.05
                                         for i in held])))
            models[" ".join(cal.describe().split()[:2])] += 1  # "one factor", "per-kind factors"
        q1, med, q3 = np.percentile(shares, [25, 50, 75])
        out[n] = {"median": med, "q1": q1, "q3": q3, "draws": draws, "models": dict(models)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, choices=(1, 2), default=1)
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    ap.add_argument("--n", type=int, default=100, help="unseen architectures to validate on")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the unseen architectures (calibration: 0)")
    ap.add_argument("--cache", default="/tmp/hwnas_bench_lut", help="cache folder of the table (HWNAS_CACHE_DIR)")
    ap.add_argument("--csv", help="rows file (default: <cache>/accuracy_<threads>t_<precision>.csv)")
    ap.add_argument("--refit", default="", metavar="N,...",
                    help="also refit the calibration on N random validation networks (20 draws) and score the rest")
    ap.add_argument("--passes", type=int, default=1,
                    help="measure every network this many times, one pass over all of them after another (default 1); "
                         "the error is then against the median of its passes, and the passes' agreement is the "
                         "ceiling that one plain measurement allows")
    args = ap.parse_args(argv)
    if args.passes < 1:
        print(f"bench_lut_accuracy: error: --passes must be >= 1, got {args.passes}", file=sys.stderr)
        return 2
    if args.n < 2:
        print(f"bench_lut_accuracy: error: --n must be >= 2, got {args.n}", file=sys.stderr)
        return 2
    if args.seed == 0:
        print("bench_lut_accuracy: error: --seed 0 draws the calibration's own architectures", file=sys.stderr)
        return 2
    os.environ["HWNAS_CACHE_DIR"] = str(Path(args.cache).absolute())  # before anything reads the cache folder

    from evaluation.evaluate import EvalConfig, latency_table
    from latency.lut import entry_keys, kendall_tau
    from latency.measure import MeasureConfig, measure_onnx
    from nas.search import SEARCH_TRAIN, SearchConfig, ensure_calibration
    from search_spaces.export import export_onnx
    from search_spaces.spaces import get_space

    if args.precision == "int8":
        print("bench_lut_accuracy: error: --precision int8: the lookup table has fp32 entries only "
              "(int8 is measured whole, `nas latency measure --precision int8`)", file=sys.stderr)
        return 2
    mcfg = MeasureConfig(intra_op_threads=args.threads, precision=args.precision)
    measure = {} if mcfg == MeasureConfig() else mcfg.to_dict()  # {}: exactly what `nas search` uses by default
    cfg = SearchConfig(run_dir=str(Path(args.cache) / "unused_run"),
                       eval=EvalConfig(train=dict(SEARCH_TRAIN), measure=measure))
    csv_path = Path(args.csv or Path(args.cache) / f"accuracy_{args.threads}t_{args.precision}.csv")
    build_path = csv_path.with_name(csv_path.name + ".build.json")
    csv_path.parent.mkdir(parents=True, exist_ok=True)

    print(f"[build] {uptime()}", flush=True)
    t0 = time.monotonic()
    points_before = latency_table(cfg.eval).calibration.n_points
    ensure_calibration(cfg, get_space(cfg.space), echo=lambda line: print(line, flush=True))
    build_s = time.monotonic() - t0
    table = latency_table(cfg.eval)
    build = json.loads(build_path.read_text()) if build_path.exists() else {}
    if table.calibration.n_points != points_before or not build:  # a real build (not a warm reuse): record it
        build = {"build_s": build_s, "entries": table.store.count(), "calibration": table.calibration.describe(),
                 "uptime": uptime(), "table": str(table.path)}
        build_path.write_text(json.dumps(build, indent=1))
    print(f"[build] {build['build_s']:.0f} s, {build['entries']} entries; {build['calibration']}", flush=True)

    space = get_space(cfg.space)
    rng = np.random.default_rng(args.seed)
    specs = [space.decode(space.sample(rng)).replace(resolution=cfg.eval.deploy_resolution) for _ in range(args.n)]
    rows = read_rows(csv_path)
    done = {(r["arch_id"], int(r["pass"])) for r in rows}
    entry_s: list[float] = []  # seconds per entry measured during the validation (export included)
    new_file = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for n_pass, (i, spec) in ((p, e) for p in range(args.passes) for e in enumerate(specs)):
            if (spec.arch_id, n_pass) in done:
                continue
            t = time.perf_counter()
            _, _, sums, measured_now = table.raw_sum(spec)  # missing entries: not part of the warm prediction
            if measured_now:
                entry_s.append((time.perf_counter() - t) / measured_now)
            t = time.perf_counter()
            predicted = table.predict(spec, measure_missing=False).latency_ms
            predict_ms = (time.perf_counter() - t) * 1e3
            measured = measure_onnx(export_onnx(spec), mcfg).median_ms
            row = {"i": i, "arch_id": spec.arch_id, "predicted_ms": predicted, "measured_ms": measured,
                   "error": (predicted - measured) / measured, "predict_ms": predict_ms,
                   "load1": os.getloadavg()[0], "measured_at": time.strftime("%H:%M:%S", time.gmtime()),
                   "sums": json.dumps(sums), "pass": n_pass}  # sums: the calibration's features
            writer.writerow(row)
            f.flush()
            rows.append({k: str(v) for k, v in row.items()})
            print(f"  pass {n_pass + 1}/{args.passes} {i + 1}/{args.n} {spec.arch_id}: predicted {predicted:.3f} ms, "
                  f"measured {measured:.3f} ms, error {row['error']:+.1%}", flush=True)

    wanted = {s.arch_id for s in specs}
    rows = [r for r in rows if r["arch_id"] in wanted and int(r["pass"]) < args.passes]
    by_arch: dict[str, list[float]] = {}
    for r in sorted(rows, key=lambda r: int(r["pass"])):
        by_arch.setdefault(r["arch_id"], []).append(float(r["measured_ms"]))
    agreement = pass_agreement(by_arch)
    median_ms = {a: statistics.median(m) for a, m in by_arch.items()}
    rows = [{**r, "measured_ms": median_ms[a], "error": float(r["predicted_ms"]) / median_ms[a] - 1}
            for r in rows if int(r["pass"]) == 0 for a in [r["arch_id"]]]
    errors = [abs(float(r["error"])) for r in rows]
    tau = kendall_tau([float(r["predicted_ms"]) for r in rows], [float(r["measured_ms"]) for r in rows])
    summary = {
        "threads": args.threads, "precision": args.precision, "n": len(rows),
        "within_5pct": sum(e <= 0.05 for e in errors) / len(rows),
        "within_10pct": sum(e <= 0.10 for e in errors) / len(rows),
        "median_abs_error": statistics.median(errors), "max_abs_error": max(errors), "kendall_tau": tau,
        "mean_signed_error": statistics.fmean(float(r["error"]) for r in rows),
        "predict_ms_median": statistics.median(float(r["predict_ms"]) for r in rows),
        "build_s": build["build_s"], "calibration": build["calibration"], "uptime": uptime(),
        "space_entries": len(entry_keys(space.layer_keys())),
        "entry_s_median": statistics.median(entry_s) if entry_s else None,
        "load1_median": statistics.median(float(r["load1"]) for r in rows),
        "passes": args.passes, "pass_agreement": agreement,
    }
    print(f"[accuracy] {args.threads} thread(s), {args.precision}, {len(rows)} unseen architectures (seed "
          f"{args.seed}), plain validation: {summary['within_5pct']:.0%} within ±5 %, "
          f"{summary['within_10pct']:.0%} within ±10 %, median |error| {summary['median_abs_error']:.1%}, "
          f"max {summary['max_abs_error']:.1%}, Kendall τ {tau:.3f}, mean signed {summary['mean_signed_error']:+.1%}")
    if agreement:
        print(f"[passes] the same network measured in two passes: {agreement['within_5pct']:.0%} within ±5 % of each "
              f"other, {agreement['within_10pct']:.0%} within ±10 %, median |difference| "
              f"{agreement['median_abs_diff']:.1%}, max {agreement['max_abs_diff']:.1%} ({agreement['networks']} "
              f"networks); the errors above are against the median of the {args.passes} passes")
    print(f"[cost] prediction {summary['predict_ms_median']:.3f} ms per architecture (warm); table build "
          f"{build['build_s'] / 60:.1f} min ({build['entries']} entries, calibration included)")
    if entry_s:
        full = summary["entry_s_median"] * summary["space_entries"] / 60
        print(f"[cost] entries {summary['entry_s_median']:.2f} s each (median over architectures); the whole "
              f"{cfg.space} space ({summary['space_entries']} entries) ≈ {full:.0f} min")
    print(f"[load] {summary['uptime']}; median 1-min load during the rows {summary['load1_median']:.2f}")
    if args.refit:
        summary["refit"] = refit([int(n) for n in args.refit.split(",")], rows, table.overhead_ms)
        for n, r in summary["refit"].items():
            print(f"[refit] calibration on {n} of these networks: held-out within ±5 % median {r['median']:.0%} "
                  f"[IQR {r['q1']:.0%}–{r['q3']:.0%}] over {r['draws']} draws; models chosen: {r['models']}")
    csv_path.with_name(csv_path.name + ".summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
