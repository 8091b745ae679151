"""Benchmark of dense-task generation: mosaics/s of `evaluation.dense_data.MosaicSet.batch` on one core.

Generates batches of Fashion-MNIST mosaics (images, class masks, boxes) from the installed IDX files, for
a few canvas sizes and both overlap policies, in this process, with torch and numpy held to one thread
(``OMP_NUM_THREADS=1`` etc. are set before they are imported). Each cell runs one warm-up batch, then
``--repeats`` timed runs of ``--batches`` batches of ``--batch-size`` new mosaics, and reports the median
mosaics per wall-clock second with the min and max, and per second of the process's CPU time. The load
average (`os.getloadavg`) is printed with the result: the machine is shared, so a wide min–max or a load
above the core count means interference.

Usage (from the repository root, with the package installed or ``PYTHONPATH=.``)::

    python experiments/bench_dense_data.py [--batch-size 256] [--batches 8] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402 - after the thread settings, which must precede numpy and torch
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from evaluation.data import load_dataset  # noqa: E402
from evaluation.dense_data import MosaicConfig, MosaicSet  # noqa: E402

CELLS = (
    ("64 px, occlude, 1-4 items", MosaicConfig(canvas_px=64)),
    ("64 px, grid, 1-4 items (scale <= 1)", MosaicConfig(canvas_px=64, overlap="grid", scale_max=1.0)),
    ("96 px, occlude, 1-6 items", MosaicConfig(canvas_px=96, items_max=6)),
    ("128 px, occlude, 1-8 items", MosaicConfig(canvas_px=128, items_max=8)),
)


def rate(mosaics: MosaicSet, batch_size: int, batches: int, repeats: int) -> tuple[float, float, float, float]:
    """Median, min and max mosaics per wall-clock second over ``repeats`` runs of ``batches`` fresh
    batches, and the median per second of this process's CPU time (what one uncontended core would give)."""
    mosaics.batch(range(batch_size))  # warm-up
    rates, cpu_rates = [], []
    start_index = batch_size
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(batches):
            mosaics.batch(np.arange(start_index, start_index + batch_size) % len(mosaics))
            start_index += batch_size
        rates.append(batches * batch_size / (time.perf_counter() - started))
        cpu_rates.append(batches * batch_size / (time.process_time() - cpu_started))
    return statistics.median(rates), min(rates), max(rates), statistics.median(cpu_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=256, help="mosaics per batch (default 256)")
    parser.add_argument("--batches", type=int, default=8, help="batches per timed run (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (default 5)")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: the installed one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist", args.data_dir)
    load_before = os.getloadavg()
    rows = []
    for name, cfg in CELLS:
        mosaics = MosaicSet(data, "train", 1_000_000, cfg, seed=0)
        median, low, high, per_cpu_s = rate(mosaics, args.batch_size, args.batches, args.repeats)
        rows.append({"cell": name, "canvas_px": cfg.canvas_px, "median_per_s": median, "min_per_s": low,
                     "max_per_s": high, "median_per_cpu_s": per_cpu_s})
        print(f"{name:40s} {median:8.0f} mosaics/s (min {low:.0f}, max {high:.0f}); "
              f"{per_cpu_s:.0f} per CPU-second", flush=True)
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} CPUs; "
          f"batch {args.batch_size}, {args.batches} batches × {args.repeats} repeats; one thread")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "rows": rows, "load_before": load_before, "load_after": load_after, "cpus": os.cpu_count(),
            "machine": platform.platform(), "numpy": np.__version__, "torch": torch.__version__,
            "batch_size": args.batch_size, "batches": args.batches, "repeats": args.repeats,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
