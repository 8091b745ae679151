"""``nas latency ...``: measure, predict, build and validate latency tables (thin over :mod:`latency`)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from evaluation.evaluate import calibration_inputs
from search_spaces import resolve_arch


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _progress(what: str, unit: str):
    """Progress lines (done/total, ETA; at most one every 10 s) on stderr, so that --json stays clean."""
    from search_spaces.progress import Progress

    return Progress(lambda line: print(line, file=sys.stderr, flush=True), what, unit)


def _measure_cfg(args):
    from hwnas.cli import latency_measure_options
    from latency.measure import MeasureConfig

    return MeasureConfig(**latency_measure_options(args), precision=getattr(args, "precision", "fp32"))


# What a search on the default data set (Fashion-MNIST) builds and times: 1 input channel, 10 classes.
SEARCH_IO = {"in_channels": 1, "num_classes": 10}


def _spec(args):
    spec = resolve_arch(args.arch)
    changes = {k: getattr(args, k, None) for k in ("resolution", "in_channels", "num_classes")}
    changes = {k: v for k, v in changes.items() if v}
    return spec.replace(**changes) if changes else spec


def search_io_note(spec) -> str | None:
    """A note when ``spec`` is not the network a search on Fashion-MNIST times (1 channel, 10 classes)."""
    if (spec.in_channels, spec.num_classes) == (SEARCH_IO["in_channels"], SEARCH_IO["num_classes"]):
        return None
    return (f"note: this is a {spec.in_channels}-channel, {spec.num_classes}-class network; a search on "
            f"Fashion-MNIST times {SEARCH_IO['in_channels']}-channel, {SEARCH_IO['num_classes']}-class networks "
            f"(CIFAR-10: 3 channels, 10 classes), so the numbers are not comparable; add --in-channels "
            f"{SEARCH_IO['in_channels']} --num-classes {SEARCH_IO['num_classes']} to time what a search timed")


def _anchor(args):
    """The --anchor network at the command's resolution (None without --anchor)."""
    if not getattr(args, "anchor", None):
        return None
    return _spec(argparse.Namespace(arch=args.anchor, resolution=args.resolution or 224))


def _table(args):
    from hwnas.cli import latency_measure_options
    from latency.backends import check_table_fingerprint
    from latency.lut import LatencyTable, default_table_path
    from latency.measure import MeasureConfig

    cfg = MeasureConfig(**latency_measure_options(args))
    path = Path(args.lut) if args.lut else default_table_path(cfg)
    table = LatencyTable(path, cfg)
    check_table_fingerprint(table.path, table.fingerprint, cfg.fingerprint().to_dict())
    return table


def cmd_measure(args) -> int:
    from latency.measure import measure_onnx
    from search_spaces.export import export_onnx

    spec = _spec(args)
    cfg = _measure_cfg(args)
    if args.anchor:
        return _measure_anchored(args, spec, cfg)
    if args.remeasure_anchor:
        raise ValueError("--remeasure-anchor needs --anchor NAME")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(spec, fp32)
        if args.precision == "int8":
            from latency.quantize import quantize_and_measure

            samples = calibration_inputs(spec, args.calibration_samples, args.dataset, args.data_dir)
            m = quantize_and_measure(fp32, samples, Path(tmp) / "model.int8.onnx", cfg)
        else:
            m = measure_onnx(fp32, cfg)
    result = m.to_dict()
    result.pop("samples_ns", None)
    result.update(arch=spec.name or args.arch, arch_id=spec.arch_id, resolution=spec.resolution,
                  in_channels=spec.in_channels, num_classes=spec.num_classes)
    if args.json:
        _print_json(result)
    else:
        fp = m.fingerprint
        runtime = f"{fp.intra_op_threads} thread(s), ORT {fp.ort_version}" if fp.backend.startswith("ort-") \
            else fp.provider
        backend = f"{fp.backend}: " if fp.backend in ("ort-cuda", "ort-tensorrt") else ""
        print(f"{spec.name or args.arch} at {spec.resolution}²×{spec.in_channels}, {spec.num_classes} classes, "
              f"{m.precision}, {backend}{runtime} on {fp.cpu_model}")
        print(f"  median {m.median_ms:.3f} ms  (95% CI {m.ci_low_ms:.3f}–{m.ci_high_ms:.3f}; p10 {m.p10_ms:.3f}, "
              f"p90 {m.p90_ms:.3f}; CV {m.cv:.1%}; {m.n_samples} runs after {m.warmup_runs} warm-up; "
              f"outliers {m.outlier_share:.1%}; stop: {m.stop_reason})")
        if m.sessions > 1:
            print(f"  {m.sessions} sessions, medians {', '.join(f'{v:.3f}' for v in m.session_medians_ms)} ms "
                  f"(CV {m.between_session_cv:.1%}); the CI ({m.ci_confidence:.1%}) is over the session medians; "
                  f"all samples pooled (within-session precision only) give {m.within_ci_low_ms:.3f}–"
                  f"{m.within_ci_high_ms:.3f}")
        if m.contended:
            print("  warning: p90/median > 1.5 — the core was shared with other work; re-measure on a quiet machine")
        note = search_io_note(spec)
        if note:
            print(note)
    return 0


def _measure_anchored(args, spec, cfg) -> int:
    from latency.anchored import measure_anchored_one
    from search_spaces.export import export_onnx

    if args.precision != "fp32":
        raise ValueError("--anchor measures fp32 networks; leave out --precision int8")
    anchor = _spec(argparse.Namespace(arch=args.anchor, resolution=spec.resolution, in_channels=spec.in_channels,
                                      num_classes=spec.num_classes))
    m = measure_anchored_one(export_onnx(spec), anchor, cfg, remeasure=args.remeasure_anchor)
    ref = m.reference
    if args.json:
        _print_json({**m.to_dict(), "arch": spec.name or args.arch, "arch_id": spec.arch_id,
                     "resolution": spec.resolution, "in_channels": spec.in_channels, "num_classes": spec.num_classes})
        return 0
    print(f"{spec.name or args.arch} at {spec.resolution}²×{spec.in_channels}, {spec.num_classes} classes, fp32, "
          f"anchored on {ref.anchor}")
    print(f"  {m.median_ms:.3f} ms  (95% CI {m.ci_low_ms:.3f}–{m.ci_high_ms:.3f}, the reference's uncertainty "
          f"included; {m.relative_ci_low_ms:.3f}–{m.relative_ci_high_ms:.3f} beside other networks anchored on the "
          f"same reference)")
    print(f"  = ratio {m.ratio:.4f} (95% CI {m.ratio_ci_low:.4f}–{m.ratio_ci_high:.4f}, {m.paired.n_pairs} interleaved "
          f"pairs) × {ref.anchor}'s {ref.median_ms:.3f} ms on this device (CI {ref.ci_low_ms:.3f}–"
          f"{ref.ci_high_ms:.3f}, measured {ref.measured_at}; --remeasure-anchor to renew it)")
    if m.paired.contended:
        print("  warning: p90/median > 1.5 — the core was shared with other work; re-measure on a quiet machine")
    note = search_io_note(spec)
    if note:
        print(note)
    return 0


def cmd_predict(args) -> int:
    spec = _spec(args)  # a bad spec fails before a table is created or its overhead measured
    table = _table(args)
    p = table.predict(spec, measure_missing=not args.no_measure)
    cal = table.calibration
    result = {"arch": spec.name or args.arch, "arch_id": spec.arch_id, "resolution": spec.resolution,
              "predicted_ms": p.latency_ms, "layer_sum_ms": p.raw_sum_ms, "calibrated": p.calibrated,
              "calibration": cal.to_dict(), "entries_measured_now": p.measured_now, "table": str(table.path),
              "layer_ms": list(p.layer_ms)}
    if args.json:
        _print_json(result)
    else:
        print(f"{result['arch']} at {spec.resolution}²: predicted {p.latency_ms:.3f} ms "
              f"(layer sum {p.raw_sum_ms:.3f} ms; {p.measured_now} entries measured now; table {table.path})")
        print(f"  calibration: {cal.describe() if cal.fitted else 'UNCALIBRATED'}")
        if not cal.fitted:
            print("  hint: `nas latency build-lut --space NAME` also fits the calibration on whole networks")
    return 0


def _calibration_specs(space, n: int, seed: int):
    specs = [space.decode(v).replace(name=k) for k, v in space.seeds().items()]
    rng = np.random.default_rng(seed)
    while len(specs) < n:
        specs.append(space.decode(space.sample(rng)).replace(name=f"calib{len(specs)}"))
    return specs


def cmd_build_lut(args) -> int:
    import time

    from search_spaces.spaces import get_space

    specs = [_spec(argparse.Namespace(arch=a, resolution=args.resolution)) for a in args.arch or []]
    anchor = _anchor(args)
    table = _table(args)  # after the specs were read: a bad one creates no table
    if not table.can_measure:
        raise ValueError(f"{table.path} belongs to another device; build it there with `nas latency export-bundle`")
    t0 = time.perf_counter()
    if args.space:
        space = get_space(args.space, resolution=args.resolution or 224)
        keys = space.layer_keys()
        calib = _calibration_specs(space, args.calibrate, seed=args.seed)
    else:
        from search_spaces import walk

        keys = {layer.key for s in specs for layer in walk(s)}
        calib = specs
    from latency.lut import entry_keys

    keys = entry_keys(keys)  # with the context layers blocks are measured after
    before = len(table.missing(keys))
    measured = table.ensure(keys, progress=_progress("layer entries measured", "entries"))
    t_entries = time.perf_counter() - t0
    cal = table.calibration
    if calib and args.calibrate:
        cal = table.calibrate(calib, progress=_progress("whole networks measured", "networks"), anchor=anchor)
    result = {"table": str(table.path), "keys": len(keys), "already_present": len(keys) - before,
              "measured": measured, "entries_s": t_entries, "total_s": time.perf_counter() - t0,
              "calibration": cal.to_dict(), "anchor": table.store.meta("anchor")}
    if args.json:
        _print_json(result)
    else:
        print(f"{table.path}: {len(keys)} entries needed, {measured} measured in {t_entries:.0f} s "
              f"({len(keys) - before} were cached)")
        if cal.fitted:
            print(f"calibration: {cal.describe()}")
    return 0


def cmd_validate(args) -> int:
    from latency.lut import validate, validation_summary
    from search_spaces.spaces import get_space

    anchor = _anchor(args)
    table = _table(args)
    space = get_space(args.space, resolution=args.resolution or 224)
    rng = np.random.default_rng(args.seed + 10_000)  # never the calibration architectures' seed
    specs = [space.decode(space.sample(rng)).replace(name=f"val{i}") for i in range(args.n)]
    rows = validate(table, specs, progress=_progress("architectures measured", "architectures"),
                    anchor=anchor)
    summary = validation_summary(rows)
    plain_rows = None
    if anchor is not None:  # what a user without an anchor sees: each network measured alone, now
        from latency.lut import ValidationRow, measure_plain

        plain_ms = measure_plain(specs, table.cfg, progress=_progress("architectures measured alone",
                                                                      "architectures"))
        plain_rows = [ValidationRow(r.name, r.arch_id, r.predicted_ms, m) for r, m in zip(rows, plain_ms)]
    if args.json:
        plain = ({"summary": validation_summary(plain_rows), "rows": [dict(r.__dict__, error=r.error)
                                                                      for r in plain_rows]}
                 if plain_rows else None)
        _print_json({"summary": summary, "rows": [dict(r.__dict__, error=r.error) for r in rows],
                     "table": str(table.path), "calibration": table.calibration.to_dict(),
                     "anchor": table.store.meta("anchor"), "plain": plain})
        return 0
    extra = f" {'alone':>10} {'error':>7}" if plain_rows else ""
    print(f"{'arch':<8} {'arch_id':<17} {'predicted':>10} {'measured':>10} {'error':>7}{extra}")
    for i, r in enumerate(rows):
        line = f"{r.name:<8} {r.arch_id:<17} {r.predicted_ms:>8.3f}ms {r.measured_ms:>8.3f}ms {r.error:>+7.1%}"
        if plain_rows:
            line += f" {plain_rows[i].measured_ms:>8.3f}ms {plain_rows[i].error:>+7.1%}"
        print(line)

    def describe(s) -> str:
        return (f"{s['n']} architectures: {s['within_10pct']:.0%} within ±10 %, {s['within_5pct']:.0%} within ±5 %, "
                f"median |error| {s['median_abs_error']:.1%}, max {s['max_abs_error']:.1%}, "
                f"mean signed {s['mean_signed_error']:+.1%}, Kendall τ {s['kendall_tau']:.3f}")

    if plain_rows:
        print(f"anchored ('measured'): {describe(summary)}")
        print(f"plain ('alone', each network measured on its own): {describe(validation_summary(plain_rows))}")
    else:
        print(describe(summary))
    return 0


def cmd_export_bundle(args) -> int:
    from latency.lut import export_bundle
    from search_spaces.spaces import get_space

    space = get_space(args.space, resolution=args.resolution or 224)
    out = export_bundle(space.layer_keys(), _calibration_specs(space, args.calibrate, args.seed), args.out,
                        progress=_progress("files exported", "files"))
    print(f"wrote {out}; on the device run: python3 {out}/device_lut.py {out} --out table.sqlite")
    return 0


def add_latency_commands(sub: argparse._SubParsersAction) -> None:
    lat = sub.add_parser("latency", help="measure and predict latency on this device")
    lsub = lat.add_subparsers(dest="latency_command", required=True,
                              metavar="{measure,predict,build-lut,validate,export-bundle}")

    from hwnas.cli import add_latency_backend_options

    def common(p, arch=True, lut=True, backend=True):
        if arch:
            p.add_argument("arch", metavar="NAME|FILE.json", help="a registered name or a spec file")
            p.add_argument("--in-channels", type=int, help="input channels (default: the spec's; a search on "
                                                             "Fashion-MNIST times 1)")
            p.add_argument("--num-classes", type=int, help="classes (default: the spec's; a search on Fashion-MNIST "
                                                             "or CIFAR-10 times 10)")
        p.add_argument("--resolution", type=int, help="input resolution (default: the spec's, 224 for spaces)")
        if backend:
            add_latency_backend_options(p)
        else:
            p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
        if lut:
            p.add_argument("--lut", metavar="FILE",
                           help="latency table (default: this device's, in ~/.cache/hwnas/lut)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = lsub.add_parser("measure", help="measure an architecture whole with ONNX Runtime")
    common(p, lut=False)
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="fp32, or int8 (QDQ, calibrated on real images of --dataset)")
    p.add_argument("--calibration-samples", type=int, default=32, help="int8: real images for calibration")
    p.add_argument("--dataset", default="fashion-mnist", help="int8 calibration data (default fashion-mnist)")
    p.add_argument("--data-dir", help="dataset folder (default: the Debian package's)")
    p.add_argument("--anchor", metavar="NAME|FILE.json",
                   help="time the network interleaved with this one and report ratio × the anchor's latency stored "
                        "for this device (measured on first use): a number that repeats from run to run where the "
                        "host's speed wanders; choose one like the measured network (e.g. its 0.75-width version); "
                        "fp32 only")
    p.add_argument("--remeasure-anchor", action="store_true", help="with --anchor: measure its stored latency anew")
    p.set_defaults(func=cmd_measure)

    p = lsub.add_parser("predict", help="predict an architecture's latency from the lookup table")
    common(p)
    p.add_argument("--no-measure", action="store_true", help="fail instead of measuring missing entries")
    p.set_defaults(func=cmd_predict)

    p = lsub.add_parser("build-lut", help="measure every table entry of a space (or archs) and calibrate")
    common(p, arch=False)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--space", help="a search space: mnasnet, mobilenetv3, mobilenetv3_small")
    g.add_argument("--arch", nargs="+", help="architectures (names or files)")
    p.add_argument("--calibrate", type=int, default=24, help="whole networks measured for the calibration (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random calibration networks")
    p.add_argument("--anchor", metavar="NAME|FILE.json",
                   help="measure whole networks interleaved with this network (ratio × its latency in the table), "
                        "so that host drift cancels")
    p.set_defaults(func=cmd_build_lut)

    p = lsub.add_parser("validate", help="predicted vs measured on random architectures of a space")
    common(p, arch=False)
    p.add_argument("--space", default="mobilenetv3", help="the search space the architectures are drawn from")
    p.add_argument("--n", type=int, default=50, help="number of random architectures")
    p.add_argument("--seed", type=int, default=0, help="seeds the random architectures (never the calibration's)")
    p.add_argument("--anchor", metavar="NAME|FILE.json",
                   help="measure whole networks interleaved with this network (ratio × its latency in the table), "
                        "so that host drift cancels")
    p.set_defaults(func=cmd_validate)

    p = lsub.add_parser("export-bundle", help="ONNX files + script to build a table on another device")
    common(p, arch=False, lut=False, backend=False)
    p.add_argument("--space", required=True, help="the search space whose table entries are exported")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--calibrate", type=int, default=24, help="whole networks to measure for the calibration")
    p.add_argument("--seed", type=int, default=0, help="seeds the random calibration networks")
    p.set_defaults(func=cmd_export_bundle)
