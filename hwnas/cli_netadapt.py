"""The ``netadapt`` command: ``netadapt refine --arch found.json --weights found.pt --reduction 0.2``.

A thin layer: options become a :class:`netadapt.refine.RefineConfig` and
:func:`netadapt.refine.run_refine` does the work. Errors print one line and exit with status 2
(``--debug`` shows the traceback), as the ``nas`` command does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence


def cmd_refine(args) -> int:
    from evaluation.evaluate import EvalConfig
    from hwnas.cli import latency_measure_options
    from netadapt.refine import RefineConfig, RefineError, run_refine

    if args.resume:
        cfg = RefineConfig.load(args.resume)
    else:
        if not args.arch:
            raise RefineError("--arch is required (a reference name or a spec file such as found.json)")
        train = {"batch_size": args.batch_size, "resolution_px": args.train_resolution, "threads": args.cpus_per_trial}
        eval_cfg = EvalConfig(dataset=args.dataset, data_dir=args.data_dir, holdout=args.holdout,
                              train_subset=args.train_subset, train=train, lut_path=args.lut,
                              deploy_resolution=args.deploy_resolution, split_seed=args.seed, keep_weights=True,
                              measure=latency_measure_options(args), task=args.task)
        cfg = RefineConfig(
            run_dir=args.run_dir or f"runs/netadapt-{time.strftime('%Y%m%d-%H%M%S')}", arch=args.arch,
            weights=args.weights, target_ms=args.target_ms, reduction=args.reduction, delta_ratio=args.delta_ratio,
            delta_ms=args.delta_ms, steps=args.steps, metric=args.metric, max_iters=args.max_iters,
            channel_step=args.channel_step, pretrain_epochs=args.pretrain_epochs, final_epochs=args.final_epochs,
            retrain=args.retrain, baseline=not args.no_baseline, finetune_lr=args.finetune_lr, seed=args.seed,
            cpus_per_trial=args.cpus_per_trial, ray_address=args.ray_address, eval=eval_cfg,
        )
    echo = None if args.json else (lambda line: print(line, flush=True))
    outcome = run_refine(cfg, resume=bool(args.resume), force=args.force, echo=echo)
    m = outcome.metrics
    if not args.no_report:
        _report(outcome.run_dir, echo)
    if args.json:
        json.dump({"run_dir": str(outcome.run_dir), **m}, sys.stdout, indent=2)
        print()
    else:
        print(f"\nwrote {outcome.run_dir}/refined.json, refined.pt, refined.onnx, trajectory.csv, final_metrics.json "
              f"({outcome.wall_s / 60:.1f} min)")
        if not m.get("target_met"):
            print("warning: the target was not met (see log.txt)", file=sys.stderr)
    return 0 if m.get("target_met") else 1


def _report(run_dir: Path, echo) -> None:
    try:
        from hwnas.report import write_report
    except ImportError:  # reports are optional for the refinement itself
        return
    path = write_report([run_dir], references=False)
    if echo:
        echo(f"report: {path}")


def build_parser() -> argparse.ArgumentParser:
    from evaluation.dense_task import TASKS
    from hwnas.cli import ArgumentParser, HelpFormatter, add_latency_backend_options
    from netadapt.refine import RefineConfig

    default = RefineConfig(run_dir="", arch="")  # every default below is the configuration's own
    ev = default.eval
    parser = ArgumentParser(
        prog="netadapt",
        description="NetAdapt refinement: shrink a trained network layer by layer until it meets a latency target.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("refine", help="shrink --arch until it meets the latency target", formatter_class=HelpFormatter)
    a = p.add_argument_group("start network and target")
    a.add_argument("--arch", metavar="NAME|FILE.json", help="reference name or spec file (e.g. found.json)")
    a.add_argument("--weights", metavar="FILE.pt", help="its trained weights (e.g. found.pt; loaded weights-only); "
                                                        "without them the network is trained first")
    t = a.add_mutually_exclusive_group()
    t.add_argument("--target-ms", type=float, help="latency target in ms on this device")
    t.add_argument("--reduction", type=float, help="fraction of the start latency to remove (0.2 = 20%% faster)")
    a.add_argument("--delta-ratio", type=float, default=default.delta_ratio,
                   help="least cut per iteration, as a fraction of L0")
    a.add_argument("--delta-ms", type=float, help="least cut per iteration in ms (overrides --delta-ratio)")
    s = p.add_argument_group("adaptation")
    s.add_argument("--steps", type=int, default=default.steps,
                   help="short-term fine-tune steps per proposal (the paper's T = 10000 on TPUs; scaled for a CPU)")
    s.add_argument("--metric", choices=("slope", "accuracy"), default=default.metric,
                   help="keep the proposal with max ΔAcc/|ΔLatency| (MobileNetV3) or max accuracy (NetAdapt)")
    s.add_argument("--max-iters", type=int, default=default.max_iters,
                   help="stop after this many iterations even if the target is not met")
    s.add_argument("--channel-step", type=int, default=default.channel_step, help="widths move in multiples of this")
    s.add_argument("--finetune-lr", type=float, default=default.finetune_lr, help="peak learning rate of fine-tunes")
    s.add_argument("--pretrain-epochs", type=float, default=default.pretrain_epochs,
                   help="training of the start network without --weights")
    s.add_argument("--final-epochs", type=float, default=default.final_epochs,
                   help="long-term fine-tune of the result")
    s.add_argument("--retrain", action="store_true", help="train the result from scratch instead (as the paper did)")
    s.add_argument("--no-baseline", action="store_true", help="skip the width-multiplier baseline")
    s.add_argument("--seed", type=int, default=default.seed,
                   help="seeds pre-training, every fine-tune and the held-out split")
    d = p.add_argument_group("proxy task")
    d.add_argument("--dataset", default=ev.dataset, choices=("fashion-mnist", "cifar10", "imagefolder"),
                   help="proxy data set")
    d.add_argument("--data-dir", help="dataset folder (fashion-mnist: /usr/share/datasets/fashion-mnist if unset)")
    d.add_argument("--batch-size", type=int, default=ev.train["batch_size"], help="training images per step")
    d.add_argument("--train-resolution", type=int, default=ev.train["resolution_px"], help="training input resolution")
    d.add_argument("--holdout", type=int, default=ev.holdout, help="held-out training images for accuracy")
    d.add_argument("--train-subset", type=int, help="train on at most this many images")
    d.add_argument("--task", choices=TASKS, default=ev.task,
                   help="only classification for now: NetAdapt does not refine dense (segmentation/detection) "
                        "networks yet")
    l = p.add_argument_group("latency")
    l.add_argument("--lut", help="latency table file (this device's if unset)")
    l.add_argument("--deploy-resolution", type=int, default=ev.deploy_resolution,
                   help="resolution at which latency is taken")
    add_latency_backend_options(l)
    r = p.add_argument_group("execution and output")
    r.add_argument("--run-dir", help="run directory (runs/netadapt-<time> if unset)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped refinement from its last iteration")
    r.add_argument("--force", action="store_true", help="overwrite a non-empty --run-dir")
    r.add_argument("--ray-address", help="join a Ray cluster (e.g. auto) instead of a local one")
    r.add_argument("--cpus-per-trial", type=int, default=default.cpus_per_trial,
                   help="CPUs (and torch threads) per fine-tune")
    r.add_argument("--no-report", action="store_true", help="do not write report.html at the end")
    r.add_argument("--json", action="store_true", help="print only a JSON summary")
    p.set_defaults(func=cmd_refine)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from hwnas.cli import run_cli

    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
