"""Per-layer latency lookup table (LUT) with a calibrated whole-network predictor.

Entries are keyed by :class:`search_spaces.walk.LayerKey` — the same walk that counts costs and
builds the torch modules — and each is measured on demand as a small ONNX model
(:func:`layer_onnx`): a block *in context*, after its context layer (a 1×1 conv + BN with the
block's input width, :func:`latency.lut_store.context_key`), which is an entry too; the stem, pools
and linear layers alone. A block's cost is its entry minus its context layer's. A missing entry is
measured, never guessed; when the table belongs to another device (its fingerprint differs from
this machine's), measuring is impossible and :class:`MissingEntryError` names the entry.

Why in context: with ``ORT_ENABLE_ALL``, ONNX Runtime's layout optimizations
(https://onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html) run
convolutions in a blocked layout; an isolated layer converts its input into it and its output back,
which a whole network does only at its ends (on the development VM, a shared 2-vCPU AVX-512 Xeon,
the plain sum of isolated layers overestimated ten MnasNet-like networks by 11–18 %). After a
context layer, the block reads its input as in a network, the input conversions cancel in the
difference and the output conversions telescope along the network. What the sum still misses —
each layer's weights are evicted by the others' inside a network but warm in a repeated entry, and
the network's ends — :class:`latency.lut_store.Calibration` corrects: one factor per kind of layer
plus terms in the network's weights and tensor sizes, fitted on measured whole networks (a single
scale below ``MIN_POINTS_PER_GROUP_FIT`` of them) and stored in the table with its leave-one-out
error; its accuracy on unseen architectures is in the README's "Measured results"
(``experiments/bench_lut_accuracy.py``). The fixed cost of one ``run()`` call (``overhead_ms``,
measured on a one-node graph) is subtracted from every entry measured alone and added once.
Whole networks for the calibration and the validation can be measured against an anchor network
(:func:`measure_anchored`), so that the host's drift does not enter the fit or the error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from latency.lut_store import (
    GROUPS,
    IO_MELEMS,
    MPARAMS,
    Calibration,
    TableStore,
    canonical_key,
    context_fields,
    context_key,
    group_of,
    io_melems,
    layer_params,
)
from latency.measure import LatencyError, MeasureConfig, measure_onnx, measure_pair
from search_spaces.progress import PROGRESS_EVERY_S
from search_spaces.spec import ArchSpec
from search_spaces.walk import LayerKey, LayerKind, LayerShape, Role, walk

# Entries are small (tens of µs to a few ms): cap their timing at ~1 s each.
ENTRY_TIME_CAP_S = 1.0
CALIBRATION_LOCK_SUFFIX = ".calibrate.lock"  # next to the table: one calibration of a table at a time


class MissingEntryError(LatencyError):
    """A needed entry is absent and cannot be measured here (the table is another device's)."""


@dataclass(frozen=True)
class Prediction:
    """Predicted latency of a whole network.

    Attributes:
        latency_ms: calibrated prediction.
        raw_sum_ms: Σ layer cost + overhead, before the calibration.
        layer_ms: per-layer costs (entry minus its context layer's entry, or minus the overhead), in walk order.
        calibrated: whether a fitted calibration was applied.
        measured_now: entries that were missing and measured during this call.
    """

    latency_ms: float
    raw_sum_ms: float
    layer_ms: tuple[float, ...]
    calibrated: bool
    measured_now: int


def layer_input_shape(key: LayerKey) -> tuple[int, ...]:
    if key.kind is LayerKind.LINEAR:
        return (1, key.in_channels)
    return (1, key.in_channels, key.resolution, key.resolution)


@functools.lru_cache(maxsize=1 << 16)
def layer_context(key: LayerKey) -> LayerKey | None:
    """The context layer ``key``'s entry is measured after (:func:`latency.lut_store.context_key`), or None."""
    d = key.to_dict()
    if context_key(d) is None:
        return None
    fields = context_fields(key.in_channels, "dilation" in d)
    return dataclasses.replace(key, **{**fields, "kind": LayerKind(fields["kind"])})


@functools.lru_cache(maxsize=1 << 16)
def key_facts(key: LayerKey) -> tuple[LayerKey | None, str, float, float]:
    """(context layer or None, calibration group, io_melems, mparams) of one layer key (computed once)."""
    d = key.to_dict()
    return layer_context(key), group_of(d["kind"]), io_melems([d]), layer_params(d) / 1e6


def entry_keys(keys: Iterable[LayerKey]) -> list[LayerKey]:
    """The entries ``keys`` need: each key's context layer (first), then the key; no repeats."""
    out: dict[LayerKey, None] = {}
    for key in keys:
        ctx = layer_context(key)
        if ctx is not None:
            out[ctx] = None
        out[key] = None
    return list(out)


def layer_module(key: LayerKey):
    """The torch module of one table entry: the layer, after its context layer if it has one
    (fixed-seed weights; latency does not depend on them)."""
    import torch
    from torch import nn

    from search_spaces.builder import build_layer

    role = Role.POOL if key.kind is LayerKind.POOL else Role.BLOCK
    ctx = layer_context(key)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = build_layer(LayerShape(0, role, None, key))
        if ctx is not None:
            module = nn.Sequential(build_layer(LayerShape(0, Role.BLOCK, None, ctx)), module)
    return module


def layer_onnx(key: LayerKey) -> bytes:
    """The ONNX model of one table entry (:func:`layer_module`), input :func:`layer_input_shape`."""
    from search_spaces.export import export_module_bytes

    return export_module_bytes(layer_module(key), layer_input_shape(key))


def _overhead_onnx() -> bytes:
    """A one-node graph (Identity on a 1-element tensor): the fixed cost of one ``run()``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])], "overhead",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


class LatencyTable:
    """The lookup table of one device, stored in one SQLite file (see :mod:`latency.lut_store`).

    Args:
        path: the table file; created on first use.
        cfg: how entries are measured on this machine (default :class:`MeasureConfig`). The table
            records the fingerprint it was created with; a table whose fingerprint differs from
            ``cfg``'s is read-only here.
    """

    def __init__(self, path: str | Path, cfg: MeasureConfig | None = None):
        self.cfg = cfg or MeasureConfig()
        self.store = TableStore(path)
        local = self.cfg.fingerprint().to_dict()
        if not self.store.path.exists():
            self.store.create(local, self.cfg.to_dict())
        else:
            self.store.check()
        self.fingerprint = self.store.meta("fingerprint")
        self.can_measure = self.fingerprint == local
        self._cache: dict[LayerKey, float] = {}
        self._calibration: Calibration | None = None
        overhead = self.store.meta("overhead_ms")
        if overhead is None and self.can_measure:
            overhead = measure_onnx(_overhead_onnx(), self._entry_cfg()).median_ms
            self.store.set_meta("overhead_ms", overhead)
        self.overhead_ms = float(overhead or 0.0)

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def calibration(self) -> Calibration:
        if self._calibration is None:
            self._calibration = Calibration.from_dict(self.store.meta("calibration"))
        return self._calibration

    def _entry_cfg(self) -> MeasureConfig:
        return dataclasses.replace(self.cfg, time_cap_s=min(self.cfg.time_cap_s, ENTRY_TIME_CAP_S))

    # -- entries -----------------------------------------------------------------------------------
    def lookup(self, keys: Sequence[LayerKey]) -> dict[LayerKey, float | None]:
        """Stored median latencies (ms, overhead included) of ``keys``; None where missing."""
        todo = {canonical_key(k.to_dict()): k for k in set(keys) if k not in self._cache}
        if todo:
            for c, values in self.store.get_many(todo).items():
                self._cache[todo[c]] = float(values["median_ms"])
        return {k: self._cache.get(k) for k in keys}

    def missing(self, keys: Iterable[LayerKey]) -> list[LayerKey]:
        """The entries ``keys`` need (with their blocks' context layers, :func:`entry_keys`) that are absent."""
        unique = entry_keys(keys)
        found = self.lookup(unique)
        return [k for k in unique if found[k] is None]

    def ensure(self, keys: Iterable[LayerKey], progress: Callable[[int, int], None] | None = None) -> int:
        """Measure every missing entry ``keys`` need (their context layers too); returns how many were measured."""
        todo = self.missing(keys)
        if todo and not self.can_measure:
            k = todo[0]
            raise MissingEntryError(
                f"latency table {self.path} (another device: {self.fingerprint.get('cpu_model')}, "
                f"{self.fingerprint.get('intra_op_threads')} thread(s)) lacks {len(todo)} entr"
                f"{'y' if len(todo) == 1 else 'ies'}, e.g. {describe_key(k)}; build them on that device "
                "(see `nas latency export-bundle`)"
            )
        cfg = self._entry_cfg()
        for i, key in enumerate(todo):
            m = measure_onnx(layer_onnx(key), cfg)
            self.store.put(key.to_dict(), {"median_ms": m.median_ms, "p10_ms": m.p10_ms, "p90_ms": m.p90_ms,
                                           "n_samples": m.n_samples, "cv": m.cv})
            self._cache[key] = m.median_ms
            if progress:
                progress(i + 1, len(todo))
        return len(todo)

    # -- prediction --------------------------------------------------------------------------------
    def raw_sum(self, spec: ArchSpec, resolution: int | None = None, measure_missing: bool = True
                ) -> tuple[float, tuple[float, ...], dict[str, float], int]:
        """(Σ layer cost + overhead, per-layer cost, the calibration's sums, entries measured now).

        A layer's cost is its entry minus its context layer's entry, or minus ``overhead_ms`` for a
        layer measured alone (:func:`latency.lut_store.layer_costs`); the sums are those of
        :func:`latency.lut_store.network_sums`.
        """
        keys = [layer.key for layer in walk(spec, resolution)]
        measured = self.ensure(keys) if measure_missing else 0
        needed = entry_keys(keys)
        found = self.lookup(needed)
        absent = [k for k in needed if found[k] is None]
        if absent:
            raise MissingEntryError(f"latency table {self.path} lacks {describe_key(absent[0])}")
        # What latency.lut_store.layer_costs and network_sums compute from key dicts (the device
        # script's path), here from per-key facts computed once per process: a prediction stays < 1 ms.
        facts = [key_facts(k) for k in keys]
        layer_ms = tuple(max(found[k] - (found[ctx] if ctx is not None else self.overhead_ms), 0.0)
                         for k, (ctx, _, _, _) in zip(keys, facts))
        sums = dict.fromkeys(GROUPS, 0.0)
        for (_, group, _, _), ms in zip(facts, layer_ms):
            sums[group] += ms
        sums[IO_MELEMS] = sum(f[2] for f in facts)
        sums[MPARAMS] = sum(f[3] for f in facts)
        return sum(layer_ms) + self.overhead_ms, layer_ms, sums, measured

    def predict(self, spec: ArchSpec, resolution: int | None = None, measure_missing: bool = True) -> Prediction:
        """Calibrated latency of ``spec`` at ``resolution`` (default: the spec's) in ms."""
        raw, layer_ms, sums, measured = self.raw_sum(spec, resolution, measure_missing)
        cal = self.calibration
        latency = cal.predict(sums, self.overhead_ms) if cal.fitted else raw
        return Prediction(latency, raw, layer_ms, cal.fitted, measured)

    # -- calibration -------------------------------------------------------------------------------
    def add_point(self, spec: ArchSpec, measured_ms: float, resolution: int | None = None) -> None:
        """Record a whole-network measurement of ``spec`` for the calibration."""
        res = resolution or spec.resolution
        raw, _, sums, _ = self.raw_sum(spec, res)
        self.store.put_point(spec.replace(resolution=res).arch_id, spec.name, res, raw, measured_ms, sums)

    def calibrate(self, specs: Sequence[ArchSpec], resolution: int | None = None,
                  progress: Callable[[int, int], None] | None = None, anchor: ArchSpec | None = None
                  ) -> Calibration:
        """Measure each spec whole on this device, record it, and refit the calibration.

        With ``anchor``, each network is measured against it (:func:`measure_anchored`) and the
        anchor's latency becomes the table's reference (meta ``anchor``), which later anchored
        calibrations and validations reuse, so host drift between them cancels too.
        """
        if not self.can_measure:
            raise LatencyError(f"cannot calibrate {self.path} here: it belongs to another device")
        for spec in specs:  # entries first, then the wholes
            self.ensure(layer.key for layer in walk(spec, resolution))
        if anchor is not None:
            res = resolution or anchor.resolution
            ref = self.anchor_ms(anchor, res)
            measured, ms = measure_anchored(specs, anchor, self.cfg, resolution, ref, progress)
            if ref is None:
                self.store.set_meta("anchor", {"name": anchor.name, "arch_id": anchor.replace(resolution=res).arch_id,
                                               "resolution": res, "ms": ms})
        else:
            measured = measure_plain(specs, self.cfg, resolution, progress)
        for spec, ms in zip(specs, measured):
            self.add_point(spec, ms, resolution)
        return self.fit()

    @contextlib.contextmanager
    def calibration_lock(self, on_wait: Callable[[float], None] | None = None,
                         every_s: float = PROGRESS_EVERY_S) -> Iterator[None]:
        """Hold the table's calibration lock (an exclusive ``flock`` on ``<table>.calibrate.lock``).

        Two processes that both find the table uncalibrated would each measure the same networks for
        minutes and store different fits; the second one to come waits here instead, and finds the
        first one's calibration when it gets the lock (the stored calibration is re-read on entry, so
        check ``calibration.n_points`` again inside the block). ``on_wait(waited_s)`` is called when
        the lock is held by another process, then every ``every_s`` seconds until it is free.
        """
        path = self.path.with_name(self.path.name + CALIBRATION_LOCK_SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            t0 = next_call = time.monotonic()
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    now = time.monotonic()
                    if on_wait is not None and now >= next_call:
                        on_wait(now - t0)
                        next_call = now + every_s
                    time.sleep(0.2)
            try:
                self._calibration = None  # re-read: another process may have stored one meanwhile
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def anchor_ms(self, anchor: ArchSpec, resolution: int | None = None) -> float | None:
        """The table's reference latency of ``anchor`` (None if it has none); another anchor is an error."""
        stored = self.store.meta("anchor")
        if stored is None:
            return None
        arch_id = anchor.replace(resolution=resolution or anchor.resolution).arch_id
        if stored["arch_id"] != arch_id:
            raise LatencyError(f"latency table {self.path} is anchored on {stored['name']} ({stored['arch_id']} at "
                               f"{stored['resolution']}²), not on {anchor.name} ({arch_id}); use that anchor")
        return float(stored["ms"])

    def fit(self) -> Calibration:
        """Refit the calibration on every recorded whole network (see :class:`Calibration`)."""
        try:
            cal = self.store.fit()
        except ValueError:
            raise LatencyError(f"no whole-network measurements in {self.path} to calibrate from") from None
        self._calibration = cal
        return cal


def describe_key(key: LayerKey) -> str:
    se = f", SE {key.se_channels}" if key.se_channels else ""
    act = key.activation.value if key.activation else "linear"
    return (f"{key.kind.value} {key.kernel_size}x{key.kernel_size}/s{key.stride} at {key.resolution}² "
            f"{key.in_channels}->{key.expand_channels}->{key.out_channels}{se}, {act}"
            f"{', residual' if key.residual else ''}")


# ------------------------------------------------------------------------------------------------
# Tables for other devices: a bundle of ONNX files measured there by latency/device_lut.py
# ------------------------------------------------------------------------------------------------

BUNDLE_SOURCES = ("measure.py", "backends.py", "device.py", "lut_store.py", "device_lut.py")
BUNDLE_VERSION = 2  # 2: graphs without their large weights (filled on the device); 1: weights inline
#: Initializers of at least this many bytes leave the bundle (their size and type stay in the manifest);
#: smaller ones (biases of narrow layers, int8 scales and zero points, shapes) stay in the graph.
WEIGHTS_INLINE_BYTES = 1024
_EXTERNAL_ALIGN = 64
# Inputs that are quantization parameters (scales, zero points): they stay in the graph whatever their size,
# because their values matter (a scale must be positive) and per-channel ones are small. Other QLinear*
# operators take (x, then scales and zero points only).
_QUANT_PARAM_SLOTS = {"QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2}, "QLinearConv": {1, 2, 4, 5, 6, 7},
                      "QLinearMatMul": {1, 2, 4, 5, 6, 7}, "QLinearAdd": {1, 2, 4, 5, 6, 7},
                      "QLinearMul": {1, 2, 4, 5, 6, 7}, "QGemm": {1, 2, 4, 5, 7, 8}}


def _quant_params(graph) -> set[str]:
    names = set()
    for node in graph.node:
        slots = _QUANT_PARAM_SLOTS.get(node.op_type)
        if slots is None and node.op_type.startswith("QLinear"):
            slots = set(range(1, len(node.input)))
        names.update(name for i, name in enumerate(node.input) if slots and i in slots)
    return names


def strip_weights(model: bytes, location: str, inline_bytes: int = WEIGHTS_INLINE_BYTES) -> tuple[bytes, dict | None]:
    """A copy of an ONNX model whose large initializers are ONNX external data that is not written.

    Each initializer of at least ``inline_bytes`` bytes (scales and zero points of quantized models
    excepted) becomes external data (``location``, offset,
    length; https://onnx.ai/onnx/repo-docs/ExternalData.html) and its bytes are dropped. Returns the
    model and the recipe to recreate the file, ``{"file", "bytes", "tensors": [{"name", "offset",
    "length", "data_type", "dims"}]}`` (None if nothing was large), which ``device_lut.fill_weights``
    fills with random values of the same type and shape before the model is loaded. So ONNX Runtime
    sees ordinary constant initializers (pre-packing and fusions as in deployment) while the bundle
    carries only graphs; latency does not depend on the weights' values.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_model_from_string(model)
    keep = _quant_params(proto.graph)
    tensors, offset = [], 0
    for tensor in proto.graph.initializer:
        if tensor.name in keep:
            continue
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise LatencyError(f"strip_weights: initializer {tensor.name!r} is already external data")
        if not tensor.HasField("raw_data"):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
        length = len(tensor.raw_data)
        if length < inline_bytes:
            continue
        offset = -(-offset // _EXTERNAL_ALIGN) * _EXTERNAL_ALIGN
        tensors.append({"name": tensor.name, "offset": offset, "length": length, "data_type": tensor.data_type,
                        "dims": list(tensor.dims)})
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = k, v
        offset += length
    if not tensors:
        return model, None
    return proto.SerializeToString(), {"file": location, "bytes": offset, "tensors": tensors}


def export_bundle(keys: Iterable[LayerKey], networks: Sequence[ArchSpec], out_dir: str | Path,
                  resolution: int | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write everything another device needs to build its table with onnxruntime + numpy only.

    The folder holds ``manifest.json`` (entries with their keys and files; whole networks with the
    keys of their layers, for the calibration; for each model the recipe of its weights), the ONNX
    graphs without their large weights (:func:`strip_weights`; the device fills them with random
    values before measuring), the measurement code of this package, and ``device_lut.py`` to run
    there: ``python3 device_lut.py BUNDLE --out table.sqlite``.
    """
    import json
    import shutil

    from search_spaces.export import export_onnx
    from search_spaces.files import atomic_write_bytes, atomic_write_text

    out = Path(out_dir)
    (out / "entries").mkdir(parents=True, exist_ok=True)
    (out / "networks").mkdir(exist_ok=True)
    (out / "latency").mkdir(exist_ok=True)
    # The calibration networks' own layers are entries too, so their layer sums can be formed.
    keys = set(keys) | {layer.key for spec in networks for layer in walk(spec, resolution or spec.resolution)}
    keys = set(entry_keys(keys))  # with the context layers blocks are measured after
    keys = sorted(keys, key=lambda k: canonical_key(k.to_dict()))
    total = len(keys) + len(networks)

    def write(name: str, model: bytes) -> dict | None:
        graph, weights = strip_weights(model, Path(name).name + ".weights")
        atomic_write_bytes(out / name, graph)
        return weights

    entries = []
    for i, key in enumerate(keys):
        name = f"entries/{i:05d}.onnx"
        entries.append({"key": key.to_dict(), "file": name, "weights": write(name, layer_onnx(key))})
        if progress:
            progress(i + 1, total)
    nets = []
    for j, spec in enumerate(networks):
        res = resolution or spec.resolution
        name = f"networks/{j:03d}_{spec.name or spec.arch_id}.onnx"
        weights = write(name, export_onnx(spec, resolution=res))
        layer_keys = [canonical_key(layer.key.to_dict()) for layer in walk(spec, res)]
        nets.append({"arch_id": spec.replace(resolution=res).arch_id, "name": spec.name, "resolution": res,
                     "file": name, "weights": weights, "layer_keys": layer_keys})
        if progress:
            progress(len(keys) + j + 1, total)
    atomic_write_bytes(out / "overhead.onnx", _overhead_onnx())
    manifest = {"bundle_version": BUNDLE_VERSION, "precision": "fp32", "entries": entries, "networks": nets,
                "overhead": "overhead.onnx"}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, separators=(",", ":")))
    here = Path(__file__).parent
    for src in BUNDLE_SOURCES:
        target = out / ("device_lut.py" if src == "device_lut.py" else f"latency/{src}")
        shutil.copyfile(here / src, target)
    (out / "latency" / "__init__.py").write_text("")
    return out


# ------------------------------------------------------------------------------------------------
# Validation: predicted vs measured on architectures the calibration never saw
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationRow:
    name: str
    arch_id: str
    predicted_ms: float
    measured_ms: float

    @property
    def error(self) -> float:
        """Relative error of the prediction, (predicted − measured) / measured."""
        return (self.predicted_ms - self.measured_ms) / self.measured_ms


def validation_summary(rows: Sequence[ValidationRow]) -> dict:
    errors = [abs(r.error) for r in rows]
    return {
        "n": len(rows),
        "within_10pct": sum(e <= 0.10 for e in errors) / len(rows),
        "within_5pct": sum(e <= 0.05 for e in errors) / len(rows),
        "median_abs_error": statistics.median(errors),
        "mean_abs_error": statistics.fmean(errors),
        "max_abs_error": max(errors),
        "mean_signed_error": statistics.fmean(r.error for r in rows),
        "kendall_tau": kendall_tau([r.predicted_ms for r in rows], [r.measured_ms for r in rows]),
    }


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-a of two paired sequences (ties count as neither concordant nor discordant)."""
    n = len(x)
    if n < 2:
        return float("nan")
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            d = (x[i] - x[j]) * (y[i] - y[j])
            s += (d > 0) - (d < 0)
    return s / (n * (n - 1) / 2)


def measure_plain(specs: Sequence[ArchSpec], cfg: MeasureConfig, resolution: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[float]:
    """The median latency of each whole network, measured alone (see :func:`measure_anchored`)."""
    from search_spaces.export import export_onnx

    measured = []
    for i, spec in enumerate(specs):
        measured.append(measure_onnx(export_onnx(spec, resolution=resolution), cfg).median_ms)
        if progress:
            progress(i + 1, len(specs))
    return measured


def measure_anchored(specs: Sequence[ArchSpec], anchor: ArchSpec, cfg: MeasureConfig, resolution: int | None = None,
                     anchor_ms: float | None = None, progress: Callable[[int, int], None] | None = None
                     ) -> tuple[list[float], float]:
    """Whole-network latencies with the host's drift removed: (latency of each spec, anchor latency).

    Each network is measured interleaved with ``anchor`` (:func:`measure_pair`) and its latency is
    ratio × ``anchor_ms``. The host's speed drifts by 3–5 % over minutes, which a plain median
    measured at one moment carries whole; the ratio of two networks measured in the same moments
    does not. Without ``anchor_ms``, the anchor is also measured alone beside every network and
    the median of those measurements is used (one drift-free reference for the whole run).
    """
    from search_spaces.export import export_onnx

    anchor_onnx = export_onnx(anchor, resolution=resolution or anchor.resolution)
    ratios, alone = [], []
    for i, spec in enumerate(specs):
        if anchor_ms is None:
            alone.append(measure_onnx(anchor_onnx, cfg).median_ms)
        ratios.append(measure_pair(export_onnx(spec, resolution=resolution), anchor_onnx, cfg).ratio)
        if progress:
            progress(i + 1, len(specs))
    ms = anchor_ms if anchor_ms is not None else statistics.median(alone)
    return [r * ms for r in ratios], ms


def validate(table: LatencyTable, specs: Sequence[ArchSpec], resolution: int | None = None,
             progress: Callable[[int, int], None] | None = None, anchor: ArchSpec | None = None
             ) -> list[ValidationRow]:
    """Predict each spec from the table, then measure it whole on this device.

    With ``anchor``, "measured" is ratio to the anchor × the table's anchor latency (see
    :func:`measure_anchored`; measured in this run if the table has none).
    """
    predicted = [table.predict(spec, resolution).latency_ms for spec in specs]  # entries measured first
    if anchor is not None:
        measured, _ = measure_anchored(specs, anchor, table.cfg, resolution, table.anchor_ms(anchor, resolution),
                                       progress)
    else:
        measured = measure_plain(specs, table.cfg, resolution, progress)
    return [ValidationRow(s.name, s.arch_id, p, m) for s, p, m in zip(specs, predicted, measured)]


def default_table_path(cfg: MeasureConfig | None = None) -> Path:
    """Where this machine keeps its table for ``cfg``'s settings: one file per device fingerprint."""
    from latency.device import cache_dir

    cfg = cfg or MeasureConfig()
    return cache_dir() / "lut" / f"{cfg.fingerprint().key}.sqlite"
