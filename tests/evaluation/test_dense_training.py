"""Tests of evaluation.dense_training: SSD matching and loss, post-processing, short training runs, failures.

The training runs use the real MobileNetV3-Small + LR-ASPP / SSDLite networks of the reference specs
(search_spaces.references, built by search_spaces.builder) on mosaics of a synthetic item set, so that they
need no data on disk and stay fast; a tiny stand-in network covers the failure paths.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from evaluation.data import FASHION_MNIST_DEFAULT_DIR, load_dataset
from evaluation.dense_data import MosaicConfig, MosaicSet, dense_splits
from evaluation.dense_metrics import cxcywh_to_xyxy, encode_boxes
from evaluation.dense_training import (
    DENSE_TRAIN,
    DenseConfig,
    DenseTask,
    detection_loss,
    evaluate_dense,
    match_anchors,
    postprocess_detections,
    train_dense,
)
from evaluation.training import TrainConfig, TrainingDiverged
from search_spaces import references
from search_spaces.builder import anchors as spec_anchors
from search_spaces.builder import build_model
from tests.evaluation.test_dense_data import item_dataset

CANVAS = MosaicConfig(canvas_px=64, items_max=3)


def test_matching_takes_iou_above_threshold_and_the_best_anchor_of_every_box():
    anchors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 0.2, 0.2], [0.9, 0.1, 0.1, 0.1]])
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.45, 0.45, 0.55, 0.55], [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[3, 7, 0]])
    anchor_labels, anchor_boxes = match_anchors(anchors, boxes, labels, 0.5)
    # Anchor 0 is box 0 exactly; box 1 (IoU 0.25 with anchor 2, its best) still claims anchor 2;
    # anchors 1 and 3 overlap nothing: background. The padding row never matches.
    assert anchor_labels.tolist() == [[3, 0, 7, 0]]
    assert torch.equal(anchor_boxes[0, 0], boxes[0, 0]) and torch.equal(anchor_boxes[0, 2], boxes[0, 1])
    # An image without boxes is all background.
    empty_labels, _ = match_anchors(anchors, torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.int64), 0.5)
    assert empty_labels.eq(0).all()


def test_detection_loss_counts_positives_and_three_hard_negatives_each():
    anchors = torch.tensor([[0.1 + 0.1 * i, 0.5, 0.1, 0.1] for i in range(8)])
    anchor_labels = torch.tensor([[2, 0, 0, 0, 0, 0, 0, 0]])
    anchor_boxes = cxcywh_to_xyxy(anchors)[None]
    class_logits = torch.zeros(1, 8, 3)
    class_logits[0, 1:, 1] = torch.arange(7, dtype=torch.float32)  # negatives 5, 6, 7 are the hardest
    box_codes = encode_boxes(anchor_boxes, anchors) + 0.5  # off by 0.5 in every code: smooth-L1 0.125 each
    cfg = DenseConfig(task="detection")
    loss = detection_loss(class_logits, box_codes, anchors, anchor_labels, anchor_boxes, cfg)
    ce = torch.nn.functional.cross_entropy(class_logits[0], torch.zeros(8, dtype=torch.int64), reduction="none")
    expected = math.log(3) + ce[5:].sum() + 4 * 0.125  # positive CE + 3 hardest negatives + box loss, / 1
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    l1 = detection_loss(class_logits, box_codes, anchors, anchor_labels, anchor_boxes,
                        DenseConfig(task="detection", box_loss="l1"))
    assert float(l1) == pytest.approx(float(expected) - 0.5 + 2.0, rel=1e-5)


def test_postprocessing_decodes_to_pixels_and_suppresses_duplicates():
    anchors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.26, 0.25, 0.5, 0.5], [0.75, 0.75, 0.25, 0.25]])
    class_logits = torch.full((1, 3, 4), -10.0)
    class_logits[0, 0, 2] = class_logits[0, 1, 2] = 5.0  # two near-identical class-2 boxes
    class_logits[0, 2, 3] = 4.0
    out = postprocess_detections(class_logits, torch.zeros(1, 3, 4), anchors, (64, 64), DenseConfig(task="detection"))
    assert out[0]["labels"].tolist() == [2, 3]
    assert torch.allclose(out[0]["boxes"][0], torch.tensor([0.0, 0.0, 32.0, 32.0]), atol=0.7)
    assert torch.allclose(out[0]["boxes"][1], torch.tensor([40.0, 40.0, 56.0, 56.0]))


def real_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(references.get(name))


def short_config(task: str, steps: int = 16) -> DenseConfig:
    # One thread: on a loaded 2-core machine, two threads per test process spin against each other.
    return DenseConfig(task=task, train={"steps": steps, "batch_size": 8, "eval_batch_size": 32, "lr": 0.05,
                                         "in_channels": 3, "log_every_steps": 4, "threads": 1, "device": "cpu",
                                         "yield_to_measurements": False})


@pytest.fixture(scope="module")
def splits():
    return dense_splits(item_dataset(), CANVAS, train_images=2000, holdout_images=64, test_images=64)


def test_segmentation_training_lowers_the_loss_of_the_real_lraspp_network(splits):
    model = real_model("mobilenetv3_small_lraspp_dense")
    result = train_dense(model, splits, short_config("segmentation"))
    curve = [loss for _, loss in result.train_loss_curve]
    assert result.steps == 16 and len(curve) == 4
    assert curve[-1] < 0.7 * curve[0]
    assert 0.0 <= result.metrics["miou"] <= 1.0 and result.val_count == 64
    again = evaluate_dense(model, splits.holdout, short_config("segmentation"), stats=result.input_stats)
    assert again == pytest.approx(result.metrics)


def test_detection_training_lowers_the_loss_of_the_real_ssdlite_network(splits):
    spec = references.get("mobilenetv3_small_ssdlite_dense")
    model = real_model("mobilenetv3_small_ssdlite_dense")
    boxes = spec_anchors(spec, CANVAS.canvas_px)
    result = train_dense(model, splits, short_config("detection"), anchors=boxes)
    curve = [loss for _, loss in result.train_loss_curve]
    assert curve[-1] < 0.8 * curve[0]
    assert set(result.metrics) == {"map", "map_50"}
    assert 0.0 <= result.metrics["map"] <= result.metrics["map_50"] <= 1.0


class Constant(nn.Module):
    """Segmentation stand-in: a learnable bias per class, upsampled to the input; NaN on demand."""

    def __init__(self, classes: int = 11, value: float = 0.0):
        super().__init__()
        self.bias = nn.Parameter(torch.full((classes,), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return (x.mean() * 0 + self.bias).view(1, -1, 1, 1).expand(n, -1, h, w)


def test_nan_loss_raises_training_diverged(splits):
    with pytest.raises(TrainingDiverged, match="segmentation training loss is nan"):
        train_dense(Constant(value=math.nan), splits, short_config("segmentation", steps=2))


def test_background_only_prediction_scores_the_background_iou_over_present_classes(splits):
    """A known partial case through the whole scoring path: predicting background everywhere gives
    IoU(background) = background pixels / all pixels and 0 for every class present in the masks."""
    masks = splits.holdout.batch(range(64)).masks
    present = len(masks.unique())
    expected = float((masks == 0).float().mean()) / present
    logits = torch.zeros(11)
    logits[0] = 1.0
    model = Constant()
    model.bias.data = logits
    assert evaluate_dense(model, splits.holdout, short_config("segmentation"))["miou"] == pytest.approx(expected)


def test_wrong_outputs_and_settings_are_one_line_errors(splits):
    with pytest.raises(ValueError, match=r"segmentation model returned \(8, 5, 64, 64\); expected logits"):
        train_dense(Constant(classes=5), splits, short_config("segmentation", steps=1))
    with pytest.raises(ValueError, match="anchors: detection needs"):
        train_dense(Constant(), splits, short_config("detection", steps=1))
    with pytest.raises(ValueError, match="detection model returned"):
        train_dense(Constant(), splits, short_config("detection", steps=1), anchors=torch.rand(10, 4) + 0.1)
    with pytest.raises(ValueError, match="class_weights has 2 entries"):
        train_dense(Constant(), splits, DenseConfig(class_weights=(1.0, 2.0), train={"steps": 1}))
    with pytest.raises(ValueError, match="resolution_px must be None or the canvas side 64"):
        train_dense(Constant(), splits, DenseConfig(train={"steps": 1, "resolution_px": 32}))
    for kwargs, field in (
        ({"task": "classification"}, "DenseConfig.task"),
        ({"box_loss": "l2"}, "DenseConfig.box_loss"),
        ({"match_iou": 0.0}, "DenseConfig.match_iou"),
        ({"nms_iou": 1.5}, "DenseConfig.nms_iou"),
        ({"score_threshold": 1.0}, "DenseConfig.score_threshold"),
        ({"negative_ratio": -1}, "DenseConfig.negative_ratio"),
        ({"detections_per_image": 0}, "DenseConfig.detections_per_image"),
        ({"class_weights": (1.0, -1.0)}, "DenseConfig.class_weights"),
        ({"train": {"crop_padding_px": 4}}, "DenseConfig.train.crop_padding_px"),
        ({"train": {"steps": 0}}, "TrainConfig.steps"),
    ):
        with pytest.raises(ValueError, match=field) as info:
            DenseConfig(**kwargs)
        assert "\n" not in str(info.value)


def test_a_channel_mismatch_of_network_and_canvas_is_one_line_naming_both_counts_before_training(splits):
    """A 3-channel network on the 1-channel item canvas without ``in_channels`` (or with 1), and a 1-channel
    network on a 3-channel canvas, fail before the first step with both counts, not torch's conv error."""
    steps: list[int] = []
    train = {"steps": 2, "batch_size": 8, "log_every_steps": 1, "threads": 1, "device": "cpu",
             "yield_to_measurements": False}
    for in_channels in (None, 1):
        cfg = DenseConfig(task="segmentation", train={**train, "in_channels": in_channels})
        with pytest.raises(ValueError, match=r"network takes 3-channel input, the mosaics give 1 \(1-channel canvas"
                                             r".*in_channels=3 to repeat") as info:
            train_dense(real_model("mobilenetv3_small_lraspp_dense"), splits, cfg,
                        progress=lambda p: steps.append(p.step))
        assert "\n" not in str(info.value)
        with pytest.raises(ValueError, match="network takes 3-channel input, the mosaics give 1"):
            evaluate_dense(real_model("mobilenetv3_small_lraspp_dense"), splits.holdout, cfg)
    assert steps == []
    items = item_dataset()
    colour = dataclasses.replace(items, train_images=items.train_images.expand(-1, 3, -1, -1).contiguous(),
                                 test_images=items.test_images.expand(-1, 3, -1, -1).contiguous())
    colour_splits = dense_splits(colour, CANVAS, train_images=16, holdout_images=8, test_images=8)
    grey_net = build_model(references.get("mobilenetv3_small_lraspp_dense").replace(in_channels=1))
    with pytest.raises(ValueError, match="in_channels=1 does not fit 3-channel images") as info:
        train_dense(grey_net, colour_splits, DenseConfig(task="segmentation", train={**train, "in_channels": 1}),
                    progress=lambda p: steps.append(p.step))
    assert "\n" not in str(info.value) and steps == []
    with pytest.raises(ValueError, match="network takes 1-channel input, the mosaics give 3 \\(3-channel canvas"):
        train_dense(grey_net, colour_splits, DenseConfig(task="segmentation", train=train))
    # The fix the message names works: the grayscale canvas repeated to the network's 3 channels trains.
    ok = train_dense(real_model("mobilenetv3_small_lraspp_dense"), splits,
                     DenseConfig(task="segmentation", train={**train, "in_channels": 3}))
    assert ok.steps == 2


def test_config_defaults_are_defined_once_and_round_trip():
    cfg = DenseConfig()
    assert cfg.task is DenseTask.SEGMENTATION
    assert cfg.train == TrainConfig(**DENSE_TRAIN)
    assert DenseConfig(**cfg.to_dict()) == cfg
    weighted = DenseConfig(task="detection", class_weights=[1.0] * 11, train={"steps": 5})
    assert DenseConfig(**weighted.to_dict()) == weighted


def test_flipped_batches_keep_boxes_on_their_items(splits):
    batch = splits.train.batch(range(8))
    flipped = batch.flip(torch.tensor([True, False] * 4))
    assert torch.equal(flipped.images[1], batch.images[1]) and torch.equal(flipped.masks[0], batch.masks[0].flip(-1))
    for image in range(8):
        for box, label in zip(flipped.boxes[image], flipped.labels[image]):
            if label:
                x1, y1, x2, y2 = (int(v) for v in box)
                inside = flipped.masks[image, y1:y2, x1:x2] == label
                assert inside[:, 0].any() and inside[:, -1].any() and inside[0].any() and inside[-1].any()
            else:
                assert box.eq(0).all()


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DEFAULT_DIR.exists(), reason="Fashion-MNIST is not installed")
def test_fashion_mnist_mosaics_train_the_real_segmentation_network():
    data = load_dataset("fashion-mnist")
    splits = dense_splits(data, CANVAS, train_images=5000, holdout_images=32, test_images=32)
    result = train_dense(real_model("mobilenetv3_small_lraspp_dense"), splits, short_config("segmentation", 12))
    assert result.train_loss_curve[-1][1] < result.train_loss_curve[0][1]
    score = evaluate_dense(real_model("mobilenetv3_small_lraspp_dense"), splits.test, short_config("segmentation"))
    assert 0.0 <= score["miou"] <= 1.0


def test_real_mosaics_give_detection_targets_the_metric_accepts():
    data = item_dataset()
    mosaics = MosaicSet(data, "test", 16, CANVAS)
    targets = mosaics.batch(range(16)).targets()
    assert all(len(t["boxes"]) == len(t["labels"]) >= 1 for t in targets)
