"""Build a latency table on another device (a phone, an edge board) with onnxruntime + numpy only.

Made by ``nas latency export-bundle``, a bundle folder holds the ONNX models of every layer key a
search space needs, a few whole networks for the calibration, this script and the measurement code.
On the device::

    python3 device_lut.py BUNDLE_DIR --out table.sqlite [--threads 1]

It measures every entry missing from ``table.sqlite`` (so an interrupted run resumes where it
stopped), the whole networks, fits the calibration, and writes everything to ``table.sqlite``
(format: docs/LUT_FORMAT.md). Copy that file back and pass it to the search with ``--lut``.

The bundle's graphs come without their large weights (``latency.lut.strip_weights``): before a model
is measured, :func:`fill_weights` writes random values of the recorded type and shape into its
external-data file, which is deleted again afterwards, so the bundle stays small and the disk holds
one model's weights at a time. Everything this script imports is in the standard library, numpy,
onnxruntime or the bundle itself (``tests/latency/test_device_lut.py`` checks it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script from the bundle (or from the source tree)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if not (Path(__file__).resolve().parent / "latency" / "measure.py").exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from latency.lut_store import TableStore, canonical_key, layer_costs, network_sums  # noqa: E402
from latency.measure import MeasureConfig, measure_onnx  # noqa: E402

ENTRY_TIME_CAP_S = 1.0
#: Bundle layouts this script reads: 1 = weights inline in every graph, 2 = weights filled here.
BUNDLE_VERSIONS = (1, 2)

# ONNX TensorProto.DataType -> numpy type (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto).
_ONNX_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 10: "<f2", 11: "<f8",
                12: "<u4", 13: "<u8"}


def random_tensor(data_type: int, dims: list[int], rng: np.random.Generator) -> np.ndarray:
    """Random values of an ONNX tensor type and shape: He-scaled normals for floats (so activations
    neither vanish into subnormals nor overflow through a deep network), the full range for 8-bit
    integers (int8 weights), small integers otherwise (int32 biases of quantized layers)."""
    if data_type not in _ONNX_DTYPES:
        raise ValueError(f"unsupported ONNX tensor type {data_type} for generated weights")
    dtype = np.dtype(_ONNX_DTYPES[data_type])
    count = math.prod(dims)
    if dtype.kind == "f":
        fan_in = math.prod(dims[1:]) if len(dims) > 1 else 0
        scale = math.sqrt(2.0 / fan_in) if fan_in else 0.1
        return (rng.standard_normal(count) * scale).astype(dtype)
    if dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=count, endpoint=True).astype(dtype)
    return rng.integers(-1000 if dtype.kind == "i" else 0, 1000, size=count).astype(dtype)


def fill_weights(model_path: Path, weights: dict, seed: int = 0) -> Path:
    """Write the external-data file that ``weights`` (a manifest recipe) describes next to the model."""
    rng = np.random.default_rng(seed)
    buffer = np.zeros(int(weights["bytes"]), dtype=np.uint8)
    for t in weights["tensors"]:
        values = random_tensor(int(t["data_type"]), [int(d) for d in t["dims"]], rng).view(np.uint8)
        if values.size != int(t["length"]):
            raise ValueError(f"{model_path}: tensor {t['name']!r} has {t['length']} bytes in the manifest, "
                             f"{values.size} from its type and shape")
        buffer[int(t["offset"]) : int(t["offset"]) + values.size] = values
    path = model_path.parent / weights["file"]
    buffer.tofile(path)
    return path


@contextlib.contextmanager
def weights_filled(bundle: Path, item: dict) -> Iterator[Path]:
    """The model of a manifest item, with its weights file present while the block runs."""
    model = bundle / item["file"]
    weights = item.get("weights")
    path = fill_weights(model, weights) if weights else None
    try:
        yield model
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def read_manifest(bundle: Path) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    version = manifest.get("bundle_version")
    if version not in BUNDLE_VERSIONS:
        raise SystemExit(f"device_lut: error: {bundle} is a version {version} bundle; this script reads versions "
                         f"{', '.join(map(str, BUNDLE_VERSIONS))}; use the device_lut.py inside that bundle")
    return manifest


def build_table(bundle: Path, out: Path, cfg: MeasureConfig, log=print) -> TableStore:
    manifest = read_manifest(bundle)
    cfg = dataclasses.replace(cfg, precision=manifest.get("precision", cfg.precision))
    store = TableStore(out)
    fingerprint = cfg.fingerprint().to_dict()
    store.create(fingerprint, cfg.to_dict())
    if store.meta("fingerprint") != fingerprint:
        raise SystemExit(f"{out} was built with other settings or on another device; use a new --out file")
    entry_cfg = dataclasses.replace(cfg, time_cap_s=min(cfg.time_cap_s, ENTRY_TIME_CAP_S))
    overhead = store.meta("overhead_ms")
    if overhead is None:
        overhead = measure_onnx(bundle / manifest["overhead"], entry_cfg).median_ms
        store.set_meta("overhead_ms", overhead)
    entries = manifest["entries"]
    have = store.get_many(canonical_key(e["key"]) for e in entries)
    todo = [e for e in entries if canonical_key(e["key"]) not in have]
    log(f"{len(entries)} entries, {len(entries) - len(todo)} already measured")
    for i, e in enumerate(todo, 1):
        with weights_filled(bundle, e) as model:
            m = measure_onnx(model, entry_cfg)
        store.put(e["key"], {"median_ms": m.median_ms, "p10_ms": m.p10_ms, "p90_ms": m.p90_ms,
                             "n_samples": m.n_samples, "cv": m.cv})
        if i % 25 == 0 or i == len(todo):
            log(f"  entries {i}/{len(todo)}")
    all_entries = dict(store.all_entries())
    for net in manifest["networks"]:
        with weights_filled(bundle, net) as model:
            m = measure_onnx(model, cfg)
        keys = [json.loads(k) for k in net["layer_keys"]]  # blocks minus their context layers' entries
        raw, layer_ms = layer_costs(keys, {k: v["median_ms"] for k, v in all_entries.items()}, overhead)
        sums = network_sums(keys, layer_ms)
        store.put_point(net["arch_id"], net["name"], net["resolution"], raw, m.median_ms, sums)
        log(f"  network {net['name'] or net['arch_id']}: {m.median_ms:.3f} ms (layer sum {raw:.3f} ms)")
    if store.points():
        cal = store.fit()
        log(f"calibration: {cal.describe()}")
    return store


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the folder written by `nas latency export-bundle`")
    parser.add_argument("--out", type=Path, default=Path("table.sqlite"), help="table file to create or resume")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    args = parser.parse_args(argv)
    if not (args.bundle / "manifest.json").exists():
        print(f"device_lut: error: {args.bundle} has no manifest.json (not a bundle)", file=sys.stderr)
        return 2
    build_table(args.bundle, args.out, MeasureConfig(intra_op_threads=args.threads))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
