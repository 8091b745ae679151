"""Benchmark of the searchers on the analytic stand-in objective: best MnasNet reward per budget.

Runs every searcher of :data:`nas.searchers.SEARCHERS` on a real search space against the
deterministic stand-in objective of :mod:`nas.objective_analytic` (no training, no measurement), for
``--seeds`` seeds each, and reports the median (and min–max) over seeds of the best reward reached
after 100, 250, ... trials and at the full budget. nsga2 optimizes (accuracy, latency) with the latency
constraint; its best reward is computed from its trials' values, as for the others. Seeds of the space
are *not* enqueued (``--enqueue-seeds`` to do so), so that the searchers start from nothing; the
reward of the space's seed architecture is printed as a reference.

The stand-in is a testing aid: its numbers say which searcher climbs this kind of landscape faster,
not which finds better networks on a real device.

Usage (from the repository root, with the package installed)::

    python experiments/bench_searchers.py [--budget 600] [--seeds 5] [--space mobilenetv3]
        [--target-ms 60] [--in-flight 1] [--searchers rl,evolution,...] [--out runs/bench_searchers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import optuna

from nas.objective_analytic import DEFAULT_TARGET_MS, analytic_objective, run_analytic_search
from nas.rewards import RewardConfig, mnas_reward
from nas.searchers import SEARCHERS, trial_reward
from search_spaces.spaces import SPACE_NAMES, get_space


def best_so_far(study, searcher: str, cfg: RewardConfig) -> list[float]:
    """Best reward after each trial, in trial-number order (failed trials keep the previous best)."""
    best, curve = float("-inf"), []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE:
            best = max(best, trial_reward(searcher, t.values, cfg))
        curve.append(best)
    return curve


def checkpoints(budget: int) -> list[int]:
    marks = [m for m in (100, 250, 500, 1000, 2000) if m < budget]
    return marks + [budget]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=600, help="trials per run (default 600)")
    parser.add_argument("--seeds", type=int, default=5, help="runs per searcher, seeds 0..N-1 (default 5)")
    parser.add_argument("--space", choices=SPACE_NAMES, default="mobilenetv3")
    parser.add_argument("--target-ms", type=float, default=DEFAULT_TARGET_MS)
    parser.add_argument("--w", type=float, default=-0.07, help="soft-constraint exponent α = β (default −0.07)")
    parser.add_argument("--in-flight", type=int, default=1, help="trials asked before one is told (default 1)")
    parser.add_argument("--searchers", default=",".join(SEARCHERS), help="comma-separated subset of "
                        + ", ".join(SEARCHERS))
    parser.add_argument("--enqueue-seeds", action="store_true", help="enqueue the space's seed architectures")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_searchers.json"), help="JSON result file")
    args = parser.parse_args(argv)

    names = [n for n in args.searchers.split(",") if n]
    unknown = [n for n in names if n not in SEARCHERS]
    if unknown:
        parser.error(f"unknown searcher(s) {', '.join(unknown)}; known: {', '.join(SEARCHERS)}")
    if args.budget < 1 or args.seeds < 1 or args.in_flight < 1:
        parser.error("--budget, --seeds and --in-flight must be ≥ 1")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(args.space)
    cfg = RewardConfig.soft(args.target_ms, args.w)
    marks = checkpoints(args.budget)
    reference = {}
    for seed_name, params in space.seeds().items():
        r = analytic_objective(space.decode(params))
        reference[seed_name] = {"accuracy": r.accuracy, "latency_ms": r.latency_ms,
                                "reward": mnas_reward(r.accuracy, r.latency_ms, cfg)}
    print(f"space {args.space}, reward soft w={args.w}, T={args.target_ms} ms, budget {args.budget}, "
          f"{args.seeds} seeds, {args.in_flight} in flight, seeds enqueued: {args.enqueue_seeds}")
    for seed_name, r in reference.items():
        print(f"reference {seed_name}: reward {r['reward']:.4f} (acc {r['accuracy']:.4f}, {r['latency_ms']:.1f} ms)")

    results = {}
    for name in names:
        runs = []
        for seed in range(args.seeds):
            start = time.perf_counter()
            study = run_analytic_search(name, space, n_trials=args.budget, cfg=cfg, seed=seed,
                                        in_flight=args.in_flight, enqueue_seeds=args.enqueue_seeds)
            wall_s = time.perf_counter() - start
            curve = best_so_far(study, name, cfg)
            best = curve[-1]
            runs.append({"seed": seed, "wall_s": wall_s, "best_reward": best,
                         "best_at": {str(m): curve[m - 1] for m in marks},
                         "first_trial_reaching_best": next(i for i, v in enumerate(curve) if v == best)})
            print(f"  {name:<10} seed {seed}: best {best:.4f} ({wall_s:.1f} s)", flush=True)
        results[name] = {
            "runs": runs,
            "median_best_at": {str(m): statistics.median(r["best_at"][str(m)] for r in runs) for m in marks},
            "min_best": min(r["best_reward"] for r in runs),
            "max_best": max(r["best_reward"] for r in runs),
            "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        }

    header = f"{'searcher':<10} " + " ".join(f"{'@' + str(m):>8}" for m in marks) + f" {'min–max':>15} {'s/run':>7}"
    print("\nmedian best reward over seeds, after N trials")
    print(header)
    for name, res in results.items():
        cells = " ".join(f"{res['median_best_at'][str(m)]:>8.4f}" for m in marks)
        print(f"{name:<10} {cells} {res['min_best']:>7.4f}–{res['max_best']:.4f} {res['median_wall_s']:>7.1f}")

    record = {
        "benchmark": "bench_searchers",
        "objective": "nas.objective_analytic (stand-in, not a device)",
        "config": {"space": args.space, "reward": cfg.to_dict(), "budget": args.budget, "seeds": args.seeds,
                   "in_flight": args.in_flight, "enqueue_seeds": args.enqueue_seeds, "checkpoints": marks},
        "versions": {"python": platform.python_version(), "optuna": optuna.__version__,
                     "platform": platform.platform()},
        "reference": reference,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(args.out.suffix + ".tmp")
    partial.write_text(json.dumps(record, indent=2))
    os.replace(partial, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
