"""Which decisions of a space can share weights on a CPU budget (issue 13)? Short controlled trainings
of the supernet, each scored on the same subnets the way the supernet evaluator scores them.

``bench_supernet_elasticity.py`` showed the default supernet's random subnets near 40 % after its whole
recipe. This script separates the causes with equal, short budgets (``--steps`` optimizer steps of 64
images, at ``--resolution``; every arm uses the same batches, augmentation and learning-rate schedule):

* ``standalone`` — one fixed random architecture, built by the ordinary builder and trained alone;
* ``single`` — the same architecture trained *through the supernet* (checks the supernet's mechanics:
  slicing, kernel transforms, extraction; it must match ``standalone``);
* ``sandwich`` — the supernet's recipe (:func:`evaluation.supernet.sandwich_step`: the largest, the
  smallest and 2 random subnets per step, in-place distillation);
* ``spos`` — 4 uniformly random subnets per step, each on the labels (single-path one-shot).

``--fix op=mbconv6,skip=identity`` holds decisions at one value, in training and in the scored
subnets, so that each decision family's cost to weight sharing can be read off against ``spos``.
Scored: the largest, the smallest and 8 random subnets (seed 1; the first is ``standalone``'s
architecture), each extracted, BatchNorm recalibrated on 500 training images, accuracy on 1,000
held-out images.

Usage (from the repository root)::

    python experiments/bench_supernet_sharing.py ARM [--steps 300] [--resolution 40] [--fix K=V,...] \\
        [--lr 0.05] [--threads 1] [--out bench_supernet_sharing.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("standalone", "single", "sandwich", "spos")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arm", choices=ARMS)
    p.add_argument("--space", default="mobilenetv3")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--resolution", type=int, default=40)
    p.add_argument("--fix", default="", help="decisions held at one value, e.g. op=mbconv6,skip=identity")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench_supernet_sharing.json")
    args = p.parse_args()

    import numpy as np
    import torch
    from torch import nn

    from evaluation.evaluate import EvalConfig, dataset_split
    from evaluation.supernet import SuperNet, calibration_indices, recalibrate_bn, sandwich_step, score_indices
    from evaluation.training import TrainConfig, channel_stats, evaluate, learning_rate, preprocess
    from search_spaces.builder import build_model
    from search_spaces.files import atomic_write_text
    from search_spaces.spaces import get_space

    torch.set_num_threads(args.threads)
    data, train_idx, val_idx = dataset_split(EvalConfig(dataset="fashion-mnist"))
    train_idx = torch.as_tensor(np.asarray(train_idx))
    stats = channel_stats(data.train_images[train_idx])
    space = get_space(args.space, in_channels=data.channels, num_classes=data.num_classes)
    fixes = dict(kv.split("=", 1) for kv in args.fix.split(",") if kv)

    def fix(vec: dict) -> dict:
        out = {}
        for k, v in vec.items():
            field = k.split(".", 1)[1]
            out[k] = type(v)(fixes[field]) if field in fixes else v
        return out

    torch.manual_seed(0)
    net = SuperNet(space).to(memory_format=torch.channels_last)
    fixed = fix(space.sample(np.random.default_rng(1)))
    alone = None
    if args.arm == "standalone":
        alone = build_model(space.decode(fixed)).to(memory_format=torch.channels_last)
        params = alone.parameters()
    else:
        params = net.parameters()
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, nesterov=True)
    tcfg = TrainConfig(batch_size=64, lr=args.lr, warmup_fraction=0.03, resolution_px=args.resolution,
                       in_channels=data.channels, device="cpu")
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    (alone or net).train()
    t0 = time.perf_counter()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, args.steps, tcfg)
        g = torch.Generator().manual_seed(step)
        idx = train_idx[torch.randint(len(train_idx), (64,), generator=g)]
        x = preprocess(data.train_images[idx], tcfg, stats, g)
        y = data.train_labels[idx]
        rng = np.random.default_rng([0, step])
        if args.arm == "sandwich":
            sandwich_step(net, opt, scaler, x, y, [net.largest(), net.smallest(), fix(space.sample(rng)),
                                                   fix(space.sample(rng))], criterion, torch.device("cpu"))
            continue
        opt.zero_grad(set_to_none=True)
        if args.arm == "standalone":
            criterion(alone(x), y).backward()
        else:
            for vec in [fixed] if args.arm == "single" else [fix(space.sample(rng)) for _ in range(4)]:
                criterion(net(x, net.subnet(vec)), y).backward()
        opt.step()
    train_s = time.perf_counter() - t0

    rng = np.random.default_rng(1)
    subnets = {"largest": net.largest(), "smallest": net.smallest()}
    subnets.update({f"random{i}": fix(space.sample(rng)) for i in range(8)})
    calib = torch.as_tensor(calibration_indices(train_idx.numpy(), 500, 0))
    val = torch.as_tensor(score_indices(val_idx, 1000, 0))
    rows = {}
    for name, vec in subnets.items():
        if alone is not None and name != "random0":
            continue  # the stand-alone network is one architecture
        model = alone if alone is not None else net.extract(space.decode(vec))
        recalibrate_bn(model, data.train_images[calib], tcfg, stats)
        rows[name], _ = evaluate(model, data.train_images[val], data.train_labels[val], tcfg, stats=stats)
    rand = [v for k, v in rows.items() if k.startswith("random")]
    result = {"arm": args.arm, "fix": fixes, "steps": args.steps, "resolution": args.resolution, "lr": args.lr,
              "train_s": round(train_s, 1), "accuracy": rows, "random_mean": float(np.mean(rand))}
    out = Path(args.out)
    runs = json.loads(out.read_text()) if out.exists() else []
    atomic_write_text(out, json.dumps(runs + [result], indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
