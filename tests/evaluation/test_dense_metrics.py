"""Tests of evaluation.dense_metrics: box geometry against hand-computed cases, NMS, the metrics, the checks."""

from __future__ import annotations

import math

import pytest
import torch

from evaluation.dense_metrics import (
    batched_nms,
    box_iou,
    check_boxes,
    check_masks,
    check_num_classes,
    cxcywh_to_xyxy,
    decode_boxes,
    detection_metric,
    encode_boxes,
    nms,
    segmentation_metric,
    xyxy_to_cxcywh,
)


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [1, 1, 1, 1]])
    expected = torch.tensor([[1 / 7, 1.0, 0.0, 0.0], [0.0, 0.25, 0.0, 0.0]])
    assert torch.allclose(box_iou(a, b), expected)
    # Batched: … × M × P.
    assert torch.allclose(box_iou(a.expand(3, -1, -1), b.expand(3, -1, -1))[2], expected)


def test_box_formats_and_ssd_coding_round_trip():
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.4], [0.0, 0.0, 1.0, 1.0]])
    assert torch.allclose(xyxy_to_cxcywh(boxes), torch.tensor([[0.3, 0.3, 0.4, 0.2], [0.5, 0.5, 1.0, 1.0]]))
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)
    anchors = torch.tensor([[0.3, 0.3, 0.4, 0.2], [0.4, 0.6, 0.5, 0.25]])
    codes = encode_boxes(boxes, anchors)
    # A box equal to its anchor codes to zeros; the second by hand: ((0.5-0.4)/0.5/0.1, (0.5-0.6)/0.25/0.1,
    # log(1/0.5)/0.2, log(1/0.25)/0.2).
    assert torch.allclose(codes[0], torch.zeros(4), atol=1e-6)
    expected = torch.tensor([2.0, -4.0, math.log(2) / 0.2, math.log(4) / 0.2])
    assert torch.allclose(codes[1], expected, atol=1e-5)
    assert torch.allclose(decode_boxes(codes, anchors), boxes, atol=1e-6)
    # Huge codes are clamped instead of overflowing.
    assert torch.isfinite(decode_boxes(torch.full((1, 4), 1e4), anchors[:1])).all()


def test_nms_keeps_the_best_of_each_overlapping_group():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = torch.tensor([0.8, 0.9, 0.5, 0.7])
    # Box 1 (0.9) suppresses 0 (IoU 81/119 = 0.68) and 3 (IoU 72/118 = 0.61 > 0.5); box 2 stays.
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    # Above 0.68 nothing overlaps enough except 0 and 3 (IoU 0.9): 3 goes.
    assert nms(boxes, scores, 0.7).tolist() == [1, 0, 2]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([1, 2, 1]), 0.5).tolist() == [0, 1]


def test_miou_perfect_and_partial():
    target = torch.zeros(2, 8, 8, dtype=torch.int64)
    target[:, :4, :4] = 3
    metric = segmentation_metric(11)
    metric.update(target, target)
    assert float(metric.compute()) == pytest.approx(1.0)  # absent classes do not count
    predicted = target.clone()
    predicted[:, :4, :2] = 0  # half of class 3 called background
    metric = segmentation_metric(11)
    metric.update(predicted, target)
    # class 3: 16 / 32; background: 96 / 112.
    assert float(metric.compute()) == pytest.approx((16 / 32 + 96 / 112) / 2)


def test_map_perfect_partial_and_empty():
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]]), "labels": torch.tensor([1, 2])}]
    perfect = [{"boxes": targets[0]["boxes"], "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}]
    metric = detection_metric(11, (64, 64))
    metric.update(perfect, targets)
    assert metric.compute() == pytest.approx({"map": 1.0, "map_50": 1.0})
    # Class 1 found, class 2 missed: AP 1 and 0.
    metric = detection_metric(11, (64, 64))
    metric.update([{k: v[:1] for k, v in perfect[0].items()}], targets)
    assert metric.compute() == pytest.approx({"map": 0.5, "map_50": 0.5})
    # A box shifted to IoU 0.6 counts at 0.50 but not at 0.65 and above: mAP = mean over 0.50:0.95 = 3/10.
    shifted = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40 * 0.6 + 20 * 0.4]])  # IoU 0.6 for class 2
    metric = detection_metric(11, (64, 64))
    metric.update([{"boxes": shifted, "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}], targets)
    result = metric.compute()
    assert result["map_50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx((1.0 + 0.3) / 2, abs=0.01)
    assert detection_metric(11, (64, 64)).compute() == {"map": -1.0, "map_50": -1.0}


@pytest.mark.parametrize(
    ("boxes", "labels", "message"),
    [
        ([[0.0, 0, 70, 10]], [1], r"boxes\[0\] .* outside the 64×64 image"),
        ([[-1.0, 0, 10, 10]], [1], "outside"),
        ([[5.0, 0, 5, 10]], [1], "x2 <= x1"),
        ([[0.0, 0, 10, 10]], [0], "labels span"),
        ([[0.0, 0, 10, 10]], [11], "labels span"),
    ],
)
def test_bad_boxes_are_one_line_errors(boxes, labels, message):
    with pytest.raises(ValueError, match=message) as info:
        check_boxes(torch.tensor(boxes), torch.tensor(labels), (64, 64), 11)
    assert "\n" not in str(info.value)


def test_bad_masks_and_class_counts_are_refused():
    with pytest.raises(ValueError, match=r"masks hold labels in \[0, 11\], outside the class range \[0, 11\)"):
        check_masks(torch.tensor([[[0, 11]]]), 11)
    with pytest.raises(ValueError, match="masks must be an integer"):
        check_masks(torch.zeros(1, 2, 2), 11)
    for bad in (0, -1, 1, 2.0, True):
        with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
            check_num_classes(bad)
    with pytest.raises(ValueError, match="num_classes"):
        segmentation_metric(0)
    with pytest.raises(ValueError, match="targets.boxes"):
        detection_metric(11, (64, 64)).update(
            [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}],
            [{"boxes": torch.tensor([[0.0, 0, 99, 10]]), "labels": torch.tensor([1])}],
        )
