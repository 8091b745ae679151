"""Ranking fidelity of the evaluators against the final recipe (issue 13): how well does each cheap score
rank architectures the way stand-alone training with the final recipe does, and what does it cost?

K architectures are drawn across the space's latency range (a seeded pool of random architectures,
sorted by the analytic latency model at 224², one taken at each of K evenly spaced quantiles); the list
is stored in the results file on the first run, so every rerun scores the same ones. Cells, one per
architecture and kind:

* ``gt-s<seed>`` — the ground truth: the architecture trained stand-alone with the final recipe
  (``--gt-epochs`` at ``--gt-resolution``, the reproduction's :class:`hwnas.experiment.Recipe` by default),
  through the experiment's own training path (:func:`evaluation.evaluate.train_task`), on the training
  images outside the search's held-out split; its **test-split** accuracy. With several ``--gt-seeds`` the
  ground truth is their mean, and the seeds' own agreement (τ between two seeds) is the noise ceiling
  no evaluator can beat.
* ``proxy@R`` — the proxy evaluator as ``nas search --evaluator proxy --train-resolution R`` runs it:
  ``--proxy-steps`` of training from scratch, held-out accuracy; ``proxy@R-sN`` the same with N steps
  (``--proxy 32-s400``), to compare resolutions at equal CPU-seconds.
* ``supernet`` — the supernet evaluator as ``nas search --evaluator supernet --supernet FILE`` runs it
  (:func:`evaluation.evaluators.score`): subnet extracted, BatchNorm recalibrated, held-out accuracy.
  Extra settings ``supernet-bn<B>-h<H>`` (``--supernet-settings 250x1000,...``) score with B BatchNorm
  images and H held-out images instead of the evaluator's defaults.

* ``zc-<score>`` — a zero-cost score of the untrained architecture (:mod:`evaluation.zero_cost`: ``naswot``,
  ``synflow``, ``snip``; ``--zero-cost naswot,synflow,snip``): the mean over ``--zc-repeats``
  initializations, each on its own seeded batch of ``--zc-batch`` training images at the ground truth's
  resolution.

Two free scores need no cell: the architecture's multiply-adds and parameters at 224² (``madds``,
``params``), the baseline any evaluator has to beat. Cells run in an order that spreads over the latency
range (both ends, then halving the gaps), so a study stopped early still covers it.

For each kind it reports Kendall τ (with its p-value and a 95 % bootstrap interval over architectures),
the paired bootstrap interval of its τ minus today's proxy's (``proxy@32``), Spearman ρ against the
ground truth (scipy), and the median wall seconds per candidate (``median_s``) and, on the CPU, the median
CPU-seconds (``median_cpu_s``: wall time × threads of the cell). Every cell is written to the results file
as soon as it finishes, so a killed run resumes where it stopped; ``--summarize`` prints the table of a
results file without running anything, and ``--summarize --pool-with B.json`` that of several studies'
architectures together (another ``--seed`` draws another K architectures at the same quantiles).

Usage (from the repository root)::

    python experiments/bench_fidelity.py [--space mobilenetv3] [--archs 16] [--supernet FILE] \\
        [--gt-epochs 3] [--gt-resolution 64] [--gt-seeds 0] [--proxy 32,72] [--proxy-steps 150] \\
        [--zero-cost naswot,synflow,snip] [--workers 1] [--threads 1] [--device auto] [--only KINDS] \\
        [--indices I,J] [--out bench_fidelity.json]

``--workers N`` runs N cells at once in worker processes (each with ``--threads`` torch threads): on a
GPU machine, many small trainings share the one device. On this 2-core machine the whole study
(16 architectures, 3 ground-truth epochs at 64², proxies at 32² and 72²) took 3.7 CPU-hours, 81 % of it
the ground truth; a 600-step proxy adds 0.5 CPU-hours, the three zero-cost scores about 3 CPU-minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def draw_archs(space_name: str, k: int, pool: int, seed: int) -> list[dict]:
    """K architectures of the space at evenly spaced quantiles of analytic latency (224²) over a seeded pool."""
    import numpy as np

    from latency.model import latency_model
    from search_spaces import cost
    from search_spaces.spaces import get_space

    space = get_space(space_name, in_channels=1, num_classes=10)
    analytic = latency_model("analytic", resolution=224)
    rng = np.random.default_rng(seed)
    seen, specs = set(), []
    while len(specs) < pool:
        spec = space.decode(space.sample(rng))
        if spec.arch_id not in seen:
            seen.add(spec.arch_id)
            specs.append((analytic.latency_ms(spec), spec))
    specs.sort(key=lambda t: t[0])
    picks = [specs[min(len(specs) - 1, int((i + 0.5) * len(specs) / k))] for i in range(k)]
    out = []
    for ms, spec in picks:
        costs = cost.count(spec, 224)
        out.append({"arch_id": spec.arch_id, "analytic_ms": ms, "madds": costs.madds, "params": costs.params,
                    "spec": spec.to_json()})
    return out


def spread_order(n: int) -> list[int]:
    """0..n-1 in an order whose every prefix spreads over the latency range (ends first, then halving the
    gaps), so that a study stopped early still covers the range."""
    order, gaps = [0, n - 1] if n > 1 else [0], [(0, n - 1)]
    while gaps:
        lo, hi = gaps.pop(0)
        if hi - lo > 1:
            mid = (lo + hi) // 2
            order.append(mid)
            gaps += [(lo, mid), (mid, hi)]
    return order


def run_cell(kind: str, spec_json: str, opts: dict) -> dict:
    """One cell in a worker process: ``{"score", "seconds", ...}``; a failure comes back as ``{"error"}``."""
    import torch

    from evaluation.evaluate import EvalConfig, train_task
    from search_spaces import ArchSpec

    torch.set_num_threads(opts["threads"])
    base = {"threads": opts["threads"], "device": opts["device"]}
    t0 = time.perf_counter()
    if kind.startswith("gt-s"):
        train = {**base, "epochs": opts["gt_epochs"], "resolution_px": opts["gt_resolution"],
                 "batch_size": opts["gt_batch_size"], "lr": opts["gt_lr"]}
        res = train_task(spec_json, EvalConfig(train=train, keep_weights=False), train, int(kind[4:]), test=True)
        out = {"score": res["test_accuracy"], "heldout": res["accuracy"], "error": res["error"]}
    elif kind.startswith("proxy@"):  # proxy@<R> (--proxy-steps) or proxy@<R>-s<steps>
        res_px, _, steps = kind[6:].partition("-s")
        train = {**base, "steps": int(steps or opts["proxy_steps"]), "resolution_px": int(res_px), "batch_size": 128}
        res = train_task(spec_json, EvalConfig(train=train, keep_weights=False), train, 0)
        out = {"score": res["accuracy"], "error": res["error"]}
    elif kind.startswith("supernet"):
        from evaluation.supernet import BN_IMAGES, SCORE_IMAGES, score_subnet

        bn, held = BN_IMAGES, SCORE_IMAGES
        if kind != "supernet":  # supernet-bn<B>-h<H>
            b, h = kind[len("supernet-bn"):].split("-h")
            bn, held = int(b), int(h)
        cfg = EvalConfig(evaluator="supernet", supernet=opts["supernet"], train=base, keep_weights=False)
        _, res = score_subnet(ArchSpec.from_json(spec_json), cfg, bn_images=bn, score_images=held)
        out = {"score": res.val_accuracy, "error": None, "bn_images": bn, "score_images": held}
    elif kind.startswith("zc-"):  # zc-<score>: a zero-cost score at the ground truth's resolution
        out = {"score": zero_cost_score(kind[3:], spec_json, opts), "error": None, "zc_batch": opts["zc_batch"],
               "zc_repeats": opts["zc_repeats"], "resolution_px": opts["gt_resolution"]}
    else:
        raise ValueError(f"unknown cell kind {kind!r}")
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = out["seconds"] * opts["threads"] if opts["device"] != "cuda" else None
    out["load_after"] = os.getloadavg()[0]
    return out


def zero_cost_score(name: str, spec_json: str, opts: dict) -> float:
    """The mean of :func:`evaluation.zero_cost.score` over ``opts["zc_repeats"]`` initializations, each
    with its own seeded batch of ``opts["zc_batch"]`` training images (test split untouched) at the
    ground truth's resolution, unaugmented."""
    import numpy as np
    import torch

    from evaluation import zero_cost
    from evaluation.data import load_dataset
    from evaluation.training import TrainConfig, channel_stats, preprocess
    from search_spaces import ArchSpec
    from search_spaces.builder import build_model

    data = load_dataset("fashion-mnist")
    stats = channel_stats(data.train_images)
    cfg = TrainConfig(resolution_px=opts["gt_resolution"])
    spec = ArchSpec.from_json(spec_json)
    values = []
    for seed in range(opts["zc_repeats"]):
        torch.manual_seed(seed)
        model = build_model(spec)
        rng = np.random.default_rng(seed)
        idx = torch.from_numpy(rng.choice(len(data.train_labels), opts["zc_batch"], replace=False))
        images = preprocess(data.train_images[idx], cfg, stats).contiguous()
        values.append(zero_cost.score(name, model, images, data.train_labels[idx]))
    return float(np.mean(values))


FREE_SCORES = ("madds", "params")  # scores that cost nothing: the architecture's multiply-adds and parameters at 224²
BASELINE = "proxy@32"  # today's proxy: every other kind's τ is also compared with its τ, paired over architectures


def _tau(a, b) -> float:
    from scipy import stats as sps

    return float(sps.kendalltau(a, b).statistic)


def bootstrap_tau(score, truth, reference=None, *, resamples: int = 2000, seed: int = 0):
    """95 % percentile interval of Kendall τ(score, truth) over architectures resampled with replacement, and,
    with a ``reference`` score of the same architectures, of τ(score) − τ(reference) on the same resamples."""
    import numpy as np

    rng = np.random.default_rng(seed)
    score, truth = np.asarray(score, float), np.asarray(truth, float)
    ref = None if reference is None else np.asarray(reference, float)
    taus, diffs = [], []
    for _ in range(resamples):
        idx = rng.integers(0, len(truth), len(truth))
        if np.ptp(truth[idx]) == 0 or np.ptp(score[idx]) == 0:
            continue
        t = _tau(score[idx], truth[idx])
        taus.append(t)
        if ref is not None and np.ptp(ref[idx]) > 0:
            diffs.append(t - _tau(ref[idx], truth[idx]))
    ci = tuple(float(x) for x in np.nanpercentile(taus, [2.5, 97.5]))
    dci = tuple(float(x) for x in np.nanpercentile(diffs, [2.5, 97.5])) if diffs else None
    return ci, dci


def pool_studies(studies: list[dict]) -> dict:
    """Several studies (e.g. two ``--seed``s' architectures under one recipe) as one: their architectures
    concatenated, each one's cells with it. Only kinds that every study has for an architecture count."""
    if len({json.dumps({k: v for k, v in s["setup"].items() if k != "seed"}, sort_keys=True) for s in studies}) > 1:
        raise SystemExit("the studies differ in more than their seed (space, recipe, proxy steps): not pooled")
    archs, cells = [], {}
    for study in studies:
        for i, arch in enumerate(study["archs"]):
            for key, cell in study["cells"].items():
                kind, _, j = key.rpartition("/")
                if int(j) == i:
                    cells[f"{kind}/{len(archs)}"] = cell
            archs.append(arch)
    return {**studies[0], "archs": archs, "cells": cells}


def summarize(results: dict) -> list[dict]:
    """One row per kind: τ and ρ against the ground truth (mean over its seeds), τ's p-value and bootstrap
    interval, the paired bootstrap interval of its τ minus today's proxy's, and the seconds per candidate;
    the free scores (multiply-adds, parameters) as rows of their own; the seeds' agreement as the ceiling."""
    import numpy as np
    from scipy import stats as sps

    archs = results["archs"]
    kinds = sorted({c.split("/")[0] for c in results["cells"]})
    gt_kinds = [k for k in kinds if k.startswith("gt-s")]

    def scores(kind):
        if kind in FREE_SCORES:
            return [float(a[kind]) for a in archs]
        return [results["cells"].get(f"{kind}/{i}", {}).get("score") for i in range(len(archs))]

    gt_runs = [scores(k) for k in gt_kinds]
    gt = [float(np.mean(v)) if v and all(s is not None for s in v) else None for v in zip(*gt_runs)] if gt_runs else []
    base = scores(BASELINE) if BASELINE in kinds else None
    rows = []
    for kind in kinds + list(FREE_SCORES):
        s = scores(kind)
        keep = [i for i, (a, b) in enumerate(zip(s, gt)) if a is not None and b is not None
                and (base is None or base[i] is not None)]
        cells = [results["cells"].get(f"{kind}/{i}") for i in range(len(archs))]
        secs = [c["seconds"] for c in cells if c]
        cpu = [c["cpu_seconds"] for c in cells if c and c.get("cpu_seconds") is not None]
        row = {"kind": kind, "n": len(keep), "median_s": float(np.median(secs)) if secs else None,
               "median_cpu_s": float(np.median(cpu)) if cpu else None}
        if kind in FREE_SCORES:
            row["median_s"] = row["median_cpu_s"] = 0.0
        if len(keep) >= 4 and not kind.startswith("gt-s"):
            a, b = [s[i] for i in keep], [gt[i] for i in keep]
            kt = sps.kendalltau(a, b)
            row["kendall_tau"], row["tau_p"] = float(kt.statistic), float(kt.pvalue)
            row["spearman"] = float(sps.spearmanr(a, b).statistic)
            ci, dci = bootstrap_tau(a, b, None if base is None or kind == BASELINE else [base[i] for i in keep])
            row["tau_ci95"] = ci
            if dci is not None:
                row[f"tau_minus_{BASELINE}_ci95"] = dci
        rows.append(row)
    if len(gt_runs) >= 2:  # the ground truth's own seed-to-seed agreement: the ceiling
        a, b = gt_runs[0], gt_runs[1]
        pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
        if pairs:
            x, y = zip(*pairs)
            rows.append({"kind": f"{gt_kinds[0]} vs {gt_kinds[1]}", "n": len(pairs),
                         "mean_abs_diff": float(np.mean([abs(p - q) for p, q in pairs])),
                         "kendall_tau": float(sps.kendalltau(x, y).statistic),
                         "spearman": float(sps.spearmanr(x, y).statistic)})
    return rows


def print_table(rows: list[dict]) -> None:
    def f(x, fmt="{:.3f}"):
        return "" if x is None else fmt.format(x)

    def ci(x):
        return "" if x is None else f"[{x[0]:+.2f}, {x[1]:+.2f}]"

    print(f"| kind | n | Kendall τ vs ground truth (p) | τ 95 % bootstrap | τ − {BASELINE}'s, 95 % paired bootstrap "
          "| Spearman ρ | median wall s per candidate | median CPU-s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        tau = r.get("kendall_tau")
        tau_s = "" if tau is None else f"{tau:.3f}" + (f" ({r['tau_p']:.3f})" if "tau_p" in r else "")
        label = r["kind"]
        if "mean_abs_diff" in r:
            label += f" (mean |difference| {100 * r['mean_abs_diff']:.2f} points)"
        print(f"| {label} | {r['n']} | {tau_s} | {ci(r.get('tau_ci95'))} | "
              f"{ci(r.get(f'tau_minus_{BASELINE}_ci95'))} | {f(r.get('spearman'))} | "
              f"{f(r.get('median_s'), '{:.1f}')} | {f(r.get('median_cpu_s'), '{:.1f}')} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="mobilenetv3")
    p.add_argument("--archs", type=int, default=16)
    p.add_argument("--pool", type=int, default=2000, help="random architectures the K are drawn from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--supernet", help="a trained supernet of the space (without it the supernet cells are skipped)")
    p.add_argument("--supernet-settings", default="", help="extra scoring settings BxH (BatchNorm × held-out images)")
    p.add_argument("--gt-epochs", type=float, help="final-recipe epochs (default: the reproduction's Recipe)")
    p.add_argument("--gt-resolution", type=int, help="final-recipe resolution (default: the reproduction's Recipe)")
    p.add_argument("--gt-seeds", default="0", help="seeds of the ground-truth training, comma-separated")
    p.add_argument("--proxy", default="32,72",
                   help="proxy training resolutions, each R (--proxy-steps) or R-sN (N steps), e.g. 32,72,32-s400")
    p.add_argument("--proxy-steps", type=int, default=150)
    p.add_argument("--zero-cost", default="", help="zero-cost scores to run, comma-separated (naswot,synflow,snip)")
    p.add_argument("--zc-batch", type=int, default=64, help="images per zero-cost batch")
    p.add_argument("--zc-repeats", type=int, default=3,
                   help="initializations (and batches) averaged per zero-cost score")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--only", default="", help="run only these kinds (comma-separated, e.g. gt-s0,supernet)")
    p.add_argument("--indices", default="", help="run only these architectures (indices into the stored list: 0,1,2)")
    p.add_argument("--out", default="bench_fidelity.json")
    p.add_argument("--summarize", action="store_true", help="print the table of the --out file and run nothing")
    p.add_argument("--pool-with", default="",
                   help="with --summarize: other results files (comma-separated) whose architectures join the table")
    args = p.parse_args()
    if args.summarize:
        studies = [json.loads(Path(f).read_text()) for f in [args.out, *args.pool_with.split(",")] if f]
        print_table(summarize(pool_studies(studies)))
        return

    from hwnas.experiment import Recipe
    from search_spaces.files import atomic_write_text

    recipe = Recipe()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    opts = {"threads": args.threads, "device": args.device, "supernet": args.supernet,
            "gt_epochs": args.gt_epochs or recipe.epochs, "gt_resolution": args.gt_resolution or recipe.resolution_px,
            "gt_batch_size": recipe.batch_size, "gt_lr": recipe.lr, "proxy_steps": args.proxy_steps,
            "zc_batch": args.zc_batch, "zc_repeats": args.zc_repeats}
    setup = {"space": args.space, "archs": args.archs, "pool": args.pool, "seed": args.seed,
             "gt_epochs": opts["gt_epochs"], "gt_resolution": opts["gt_resolution"], "proxy_steps": args.proxy_steps}
    if results and results.get("setup") != setup:
        raise SystemExit(f"{out} holds another study ({results.get('setup')}); give another --out")
    if not results:
        results = {"setup": setup, "archs": draw_archs(args.space, args.archs, args.pool, args.seed), "cells": {},
                   "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}}
        atomic_write_text(out, json.dumps(results, indent=2))
    kinds = [f"gt-s{s}" for s in args.gt_seeds.split(",") if s] + [f"proxy@{r}" for r in args.proxy.split(",") if r]
    kinds += [f"zc-{z}" for z in args.zero_cost.split(",") if z]
    if args.supernet:
        kinds += ["supernet"] + [f"supernet-bn{s.split('x')[0]}-h{s.split('x')[1]}"
                                 for s in args.supernet_settings.split(",") if s]
    if args.only:
        kinds = [k for k in kinds if k in args.only.split(",")]
    order = spread_order(len(results["archs"]))
    if args.indices:
        order = [i for i in order if str(i) in args.indices.split(",")]
    todo = [(k, i) for i in order for k in kinds if f"{k}/{i}" not in results["cells"]]
    print(f"{len(todo)} cells to run ({len(results['cells'])} done) with {args.workers} worker(s)", flush=True)
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        running = {}
        while todo or running:
            while todo and len(running) < args.workers:
                k, i = todo.pop(0)
                running[pool.submit(run_cell, k, results["archs"][i]["spec"], opts)] = (k, i)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                k, i = running.pop(fut)
                cell = fut.result()
                cell.update(threads=args.threads, workers=args.workers, device=args.device)
                results["cells"][f"{k}/{i}"] = cell
                atomic_write_text(out, json.dumps(results, indent=2))
                print(f"{k}/{i} ({results['archs'][i]['analytic_ms']:.1f} ms analytic): score {cell['score']} "
                      f"in {cell['seconds']:.1f} s{' error ' + cell['error'] if cell.get('error') else ''}", flush=True)
    rows = summarize(results)
    results["summary"] = rows
    atomic_write_text(out, json.dumps(results, indent=2))
    print_table(rows)


if __name__ == "__main__":
    main()
