"""Training and scoring of dense-prediction networks (segmentation, SSD detection) on mosaic data.

The same loop as the classification proxy (:func:`evaluation.training.run_steps`, with its `TrainConfig`:
optimizer, schedule, steps or epochs, device, thread count, BN momentum, compute slots, divergence check)
and its `preprocess`; only the batches, the targets and the loss differ.

* segmentation (MobileNetV3's LR-ASPP, Howard et al. 2019, https://arxiv.org/abs/1905.02244, Sec. 6.4):
  the model maps N×C×H×W to N×classes×H×W logits; per-pixel cross-entropy (optionally class-weighted);
  score: mean IoU (:func:`evaluation.dense_metrics.segmentation_metric`).
* detection (SSDLite, Sec. 6.3, with SSD's training objective, Liu et al. 2016,
  https://arxiv.org/abs/1512.02325, Sec. 2.2): the model maps N×C×H×W to ``(class logits N×A×classes,
  box codes N×A×4)`` over A anchors given as (cx, cy, w, h) in [0, 1]. Each anchor takes the ground-truth
  box it overlaps most when IoU >= ``match_iou``, and each box also takes its best anchor; softmax
  cross-entropy on all positives and on the hardest negatives (``negative_ratio`` per positive), smooth-L1
  (or L1) on the encoded boxes of the positives, both divided by the number of positives. Scoring decodes
  the boxes, keeps per class the ``candidates_per_class`` best above ``score_threshold``, applies per-class
  NMS and keeps ``detections_per_image``, then COCO mAP (:class:`evaluation.dense_metrics.DetectionMAP`).

Every training batch is new mosaics (step s trains on mosaic indices s·B … s·B + B − 1, wrapping around the
training set), generated in this process; generation is far faster than a training step
(experiments/bench_dense_data.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation import accel
from evaluation.dense_data import DenseBatch, DenseSplits, MosaicSet
from evaluation.dense_metrics import (
    batched_nms,
    box_iou,
    check_masks,
    cxcywh_to_xyxy,
    decode_boxes,
    detection_metric,
    encode_boxes,
    segmentation_metric,
)
from evaluation.training import (
    ChannelStats,
    TrainConfig,
    TrainProgress,
    TrainRunResult,
    channel_stats,
    input_channels,
    memory_format,
    planned_steps,
    preprocess,
    run_steps,
)
from search_spaces.checks import is_number

__all__ = [
    "BoxLoss",
    "DENSE_TRAIN",
    "DenseConfig",
    "DenseTask",
    "DenseTrainResult",
    "detection_loss",
    "evaluate_dense",
    "match_anchors",
    "mosaic_stats",
    "postprocess_detections",
    "train_dense",
]


class DenseTask(str, Enum):
    """The dense-prediction task."""

    SEGMENTATION = "segmentation"
    DETECTION = "detection"


class BoxLoss(str, Enum):
    """Regression loss on SSD box codes."""

    SMOOTH_L1 = "smooth_l1"
    L1 = "l1"


DENSE_TRAIN = {"batch_size": 32, "eval_batch_size": 100, "resolution_px": None, "crop_padding_px": 0}
"""How `DenseConfig.train` differs from `TrainConfig`'s defaults: smaller batches of whole canvases, the
canvas as it is (no resize: masks and boxes are in canvas pixels), no random crop (it would move boxes out
of the image; horizontal flips are applied to images, masks and boxes alike)."""


def _default_train() -> TrainConfig:
    return TrainConfig(**DENSE_TRAIN)


@dataclass(frozen=True)
class DenseConfig:
    """How a dense-prediction network is trained and scored.

    Attributes:
        task: `DenseTask` or its value.
        train: Optimizer, schedule, length, device etc. (see `TrainConfig`; defaults `DENSE_TRAIN`).
            ``resolution_px`` must be None (or the canvas side) and ``crop_padding_px`` 0.
        class_weights: Segmentation only: one cross-entropy weight per class (background first), or None.
        match_iou: Detection: an anchor is positive for a box it overlaps with at least this IoU.
        negative_ratio: Detection: hard negatives kept per positive anchor (SSD's 3:1).
        box_loss: Detection: `BoxLoss` or its value.
        score_threshold: Detection scoring: class probabilities below this are dropped before NMS.
        nms_iou: Detection scoring: per-class NMS IoU threshold.
        candidates_per_class: Detection scoring: best boxes per class kept before NMS.
        detections_per_image: Detection scoring: boxes kept per image after NMS.
        stats_images: Training mosaics whose pixel statistics normalize the input.
    """

    task: DenseTask = DenseTask.SEGMENTATION
    train: TrainConfig = field(default_factory=_default_train)
    class_weights: tuple[float, ...] | None = None
    match_iou: float = 0.5
    negative_ratio: float = 3.0
    box_loss: BoxLoss = BoxLoss.SMOOTH_L1
    score_threshold: float = 0.01
    nms_iou: float = 0.45
    candidates_per_class: int = 20
    detections_per_image: int = 20
    stats_images: int = 512

    def __post_init__(self) -> None:
        for name, enum_type in (("task", DenseTask), ("box_loss", BoxLoss)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum_type(value))
            except ValueError:
                allowed = ", ".join(member.value for member in enum_type)
                raise ValueError(f"DenseConfig.{name} must be one of {allowed}; got {value!r}") from None
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**{**DENSE_TRAIN, **self.train}))
        if not isinstance(self.train, TrainConfig):
            raise ValueError(f"DenseConfig.train must be a TrainConfig; got {type(self.train).__name__}")
        if self.train.crop_padding_px:
            raise ValueError(
                f"DenseConfig.train.crop_padding_px must be 0 for dense tasks; got {self.train.crop_padding_px}"
            )
        if self.class_weights is not None:
            weights = tuple(self.class_weights)
            if not weights or not all(is_number(w) and w >= 0 for w in weights):
                raise ValueError(f"DenseConfig.class_weights must be numbers >= 0, one per class; got {weights!r}")
            object.__setattr__(self, "class_weights", weights)
        for name, allowed, is_valid in (
            ("match_iou", "in (0, 1]", lambda v: 0 < v <= 1),
            ("nms_iou", "in (0, 1]", lambda v: 0 < v <= 1),
            ("score_threshold", "in [0, 1)", lambda v: 0 <= v < 1),
        ):
            value = getattr(self, name)
            if not is_number(value) or not is_valid(value):
                raise ValueError(f"DenseConfig.{name} must be {allowed}; got {value!r}")
        if not is_number(self.negative_ratio) or self.negative_ratio < 0:
            raise ValueError(f"DenseConfig.negative_ratio must be a number >= 0; got {self.negative_ratio!r}")
        for name in ("candidates_per_class", "detections_per_image", "stats_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DenseConfig.{name} must be an int >= 1; got {value!r}")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready values; ``DenseConfig(**cfg.to_dict())`` rebuilds it."""
        values = asdict(self)
        values.update(task=self.task.value, box_loss=self.box_loss.value, train=self.train.to_dict())
        if self.class_weights is not None:
            values["class_weights"] = list(self.class_weights)
        return values


@dataclass(frozen=True, kw_only=True)
class DenseTrainResult(TrainRunResult):
    """Outcome of one dense training run (the shared fields are in :class:`TrainRunResult`).

    Attributes:
        metrics: Held-out scores: ``{"miou"}`` (segmentation) or ``{"map", "map_50"}`` (detection), fractions.
    """

    metrics: dict[str, float]


# --------------------------------------------------------------------------------------------------
# SSD matching, loss and post-processing


def match_anchors(
    anchors: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assigns ground truth to anchors, SSD-style.

    Args:
        anchors: A×4 (cx, cy, w, h), in the units of ``boxes``.
        boxes: N×K×4 xyxy ground-truth boxes; rows with label 0 are padding.
        labels: N×K int labels, 0 = padding.
        iou_threshold: An anchor takes the box it overlaps most when that IoU is >= this.

    Returns:
        ``(anchor_labels N×A, anchor_boxes N×A×4)``: the matched box's label (0 = background) and box.
        Each real box also claims its best anchor, whatever the IoU (so no box goes unmatched).
    """
    n, k = labels.shape
    iou = box_iou(boxes, cxcywh_to_xyxy(anchors).expand(n, -1, -1))  # N×K×A
    iou = iou.masked_fill(labels[..., None] <= 0, -1.0)
    best_iou, best_box = iou.max(dim=1)  # N×A
    image, box = (labels > 0).nonzero(as_tuple=True)
    if len(image):
        best_anchor = iou.argmax(dim=2)  # N×K
        best_box[image, best_anchor[image, box]] = box
        best_iou[image, best_anchor[image, box]] = 2.0  # above any threshold
    anchor_labels = torch.gather(labels, 1, best_box)
    anchor_labels = torch.where(best_iou >= iou_threshold, anchor_labels, torch.zeros_like(anchor_labels))
    anchor_boxes = torch.gather(boxes, 1, best_box[..., None].expand(-1, -1, 4))
    return anchor_labels, anchor_boxes


def detection_loss(
    class_logits: torch.Tensor,
    box_codes: torch.Tensor,
    anchors: torch.Tensor,
    anchor_labels: torch.Tensor,
    anchor_boxes: torch.Tensor,
    cfg: DenseConfig,
) -> torch.Tensor:
    """SSD loss: (CE of positives + CE of the hardest negatives + box loss of positives) / positives.

    Args:
        class_logits: N×A×classes.
        box_codes: N×A×4 predicted codes.
        anchors: A×4 (cx, cy, w, h) in [0, 1].
        anchor_labels: N×A matched labels (`match_anchors`).
        anchor_boxes: N×A×4 matched xyxy boxes in [0, 1].
        cfg: ``negative_ratio`` and ``box_loss``.
    """
    positive = anchor_labels > 0
    num_positive = positive.sum(dim=1, keepdim=True)
    class_loss = F.cross_entropy(class_logits.flatten(0, 1).float(), anchor_labels.flatten(), reduction="none")
    class_loss = class_loss.view_as(anchor_labels)
    # Hard-negative mining: rank each image's negatives by loss, keep the first ratio × positives.
    negative_loss = class_loss.detach().masked_fill(positive, -math.inf)
    rank = negative_loss.argsort(dim=1, descending=True).argsort(dim=1)
    hard_negative = rank < (cfg.negative_ratio * num_positive)
    targets = encode_boxes(anchor_boxes[positive], anchors.expand_as(anchor_boxes)[positive])
    predicted = box_codes[positive].float()
    if cfg.box_loss is BoxLoss.SMOOTH_L1:
        box_loss = F.smooth_l1_loss(predicted, targets, reduction="sum")
    else:
        box_loss = F.l1_loss(predicted, targets, reduction="sum")
    total = class_loss[positive].sum() + class_loss[hard_negative & ~positive].sum() + box_loss
    return total / num_positive.sum().clamp(min=1)


def postprocess_detections(
    class_logits: torch.Tensor,
    box_codes: torch.Tensor,
    anchors: torch.Tensor,
    image_size: tuple[int, int],
    cfg: DenseConfig,
) -> list[dict[str, torch.Tensor]]:
    """Decoded, filtered, per-class NMS'd detections per image: ``{"boxes" (pixels xyxy), "scores", "labels"}``."""
    height, width = image_size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=box_codes.device)
    probabilities = class_logits.float().softmax(dim=-1)[..., 1:]  # drop background
    boxes = (decode_boxes(box_codes.float(), anchors).clamp(0, 1) * scale).cpu()
    probabilities = probabilities.cpu()
    n_anchors, n_classes = probabilities.shape[1:]
    out = []
    for image_boxes, image_probabilities in zip(boxes, probabilities):
        top = min(cfg.candidates_per_class, n_anchors)
        scores, anchor_index = image_probabilities.topk(top, dim=0)  # top×classes
        classes = torch.arange(1, n_classes + 1).expand(top, -1)
        keep = scores > cfg.score_threshold
        scores, anchor_index, classes = scores[keep], anchor_index[keep], classes[keep]
        candidates = image_boxes[anchor_index]
        # Boxes of zero area (clamped away) cannot match anything; drop them before NMS.
        real = (candidates[:, 2] > candidates[:, 0]) & (candidates[:, 3] > candidates[:, 1])
        scores, candidates, classes = scores[real], candidates[real], classes[real]
        kept = batched_nms(candidates, scores, classes, cfg.nms_iou)[: cfg.detections_per_image]
        out.append({"boxes": candidates[kept], "scores": scores[kept], "labels": classes[kept]})
    return out


# --------------------------------------------------------------------------------------------------
# Training and evaluation


def _check_anchors(anchors: torch.Tensor | None, cfg: DenseConfig) -> torch.Tensor | None:
    if cfg.task is not DenseTask.DETECTION:
        return None
    if anchors is None:
        raise ValueError("anchors: detection needs the model's anchors (A×4 cx, cy, w, h in [0, 1])")
    if anchors.ndim != 2 or anchors.shape[1] != 4 or not anchors.is_floating_point() or len(anchors) == 0:
        raise ValueError(
            f"anchors must be a float A×4 tensor (cx, cy, w, h); got {anchors.dtype} {tuple(anchors.shape)}"
        )
    if not torch.isfinite(anchors).all() or (anchors[:, 2:] <= 0).any():
        raise ValueError("anchors must be finite with positive widths and heights")
    return anchors.float()


def _check_resolution(data: MosaicSet, cfg: DenseConfig) -> None:
    side = data.cfg.canvas_px
    if cfg.train.resolution_px not in (None, side):
        raise ValueError(
            f"DenseConfig.train.resolution_px must be None or the canvas side {side}; got {cfg.train.resolution_px} "
            "(masks and boxes are in canvas pixels: change MosaicConfig.canvas_px instead)"
        )


def _check_channels(model: nn.Module, data: MosaicSet, cfg: DenseConfig) -> None:
    """One-line ``ValueError`` where the network's input channels cannot take the mosaics, before any step.

    The mosaics' channels become ``cfg.train.in_channels`` as in the proxy task (`input_channels`:
    only grayscale repeats); the network's are its first convolution's (none found: not checked).
    """
    given = input_channels(data, cfg.train)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != given:
        fix = (f"; set DenseConfig.train.in_channels={first.in_channels} to repeat the grayscale channel"
               if data.channels == 1 else "")
        raise ValueError(f"the network takes {first.in_channels}-channel input, the mosaics give {given} "
                         f"({data.channels}-channel canvas, DenseConfig.train.in_channels="
                         f"{cfg.train.in_channels}){fix}")


def mosaic_stats(data: MosaicSet, images: int) -> ChannelStats:
    """Pixel statistics of the first ``images`` mosaics of ``data`` (what the network input is normalized by)."""
    return channel_stats(data.batch(range(min(images, len(data)))).images)


def _step_loss(
    model: nn.Module,
    inputs: torch.Tensor,
    batch: DenseBatch,
    cfg: DenseConfig,
    anchors: torch.Tensor | None,
    num_classes: int,
    class_weights: torch.Tensor | None,
    check: bool,
) -> torch.Tensor:
    output = model(inputs)
    dev = inputs.device
    if cfg.task is DenseTask.SEGMENTATION:
        if check:
            _check_segmentation_output(output, batch.masks, num_classes)
        return F.cross_entropy(output.float(), accel.to_device(batch.masks, dev), weight=class_weights)
    class_logits, box_codes = _split_detection_output(output, len(inputs), anchors, num_classes, check)
    side = torch.tensor(batch.images.shape[-1], dtype=torch.float32)
    boxes = accel.to_device(batch.boxes / side, dev)
    anchor_labels, anchor_boxes = match_anchors(anchors, boxes, accel.to_device(batch.labels, dev), cfg.match_iou)
    return detection_loss(class_logits, box_codes, anchors, anchor_labels, anchor_boxes, cfg)


def _check_segmentation_output(logits: object, masks: torch.Tensor, num_classes: int) -> None:
    n, height, width = masks.shape
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (n, num_classes, height, width):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"segmentation model returned {shape}; expected logits ({n}, {num_classes}, {height}, {width}) "
            f"(N, classes incl. background, H, W of the input)"
        )


def _split_detection_output(
    output: object, n: int, anchors: torch.Tensor, num_classes: int, check: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if check:
        ok = isinstance(output, (tuple, list)) and len(output) == 2
        if ok:
            class_logits, box_codes = output
            ok = (tuple(class_logits.shape) == (n, len(anchors), num_classes)
                  and tuple(box_codes.shape) == (n, len(anchors), 4))
        if not ok:
            got = [tuple(t.shape) for t in output] if isinstance(output, (tuple, list)) else type(output).__name__
            raise ValueError(
                f"detection model returned {got}; expected (class logits ({n}, {len(anchors)}, {num_classes}), "
                f"box codes ({n}, {len(anchors)}, 4)) for {len(anchors)} anchors"
            )
    return output[0], output[1]


def train_dense(
    model: nn.Module,
    data: DenseSplits,
    cfg: DenseConfig,
    *,
    anchors: torch.Tensor | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> DenseTrainResult:
    """Trains ``model`` in place on ``data.train`` mosaics and scores it on ``data.holdout``.

    Args:
        model: Segmentation (N×C×H×W → N×classes×H×W) or detection (→ (N×A×classes, N×A×4)) network,
            classes = background + the data set's classes. Trained on ``cfg.train.device``, returned to the CPU.
        data: Train and held-out mosaic sets (`evaluation.dense_data.dense_splits`).
        cfg: Task, training and scoring settings.
        anchors: Detection only: A×4 (cx, cy, w, h) in [0, 1], in the order of the model's predictions.
        progress: Called with a `TrainProgress` every ``cfg.train.log_every_steps`` steps.

    Raises:
        TrainingDiverged: The training loss was NaN, inf or above ``cfg.train.max_loss``.
        ValueError: Bad settings, anchors, or model outputs of the wrong shape (one line naming the field).
    """
    train_cfg = cfg.train
    _check_resolution(data.train, cfg)
    _check_channels(model, data.train, cfg)
    anchors = _check_anchors(anchors, cfg)
    num_classes = data.train.num_classes
    if cfg.class_weights is not None and len(cfg.class_weights) != num_classes:
        raise ValueError(
            f"DenseConfig.class_weights has {len(cfg.class_weights)} entries; the task has {num_classes} classes "
            "(background first)"
        )
    stats = mosaic_stats(data.train, cfg.stats_images)
    previous_threads = torch.get_num_threads()
    if train_cfg.threads is not None:
        torch.set_num_threads(train_cfg.threads)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    previous_momenta = [m.momentum for m in norms]
    if train_cfg.bn_momentum is not None:
        for m in norms:
            m.momentum = train_cfg.bn_momentum
    try:
        steps, planned, batch_size, curve, train_time_s = _train_loop(model, data.train, cfg, anchors, stats, progress)
        started = time.perf_counter()
        metrics, count = _score(model, data.holdout, cfg, anchors, stats)
        eval_time_s = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous_threads)
        for m, momentum in zip(norms, previous_momenta):
            m.momentum = momentum
        model.to(torch.device("cpu"))
    return DenseTrainResult(
        metrics=metrics,
        val_count=count,
        train_loss_curve=curve,
        steps=steps,
        planned_steps=planned,
        epochs=steps * batch_size / len(data.train),
        images_per_s=steps * batch_size / train_time_s if train_time_s > 0 else 0.0,
        train_time_s=train_time_s,
        eval_time_s=eval_time_s,
        stopped_early=steps < planned,
        input_stats=stats,
    )


def _train_loop(
    model: nn.Module,
    data: MosaicSet,
    cfg: DenseConfig,
    anchors: torch.Tensor | None,
    stats: ChannelStats,
    progress: Callable[[TrainProgress], None] | None,
) -> tuple[int, int, int, tuple[tuple[int, float], ...], float]:
    train_cfg = cfg.train
    batch_size = min(train_cfg.batch_size, len(data))
    planned = planned_steps(train_cfg, len(data), batch_size)
    torch.manual_seed(train_cfg.seed)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    # Mosaic indices are shuffled once per pass with the training seed, so that the order is the seed's too.
    order = torch.randperm(len(data), generator=generator).numpy()
    dev = accel.device(train_cfg.device)
    if anchors is not None:
        anchors = anchors.to(dev)
    model.to(dev, memory_format=memory_format(train_cfg))
    model.train()
    weights = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, dtype=torch.float32, device=dev)

    def step_loss(step: int) -> torch.Tensor:
        batch = data.batch(order[np.arange(step * batch_size, (step + 1) * batch_size) % len(data)])
        if train_cfg.horizontal_flip:
            batch = batch.flip(torch.rand(batch_size, generator=generator) < 0.5)
        inputs = preprocess(accel.to_device(batch.images, dev), train_cfg, stats)
        with accel.autocast(dev):
            return _step_loss(model, inputs, batch, cfg, anchors, data.num_classes, weights, check=step == 0)

    steps, curve, seconds = run_steps(model, train_cfg, planned, step_loss, progress,
                                      what=f"{cfg.task.value} training loss")
    return steps, planned, batch_size, curve, seconds


def evaluate_dense(
    model: nn.Module,
    data: MosaicSet,
    cfg: DenseConfig,
    *,
    anchors: torch.Tensor | None = None,
    stats: ChannelStats | None = None,
) -> dict[str, float]:
    """Scores a dense model on mosaics, without gradients, in eval mode (the mode is restored).

    Args:
        model: As in `train_dense`.
        data: Mosaics to score (e.g. ``splits.test``); ``cfg.train.max_batches_eval`` caps how many.
        cfg: Task and scoring settings.
        anchors: Detection only: the model's anchors.
        stats: Input normalization, e.g. `DenseTrainResult.input_stats`; None = that of ``data`` itself.

    Returns:
        ``{"miou": …}`` for segmentation, ``{"map": …, "map_50": …}`` for detection (fractions in [0, 1]).
    """
    _check_resolution(data, cfg)
    _check_channels(model, data, cfg)
    anchors = _check_anchors(anchors, cfg)
    if stats is None:
        stats = mosaic_stats(data, cfg.stats_images)
    return _score(model, data, cfg, anchors, stats)[0]


def _score(
    model: nn.Module, data: MosaicSet, cfg: DenseConfig, anchors: torch.Tensor | None, stats: ChannelStats
) -> tuple[dict[str, float], int]:
    train_cfg = cfg.train
    count = len(data)
    if train_cfg.max_batches_eval is not None:
        count = min(count, train_cfg.max_batches_eval * train_cfg.eval_batch_size)
    dev = accel.device(train_cfg.device)
    if anchors is not None:
        anchors = anchors.to(dev)
    model.to(dev, memory_format=memory_format(train_cfg))
    side = data.cfg.canvas_px
    if cfg.task is DenseTask.SEGMENTATION:
        metric = segmentation_metric(data.num_classes)
    else:
        metric = detection_metric(data.num_classes, (side, side))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), accel.autocast(dev):
            for start in range(0, count, train_cfg.eval_batch_size):
                batch = data.batch(range(start, min(start + train_cfg.eval_batch_size, count)))
                inputs = preprocess(accel.to_device(batch.images, dev), train_cfg, stats)
                output = model(inputs)
                if cfg.task is DenseTask.SEGMENTATION:
                    _check_segmentation_output(output, batch.masks, data.num_classes)
                    check_masks(batch.masks, data.num_classes)
                    metric.update(output.argmax(dim=1).cpu(), batch.masks)
                else:
                    class_logits, box_codes = _split_detection_output(output, len(inputs), anchors,
                                                                      data.num_classes, check=True)
                    detections = postprocess_detections(class_logits, box_codes, anchors, (side, side), cfg)
                    metric.update(detections, batch.targets())
    finally:
        model.train(was_training)
    if cfg.task is DenseTask.SEGMENTATION:
        return {"miou": float(metric.compute())}, count
    return metric.compute(), count

