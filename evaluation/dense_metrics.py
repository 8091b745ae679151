"""Metrics and box geometry of the dense tasks: mIoU and COCO-style mAP through torchmetrics, boxes in torch.

The scores come from kept libraries, not from code of ours: mean IoU is torchmetrics'
``MulticlassJaccardIndex`` (``average="macro"``: one confusion matrix over all evaluated pixels, then the
mean of the per-class IoUs, the PASCAL VOC / Cityscapes convention; classes absent from both predictions
and targets are left out of the mean), and mAP is pycocotools' ``COCOeval`` (COCO's AP averaged over IoU
0.50:0.95, and AP at IoU 0.50), called directly: torchmetrics' ``MeanAveragePrecision``, a wrapper of the
same backend, refuses ``iou_type="bbox"`` without torchvision, which is not installed here.

The box helpers the SSD head needs (torchvision is not installed) are small torch functions: pairwise
IoU, (cx, cy, w, h) ↔ (x1, y1, x2, y2), the SSD box coding with variances (0.1, 0.2) (Liu et al. 2016,
https://arxiv.org/abs/1512.02325, Sec. 2.2, as in the public reference implementations), greedy NMS and
its per-class form.

The checks (`check_masks`, `check_boxes`) guard every place where labels or boxes enter a metric or a
loss, and raise a one-line ``ValueError`` naming the field.
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # imported where used: torchmetrics and pycocotools take seconds to import
    from torchmetrics.classification import MulticlassJaccardIndex

__all__ = [
    "BOX_VARIANCES",
    "batched_nms",
    "box_iou",
    "check_boxes",
    "check_masks",
    "check_num_classes",
    "cxcywh_to_xyxy",
    "decode_boxes",
    "DetectionMAP",
    "detection_metric",
    "encode_boxes",
    "nms",
    "segmentation_metric",
    "xyxy_to_cxcywh",
]

BOX_VARIANCES = (0.1, 0.2)
"""SSD's scaling of the encoded centre offsets and log size ratios (centre, size)."""


def check_num_classes(num_classes: object, field: str = "num_classes") -> int:
    """Returns ``num_classes`` if it is an int >= 2 (background and one class), else raises naming ``field``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{field} must be an int >= 2 (background + at least one class); got {num_classes!r}")
    return num_classes


def check_masks(masks: torch.Tensor, num_classes: int, field: str = "masks") -> None:
    """Raises ValueError naming ``field`` unless ``masks`` is an integer N×H×W tensor of labels in [0, num_classes)."""
    check_num_classes(num_classes)
    if masks.ndim != 3 or masks.is_floating_point() or masks.dtype == torch.bool:
        raise ValueError(f"{field} must be an integer N×H×W tensor; got {masks.dtype} {tuple(masks.shape)}")
    if masks.numel() and (int(masks.min()) < 0 or int(masks.max()) >= num_classes):
        raise ValueError(
            f"{field} hold labels in [{int(masks.min())}, {int(masks.max())}], outside the class range "
            f"[0, {num_classes})"
        )


def check_boxes(
    boxes: torch.Tensor, labels: torch.Tensor, image_size: tuple[int, int], num_classes: int, field: str = "boxes"
) -> None:
    """Raises ValueError naming ``field`` unless the boxes are valid targets of one image.

    Args:
        boxes: float B×4 pixel boxes (x1, y1, x2, y2).
        labels: int B labels in [1, num_classes) (0 is background, never a box).
        image_size: (height, width) in pixels; boxes must lie inside [0, width] × [0, height].
        num_classes: Classes including background.
        field: Name used in the message.
    """
    check_num_classes(num_classes)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
        raise ValueError(f"{field} must be a float B×4 tensor; got {boxes.dtype} {tuple(boxes.shape)}")
    if labels.shape != (len(boxes),) or labels.is_floating_point():
        raise ValueError(
            f"{field}: labels must be an integer tensor of {len(boxes)} entries; got {tuple(labels.shape)}"
        )
    if not len(boxes):
        return
    if not torch.isfinite(boxes).all():
        raise ValueError(f"{field} hold non-finite coordinates")
    height, width = image_size
    x1, y1, x2, y2 = boxes.unbind(1)
    bad = (x1 < 0) | (y1 < 0) | (x2 > width) | (y2 > height)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{field}[{i}] = {boxes[i].tolist()} lies outside the {width}×{height} image")
    flat = (x2 <= x1) | (y2 <= y1)
    if flat.any():
        i = int(flat.nonzero()[0])
        raise ValueError(f"{field}[{i}] = {boxes[i].tolist()} has x2 <= x1 or y2 <= y1")
    if int(labels.min()) < 1 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"{field}: labels span [{int(labels.min())}, {int(labels.max())}], outside the object classes "
            f"[1, {num_classes})"
        )


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: ``a`` … × M × 4 and ``b`` … × P × 4 → … × M × P (0 where a union is empty)."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    top_left = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    bottom_right = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) → (x1, y1, x2, y2), on the last dimension."""
    centre, size = boxes[..., :2], boxes[..., 2:]
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) → (cx, cy, w, h), on the last dimension."""
    return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], dim=-1)


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor,
                 variances: tuple[float, float] = BOX_VARIANCES) -> torch.Tensor:
    """SSD regression targets of xyxy ``boxes`` against (cx, cy, w, h) ``anchors`` (same units, broadcast).

    ``((cx - acx) / aw / v0, (cy - acy) / ah / v0, log(w / aw) / v1, log(h / ah) / v1)``.
    """
    centre_size = xyxy_to_cxcywh(boxes)
    offset = (centre_size[..., :2] - anchors[..., :2]) / anchors[..., 2:] / variances[0]
    scale = torch.log(centre_size[..., 2:] / anchors[..., 2:]) / variances[1]
    return torch.cat([offset, scale], dim=-1)


def decode_boxes(codes: torch.Tensor, anchors: torch.Tensor,
                 variances: tuple[float, float] = BOX_VARIANCES) -> torch.Tensor:
    """Inverse of `encode_boxes`: xyxy boxes from SSD codes and (cx, cy, w, h) anchors.

    The log size ratio is clamped at log(1000 / 16), as the public reference implementations do, so that an
    untrained head cannot overflow ``exp``.
    """
    centre = anchors[..., :2] + codes[..., :2] * variances[0] * anchors[..., 2:]
    size = anchors[..., 2:] * torch.exp((codes[..., 2:] * variances[1]).clamp(max=_MAX_LOG_RATIO))
    return cxcywh_to_xyxy(torch.cat([centre, size], dim=-1))


_MAX_LOG_RATIO = float(torch.log(torch.tensor(1000.0 / 16)))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, by decreasing score.

    A box is dropped when its IoU with a kept, higher-scoring box is above ``iou_threshold``. Ties in
    score keep the lower index first (stable sort).
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    if len(order) == 0:
        return order
    # The greedy pass is sequential; on a numpy matrix each step costs a microsecond, not a torch dispatch.
    above = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= above[i]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each class only: boxes of different classes never suppress each other.

    Boxes of each class are shifted by a class-dependent offset larger than every coordinate, so one
    `nms` call does all classes (the usual trick of the public reference implementations).
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64)
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold)


def segmentation_metric(num_classes: int) -> MulticlassJaccardIndex:
    """A torchmetrics mean-IoU accumulator over ``num_classes`` (background included): ``update(pred, target)``
    with N×H×W class-index tensors, then ``compute()``."""
    from torchmetrics.classification import MulticlassJaccardIndex

    check_num_classes(num_classes)
    return MulticlassJaccardIndex(num_classes=num_classes, average="macro", validate_args=False)


class DetectionMAP:
    """COCO-style mAP accumulator over images, scored by pycocotools' ``COCOeval`` (bbox, maxDets 100).

    ``update(preds, targets)`` takes per-image dicts as torchmetrics' detection metrics do — predictions
    ``{"boxes": D×4 xyxy pixels, "scores": D, "labels": D}``, targets ``{"boxes": B×4, "labels": B}`` —
    and ``compute()`` returns ``{"map": AP@[.50:.95], "map_50": AP@.50}`` as floats (-1 when no image has
    a target box, COCO's convention for "undefined").
    """

    def __init__(self, num_classes: int, image_size: tuple[int, int]) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.image_size = image_size
        self._images: list[dict] = []
        self._targets: list[dict] = []
        self._detections: list[dict] = []

    def update(self, preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]]) -> None:
        """Adds one batch of images (as many prediction dicts as target dicts)."""
        if len(preds) != len(targets):
            raise ValueError(f"preds: {len(preds)} images but targets: {len(targets)}")
        height, width = self.image_size
        for pred, target in zip(preds, targets):
            check_boxes(target["boxes"], target["labels"], self.image_size, self.num_classes, field="targets.boxes")
            if not (len(pred["boxes"]) == len(pred["scores"]) == len(pred["labels"])):
                raise ValueError("preds: boxes, scores and labels must have one entry per detection")
            image_id = len(self._images) + 1
            self._images.append({"id": image_id, "height": height, "width": width})
            for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                self._targets.append({"id": len(self._targets) + 1, "image_id": image_id, "category_id": label,
                                      "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
            for box, score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
                self._detections.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})

    def compute(self) -> dict[str, float]:
        """Scores everything added so far."""
        if not self._targets:
            return {"map": -1.0, "map_50": -1.0}
        if not self._detections:
            return {"map": 0.0, "map_50": 0.0}
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
            truth = COCO()
            truth.dataset = {"images": self._images, "annotations": self._targets,
                             "categories": [{"id": c} for c in range(1, self.num_classes)]}
            truth.createIndex()
            evaluation = COCOeval(truth, truth.loadRes(self._detections), iouType="bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return {"map": max(float(evaluation.stats[0]), 0.0), "map_50": max(float(evaluation.stats[1]), 0.0)}


def detection_metric(num_classes: int, image_size: tuple[int, int]) -> DetectionMAP:
    """A COCO-style mAP accumulator for ``num_classes`` (background included) on images of (height, width) px."""
    return DetectionMAP(num_classes, image_size)
