"""Anchored measurement: a network's latency as its interleaved ratio to a reference network (the anchor)
× the anchor's latency stored once for this device.

Why: on a shared host the speed of the whole machine wanders (frequency, neighbours, memory placement).
Twenty ``nas latency measure`` runs of MobileNetV3-Large in fresh processes had medians with a CV of
1.9–2.7 %, and one run's interval — built from that run's own sessions — contained only 16–59 % of the
other runs' medians (README, "Measured results"; ``experiments/bench_interval.py``). No interval computed
inside one run can see that wander. The ratio of two networks timed in alternating bursts can: both sides
see the same moments, so the wander cancels — when the anchor resembles the measured network (with a
×0.75 version of V3-Large as its anchor, V3-Large's anchored CV over runs was 1.0 % where plain runs in the
same minutes had 10.9 %; with V3-Small, 3× faster, 4.3 %: a slow host slows the larger network more).
Scaling the ratio by one stored reference latency gives a number that repeats from run to run; the
reference's own uncertainty is a systematic error shared by every anchored number of this device, and
the interval carries it.

The reference (:class:`AnchorReference`) is measured the first time an anchor is used on a device
fingerprint (:func:`latency.measure.measure_onnx`, all its sessions) and kept as a small JSON file under
``<cache dir>/anchors/``, one per (fingerprint, anchor architecture); ``remeasure=True`` replaces it.
The same idea anchors the lookup table's calibration and validation (:func:`latency.lut.measure_anchored`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from latency.device import cache_dir
from latency.measure import LatencyError, MeasureConfig, PairedMeasurement, measure_onnx, measure_pair
from search_spaces import ArchSpec
from search_spaces.export import export_onnx
from search_spaces.files import atomic_write_text

__all__ = ["AnchorReference", "AnchoredMeasurement", "anchor_reference", "measure_anchored_one", "reference_path"]


@dataclasses.dataclass(frozen=True)
class AnchorReference:
    """The anchor's latency on one device fingerprint: the basis of every anchored number there."""

    anchor: str
    arch_id: str
    resolution: int
    fingerprint_key: str
    median_ms: float
    ci_low_ms: float
    ci_high_ms: float
    ci_confidence: float
    sessions: int
    measured_at: str

    @property
    def rel_low(self) -> float:
        return (self.median_ms - self.ci_low_ms) / self.median_ms

    @property
    def rel_high(self) -> float:
        return (self.ci_high_ms - self.median_ms) / self.median_ms


@dataclasses.dataclass(frozen=True)
class AnchoredMeasurement:
    """``median_ms`` = ``ratio`` × the reference's latency.

    Two intervals: ``ci_low_ms``/``ci_high_ms`` include the reference's own uncertainty (combined with the
    ratio's in quadrature: where the latency is at the reference's host speed); ``relative_ci_*_ms`` hold the
    reference fixed (the ratio's interval only: what separates two networks anchored on the same reference).
    """

    median_ms: float
    ci_low_ms: float
    ci_high_ms: float
    relative_ci_low_ms: float
    relative_ci_high_ms: float
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    ci_confidence: float
    reference: AnchorReference
    paired: PairedMeasurement

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("reference", "paired")}
        out["reference"] = dataclasses.asdict(self.reference)
        out["paired"] = {k: v for k, v in self.paired.to_dict().items() if k not in ("samples_a_ns", "samples_b_ns")}
        return out


def reference_path(anchor: ArchSpec, cfg: MeasureConfig) -> Path:
    """Where the reference of ``anchor`` (at its resolution) is kept for ``cfg``'s device fingerprint."""
    return cache_dir() / "anchors" / f"{cfg.fingerprint().key}-{anchor.arch_id}.json"


def anchor_reference(anchor: ArchSpec, cfg: MeasureConfig, *, remeasure: bool = False,
                     onnx: bytes | None = None) -> AnchorReference:
    """The stored reference of ``anchor`` on this device fingerprint, measured and stored first if there is
    none (or ``remeasure``; ``onnx``: the anchor already exported). A file that cannot be read is an error,
    never silently replaced."""
    path = reference_path(anchor, cfg)
    if path.exists() and not remeasure:
        try:
            return AnchorReference(**json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise LatencyError(f"anchor reference {path} is unreadable ({e}); remeasure it "
                               "(nas latency measure ... --anchor NAME --remeasure-anchor) or delete the file") from e
    m = measure_onnx(onnx or export_onnx(anchor), cfg)
    ref = AnchorReference(anchor=anchor.name or anchor.arch_id, arch_id=anchor.arch_id, resolution=anchor.resolution,
                          fingerprint_key=cfg.fingerprint().key, median_ms=m.median_ms, ci_low_ms=m.ci_low_ms,
                          ci_high_ms=m.ci_high_ms, ci_confidence=m.ci_confidence, sessions=m.sessions,
                          measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(dataclasses.asdict(ref), indent=2))
    return ref


def measure_anchored_one(model: bytes | str | Path, anchor: ArchSpec, cfg: MeasureConfig, *,
                         remeasure: bool = False) -> AnchoredMeasurement:
    """``model`` (ONNX) timed interleaved with ``anchor`` (:func:`latency.measure.measure_pair`), its ratio
    scaled by the anchor's reference latency on this device (:func:`anchor_reference`; ``remeasure`` renews
    it). The anchor is exported once for both."""
    anchor_onnx = export_onnx(anchor)
    ref = anchor_reference(anchor, cfg, remeasure=remeasure, onnx=anchor_onnx)
    paired = measure_pair(model, anchor_onnx, cfg)
    r, a = paired.ratio, ref.median_ms
    r_low, r_high = (r - paired.ratio_ci_low) / r, (paired.ratio_ci_high - r) / r
    value = r * a
    return AnchoredMeasurement(
        median_ms=value,
        ci_low_ms=value * (1 - math.hypot(r_low, ref.rel_low)),
        ci_high_ms=value * (1 + math.hypot(r_high, ref.rel_high)),
        relative_ci_low_ms=paired.ratio_ci_low * a, relative_ci_high_ms=paired.ratio_ci_high * a,
        ratio=r, ratio_ci_low=paired.ratio_ci_low, ratio_ci_high=paired.ratio_ci_high,
        ci_confidence=paired.ci_confidence, reference=ref, paired=paired)
