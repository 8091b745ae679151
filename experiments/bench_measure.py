"""Repeatability of latency.measure on this machine.

Measures a small MobileNetV2-like CNN ``--repeats`` times with independent sessions
(``measure_onnx``), then the paired ratio of that CNN against a narrower variant
(``measure_pair``), and prints for each: the per-measurement numbers, the CV of the medians
(or ratios) across repeats, and the mean CI half-width the measurer *reported*. If the
reported half-width is much smaller than the observed spread, the CI is describing the
measurement window only, not run-to-run reproducibility.

Usage:
    .venv/bin/python experiments/bench_measure.py [--repeats 5] [--resolution 224]
        [--out runs/bench_measure.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latency.measure import MeasureConfig, measure_onnx, measure_pair


def _cnn(width: float):
    """MobileNetV2-like stem + 5 inverted-residual blocks + head (bench-only model)."""
    import torch
    from torch import nn

    def ch(c: int) -> int:
        return max(8, round(c * width / 8) * 8)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            mid = cin * expand
            self.residual = stride == 1 and cin == cout
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU6(),
                nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU6(),
                nn.Conv2d(mid, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )

        def forward(self, x):
            out = self.body(x)
            return x + out if self.residual else out

    torch.manual_seed(0)
    layers = [nn.Conv2d(3, ch(16), 3, 2, 1, bias=False), nn.BatchNorm2d(ch(16)), nn.ReLU6()]
    spec = [(16, 24, 2, 4), (24, 24, 1, 4), (24, 40, 2, 4), (40, 40, 1, 4), (40, 80, 2, 4)]
    for cin, cout, stride, expand in spec:
        layers.append(InvertedResidual(ch(cin), ch(cout), stride, expand))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch(80), 1000)]
    return nn.Sequential(*layers).eval()


def _export(width: float, resolution: int, path: Path) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _cnn(width),
            torch.randn(1, 3, resolution, resolution),
            str(path),
            dynamo=False,
            opset_version=17,
        )
    return path


def _cv(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / np.mean(values)) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--out", type=Path, default=None, help="write all results as JSON")
    args = parser.parse_args(argv)

    cfg = MeasureConfig()
    with tempfile.TemporaryDirectory() as tmp:
        model = _export(1.0, args.resolution, Path(tmp) / "cnn.onnx")
        reference = _export(0.75, args.resolution, Path(tmp) / "cnn_w075.onnx")

        print(f"config: {json.dumps(cfg.to_dict())}")
        print(f"\n== measure_onnx, {args.repeats} independent sessions ==")
        print(
            f"{'#':>2} {'median':>9} {'p10':>8} {'p90':>8} {'CI half':>8} {'n':>5} "
            f"{'warm':>5} {'timed s':>8} {'wall s':>7} {'outl':>5} {'conv':>5} stop"
        )
        singles = []
        for i in range(args.repeats):
            m = measure_onnx(model, cfg)
            singles.append(m)
            print(
                f"{i:>2} {m.median_ms:>7.3f}ms {m.p10_ms:>8.3f} {m.p90_ms:>8.3f} "
                f"{100 * m.rel_ci_half_width:>7.2f}% {m.n_samples:>5} {m.warmup_runs:>5} "
                f"{m.timed_s:>8.3f} {m.wall_s:>7.3f} {100 * m.outlier_share:>4.1f}% "
                f"{str(m.converged):>5} {m.stop_reason}"
            )
        medians = [m.median_ms for m in singles]
        print(
            f"CV of medians across sessions: {100 * _cv(medians):.2f} %   "
            f"mean reported CI half-width: "
            f"{100 * np.mean([m.rel_ci_half_width for m in singles]):.2f} %   "
            f"mean samples: {np.mean([m.n_samples for m in singles]):.0f}   "
            f"mean timed: {np.mean([m.timed_s for m in singles]):.3f} s   "
            f"mean wall: {np.mean([m.wall_s for m in singles]):.3f} s"
        )

        print(f"\n== measure_pair (width 1.0 / width 0.75), {args.repeats} repeats ==")
        print(
            f"{'#':>2} {'ratio':>7} {'CI low':>7} {'CI high':>7} {'CI half':>8} {'pairs':>5} "
            f"{'med A':>8} {'med B':>8} {'timed s':>8} {'wall s':>7} {'conv':>5} stop"
        )
        pairs = []
        for i in range(args.repeats):
            p = measure_pair(model, reference, cfg)
            pairs.append(p)
            print(
                f"{i:>2} {p.ratio:>7.4f} {p.ratio_ci_low:>7.4f} {p.ratio_ci_high:>7.4f} "
                f"{100 * p.rel_ci_half_width:>7.2f}% {p.n_pairs:>5} {p.median_a_ms:>8.3f} "
                f"{p.median_b_ms:>8.3f} {p.timed_s:>8.3f} {p.wall_s:>7.3f} "
                f"{str(p.converged):>5} {p.stop_reason}"
            )
        ratios = [p.ratio for p in pairs]
        print(
            f"CV of ratios across repeats: {100 * _cv(ratios):.2f} %   "
            f"mean reported CI half-width: "
            f"{100 * np.mean([p.rel_ci_half_width for p in pairs]):.2f} %   "
            f"mean pairs: {np.mean([p.n_pairs for p in pairs]):.0f}   "
            f"mean timed: {np.mean([p.timed_s for p in pairs]):.3f} s   "
            f"mean wall: {np.mean([p.wall_s for p in pairs]):.3f} s"
        )
        print(
            f"CV of A's medians inside the pairs: {100 * _cv([p.median_a_ms for p in pairs]):.2f} %"
        )

    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "config": cfg.to_dict(),
            "resolution": args.resolution,
            "singles": [m.to_dict() for m in singles],
            "pairs": [p.to_dict() for p in pairs],
        }
        partial = args.out.with_suffix(args.out.suffix + ".tmp")
        partial.write_text(json.dumps(record))
        os.replace(partial, args.out)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
