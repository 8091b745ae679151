"""Which decisions of a space can share weights on a CPU budget (issue 13)? Short controlled trainings
of the supernet, each scored on the same subnets the way the supernet evaluator scores them.

``bench_supernet_elasticity.py`` showed the default supernet's random subnets near 40 % after its whole
recipe. This script separates the causes with equal, short budgets (``--steps`` optimizer steps of 64
images, at ``--resolution``; every arm uses the same batches, augmentation and learning-rate schedule):

* ``standalone`` — each scored architecture built by the ordinary builder and trained alone (the
  ground truth of ``--truth``);
* ``single`` — the first scored architecture trained *through the supernet* (checks the supernet's
  mechanics: slicing, kernel transforms, extraction; it must match ``standalone``);
* ``sandwich`` — the supernet's recipe (:func:`evaluation.supernet.sandwich_step`: the largest, the
  smallest and 2 random subnets per step, in-place distillation); with ``--kd W`` every other subnet
  also learns the largest's stage outputs (:func:`distill_features_step`);
* ``spos`` — 4 uniformly random subnets per step, each on the labels (single-path one-shot);
* ``stagewise`` — stage-wise distillation from the largest (:func:`stagewise_step`);
* ``finetune`` — each scored architecture extracted from a supernet saved by ``--save`` (``--load``) and
  trained ``--steps`` steps alone, as ``standalone`` trains it from scratch: does the supernet's start
  rank better than a proxy of the same steps from scratch?

``--fix op=mbconv6,skip=identity`` holds decisions at one value, in training and in the scored
subnets, and ``--ops dsconv,mbconv3,mbconv6`` samples the op among a subset, so that each decision
family's cost to weight sharing can be read off against ``spos``. Scored: the largest, the smallest and
``--subnets`` random subnets (seed 1), each extracted, BatchNorm recalibrated on 500 training images,
accuracy on 1,000 held-out images. ``--truth FILE`` (a results file holding ``standalone`` runs of the
same ``--fix``/``--ops``, seed 0) adds Kendall τ and Spearman ρ of the scores against the longest of them.

Usage (from the repository root)::

    python experiments/bench_supernet_sharing.py ARM [--steps 300] [--resolution 40] [--fix K=V,...] \\
        [--ops OP,...] [--kd W] [--subnets 8] [--truth FILE] [--seed 0] [--save F | --load F] \\
        [--lr 0.05] [--threads 1] \\
        [--out bench_supernet_sharing.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("standalone", "single", "sandwich", "spos", "stagewise", "finetune")



def distill_features_step(net, opt, x, y, subnets, criterion, weight: float) -> None:
    """The sandwich step plus stage-wise *feature* distillation (arm ``sandwich --kd W``): besides the
    largest's soft predictions, every other subnet learns each searched stage's output of the largest
    (MSE of its first channels over their variance, mean over the stages both keep), end to end."""
    import torch
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=True)
    teacher = targets = None
    for k, params in enumerate(subnets):
        feats: list = []
        logits = net(x, net.subnet(params), feats)
        if k == 0:
            loss = criterion(logits, y)
            teacher = F.softmax(logits.detach(), dim=1)
            targets = [None if f is None else f.detach() for f in feats]
        else:
            terms = [F.mse_loss(f, t[:, :f.shape[1]]) / (t[:, :f.shape[1]].var() + 1e-5)
                     for f, t in zip(feats[1:], targets[1:]) if f is not None and t is not None]
            loss = -(teacher * F.log_softmax(logits, dim=1)).sum(1).mean() + weight * torch.stack(terms).mean()
        loss.backward()
    opt.step()


def stagewise_step(net, opt, x, y, subnets, criterion) -> None:
    """Stage-wise distillation from the largest (arm ``stagewise``; after DNA's block-wise supervision, Li
    et al. 2020, https://arxiv.org/abs/1911.13053, the largest as the teacher): the largest learns the
    labels; every other subnet's searched stage runs on the largest's input to that stage (its first
    channels) and learns the largest's output of it, so no stage depends on what the subnet chose before
    it; the head learns the largest's soft predictions from the subnet's last stage."""
    import torch
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=True)
    teacher = targets = None
    for k, params in enumerate(subnets):
        subnet = net.subnet(params)
        if k == 0:
            feats: list = []
            logits = net(x, subnet, feats)
            loss = criterion(logits, y)
            teacher = F.softmax(logits.detach(), dim=1)
            targets = [f.detach() for f in feats]  # the largest keeps every stage
        else:
            prev = last = targets[0]
            terms = []
            for i, blocks in enumerate(subnet):
                if not blocks:
                    continue  # a removed stage: the next one runs on what this one was given
                last = net.run_stage(i, prev[:, :blocks[0].in_channels], blocks)
                t = targets[i + 1][:, :last.shape[1]]
                terms.append(F.mse_loss(last, t) / (t.var() + 1e-5))
                prev = targets[i + 1]
            loss = torch.stack(terms).mean() - (teacher * F.log_softmax(net.head(last), dim=1)).sum(1).mean()
        loss.backward()
    opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arm", choices=ARMS)
    p.add_argument("--space", default="mobilenetv3")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--resolution", type=int, default=40)
    p.add_argument("--fix", default="", help="decisions held at one value, e.g. op=mbconv6,skip=identity")
    p.add_argument("--ops", default="", help="op choices sampled (e.g. dsconv,mbconv3,mbconv6); all when empty")
    p.add_argument("--kd", type=float, default=0.0, help="stage-wise feature distillation weight (sandwich)")
    p.add_argument("--subnets", type=int, default=8, help="random subnets scored (standalone: trained alone)")
    p.add_argument("--truth", default="", help="a results file with a standalone run of the same settings: "
                   "report Kendall tau and Spearman against it")
    p.add_argument("--seed", type=int, default=0, help="initialisation, batches and sampled subnets (not the "
                   "scored architectures)")
    p.add_argument("--save", default="", help="keep the trained supernet's weights in this file")
    p.add_argument("--load", default="", help="finetune: the supernet's weights (from --save)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench_supernet_sharing.json")
    args = p.parse_args()

    import numpy as np
    import torch
    from torch import nn

    from evaluation.evaluate import EvalConfig, dataset_split
    from evaluation.supernet import (
        SuperNet,
        calibration_indices,
        recalibrate_bn,
        sandwich_step,
        score_indices,
    )
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
    ops = [o for o in args.ops.split(",") if o]

    def fix(vec: dict) -> dict:
        out = {}
        for k, v in vec.items():
            field = k.split(".", 1)[1]
            out[k] = type(v)(fixes[field]) if field in fixes else v
            if field == "op" and ops and out[k] not in ops:  # a seeded, uniform draw among the allowed ops
                out[k] = ops[zlib.crc32((k + json.dumps(vec, sort_keys=True)).encode()) % len(ops)]
        return out

    tcfg = TrainConfig(batch_size=64, lr=args.lr, warmup_fraction=0.03, resolution_px=args.resolution,
                       in_channels=data.channels, device="cpu")
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    rng = np.random.default_rng(1)
    scored = {f"random{i}": fix(space.sample(rng)) for i in range(args.subnets)}

    def train(model: nn.Module, vec: dict | None = None) -> None:
        """``args.steps`` steps of the arm on ``model`` (a SuperNet, or a stand-alone network)."""
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True)
        model.train()
        for step in range(args.steps):
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, args.steps, tcfg)
            g = torch.Generator().manual_seed(step + 1_000_003 * args.seed)
            idx = train_idx[torch.randint(len(train_idx), (64,), generator=g)]
            x = preprocess(data.train_images[idx], tcfg, stats, g)
            y = data.train_labels[idx]
            rng = np.random.default_rng([args.seed, step])
            if args.arm in ("stagewise", "sandwich"):
                subnets = [model.largest(), model.smallest(), fix(space.sample(rng)), fix(space.sample(rng))]
                if args.arm == "stagewise":
                    stagewise_step(model, opt, x, y, subnets, criterion)
                elif args.kd:
                    distill_features_step(model, opt, x, y, subnets, criterion, args.kd)
                else:
                    sandwich_step(model, opt, scaler, x, y, subnets, criterion, torch.device("cpu"))
                continue
            opt.zero_grad(set_to_none=True)
            if args.arm in ("standalone", "finetune"):
                criterion(model(x), y).backward()
            else:
                for v in [vec] if args.arm == "single" else [fix(space.sample(rng)) for _ in range(4)]:
                    criterion(model(x, model.subnet(v)), y).backward()
            opt.step()

    calib = torch.as_tensor(calibration_indices(train_idx.numpy(), 500, 0))
    val = torch.as_tensor(score_indices(val_idx, 1000, 0))

    def score(model: nn.Module) -> float:
        recalibrate_bn(model, data.train_images[calib], tcfg, stats)
        return evaluate(model, data.train_images[val], data.train_labels[val], tcfg, stats=stats)[0]

    rows = {}
    t0 = time.perf_counter()
    if args.arm in ("standalone", "finetune"):  # every scored architecture, each trained alone
        if args.arm == "finetune":
            if not args.load:
                p.error("finetune needs --load SUPERNET (a state saved by --save)")
            net = SuperNet(space)
            net.load_state_dict(torch.load(args.load, weights_only=True))
        for name, vec in scored.items():
            torch.manual_seed(args.seed)
            if args.arm == "finetune":  # from the supernet's weights of the architecture
                model = net.extract(space.decode(vec)).to(memory_format=torch.channels_last)
            else:
                model = build_model(space.decode(vec)).to(memory_format=torch.channels_last)
            train(model)
            rows[name] = score(model)
            print(name, rows[name], flush=True)
    else:
        torch.manual_seed(args.seed)
        net = SuperNet(space).to(memory_format=torch.channels_last)
        train(net, scored["random0"])
        if args.save:
            torch.save(net.state_dict(), args.save)
        for name, vec in {"largest": net.largest(), "smallest": net.smallest(), **scored}.items():
            rows[name] = score(net.extract(space.decode(vec)))
    wall_s = time.perf_counter() - t0  # training and scoring
    rand = [v for k, v in rows.items() if k.startswith("random")]
    result = {"arm": args.arm, "fix": fixes, "ops": ops, "kd": args.kd,
              "steps": args.steps, "resolution": args.resolution, "lr": args.lr, "subnets": args.subnets,
              "seed": args.seed,
              "wall_s": round(wall_s, 1), "accuracy": rows, "random_mean": float(np.mean(rand))}
    if args.truth:  # ranking against stand-alone training of the same architectures
        from scipy import stats as sps

        runs = [r for r in json.loads(Path(args.truth).read_text()) if r["arm"] == "standalone"
                and r.get("seed", 0) == 0 and r["fix"] == fixes and r["ops"] == ops]
        longest = max(runs, key=lambda r: r["steps"])  # the longest stand-alone training
        truth, result["truth_steps"] = longest["accuracy"], longest["steps"]
        names = [k for k in scored if k in truth]
        a, b = [rows[k] for k in names], [truth[k] for k in names]
        result["kendall_tau"] = float(sps.kendalltau(a, b)[0])
        result["spearman"] = float(sps.spearmanr(a, b)[0])
        result["truth_n"] = len(names)
    out = Path(args.out)
    runs = json.loads(out.read_text()) if out.exists() else []
    atomic_write_text(out, json.dumps(runs + [result], indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
