"""``nas supernet train`` and ``nas supernet eval``: the weight-sharing supernet of a search space.

See :mod:`evaluation.supernet`: ``train`` trains (or resumes, or reuses from the cache) the supernet
of a space with the sandwich rule and in-place distillation; ``eval`` scores one architecture as a
subnet of it (weights copied into the ordinary model, BatchNorm recalibrated, held-out images).
"""

from __future__ import annotations

import argparse
import json
import sys


def _recipe(args):
    from evaluation.supernet import SupernetRecipe

    given = {"epochs": args.epochs, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
             "n_random": args.n_random, "resolution_px": args.resolution, "holdout": args.holdout,
             "split_seed": args.split_seed, "train_subset": args.train_subset, "seed": args.seed}
    return SupernetRecipe(**{k: v for k, v in given.items() if v is not None})  # the rest: the recipe's defaults


def cmd_supernet_train(args) -> int:
    from evaluation.supernet import SupernetRecipe, train_supernet

    echo = None if args.json else (lambda line: print(line, flush=True))
    out = train_supernet(args.space, _recipe(args), dataset=args.dataset, data_dir=args.data_dir, device=args.device,
                         threads=args.threads, checkpoint_every=args.checkpoint_every, path=args.out,
                         force=args.force, echo=echo)
    if args.json:
        json.dump({"path": str(out.path), "steps": out.meta["steps"], "resumed_from": out.resumed_from,
                   "wall_s": out.wall_s, "images_per_s": out.images_per_s, "meta": out.meta}, sys.stdout, indent=2,
                  default=str)
        print()
    else:
        where = f"--supernet {out.path}" if args.out else f"(finds {out.path} in the cache)"
        holdout = f" --holdout {args.holdout}" if args.holdout != SupernetRecipe.holdout else ""
        print(f"next: nas search --evaluator supernet --space {args.space}{holdout} --target-ms T {where}")
    return 0


def _arch(name: str, sn):
    """A spec of the supernet's space: a space seed name, ``largest``/``smallest``, a reference or a file."""
    from search_spaces import resolve_arch

    net = sn.net
    space = net.space
    if name in ("largest", "smallest"):
        spec = space.decode(net.largest() if name == "largest" else net.smallest())
        return spec.replace(name=name)
    if name in space.seeds():
        return space.decode(space.seeds()[name]).replace(name=name)
    spec = resolve_arch(name)
    return spec.replace(in_channels=space.in_channels, num_classes=space.num_classes)


def cmd_supernet_eval(args) -> int:
    from evaluation.evaluate import EvalConfig, weights_bytes
    from evaluation.rundir import atomic_write_bytes
    from evaluation.supernet import find_supernet, load_supernet, score_subnet
    from search_spaces import count

    path = args.supernet or find_supernet(args.space, args.dataset, holdout=args.holdout, split_seed=args.split_seed,
                                          resolution=args.resolution)
    sn = load_supernet(path, space=args.space if not args.supernet else None, dataset=args.dataset,
                       holdout=args.holdout, split_seed=args.split_seed,
                       resolution=args.resolution)
    spec = _arch(args.arch, sn)
    train = {"threads": args.threads, "device": args.device}
    cfg = EvalConfig(dataset=args.dataset, data_dir=args.data_dir, holdout=args.holdout, split_seed=args.split_seed,
                     train={k: v for k, v in train.items() if v is not None}, evaluator="supernet",
                     supernet=str(path))
    model, res = score_subnet(spec, cfg, bn_images=args.bn_images, score_images=args.score_images or None)
    c = count(spec.replace(resolution=224))
    info = {"arch": args.arch, "arch_id": spec.arch_id, "supernet": str(path), "accuracy": res.val_accuracy,
            "val_loss": res.val_loss, "images": res.val_count, "resolution": sn.resolution,
            "bn_images": args.bn_images, "bn_s": res.train_time_s, "eval_s": res.eval_time_s,
            "params": c.params, "madds_224": c.madds}
    if args.save:
        atomic_write_bytes(args.save, weights_bytes(model.state_dict()))
        spec.save(str(args.save).removesuffix(".pt") + ".json")
        info["saved"] = args.save
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    print(f"{args.arch} (id {spec.arch_id}): held-out accuracy {res.val_accuracy:.4f} on {res.val_count} images at "
          f"{sn.resolution}², BatchNorm recalibrated on {args.bn_images} training images and folded "
          f"({res.train_time_s:.1f} s + {res.eval_time_s:.1f} s to score); {c.params:,} params, "
          f"{c.madds / 1e6:.1f}M MAdds at 224²")
    if args.save:
        print(f"wrote {args.save} and its spec (an ordinary checkpoint: netadapt refine --weights {args.save})")
    return 0


def add_supernet_commands(sub: argparse._SubParsersAction) -> None:
    from evaluation.accel import DEFAULT_DEVICE, DEVICES
    from evaluation.evaluate import EvalConfig
    from evaluation.supernet_recipe import BN_IMAGES, SCORE_IMAGES, SupernetRecipe
    from hwnas.cli import HelpFormatter
    from search_spaces.spaces import SPACE_NAMES

    r = SupernetRecipe()  # every default below is the recipe's own
    r_dataset = EvalConfig().dataset
    p = sub.add_parser("supernet", help="weight-sharing supernet of a search space: train, evaluate subnets")
    ssub = p.add_subparsers(dest="supernet_command", required=True, metavar="{train,eval}")

    def data_options(q, holdout_help: str) -> None:
        q.add_argument("--dataset", default=r_dataset, choices=("fashion-mnist", "cifar10", "imagefolder"),
                       help="data set")
        q.add_argument("--data-dir", help="dataset folder (fashion-mnist: /usr/share/datasets/fashion-mnist if unset)")
        q.add_argument("--holdout", type=int, default=r.holdout, help=holdout_help)
        q.add_argument("--split-seed", type=int, default=r.split_seed, help="seed of the held-out split")
        q.add_argument("--device", choices=DEVICES, default=DEFAULT_DEVICE, help="where to compute (auto: CUDA if "
                                                                                  "present)")
        q.add_argument("--threads", type=int, help="torch threads on the CPU (default: torch's)")
        q.add_argument("--json", action="store_true", help="print only a JSON summary")

    t = ssub.add_parser("train", help="train the supernet of a space (sandwich rule, in-place distillation); "
                                      "resumes a killed run, reuses a finished one", formatter_class=HelpFormatter)
    t.add_argument("--space", required=True, choices=SPACE_NAMES, help="search space")
    data_options(t, "held-out training images never trained on (must match the search's --holdout)")
    t.add_argument("--epochs", type=float, help=f"passes over the training images (default {r.epochs:g})")
    t.add_argument("--steps", type=int, help="optimizer steps instead of --epochs")
    t.add_argument("--batch-size", type=int, help=f"images per step (default {r.batch_size})")
    t.add_argument("--lr", type=float, help=f"peak learning rate (default {r.lr})")
    t.add_argument("--n-random", type=int, help=f"random subnets per step besides the largest and smallest "
                                                f"(default {r.n_random})")
    t.add_argument("--resolution", type=int, help=f"training resolution (default {r.resolution_px}: every searched "
                                                  "block runs on ≥ 3×3 maps)")
    t.add_argument("--train-subset", type=int, help="train on at most this many images")
    t.add_argument("--seed", type=int, help=f"seed of every random draw (default {r.seed})")
    t.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    t.add_argument("--out", help="supernet file (default: the cache, keyed by space, dataset, recipe and seed)")
    t.add_argument("--force", action="store_true", help="discard a finished or half-trained supernet and retrain")
    t.set_defaults(func=cmd_supernet_train)

    e = ssub.add_parser("eval", help="held-out accuracy of an architecture as a subnet (BatchNorm recalibrated)",
                        formatter_class=HelpFormatter)
    e.add_argument("--arch", required=True, metavar="NAME|FILE.json",
                   help="an architecture of the space: largest, smallest, a seed of the space "
                        "(e.g. mobilenetv3_large_like), a reference name or a spec file (e.g. found.json)")
    e.add_argument("--space", default="mobilenetv3", choices=SPACE_NAMES,
                   help="search space (to find its supernet in the cache; ignored with --supernet)")
    e.add_argument("--supernet", metavar="FILE", help="supernet file (default: the space's in the cache)")
    data_options(e, "held-out images to score on (the supernet's split)")
    e.add_argument("--resolution", type=int, help="require a supernet trained at this resolution")
    e.add_argument("--bn-images", type=int, default=BN_IMAGES, help="training images that recalibrate BatchNorm")
    e.add_argument("--score-images", "--max-eval", type=int, default=SCORE_IMAGES,
                   help="held-out images that score the subnet: a fixed, seeded sample (0: all of them); a search "
                        "scores every candidate on the same sample")
    e.add_argument("--save", metavar="OUT.pt", help="write the subnet's weights (and OUT.json, its spec)")
    e.set_defaults(func=cmd_supernet_eval)
