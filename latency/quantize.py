"""Int8 static post-training quantization with ONNX Runtime, and measuring the result.

MobileNetV3 (https://arxiv.org/abs/1905.02244) reports int8 latencies alongside fp32; this
module produces the int8 models with ``onnxruntime.quantization``:
``quant_pre_process`` (shape inference + graph optimization) and then ``quantize_static``,
calibrated (MinMax) on **real input samples supplied by the caller**. Random inputs would
give activation ranges that have nothing to do with deployment.

Defaults follow ONNX Runtime's quantization guide
(https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html) for x86-64, whose
integer kernels are fastest for unsigned activations times signed weights (U8S8): QDQ format,
unsigned 8-bit activations, signed 8-bit weights, per-channel weights. Signed activations made
torchvision's MobileNetV3-Large 2.8x *slower* than fp32 on the development VM (a shared 2-vCPU
AVX-512 Xeon, ORT 1.32, one thread; a one-off comparison of the formats). And int8 is not
necessarily faster than fp32 at all: int8/fp32 was 1.04 for MobileNetV3-Large, 1.33 for
MobileNetV3-Small and 0.53 for MobileNetV2 there (README "Measured results",
``experiments/bench_latency.py``), so always measure the ratio, e.g. with
``measure_pair(int8_path, fp32_path, precision_a="int8", precision_b="fp32")``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from latency.device import cpu_info
from latency.measure import LatencyError, MeasureConfig, Measurement, measure_onnx, one_line

__all__ = ["quantize_and_measure", "quantize_int8"]

_FORMATS = ("qdq", "qoperator")


def _model_inputs(model_path: Path) -> list[tuple[str, list[Any]]]:
    """``(name, shape)`` of each graph input that is not an initializer."""
    import onnx  # local: keep ``import latency.quantize`` cheap

    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - any parse failure means a corrupt model
        raise LatencyError(f"cannot parse ONNX model {model_path}: {one_line(error)}") from None
    initializers = {init.name for init in proto.graph.initializer}
    inputs = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.type.tensor_type.shape.dim
        ]
        inputs.append((value.name, dims))
    if not inputs:
        raise LatencyError(f"ONNX model {model_path} has no graph inputs")
    return inputs


def _as_samples(
    item: Any, index: int, inputs: list[tuple[str, list[Any]]]
) -> list[dict[str, np.ndarray]]:
    """Turn one calibration item into one or more batch-1 feed dicts."""
    if isinstance(item, dict):
        arrays = dict(item)
    elif len(inputs) == 1:
        arrays = {inputs[0][0]: item}
    else:
        names = [name for name, _ in inputs]
        raise LatencyError(
            f"calibration item {index}: the model has several inputs {names}; "
            "pass dicts {input_name: array}"
        )
    missing = sorted({name for name, _ in inputs} - set(arrays))
    if missing:
        raise LatencyError(f"calibration item {index}: missing input(s) {missing}")
    split: dict[str, list[np.ndarray]] = {}
    for name, dims in inputs:
        array = np.asarray(arrays[name], dtype=np.float32)
        fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
        if array.ndim == len(dims) - 1:
            array = array[np.newaxis]  # one sample without its batch axis
        if array.ndim != len(dims) or any(
            want is not None and got != want
            for want, got in zip(fixed[1:], array.shape[1:], strict=True)
        ):
            raise LatencyError(
                f"calibration item {index}: input '{name}' has shape {array.shape}, "
                f"expected {dims} (batch axis first) or the same without the batch axis"
            )
        if not np.all(np.isfinite(array)):
            raise LatencyError(f"calibration item {index}: input '{name}' has NaN or inf")
        if fixed and fixed[0] is not None and array.shape[0] != fixed[0]:
            if fixed[0] != 1:
                raise LatencyError(
                    f"calibration item {index}: input '{name}' batch {array.shape[0]} does not "
                    f"match the model's fixed batch {fixed[0]}"
                )
            split[name] = [array[i : i + 1] for i in range(array.shape[0])]  # split a batch
        else:
            split[name] = [array]
    counts = {len(parts) for parts in split.values()}
    if len(counts) != 1:
        raise LatencyError(f"calibration item {index}: inputs have different batch sizes")
    return [{name: parts[i] for name, parts in split.items()} for i in range(counts.pop())]


def _reader(samples: list[dict[str, np.ndarray]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _ListReader(CalibrationDataReader):
        """Feeds the caller's calibration samples once, in order."""

        def __init__(self) -> None:
            self._items = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    return _ListReader()


def quantize_int8(
    fp32_model_path: str | os.PathLike,
    calibration_inputs: Iterable[Any],
    out_path: str | os.PathLike,
    per_channel: bool = True,
    fmt: str = "qdq",
    *,
    reduce_range: bool | None = None,
    preprocess: bool = True,
) -> Path:
    """Statically quantize an fp32 ONNX model to int8 (U8 activations, S8 weights).

    Args:
        fp32_model_path: The fp32 model file.
        calibration_inputs: Real input samples: arrays shaped like the model input (a batch
            is split into batch-1 samples when the model's batch is fixed at 1; a missing batch
            axis is added), or dicts ``{input_name: array}`` for multi-input models. A list or
            any iterable; it is read once.
        out_path: Where to write the int8 model (written atomically: temp file, then rename).
        per_channel: Per-output-channel weight scales (better accuracy, small cost).
        fmt: ``"qdq"`` (QuantizeLinear/DequantizeLinear pairs, recommended by ORT for CPU) or
            ``"qoperator"`` (QLinearConv etc.).
        reduce_range: 7-bit weights; ``None`` picks ORT's advice for this CPU: True on x86
            without VNNI (avoids int16 saturation), False otherwise.
        preprocess: Run ``quant_pre_process`` first (recommended).

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        LatencyError: Missing/corrupt model, empty or malformed calibration set, unknown fmt,
            or a failure inside ONNX Runtime's quantizer.
    """
    if fmt not in _FORMATS:
        raise LatencyError(f"fmt={fmt!r} is not supported; allowed: {', '.join(_FORMATS)}")
    source = Path(fp32_model_path)
    if not source.is_file():
        raise LatencyError(f"ONNX model file not found: {source}")
    if calibration_inputs is None:
        raise LatencyError("calibration_inputs is None; pass real input samples")
    inputs = _model_inputs(source)
    samples: list[dict[str, np.ndarray]] = []
    for index, item in enumerate(calibration_inputs):
        samples.extend(_as_samples(item, index, inputs))
    if not samples:
        raise LatencyError(
            "calibration set is empty; static int8 quantization needs real input samples "
            "to calibrate activation ranges"
        )
    if reduce_range is None:
        info = cpu_info()
        has_vnni = {"avx512_vnni", "avx_vnni"} & set(info["cpu_flags"])
        reduce_range = info["machine"] in ("x86_64", "AMD64", "i686") and not has_vnni

    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hwnas-quant-") as tmp:
        model_for_quant = source
        if preprocess:
            model_for_quant = Path(tmp) / "preprocessed.onnx"
            try:
                quant_pre_process(str(source), str(model_for_quant))
            except Exception as error:  # noqa: BLE001 - surface ORT's reason on one line
                raise LatencyError(
                    f"quant_pre_process failed on {source}: {one_line(error)}"
                ) from None
        staged = Path(tmp) / "quantized.onnx"
        try:
            quantize_static(
                str(model_for_quant),
                str(staged),
                _reader(samples),
                quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        except Exception as error:  # noqa: BLE001
            raise LatencyError(f"quantize_static failed on {source}: {one_line(error)}") from None
        # Rename within the destination directory so that readers never see a partial file.
        fd, partial = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        try:
            Path(partial).write_bytes(staged.read_bytes())
            os.replace(partial, out)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    return out


def quantize_and_measure(
    fp32_model_path: str | os.PathLike,
    calibration_inputs: Iterable[Any],
    out_path: str | os.PathLike,
    cfg: MeasureConfig | None = None,
    *,
    per_channel: bool = True,
    fmt: str = "qdq",
) -> Measurement:
    """Quantize with :func:`quantize_int8`, then measure the int8 model.

    Args:
        fp32_model_path: The fp32 model file.
        calibration_inputs: Real input samples (see :func:`quantize_int8`).
        out_path: Where to write the int8 model.
        cfg: Measurement settings; its ``precision`` is set to ``"int8"``.
        per_channel: Per-channel weight scales.
        fmt: ``"qdq"`` or ``"qoperator"``.

    Returns:
        The :class:`~latency.measure.Measurement` of the int8 model.
    """
    quantized = quantize_int8(
        fp32_model_path, calibration_inputs, out_path, per_channel=per_channel, fmt=fmt
    )
    cfg = dataclasses.replace(cfg or MeasureConfig(), precision="int8")
    return measure_onnx(quantized, cfg)
