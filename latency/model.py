"""One latency interface: every consumer asks a :class:`LatencyModel` for ``latency_ms(spec)``.

A latency model maps an architecture to milliseconds on one device at one deployment resolution,
as Once-for-All's ``efficiency(arch)`` does (Cai et al. 2020, https://arxiv.org/abs/1908.09791): the
search's reward (MnasNet, Tan et al. 2019, https://arxiv.org/abs/1807.11626), NetAdapt's proposals
(Yang et al. 2018, https://arxiv.org/abs/1804.03230) and the reports all call the same method, and
which model answers is a setting. The spec is always timed at the model's ``resolution``
(``spec.replace(resolution=...)``), whatever resolution it was trained at.

Models:

* :class:`TableLatency` (``"predicted"``): this machine's calibrated per-layer lookup table
  (:class:`latency.lut.LatencyTable`); a missing entry is measured on demand.
* :class:`MeasuredLatency` (``"measured"``): the whole network exported to ONNX and measured with
  :func:`latency.measure.measure_onnx`.
* :class:`DeviceTableLatency` (``"device-table"``): another device's table, read-only; a missing
  entry raises :class:`latency.lut.MissingEntryError` naming it, nothing is ever measured.
* :class:`AnalyticLatency` (``"analytic"``): no device at all; a per-operator-kind linear model of
  multiply-adds and activation traffic (:func:`analytic_latency_ms`), the stand-in latency of
  :mod:`nas.objective_analytic`.

Besides ``latency_ms``, a model says whether whole networks can be measured here
(``can_measure``); if so ``measure_ms`` and ``ratio`` (an interleaved pair,
:func:`latency.measure.measure_pair`, for the 1 % steps of NetAdapt) measure on this machine,
otherwise they return None. ``fingerprint`` is the device the numbers are for, and ``describe()``
/ ``key`` name the backend and its settings.

:func:`latency_model` builds a model and keeps it for the life of the process (Ray reuses worker
processes, so each worker opens a table once); every model of one table file shares one
:class:`~latency.lut.LatencyTable`, so a calibration fitted through one is seen by all.

This module imports ONNX Runtime only when something is measured or a table is opened.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_spaces.cost import layer_cost
from search_spaces.spec import Activation, ArchSpec
from search_spaces.walk import LayerKind, Role, walk

if TYPE_CHECKING:
    from latency.lut import LatencyTable
    from latency.lut_store import Calibration
    from latency.measure import MeasureConfig, Measurement

KINDS = ("predicted", "measured", "device-table", "analytic")
"""The kinds :func:`latency_model` builds."""

# The runtime settings of a fingerprint that decide what a number means (with the device itself).
RUNTIME_FIELDS = ("intra_op_threads", "inter_op_threads", "graph_optimization", "precision")


def device_key(fingerprint: dict) -> str:
    """A 16-hex-digit hash of a fingerprint dict (:attr:`latency.device.DeviceFingerprint.key` of it)."""
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


class LatencyModel(abc.ABC):
    """Latency of an architecture at a deployment resolution: the one contract of every consumer.

    Args:
        resolution: the deployment input resolution; every spec is timed at it.
    """

    kind: str = ""

    def __init__(self, resolution: int = 224):
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        self.resolution = resolution

    # -- the contract ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The model's kind (``"predicted"``, ``"measured"``, ``"device-table"`` or ``"analytic"``)."""
        return self.kind

    def deploy(self, spec: ArchSpec) -> ArchSpec:
        """``spec`` at the deployment resolution."""
        return spec.replace(resolution=self.resolution)

    @abc.abstractmethod
    def latency_ms(self, spec: ArchSpec) -> float:
        """Latency of ``spec`` at the deployment resolution, in ms."""

    # -- measurement on this machine ---------------------------------------------------------------
    @property
    def can_measure(self) -> bool:
        """Whether whole networks can be measured on this machine for this model's device."""
        return False

    @property
    def measure_config(self) -> MeasureConfig | None:
        """How this machine measures (None for a model that never measures)."""
        return None

    def onnx(self, spec: ArchSpec) -> bytes:
        """``spec`` exported to ONNX at the deployment resolution (fresh weights)."""
        from search_spaces.export import export_onnx

        return export_onnx(self.deploy(spec))

    def measurement(self, spec: ArchSpec, onnx: bytes | str | Path | None = None) -> Measurement:
        """The whole-network :class:`latency.measure.Measurement` of ``spec`` on this machine.

        ``onnx``: ``spec`` already exported at the deployment resolution (bytes or a file), to
        save a second export. Raises :class:`latency.measure.LatencyError` where this model cannot
        measure (see :attr:`can_measure`).
        """
        from latency.measure import LatencyError, measure_onnx

        if not self.can_measure:
            raise LatencyError(f"latency model {self.key} cannot measure on this machine")
        return measure_onnx(self.onnx(spec) if onnx is None else onnx, self.measure_config)

    def measure_ms(self, spec: ArchSpec) -> float | None:
        """Median whole-network latency of ``spec`` measured here, in ms; None where that is impossible."""
        return self.measurement(spec).median_ms if self.can_measure else None

    def ratio(self, spec: ArchSpec, reference: ArchSpec) -> float | None:
        """latency(spec) / latency(reference), measured interleaved so that host drift cancels
        (:func:`latency.measure.measure_pair`); None where this machine cannot measure."""
        paired = self.paired(spec, reference)
        return None if paired is None else paired.ratio

    def paired(self, spec: ArchSpec, reference: ArchSpec):
        """The whole interleaved measurement of ``spec`` against ``reference``
        (:class:`latency.measure.PairedMeasurement`: the ratio and its CI); None where this machine
        cannot measure."""
        if not self.can_measure:
            return None
        from latency.measure import measure_pair

        return measure_pair(self.onnx(spec), self.onnx(reference), self.measure_config)

    # -- identity ----------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> dict | None:
        """The fingerprint of the device the numbers are for (None: no device)."""
        return None

    @property
    def backend(self) -> str:
        """What produces the numbers, e.g. ``"ort-cpu"`` (ONNX Runtime on the CPU) or ``"analytic"``."""
        fp = self.fingerprint
        return str(fp.get("backend", "unknown")) if fp else "unknown"

    def settings(self) -> dict[str, Any]:
        """The model's own settings (runtime settings, table file, constants), JSON-ready."""
        fp = self.fingerprint
        if not fp:
            return {}
        out = {**{k: fp.get(k) for k in RUNTIME_FIELDS}, "device": fp.get("cpu_model"), "device_key": device_key(fp)}
        if fp.get("backend", "ort-cpu") != "ort-cpu":  # the default's describe() (and key) stay as they were
            out["provider"] = fp.get("provider")
        return out

    def describe(self) -> dict[str, Any]:
        """``kind``, ``backend``, ``resolution`` and :meth:`settings`, JSON-ready."""
        return {"kind": self.kind, "backend": self.backend, "resolution": self.resolution, **self.settings()}

    @property
    def key(self) -> str:
        """``KIND:BACKEND@RESOLUTION:HASH``, the hash over :meth:`describe` (equal settings, equal key)."""
        digest = hashlib.sha256(json.dumps(self.describe(), sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{self.kind}:{self.backend}@{self.resolution}:{digest}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key})"


class MeasuredLatency(LatencyModel):
    """The whole network exported to ONNX and measured on this machine (its median, in ms).

    Args:
        measure_config: how to measure (default :class:`latency.measure.MeasureConfig`).
        resolution: the deployment resolution.
    """

    kind = "measured"

    def __init__(self, measure_config: MeasureConfig | None = None, resolution: int = 224):
        from latency.measure import MeasureConfig

        super().__init__(resolution)
        self._mcfg = measure_config or MeasureConfig()

    @property
    def can_measure(self) -> bool:
        return True

    @property
    def measure_config(self) -> MeasureConfig:
        return self._mcfg

    def latency_ms(self, spec: ArchSpec) -> float:
        return self.measurement(spec).median_ms

    @property
    def fingerprint(self) -> dict:
        return self._mcfg.fingerprint().to_dict()


class TableLatency(LatencyModel):
    """This machine's calibrated lookup table (:class:`latency.lut.LatencyTable`): missing entries
    are measured on demand, whole networks can be measured to calibrate it.

    Args:
        table: the open table (its ``cfg`` is how this machine measures).
        resolution: the deployment resolution.
    """

    kind = "predicted"

    def __init__(self, table: LatencyTable, resolution: int = 224):
        super().__init__(resolution)
        self.table = table

    @property
    def can_measure(self) -> bool:
        return self.table.can_measure

    @property
    def measure_config(self) -> MeasureConfig:
        return self.table.cfg

    @property
    def fingerprint(self) -> dict:
        return self.table.fingerprint

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "table": str(self.table.path)}

    def latency_ms(self, spec: ArchSpec) -> float:
        return self.table.predict(self.deploy(spec)).latency_ms

    def calibrate_near(self, specs: Sequence[ArchSpec]) -> tuple[list[float], Calibration]:
        """Measure each spec whole at the deployment resolution, record it in the table's calibration
        and refit it (so that predictions are accurate near these networks).

        Returns the measured latencies (ms, in the order given) and the new calibration. Raises
        :class:`latency.measure.LatencyError` where this machine cannot measure.
        """
        from latency.measure import LatencyError

        if not self.can_measure:
            raise LatencyError(f"cannot calibrate {self.table.path} here: it belongs to another device")
        measured = []
        for spec in specs:
            deploy = self.deploy(spec)
            ms = self.measure_ms(deploy)
            self.table.add_point(deploy, ms)
            measured.append(ms)
        return measured, self.table.fit()


class DeviceTableLatency(TableLatency):
    """Another device's lookup table, read-only: predicts from its entries and calibration, never measures.

    A spec with an entry the table lacks raises :class:`latency.lut.MissingEntryError` naming the
    entry (build it on that device: ``nas latency export-bundle``).
    """

    kind = "device-table"

    @property
    def can_measure(self) -> bool:
        return False

    @property
    def measure_config(self) -> None:
        return None

    def latency_ms(self, spec: ArchSpec) -> float:
        # A table of another device cannot measure: its ensure() raises the MissingEntryError that
        # names the device; a local table opened read-only must not measure, so it is not asked to.
        return self.table.predict(self.deploy(spec), measure_missing=not self.table.can_measure).latency_ms


# ------------------------------------------------------------------------------------------------
# The analytic model: no device
# ------------------------------------------------------------------------------------------------

# Per-operator-kind costs, in the spirit of a Pixel-1 CPU (MnasNet-A1 lands near its published 78 ms):
DENSE_MS_PER_MMADD = 0.18  # ms per million multiply-adds of regular, 1×1 and fully-connected layers
DEPTHWISE_MS_PER_MMADD = 0.9  # depthwise multiply-adds are memory bound: five times dearer
HSWISH_MS_PER_MELEM = 1.0  # ms per million elements through h-swish
SE_MS_PER_MELEM = 1.5  # ms per million elements pooled and scaled by squeeze-and-excite (and pooling)
LAYER_OVERHEAD_MS = 0.15  # fixed cost of every layer


def analytic_latency_ms(spec: ArchSpec) -> float:
    """Analytic latency of ``spec`` at its own resolution in ms: a linear model over the layer walk.

    For each layer of :func:`search_spaces.walk.walk`: ``DENSE_MS_PER_MMADD`` per million dense
    multiply-adds (:func:`search_spaces.cost.layer_cost` less the depthwise ones) +
    ``DEPTHWISE_MS_PER_MMADD`` per million depthwise multiply-adds + ``HSWISH_MS_PER_MELEM`` per
    million elements through h-swish + ``SE_MS_PER_MELEM`` per million elements pooled by
    squeeze-and-excite or a pooling layer + ``LAYER_OVERHEAD_MS``. Not a model of any measured
    device: a deterministic stand-in with the qualitative shape of a mobile CPU.
    """
    total = 0.0
    for layer in walk(spec):
        key = layer.key
        if key.kind is LayerKind.POOL:
            total += LAYER_OVERHEAD_MS + SE_MS_PER_MELEM * key.in_channels * key.resolution**2 / 1e6
            continue
        madds = layer_cost(key).madds
        out_res = layer.out_resolution
        depthwise = 0
        if key.kind in (LayerKind.DSCONV, LayerKind.MBCONV):
            depthwise = key.expand_channels * key.kernel_size**2 * out_res**2
        total += DENSE_MS_PER_MMADD * (madds - depthwise) / 1e6 + DEPTHWISE_MS_PER_MMADD * depthwise / 1e6
        if key.activation is Activation.HSWISH and layer.role is not Role.CLASSIFIER:
            # the expanded tensor (blocks) or the output (stem, head) goes through h-swish
            elems = key.expand_channels * out_res**2 if key.kind is not LayerKind.LINEAR else key.out_channels
            total += HSWISH_MS_PER_MELEM * elems / 1e6
        if key.se_channels:
            total += SE_MS_PER_MELEM * key.expand_channels * out_res**2 / 1e6
        total += LAYER_OVERHEAD_MS
    return total


class AnalyticLatency(LatencyModel):
    """A fallback with no device: :func:`analytic_latency_ms` at the deployment resolution.

    Deterministic, instantaneous, and nothing is measured (``can_measure`` is False).
    """

    kind = "analytic"

    @property
    def backend(self) -> str:
        return "analytic"

    def settings(self) -> dict[str, Any]:
        return {"dense_ms_per_mmadd": DENSE_MS_PER_MMADD, "depthwise_ms_per_mmadd": DEPTHWISE_MS_PER_MMADD,
                "hswish_ms_per_melem": HSWISH_MS_PER_MELEM, "se_ms_per_melem": SE_MS_PER_MELEM,
                "layer_overhead_ms": LAYER_OVERHEAD_MS}

    def latency_ms(self, spec: ArchSpec) -> float:
        return analytic_latency_ms(self.deploy(spec))


# ------------------------------------------------------------------------------------------------
# The factory, with the per-process cache
# ------------------------------------------------------------------------------------------------

_TABLES: dict[tuple, Any] = {}
_MODELS: dict[tuple, LatencyModel] = {}


def open_table(lut_path: str | Path | None = None, measure_config: MeasureConfig | None = None) -> LatencyTable:
    """The :class:`latency.lut.LatencyTable` at ``lut_path`` (default: this machine's for
    ``measure_config``), opened once per process and file."""
    from latency.lut import LatencyTable, default_table_path
    from latency.measure import MeasureConfig

    mcfg = measure_config or MeasureConfig()
    path = Path(lut_path) if lut_path else default_table_path(mcfg)
    key = (str(path.absolute()), mcfg)
    if key not in _TABLES:
        from latency.backends import check_table_fingerprint

        table = LatencyTable(path, mcfg)
        # this device's table made with other settings (backend, threads, precision) -> one line naming both
        check_table_fingerprint(table.path, table.fingerprint, mcfg.fingerprint().to_dict())
        _TABLES[key] = table
    return _TABLES[key]


def latency_model(kind: str, *, lut_path: str | Path | None = None, measure_config: MeasureConfig | None = None,
                  resolution: int = 224) -> LatencyModel:
    """The latency model of ``kind`` (one of :data:`KINDS`), built once per process and settings.

    Args:
        kind: ``"predicted"``: the table at ``lut_path`` (default: this machine's), a
            :class:`TableLatency`, or a :class:`DeviceTableLatency` when the file is another
            device's; ``"device-table"``: the existing table at ``lut_path``, read-only;
            ``"measured"``: :class:`MeasuredLatency`; ``"analytic"``: :class:`AnalyticLatency`.
        lut_path: the table file (``"predicted"``, ``"device-table"``).
        measure_config: how this machine measures (default :class:`latency.measure.MeasureConfig`).
        resolution: the deployment resolution.
    """
    from latency.measure import LatencyError, MeasureConfig

    if kind not in KINDS:
        raise ValueError(f"unknown latency model {kind!r}; known: {', '.join(KINDS)}")
    mcfg = measure_config or MeasureConfig()
    path = str(Path(lut_path).absolute()) if lut_path else None
    key = (kind, path if kind in ("predicted", "device-table") else None,
           mcfg if kind != "analytic" else None, resolution)
    if kind == "predicted" and path is None:  # this machine's table depends on the cache folder too
        from latency.lut import default_table_path

        key = (*key, str(default_table_path(mcfg).absolute()))
    if key in _MODELS:
        return _MODELS[key]
    if kind == "analytic":
        model: LatencyModel = AnalyticLatency(resolution)
    elif kind == "measured":
        model = MeasuredLatency(mcfg, resolution)
    elif kind == "device-table":
        if path is None or not Path(path).exists():
            raise LatencyError(f"a device table needs an existing table file, got {lut_path!r}")
        model = DeviceTableLatency(open_table(path, mcfg), resolution)
    else:
        table = open_table(path, mcfg)
        model = (TableLatency if table.can_measure else DeviceTableLatency)(table, resolution)
    _MODELS[key] = model
    return model


__all__ = [
    "KINDS", "AnalyticLatency", "DeviceTableLatency", "LatencyModel", "MeasuredLatency", "TableLatency",
    "analytic_latency_ms", "device_key", "latency_model", "open_table",
]
