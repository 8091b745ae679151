"""Latency measurement of ONNX models with ONNX Runtime on the CPU.

Implements the measurement protocol that the MnasNet (https://arxiv.org/abs/1807.11626) and NetAdapt
(https://arxiv.org/abs/1804.03230) reproductions build on. Its shape is that of ONNX Runtime's own
benchmark tool, ``onnxruntime_perf_test`` (warm-up, every run timed, median and percentiles reported;
https://github.com/microsoft/onnxruntime/tree/main/onnxruntime/test/perftest), with the session
settings of ONNX Runtime's threading guide
(https://onnxruntime.ai/docs/performance/tune-performance/threading.html). Figures quoted below without
a script were one-off measurements on the development VM (a shared 2-vCPU AVX-512 Xeon, ONNX Runtime
1.32, one thread, a MobileNetV3-Small-sized network at 224²); the repeatable ones are in the README's
"Measured results", each with the script that produced it. The protocol:

* explicit session options (threads, ``ORT_SEQUENTIAL``, optimization level, CPU provider);
* warm-up of at least ``warmup_runs`` runs *and* ``warmup_min_s`` seconds;
* every ``run()`` timed on its own with ``perf_counter_ns``; all samples kept;
* ``sessions`` sessions (each created afresh and warmed up) timed in turn; the **median** of
  their medians is the primary number, with a distribution-free CI over the session medians, and
  p10, p90, CV and an outlier share of all samples;
* sequential stopping: stop as soon as the CI of the median is tight enough, or at
  ``max_runs`` / ``time_cap_s``;
* a quality flag when p90/median > 1.5: two processes sharing one core leave the median alone
  but triple the p90 (one-off, development VM: median 1.9 -> 2.0 ms, p90 2.0 -> 5.9 ms with a
  second measuring process pinned to the same core; on separate cores p90 rose by under 10 %).

Statistics (all in pure functions, unit-tested on synthetic samples):

* **CI of the median**: the exact distribution-free order-statistic interval
  ``[x_(l), x_(n-l+1)]`` with ``l`` the largest rank such that ``P(B <= l-1) <= alpha/2`` for
  ``B ~ Binomial(n, 1/2)``. Coverage is at least ``confidence`` for any continuous i.i.d.
  distribution (below 6 samples no such ``l`` exists at 95 %; then ``[min, max]`` is returned
  with its smaller exact coverage in ``ci_confidence``).
* **Outliers**: the share of samples above ``median + max(3 * 1.4826 * MAD, 0.05 * median)``:
  three robust standard deviations, one-sided because timing noise only ever adds time, and at
  least 5 % above the median, because on a quiet core the main mode is so tight (MAD ~ 1 %)
  that the ordinary shoulder of the distribution would otherwise count as outliers.
* **Paired ratio CI** (:func:`measure_pair`): percentile bootstrap over *paired bursts* (a burst
  of A and the adjacent burst of B are resampled together, which keeps the common drift of the
  host inside each pair so that it cancels in the ratio), seeded, ``bootstrap_reps`` replicates.

What the CI means: a single session's samples give the sampling precision of the median *within
that session* only. Runs of the same network in separate processes differed by far more than that
interval (one-off, development VM: six runs of a 6 ms network, medians 6.04-6.50 ms, each with a
95 % CI of about +-0.5 %): the level of a session (its memory placement, its set-up, the host's
state while it ran) is a random effect that its own samples cannot see. So :func:`measure_onnx`
times ``MeasureConfig.sessions`` freshly created sessions in turn and reports the median of their
medians with the order-statistic CI over them (:func:`session_interval`), which contains the
between-session spread; ``experiments/bench_interval.py`` checks its coverage across independent
processes. Drift over minutes (README "Measured results": whole networks re-measured 15 minutes
apart differed by a median 2.3 %, at most 35 %) is outside any one measurement's window; use
:func:`measure_pair` against a reference network when 1 % differences matter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from latency.device import DeviceFingerprint, checked_fields, device_fingerprint, device_lock


def _is_int(value: object) -> bool:
    """``search_spaces.checks.is_int``, repeated here on purpose: this module runs in the weightless device
    bundle (onnxruntime + numpy only), which must not import ``search_spaces``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


__all__ = [
    "CONTENTION_P90_OVER_MEDIAN",
    "LatencyError",
    "MeasureConfig",
    "Measurement",
    "PairedMeasurement",
    "SampleStats",
    "measure_onnx",
    "measure_pair",
    "median_ci_ranks",
    "model_op_types",
    "paired_ratio_ci",
    "session_interval",
    "summarize",
]

#: p90/median above this marks a measurement as taken on a contended core: alone on its core a
#: network's p90/median was about 1.05 on the development VM, beside a second process on the same
#: core about 3 (see the module docstring).
CONTENTION_P90_OVER_MEDIAN = 1.5

#: Robust-sigma factor for the MAD of a normal distribution.
_MAD_TO_SIGMA = 1.4826

_GRAPH_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_PRECISIONS = ("fp32", "int8")
_PROVIDER = "CPUExecutionProvider"

#: Operator types whose presence marks a model as quantized (QDQ or QOperator format).
_QUANT_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "QLinearAdd",
        "QLinearMul",
        "QLinearGlobalAveragePool",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearConcat",
        "QLinearAveragePool",
        "QGemm",
        "ConvInteger",
        "MatMulInteger",
    }
)

_FLOAT_INPUT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}

_SCHEMA_VERSION = 1


class LatencyError(ValueError):
    """A model cannot be measured (missing, corrupt, unsupported inputs, wrong precision)."""


def one_line(error: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
    """How to measure. Frozen, JSON round-trippable, validated on construction.

    Attributes:
        backend: What times the model (:data:`latency.backends.BACKENDS`, described in
            :mod:`latency.backends`): ``"ort-cpu"`` (the default: ONNX Runtime's CPU execution
            provider), ``"ort-cuda"``, ``"ort-tensorrt"``, ``"command"`` or ``"ray-node"``.
        intra_op_threads: ORT intra-op threads; 1 (the default) means no thread pool at all.
        inter_op_threads: ORT inter-op threads (sequential execution uses none beyond 1).
        graph_optimization: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"``. Must match
            deployment: ``"basic"`` is 3.3x slower than ``"all"`` on AVX-512 (no NCHWc).
        allow_spinning: ORT ``session.intra_op.allow_spinning``; no effect at one thread, and
            turning it off made 2-thread latency 60 % worse on the development VM (one-off:
            1.42 -> 2.26 ms; spinning is described in ONNX Runtime's threading guide).
        warmup_runs: Minimum untimed runs before timing (>= 10).
        warmup_min_s: Minimum warm-up duration in seconds (the longer of the two wins).
        min_runs: Timed runs before the stopping rule is first checked.
        max_runs: Hard limit on timed runs.
        target_rel_ci: Stop when the CI half-width of the median, relative to the median, is at
            most this (0.01 = 1 %). For :func:`measure_pair` it applies to the ratio.
        confidence: Confidence level of the CIs.
        time_cap_s: Limit in seconds on the timed phase (warm-up and session creation are not
            included). It wins over ``min_runs``/``min_pairs``.
        precision: ``"fp32"`` or ``"int8"``; checked against the model's operators.
        pin_cpu: Core index to pin the measuring thread to (``os.sched_setaffinity``), restored
            afterwards; ``None`` leaves affinity alone. Only with ``intra_op_threads == 1``.
        seed: Seed of the random input and of the bootstrap.
        lock: Take :func:`latency.device.device_lock` around warm-up and timing.
        lock_timeout_s: Give up waiting for the lock after this many seconds (``None``: never).
        keep_samples: Store every timed sample (ns) in the result.
        burst_runs: :func:`measure_pair` only: timed runs per burst.
        burst_warmup_runs: :func:`measure_pair` only: untimed runs at the start of each burst,
            so that the cache state left by the other model is not timed.
        min_pairs: :func:`measure_pair` only: pairs of bursts before the first stopping check.
        max_pairs: :func:`measure_pair` only: hard limit on pairs of bursts.
        bootstrap_reps: :func:`measure_pair` only: bootstrap replicates for the ratio CI.
        sessions: :func:`measure_onnx` only: how many ONNX Runtime sessions (each created afresh,
            with fresh input buffers, warmed up and timed in turn) one measurement times. The
            reported median and CI are those of the session medians, so the CI covers the
            between-session component (memory placement, session set-up, the host's state) that
            one session's samples cannot see; ``min_runs`` applies to each session, ``max_runs``,
            ``time_cap_s`` and ``warmup_min_s`` to the whole measurement. 1 = the single-session
            protocol (its CI is the within-session one).
        command: ``"command"`` only: the command template; ``{onnx}`` (required) becomes the model
            file, ``{input_shape}`` its input shape (``1,3,224,224``); it prints the latency in ms.
        command_timeout_s: ``"command"`` only: limit in seconds on one run of the command.
        command_repeats: ``"command"`` only: runs per measurement; the median is the latency.
        command_max_ms: ``"command"`` only: a printed latency at or above this is refused as absurd.
        device: ``"ray-node"``: the device whose node measures (Ray resource ``latency:<device>``);
            ``"command"``: a name for the target device (its fingerprint's ``cpu_model``, so its table
            and lock); else None.
        node_timeout_s: ``"ray-node"`` only: how long a measurement waits for a node offering the
            device's resource before it fails.
    """

    backend: str = "ort-cpu"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    allow_spinning: bool = True
    warmup_runs: int = 10
    warmup_min_s: float = 0.2
    min_runs: int = 30
    max_runs: int = 2000
    target_rel_ci: float = 0.01
    confidence: float = 0.95
    time_cap_s: float = 5.0
    precision: str = "fp32"
    pin_cpu: int | None = None
    seed: int = 0
    lock: bool = True
    lock_timeout_s: float | None = 600.0
    keep_samples: bool = True
    burst_runs: int = 3
    burst_warmup_runs: int = 1
    min_pairs: int = 25
    max_pairs: int = 1000
    bootstrap_reps: int = 500
    sessions: int = 6
    command: str | None = None
    command_timeout_s: float = 60.0
    command_repeats: int = 3
    command_max_ms: float = 100_000.0
    device: str | None = None
    node_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        def fail(field: str, allowed: str) -> None:
            raise ValueError(
                f"MeasureConfig.{field}={getattr(self, field)!r} is invalid; allowed: {allowed}"
            )

        from latency.backends import BACKENDS, DEVICE_NAME, check_provider

        if self.backend not in BACKENDS:
            fail("backend", ", ".join(BACKENDS))
        if self.backend == "command":
            if not isinstance(self.command, str) or "{onnx}" not in self.command:
                fail("command", "a command template containing {onnx} (and optionally {input_shape}), "
                     "e.g. 'bench.sh {onnx} {input_shape}'")
        elif self.command is not None:
            fail("command", "None unless backend='command'")
        if self.backend == "ray-node" and not (isinstance(self.device, str) and DEVICE_NAME.match(self.device)):
            fail("device", "a device name of letters, digits, '_', '.' or '-' (ray-node measures on the node "
                 "offering the Ray resource latency:<device>)")
        if self.device is not None and (self.backend not in ("command", "ray-node")
                                        or not (isinstance(self.device, str) and DEVICE_NAME.match(self.device))):
            fail("device", "None, or with backend 'command' or 'ray-node' a name of letters, digits, '_', '.' or '-'")
        if not _is_int(self.command_repeats) or self.command_repeats < 1:
            fail("command_repeats", "an integer >= 1")
        for name in ("command_timeout_s", "command_max_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                fail(name, "a finite number > 0")
        if isinstance(self.node_timeout_s, bool) or not isinstance(self.node_timeout_s, (int, float)) \
                or not 0 <= self.node_timeout_s < math.inf:
            fail("node_timeout_s", "seconds >= 0")
        check_provider(self.backend)
        if self.graph_optimization not in _GRAPH_OPT_LEVELS:
            fail("graph_optimization", ", ".join(_GRAPH_OPT_LEVELS))
        if self.precision not in _PRECISIONS:
            fail("precision", ", ".join(_PRECISIONS))
        for name in ("intra_op_threads", "inter_op_threads"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "an integer >= 1 (set threads explicitly; 0 lets ORT choose)")
        if not _is_int(self.warmup_runs) or self.warmup_runs < 10:
            fail("warmup_runs", "an integer >= 10 (steady state arrives after 3-4 runs)")
        if not _is_int(self.min_runs) or self.min_runs < 1:
            fail("min_runs", "an integer >= 1")
        if not _is_int(self.max_runs) or self.max_runs < self.min_runs:
            fail("max_runs", f"an integer >= min_runs ({self.min_runs})")
        if not _is_int(self.min_pairs) or self.min_pairs < 2:
            fail("min_pairs", "an integer >= 2")
        if not _is_int(self.max_pairs) or self.max_pairs < self.min_pairs:
            fail("max_pairs", f"an integer >= min_pairs ({self.min_pairs})")
        if not _is_int(self.burst_runs) or self.burst_runs < 1:
            fail("burst_runs", "an integer >= 1")
        if not _is_int(self.burst_warmup_runs) or self.burst_warmup_runs < 0:
            fail("burst_warmup_runs", "an integer >= 0")
        if not _is_int(self.bootstrap_reps) or self.bootstrap_reps < 100:
            fail("bootstrap_reps", "an integer >= 100")
        if not 0.0 < self.target_rel_ci < 1.0:
            fail("target_rel_ci", "a fraction in (0, 1), e.g. 0.01 for 1 %")
        if not 0.5 <= self.confidence < 1.0:
            fail("confidence", "a probability in [0.5, 1), e.g. 0.95")
        if not self.time_cap_s > 0:
            fail("time_cap_s", "seconds > 0")
        if not self.warmup_min_s >= 0:
            fail("warmup_min_s", "seconds >= 0")
        if self.lock_timeout_s is not None and not self.lock_timeout_s >= 0:
            fail("lock_timeout_s", "seconds >= 0 or None")
        if not _is_int(self.seed):
            fail("seed", "an integer")
        if not _is_int(self.sessions) or not 1 <= self.sessions <= self.max_runs:
            fail("sessions", f"an integer in [1, max_runs={self.max_runs}]")
        if self.pin_cpu is not None:
            if not _is_int(self.pin_cpu) or self.pin_cpu < 0:
                fail("pin_cpu", "None or a core index >= 0")
            if self.intra_op_threads != 1:
                fail("pin_cpu", "None when intra_op_threads > 1 (one core cannot host a pool)")

    def fingerprint(self, precision: str | None = None) -> DeviceFingerprint:
        """Device fingerprint for this configuration (``precision`` overrides the field)."""
        from latency.backends import PROVIDERS, backend_fingerprint

        fingerprint = device_fingerprint(
            backend=self.backend,
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
            allow_spinning=self.allow_spinning,
            graph_optimization=self.graph_optimization,
            precision=precision or self.precision,
            provider=PROVIDERS.get(self.backend, _PROVIDER),
        )
        return backend_fingerprint(self, fingerprint)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasureConfig:
        """Inverse of :meth:`to_dict`; rejects unknown fields."""
        return cls(**checked_fields(cls, data))


# --------------------------------------------------------------------------------------------
# Pure statistics
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int, float]:
    """Order-statistic confidence interval for the median of ``n`` i.i.d. samples.

    Args:
        n: Number of samples (>= 1).
        confidence: Desired coverage, e.g. 0.95.

    Returns:
        ``(lo, hi, coverage)``: 0-based indices into the *sorted* samples and the exact
        coverage ``1 - 2 P(B <= lo)``, ``B ~ Binomial(n, 1/2)``. Coverage is >= ``confidence``
        unless ``n`` is too small for any interval to reach it (then ``lo, hi = 0, n-1``).
    """
    if n < 1:
        raise ValueError(f"median_ci_ranks: n must be >= 1, got {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"median_ci_ranks: confidence must be in (0, 1), got {confidence}")
    alpha_half = (1.0 - confidence) / 2.0
    log_norm = math.lgamma(n + 1) + n * math.log(0.5)

    def pmf(k: int) -> float:
        return math.exp(log_norm - math.lgamma(k + 1) - math.lgamma(n - k + 1))

    # ``rank`` is the 1-based rank l of the lower bound; cdf = P(B <= l - 1).
    rank = 1
    cdf = pmf(0)
    if cdf > alpha_half:
        return 0, n - 1, 1.0 - 2.0 * cdf
    while True:
        next_cdf = cdf + pmf(rank)
        # Stop before the lower rank passes the upper rank n - l + 1.
        if next_cdf > alpha_half or rank + 1 > n - rank:
            break
        cdf = next_cdf
        rank += 1
    return rank - 1, n - rank, 1.0 - 2.0 * cdf


@dataclasses.dataclass(frozen=True)
class SampleStats:
    """Summary of one set of latency samples. All times in milliseconds.

    Attributes:
        n: Number of samples.
        median_ms, p10_ms, p90_ms: Percentiles (numpy ``linear`` interpolation).
        mean_ms, min_ms, max_ms, std_ms: Moments and extremes (``std`` with ddof=1; 0 if n<2).
        cv: ``std / mean`` (0 if n < 2).
        mad_ms: Median absolute deviation (unscaled).
        ci_low_ms, ci_high_ms: Order-statistic CI of the median (see :func:`median_ci_ranks`).
        ci_confidence: Exact coverage of that CI.
        rel_ci_half_width: ``max(median - ci_low, ci_high - median) / median``.
        outlier_share: Share of samples above ``median + max(3 * 1.4826 * MAD, 5 % of median)``.
        p90_over_median: Contention indicator (> 1.5 flags a shared core).
    """

    n: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    cv: float
    mad_ms: float
    ci_low_ms: float
    ci_high_ms: float
    ci_confidence: float
    rel_ci_half_width: float
    outlier_share: float
    p90_over_median: float

    @property
    def contended(self) -> bool:
        """True when p90/median exceeds :data:`CONTENTION_P90_OVER_MEDIAN`."""
        return self.p90_over_median > CONTENTION_P90_OVER_MEDIAN

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleStats:
        """Inverse of :meth:`to_dict`."""
        return cls(**checked_fields(cls, data))


def summarize(
    samples_ns: Any,
    *,
    confidence: float = 0.95,
    outlier_sigmas: float = 3.0,
    outlier_floor: float = 0.05,
) -> SampleStats:
    """Summarize latency samples given in nanoseconds.

    Args:
        samples_ns: 1-D sequence of per-run latencies in nanoseconds (positive, finite).
        confidence: Coverage of the median CI.
        outlier_sigmas: Robust sigmas above the median beyond which a sample is an outlier.
        outlier_floor: ... but never closer than this fraction of the median.

    Returns:
        A :class:`SampleStats` in milliseconds.

    Raises:
        ValueError: Empty, non-1-D, non-finite or non-positive samples.
    """
    values = np.asarray(samples_ns, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"summarize: need a non-empty 1-D sample, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("summarize: samples must be finite and > 0 ns")
    ms = np.sort(values) / 1e6
    n = int(ms.size)
    median = float(np.median(ms))
    p10, p90 = (float(v) for v in np.percentile(ms, [10.0, 90.0]))
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if n > 1 else 0.0
    mad = float(np.median(np.abs(ms - median)))
    lo, hi, coverage = median_ci_ranks(n, confidence)
    ci_low, ci_high = float(ms[lo]), float(ms[hi])
    threshold = median + max(outlier_sigmas * _MAD_TO_SIGMA * mad, outlier_floor * median)
    return SampleStats(
        n=n,
        median_ms=median,
        p10_ms=p10,
        p90_ms=p90,
        mean_ms=mean,
        min_ms=float(ms[0]),
        max_ms=float(ms[-1]),
        std_ms=std,
        cv=std / mean if n > 1 else 0.0,
        mad_ms=mad,
        ci_low_ms=ci_low,
        ci_high_ms=ci_high,
        ci_confidence=coverage,
        rel_ci_half_width=max(median - ci_low, ci_high - median) / median,
        outlier_share=float(np.count_nonzero(ms > threshold)) / n,
        p90_over_median=p90 / median,
    )


def session_interval(
    session_medians_ms: Any, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """Median of per-session medians and its distribution-free CI: a random-effects interval.

    Each session (a freshly created ONNX Runtime session, timed for a while) has its own level:
    the host's state, where its buffers landed in memory, how it was set up. A CI built from one
    session's samples is the precision of *that* level; the spread of independent session medians
    contains both the between-session and the within-session components. The interval is the
    order-statistic CI of :func:`median_ci_ranks` applied to the session medians, so it assumes
    only that sessions are exchangeable (6 sessions: ``[min, max]``, coverage 96.9 %).

    Args:
        session_medians_ms: The median latency of each session (>= 1 values, finite, > 0).
        confidence: Desired coverage.

    Returns:
        ``(median, ci_low, ci_high, coverage)``, coverage as in :func:`median_ci_ranks`.

    Raises:
        ValueError: Empty, non-finite or non-positive medians.
    """
    values = np.sort(np.asarray(session_medians_ms, dtype=np.float64))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"session_interval: need a non-empty 1-D sequence, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("session_interval: session medians must be finite and > 0")
    lo, hi, coverage = median_ci_ranks(int(values.size), confidence)
    return float(np.median(values)), float(values[lo]), float(values[hi]), coverage


def _median_rel_half_width(samples_ns: list[int], confidence: float) -> float:
    """Cheap version of ``summarize(...).rel_ci_half_width`` for the stopping rule."""
    ordered = np.sort(np.asarray(samples_ns, dtype=np.float64))
    median = float(np.median(ordered))
    lo, hi, _ = median_ci_ranks(ordered.size, confidence)
    return max(median - ordered[lo], ordered[hi] - median) / median


def paired_ratio_ci(
    bursts_a_ns: Any,
    bursts_b_ns: Any,
    *,
    confidence: float = 0.95,
    reps: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Ratio of medians A/B with a paired-burst percentile bootstrap CI.

    Args:
        bursts_a_ns: Array ``(n_pairs, burst_runs)`` of A's samples; row i is A's burst in
            pair i.
        bursts_b_ns: Same shape for B; row i was taken next to A's row i.
        confidence: CI coverage.
        reps: Bootstrap replicates.
        seed: Seed of the resampling (same data and seed give the same CI).

    Returns:
        ``(ratio, ci_low, ci_high)`` with ``ratio = median(all A) / median(all B)``.
    """
    a = np.asarray(bursts_a_ns, dtype=np.float64)
    b = np.asarray(bursts_b_ns, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(
            "paired_ratio_ci: need two arrays of equal shape (n_pairs, burst_runs), "
            f"got {a.shape} and {b.shape}"
        )
    if not (np.all(a > 0) and np.all(b > 0)):
        raise ValueError("paired_ratio_ci: samples must be > 0")
    ratio = float(np.median(a) / np.median(b))
    n_pairs, burst = a.shape
    rng = np.random.default_rng(seed)
    boot = np.empty(reps, dtype=np.float64)
    # Chunked so that the temporary arrays stay small (they sit between timed bursts).
    chunk = max(1, min(reps, 200_000 // (n_pairs * burst) or 1))
    for start in range(0, reps, chunk):
        stop = min(reps, start + chunk)
        idx = rng.integers(0, n_pairs, size=(stop - start, n_pairs))
        med_a = np.median(a[idx].reshape(stop - start, -1), axis=1)
        med_b = np.median(b[idx].reshape(stop - start, -1), axis=1)
        boot[start:stop] = med_a / med_b
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return ratio, float(low), float(high)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Result of :func:`measure_onnx`. Times in milliseconds unless the name says otherwise.

    Attributes:
        median_ms: Primary latency number.
        p10_ms, p90_ms, mean_ms, min_ms, cv: Spread of the samples.
        ci_low_ms, ci_high_ms: Order-statistic CI of the median; ``ci_confidence`` its coverage.
        rel_ci_half_width: CI half-width relative to the median (the stopping criterion).
        n_samples: Timed runs.
        outlier_share: Share of samples above median + max(3 robust sigmas, 5 %).
        p90_over_median: Contention indicator; ``contended`` is True above 1.5.
        warmup_runs: Untimed runs done before timing.
        timed_s: Duration of the timed phase (includes stopping-rule checks).
        wall_s: Whole call, including session creation and waiting for the lock.
        converged: ``rel_ci_half_width <= target_rel_ci`` and every session has ``min_runs`` runs.
        stop_reason: ``"ci_target"``, ``"max_runs"`` or ``"time_cap"`` (with several sessions:
            ``"ci_target"`` if every session reached it, else the cap one of them hit).
        precision: ``"fp32"`` or ``"int8"``.
        fingerprint: Device and runtime settings of the measurement.
        pinned_cpu: Core the thread was pinned to, or None.
        input_shapes: ``((input_name, shape), ...)`` fed to the model.
        model_sha256: First 16 hex digits of the SHA-256 of the model bytes.
        samples_ns: Every timed sample in ns, in time order (empty if not kept).
        schema_version: Version of this record's layout.
        sessions: Sessions timed (``MeasureConfig.sessions``).
        session_medians_ms: Median of each session, in order; ``median_ms`` is their median.
        session_runs: Timed runs of each session (``samples_ns`` is their concatenation).
        within_ci_low_ms, within_ci_high_ms: Order-statistic CI of the median of all samples
            pooled: the within-session precision only (with one session, the reported CI).
        between_session_cv: CV of the session medians (0 with one session).

    With one session, ``ci_low_ms``/``ci_high_ms`` is the within-session interval; with several,
    the interval over the session medians (:func:`session_interval`).
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    cv: float
    ci_low_ms: float
    ci_high_ms: float
    ci_confidence: float
    rel_ci_half_width: float
    n_samples: int
    outlier_share: float
    p90_over_median: float
    contended: bool
    warmup_runs: int
    timed_s: float
    wall_s: float
    converged: bool
    stop_reason: str
    precision: str
    fingerprint: DeviceFingerprint
    pinned_cpu: int | None
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    model_sha256: str
    samples_ns: tuple[int, ...] = ()
    schema_version: int = _SCHEMA_VERSION
    sessions: int = 1
    session_medians_ms: tuple[float, ...] = ()
    session_runs: tuple[int, ...] = ()
    within_ci_low_ms: float | None = None
    within_ci_high_ms: float | None = None
    between_session_cv: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (nested fingerprint as a dict, tuples as lists)."""
        data = dataclasses.asdict(self)
        data["fingerprint"] = self.fingerprint.to_dict()
        data["input_shapes"] = [[name, list(shape)] for name, shape in self.input_shapes]
        data["samples_ns"] = list(self.samples_ns)
        data["session_medians_ms"] = list(self.session_medians_ms)
        data["session_runs"] = list(self.session_runs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """Inverse of :meth:`to_dict`; rejects unknown or missing fields."""
        kwargs = checked_fields(cls, data)
        kwargs["fingerprint"] = DeviceFingerprint.from_dict(kwargs["fingerprint"])
        kwargs["input_shapes"] = tuple(
            (str(name), tuple(int(d) for d in shape)) for name, shape in kwargs["input_shapes"]
        )
        kwargs["samples_ns"] = tuple(int(v) for v in kwargs.get("samples_ns", ()))
        kwargs["session_medians_ms"] = tuple(float(v) for v in kwargs.get("session_medians_ms", ()))
        kwargs["session_runs"] = tuple(int(v) for v in kwargs.get("session_runs", ()))
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class PairedMeasurement:
    """Result of :func:`measure_pair`: latency of A relative to B, measured interleaved.

    Attributes:
        ratio: ``median_a_ms / median_b_ms`` over all timed samples.
        ratio_ci_low, ratio_ci_high: Paired-burst bootstrap CI of the ratio.
        ci_confidence: Nominal coverage of that CI.
        rel_ci_half_width: ``max(ratio - low, high - ratio) / ratio`` (stopping criterion).
        median_a_ms, median_b_ms: Medians of A's and B's samples.
        a, b: Full :class:`SampleStats` of each side (their CIs ignore the pairing).
        n_pairs: Pairs of bursts timed (each pair = one burst of A and one of B).
        burst_runs, burst_warmup_runs: Timed and untimed runs per burst.
        warmup_runs: Untimed warm-up runs per model before the first pair.
        timed_s, wall_s: Timed phase and whole call, in seconds.
        converged: ``rel_ci_half_width <= target_rel_ci`` and ``n_pairs >= min_pairs``.
        stop_reason: ``"ci_target"``, ``"max_pairs"`` or ``"time_cap"``.
        contended: Either side had p90/median > 1.5.
        precision_a, precision_b: Precision of each model.
        fingerprint_a, fingerprint_b: Fingerprints (they differ at most in precision).
        pinned_cpu: Core the thread was pinned to, or None.
        bootstrap_reps, seed: Bootstrap settings (the CI is reproducible from the samples).
        model_a_sha256, model_b_sha256: Model hashes (16 hex digits).
        samples_a_ns, samples_b_ns: Timed samples in time order, ``burst_runs`` per pair.
        schema_version: Version of this record's layout.
    """

    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    ci_confidence: float
    rel_ci_half_width: float
    median_a_ms: float
    median_b_ms: float
    a: SampleStats
    b: SampleStats
    n_pairs: int
    burst_runs: int
    burst_warmup_runs: int
    warmup_runs: int
    timed_s: float
    wall_s: float
    converged: bool
    stop_reason: str
    contended: bool
    precision_a: str
    precision_b: str
    fingerprint_a: DeviceFingerprint
    fingerprint_b: DeviceFingerprint
    pinned_cpu: int | None
    bootstrap_reps: int
    seed: int
    model_a_sha256: str
    model_b_sha256: str
    samples_a_ns: tuple[int, ...] = ()
    samples_b_ns: tuple[int, ...] = ()
    schema_version: int = _SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = dataclasses.asdict(self)
        for side in ("a", "b"):
            data[side] = getattr(self, side).to_dict()
            data[f"fingerprint_{side}"] = getattr(self, f"fingerprint_{side}").to_dict()
            data[f"samples_{side}_ns"] = list(getattr(self, f"samples_{side}_ns"))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairedMeasurement:
        """Inverse of :meth:`to_dict`; rejects unknown or missing fields."""
        kwargs = checked_fields(cls, data)
        for side in ("a", "b"):
            kwargs[side] = SampleStats.from_dict(kwargs[side])
            kwargs[f"fingerprint_{side}"] = DeviceFingerprint.from_dict(
                kwargs[f"fingerprint_{side}"]
            )
            kwargs[f"samples_{side}_ns"] = tuple(
                int(v) for v in kwargs.get(f"samples_{side}_ns", ())
            )
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Model loading
# --------------------------------------------------------------------------------------------

ModelSource = str | bytes | bytearray | memoryview | os.PathLike


@dataclasses.dataclass
class _LoadedModel:
    session: ort.InferenceSession
    feeds: dict[str, np.ndarray]
    label: str
    sha256: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]

    def run(self) -> None:
        self.session.run(None, self.feeds)


def _read_model(model: Any) -> tuple[bytes, str | None, str]:
    """Return ``(model_bytes, path_or_None, label)``; raises LatencyError if unreadable."""
    if hasattr(model, "SerializeToString") and not isinstance(model, (str, bytes)):
        model = model.SerializeToString()  # an onnx.ModelProto
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not data:
            raise LatencyError("ONNX model bytes are empty")
        return data, None, f"<{len(data)} bytes>"
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise LatencyError(f"ONNX model file not found: {path}")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise LatencyError(f"cannot read ONNX model {path}: {one_line(error)}") from None
        if not data:
            raise LatencyError(f"ONNX model file is empty: {path}")
        return data, str(path), str(path)
    raise LatencyError(
        f"model must be a path, bytes or onnx.ModelProto, got {type(model).__name__}"
    )


def _session_options(cfg: MeasureConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = cfg.intra_op_threads
    options.inter_op_num_threads = cfg.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _GRAPH_OPT_LEVELS[cfg.graph_optimization]
    options.log_severity_level = 3
    spin = "1" if cfg.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


def _proto_fields(data: memoryview) -> Iterator[tuple[int, int, Any]]:
    """The fields of one serialized protobuf message: ``(number, wire_type, value)``.

    ``value`` is an int for varints and a ``memoryview`` for length-delimited fields (sub-messages,
    strings, packed arrays); 32- and 64-bit fields come back as their raw bytes. Just enough of the
    wire format (https://protobuf.dev/programming-guides/encoding/) to read an ONNX graph's operator
    types without the ``onnx`` package, which a device with only onnxruntime + numpy lacks.
    """
    pos, end = 0, len(data)

    def varint() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    while pos < end:
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            yield number, wire, varint()
            continue
        size = {1: 8, 5: 4}.get(wire)
        if wire == 2:
            size = varint()
        elif size is None:
            raise ValueError(f"unsupported wire type {wire}")
        if pos + size > end:
            raise ValueError("truncated field")
        yield number, wire, data[pos : pos + size]
        pos += size


# Field numbers of onnx.proto (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _FUNCTION_NODE = 1, 7
_NODE_OP_TYPE, _NODE_ATTRIBUTE = 4, 5
_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS = 6, 11


def _node_op_types(node: memoryview, ops: set[str]) -> None:
    for number, wire, value in _proto_fields(node):
        if wire != 2:
            continue
        if number == _NODE_OP_TYPE:
            ops.add(bytes(value).decode("utf-8"))
        elif number == _NODE_ATTRIBUTE:  # subgraphs of If/Loop/Scan
            for a_number, a_wire, a_value in _proto_fields(value):
                if a_wire == 2 and a_number in (_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS):
                    _graph_op_types(a_value, _GRAPH_NODE, ops)


def _graph_op_types(graph: memoryview, node_field: int, ops: set[str]) -> None:
    for number, wire, value in _proto_fields(graph):
        if number == node_field and wire == 2:
            _node_op_types(value, ops)


def model_op_types(data: bytes, label: str = "<model>") -> set[str]:
    """Operator types of a serialized ONNX model (main graph, subgraphs and local functions).

    Reads the protobuf wire format directly (no ``onnx`` import), skipping initializers by their
    length, so it is cheap even for models with large weights.

    Raises:
        LatencyError: The bytes are not a well-formed ONNX model.
    """
    ops: set[str] = set()
    try:
        graphs = 0
        for number, wire, value in _proto_fields(memoryview(data)):
            if wire != 2:
                continue
            if number == _MODEL_GRAPH:
                graphs += 1
                _graph_op_types(value, _GRAPH_NODE, ops)
            elif number == _MODEL_FUNCTIONS:
                _graph_op_types(value, _FUNCTION_NODE, ops)
        if not graphs:
            raise ValueError("no graph")
    except (ValueError, UnicodeDecodeError) as error:
        raise LatencyError(f"cannot parse ONNX model {label}: {one_line(error)}") from None
    return ops


def _check_precision(data: bytes, label: str, precision: str) -> None:
    quantized = bool(model_op_types(data, label) & _QUANT_OPS)
    if precision == "int8" and not quantized:
        raise LatencyError(
            f"precision='int8' but {label} has no quantization operators; "
            "quantize it first (latency.quantize.quantize_int8)"
        )
    if precision == "fp32" and quantized:
        raise LatencyError(
            f"precision='fp32' but {label} contains quantization operators; use precision='int8'"
        )


def _input_feeds(
    session: ort.InferenceSession, label: str, seed: int
) -> tuple[dict[str, np.ndarray], tuple[tuple[str, tuple[int, ...]], ...]]:
    """Fixed, seeded random inputs; dynamic batch -> 1, any other dynamic dim -> error."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for node in session.get_inputs():
        dtype = _FLOAT_INPUT_TYPES.get(node.type)
        if dtype is None:
            raise LatencyError(
                f"{label}: input '{node.name}' has type {node.type}; only float inputs "
                f"({', '.join(_FLOAT_INPUT_TYPES)}) are supported"
            )
        shape: list[int] = []
        for axis, dim in enumerate(node.shape):
            if isinstance(dim, int) and dim >= 0:
                shape.append(dim)
            elif axis == 0:
                shape.append(1)  # dynamic batch: measure batch 1
            else:
                raise LatencyError(
                    f"{label}: input '{node.name}' has dynamic dimension {dim!r} at axis {axis} "
                    f"(shape {node.shape}); only the batch axis may be dynamic"
                )
        feeds[node.name] = rng.standard_normal(shape).astype(dtype)
        shapes.append((node.name, tuple(shape)))
    return feeds, tuple(shapes)


def _load(model: Any, cfg: MeasureConfig, precision: str) -> _LoadedModel:
    from latency.backends import PROVIDERS, providers_for

    data, path, label = _read_model(model)
    try:
        session = ort.InferenceSession(
            path if path is not None else data,
            sess_options=_session_options(cfg),
            providers=providers_for(cfg.backend),
        )
    except Exception as error:  # noqa: BLE001 - ORT raises several unrelated types
        raise LatencyError(f"cannot load ONNX model {label}: {one_line(error)}") from None
    wanted = PROVIDERS.get(cfg.backend, _PROVIDER)
    if session.get_providers()[:1] != [wanted]:  # ORT falls back to the CPU silently when CUDA fails to load
        raise LatencyError(f"latency backend {cfg.backend}: ONNX Runtime did not start {wanted} for {label} "
                           f"(session providers: {', '.join(session.get_providers())})")
    _check_precision(data, label, precision)
    feeds, shapes = _input_feeds(session, label, cfg.seed)
    loaded = _LoadedModel(
        session=session,
        feeds=feeds,
        label=label,
        sha256=hashlib.sha256(data).hexdigest()[:16],
        input_shapes=shapes,
    )
    try:
        loaded.run()  # fail here, with a clear message, rather than inside the timed loop
    except Exception as error:  # noqa: BLE001
        raise LatencyError(f"{label}: inference failed: {one_line(error)}") from None
    return loaded


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _pinned(core: int | None) -> Iterator[None]:
    """Pin the calling thread to ``core``; restore the previous affinity afterwards."""
    if core is None:
        yield
        return
    if not hasattr(os, "sched_setaffinity"):
        raise LatencyError("pin_cpu needs os.sched_setaffinity (Linux)")
    before = os.sched_getaffinity(0)
    if core not in before:
        raise LatencyError(f"pin_cpu={core} is not an allowed core; allowed: {sorted(before)}")
    # pid 0 = the calling thread on Linux; with one intra-op thread ORT runs on this thread.
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def _measurement_guard(cfg: MeasureConfig, fingerprint: DeviceFingerprint) -> Iterator[None]:
    """Device lock (optional), pinning (optional), and no GC pauses inside timed runs."""
    lock = (
        device_lock(fingerprint, timeout_s=cfg.lock_timeout_s)
        if cfg.lock
        else contextlib.nullcontext()
    )
    gc_was_enabled = gc.isenabled()
    with lock, _pinned(cfg.pin_cpu):
        gc.disable()
        try:
            yield
        finally:
            if gc_was_enabled:
                gc.enable()


def _warm_up(runs: list[Callable[[], None]], cfg: MeasureConfig, min_s: float | None = None) -> int:
    """Round-robin warm-up of every model (``min_s`` overrides ``cfg.warmup_min_s``); runs per model."""
    done = 0
    start = time.perf_counter()
    min_s = cfg.warmup_min_s if min_s is None else min_s
    while done < cfg.warmup_runs or time.perf_counter() - start < min_s:
        for run in runs:
            run()
        done += 1
    return done


def _next_check(count: int, maximum: int, growth: float = 1.1) -> int:
    """Geometric check schedule (``growth``, at least +10) so that checks cost little."""
    return min(maximum, max(count + 10, math.ceil(count * growth)))


def _time_session(
    run: Callable[[], None], cfg: MeasureConfig, min_runs: int, max_runs: int, cap_ns: int
) -> tuple[list[int], str]:
    """Time ``run`` until its median's CI is within ``cfg.target_rel_ci``, ``max_runs`` or ``cap_ns``."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    next_check = min_runs
    timed_start = clock()
    while True:
        t0 = clock()
        run()
        t1 = clock()
        samples.append(t1 - t0)
        count = len(samples)
        if t1 - timed_start >= cap_ns:
            return samples, "time_cap"
        if count >= next_check:
            if _median_rel_half_width(samples, cfg.confidence) <= cfg.target_rel_ci:
                return samples, "ci_target"
            if count >= max_runs:
                return samples, "max_runs"
            next_check = _next_check(count, max_runs)


def measure_onnx(model: ModelSource, cfg: MeasureConfig | None = None) -> Measurement:
    """Measure the single-inference latency of an ONNX model.

    ``cfg.sessions`` sessions are created, warmed up and timed one after another (the first is
    created before the device lock is taken, so that a bad model fails without waiting). Each
    session is timed until its own median is within ``target_rel_ci`` or it has used its share of
    ``max_runs`` / ``time_cap_s``. With more than one session, ``median_ms`` is the median of the
    session medians and its CI the order-statistic interval over them (:func:`session_interval`),
    which contains the between-session spread; the within-session (pooled) interval is kept in
    ``within_ci_low_ms`` / ``within_ci_high_ms``.

    Args:
        model: Path (``str``/``Path``), serialized bytes or an ``onnx.ModelProto``.
        cfg: Measurement settings (default :class:`MeasureConfig`).

    Returns:
        A :class:`Measurement`.

    Raises:
        LatencyError: Missing, empty or corrupt model; dynamic non-batch input dimension;
            non-float input; precision that does not match the model's operators; bad pin_cpu.
        latency.device.DeviceLockTimeout: The device lock was busy for ``lock_timeout_s``.
    """
    cfg = cfg or MeasureConfig()
    if cfg.backend in ("command", "ray-node"):  # not timed in this process: latency.backends
        from latency.backends import measure_external

        return measure_external(model, cfg)
    wall_start = time.perf_counter()
    loaded: _LoadedModel | None = _load(model, cfg, cfg.precision)
    fingerprint = cfg.fingerprint()
    k = cfg.sessions
    # max_runs split exactly (sessions <= max_runs); min_runs applies to each session
    per_max = [cfg.max_runs // k + (i < cfg.max_runs % k) for i in range(k)]
    per_min = min(cfg.min_runs, per_max[-1])
    cap_ns = int(cfg.time_cap_s * 1e9 / k)
    samples: list[int] = []
    sizes: list[int] = []
    reasons: list[str] = []
    warmup_runs = 0
    timed_ns = 0
    clock = time.perf_counter_ns
    with _measurement_guard(cfg, fingerprint):
        for index in range(k):
            if loaded is None:
                loaded = _load(model, cfg, cfg.precision)  # a fresh session and fresh input buffers
            warmup_runs += _warm_up([loaded.run], cfg, cfg.warmup_min_s / k)
            t0 = clock()
            session_samples, reason = _time_session(loaded.run, cfg, per_min, per_max[index], cap_ns)
            timed_ns += clock() - t0
            samples += session_samples
            sizes.append(len(session_samples))
            reasons.append(reason)
            if index == 0:
                shapes, sha = loaded.input_shapes, loaded.sha256
            loaded = None  # release the session (and its memory arena) before creating the next

    stats = summarize(samples, confidence=cfg.confidence)
    bounds = np.cumsum([0, *sizes])
    session_medians = tuple(
        float(np.median(samples[bounds[i] : bounds[i + 1]])) / 1e6 for i in range(k)
    )
    if k > 1:
        median, ci_low, ci_high, coverage = session_interval(session_medians, cfg.confidence)
        rel_half = max(median - ci_low, ci_high - median) / median
        # the least favourable session's reason: "ci_target" only if every session reached it
        stop_reason = next(r for r in ("time_cap", "max_runs", "ci_target") if r in reasons)
        between_cv = float(np.std(session_medians, ddof=1) / np.mean(session_medians))
    else:
        median, ci_low, ci_high, coverage = (
            stats.median_ms, stats.ci_low_ms, stats.ci_high_ms, stats.ci_confidence
        )
        rel_half = stats.rel_ci_half_width
        stop_reason = reasons[0]
        between_cv = 0.0
    return Measurement(
        median_ms=median,
        p10_ms=stats.p10_ms,
        p90_ms=stats.p90_ms,
        mean_ms=stats.mean_ms,
        min_ms=stats.min_ms,
        cv=stats.cv,
        ci_low_ms=ci_low,
        ci_high_ms=ci_high,
        ci_confidence=coverage,
        rel_ci_half_width=rel_half,
        n_samples=stats.n,
        outlier_share=stats.outlier_share,
        p90_over_median=stats.p90_over_median,
        contended=stats.contended,
        warmup_runs=warmup_runs,
        timed_s=timed_ns / 1e9,
        wall_s=time.perf_counter() - wall_start,
        converged=rel_half <= cfg.target_rel_ci and min(sizes) >= per_min,
        stop_reason=stop_reason,
        precision=cfg.precision,
        fingerprint=fingerprint,
        pinned_cpu=cfg.pin_cpu,
        input_shapes=shapes,
        model_sha256=sha,
        samples_ns=tuple(samples) if cfg.keep_samples else (),
        sessions=k,
        session_medians_ms=session_medians,
        session_runs=tuple(sizes),
        within_ci_low_ms=stats.ci_low_ms,
        within_ci_high_ms=stats.ci_high_ms,
        between_session_cv=between_cv,
    )


def measure_pair(
    model_a: ModelSource,
    model_b: ModelSource,
    cfg: MeasureConfig | None = None,
    *,
    precision_a: Literal["fp32", "int8"] | None = None,
    precision_b: Literal["fp32", "int8"] | None = None,
) -> PairedMeasurement:
    """Measure A relative to B with interleaved bursts, so that host drift cancels.

    Pairs alternate ABBA (A-burst then B-burst, then B then A, ...) so that a linear drift
    does not favour either side. Each burst starts with ``burst_warmup_runs`` untimed runs
    (interleaving run by run with a much larger model perturbs caches: one-off, on the development
    VM a MobileNetV3-Small-sized network went from 1.94 to 2.18 ms beside MobileNetV2, but not
    beside a copy of itself), then
    ``burst_runs`` timed runs. After ``min_pairs`` pairs the bootstrap CI of the ratio is
    checked on a geometric schedule; timing stops when its relative half-width is at most
    ``target_rel_ci``, at ``max_pairs`` or at ``time_cap_s``.

    Args:
        model_a: Candidate model (path, bytes or ``onnx.ModelProto``).
        model_b: Reference model.
        cfg: Measurement settings (default :class:`MeasureConfig`).
        precision_a: Precision of A (default ``cfg.precision``).
        precision_b: Precision of B (default ``cfg.precision``); e.g. int8 vs fp32.

    Returns:
        A :class:`PairedMeasurement`; ``latency_a ~= ratio * long-run median of B``.

    Raises:
        LatencyError: As :func:`measure_onnx`, for either model.
        latency.device.DeviceLockTimeout: The device lock was busy for ``lock_timeout_s``.
    """
    cfg = cfg or MeasureConfig()
    if cfg.backend in ("command", "ray-node"):  # not timed in this process: latency.backends
        from latency.backends import measure_pair_external

        return measure_pair_external(model_a, model_b, cfg, precision_a=precision_a, precision_b=precision_b)
    precision_a = precision_a or cfg.precision
    precision_b = precision_b or cfg.precision
    for name, value in (("precision_a", precision_a), ("precision_b", precision_b)):
        if value not in _PRECISIONS:
            raise ValueError(f"measure_pair: {name}={value!r}; allowed: {', '.join(_PRECISIONS)}")
    wall_start = time.perf_counter()
    loaded_a = _load(model_a, cfg, precision_a)
    loaded_b = _load(model_b, cfg, precision_b)
    fingerprint_a = cfg.fingerprint(precision_a)
    fingerprint_b = cfg.fingerprint(precision_b)
    burst, burst_warm = cfg.burst_runs, cfg.burst_warmup_runs
    clock = time.perf_counter_ns
    samples_a: list[int] = []
    samples_b: list[int] = []

    def timed_burst(model: _LoadedModel, out: list[int]) -> None:
        for _ in range(burst_warm):
            model.run()
        for _ in range(burst):
            t0 = clock()
            model.run()
            out.append(clock() - t0)

    def ratio_ci(n_pairs: int) -> tuple[float, float, float]:
        # Same replicates and seed for the stopping checks and the reported CI, so that
        # "stopped because the CI was tight" and ``converged`` always agree.
        return paired_ratio_ci(
            np.asarray(samples_a, dtype=np.int64).reshape(n_pairs, burst),
            np.asarray(samples_b, dtype=np.int64).reshape(n_pairs, burst),
            confidence=cfg.confidence,
            reps=cfg.bootstrap_reps,
            seed=cfg.seed,
        )

    def rel_half(ci: tuple[float, float, float]) -> float:
        ratio, low, high = ci
        return max(ratio - low, high - ratio) / ratio

    with _measurement_guard(cfg, fingerprint_a):
        warmup_runs = _warm_up([loaded_a.run, loaded_b.run], cfg)
        cap_ns = int(cfg.time_cap_s * 1e9)
        next_check = cfg.min_pairs
        stop_reason = "max_pairs"
        n_pairs = 0
        ci: tuple[float, float, float] | None = None
        timed_start = clock()
        while True:
            if n_pairs % 2 == 0:
                timed_burst(loaded_a, samples_a)
                timed_burst(loaded_b, samples_b)
            else:
                timed_burst(loaded_b, samples_b)
                timed_burst(loaded_a, samples_a)
            n_pairs += 1
            if clock() - timed_start >= cap_ns:
                stop_reason = "time_cap"
                break
            if n_pairs >= next_check:
                ci = ratio_ci(n_pairs)
                if rel_half(ci) <= cfg.target_rel_ci:
                    stop_reason = "ci_target"
                    break
                ci = None
                if n_pairs >= cfg.max_pairs:
                    break
                # +20 %: a bootstrap over 1000 pairs costs ~0.1 s at 500 replicates.
                next_check = _next_check(n_pairs, cfg.max_pairs, growth=1.2)
        timed_s = (clock() - timed_start) / 1e9

    ci = ci or ratio_ci(n_pairs)
    ratio, low, high = ci
    half = rel_half(ci)
    stats_a = summarize(samples_a, confidence=cfg.confidence)
    stats_b = summarize(samples_b, confidence=cfg.confidence)
    return PairedMeasurement(
        ratio=ratio,
        ratio_ci_low=low,
        ratio_ci_high=high,
        ci_confidence=cfg.confidence,
        rel_ci_half_width=half,
        median_a_ms=stats_a.median_ms,
        median_b_ms=stats_b.median_ms,
        a=stats_a,
        b=stats_b,
        n_pairs=n_pairs,
        burst_runs=burst,
        burst_warmup_runs=burst_warm,
        warmup_runs=warmup_runs,
        timed_s=timed_s,
        wall_s=time.perf_counter() - wall_start,
        converged=half <= cfg.target_rel_ci and n_pairs >= cfg.min_pairs,
        stop_reason=stop_reason,
        contended=stats_a.contended or stats_b.contended,
        precision_a=precision_a,
        precision_b=precision_b,
        fingerprint_a=fingerprint_a,
        fingerprint_b=fingerprint_b,
        pinned_cpu=cfg.pin_cpu,
        bootstrap_reps=cfg.bootstrap_reps,
        seed=cfg.seed,
        model_a_sha256=loaded_a.sha256,
        model_b_sha256=loaded_b.sha256,
        samples_a_ns=tuple(samples_a) if cfg.keep_samples else (),
        samples_b_ns=tuple(samples_b) if cfg.keep_samples else (),
    )
