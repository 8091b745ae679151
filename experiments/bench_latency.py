"""Latency-oracle figures: repeatability, LUT predictor accuracy, costs, reference latencies.

    python experiments/bench_latency.py [--n 50] [--calibrate 24] [--space mobilenetv3] [--anchor NAME|none]
                                        [--out FILE.json]

Prints a report and writes every number to a JSON file. Sections:

1. repeatability: 5 independent measurements (fresh session each) of MobileNetV3-Large at 224²,
   CV of the 5 medians; the same for the paired ratio Large/Small;
2. predictor: a fresh table (in a temporary cache unless --lut is given) is calibrated on
   ``--calibrate`` random architectures of the space, then validated on ``--n`` *other* random
   architectures (different seed): share within ±10 %, median |error|, Kendall τ. Whole networks
   (calibration and validation) are measured interleaved with ``--anchor`` (default
   MobileNetV3-Large) and expressed as ratio × the anchor's latency stored in the table, so that the
   host's drift during the run does not count as prediction error (``--anchor none``: plain medians);
3. costs: warm prediction time per architecture, whole-network measurement time, entry
   measurement time, and the time to build the full table of the space (extrapolated from the
   measured per-entry time unless --full-space is given);
4. reference latencies at 224², 1 thread, fp32 and int8 (int8 calibrated on real Fashion-MNIST
   images): MobileNetV3-Large, MobileNetV3-Small, MobileNetV2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def cv(values):
    return statistics.stdev(values) / statistics.fmean(values)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--calibrate", type=int, default=24)
    ap.add_argument("--space", default="mobilenetv3")
    ap.add_argument("--lut", help="table file (default: a fresh one in a temporary folder)")
    ap.add_argument("--anchor", default="mobilenetv3_large",
                    help="reference network for whole-network measurements (none: plain medians)")
    ap.add_argument("--full-space", action="store_true", help="measure every entry of the space")
    ap.add_argument("--skip", nargs="*", default=[], help="sections to skip: repeat predictor refs")
    ap.add_argument("--out", default="bench_latency.json")
    args = ap.parse_args()

    from evaluation.evaluate import calibration_inputs
    from latency.lut import LatencyTable, validate, validation_summary
    from latency.measure import MeasureConfig, measure_onnx, measure_pair
    from search_spaces import references
    from search_spaces.export import export_onnx
    from search_spaces.spaces import get_space

    cfg = MeasureConfig()
    results: dict = {"fingerprint": cfg.fingerprint().to_dict()}
    tmp = Path(tempfile.mkdtemp(prefix="bench_latency_"))
    large, small, v2 = (references.get(n) for n in ("mobilenetv3_large", "mobilenetv3_small", "mobilenetv2"))
    large_onnx, small_onnx, v2_onnx = tmp / "large.onnx", tmp / "small.onnx", tmp / "v2.onnx"
    for spec, path in ((large, large_onnx), (small, small_onnx), (v2, v2_onnx)):
        export_onnx(spec, path)

    if "repeat" not in args.skip:
        medians, walls = [], []
        for _ in range(5):
            m = measure_onnx(large_onnx, cfg)
            medians.append(m.median_ms)
            walls.append(m.wall_s)
        ratios = [measure_pair(large_onnx, small_onnx, cfg).ratio for _ in range(5)]
        results["repeatability"] = {"large_medians_ms": medians, "large_cv_of_medians": cv(medians),
                                    "measure_wall_s": statistics.median(walls),
                                    "pair_ratios": ratios, "pair_ratio_cv": cv(ratios)}
        print(f"[repeatability] V3-Large 224²: medians {', '.join(f'{v:.3f}' for v in medians)} ms; "
              f"CV of 5 medians {cv(medians):.2%}; one measurement {statistics.median(walls):.2f} s wall")
        print(f"[repeatability] paired Large/Small ratio: {', '.join(f'{r:.3f}' for r in ratios)}; CV {cv(ratios):.2%}")

    if "predictor" not in args.skip:
        space = get_space(args.space, resolution=224)
        table = LatencyTable(Path(args.lut) if args.lut else tmp / "table.sqlite", cfg)
        rng = np.random.default_rng(0)
        calib = [space.decode(space.sample(rng)).replace(name=f"cal{i}") for i in range(args.calibrate)]
        t0 = time.perf_counter()
        entries_before = table.store.count()
        for spec in calib:
            table.predict(spec)
        entries_s = time.perf_counter() - t0
        n_entries = table.store.count() - entries_before
        t0 = time.perf_counter()
        anchor = None if args.anchor == "none" else references.get(args.anchor).replace(resolution=224)
        cal = table.calibrate(calib, anchor=anchor)
        calib_s = time.perf_counter() - t0
        val_rng = np.random.default_rng(10_000)
        val = [space.decode(space.sample(val_rng)).replace(name=f"val{i}") for i in range(args.n)]
        t0 = time.perf_counter()
        e0 = table.store.count()
        for spec in val:
            table.predict(spec)
        val_entries_s = time.perf_counter() - t0
        n_val_entries = table.store.count() - e0
        t0 = time.perf_counter()
        rows = validate(table, val, anchor=anchor)
        validate_s = time.perf_counter() - t0
        summary = validation_summary(rows)
        # the same rows with the raw (uncalibrated) layer sum, to show what the calibration buys
        raw_rows = [type(r)(r.name, r.arch_id, table.raw_sum(s)[0], r.measured_ms) for r, s in zip(rows, val)]
        raw_summary = validation_summary(raw_rows)
        t0 = time.perf_counter()
        reps = 0
        while time.perf_counter() - t0 < 2.0:
            for spec in val:
                table.predict(spec)
                reps += 1
        predict_ms = (time.perf_counter() - t0) * 1000 / reps
        keys = space.layer_keys()
        per_entry_s = (entries_s + val_entries_s) / max(1, n_entries + n_val_entries)
        results["predictor"] = {
            "space": args.space, "calibration": cal.to_dict(), "calibration_measure_s": calib_s,
            "anchor": table.store.meta("anchor"), "validation_measure_s": validate_s,
            "validation": summary, "raw_sum_validation": raw_summary,
            "rows": [dict(r.__dict__, error=r.error) for r in rows],
            "predict_ms_warm": predict_ms, "entries_measured": n_entries + n_val_entries,
            "entry_measure_s": per_entry_s, "space_keys": len(keys),
            "space_build_s_estimate": per_entry_s * len(keys),
        }
        print(f"[predictor] calibration on {cal.n_points} networks ({calib_s:.0f} s, anchor {args.anchor}): scale "
              f"{cal.scale:.4f}, factors {cal.factors}, io term {cal.io_ms_per_melem} ms/M elements, "
              f"leave-one-out mean |err| {cal.loo_mean_abs_error:.1%}, max {cal.loo_max_abs_error:.1%}")
        s = summary
        print(f"[predictor] {s['n']} unseen random {args.space} architectures at 224²: "
              f"{s['within_10pct']:.0%} within ±10 %, {s['within_5pct']:.0%} within ±5 %, "
              f"median |err| {s['median_abs_error']:.2%}, max {s['max_abs_error']:.1%}, "
              f"mean signed {s['mean_signed_error']:+.2%}, Kendall τ {s['kendall_tau']:.3f} "
              f"(measured in {validate_s:.0f} s)")
        r = raw_summary
        print(f"[predictor] uncalibrated layer sum: {r['within_10pct']:.0%} within ±10 %, median |err| "
              f"{r['median_abs_error']:.2%}, mean signed {r['mean_signed_error']:+.2%}")
        print(f"[cost] warm prediction {predict_ms:.3f} ms/arch; entry measurement {per_entry_s:.2f} s/entry "
              f"({n_entries + n_val_entries} entries); space {args.space} has {len(keys)} keys → "
              f"full table ≈ {per_entry_s * len(keys) / 60:.0f} min")
        if args.full_space:
            t0 = time.perf_counter()
            table.ensure(keys)
            results["predictor"]["space_build_s"] = time.perf_counter() - t0
            print(f"[cost] full table of {args.space}: {results['predictor']['space_build_s'] / 60:.1f} min")

    if "refs" not in args.skip:
        refs = {}
        for name, spec, path in (("mobilenetv3_large", large, large_onnx), ("mobilenetv3_small", small, small_onnx),
                                 ("mobilenetv2", v2, v2_onnx)):
            from latency.quantize import quantize_and_measure

            fp32 = [measure_onnx(path, cfg).median_ms for _ in range(3)]
            samples = calibration_inputs(spec, 32, "fashion-mnist", None)
            int8 = [quantize_and_measure(path, samples, tmp / f"{name}.int8.onnx", cfg).median_ms for _ in range(3)]
            refs[name] = {"fp32_ms": statistics.median(fp32), "int8_ms": statistics.median(int8)}
            print(f"[refs] {name}: fp32 {refs[name]['fp32_ms']:.3f} ms, int8 {refs[name]['int8_ms']:.3f} ms "
                  f"(int8/fp32 {refs[name]['int8_ms'] / refs[name]['fp32_ms']:.2f})")
        ratio = refs["mobilenetv3_large"]["fp32_ms"] / refs["mobilenetv3_small"]["fp32_ms"]
        refs["large_over_small_fp32"] = ratio
        print(f"[refs] Large/Small fp32 = {ratio:.2f} (paper, Pixel-1: 51/15.8 = 3.2)")
        results["references"] = refs

    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
