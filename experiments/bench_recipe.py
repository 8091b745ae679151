"""How long must the final recipe train? Test accuracy of the reference networks against epochs (issue 16).

Every network of the reproduction table is trained from scratch with one recipe
(:class:`hwnas.experiment.Recipe`: SGD with a cosine schedule, batch 128, random crop and flip). A recipe
stopped far from the networks' plateau ranks them by how fast they train, not by how good they are. This
script trains each reference network with the recipe's schedule stretched to E epochs, for several E,
resolutions and seeds, through the table's own training path (:func:`evaluation.evaluate.train_task`
with the recipe's held-out split) and reports the **test-split** accuracy of each cell.

For each network and resolution it prints the accuracy by epochs (mean ± standard deviation over the
seeds) and the smallest E whose mean is within ``--tolerance`` (0.5 point) of the best mean measured:
the shortest recipe near that network's plateau, as far as the longest E measured can show it.

Every cell is written to the results file as soon as it finishes, so a killed run resumes where it
stopped; ``--workers N`` trains N cells at once (one torch thread each by default).

Usage (from the repository root)::

    python experiments/bench_recipe.py [--networks mobilenetv3_small,mobilenetv3_large] \\
        [--epochs 3,6,12,24] [--resolutions 32] [--seeds 0] [--workers 2] [--out bench_recipe.json]
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


def cell_key(network: str, resolution: int, epochs: float, seed: int) -> str:
    return f"{network}@{resolution}/e{epochs:g}/s{seed}"


def run_cell(network: str, resolution: int, epochs: float, seed: int, opts: dict) -> dict:
    """Train one network with the recipe stretched to ``epochs`` at ``resolution``; its test accuracy."""
    import torch

    from evaluation.data import load_dataset
    from evaluation.evaluate import EvalConfig, train_task
    from hwnas.experiment import Recipe
    from search_spaces import references

    torch.set_num_threads(opts["threads"])
    recipe = Recipe()
    data = load_dataset(opts["dataset"], opts["data_dir"])
    spec = references.get(network).replace(in_channels=data.channels, num_classes=data.num_classes)
    cfg = EvalConfig(dataset=opts["dataset"], data_dir=opts["data_dir"], holdout=recipe.holdout,
                     train_subset=recipe.train_subset, split_seed=recipe.seed, keep_weights=False)
    train = {**recipe.train(opts["threads"]), "epochs": epochs, "resolution_px": resolution}
    t0 = time.perf_counter()
    res = train_task(spec.to_json(), cfg, train, seed, test=True)
    return {"test_accuracy": res["test_accuracy"], "heldout_accuracy": res["accuracy"], "steps": res.get("steps"),
            "error": res["error"], "seconds": time.perf_counter() - t0, "threads": opts["threads"],
            "load_after": os.getloadavg()[0]}


def summarize(results: dict, tolerance: float) -> list[dict]:
    """Per network and resolution: accuracy by epochs over the seeds, and the shortest E near the best."""
    import numpy as np

    groups: dict[tuple[str, int], dict[float, list[float]]] = {}
    for key, cell in results["cells"].items():
        if cell.get("test_accuracy") is None:
            continue
        head, e, _ = key.split("/")
        network, res = head.split("@")
        groups.setdefault((network, int(res)), {}).setdefault(float(e[1:]), []).append(100 * cell["test_accuracy"])
    rows = []
    for (network, res), by_e in sorted(groups.items()):
        curve = {e: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None, len(v))
                 for e, v in sorted(by_e.items())}
        best = max(m for m, _, _ in curve.values())
        near = min(e for e, (m, _, _) in curve.items() if m >= best - tolerance)
        rows.append({"network": network, "resolution": res, "curve": curve, "best": best, "near_plateau_epochs": near,
                     "longest_epochs": max(curve)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", default="mobilenetv3_small,mobilenetv3_large")
    p.add_argument("--epochs", default="3,6,12,24")
    p.add_argument("--resolutions", default="32")
    p.add_argument("--seeds", default="0")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tolerance", type=float, default=0.5, help="points of test accuracy that count as the plateau")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench_recipe.json")
    args = p.parse_args()

    from search_spaces import references
    from search_spaces.files import atomic_write_text

    networks = [n for n in args.networks.split(",") if n]
    for n in networks:
        if n not in references.names():
            raise SystemExit(f"unknown reference network {n!r}; choose from {', '.join(references.names())}")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    setup = {"dataset": args.dataset}
    if results and results.get("setup") != setup:
        raise SystemExit(f"{out} holds another study ({results.get('setup')}); give another --out")
    if not results:
        results = {"setup": setup, "cells": {},
                   "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}}
    opts = {"threads": args.threads, "dataset": args.dataset, "data_dir": args.data_dir}
    # short cells first: the curve's start is there within minutes, the long ones follow
    todo = sorted(((n, int(r), float(e), int(s)) for n in networks for r in args.resolutions.split(",")
                   for e in args.epochs.split(",") for s in args.seeds.split(",")), key=lambda c: (c[2], c[3]))
    todo = [c for c in todo if cell_key(*c) not in results["cells"]]
    print(f"{len(todo)} cells to run ({len(results['cells'])} done) with {args.workers} worker(s)", flush=True)
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        running = {}
        while todo or running:
            while todo and len(running) < args.workers:
                c = todo.pop(0)
                running[pool.submit(run_cell, *c, opts)] = c
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                c = running.pop(fut)
                cell = fut.result()
                results["cells"][cell_key(*c)] = cell
                atomic_write_text(out, json.dumps(results, indent=2))
                acc = cell["test_accuracy"]
                print(f"{cell_key(*c)}: test {'-' if acc is None else f'{100 * acc:.2f} %'} in {cell['seconds']:.0f} s"
                      f"{' error ' + cell['error'] if cell.get('error') else ''}", flush=True)
    rows = summarize(results, args.tolerance)
    results["summary"] = [{**r, "curve": {f"{e:g}": v for e, v in r["curve"].items()}} for r in rows]
    atomic_write_text(out, json.dumps(results, indent=2))
    for r in rows:
        points = ", ".join(f"{e:g}: {m:.2f}" + (f" ± {sd:.2f}" if sd is not None else "") + f" (n={n})"
                           for e, (m, sd, n) in r["curve"].items())
        print(f"{r['network']} @{r['resolution']}²: {points}; best {r['best']:.2f}; within {args.tolerance:g} point "
              f"from {r['near_plateau_epochs']:g} epochs (longest measured {r['longest_epochs']:g})")


if __name__ == "__main__":
    main()
