"""Build a latency table on another device (a phone, an edge board) with onnxruntime + numpy only.

Made by ``nas latency export-bundle``, a bundle folder holds the ONNX models of every layer key a
search space needs, a few whole networks for the calibration, this script and the measurement code.
On the device::

    python3 device_lut.py BUNDLE_DIR --out table.sqlite [--threads 1]

It measures every entry missing from ``table.sqlite`` (so an interrupted run resumes where it
stopped), the whole networks, fits the calibration, and writes everything to ``table.sqlite``
(format: docs/LUT_FORMAT.md). Copy that file back and pass it to the search with ``--lut``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the bundle (or from the source tree)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if not (Path(__file__).resolve().parent / "latency" / "measure.py").exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from latency.lut_store import IO_MELEMS, TableStore, canonical_key, group_sums, io_melems, raw_sum_ms  # noqa: E402
from latency.measure import MeasureConfig, measure_onnx  # noqa: E402

ENTRY_TIME_CAP_S = 1.0


def build_table(bundle: Path, out: Path, cfg: MeasureConfig, log=print) -> TableStore:
    manifest = json.loads((bundle / "manifest.json").read_text())
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
        m = measure_onnx(bundle / e["file"], entry_cfg)
        store.put(e["key"], {"median_ms": m.median_ms, "p10_ms": m.p10_ms, "p90_ms": m.p90_ms,
                             "n_samples": m.n_samples, "cv": m.cv})
        if i % 25 == 0 or i == len(todo):
            log(f"  entries {i}/{len(todo)}")
    all_entries = dict(store.all_entries())
    for net in manifest["networks"]:
        m = measure_onnx(bundle / net["file"], cfg)
        raw, layer_ms = raw_sum_ms([all_entries[k]["median_ms"] for k in net["layer_keys"]], overhead)
        keys = [json.loads(k) for k in net["layer_keys"]]
        sums = {**group_sums([k["kind"] for k in keys], layer_ms), IO_MELEMS: io_melems(keys)}
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
