"""Benchmark of proxy-training throughput: images/s of `evaluation.training.train_model` on the CPU.

Trains a small MobileNet-like network (inverted residual blocks with depthwise convolutions, total
stride 32) on synthetic 28×28 grayscale uint8 images, at 32×32 input (upsampled on the fly, the proxy
default) and at the native 28×28, with and without channels_last. The numbers include the data
pipeline (resize, crop, flip, normalize) and exclude evaluation, as in a search.

Usage (from the repository root, with the package installed or ``PYTHONPATH=.``)::

    python experiments/bench_training.py [--steps 20] [--repeats 3] [--threads N] [--json out.json]

Each cell runs one warm-up training of ``--warmup-steps`` steps (first-call allocation and oneDNN
kernel selection), then ``--repeats`` timed trainings of ``--steps`` steps, and reports the median
images/s with the min and max over the repeats. The machine is shared, so read a wide min–max as
interference from other work.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

from evaluation.data import Dataset
from evaluation.training import TrainConfig, train_model

NUM_CLASSES = 10
# (expanded channels, output channels, stride) per inverted residual block: a shortened
# MobileNetV3-Small layout (https://arxiv.org/abs/1905.02244, Table 2) without squeeze-excite.
BLOCKS = ((16, 16, 2), (72, 24, 2), (88, 24, 1), (96, 40, 2), (240, 40, 1), (144, 48, 1), (288, 96, 2))


class InvertedResidual(nn.Module):
    """1×1 expand, 3×3 depthwise, 1×1 project, with a residual when shapes allow (MobileNetV2)."""

    def __init__(self, in_channels: int, expand_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, expand_channels, 1, bias=False),
            nn.BatchNorm2d(expand_channels),
            nn.Hardswish(),
            nn.Conv2d(expand_channels, expand_channels, 3, stride, 1, groups=expand_channels, bias=False),
            nn.BatchNorm2d(expand_channels),
            nn.Hardswish(),
            nn.Conv2d(expand_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.use_residual else out


def small_mobilenet(in_channels: int = 1, num_classes: int = NUM_CLASSES) -> nn.Module:
    """Builds the benchmark network: stem (stride 2), `BLOCKS`, 1×1 head conv, pool, classifier."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 16, 3, 2, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.Hardswish(),
    ]
    channels = 16
    for expand_channels, out_channels, stride in BLOCKS:
        layers.append(InvertedResidual(channels, expand_channels, out_channels, stride))
        channels = out_channels
    layers += [
        nn.Conv2d(channels, 576, 1, bias=False),
        nn.BatchNorm2d(576),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(576, num_classes),
    ]
    return nn.Sequential(*layers)


def synthetic_fashion_like(n_images: int, seed: int = 0) -> Dataset:
    """Random 28×28 grayscale uint8 images with random labels: throughput does not depend on content."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_images, 1, 28, 28), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (n_images,), generator=generator)
    return Dataset(
        name="synthetic-28px",
        train_images=images,
        train_labels=labels,
        test_images=images[:1],
        test_labels=labels[:1],
        num_classes=NUM_CLASSES,
        class_names=None,
        source="generated",
    )


def bench_cell(
    data: Dataset, resolution_px: int | None, channels_last: bool, args: argparse.Namespace
) -> list[float]:
    """Returns images/s of each timed repeat for one (resolution, memory format) cell."""
    n_train = len(data.train_labels) - args.batch_size
    train_idx, val_idx = torch.arange(n_train), torch.arange(n_train, len(data.train_labels))

    def run(steps: int) -> float:
        cfg = TrainConfig(
            steps=steps,
            batch_size=args.batch_size,
            resolution_px=resolution_px,
            channels_last=channels_last,
            threads=args.threads,
            max_batches_eval=1,
            eval_batch_size=args.batch_size,
        )
        torch.manual_seed(0)
        return train_model(small_mobilenet(), data, train_idx, val_idx, cfg).images_per_s

    run(args.warmup_steps)
    return [run(args.steps) for _ in range(args.repeats)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat (default 20)")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps per cell (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per cell (default 3)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if min(args.steps, args.warmup_steps, args.repeats, args.batch_size) < 1:
        parser.error("--steps, --warmup-steps, --repeats and --batch-size must be >= 1")

    data = synthetic_fashion_like(args.batch_size * (args.steps + 1))
    threads = args.threads or torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {threads} threads, batch {args.batch_size}, "
        f"{args.warmup_steps} warm-up + {args.repeats}×{args.steps} timed steps per cell"
    )
    rows = []
    for resolution_px, label in ((32, "32×32 (28 upsampled)"), (None, "28×28 (native)")):
        for channels_last in (False, True):
            rates = bench_cell(data, resolution_px, channels_last, args)
            rows.append(
                {
                    "input": label,
                    "memory_format": "channels_last" if channels_last else "contiguous",
                    "median_images_per_s": statistics.median(rates),
                    "min_images_per_s": min(rates),
                    "max_images_per_s": max(rates),
                    "repeats_images_per_s": rates,
                }
            )
    print(f"{'input':<22} {'memory format':<14} {'median img/s':>12} {'min':>8} {'max':>8} {'speed-up':>9}")
    for index, row in enumerate(rows):
        baseline = rows[index - index % 2]["median_images_per_s"]
        print(
            f"{row['input']:<22} {row['memory_format']:<14} {row['median_images_per_s']:>12.0f} "
            f"{row['min_images_per_s']:>8.0f} {row['max_images_per_s']:>8.0f} "
            f"{row['median_images_per_s'] / baseline:>8.2f}×"
        )
    if args.json is not None:
        record = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": threads,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "rows": rows,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
