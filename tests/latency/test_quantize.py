"""Tests for latency.quantize: int8 static quantization with ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from latency.measure import LatencyError, MeasureConfig, measure_onnx
from latency.quantize import quantize_and_measure, quantize_int8

FAST = MeasureConfig(warmup_min_s=0.02, min_runs=30, max_runs=200, time_cap_s=1.0)


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


def _images(count: int, seed: int) -> np.ndarray:
    """Real-ish 32x32 RGB inputs: smooth colour fields plus edges, ImageNet-normalised."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    out = np.empty((count, 3, 32, 32), dtype=np.float32)
    for i in range(count):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        base = 0.5 + 0.5 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
        edge = (xx > rng.uniform(0.2, 0.8)).astype(np.float64)
        for c in range(3):
            weight = rng.uniform(0.2, 1.0)
            img = weight * base + (1 - weight) * edge + rng.normal(0, 0.03, size=base.shape)
            out[i, c] = (np.clip(img, 0, 1) - 0.45) / 0.225
    return out


def _classifier():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    # Give BN non-trivial statistics, as a trained network has, before exporting in eval mode.
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.from_numpy(_images(32, seed=99)))
    return net.eval()


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory) -> Path:
    import torch

    path = tmp_path_factory.mktemp("quant") / "fp32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _classifier(),
            torch.randn(1, 3, 32, 32),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
        )
    return path


def _outputs(path: Path, inputs: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": img[None]})[0] for img in inputs])


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_int8_model_runs_and_stays_close_to_fp32(fp32_model, tmp_path, fmt):
    calibration = list(_images(16, seed=1)[:, None])  # 16 arrays of shape (1, 3, 32, 32)
    out = quantize_int8(fp32_model, calibration, tmp_path / "int8.onnx", fmt=fmt)
    assert out == tmp_path / "int8.onnx" and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]  # no leftovers

    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    if fmt == "qdq":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    else:
        assert "QLinearConv" in ops

    held_out = _images(64, seed=2)
    ref, got = _outputs(fp32_model, held_out), _outputs(out, held_out)
    rel_err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    agreement = np.mean(got.argmax(axis=1) == ref.argmax(axis=1))
    assert rel_err < 0.15, rel_err
    assert agreement >= 0.8, agreement


def test_batched_calibration_array_is_split_into_samples(fp32_model, tmp_path):
    out = quantize_int8(fp32_model, _images(8, seed=3), tmp_path / "a.onnx")
    also = quantize_int8(fp32_model, iter(_images(8, seed=3)), tmp_path / "b.onnx")  # (3,32,32)
    assert out.is_file() and also.is_file()


def test_measure_int8_and_precision_checks(fp32_model, tmp_path):
    int8_path = quantize_int8(fp32_model, _images(8, seed=4), tmp_path / "int8.onnx")
    m = measure_onnx(int8_path, MeasureConfig(**{**FAST.to_dict(), "precision": "int8"}))
    assert m.precision == "int8" and m.fingerprint.precision == "int8"
    assert m.p10_ms <= m.median_ms <= m.p90_ms
    with pytest.raises(LatencyError, match="quantization operators"):
        measure_onnx(int8_path, FAST)  # declared fp32


def test_quantize_and_measure(fp32_model, tmp_path):
    m = quantize_and_measure(fp32_model, _images(8, seed=5), tmp_path / "q.onnx", FAST)
    assert m.precision == "int8"
    assert (tmp_path / "q.onnx").is_file()
    assert m.n_samples >= 1


@pytest.mark.parametrize("empty", [[], iter([]), np.empty((0, 3, 32, 32), np.float32)])
def test_empty_calibration_set_is_rejected(fp32_model, tmp_path, empty):
    with pytest.raises(LatencyError, match="calibration set is empty"):
        quantize_int8(fp32_model, empty, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_bad_calibration_and_arguments_are_rejected(fp32_model, tmp_path):
    with pytest.raises(LatencyError, match="expected"):
        quantize_int8(fp32_model, [np.zeros((1, 3, 16, 16), np.float32)], tmp_path / "x.onnx")
    with pytest.raises(LatencyError, match="NaN"):
        quantize_int8(fp32_model, [np.full((1, 3, 32, 32), np.nan)], tmp_path / "x.onnx")
    with pytest.raises(LatencyError, match="fmt"):
        quantize_int8(fp32_model, _images(2, 0), tmp_path / "x.onnx", fmt="int4")
    with pytest.raises(LatencyError, match="not found"):
        quantize_int8(tmp_path / "missing.onnx", _images(2, 0), tmp_path / "x.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model")
    with pytest.raises(LatencyError):
        quantize_int8(corrupt, _images(2, 0), tmp_path / "x.onnx")
