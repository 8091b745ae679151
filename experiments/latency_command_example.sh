#!/usr/bin/env bash
# A worked example of the `command` latency backend: prints ONE number, the latency in ms of an ONNX model.
#
#   nas latency measure mobilenetv3_small \
#       --latency-command "experiments/latency_command_example.sh {onnx} {input_shape}" --latency-device local-ort
#   nas search --preset small --latency measured \
#       --latency-command "experiments/latency_command_example.sh {onnx} {input_shape}" --latency-device local-ort
#
# The framework runs the command --latency-repeats times (median), each within --latency-timeout seconds, and
# fails the measurement (and only that trial of a search) when it exits non-zero, hangs, or prints anything
# but one finite number in (0, command_max_ms); an optional trailing "ms" is allowed.
#
# This stand-in times the model with ONNX Runtime on this machine in a subprocess (one thread, 10 warm-up
# runs, the median of 50). It is a TEMPLATE for a real device. For a phone over adb with TensorFlow Lite's
# benchmark tool (https://www.tensorflow.org/lite/performance/measurement), replace the python block with,
# for instance (the ONNX model converted to .tflite first, e.g. with onnx2tf):
#
#   onnx2tf -i "$ONNX" -o "$TMP" >/dev/null && adb push "$TMP"/model_float32.tflite /data/local/tmp/m.tflite >/dev/null
#   adb shell /data/local/tmp/benchmark_model --graph=/data/local/tmp/m.tflite --num_threads=1 \
#       --warmup_runs=10 --num_runs=50 2>&1 | sed -n 's/.*Inference (avg): \([0-9.e+]*\).*/\1/p' \
#       | awk '{ printf "%.4f\n", $1 / 1000 }'      # the tool prints microseconds
#
# A vendor NPU tool is wrapped the same way: push, run, extract one number in ms, print it, exit 0.
set -euo pipefail
ONNX="${1:?usage: latency_command_example.sh MODEL.onnx [INPUT_SHAPE like 1,3,224,224]}"
SHAPE="${2:-}"
PYTHON="${PYTHON:-python3}"
exec "$PYTHON" - "$ONNX" "$SHAPE" <<'PY'
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

path, shape = sys.argv[1], sys.argv[2]
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.log_severity_level = 3
session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
node = session.get_inputs()[0]
dims = [int(d) for d in shape.split(",")] if shape else [d if isinstance(d, int) else 1 for d in node.shape]
feed = {node.name: np.random.default_rng(0).standard_normal(dims).astype(np.float32)}
for _ in range(10):
    session.run(None, feed)
times = []
for _ in range(50):
    t0 = time.perf_counter()
    session.run(None, feed)
    times.append((time.perf_counter() - t0) * 1e3)
print(f"{statistics.median(times):.4f}")
PY
