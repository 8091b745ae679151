"""How long must NetAdapt fine-tune each proposal? Ranking agreement of T against longer fine-tunes (issue 16).

NetAdapt (Yang et al. 2018, arXiv:1804.03230) fine-tunes every proposal of an iteration for T short-term
steps and keeps the best by ΔAccuracy/|ΔLatency| (MobileNetV3's metric, ``--metric slope``); T decides
both the cost of a refinement and whether it picks the right proposal. This script takes one iteration
of a trained network — its proposals made exactly as ``netadapt refine`` makes them
(:func:`netadapt.proposals.make_proposals`, widths in steps of 8, δ = ``--delta-ratio`` of the start
latency) — fine-tunes each for every T of ``--steps`` with NetAdapt's own fine-tune
(:func:`netadapt.refine.finetune_task`: weights inherited by largest L2 norm, ``RefineConfig``'s
fine-tune settings, one seed for all proposals, as in a refinement) and scores it on the held-out split.

It reports, for each T against the longest T (the reference ranking): Kendall τ and Spearman ρ of the
proposals' slopes, whether T picks the same proposal, and the regret — how much lower the longest
fine-tune's slope of T's pick is than the best one's. With two ``--seeds`` it also gives the
seed-to-seed τ at each T (the noise floor of a ranking at that length).

Latency comes from the analytic model at 224² by default (``--latency analytic``: no device and no
table needed; the proposals are the ones a table of this machine would make up to its errors), or
from this machine's lookup table (``--latency predicted``, built on first use).

Every cell is written to the results file when it finishes (resumable); ``--workers N`` fine-tunes N
proposals at once, one torch thread each.

Usage (from the repository root)::

    python experiments/bench_netadapt_steps.py [--arch mobilenetv3_small] [--weights START.pt | \\
        --pretrain-epochs 3] [--steps 30,120] [--seeds 0] [--delta-ratio 0.05] [--workers 2] \\
        [--out bench_netadapt_steps.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def refine_config(args):
    from netadapt.refine import RefineConfig

    return RefineConfig(run_dir="-", arch=args.arch, reduction=0.2, delta_ratio=args.delta_ratio,
                        pretrain_epochs=args.pretrain_epochs, seed=args.split_seed)


def run_cell(parent_json: str, child_json: str, weights: bytes, cfg_dict: dict, steps: int, seed: int) -> dict:
    """One proposal fine-tuned ``steps`` steps with NetAdapt's fine-tune; its held-out accuracy."""
    import torch

    from netadapt.refine import RefineConfig, finetune_task

    torch.set_num_threads(1)
    cfg = RefineConfig.from_dict(cfg_dict)
    t0 = time.perf_counter()
    res = finetune_task(parent_json, child_json, weights, cfg.eval, cfg.finetune_settings(steps=steps, threads=1),
                        seed)
    return {"accuracy": res["accuracy"], "error": res["error"], "seconds": time.perf_counter() - t0,
            "load_after": os.getloadavg()[0]}


def start_network(args, cfg, results: dict, out: Path):
    """The start spec and its trained weights (given, or trained once and kept beside the results)."""
    from evaluation.data import load_dataset
    from evaluation.evaluate import score_task, train_task
    from search_spaces import resolve_arch

    data = load_dataset(cfg.eval.dataset, cfg.eval.data_dir)
    spec = resolve_arch(args.arch).replace(in_channels=data.channels, num_classes=data.num_classes)
    weights_path = Path(args.weights) if args.weights else out.with_suffix(".start.pt")
    if not weights_path.exists():
        print(f"training {spec.name} for {args.pretrain_epochs:g} epochs (the start network)", flush=True)
        ecfg = dataclasses.replace(cfg.eval, keep_weights=True)
        res = train_task(spec.to_json(), ecfg, cfg.train_settings(epochs=args.pretrain_epochs, threads=args.workers),
                         cfg.seed)
        if res["error"]:
            raise SystemExit(f"training the start network failed: {res['error']}")
        weights_path.write_bytes(res["weights"])
    weights = weights_path.read_bytes()
    if "start_accuracy" not in results:
        results["start_accuracy"] = score_task(spec.to_json(), weights, cfg.eval, cfg.train_settings())["accuracy"]
    return spec, weights


def summarize(results: dict) -> dict:
    from scipy import stats as sps

    props = results["proposals"]
    acc0 = results["start_accuracy"]
    steps = sorted({int(k.split("/")[1][1:]) for k in results["cells"]})
    seeds = sorted({int(k.split("/")[2][1:]) for k in results["cells"]})

    def slopes(t, s):
        out = []
        for i, p in enumerate(props):
            c = results["cells"].get(f"{i}/t{t}/s{s}")
            out.append(None if not c or c["accuracy"] is None else (c["accuracy"] - acc0) / abs(p["delta_ms"]))
        return out

    rows = []
    longest = steps[-1] if steps else None
    for t in steps:
        for s in seeds:
            a, ref = slopes(t, s), slopes(longest, s)
            pairs = [(x, y) for x, y in zip(a, ref) if x is not None and y is not None]
            if len(pairs) < 3:
                continue
            x, y = zip(*pairs)
            pick, best = max(range(len(x)), key=lambda i: x[i]), max(range(len(y)), key=lambda i: y[i])
            secs = [c["seconds"] for k, c in results["cells"].items() if k.endswith(f"/t{t}/s{s}")]
            row = {"steps": t, "seed": s, "n": len(pairs), "vs_steps": longest,
                   "kendall_tau": float(sps.kendalltau(x, y).statistic),
                   "spearman": float(sps.spearmanr(x, y).statistic),
                   "same_pick": y[pick] == y[best], "regret": y[best] - y[pick], "median_s": statistics.median(secs)}
            rows.append(row)
        if len(seeds) >= 2:
            a, b = slopes(t, seeds[0]), slopes(t, seeds[1])
            pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
            if len(pairs) >= 3:
                x, y = zip(*pairs)
                rows.append({"steps": t, "seed": f"{seeds[0]} vs {seeds[1]}", "n": len(pairs),
                             "kendall_tau": float(sps.kendalltau(x, y).statistic),
                             "spearman": float(sps.spearmanr(x, y).statistic)})
    return {"rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="mobilenetv3_small", help="reference name or spec file of the start network")
    p.add_argument("--weights", help="trained weights of the start network (default: train it, kept as OUT.start.pt)")
    p.add_argument("--pretrain-epochs", type=float, default=3.0)
    p.add_argument("--steps", default="30,120", help="fine-tune lengths T to compare (the longest is the reference)")
    p.add_argument("--seeds", default="0", help="fine-tune seeds (two give the seed-to-seed ceiling)")
    p.add_argument("--delta-ratio", type=float, default=0.05, help="δ: the least cut per iteration, of L0")
    p.add_argument("--latency", default="analytic", choices=("analytic", "predicted"))
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default="bench_netadapt_steps.json")
    args = p.parse_args()

    from latency.model import latency_model
    from netadapt.proposals import make_proposals
    from search_spaces.files import atomic_write_text

    out = Path(args.out)
    cfg = refine_config(args)
    setup = {"arch": args.arch, "weights": args.weights, "pretrain_epochs": args.pretrain_epochs,
             "delta_ratio": args.delta_ratio, "latency": args.latency, "split_seed": args.split_seed}
    results = json.loads(out.read_text()) if out.exists() else {}
    if results and results.get("setup") != setup:
        raise SystemExit(f"{out} holds another study ({results.get('setup')}); give another --out")
    if not results:
        results = {"setup": setup, "cells": {},
                   "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}}
    spec, weights = start_network(args, cfg, results, out)
    if "proposals" not in results:
        lat = latency_model(args.latency, resolution=224)
        l0 = lat.latency_ms(spec)
        props = make_proposals(spec, lat.latency_ms, l0, args.delta_ratio * l0, cfg.channel_step, cfg.min_width)
        results["l0_ms"] = l0
        results["proposals"] = [{"group": pr.name, "kind": pr.kind, "old_width": pr.group.width,
                                 "new_width": pr.new_width, "latency_ms": pr.latency_ms, "delta_ms": pr.latency_ms - l0,
                                 "spec": pr.spec.to_json()} for pr in props]
        atomic_write_text(out, json.dumps(results, indent=2))
    props = results["proposals"]
    print(f"start {spec.name}: held-out {results['start_accuracy']:.4f}, {results['l0_ms']:.3f} ms ({args.latency}); "
          f"{len(props)} proposals", flush=True)
    todo = [(i, int(t), int(s)) for s in args.seeds.split(",") for t in args.steps.split(",") for i in range(len(props))
            if f"{i}/t{int(t)}/s{int(s)}" not in results["cells"]]
    cfg_dict = cfg.to_dict()
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        running = {}
        while todo or running:
            while todo and len(running) < args.workers:
                i, t, s = todo.pop(0)
                running[pool.submit(run_cell, spec.to_json(), props[i]["spec"], weights, cfg_dict, t, s)] = (i, t, s)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                i, t, s = running.pop(fut)
                cell = fut.result()
                results["cells"][f"{i}/t{t}/s{s}"] = cell
                atomic_write_text(out, json.dumps(results, indent=2))
                print(f"proposal {i} ({props[i]['group']} {props[i]['old_width']}→{props[i]['new_width']}), T={t}, "
                      f"seed {s}: {cell['accuracy']} in {cell['seconds']:.0f} s", flush=True)
    results["summary"] = summarize(results)
    atomic_write_text(out, json.dumps(results, indent=2))
    print("| T | seed | vs T | n | Kendall τ | Spearman ρ | same pick | regret (slope) | median s per proposal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results["summary"]["rows"]:
        print(f"| {r['steps']} | {r['seed']} | {r.get('vs_steps', '')} | {r['n']} | {r['kendall_tau']:.3f} | "
              f"{r['spearman']:.3f} | {r.get('same_pick', '')} | "
              f"{'' if r.get('regret') is None else format(r['regret'], '.4f')} | "
              f"{'' if r.get('median_s') is None else format(r['median_s'], '.1f')} |")


if __name__ == "__main__":
    main()
