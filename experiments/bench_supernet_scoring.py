"""How few images can score a subnet without changing the ranking (issue 13): BatchNorm recalibration
images and held-out images of the supernet evaluator, against the full measurement.

For K subnets drawn from the space (seeded; the largest and smallest included), on a trained supernet:

* the reference score: BatchNorm recalibrated on ``--ref-bn`` training images (default 1,000) and the
  accuracy on every held-out image (default 10,000), BN not folded — the evaluator as it was;
* each cheaper setting ``bn × held-out``: BN recalibrated on ``bn`` images, the accuracy on a seeded
  sample of ``held-out`` images, BN folded into the convolutions (what the evaluator now does).

It reports Kendall τ and Spearman ρ of every setting against the reference over the K subnets, the
mean absolute accuracy difference, and the measured seconds per candidate of each setting (extraction,
recalibration, scoring; ``--threads`` torch threads, the machine's load recorded). Results go to a JSON
file, one subnet at a time, so a rerun resumes.

Usage (from the repository root)::

    python experiments/bench_supernet_scoring.py SUPERNET.pt [--subnets 16] [--threads 1] \\
        [--bn 250,500,1000] [--held-out 1000,2000,5000] [--out bench_supernet_scoring.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats as sps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("supernet")
    p.add_argument("--subnets", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bn", default="250,500,1000", help="recalibration sizes to compare")
    p.add_argument("--held-out", default="1000,2000,5000", help="held-out sample sizes to compare")
    p.add_argument("--ref-bn", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="bench_supernet_scoring.json")
    args = p.parse_args()

    from evaluation.data import holdout_split, load_dataset
    from evaluation.supernet import calibration_indices, fold_batchnorm, load_supernet, recalibrate_bn, score_indices
    from evaluation.training import TrainConfig, evaluate
    from search_spaces.files import atomic_write_text

    torch.set_num_threads(args.threads)
    sn = load_supernet(args.supernet)
    meta = sn.meta
    data = load_dataset(meta["dataset"])
    train_idx, val_idx = holdout_split(len(data.train_labels), meta["recipe"]["holdout"], meta["recipe"]["split_seed"])
    cfg = TrainConfig(resolution_px=sn.resolution, in_channels=meta["in_channels"])
    stats = sn.stats()
    space = sn.net.space
    bns = [int(v) for v in args.bn.split(",")]
    helds = [int(v) for v in args.held_out.split(",")]
    rng = np.random.default_rng(args.seed)
    vectors = [sn.net.largest(), sn.net.smallest()] + [space.sample(rng) for _ in range(args.subnets - 2)]
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {"supernet": str(args.supernet), "subnets": []}
    all_val = torch.as_tensor(np.asarray(val_idx))

    def accuracy(model, idx) -> tuple[float, float]:
        t0 = time.perf_counter()
        acc, _ = evaluate(model, data.train_images[idx], data.train_labels[idx], cfg, stats=stats)
        return acc, time.perf_counter() - t0

    for k, vec in enumerate(vectors):
        if k < len(res["subnets"]):
            continue
        spec = space.decode(vec)
        row = {"arch_id": spec.arch_id, "load_before": os.getloadavg()[0], "cells": {}}
        t0 = time.perf_counter()
        model = sn.net.extract(spec)
        row["extract_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        recalibrate_bn(model, data.train_images[torch.as_tensor(calibration_indices(train_idx, args.ref_bn, 0))],
                       cfg, stats)
        ref_bn_s = time.perf_counter() - t0
        row["reference"], ref_eval_s = accuracy(model, all_val)
        row["reference_s"] = row["extract_s"] + ref_bn_s + ref_eval_s
        for bn in bns:
            t0 = time.perf_counter()
            recalibrate_bn(model, data.train_images[torch.as_tensor(calibration_indices(train_idx, bn, 0))], cfg,
                           stats)
            bn_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            folded = fold_batchnorm(model)
            fold_s = time.perf_counter() - t0
            for held in helds:
                acc, eval_s = accuracy(folded, torch.as_tensor(score_indices(val_idx, held, 0)))
                row["cells"][f"{bn}x{held}"] = {"accuracy": acc, "s": row["extract_s"] + bn_s + fold_s + eval_s,
                                               "bn_s": bn_s, "eval_s": eval_s}
        res["subnets"].append(row)
        atomic_write_text(out, json.dumps(res, indent=2))
        print(f"subnet {k + 1}/{len(vectors)} {spec.arch_id}: reference {row['reference']:.4f} "
              f"({row['reference_s']:.1f} s); " + ", ".join(f"{c} {v['accuracy']:.4f} ({v['s']:.1f} s)"
                                                          for c, v in row["cells"].items()), flush=True)

    rows = res["subnets"]
    ref = np.array([r["reference"] for r in rows])
    summary = {"subnets": len(rows), "reference_s_median": float(np.median([r["reference_s"] for r in rows])),
               "reference_acc_range": [float(ref.min()), float(ref.max())], "cells": {}}
    for cell in rows[0]["cells"]:
        acc = np.array([r["cells"][cell]["accuracy"] for r in rows])
        secs = float(np.median([r["cells"][cell]["s"] for r in rows]))
        summary["cells"][cell] = {"kendall_tau": float(sps.kendalltau(ref, acc).statistic),
                                  "spearman": float(sps.spearmanr(ref, acc).statistic),
                                  "mean_abs_diff": float(np.mean(np.abs(acc - ref))),
                                  "s_per_candidate_median": secs, "candidates_per_h_per_core": 3600 / secs}
    res["summary"] = summary
    atomic_write_text(out, json.dumps(res, indent=2))
    print(f"reference (bn {args.ref_bn} × all {len(val_idx)} held-out, unfolded): median "
          f"{summary['reference_s_median']:.1f} s per candidate; accuracies {ref.min():.4f}–{ref.max():.4f}")
    for cell, s in summary["cells"].items():
        print(f"{cell:>12}: τ {s['kendall_tau']:.3f}  ρ {s['spearman']:.3f}  |Δacc| {s['mean_abs_diff']:.4f}  "
              f"{s['s_per_candidate_median']:.1f} s/candidate  {s['candidates_per_h_per_core']:.0f}/h per core")


if __name__ == "__main__":
    main()
