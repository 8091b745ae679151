"""Searcher quality on the real proxy task: Fashion-MNIST, ONNX Runtime latency, Ray — small budget.

    python experiments/bench_searchers_real.py [--trials 10] [--steps 60] [--seeds 3] [--out FILE.json]
        [--searchers rl,evolution,...] [--evaluator proxy|supernet [--supernet FILE]]

Runs ``nas search`` (the library function) once per searcher and seed with the same budget, no seed
architectures enqueued, the soft reward at ``--target-like`` (MobileNetV3-Small's latency here), and
reports the median over seeds of the best reward reached (with its accuracy and latency). The
defaults are sized so that the 15 searches fit in an hour on 2 cores: they took 32 min with a warm
latency table (a cold table first measures its entries and calibrates on 12 networks, which pauses
training: one search of 16 trials × 100 steps then took ~500 s). At such budgets the learning
searchers have had few updates: read the table as a check of the real loop rather than a ranking.
Use one ``HWNAS_CACHE_DIR`` for the whole run so that table entries and the calibration are measured once.
With ``--evaluator supernet`` candidates are scored as subnets of a trained weight-sharing supernet
(``nas supernet train``; :mod:`evaluation.evaluators`) instead of being trained, which is what makes
budgets of hundreds of trials per searcher affordable here; ``--steps`` then does not apply.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--space", default="mobilenetv3")
    ap.add_argument("--target-like", default="mobilenetv3_small")
    ap.add_argument("--out", default="bench_searchers_real.json")
    ap.add_argument("--searchers", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--evaluator", default="proxy", help="proxy (train each candidate) or supernet")
    ap.add_argument("--supernet", help="supernet file of the supernet evaluator (default: the cache's)")
    args = ap.parse_args()

    from evaluation.evaluate import EvalConfig
    from nas.search import SearchConfig, run_search
    from nas.searchers import SEARCHERS

    names = [n for n in args.searchers.split(",") if n] or list(SEARCHERS)
    unknown = [n for n in names if n not in SEARCHERS]
    if unknown:
        ap.error(f"unknown searcher(s) {', '.join(unknown)}; known: {', '.join(SEARCHERS)}")

    tmp = Path(tempfile.mkdtemp(prefix="bench_searchers_real_"))
    results: dict = {"trials": args.trials, "steps": args.steps, "space": args.space, "evaluator": args.evaluator,
                     "runs": {}}
    for name in names:
        best = []
        for seed in range(args.seeds):
            cfg = SearchConfig(
                run_dir=str(tmp / f"{name}-{seed}"), space=args.space, searcher=name, trials=args.trials,
                target_like=args.target_like, seed=seed, seeds=False, top_k=1,
                eval=EvalConfig(train={"steps": args.steps, "threads": 1}, holdout=5000, keep_weights=False,
                                split_seed=0, evaluator=args.evaluator, supernet=args.supernet),
            )
            t0 = time.perf_counter()
            out = run_search(cfg, echo=None)
            m = out.found_metrics
            best.append({"reward": m["reward"], "accuracy": m["accuracy"], "latency_ms": m["latency_measured_ms"],
                         "wall_s": time.perf_counter() - t0})
            print(f"{name:<10} seed {seed}: best reward {m['reward']:.4f} (acc {m['accuracy']:.4f}, "
                  f"{m['latency_measured_ms']:.2f} ms) in {best[-1]['wall_s']:.0f} s", flush=True)
        results["runs"][name] = best
    print(f"\n{'searcher':<10} {'median best reward':>18} {'min':>8} {'max':>8}")
    for name, best in results["runs"].items():
        r = [b["reward"] for b in best]
        print(f"{name:<10} {statistics.median(r):>18.4f} {min(r):>8.4f} {max(r):>8.4f}")
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
