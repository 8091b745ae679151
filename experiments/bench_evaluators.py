"""Benchmark of the two evaluators (issue 13): what the proxy costs at a resolution that sees every
decision, what training the supernet costs, and how many candidates per hour the supernet scores.

Cells (each written to the results file as soon as it is measured; a rerun skips the cells it has):

* ``proxy@R`` — proxy training (``evaluation.training.train_model``) of the MobileNetV3-Large-like seed of
  the ``mobilenetv3`` space on Fashion-MNIST at R² input: training images/s and the projected seconds
  of one candidate's 150 steps of 128 images (the search's default).
* ``supernet-train@R`` — sandwich steps (largest + smallest + ``n_random`` random subnets, in-place
  distillation) of the ``mobilenetv3`` supernet: training images/s and the projected time of the
  default recipe (:class:`evaluation.supernet.SupernetRecipe`).
* ``supernet-score@H`` — one candidate scored as a subnet the way the evaluator does it: extraction,
  BatchNorm recalibration on ``BN_IMAGES`` training images, BN folded into the convolutions, and a
  seeded sample of H held-out images at the supernet's resolution; seconds per candidate and
  candidates per hour per core (weights untrained: the cost does not depend on them).

Usage (from the repository root)::

    python experiments/bench_evaluators.py [--threads 1] [--steps 10] [--out bench_evaluators.json]

Everything runs in this process with ``--threads`` torch threads (1 = what a Ray trial gets with
``--cpus-per-trial 1``). The machine's load average is recorded with each cell: on a shared machine
read the numbers as lower bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def _load() -> float:
    return os.getloadavg()[0]


def proxy_cell(resolution: int, steps: int, threads: int) -> dict:
    from evaluation.data import holdout_split, load_dataset
    from evaluation.training import TrainConfig, train_model
    from search_spaces.builder import build_model
    from search_spaces.spaces import get_space

    data = load_dataset("fashion-mnist")
    space = get_space("mobilenetv3", in_channels=1, num_classes=10)
    spec = space.decode(space.seeds()["mobilenetv3_large_like"])
    train_idx, val_idx = holdout_split(len(data.train_labels), 10_000, 0)
    cfg = TrainConfig(steps=steps, batch_size=128, resolution_px=resolution, threads=threads, max_batches_eval=1,
                      eval_batch_size=100, yield_to_measurements=False)
    train_model(build_model(spec), data, train_idx, val_idx, TrainConfig(**{**cfg.to_dict(), "steps": 1}))  # warm-up
    load = _load()
    res = train_model(build_model(spec), data, train_idx, val_idx, cfg)
    return {"images_per_s": res.images_per_s, "candidate_s_150_steps": 150 * 128 / res.images_per_s,
            "steps": steps, "threads": threads, "load_before": load}


def supernet_train_cell(resolution: int, steps: int, threads: int) -> dict:
    from evaluation import accel
    from evaluation.data import holdout_split, load_dataset
    from evaluation.supernet import SuperNet, SupernetRecipe, sandwich_step
    from evaluation.training import TrainConfig, channel_stats, preprocess
    from search_spaces.spaces import get_space

    torch.set_num_threads(threads)
    recipe = SupernetRecipe()
    data = load_dataset("fashion-mnist")
    train_idx, _ = holdout_split(len(data.train_labels), recipe.holdout, 0)
    space = get_space("mobilenetv3", in_channels=1, num_classes=10)
    net = SuperNet(space).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    dev = torch.device("cpu")
    scaler = accel.grad_scaler(dev)
    cfg = TrainConfig(resolution_px=resolution, in_channels=1)
    stats = channel_stats(data.train_images[torch.as_tensor(train_idx)])
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)

    def one_step() -> None:
        idx = torch.as_tensor(rng.choice(train_idx, recipe.batch_size, replace=False))
        x = preprocess(data.train_images[idx], cfg, stats, gen)
        subnets = [net.largest(), net.smallest()] + [space.sample(rng) for _ in range(recipe.n_random)]
        sandwich_step(net, opt, scaler, x, data.train_labels[idx], subnets, criterion, dev)

    one_step()  # warm-up
    load = _load()
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step()
    wall = time.perf_counter() - t0
    rate = steps * recipe.batch_size / wall
    planned = round(recipe.epochs * (len(train_idx) // recipe.batch_size))
    return {"images_per_s": rate, "step_s": wall / steps, "recipe_steps": planned,
            "projected_recipe_h": planned * wall / steps / 3600, "subnets_per_step": 2 + recipe.n_random,
            "batch_size": recipe.batch_size, "params": sum(p.numel() for p in net.parameters()), "steps": steps,
            "threads": threads, "load_before": load}


def supernet_score_cell(holdout_images: int, candidates: int, threads: int, bn_images: int | None = None) -> dict:
    from evaluation.data import holdout_split, load_dataset
    from evaluation.supernet import (
        BN_IMAGES,
        SUPERNET_RESOLUTION,
        SuperNet,
        calibration_indices,
        fold_batchnorm,
        recalibrate_bn,
        score_indices,
    )
    from evaluation.training import TrainConfig, channel_stats, evaluate
    from search_spaces.spaces import get_space

    torch.set_num_threads(threads)
    data = load_dataset("fashion-mnist")
    train_idx, val_idx = holdout_split(len(data.train_labels), 10_000, 0)
    space = get_space("mobilenetv3", in_channels=1, num_classes=10)
    net = SuperNet(space).eval()
    stats = channel_stats(data.train_images[torch.as_tensor(train_idx)])
    cfg = TrainConfig(resolution_px=SUPERNET_RESOLUTION, in_channels=1)
    bn_images = bn_images or BN_IMAGES
    calib = torch.as_tensor(calibration_indices(train_idx, bn_images, 0))
    val = torch.as_tensor(score_indices(val_idx, holdout_images, 0))
    rng = np.random.default_rng(1)
    times, parts = [], []
    load = _load()
    for k in range(candidates + 1):
        spec = space.decode(space.sample(rng))
        t0 = time.perf_counter()
        model = net.extract(spec)
        t1 = time.perf_counter()
        recalibrate_bn(model, data.train_images[calib], cfg, stats)
        t2 = time.perf_counter()
        evaluate(fold_batchnorm(model), data.train_images[val], data.train_labels[val], cfg, stats=stats)
        t3 = time.perf_counter()
        if k:  # the first is a warm-up
            times.append(t3 - t0)
            parts.append((t1 - t0, t2 - t1, t3 - t2))
    per = float(np.median(times))
    return {"candidate_s": per, "candidates_per_h": 3600 / per, "extract_s": float(np.median([p[0] for p in parts])),
            "bn_recal_s": float(np.median([p[1] for p in parts])), "eval_s": float(np.median([p[2] for p in parts])),
            "held_out_images": holdout_images, "bn_images": bn_images, "resolution": SUPERNET_RESOLUTION,
            "candidates": candidates, "threads": threads, "load_before": load}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10, help="timed steps per training cell")
    p.add_argument("--candidates", type=int, default=3, help="timed candidates per scoring cell")
    p.add_argument("--bn-images", type=int, help="BatchNorm recalibration images of the scoring cells (default: "
                                                  "the evaluator's BN_IMAGES)")
    p.add_argument("--out", default="bench_evaluators.json")
    p.add_argument("--cells", default="proxy@32,proxy@72,proxy@96,supernet-train@72,supernet-score@10000,"
                                      "supernet-score@2000")
    args = p.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("machine", {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                   "torch": torch.__version__})
    from search_spaces.files import atomic_write_text

    for cell in args.cells.split(","):
        if cell in results:
            print(f"{cell}: done already: {results[cell]}")
            continue
        kind, _, value = cell.partition("@")
        t0 = time.perf_counter()
        if kind == "proxy":
            results[cell] = proxy_cell(int(value), args.steps, args.threads)
        elif kind == "supernet-train":
            results[cell] = supernet_train_cell(int(value), args.steps, args.threads)
        elif kind == "supernet-score":
            results[cell] = supernet_score_cell(int(value), args.candidates, args.threads, args.bn_images)
        else:
            raise SystemExit(f"unknown cell {cell}")
        results[cell]["cell_s"] = time.perf_counter() - t0
        atomic_write_text(out, json.dumps(results, indent=2))
        print(f"{cell}: {results[cell]}", flush=True)


if __name__ == "__main__":
    main()
