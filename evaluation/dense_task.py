"""The task a candidate is evaluated on: classification (the proxy), or segmentation / detection with a
dense head attached (MobileNetV3 §6.3–6.4, Howard et al. 2019, https://arxiv.org/abs/1905.02244).

``EvalConfig.task`` names the task (:data:`TASKS`); ``EvalConfig.dense`` holds a :class:`DenseTaskConfig`
as a dict: the head (LR-ASPP, R-ASPP or SSDLite, its filters, RF2, dilation) and the mosaic data
(:mod:`evaluation.dense_data`). A dense candidate is the searched backbone with the head attached
(:func:`with_head`), trained by :func:`evaluation.dense_training.train_dense` on training mosaics and
scored on held-out mosaics; its "accuracy" is the task's metric (:data:`METRICS`: mIoU or mAP).
Latency is always of the whole network, head included, at the deployment resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from search_spaces import ArchSpec, SpecError
from search_spaces.dense import attach_head, reduce_tail
from search_spaces.spec import SEGMENTATION_FILTERS, DenseHead, DenseKind

CLASSIFICATION = "classification"
TASKS = (CLASSIFICATION, "segmentation", "detection")
METRICS = {"classification": "accuracy", "segmentation": "miou", "detection": "map"}
"""The held-out score recorded as "accuracy" for each task (keys of the dense trainer's metrics)."""
METRIC_LABELS = {"accuracy": "accuracy", "miou": "mIoU", "map": "mAP"}
HEADS = {"segmentation": ("lraspp", "raspp"), "detection": ("ssdlite",)}  # the first is each task's default
SPLIT_OPTIONS = ("train_images", "holdout_images", "test_images", "holdout_items")  # of dense_splits
_SPLITS_CACHE: dict[tuple, Any] = {}  # per process, as evaluation.evaluate's data cache


class TaskError(ValueError):
    """A task option that cannot be used (unknown task, a head of the other task, bad mosaic options, ...)."""


def metric_name(task: str) -> str:
    """``accuracy``, ``miou`` or ``map``."""
    return METRICS.get(task, "accuracy")


def metric_label(task: str) -> str:
    """How reports name the task's score: ``accuracy``, ``mIoU`` or ``mAP``."""
    return METRIC_LABELS[metric_name(task)]


@dataclass(frozen=True)
class DenseTaskConfig:
    """The head attached to each candidate and the mosaic task it is trained on (``EvalConfig.dense``).

    Attributes:
        head: ``lraspp`` or ``raspp`` (segmentation), ``ssdlite`` (detection); None: the task's first.
        filters: F, the segmentation head's width.
        reduced_tail: the last stage's channels halved (the paper's RF2; DeepLab's rule for
            segmentation, torchvision's for detection, as :func:`search_spaces.dense.reduce_tail`).
        dilated: atrous last stage (None: for segmentation, not for detection, as the paper).
        mosaic: :class:`evaluation.dense_data.MosaicConfig` fields (canvas, items per image, ...).
        splits: keyword options of :func:`evaluation.dense_data.dense_splits` (train/holdout/test images,
            holdout items); absent ones keep its defaults.
        scoring: :class:`evaluation.dense_training.DenseConfig` fields other than ``task`` and ``train``
            (matching IoU, NMS, class weights, ...).
    """

    head: str | None = None
    filters: int = SEGMENTATION_FILTERS
    reduced_tail: bool = False
    dilated: bool | None = None
    mosaic: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
    scoring: dict = field(default_factory=dict)

    @classmethod
    def of(cls, cfg) -> DenseTaskConfig:
        """The dense options of an :class:`evaluation.evaluate.EvalConfig` (strict: unknown keys are errors)."""
        from evaluation.configs import from_dict

        return from_dict(cls, cfg.dense or {}, where="dense task options (EvalConfig.dense)", error=TaskError)


def check_task(cfg) -> None:
    """Cheap checks of ``cfg.task`` and ``cfg.dense`` (an EvalConfig): one :class:`TaskError` line naming the field."""
    task = cfg.task
    if task not in TASKS:
        raise TaskError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == CLASSIFICATION:
        if cfg.dense:
            raise TaskError(f"dense task options ({', '.join(sorted(cfg.dense))}) need --task segmentation|detection")
        return
    dense = DenseTaskConfig.of(cfg)
    if dense.head is not None and dense.head not in HEADS[task]:
        raise TaskError(f"--head {dense.head} is not a {task} head; {task} heads: {', '.join(HEADS[task])}")
    if isinstance(dense.filters, bool) or not isinstance(dense.filters, int) or dense.filters < 1:
        raise TaskError(f"--head-filters must be an int >= 1, got {dense.filters!r}")
    unknown = sorted(set(dense.splits) - set(SPLIT_OPTIONS))
    if unknown:
        raise TaskError(f"dense splits: unknown key {unknown[0]!r}; known: {', '.join(SPLIT_OPTIONS)}")
    for name in ("train_images", "holdout_images", "test_images"):
        value = dense.splits.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TaskError(f"dense splits: {name} must be an int >= 1, got {value!r}")
    mosaic_config(dense)
    bad = sorted({"task", "train"} & set(dense.scoring))
    if bad:
        raise TaskError(f"dense scoring: {bad[0]!r} is set by --task and the training options, not here")
    dense_config(cfg, {}, 0)  # the scoring options, validated by DenseConfig
    if cfg.evaluator == "supernet":
        raise TaskError(f"--evaluator supernet: --task {task} is not supported yet (the supernet is trained for "
                        "classification); use --evaluator proxy")


def mosaic_config(dense: DenseTaskConfig):
    """The :class:`evaluation.dense_data.MosaicConfig` of ``dense.mosaic`` (one-line error naming the field)."""
    from evaluation.configs import from_dict
    from evaluation.dense_data import MosaicConfig

    try:
        return from_dict(MosaicConfig, dense.mosaic, where="dense mosaic options", error=TaskError)
    except TaskError:
        raise
    except (ValueError, TypeError) as e:
        raise TaskError(str(e).splitlines()[0]) from None


def canvas_px(cfg) -> int:
    """The side of the mosaics (the dense task's training and scoring resolution)."""
    return mosaic_config(DenseTaskConfig.of(cfg)).canvas_px


def with_head(spec: ArchSpec, cfg, num_classes: int) -> ArchSpec:
    """``spec`` as the network of ``cfg.task``: unchanged for classification; a backbone (a space's decoded
    spec, a classification reference) gets the configured head, RF2 and dilation, ``num_classes`` = the data
    set's classes + background; a spec that already has a head (a dense reference, a ``found.json``) keeps it
    (its kind must fit the task) and gets ``num_classes``."""
    task = cfg.task
    if task == CLASSIFICATION:
        if spec.dense is not None:
            raise TaskError(f"{spec.name or spec.arch_id} has a {spec.dense.kind.value} head; give --task "
                            f"{'detection' if spec.dense.kind is DenseKind.SSDLITE else 'segmentation'}")
        return spec
    classes = num_classes + 1
    if spec.dense is not None:
        if spec.dense.kind.value not in HEADS[task]:
            raise TaskError(f"{spec.name or spec.arch_id} has a {spec.dense.kind.value} head, not a {task} head "
                            f"({', '.join(HEADS[task])})")
        return spec.replace(num_classes=classes)
    dense = DenseTaskConfig.of(cfg)
    kind = DenseKind(dense.head or HEADS[task][0])
    if dense.reduced_tail:
        spec = reduce_tail(spec, halve_first_expansion=kind is not DenseKind.SSDLITE)
    head = DenseHead(kind, filters=dense.filters) if kind is not DenseKind.SSDLITE else DenseHead(kind)
    return attach_head(spec, head, num_classes=classes, dilated=dense.dilated)


class TaskSpace:
    """A search space whose decoded networks carry the task's head (:func:`with_head`); everything else
    (decisions, seeds, sampling, size) is the wrapped space's, so searchers see the same decisions."""

    def __init__(self, space, cfg):
        self.space, self.cfg = space, cfg

    def __getattr__(self, name: str):
        return getattr(self.space, name)

    def decode(self, params) -> ArchSpec:
        return with_head(self.space.decode(params), self.cfg, self.space.num_classes)

    def with_head(self, spec: ArchSpec) -> ArchSpec:
        """A reference (e.g. ``--target-like``) as a network of this task and data set."""
        return with_head(spec.replace(in_channels=self.space.in_channels), self.cfg, self.space.num_classes)


def task_space(space, cfg):
    """``space`` itself for classification, else a :class:`TaskSpace`."""
    check_task(cfg)
    return space if cfg.task == CLASSIFICATION else TaskSpace(space, cfg)


# ------------------------------------------------------------------------------------------------
# Training and scoring a dense candidate
# ------------------------------------------------------------------------------------------------


def dense_splits_of(cfg):
    """The :class:`evaluation.dense_data.DenseSplits` of ``cfg`` (data set, mosaic options, ``split_seed``),
    made once per process."""
    from evaluation.data import load_dataset
    from evaluation.dense_data import dense_splits

    dense = DenseTaskConfig.of(cfg)
    mosaic = mosaic_config(dense)
    key = (cfg.dataset, cfg.data_dir, cfg.split_seed, repr(mosaic), repr(sorted(dense.splits.items())))
    if key not in _SPLITS_CACHE:
        data = load_dataset(cfg.dataset, cfg.data_dir)
        _SPLITS_CACHE.clear()
        _SPLITS_CACHE[key] = dense_splits(data, mosaic, seed=cfg.split_seed, **dense.splits)
    return _SPLITS_CACHE[key]


def dense_config(cfg, train: dict, seed: int, in_channels: int | None = None):
    """The :class:`evaluation.dense_training.DenseConfig` of ``cfg`` with the training options ``train``
    (a TrainConfig dict; its ``resolution_px`` is dropped: the canvas is the input)."""
    from evaluation.dense_training import DenseConfig

    dense = DenseTaskConfig.of(cfg)
    options = {k: v for k, v in train.items() if k != "resolution_px"}
    options["seed"] = seed
    if in_channels is not None:
        options["in_channels"] = in_channels
    try:
        return DenseConfig(task=cfg.task, train=options, **dense.scoring)
    except (TypeError, ValueError) as e:  # an unknown DenseConfig or TrainConfig field, a bad value
        raise TaskError(f"dense options: {str(e).splitlines()[0]}") from None


@dataclass(frozen=True)
class DenseScore:
    """A dense training's outcome in the fields :func:`evaluation.evaluate.evaluate_candidate` records
    (``val_accuracy`` = the task's metric); ``result`` is the trainer's full
    :class:`evaluation.dense_training.DenseTrainResult`."""

    val_accuracy: float
    metric: str
    steps: int
    train_time_s: float
    eval_time_s: float
    images_per_s: float
    result: Any
    val_loss: float | None = None


def train_dense_candidate(spec: ArchSpec, cfg, train: dict, seed: int,
                          init: Callable[[Any], None] | None = None):
    """Build the dense ``spec``, let ``init`` set its weights, train it on the training mosaics and score it
    on the held-out ones: ``(model, DenseScore, DenseConfig)``. A non-finite score raises
    :class:`evaluation.training.TrainingDiverged`."""
    import torch

    from evaluation.dense_training import train_dense
    from evaluation.training import TrainingDiverged
    from search_spaces.builder import anchors, build_model

    if spec.dense is None:
        raise TaskError(f"--task {cfg.task}: {spec.name or spec.arch_id} has no dense head")
    splits = dense_splits_of(cfg)
    side = splits.train.cfg.canvas_px
    if splits.train.num_classes != spec.num_classes:
        raise TaskError(f"num_classes: the network predicts {spec.num_classes} classes, the mosaics have "
                        f"{splits.train.num_classes} (background included)")
    canvas = splits.train.channels
    if spec.in_channels != canvas and not (canvas == 1 and spec.in_channels == 3):
        raise TaskError(f"in_channels: the network takes {spec.in_channels}-channel input, the mosaics give "
                        f"{canvas} (only a grayscale canvas can be repeated to 3 channels)")
    dcfg = dense_config(cfg, train, seed, spec.in_channels)
    trained = spec.replace(resolution=side)
    try:
        boxes = anchors(trained, side) if spec.dense.kind is DenseKind.SSDLITE else None
    except SpecError as e:
        raise TaskError(str(e)) from None
    torch.manual_seed(seed)
    model = build_model(trained)
    if init is not None:
        init(model)
    result = train_dense(model, splits, dcfg, anchors=boxes)
    name = metric_name(cfg.task)
    value = result.metrics[name]
    if not math.isfinite(value):
        raise TrainingDiverged(result.steps, value)
    score = DenseScore(val_accuracy=value, metric=name, steps=result.steps, train_time_s=result.train_time_s,
                       eval_time_s=result.eval_time_s, images_per_s=result.images_per_s, result=result)
    return model, score, dcfg


def score_test_split(model, spec: ArchSpec, cfg, dcfg, stats) -> float:
    """The task's metric of a trained dense model on the test mosaics (never used during a search)."""
    from evaluation.dense_training import evaluate_dense
    from search_spaces.builder import anchors

    splits = dense_splits_of(cfg)
    side = splits.test.cfg.canvas_px
    boxes = anchors(spec.replace(resolution=side), side) if spec.dense.kind is DenseKind.SSDLITE else None
    return evaluate_dense(model, splits.test, dcfg, anchors=boxes, stats=stats)[metric_name(cfg.task)]


def describe(cfg) -> str:
    """One line for logs: the task, its head and its metric."""
    if cfg.task == CLASSIFICATION:
        return "task classification (accuracy)"
    dense = DenseTaskConfig.of(cfg)
    head = dense.head or HEADS[cfg.task][0]
    extras = [f"F={dense.filters}"] if head != "ssdlite" else []
    extras += ["RF2"] if dense.reduced_tail else []
    return (f"task {cfg.task}: {head}{' (' + ', '.join(extras) + ')' if extras else ''} on "
            f"{canvas_px(cfg)}² mosaics, scored by {metric_label(cfg.task)}")
