"""Tests for latency.measure: statistics on synthetic samples, and the ORT measurer.

Latency on this shared machine is noisy, so nothing here asserts a timing; the tests check
behaviour (stopping rules, recorded fields, errors, ratios far from noise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latency.device import DeviceLockTimeout, device_lock
from latency.measure import (
    LatencyError,
    MeasureConfig,
    Measurement,
    PairedMeasurement,
    SampleStats,
    measure_onnx,
    measure_pair,
    median_ci_ranks,
    paired_ratio_ci,
    session_interval,
    summarize,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Short, cheap settings: the tests check behaviour, not numbers.
FAST = MeasureConfig(warmup_min_s=0.02, min_runs=30, max_runs=300, time_cap_s=1.0)


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path, monkeypatch):
    # Do not queue behind (or block) real measurements of other people on this machine.
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


def _export(module, path: Path, *, dynamic_axes=None, shape=(1, 3, 32, 32)) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation warning
        torch.onnx.export(
            module,
            torch.randn(*shape),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=dynamic_axes,
        )
    return path


def _conv_net(channels: int, layers: int = 3):
    import torch
    from torch import nn

    torch.manual_seed(0)
    blocks: list[nn.Module] = []
    in_channels = 3
    for _ in range(layers):
        blocks += [
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        ]
        in_channels = channels
    return nn.Sequential(*blocks).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "small": _export(_conv_net(8), root / "small.onnx"),
        "big": _export(_conv_net(64), root / "big.onnx"),
        "dyn_batch": _export(_conv_net(8), root / "dyn_batch.onnx", dynamic_axes={"x": {0: "n"}}),
        "dyn_hw": _export(
            _conv_net(8), root / "dyn_hw.onnx", dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}}
        ),
    }


# ------------------------------------------------------------------------------ statistics


def test_summarize_known_values():
    samples_ns = np.arange(1, 102) * 1_000_000  # 1..101 ms
    stats = summarize(samples_ns)
    assert stats.n == 101
    assert stats.median_ms == pytest.approx(51.0)
    assert stats.p10_ms == pytest.approx(11.0)  # numpy linear interpolation
    assert stats.p90_ms == pytest.approx(91.0)
    assert stats.mean_ms == pytest.approx(51.0)
    assert stats.min_ms == 1.0 and stats.max_ms == 101.0
    assert stats.cv == pytest.approx(np.std(np.arange(1, 102), ddof=1) / 51.0)
    assert stats.outlier_share == 0.0  # a uniform sample has no far tail
    assert stats.p90_over_median == pytest.approx(91.0 / 51.0)
    assert stats.contended  # 1.78 > 1.5
    lo, hi, _ = median_ci_ranks(101)
    assert (stats.ci_low_ms, stats.ci_high_ms) == (lo + 1.0, hi + 1.0)


def test_summarize_outlier_share_counts_the_far_tail():
    rng = np.random.default_rng(1)
    base = rng.normal(1_000_000, 10_000, size=950)  # 1 ms +- 1 %
    spikes = np.full(50, 3_000_000.0)  # preemptions: 3 ms
    stats = summarize(np.concatenate([base, spikes]))
    assert stats.outlier_share == pytest.approx(0.05, abs=0.01)
    assert stats.median_ms == pytest.approx(1.0, rel=0.01)
    assert not stats.contended


def test_summarize_outlier_threshold_is_at_least_5_percent_above_the_median():
    # MAD = 0: only the 5 % floor separates the shoulder (4 % slower) from real outliers.
    stats = summarize([1000] * 90 + [1040] * 5 + [5000] * 5)
    assert stats.mad_ms == 0.0
    assert stats.outlier_share == pytest.approx(0.05)
    assert summarize([1000] * 90 + [1040] * 5 + [5000] * 5, outlier_floor=0.0).outlier_share == (
        pytest.approx(0.10)
    )


def test_summarize_single_sample():
    stats = summarize([2_000_000])
    assert stats.median_ms == stats.ci_low_ms == stats.ci_high_ms == 2.0
    assert stats.cv == 0.0 and stats.std_ms == 0.0
    assert stats.ci_confidence == pytest.approx(0.0)  # one point covers nothing


@pytest.mark.parametrize("bad", [[], [[1, 2]], [0, 1], [-5], [float("nan")], [float("inf")]])
def test_summarize_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        summarize(bad)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(10, (1, 8)), (20, (5, 14)), (100, (39, 60))],  # classic tables (0-based indices)
)
def test_median_ci_ranks_match_tables(n, expected):
    lo, hi, coverage = median_ci_ranks(n, 0.95)
    assert (lo, hi) == expected
    assert coverage >= 0.95


def test_median_ci_ranks_small_n_falls_back_to_min_max():
    lo, hi, coverage = median_ci_ranks(5, 0.95)
    assert (lo, hi) == (0, 4)
    assert coverage == pytest.approx(1 - 2 * 0.5**5)


def test_median_ci_covers_true_median_in_most_repetitions():
    true_median = np.log(2.0)  # exponential(1): right-skewed like latency
    hits = 0
    reps = 400
    for seed in range(reps):
        rng = np.random.default_rng(seed)
        stats = summarize(rng.exponential(1.0, size=101) * 1e6 + 1.0)  # ns, > 0
        hits += stats.ci_low_ms <= true_median * 1.0 <= stats.ci_high_ms
    assert hits / reps >= 0.92  # nominal >= 0.95 (exact for continuous data)


def test_session_interval_is_the_order_statistic_ci_of_session_medians():
    medians = [6.2, 6.0, 6.5, 6.1, 6.3, 6.05]
    center, low, high, coverage = session_interval(medians)
    assert (center, low, high) == (pytest.approx(6.15), 6.0, 6.5)  # 6 sessions at 95 %: [min, max]
    assert coverage == pytest.approx(1 - 2 / 64)
    nine = session_interval(list(range(1, 10)))  # 9 sessions: [2nd, 8th], coverage 96.1 %
    assert nine[1:3] == (2.0, 8.0) and nine[3] == pytest.approx(1 - 2 * 10 / 512)
    assert session_interval([5.0])[:3] == (5.0, 5.0, 5.0)
    for bad in ([], [1.0, -1.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="session_interval"):
            session_interval(bad)


def test_session_interval_covers_a_random_session_effect_that_the_pooled_ci_misses():
    # Random-effects model of the timings: each session has its own level (sd 2.5 %, as between
    # processes on the development VM) and samples around it (sd 1 %). The pooled order-statistic
    # CI of one measurement is the within-session precision and misses the true median most of the
    # time; the CI over 6 session medians covers it about as often as it claims.
    rng = np.random.default_rng(3)
    truth, pooled_hits, session_hits, reps = 6.0, 0, 0, 400
    for _ in range(reps):
        levels = truth * (1 + 0.025 * rng.standard_normal(6))
        samples = [lvl * (1 + 0.01 * rng.standard_normal(100)) for lvl in levels]
        stats = summarize(np.concatenate(samples) * 1e6)
        pooled_hits += stats.ci_low_ms <= truth <= stats.ci_high_ms
        _, low, high, _ = session_interval([np.median(x) for x in samples])
        session_hits += low <= truth <= high
    assert pooled_hits / reps < 0.6
    assert session_hits / reps >= 0.93


def test_median_ci_narrows_with_more_samples():
    def mean_width(n: int) -> float:
        widths = []
        for seed in range(50):
            rng = np.random.default_rng(seed)
            stats = summarize(rng.lognormal(0.0, 0.2, size=n) * 1e6)
            widths.append(stats.ci_high_ms - stats.ci_low_ms)
        return float(np.mean(widths))

    assert mean_width(1000) < 0.5 * mean_width(100)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=300))
def test_summarize_invariants(samples):
    stats = summarize(samples)
    assert stats.min_ms <= stats.p10_ms <= stats.median_ms <= stats.p90_ms <= stats.max_ms
    assert stats.ci_low_ms <= stats.median_ms <= stats.ci_high_ms
    assert 0.0 <= stats.outlier_share <= 1.0
    assert stats.rel_ci_half_width >= 0.0
    assert SampleStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats


def test_paired_ratio_ci_exact_ratio_collapses():
    rng = np.random.default_rng(0)
    b = rng.lognormal(0.0, 0.3, size=(60, 3)) * 1e6
    ratio, low, high = paired_ratio_ci(2.0 * b, b, reps=200, seed=3)
    assert ratio == pytest.approx(2.0)
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)


def test_paired_ratio_ci_cancels_common_drift_and_covers_truth():
    hits = 0
    widths = []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        drift = np.exp(rng.normal(0, 0.05, size=(80, 1)))  # per-pair host speed, +-5 %
        a = 1.2e6 * drift * rng.lognormal(0, 0.02, size=(80, 3))
        b = 1.0e6 * drift * rng.lognormal(0, 0.02, size=(80, 3))
        ratio, low, high = paired_ratio_ci(a, b, reps=300, seed=seed)
        hits += low <= 1.2 <= high
        widths.append((high - low) / ratio)
    assert hits >= 50  # nominal 95 % of 60
    assert np.median(widths) < 0.05  # far narrower than the 5 % drift


def test_paired_ratio_ci_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(size=(30, 2)) + 1, rng.lognormal(size=(30, 2)) + 1
    assert paired_ratio_ci(a, b, seed=7, reps=200) == paired_ratio_ci(a, b, seed=7, reps=200)
    with pytest.raises(ValueError):
        paired_ratio_ci(a, b[:5])


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_runs": 5},
        {"min_runs": 50, "max_runs": 10},
        {"precision": "int4"},
        {"graph_optimization": "max"},
        {"backend": "tflite"},
        {"intra_op_threads": 0},
        {"target_rel_ci": 0.0},
        {"time_cap_s": 0},
        {"pin_cpu": 0, "intra_op_threads": 2},
        {"pin_cpu": -1},
        {"burst_runs": 0},
        {"sessions": 0},
        {"sessions": 5, "min_runs": 1, "max_runs": 4},
    ],
)
def test_config_rejects_invalid_values(kwargs):
    with pytest.raises(ValueError, match="MeasureConfig"):
        MeasureConfig(**kwargs)


def test_config_round_trips_json():
    cfg = MeasureConfig(pin_cpu=1, graph_optimization="extended", precision="int8")
    assert MeasureConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        MeasureConfig.from_dict({**cfg.to_dict(), "threads": 4})


# ------------------------------------------------------------------------------ measure_onnx


def test_measure_onnx_returns_sane_fields(models):
    m = measure_onnx(models["small"], FAST)
    assert m.p10_ms <= m.median_ms <= m.p90_ms
    assert m.ci_low_ms <= m.median_ms <= m.ci_high_ms
    assert m.min_ms <= m.p10_ms
    assert FAST.min_runs <= m.n_samples <= FAST.max_runs
    assert len(m.samples_ns) == m.n_samples
    assert m.warmup_runs >= 10
    assert m.fingerprint.intra_op_threads == 1 and m.fingerprint.inter_op_threads == 1
    assert m.fingerprint.graph_optimization == "all"
    assert m.fingerprint.precision == m.precision == "fp32"
    assert m.input_shapes == (("x", (1, 3, 32, 32)),)
    assert m.stop_reason in {"ci_target", "max_runs", "time_cap"}
    assert m.converged == (m.rel_ci_half_width <= FAST.target_rel_ci)
    # stop_reason says why each session stopped; converged is about the reported (between-session) CI
    if m.stop_reason == "ci_target" and m.sessions == 1:
        assert m.converged
    assert m.contended == (m.p90_over_median > 1.5)
    assert 0 < m.timed_s <= m.wall_s
    assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_measure_onnx_times_fresh_sessions_and_reports_their_interval(models):
    cfg = MeasureConfig(warmup_min_s=0.0, min_runs=20, max_runs=300, time_cap_s=0.6, sessions=3)
    m = measure_onnx(models["small"], cfg)
    assert m.sessions == 3 and len(m.session_medians_ms) == len(m.session_runs) == 3
    assert sum(m.session_runs) == m.n_samples == len(m.samples_ns) and min(m.session_runs) >= 20
    assert m.warmup_runs >= 3 * cfg.warmup_runs  # each session is warmed up
    bounds = np.cumsum([0, *m.session_runs])
    medians = [np.median(m.samples_ns[a:b]) / 1e6 for a, b in zip(bounds[:-1], bounds[1:])]
    assert m.session_medians_ms == pytest.approx(medians)
    assert m.median_ms == pytest.approx(np.median(medians))
    assert (m.ci_low_ms, m.ci_high_ms) == (min(medians), max(medians))  # 3 sessions: [min, max], 75 %
    assert m.ci_confidence == pytest.approx(0.75)
    pooled = summarize(m.samples_ns)
    assert (m.within_ci_low_ms, m.within_ci_high_ms) == (pooled.ci_low_ms, pooled.ci_high_ms)
    assert m.between_session_cv == pytest.approx(np.std(medians, ddof=1) / np.mean(medians))
    assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_measure_onnx_with_one_session_reports_the_within_session_interval(models):
    m = measure_onnx(models["small"], MeasureConfig(warmup_min_s=0.0, time_cap_s=0.3, sessions=1))
    pooled = summarize(m.samples_ns)
    assert m.session_runs == (m.n_samples,) and m.between_session_cv == 0.0
    assert (m.median_ms, m.ci_low_ms, m.ci_high_ms) == (pooled.median_ms, pooled.ci_low_ms, pooled.ci_high_ms)


def test_a_measurement_recorded_before_sessions_existed_still_loads(models):
    m = measure_onnx(models["small"], MeasureConfig(warmup_min_s=0.0, time_cap_s=0.3, sessions=1))
    old = {k: v for k, v in m.to_dict().items()
           if k not in ("sessions", "session_medians_ms", "session_runs", "within_ci_low_ms", "within_ci_high_ms",
                        "between_session_cv")}
    loaded = Measurement.from_dict(old)
    assert loaded.median_ms == m.median_ms and loaded.sessions == 1 and loaded.session_medians_ms == ()


def test_measure_onnx_stops_at_max_runs(models):
    cfg = MeasureConfig(
        warmup_min_s=0.0, min_runs=20, max_runs=57, target_rel_ci=1e-9, time_cap_s=60.0
    )
    m = measure_onnx(models["small"], cfg)
    assert m.n_samples == 57
    assert m.stop_reason == "max_runs"
    assert not m.converged


def test_measure_onnx_stops_at_time_cap(models):
    cfg = MeasureConfig(
        warmup_min_s=0.0, max_runs=10**7, target_rel_ci=1e-9, time_cap_s=0.2, keep_samples=False
    )
    m = measure_onnx(models["small"], cfg)
    assert m.stop_reason == "time_cap"
    assert not m.converged
    assert m.n_samples < cfg.max_runs
    assert m.samples_ns == ()
    assert m.timed_s < 0.2 + 1.0  # one run plus one stopping check past the cap, generously


def test_measure_onnx_accepts_str_path_and_bytes(models):
    path = models["small"]
    by_path = measure_onnx(path, FAST)
    by_str = measure_onnx(str(path), FAST)
    by_bytes = measure_onnx(path.read_bytes(), FAST)
    assert by_path.model_sha256 == by_str.model_sha256 == by_bytes.model_sha256
    assert by_path.input_shapes == by_bytes.input_shapes


def test_measure_onnx_dynamic_batch_is_measured_at_batch_1(models):
    m = measure_onnx(models["dyn_batch"], FAST)
    assert m.input_shapes == (("x", (1, 3, 32, 32)),)


def test_measure_onnx_rejects_dynamic_spatial_dims(models):
    with pytest.raises(LatencyError, match="dynamic dimension"):
        measure_onnx(models["dyn_hw"], FAST)


def test_corrupt_or_missing_model_raises_latency_error(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe" * 10)
    for source in (corrupt, tmp_path / "missing.onnx", b"garbage bytes", b""):
        with pytest.raises(LatencyError) as info:
            measure_onnx(source, FAST)
        assert "\n" not in str(info.value)
    assert issubclass(LatencyError, ValueError)


def test_fp32_model_declared_int8_is_rejected(models):
    with pytest.raises(LatencyError, match="no quantization operators"):
        measure_onnx(models["small"], MeasureConfig(precision="int8"))


def test_pin_cpu_pins_and_restores_affinity(models):
    before = os.sched_getaffinity(0)
    core = min(before)
    m = measure_onnx(models["small"], MeasureConfig(**{**FAST.to_dict(), "pin_cpu": core}))
    assert m.pinned_cpu == core
    assert os.sched_getaffinity(0) == before
    not_allowed = max(before) + 1000
    with pytest.raises(LatencyError, match="not an allowed core"):
        measure_onnx(models["small"], MeasureConfig(**{**FAST.to_dict(), "pin_cpu": not_allowed}))
    assert os.sched_getaffinity(0) == before


def test_measure_onnx_waits_for_the_device_lock(models):
    """measure_onnx takes the device lock: while another thread holds it, it times out."""
    held = threading.Event()
    release = threading.Event()

    def holder():
        with device_lock():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        cfg = MeasureConfig(**{**FAST.to_dict(), "lock_timeout_s": 0.2})
        with pytest.raises(DeviceLockTimeout):
            measure_onnx(models["small"], cfg)
        unlocked = MeasureConfig(**{**FAST.to_dict(), "lock": False})
        assert measure_onnx(models["small"], unlocked).n_samples >= 1
    finally:
        release.set()
        thread.join()
    assert measure_onnx(models["small"], FAST).n_samples >= 1  # free again


def test_measure_onnx_is_reentrant_under_a_held_lock(models):
    with device_lock():
        assert measure_onnx(models["small"], FAST).n_samples >= 1


# ------------------------------------------------------------------------------ measure_pair

PAIR_FAST = MeasureConfig(
    warmup_min_s=0.02, min_pairs=20, max_pairs=400, time_cap_s=1.5, bootstrap_reps=300
)


def test_measure_pair_model_against_itself_gives_ratio_near_one(models):
    p = measure_pair(models["small"], models["small"], PAIR_FAST)
    assert p.ratio_ci_low <= p.ratio <= p.ratio_ci_high
    # Generous: the CI (widened by 5 %) contains 1; noise cannot make a copy 5 % slower.
    assert p.ratio_ci_low - 0.05 <= 1.0 <= p.ratio_ci_high + 0.05
    assert p.n_pairs >= 2
    assert len(p.samples_a_ns) == len(p.samples_b_ns) == p.n_pairs * p.burst_runs
    assert p.stop_reason in {"ci_target", "max_pairs", "time_cap"}
    assert p.converged == (p.rel_ci_half_width <= PAIR_FAST.target_rel_ci)
    if p.stop_reason == "ci_target":
        assert p.converged  # the stopping check and the reported CI are the same computation
    assert PairedMeasurement.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_measure_pair_bigger_model_is_slower(models):
    p = measure_pair(models["big"], models["small"], PAIR_FAST)
    # 64 vs 8 channels: about 50x the MACs; any ratio noise is far below this margin.
    assert p.ratio > 2.0
    assert p.ratio_ci_low > 1.0
    assert p.median_a_ms > p.median_b_ms
    assert p.ratio == pytest.approx(p.median_a_ms / p.median_b_ms)


def test_measure_pair_stops_at_max_pairs(models):
    cfg = MeasureConfig(
        warmup_min_s=0.0,
        min_pairs=5,
        max_pairs=12,
        target_rel_ci=1e-9,
        time_cap_s=60.0,
        bootstrap_reps=100,
        burst_runs=2,
    )
    p = measure_pair(models["small"], models["big"], cfg)
    assert p.n_pairs == 12 and p.stop_reason == "max_pairs" and not p.converged
    assert len(p.samples_a_ns) == 24


def test_measure_pair_reports_errors_for_either_model(models, tmp_path):
    with pytest.raises(LatencyError):
        measure_pair(models["small"], tmp_path / "missing.onnx", PAIR_FAST)
    with pytest.raises(ValueError, match="precision_a"):
        measure_pair(models["small"], models["small"], PAIR_FAST, precision_a="int4")


# ------------------------------------------------------------------------------ packaging


def test_latency_modules_do_not_import_torch():
    code = (
        "import sys; import latency.measure, latency.device, latency.quantize; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
