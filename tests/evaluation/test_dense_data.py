"""Tests of evaluation.dense_data: deterministic mosaics, split separation, mask/box consistency, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.data import FASHION_MNIST_DEFAULT_DIR, Dataset, holdout_split, load_dataset
from evaluation.dense_data import MosaicConfig, MosaicSet, Role, dense_splits, uniforms

TRAIN_VALUE, HOLDOUT_VALUE, TEST_VALUE = 100, 150, 200


def item_dataset(n_train: int = 200, n_test: int = 50, side: int = 28, seed: int = 0) -> Dataset:
    """Items whose grey level tells where they come from: training items of the train pool, of the held-out
    pool (the one `dense_splits` reserves with this seed), or test items; a blob shape with a faint rim."""
    _, holdout_pool = holdout_split(n_train, 0.1, seed)
    shape = torch.zeros(side, side, dtype=torch.uint8)
    shape[4:-4, 6:-6] = 1
    def images(n: int, value: int) -> torch.Tensor:
        out = (shape * value).expand(n, 1, side, side).clone()
        out[:, :, 3, 6:-6] = 20  # a faint row (below the mask threshold): blends, never masks
        return out
    train = images(n_train, TRAIN_VALUE)
    train[torch.as_tensor(holdout_pool)] = images(len(holdout_pool), HOLDOUT_VALUE)
    generator = torch.Generator().manual_seed(seed)
    return Dataset(
        name="items",
        train_images=train,
        train_labels=torch.randint(0, 10, (n_train,), generator=generator),
        test_images=images(n_test, TEST_VALUE),
        test_labels=torch.randint(0, 10, (n_test,), generator=generator),
        num_classes=10,
        class_names=None,
        source="synthetic",
    )


@pytest.fixture(scope="module")
def items() -> Dataset:
    return item_dataset()


def test_uniforms_are_a_pure_function_of_seed_stream_and_index():
    a = uniforms(7, 1, np.array([0, 5, 9]), 4)
    b = uniforms(7, 1, np.array([9, 0]), 4)
    assert np.array_equal(a[[2, 0]], b)
    assert ((a >= 0) & (a < 1)).all()
    assert not np.array_equal(uniforms(8, 1, np.array([0]), 4), a[:1])
    assert not np.array_equal(uniforms(7, 2, np.array([0]), 4), a[:1])
    many = uniforms(0, 0, np.arange(20_000), 1)
    assert abs(many.mean() - 0.5) < 0.01


@pytest.mark.parametrize("overlap", ["occlude", "grid"])
def test_same_seed_gives_the_same_bytes_in_any_batch(items, overlap):
    cfg = MosaicConfig(canvas_px=72, overlap=overlap, items_max=4)
    first = MosaicSet(items, "train", 100, cfg, seed=3).batch(range(20))
    again = MosaicSet(items, "train", 100, cfg, seed=3)
    alone = again.batch([13])
    for field in ("images", "masks", "boxes", "labels"):
        assert torch.equal(getattr(first, field), getattr(again.batch(range(20)), field))
        assert torch.equal(getattr(first, field)[13:14], getattr(alone, field))
    other = MosaicSet(items, "train", 100, cfg, seed=4).batch(range(20))
    assert not torch.equal(first.images, other.images)


def test_train_holdout_and_test_mosaics_take_items_from_their_own_split(items):
    splits = dense_splits(items, train_images=64, holdout_images=64, test_images=64, seed=0)
    seen = {}
    for role, mosaics in (("train", splits.train), ("holdout", splits.holdout), ("test", splits.test)):
        batch = mosaics.batch(range(64))
        values = set(torch.unique(batch.images).tolist()) - {0, 20}
        seen[role] = values
        assert (batch.labels > 0).any()
    assert seen == {"train": {TRAIN_VALUE}, "holdout": {HOLDOUT_VALUE}, "test": {TEST_VALUE}}
    assert splits.train.role is Role.TRAIN and splits.test.role is Role.TEST
    assert not set(splits.train.pool) & set(splits.holdout.pool)


@pytest.mark.parametrize("overlap", ["occlude", "grid"])
def test_every_box_is_the_extent_of_its_visible_mask(items, overlap):
    """Without overlap every item keeps all its pixels: its box is the tight extent of its class's pixels
    there, and boxes cover every labelled pixel. With occlusion, the box's edges touch its label."""
    cfg = MosaicConfig(canvas_px=96, overlap=overlap, items_min=2, items_max=4, min_visible_fraction=0.3)
    batch = MosaicSet(items, "train", 50, cfg).batch(range(50))
    for image in range(50):
        covered = torch.zeros(96, 96, dtype=torch.bool)
        for box, label in zip(batch.boxes[image], batch.labels[image]):
            if label == 0:
                assert box.eq(0).all()
                continue
            x1, y1, x2, y2 = (int(v) for v in box)
            assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
            inside = batch.masks[image, y1:y2, x1:x2] == label
            # Tight: the first and last row and column of the box hold a pixel of the item's class.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y1:y2, x1:x2] |= inside
        if overlap == "grid":
            assert torch.equal(covered, batch.masks[image] > 0)
            assert int((batch.labels[image] > 0).sum()) >= cfg.items_min


def test_masks_are_class_plus_one_and_images_show_the_items(items):
    batch = MosaicSet(items, "test", 30, MosaicConfig(items_min=1, items_max=1)).batch(range(30))
    for image in range(30):
        label = int(batch.labels[image, 0])
        assert set(batch.masks[image].unique().tolist()) == {0, label}
        assert torch.equal(batch.masks[image] > 0, batch.images[image, 0] == TEST_VALUE)
        ys, xs = torch.nonzero(batch.masks[image], as_tuple=True)
        expected = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert torch.equal(batch.boxes[image, 0], expected)
    assert batch.masks.dtype == torch.int64 and batch.images.dtype == torch.uint8


def test_occluded_items_lose_their_box_below_the_visible_fraction(items):
    def kept(fraction: float) -> int:
        cfg = MosaicConfig(canvas_px=40, items_min=4, items_max=4, min_visible_fraction=fraction)
        return int((MosaicSet(items, "train", 200, cfg).batch(range(200)).labels > 0).sum())
    assert kept(1.0) < kept(0.5) < kept(0.0) <= 800
    # The same draws (positions do not depend on the fraction): the masks are identical.
    configs = [MosaicConfig(canvas_px=40, items_max=4, min_visible_fraction=f) for f in (1.0, 0.0)]
    a, b = (MosaicSet(items, "train", 10, cfg).batch(range(10)) for cfg in configs)
    assert torch.equal(a.masks, b.masks)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"canvas_px": 20}, "canvas_px"),
        ({"canvas_px": 0}, "canvas_px"),
        ({"items_min": 3, "items_max": 2}, "items_max"),
        ({"items_max": 101}, "items_max"),
        ({"scale_min": 0}, "scale_min"),
        ({"scale_min": 1.0, "scale_max": 0.5}, "scale_max"),
        ({"overlap": "gird"}, "overlap"),
        ({"canvas_px": 64, "overlap": "grid", "items_max": 4}, "canvas_px"),
        ({"mask_threshold": 255}, "mask_threshold"),
        ({"min_visible_fraction": 1.5}, "min_visible_fraction"),
    ],
)
def test_bad_configs_are_one_line_errors_naming_the_field(items, kwargs, field):
    with pytest.raises(ValueError, match=f"MosaicConfig.{field}") as info:
        MosaicSet(items, "train", 10, MosaicConfig(**kwargs))
    assert "\n" not in str(info.value)


def test_bad_set_arguments_are_refused(items):
    with pytest.raises(ValueError, match="role"):
        MosaicSet(items, "val", 10)
    with pytest.raises(ValueError, match="length"):
        MosaicSet(items, "train", 0)
    with pytest.raises(ValueError, match="pool"):
        MosaicSet(items, "test", 10, pool=np.array([0, 50]))
    with pytest.raises(ValueError, match="mosaic indices"):
        MosaicSet(items, "train", 10).batch([10])


@pytest.mark.skipif(not FASHION_MNIST_DEFAULT_DIR.exists(), reason="Fashion-MNIST is not installed")
def test_fashion_mnist_mosaics_have_all_classes_and_consistent_boxes():
    data = load_dataset("fashion-mnist")
    splits = dense_splits(data, train_images=1000, holdout_images=100, test_images=100)
    batch = splits.train.batch(range(256))
    assert set(batch.masks.unique().tolist()) == set(range(11))
    assert batch.images.shape == (256, 1, 64, 64)
    kept = batch.labels > 0
    assert kept.sum() >= 256
    boxes = batch.boxes[kept]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes.max() <= 64
