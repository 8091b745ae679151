"""Searchers compared on statistics, on the analytic stand-in objective: best MnasNet reward per budget.

Every searcher of :data:`nas.searchers.SEARCHERS` runs on a real search space against the
deterministic stand-in objective of :mod:`nas.objective_analytic` (no training, no measurement), made
as ``nas search`` makes it (:func:`nas.searchers.make_sampler` with the budget, so the budget rule
sizes its start-up), once per budget of ``--budgets`` and seed ``0 .. --seeds − 1``. Seeds of the
space are not enqueued (``--enqueue-seeds`` to do so), so that the searchers start from nothing.

Per run (a row of ``OUT/runs.csv``): the best reward, the best-so-far curve, the share of distinct
proposals (:func:`nas.searchers.proposal_stats`), the share of our samplers' proposals that named a
known architecture and were drawn again (``redrawn``), and the CPU seconds spent in the sampler (ask
and tell) and in the objective (``time.process_time``: other work on the machine does not count).
Per searcher and budget (``OUT/summary.csv``, printed): median and IQR of the best reward over
seeds; the two-sided Mann–Whitney U test against random at the same budget
(``scipy.stats.mannwhitneyu``); the difference of means and its standard error, with the verdict
``beats``/``loses`` only when p < 0.05 *and* the difference exceeds two standard errors, else
``ties``; the median number of trials a run needs to reach random's median best at random's largest
budget (``to_random_best``, the upper median; empty when fewer than half the runs reach it); the
sampler's time per trial and as a share of a real trial (``--real-trial-s``, by default 14.6 s: the
README's main job, 16 trials in 7.8 min with two workers). ``OUT/searchers.png`` plots the median
best-so-far curves with their IQR at the largest budget every searcher ran, and the best reward per
run by budget.

Resumable: a run already in ``OUT/runs.csv`` is not run again (a changed space, target, exponent,
in-flight or seeding is refused: use another ``--out``), so the budgets and searchers can be added in
several calls, e.g. the long budget only for the cheap searchers::

    python experiments/bench_searchers.py --budgets 100,300 --seeds 10
    python experiments/bench_searchers.py --budgets 1000 --seeds 10 --searchers random,evolution,nsga2

The stand-in is a testing aid: its numbers say which searcher climbs this kind of landscape faster,
not which finds better networks on a real device.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import optuna

from nas.objective_analytic import DEFAULT_TARGET_MS, analytic_objective, run_analytic_search
from nas.rewards import RewardConfig, mnas_reward
from nas.searchers import SEARCHERS, SpaceSampler, proposal_stats, trial_reward
from search_spaces.files import atomic_write_text
from search_spaces.spaces import SPACE_NAMES, get_space

RUN_FIELDS = ("searcher", "budget", "seed", "best_reward", "distinct_share", "redrawn_share", "sampler_s",
              "objective_s", "cpu_s", "curve")
SUMMARY_FIELDS = ("searcher", "budget", "runs", "median", "q1", "q3", "mean", "sd", "delta_mean_vs_random",
                  "se_delta", "p_vs_random", "verdict", "distinct_min", "distinct_median", "redrawn_median",
                  "sampler_ms_per_trial", "overhead_share_real", "overhead_share_standin", "to_random_best")


def best_so_far(study, searcher: str, cfg: RewardConfig) -> list[float]:
    """Best reward after each trial, in trial-number order (failed trials keep the previous best)."""
    best, curve = float("-inf"), []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE:
            best = max(best, trial_reward(searcher, t.values, cfg))
        curve.append(best)
    return curve


def one_run(name: str, budget: int, seed: int, space, cfg: RewardConfig, args) -> dict:
    timings: dict = {}
    start = time.process_time()
    study = run_analytic_search(name, space, n_trials=budget, cfg=cfg, seed=seed, in_flight=args.in_flight,
                                enqueue_seeds=args.enqueue_seeds, timings=timings)
    cpu_s = time.process_time() - start
    curve = best_so_far(study, name, cfg)
    sampler = study.sampler
    stats = proposal_stats(study, space)
    redrawn = sampler.redrawn / max(1, stats["proposals"]) if isinstance(sampler, SpaceSampler) else None
    return {"searcher": name, "budget": budget, "seed": seed, "best_reward": curve[-1],
            "distinct_share": stats["distinct_share"], "redrawn_share": redrawn,
            "sampler_s": timings["ask"] + timings["tell"], "objective_s": timings["evaluate"], "cpu_s": cpu_s,
            "curve": ";".join(f"{v:.5f}" for v in curve)}


def read_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["budget"], r["seed"] = int(r["budget"]), int(r["seed"])
        for k in ("best_reward", "distinct_share", "sampler_s", "objective_s", "cpu_s"):
            r[k] = float(r[k])
        r["redrawn_share"] = float(r["redrawn_share"]) if r["redrawn_share"] else None
        r["curve"] = [float(v) for v in r["curve"].split(";")]
    return rows


def write_csv(path: Path, fields, rows) -> None:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (";".join(f"{v:.5f}" for v in r[k]) if k == "curve" and isinstance(r[k], list) else r[k])
                    for k in fields})
    atomic_write_text(path, buf.getvalue())


def first_reaching(curve: list[float], level: float) -> float:
    return next((i + 1 for i, v in enumerate(curve) if v >= level), math.inf)


def summarize(rows: list[dict], real_trial_s: float) -> list[dict]:
    from scipy.stats import mannwhitneyu

    groups: dict = {}
    for r in rows:
        groups.setdefault((r["searcher"], r["budget"]), []).append(r)
    random_budgets = sorted(b for (n, b) in groups if n == "random")
    reference = (statistics.median(r["best_reward"] for r in groups[("random", random_budgets[-1])])
                 if random_budgets else None)
    order = {n: i for i, n in enumerate(SEARCHERS)}
    out = []
    for (name, budget), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 99))):
        best = np.array([r["best_reward"] for r in runs])
        row = {"searcher": name, "budget": budget, "runs": len(runs), "median": float(np.median(best)),
               "q1": float(np.percentile(best, 25)), "q3": float(np.percentile(best, 75)), "mean": float(best.mean()),
               "sd": float(best.std(ddof=1)) if len(best) > 1 else 0.0,
               "distinct_min": min(r["distinct_share"] for r in runs),
               "distinct_median": statistics.median(r["distinct_share"] for r in runs),
               "redrawn_median": (statistics.median(r["redrawn_share"] for r in runs)
                                  if runs[0]["redrawn_share"] is not None else ""),
               "delta_mean_vs_random": "", "se_delta": "", "p_vs_random": "", "verdict": ""}
        per_trial = statistics.median(r["sampler_s"] / r["budget"] for r in runs)
        row["sampler_ms_per_trial"] = 1e3 * per_trial
        row["overhead_share_real"] = per_trial / (per_trial + real_trial_s)
        row["overhead_share_standin"] = statistics.median(r["sampler_s"] / r["cpu_s"] for r in runs)
        if reference is not None:
            median_reach = statistics.median_high(first_reaching(r["curve"], reference) for r in runs)
            row["to_random_best"] = "" if math.isinf(median_reach) else int(median_reach)
        base = groups.get(("random", budget))
        if name != "random" and base and len(base) > 1 and len(runs) > 1:
            other = np.array([r["best_reward"] for r in base])
            delta = float(best.mean() - other.mean())
            se = math.sqrt(best.var(ddof=1) / len(best) + other.var(ddof=1) / len(other))
            p = float(mannwhitneyu(best, other, alternative="two-sided").pvalue)
            significant = p < 0.05 and abs(delta) > 2 * se
            row.update(delta_mean_vs_random=delta, se_delta=se, p_vs_random=p,
                       verdict=("beats" if delta > 0 else "loses") if significant else "ties")
        out.append(row)
    return out, reference, (random_budgets[-1] if random_budgets else None)


def plot(rows: list[dict], summary: list[dict], reference, ref_budget, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["budget"] for r in rows})
    names = [n for n in SEARCHERS if any(r["searcher"] == n for r in rows)]
    common = [b for b in budgets if all(any(r["searcher"] == n and r["budget"] == b for r in rows) for n in names)]
    curve_budget = common[-1] if common else budgets[-1]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name in names:
        curves = np.array([r["curve"] for r in rows if r["searcher"] == name and r["budget"] == curve_budget])
        if not len(curves):
            continue
        x = np.arange(1, curves.shape[1] + 1)
        (line,) = ax1.plot(x, np.median(curves, 0), label=name)
        ax1.fill_between(x, np.percentile(curves, 25, 0), np.percentile(curves, 75, 0), alpha=0.15,
                         color=line.get_color())
    if reference is not None:
        ax1.axhline(reference, color="k", ls="--", lw=0.8, label=f"random, median best of {ref_budget}")
    ax1.set(xlabel="trials", ylabel="best reward so far", title=f"median and IQR over seeds, {curve_budget} trials")
    low = min(r["curve"][min(len(r["curve"]) - 1, 19)] for r in rows if r["budget"] == curve_budget)
    ax1.set_ylim(low, None)
    ax1.legend(fontsize=8)
    positions, data, labels = [], [], []
    for i, b in enumerate(budgets):
        for j, name in enumerate(names):
            best = [r["best_reward"] for r in rows if r["searcher"] == name and r["budget"] == b]
            if best:
                positions.append(i * (len(names) + 1) + j)
                data.append(best)
                labels.append(f"{name}\n{b}")
    ax2.boxplot(data, positions=positions, widths=0.7)
    ax2.set_xticks(positions, labels, rotation=90, fontsize=7)
    ax2.set(ylabel="best reward", title="best reward per run, by budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(v, spec: str) -> str:
    return "" if v == "" or v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="100,300", help="comma-separated trials per run (default 100,300)")
    parser.add_argument("--seeds", type=int, default=10, help="runs per searcher and budget, seeds 0..N-1 (default 10)")
    parser.add_argument("--space", choices=SPACE_NAMES, default="mobilenetv3")
    parser.add_argument("--target-ms", type=float, default=DEFAULT_TARGET_MS)
    parser.add_argument("--w", type=float, default=-0.07, help="soft-constraint exponent α = β (default −0.07)")
    parser.add_argument("--in-flight", type=int, default=1, help="trials asked before one is told (default 1)")
    parser.add_argument("--searchers", default=",".join(SEARCHERS), help="comma-separated subset of "
                        + ", ".join(SEARCHERS))
    parser.add_argument("--enqueue-seeds", action="store_true", help="enqueue the space's seed architectures")
    parser.add_argument("--real-trial-s", type=float, default=14.6,
                        help="seconds per completed trial of a real search, for the overhead share (default 14.6)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_searchers"), help="output folder")
    args = parser.parse_args(argv)

    names = [n for n in args.searchers.split(",") if n]
    unknown = [n for n in names if n not in SEARCHERS]
    if unknown:
        parser.error(f"unknown searcher(s) {', '.join(unknown)}; known: {', '.join(SEARCHERS)}")
    try:
        budgets = [int(b) for b in args.budgets.split(",") if b]
    except ValueError:
        parser.error(f"--budgets: comma-separated integers, got {args.budgets!r}")
    if not budgets or min(budgets) < 1 or args.seeds < 1 or args.in_flight < 1:
        parser.error("--budgets, --seeds and --in-flight must be ≥ 1")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(args.space)
    cfg = RewardConfig.soft(args.target_ms, args.w)
    config = {"space": args.space, "reward": cfg.to_dict(), "in_flight": args.in_flight,
              "enqueue_seeds": args.enqueue_seeds, "objective": "nas.objective_analytic (stand-in, not a device)"}
    args.out.mkdir(parents=True, exist_ok=True)
    config_path = args.out / "config.json"
    if config_path.exists():
        old = json.loads(config_path.read_text())
        if old.get("config") != config:
            parser.error(f"{args.out} holds runs of another setting ({old.get('config')}); use another --out")
    atomic_write_text(config_path, json.dumps({"config": config, "versions": {
        "python": platform.python_version(), "optuna": optuna.__version__, "platform": platform.platform()}}, indent=2))
    for seed_name, params in space.seeds().items():
        r = analytic_objective(space.decode(params))
        print(f"reference {seed_name}: reward {mnas_reward(r.accuracy, r.latency_ms, cfg):.4f} "
              f"(acc {r.accuracy:.4f}, {r.latency_ms:.1f} ms)")

    runs_path = args.out / "runs.csv"
    rows = read_runs(runs_path)
    done = {(r["searcher"], r["budget"], r["seed"]) for r in rows}
    for budget in budgets:
        for name in names:
            for seed in range(args.seeds):
                if (name, budget, seed) in done:
                    continue
                row = one_run(name, budget, seed, space, cfg, args)
                row["curve"] = [float(v) for v in row["curve"].split(";")]
                rows.append(row)
                write_csv(runs_path, RUN_FIELDS, rows)
                print(f"  {name:<10} {budget:>5} trials, seed {seed}: best {row['best_reward']:.4f}, distinct "
                      f"{row['distinct_share']:.3f}, sampler {row['sampler_s']:.1f} s of {row['cpu_s']:.1f} s CPU",
                      flush=True)

    summary, reference, ref_budget = summarize(rows, args.real_trial_s)
    write_csv(args.out / "summary.csv", SUMMARY_FIELDS, summary)
    plot(rows, summary, reference, ref_budget, args.out / "searchers.png")
    print(f"\nbest reward over seeds (random's median best at {ref_budget} trials: {fmt(reference, '.4f')})")
    print(f"{'searcher':<10} {'trials':>6} {'runs':>4} {'median':>7} {'IQR':>15} {'Δmean':>8} {'2SE':>7} "
          f"{'p (MWU)':>8} {'verdict':>7} {'distinct':>8} {'redrawn':>7} {'ms/trial':>8} {'overhead':>8} "
          f"{'to rnd':>6}")
    for s in summary:
        print(f"{s['searcher']:<10} {s['budget']:>6} {s['runs']:>4} {s['median']:>7.4f} "
              f"{s['q1']:>7.4f}–{s['q3']:.4f} {fmt(s['delta_mean_vs_random'], '+8.4f'):>8} "
              f"{fmt(s['se_delta'] and 2 * s['se_delta'], '7.4f'):>7} {fmt(s['p_vs_random'], '8.2g'):>8} "
              f"{s['verdict']:>7} {s['distinct_min']:>8.3f} {fmt(s['redrawn_median'], '7.3f'):>7} "
              f"{s['sampler_ms_per_trial']:>8.1f} {s['overhead_share_real']:>8.2%} {s['to_random_best']!s:>6}")
    print(f"\nwrote {runs_path}, {args.out / 'summary.csv'}, {args.out / 'searchers.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
