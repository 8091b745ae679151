"""``--task classification|segmentation|detection`` and the dense head and mosaic options, shared by the
commands that train candidates (``nas search``; ``netadapt refine`` refuses dense tasks for now).

The values become ``EvalConfig.task`` and ``EvalConfig.dense`` (:class:`evaluation.dense_task.DenseTaskConfig`);
every default shown is the configuration's own.
"""

from __future__ import annotations

import argparse


def add_task_options(parser: argparse.ArgumentParser) -> None:
    from evaluation.configs import default
    from evaluation.dense_data import MosaicConfig
    from evaluation.dense_task import HEADS, TASKS, DenseTaskConfig
    from evaluation.evaluate import EvalConfig

    g = parser.add_argument_group("task (MobileNetV3 §6.3-6.4: the backbone with a dense head)")
    g.add_argument("--task", choices=TASKS, default=default(EvalConfig, "task"),
                   help="classification: the proxy task; segmentation/detection: each candidate gets a dense head "
                        "and is trained on Fashion-MNIST mosaics, scored by held-out mIoU / mAP (latency: the whole "
                        "network, head included; use --latency measured or analytic)")
    heads = [h for hs in HEADS.values() for h in hs]
    g.add_argument("--head", choices=heads,
                   help="dense head (default: lraspp for segmentation, ssdlite for detection)")
    g.add_argument("--head-filters", type=int, default=default(DenseTaskConfig, "filters"),
                   help="F, the segmentation head's width")
    g.add_argument("--reduced-tail", action="store_true", help="halve the last stage's channels (the paper's RF2)")
    g.add_argument("--dilated", action=argparse.BooleanOptionalAction, default=None,
                   help="atrous last stage (default: yes for segmentation, no for detection)")
    g.add_argument("--canvas", type=int, default=default(MosaicConfig, "canvas_px"),
                   help="side of the mosaics in pixels (the dense task's training resolution)")
    g.add_argument("--mosaic-images", type=int, metavar="N",
                   help="training mosaics (default: dense_splits' own)")
    g.add_argument("--holdout-images", type=int, metavar="N", help="held-out mosaics scored per candidate")


def task_options(args: argparse.Namespace) -> dict:
    """``{"task": ..., "dense": {...}}`` for EvalConfig from the parsed options (only what was changed is
    stored, so a classification run keeps ``dense`` empty). Dense options without a dense task are an error."""
    from evaluation.configs import default
    from evaluation.dense_data import MosaicConfig
    from evaluation.dense_task import DenseTaskConfig

    dense: dict = {}
    if args.head is not None:
        dense["head"] = args.head
    if args.head_filters != default(DenseTaskConfig, "filters"):
        dense["filters"] = args.head_filters
    if args.reduced_tail:
        dense["reduced_tail"] = True
    if args.dilated is not None:
        dense["dilated"] = args.dilated
    if args.canvas != default(MosaicConfig, "canvas_px"):
        dense["mosaic"] = {"canvas_px": args.canvas}
    splits = {k: v for k, v in (("train_images", args.mosaic_images), ("holdout_images", args.holdout_images))
              if v is not None}
    if splits:
        dense["splits"] = splits
    return {"task": args.task, "dense": dense}
