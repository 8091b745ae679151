"""Dense-prediction data without downloads: mosaics of Fashion-MNIST items with class masks and boxes.

The MobileNetV3 paper (Howard et al. 2019, https://arxiv.org/abs/1905.02244, Sec. 6.3–6.4) evaluates
its backbones with SSDLite detection and LR-ASPP segmentation heads on COCO and Cityscapes. Neither can be
downloaded here, so the dense task is built from the real images already on disk: each image is a canvas
(64 px by default) with a few Fashion-MNIST items pasted at random scales and positions. Every image
comes with

* a per-pixel class mask: pixels of an item brighter than ``MosaicConfig.mask_threshold`` get the item's
  class + 1, the rest is background 0; a later item occludes an earlier one;
* boxes: the tight pixel box (x1, y1, x2, y2; x2 and y2 exclusive) of each item's *visible* mask, with
  label class + 1; an item occluded below ``min_visible_fraction`` of its mask gets no box (its pixels
  stay in the segmentation mask).

Generation is a pure function of (seed, role, item pool, index): every draw of image ``i`` comes from a
counter-based hash (splitmix64) of those values, so any image is regenerated alone, in any batch, on any
machine, with the same bytes. Items are resized by nearest-neighbour index gathers, in integers, which
keeps the bytes exact and the whole batch one vectorized numpy operation (see
experiments/bench_dense_data.py for the rate).

Training mosaics draw items only from the training IDX split (``role="train"``, or ``"holdout"`` with a
disjoint pool of training items for search-time scoring); test mosaics only from the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from evaluation.data import Dataset, holdout_split
from search_spaces.checks import is_int, is_number

__all__ = [
    "MAX_ITEMS",
    "DenseBatch",
    "DenseSplits",
    "MosaicConfig",
    "MosaicSet",
    "Overlap",
    "Role",
    "dense_splits",
    "uniforms",
]


class Overlap(str, Enum):
    """How items are placed: anywhere (later items occlude earlier ones) or in distinct grid cells."""

    OCCLUDE = "occlude"
    GRID = "grid"


class Role(str, Enum):
    """Which split a mosaic set serves; it picks the IDX split the items come from and the hash stream."""

    TRAIN = "train"
    HOLDOUT = "holdout"
    TEST = "test"


# The hash stream of each role: the same seed and index give unrelated images in different roles.
_ROLE_STREAM = {Role.TRAIN: 1, Role.HOLDOUT: 2, Role.TEST: 3}
_DRAWS_PER_ITEM = 4  # pool index, scale, x, y
MAX_ITEMS = 100
"""Most items per mosaic (the owner map that resolves occlusion is int8)."""


@dataclass(frozen=True)
class MosaicConfig:
    """How mosaics are drawn.

    Attributes:
        canvas_px: Side of the square canvas in pixels.
        items_min: Fewest items per image (>= 1).
        items_max: Most items per image (>= items_min).
        scale_min: Smallest item scale (1.0 = the source's 28 px).
        scale_max: Largest item scale; the largest item must fit on the canvas.
        overlap: `Overlap` or its value: ``occlude`` (anywhere; later items hide earlier ones) or
            ``grid`` (each item in its own cell of a grid of largest-item cells: no overlap).
        mask_threshold: Source pixels above this grey level (0..254) are the item's mask.
        min_visible_fraction: An item whose visible mask is below this fraction of its full mask
            gets no box, in [0, 1].
    """

    canvas_px: int = 64
    items_min: int = 1
    items_max: int = 4
    scale_min: float = 0.75
    scale_max: float = 1.25
    overlap: Overlap = Overlap.OCCLUDE
    mask_threshold: int = 48
    min_visible_fraction: float = 0.5

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "overlap", Overlap(self.overlap))
        except ValueError:
            allowed = ", ".join(member.value for member in Overlap)
            raise ValueError(f"MosaicConfig.overlap must be one of {allowed}; got {self.overlap!r}") from None
        for name in ("canvas_px", "items_min", "items_max"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"MosaicConfig.{name} must be an int >= 1; got {value!r}")
        if self.items_max > MAX_ITEMS:
            raise ValueError(f"MosaicConfig.items_max must be <= {MAX_ITEMS}; got {self.items_max}")
        if self.items_max < self.items_min:
            raise ValueError(f"MosaicConfig.items_max must be >= items_min ({self.items_min}); got {self.items_max}")
        for name in ("scale_min", "scale_max"):
            value = getattr(self, name)
            if not is_number(value) or value <= 0:
                raise ValueError(f"MosaicConfig.{name} must be a number > 0; got {value!r}")
        if self.scale_max < self.scale_min:
            raise ValueError(f"MosaicConfig.scale_max must be >= scale_min ({self.scale_min}); got {self.scale_max}")
        if not is_int(self.mask_threshold) or not 0 <= self.mask_threshold <= 254:
            raise ValueError(f"MosaicConfig.mask_threshold must be an int in [0, 254]; got {self.mask_threshold!r}")
        if not is_number(self.min_visible_fraction) or not 0 <= self.min_visible_fraction <= 1:
            raise ValueError(
                f"MosaicConfig.min_visible_fraction must be in [0, 1]; got {self.min_visible_fraction!r}"
            )

    def item_px(self, source_px: int, scale: float) -> int:
        """Side in pixels of a ``source_px`` item drawn at ``scale`` (at least 1)."""
        return max(1, round(source_px * scale))

    def check_fits(self, source_px: int) -> None:
        """Raises ValueError naming the field when items of ``source_px`` cannot be placed on the canvas."""
        largest = self.item_px(source_px, self.scale_max)
        if largest > self.canvas_px:
            raise ValueError(
                f"MosaicConfig.canvas_px={self.canvas_px} is too small for an item of {largest} px "
                f"({source_px} px × scale_max {self.scale_max}); raise canvas_px or lower scale_max"
            )
        if self.overlap is Overlap.GRID:
            cells = (self.canvas_px // largest) ** 2
            if cells < self.items_max:
                raise ValueError(
                    f"MosaicConfig.canvas_px={self.canvas_px} holds {cells} grid cells of {largest} px, fewer "
                    f"than items_max={self.items_max}; raise canvas_px or lower items_max or scale_max"
                )


# --------------------------------------------------------------------------------------------------
# Counter-based randomness: splitmix64 (Steele, Lea & Flood 2014), as in Java's SplittableRandom.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, stream: int, index: np.ndarray, n_draws: int) -> np.ndarray:
    """Uniform floats in [0, 1), one row of ``n_draws`` per index, a pure function of the arguments.

    Args:
        seed: Any int (taken modulo 2**64).
        stream: Any int separating unrelated uses of one seed.
        index: 1-D array of non-negative ints.
        n_draws: Draws per index.

    Returns:
        float64 array ``len(index)`` × ``n_draws``.
    """
    with np.errstate(over="ignore"):
        key = _mix64(np.array([seed % 2**64], dtype=np.uint64) * _GOLDEN + np.uint64(stream % 2**64))
        per_index = _mix64(key ^ (np.asarray(index, dtype=np.uint64) * _MIX1))
        counters = (np.arange(1, n_draws + 1, dtype=np.uint64) * _GOLDEN)[None, :]
        bits = _mix64(per_index[:, None] + counters)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenseBatch:
    """A batch of mosaics.

    Attributes:
        images: uint8 N×C×H×W.
        masks: int64 N×H×W, 0 = background, class + 1 for item pixels.
        boxes: float32 N×K×4 pixel boxes (x1, y1, x2, y2), x2/y2 exclusive; rows with label 0 are padding.
        labels: int64 N×K, class + 1 of each box, 0 for padding (K = ``items_max``).
    """

    images: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor

    def flip(self, selected: torch.Tensor) -> DenseBatch:
        """The batch with the ``selected`` (bool N) images mirrored left-right, masks and boxes with them."""
        width = self.images.shape[-1]
        images = torch.where(selected[:, None, None, None], self.images.flip(-1), self.images)
        masks = torch.where(selected[:, None, None], self.masks.flip(-1), self.masks)
        x1, y1, x2, y2 = self.boxes.unbind(-1)
        mirrored = torch.stack([width - x2, y1, width - x1, y2], dim=-1) * (self.labels > 0)[..., None]
        boxes = torch.where(selected[:, None, None], mirrored, self.boxes)
        return DenseBatch(images=images, masks=masks, boxes=boxes, labels=self.labels)

    def targets(self) -> list[dict[str, torch.Tensor]]:
        """Per-image ``{"boxes", "labels"}`` without padding, as detection metrics take them."""
        keep = self.labels > 0
        return [{"boxes": self.boxes[i][keep[i]], "labels": self.labels[i][keep[i]]} for i in range(len(self.labels))]


class MosaicSet:
    """A fixed-length, indexable set of mosaics drawn from one split of a classification data set.

    Args:
        data: The source data set (e.g. ``load_dataset("fashion-mnist")``).
        role: `Role` or its value: ``train`` and ``holdout`` take items from the training split, ``test``
            from the test split.
        length: Number of mosaics (indices ``0 .. length-1``).
        cfg: How mosaics are drawn.
        seed: Seed of all draws.
        pool: Indices into the role's split that items may come from (default: all of it), e.g. the
            two halves of `evaluation.data.holdout_split` for ``train`` and ``holdout``.
    """

    def __init__(
        self,
        data: Dataset,
        role: Role | str,
        length: int,
        cfg: MosaicConfig | None = None,
        *,
        seed: int = 0,
        pool: np.ndarray | None = None,
    ) -> None:
        try:
            self.role = Role(role)
        except ValueError:
            raise ValueError(f"role must be one of {', '.join(r.value for r in Role)}; got {role!r}") from None
        if not is_int(length) or length < 1:
            raise ValueError(f"length must be an int >= 1; got {length!r}")
        if not is_int(seed):
            raise ValueError(f"seed must be an int; got {seed!r}")
        self.cfg = cfg if cfg is not None else MosaicConfig()
        self.length = int(length)
        self.seed = int(seed)
        source = data.test_images if self.role is Role.TEST else data.train_images
        labels = data.test_labels if self.role is Role.TEST else data.train_labels
        if pool is None:
            pool = np.arange(len(source))
        pool = np.asarray(pool)
        if pool.ndim != 1 or len(pool) == 0 or not np.issubdtype(pool.dtype, np.integer):
            raise ValueError("pool must be a non-empty 1-D array of integer indices")
        if pool.min() < 0 or pool.max() >= len(source):
            raise ValueError(f"pool holds indices outside [0, {len(source)}) of the {self.role.value} split")
        if len(pool) * source.shape[2] * source.shape[3] >= 2**31:
            raise ValueError(f"pool: {len(pool)} items are too many for int32 pixel offsets; pass a smaller pool")
        _, _, item_h, item_w = source.shape
        if item_h != item_w:
            raise ValueError(f"{data.name}: items must be square to be scaled; got {item_h}×{item_w} px")
        self.cfg.check_fits(item_h)
        self.num_classes = data.num_classes + 1  # + background
        if self.num_classes > 256:
            raise ValueError(f"{data.name}: {data.num_classes} classes do not fit the uint8 masks (at most 255)")
        self.channels = int(source.shape[1])
        self.item_px = int(item_h)
        self.pool = pool.astype(np.int64)
        # One row of C values per source pixel (item-major, then row, column), and a zero pixel at the end:
        # generation gathers rows of this table by flat pixel index.
        items = source[torch.as_tensor(self.pool)].numpy().transpose(0, 2, 3, 1)
        self._items = np.concatenate([items.reshape(-1, self.channels), np.zeros((1, self.channels), np.uint8)])
        self._item_labels = labels[torch.as_tensor(self.pool)].numpy()

    def __len__(self) -> int:
        return self.length

    def batch(self, indices: np.ndarray | list[int] | range) -> DenseBatch:
        """Generates the mosaics with these indices (each a pure function of seed, role, pool and index)."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= self.length):
            raise ValueError(f"mosaic indices must lie in [0, {self.length}); got [{index.min()}, {index.max()}]")
        return self._generate(index)

    def _generate(self, index: np.ndarray) -> DenseBatch:
        cfg = self.cfg
        n, k_max, side, src_px = len(index), cfg.items_max, cfg.canvas_px, self.item_px
        largest = cfg.item_px(src_px, cfg.scale_max)
        grid = side // largest
        n_cells = grid * grid if cfg.overlap is Overlap.GRID else 0
        u = uniforms(self.seed, _ROLE_STREAM[self.role], index, 1 + _DRAWS_PER_ITEM * k_max + n_cells)
        count = cfg.items_min + np.minimum((u[:, 0] * (k_max - cfg.items_min + 1)).astype(np.int64),
                                           k_max - cfg.items_min)
        item_u = u[:, 1 : 1 + _DRAWS_PER_ITEM * k_max].reshape(n, k_max, _DRAWS_PER_ITEM)
        active = np.arange(k_max)[None, :] < count[:, None]  # N×K
        source = np.minimum((item_u[..., 0] * len(self.pool)).astype(np.int64), len(self.pool) - 1)
        scale = cfg.scale_min + item_u[..., 1] * (cfg.scale_max - cfg.scale_min)
        size = np.maximum(1, np.rint(src_px * scale)).astype(np.int64)  # N×K item side in px
        if cfg.overlap is Overlap.GRID:
            # A random permutation of the cells per image (argsort of uniform keys); item k takes cell k.
            cells = np.argsort(u[:, 1 + _DRAWS_PER_ITEM * k_max :], axis=1, kind="stable")[:, :k_max]
            slack = largest - size
            x0 = (cells % grid) * largest + np.minimum((item_u[..., 2] * (slack + 1)).astype(np.int64), slack)
            y0 = (cells // grid) * largest + np.minimum((item_u[..., 3] * (slack + 1)).astype(np.int64), slack)
        else:
            slack = side - size
            x0 = np.minimum((item_u[..., 2] * (slack + 1)).astype(np.int64), slack)
            y0 = np.minimum((item_u[..., 3] * (slack + 1)).astype(np.int64), slack)

        # Each item is drawn in its own window of the largest item's side, at (y0, x0) of a canvas padded by
        # that side, so that window pixels past a smaller item's edge stay on the canvas and never collide.
        # Nearest-neighbour source row/column of each window row/column; past the item's side, the zero
        # pixel appended after the last item. One flat int32 gather per slot.
        window = np.arange(largest)
        inside = (window[None, None, :] < size[..., None]) & active[..., None]  # N×K×S
        src = np.minimum((window[None, None, :] * src_px) // size[..., None], src_px - 1)
        offset_y = np.where(inside, src * src_px, -(1 << 30)).astype(np.int32)
        offset_x = np.where(inside, src, -(1 << 30)).astype(np.int32)
        padded = side + largest
        zero_pixel = len(self.pool) * src_px * src_px
        image = np.zeros((n * padded * padded, self.channels), dtype=np.uint8)
        owner = np.zeros(n * padded * padded, dtype=np.int8)  # 1 + slot of the item that owns each pixel
        classes = (self._item_labels[source] + 1).astype(np.uint8)  # N×K
        base = (np.arange(n) * padded * padded)[:, None, None]
        positions, full_px = [], []
        for k in range(k_max):
            flat = (source[:, k] * (src_px * src_px)).astype(np.int32)[:, None, None] + offset_y[:, k, :, None]
            flat = flat + offset_x[:, k, None, :]
            pixels = self._items.take(np.where(flat < 0, zero_pixel, flat), axis=0)  # N×S×S×C
            foreground = pixels.max(axis=-1) > cfg.mask_threshold
            at = base + (y0[:, k, None, None] + window[None, :, None]) * padded + (x0[:, k, None, None] + window)
            # The item's mask pixels cover what lies below; its faint pixels blend by maximum.
            image[at] = np.where(foreground[..., None], pixels, np.maximum(image[at], pixels))
            owner[at] = np.where(foreground, np.int8(k + 1), owner[at])
            positions.append(at)
            full_px.append(foreground.sum(axis=(1, 2)))

        boxes = np.zeros((n, k_max, 4), dtype=np.float32)
        keep = np.zeros((n, k_max), dtype=bool)
        for k in range(k_max):
            visible = owner[positions[k]] == k + 1  # N×S×S
            visible_px = visible.sum(axis=(1, 2))
            keep[:, k] = active[:, k] & (visible_px > 0) & (visible_px >= cfg.min_visible_fraction * full_px[k])
            rows = visible.any(axis=2)
            cols = visible.any(axis=1)
            boxes[:, k, 0] = x0[:, k] + cols.argmax(axis=1)
            boxes[:, k, 1] = y0[:, k] + rows.argmax(axis=1)
            boxes[:, k, 2] = x0[:, k] + largest - cols[:, ::-1].argmax(axis=1)
            boxes[:, k, 3] = y0[:, k] + largest - rows[:, ::-1].argmax(axis=1)
        boxes *= keep[..., None]
        labels = np.where(keep, classes.astype(np.int64), 0)
        image = image.reshape(n, padded, padded, self.channels)[:, :side, :side]
        # The class mask from the owner map: slot 0 (no owner) is background.
        owner = owner.reshape(n, padded, padded)[:, :side, :side]
        mask = np.take_along_axis(np.concatenate([np.zeros((n, 1), np.int64), classes.astype(np.int64)], axis=1),
                                  owner.reshape(n, -1).astype(np.intp), axis=1).reshape(n, side, side)
        return DenseBatch(
            images=torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2))),
            masks=torch.from_numpy(mask),
            boxes=torch.from_numpy(boxes),
            labels=torch.from_numpy(labels.astype(np.int64)),
        )


@dataclass(frozen=True)
class DenseSplits:
    """The three mosaic sets of a dense task: train and held-out from the training split, test from the test split."""

    train: MosaicSet
    holdout: MosaicSet
    test: MosaicSet


def dense_splits(
    data: Dataset,
    cfg: MosaicConfig | None = None,
    *,
    train_images: int = 50_000,
    holdout_images: int = 1_000,
    test_images: int = 2_000,
    holdout_items: int | float = 0.1,
    seed: int = 0,
) -> DenseSplits:
    """Train, held-out and test mosaics whose items never cross: held-out mosaics use training items
    that train mosaics never use (`evaluation.data.holdout_split` with ``seed``), test mosaics the test split.

    Args:
        data: The source data set.
        cfg: How mosaics are drawn.
        train_images: Number of training mosaics.
        holdout_images: Number of held-out mosaics (search-time scoring).
        test_images: Number of test mosaics.
        holdout_items: Training items reserved for held-out mosaics (count or fraction).
        seed: Seed of the item split and of all draws.
    """
    train_pool, holdout_pool = holdout_split(len(data.train_labels), holdout_items, seed)
    return DenseSplits(
        train=MosaicSet(data, Role.TRAIN, train_images, cfg, seed=seed, pool=train_pool),
        holdout=MosaicSet(data, Role.HOLDOUT, holdout_images, cfg, seed=seed, pool=holdout_pool),
        test=MosaicSet(data, Role.TEST, test_images, cfg, seed=seed),
    )
