"""What names a supernet, without torch: its recipe, cache key and files, version and constants.

Split from :mod:`evaluation.supernet` (which re-exports every name) so that the command-line option
tables (``nas supernet --help``, ``nas search --help``) read their defaults without importing torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

SUPERNET_VERSION = 1
"""Version of the supernet's weight layout and training semantics; a checkpoint of another version is
refused (bump it whenever a change here would make old checkpoints mean something else)."""
FORMAT = "hwnas-supernet"
MIN_MAP = 3
"""Smallest feature map (pixels per side) every searched block must run on (see :mod:`evaluation.supernet`)."""
SUPERNET_RESOLUTION = 72
"""Training and scoring resolution of supernets: ``min_resolution`` of every registered space."""
BN_IMAGES = 1000
"""Training images (a fixed, seeded sample) that recalibrate a subnet's BatchNorm statistics."""
SCORE_IMAGES = 2000
"""Held-out images (a fixed, seeded sample of the held-out split) that score a subnet; see
``experiments/bench_supernet_scoring.py`` for the ranking this keeps against all 10,000."""
MAX_CHECKPOINT_BYTES = 4_000_000_000
SUBDIR = "supernet"


class SupernetError(ValueError):
    """A supernet that cannot be used: missing, of another space/dataset/resolution/version, unreadable."""


@dataclass(frozen=True)
class SupernetRecipe:
    """How a supernet is trained; every field is part of its cache key.

    Attributes:
        epochs, steps: length (passes over the training images, or optimizer steps; steps wins when set).
        batch_size: training images per step (every subnet of the step sees the same batch).
        lr, momentum, weight_decay, warmup_fraction: SGD (Nesterov), cosine schedule after a linear
            warm-up; no weight decay on BN, biases and kernel transforms (OFA).
        label_smoothing: of the largest subnet's loss (the others learn the largest's predictions).
        n_random: random subnets per step besides the largest and the smallest (BigNAS: 2).
        resolution_px: input resolution (see :data:`SUPERNET_RESOLUTION`).
        holdout, split_seed, train_subset: the held-out split, which must be the search's: the supernet
            never trains on the images that score its subnets.
        seed: every random draw (batches, augmentation, subnets, dropout) derives from it and the step.
    """

    epochs: float = 2.0  # 1,562 steps of 64 images (50,000 training images); the README gives the CPU cost
    steps: int | None = None
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-5
    warmup_fraction: float = 0.03
    label_smoothing: float = 0.1
    n_random: int = 2
    resolution_px: int = SUPERNET_RESOLUTION
    holdout: int = 10_000
    split_seed: int = 0
    train_subset: int | None = None
    seed: int = 0

    def __post_init__(self):
        checks = [("epochs", self.epochs is None or (isinstance(self.epochs, (int, float)) and self.epochs > 0)),
                  ("steps", self.steps is None or (isinstance(self.steps, int) and self.steps >= 1)),
                  ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 2),
                  ("lr", self.lr > 0), ("n_random", isinstance(self.n_random, int) and self.n_random >= 0),
                  ("resolution_px", isinstance(self.resolution_px, int) and 8 <= self.resolution_px <= 1024),
                  ("momentum", 0 <= self.momentum < 1), ("weight_decay", self.weight_decay >= 0),
                  ("warmup_fraction", 0 <= self.warmup_fraction < 1),
                  ("label_smoothing", 0 <= self.label_smoothing < 1)]
        for name, ok in checks:
            if not ok:
                raise SupernetError(f"supernet recipe: bad {name} {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def cache_key(space: str, dataset: str, recipe: SupernetRecipe) -> str:
    """The key a trained supernet is cached under: space, dataset, recipe (resolution and seed
    included) and :data:`SUPERNET_VERSION`; 16 hex digits."""
    data = {"space": space, "dataset": dataset, "recipe": recipe.to_dict(), "version": SUPERNET_VERSION}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def supernet_dir() -> Path:
    """Where trained supernets are kept: ``<cache dir>/supernet`` (``$HWNAS_CACHE_DIR`` or ``~/.cache/hwnas``)."""
    from latency.device import cache_dir

    return cache_dir() / SUBDIR


def cache_path(space: str, dataset: str, recipe: SupernetRecipe) -> Path:
    """The finished supernet's file; its checkpoint in progress is :func:`partial_path` of it."""
    return supernet_dir() / f"{space}-{dataset}-{recipe.resolution_px}px-{cache_key(space, dataset, recipe)}.pt"


def partial_path(path: Path) -> Path:
    return path.with_name(path.name[: -len(".pt")] + ".partial.pt")


def train_command(space: str, dataset: str = "fashion-mnist") -> str:
    """The command that trains the default supernet of a space (quoted in error messages)."""
    return f"nas supernet train --space {space}" + (f" --dataset {dataset}" if dataset != "fashion-mnist" else "")
