"""Search figures: throughput on Ray, time outside training, and proxy fidelity.

    python experiments/bench_search.py [--archs 12] [--steps 150] [--long-factor 5] [--out FILE.json]

1. throughput: the same ``--archs`` random candidates of the space evaluated through Ray with 1 and
   with 2 concurrent workers (default proxy budget): candidates per hour and the speed-up; the
   share of each evaluation's time spent outside the training loop (data, build, latency, eval);
2. proxy fidelity: Kendall τ between the default proxy accuracy and the accuracy after
   ``--long-factor``× more steps, on the same candidates (held-out training images both times).

The searcher-quality comparison on the analytic stand-in objective is
``experiments/bench_searchers.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def evaluate_all(pool, specs, cfg, slots: int):
    """Evaluate every spec with at most ``slots`` in flight; return (results, wall seconds)."""
    t0 = time.perf_counter()
    pending, results, queue = {}, {}, list(enumerate(specs))
    while queue or pending:
        while queue and len(pending) < slots:
            i, spec = queue.pop(0)
            pending[pool.submit(spec.to_json(), cfg, 0)] = i
        for ref in pool.wait(list(pending), timeout_s=5.0):
            results[pending.pop(ref)] = pool.result(ref)
    return [results[i] for i in range(len(specs))], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="mobilenetv3")
    ap.add_argument("--archs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--long-factor", type=int, default=5)
    ap.add_argument("--throughput-archs", type=int, default=6)
    ap.add_argument("--skip", nargs="*", default=[], help="throughput fidelity")
    ap.add_argument("--out", default="bench_search.json")
    args = ap.parse_args()

    from evaluation.evaluate import EvalConfig
    from evaluation.execution import RayPool
    from latency.lut import kendall_tau
    from search_spaces.spaces import get_space

    space = get_space(args.space, in_channels=1, num_classes=10)
    rng = np.random.default_rng(123)
    specs = [space.decode(space.sample(rng)) for _ in range(args.archs)]
    base = EvalConfig(train={"steps": args.steps, "threads": 1}, keep_weights=False)
    pool = RayPool()
    out: dict = {"space": args.space, "steps": args.steps, "archs": [s.arch_id for s in specs]}
    try:
        # warm the latency table and the workers' data caches so both runs below compare like with like
        evaluate_all(pool, specs[: args.throughput_archs],
                     EvalConfig(train={"steps": 1, "threads": 1}, keep_weights=False), 2)
        if "throughput" not in args.skip:
            sub = specs[: args.throughput_archs]
            r1, wall1 = evaluate_all(pool, sub, base, 1)
            r2, wall2 = evaluate_all(pool, sub, base, 2)
            outside = [(r.total_s - r.train_s) / r.total_s for r in r1 + r2 if r.error is None]
            out["throughput"] = {
                "archs": len(sub), "wall_1_worker_s": wall1, "wall_2_workers_s": wall2, "speedup": wall1 / wall2,
                "candidates_per_hour_2_workers": 3600 * len(sub) / wall2,
                "outside_training_share_median": statistics.median(outside),
                "outside_training_share_max": max(outside),
                "mean_train_s": statistics.fmean(r.train_s for r in r2),
                "mean_total_s": statistics.fmean(r.total_s for r in r2),
            }
            t = out["throughput"]
            print(f"[throughput] {len(sub)} candidates, {args.steps} steps each: 1 worker {wall1:.0f} s, "
                  f"2 workers {wall2:.0f} s → speed-up {t['speedup']:.2f}×; "
                  f"{t['candidates_per_hour_2_workers']:.0f} candidates/hour on 2 workers")
            print(f"[throughput] time outside the training loop: median {t['outside_training_share_median']:.1%}, "
                  f"max {t['outside_training_share_max']:.1%} of each evaluation")
        if "fidelity" not in args.skip:
            short, _ = evaluate_all(pool, specs, base, 2)
            long_cfg = EvalConfig(train={"steps": args.steps * args.long_factor, "threads": 1}, keep_weights=False)
            long, wall = evaluate_all(pool, specs, long_cfg, 2)
            ok = [(s.accuracy, l.accuracy) for s, l in zip(short, long) if s.error is None and l.error is None]
            tau = kendall_tau([a for a, _ in ok], [b for _, b in ok])
            out["fidelity"] = {"n": len(ok), "short_steps": args.steps, "long_steps": args.steps * args.long_factor,
                               "short_acc": [a for a, _ in ok], "long_acc": [b for _, b in ok], "kendall_tau": tau,
                               "long_wall_s": wall}
            print(f"[fidelity] {len(ok)} candidates: Kendall τ(proxy {args.steps} steps, "
                  f"{args.steps * args.long_factor} steps) = {tau:.3f}")
            for (a, b), s in zip(ok, specs):
                print(f"    {s.arch_id}  {a:.4f}  {b:.4f}")
    finally:
        pool.shutdown()
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
