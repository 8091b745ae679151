"""The ``command`` backend against in-process ``ort-cpu`` on the same networks (README "Latency backends").

Each network (as a Fashion-MNIST search times it: 1 channel, 10 classes) is measured with the default
``ort-cpu`` protocol and with the worked example command (``experiments/latency_command_example.sh``:
ONNX Runtime in a subprocess, median of 50 runs), 3 repeats; printed: both medians, their ratio and the
wall time of each measurement, with the machine's load before and after.

    python experiments/bench_backends.py [--resolution 224] [--archs mobilenetv3_small,mnasnet_a1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from latency.measure import MeasureConfig, measure_onnx
from search_spaces import references
from search_spaces.export import export_onnx

EXAMPLE = Path(__file__).with_name("latency_command_example.sh")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--archs", default="mobilenetv3_small,mnasnet_a1")
    args = parser.parse_args()
    os.environ.setdefault("PYTHON", sys.executable)
    print(f"load before: {os.getloadavg()}")
    cpu = MeasureConfig()
    command = MeasureConfig(backend="command", command=f"{EXAMPLE} {{onnx}} {{input_shape}}", device="local-ort",
                            command_repeats=3)
    for name in args.archs.split(","):
        spec = references.get(name).replace(resolution=args.resolution, in_channels=1, num_classes=10)
        onnx = export_onnx(spec)
        t0 = time.perf_counter()
        a = measure_onnx(onnx, cpu)
        t1 = time.perf_counter()
        b = measure_onnx(onnx, command)
        t2 = time.perf_counter()
        print(f"{name} at {args.resolution}²: ort-cpu {a.median_ms:.3f} ms ({t1 - t0:.1f} s), command "
              f"{b.median_ms:.3f} ms ({t2 - t1:.1f} s; repeats {[round(s / 1e6, 3) for s in b.samples_ns]}), "
              f"command/ort-cpu {b.median_ms / a.median_ms:.3f}")
    print(f"load after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
