"""Lookup tables: on-demand entries, persistence, calibration, other devices, bundles."""

import dataclasses
import json
import re
import sqlite3
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from latency.lut import (
    LatencyTable,
    MissingEntryError,
    entry_keys,
    export_bundle,
    kendall_tau,
    layer_context,
    layer_input_shape,
    layer_onnx,
    validate,
    validation_summary,
)
from latency.lut_store import (
    GROUPS,
    MPARAMS,
    Calibration,
    TableFormatError,
    canonical_key,
    context_key,
    fit_calibration,
    fit_model,
    group_sums,
    is_context_key,
    layer_costs,
    layer_params,
)
from latency.measure import MeasureConfig
from search_spaces import references, walk
from search_spaces.builder import build_layer
from search_spaces.walk import LayerShape, Role

# Quick settings: these tests check behaviour, never timings.
FAST = MeasureConfig(warmup_min_s=0.0, min_runs=10, max_runs=200, time_cap_s=0.2, lock_timeout_s=600, sessions=1)
SMALL = references.get("mobilenetv3_small").replace(resolution=32, num_classes=10)
LARGE = references.get("mobilenetv3_large").replace(resolution=32, num_classes=10)


@pytest.fixture
def table(tmp_path):
    return LatencyTable(tmp_path / "t.sqlite", FAST)


def test_entries_are_measured_once_and_persist(table, tmp_path):
    keys = set(entry_keys(layer.key for layer in walk(SMALL)))  # the layers and their blocks' context layers
    first = table.predict(SMALL)
    assert first.measured_now == len(keys) > len(walk(SMALL))
    assert table.predict(SMALL).measured_now == 0
    again = LatencyTable(tmp_path / "t.sqlite", FAST)  # a new process would see the same file
    p = again.predict(SMALL)
    assert p.measured_now == 0 and p.latency_ms == pytest.approx(first.latency_ms)
    assert len(p.layer_ms) == len(walk(SMALL)) and all(ms >= 0 for ms in p.layer_ms)
    # Large shares no keys with Small at this size except those it really shares.
    large = set(entry_keys(layer.key for layer in walk(LARGE)))
    assert again.predict(LARGE).measured_now == len(large - keys)


def test_prediction_is_the_sum_of_entries_without_calibration(table):
    p = table.predict(SMALL)
    assert not p.calibrated
    assert p.latency_ms == pytest.approx(p.raw_sum_ms)
    assert p.raw_sum_ms == pytest.approx(sum(p.layer_ms) + table.overhead_ms)


def test_layer_models_compute_what_the_layer_computes():
    torch.manual_seed(0)
    for layer in walk(SMALL)[:3] + walk(SMALL)[-2:]:
        data = layer_onnx(layer.key)
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal(layer_input_shape(layer.key)).astype(np.float32)
        out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        torch.manual_seed(0)  # layer_onnx builds its weights from seed 0 too: the layer's, then its context's
        module = build_layer(layer).eval()
        ctx = layer_context(layer.key)
        if ctx is not None:  # a block's entry runs its context layer first
            module = torch.nn.Sequential(build_layer(LayerShape(0, Role.BLOCK, None, ctx)), module).eval()
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).numpy()
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_calibration_round_trips_through_the_file(table, tmp_path):
    table.calibrate([SMALL, LARGE, references.get("mnasnet_a1").replace(resolution=32, num_classes=10)])
    cal = table.calibration
    assert cal.fitted and cal.n_points == 3 and cal.scale > 0
    assert cal.loo_mean_abs_error is not None and cal.loo_max_abs_error >= cal.loo_mean_abs_error
    reopened = LatencyTable(tmp_path / "t.sqlite", FAST)
    assert reopened.calibration == cal
    p = reopened.predict(SMALL)
    assert p.calibrated and cal.factors is None  # three networks: the global scale only
    assert p.latency_ms == pytest.approx(cal.scale * (p.raw_sum_ms - reopened.overhead_ms) + reopened.overhead_ms)


def test_calibration_fit_global_scale_then_per_kind_factors():
    # Few networks: one global scale (the median ratio), with leave-one-out errors.
    few = [({"conv": 10.0}, 9.0), ({"mbconv": 20.0}, 18.0), ({"conv": 5.0}, 4.5), ({"dsconv": 8.0}, 8.0)]
    cal = fit_calibration(few)
    assert cal.scale == pytest.approx(0.9) and cal.factors is None and cal.n_points == 4
    assert 0 < cal.loo_mean_abs_error < 0.05 and cal.loo_max_abs_error == pytest.approx(0.1, abs=0.01)
    assert fit_calibration([({"conv": 1.0}, 2.0)]).loo_mean_abs_error is None
    # Enough networks: each kind gets its own factor (here conv 1.1, mbconv 0.8, exactly).
    rng = np.random.default_rng(0)
    many = []
    for _ in range(12):
        sums = {"conv": float(rng.uniform(1, 5)), "dsconv": 0.0, "mbconv": float(rng.uniform(1, 5)), "other": 0.2}
        many.append((sums, 1.1 * sums["conv"] + 0.8 * sums["mbconv"] + 0.9 * 0.2))
    cal = fit_calibration(many)
    assert cal.factors["conv"] == pytest.approx(1.1, rel=0.03) and cal.factors["mbconv"] == pytest.approx(0.8, rel=0.03)
    assert cal.loo_max_abs_error < 0.03
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert group_sums(["conv", "pool", "linear", "mbconv"], [1.0, 0.1, 0.2, 2.0]) == pytest.approx(
        {"conv": 1.0, "dsconv": 0.0, "mbconv": 2.0, "other": 0.3})
    assert set(GROUPS) == {"conv", "dsconv", "mbconv", "other"}


def test_calibration_describes_what_the_predictor_applies():
    assert Calibration().describe() == "uncalibrated"
    few = Calibration(scale=0.967, n_points=5, loo_mean_abs_error=0.048, loo_max_abs_error=0.09)
    assert few.describe() == ("one factor 0.967 for every layer kind (per-kind factors need 8 networks); "
                              "5 whole networks, leave-one-out error 4.8% mean, 9.0% max")
    many = Calibration(scale=0.967, factors={"conv": 1.083, "dsconv": 0.912, "mbconv": 0.874, "other": 1.0},
                       n_points=48, loo_mean_abs_error=0.032, loo_max_abs_error=0.095, io_ms_per_melem=-0.312)
    # The factors are what predict() applies, so they are shown and the unused global scale is not.
    assert many.describe() == ("per-kind factors conv 1.083, dsconv 0.912, mbconv 0.874, other 1.000, "
                               "io -0.312 ms per 10⁶ elements; 48 whole networks, leave-one-out error 3.2% mean, "
                               "9.5% max")
    assert "io" not in Calibration(scale=1.0, factors=dict.fromkeys(GROUPS, 1.0), n_points=8).describe()


def test_table_of_another_device_is_read_only_and_names_missing_entries(tmp_path):
    other_cfg = dataclasses.replace(FAST, intra_op_threads=2)  # another fingerprint
    other = LatencyTable(tmp_path / "other.sqlite", other_cfg)
    other.predict(SMALL)
    here = LatencyTable(tmp_path / "other.sqlite", FAST)
    assert not here.can_measure
    assert here.predict(SMALL).measured_now == 0
    with pytest.raises(MissingEntryError, match=r"another device.*lacks \d+ entr.*e\.g\. (bneck|mbconv|conv|dsconv)"):
        here.predict(LARGE)
    with pytest.raises(Exception, match="another device"):
        here.calibrate([SMALL])


def test_not_a_table_is_refused(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(TableFormatError, match="not a latency table"):
        LatencyTable(bad, FAST)
    old = tmp_path / "old.sqlite"
    LatencyTable(old, FAST)
    with sqlite3.connect(old) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(TableFormatError, match="schema 99"):
        LatencyTable(old, FAST)
    with sqlite3.connect(old) as conn:  # entries of layers measured alone: another meaning, so rebuilt
        conn.execute("UPDATE meta SET value = '1' WHERE name = 'schema_version'")
    with pytest.raises(TableFormatError, match=r"schema 1 \(layers measured alone\).*schema 2.*rebuild it"):
        LatencyTable(old, FAST)


def test_a_table_of_an_older_layout_is_refused_naming_the_mismatch(tmp_path):
    from latency.lut_store import TableStore

    foreign = {**FAST.fingerprint().to_dict(), "cpu_model": "elsewhere"}  # read-only here: nothing is measured
    old = tmp_path / "old.sqlite"
    TableStore(old).create(foreign, FAST.to_dict())
    with sqlite3.connect(old) as conn:  # the development layout: no per-group sums
        conn.execute("DROP TABLE calibration_points")
        conn.execute("CREATE TABLE calibration_points (arch_id TEXT PRIMARY KEY, name TEXT, resolution INTEGER, "
                     "raw_sum_ms REAL NOT NULL, measured_ms REAL NOT NULL, measured_at TEXT, note TEXT)")
    with pytest.raises(TableFormatError, match=rf"{old}: table calibration_points .*missing group_ms.*unexpected note"):
        LatencyTable(old, FAST)
    with sqlite3.connect(old) as conn:
        conn.execute("DROP TABLE calibration_points")
    with pytest.raises(TableFormatError, match=rf"{old}: table calibration_points is missing"):
        LatencyTable(old, FAST)


def test_bundle_builds_a_table_on_a_device_without_torch(tmp_path):
    keys = {layer.key for layer in walk(SMALL)}
    bundle = export_bundle(keys, [SMALL, LARGE], tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    all_keys = keys | {layer.key for layer in walk(LARGE)}  # the calibration networks' layers come along
    assert len(manifest["entries"]) == len(entry_keys(all_keys)) and len(manifest["networks"]) == 2
    out = tmp_path / "device.sqlite"
    # -I: isolated mode (no PYTHONPATH, no site dir of the project): only the bundle is importable.
    code = (
        "import runpy, sys; sys.argv = ['device_lut.py', sys.argv[1], '--out', sys.argv[2]];"
        "import builtins; real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    assert not name.startswith(('torch', 'search_spaces', 'nas')), name\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "runpy.run_path(sys.argv[1] + '/device_lut.py', run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(bundle), str(out)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode in (0, None) or "SystemExit: 0" in proc.stderr, proc.stderr[-2000:]
    table = LatencyTable(out, FAST)  # same machine here, but it could be any device
    p = table.predict(SMALL, measure_missing=False)
    assert p.measured_now == 0 and p.calibrated
    assert table.calibration.n_points == 2


def test_validation_summary_and_kendall():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    from latency.lut import ValidationRow

    rows = [ValidationRow("a", "x", 1.05, 1.0), ValidationRow("b", "y", 1.7, 2.0), ValidationRow("c", "z", 3.0, 3.0)]
    s = validation_summary(rows)
    assert s["within_10pct"] == pytest.approx(2 / 3) and s["max_abs_error"] == pytest.approx(0.15)
    assert s["kendall_tau"] == 1.0


def test_validate_measures_and_predicts(table):
    rows = validate(table, [SMALL, LARGE])
    assert [r.arch_id for r in rows] == [SMALL.arch_id, LARGE.arch_id]
    assert all(r.measured_ms > 0 and r.predicted_ms > 0 for r in rows)


def test_anchored_measurements_are_ratio_times_one_anchor_latency(table, monkeypatch):
    import types

    import latency.lut as lut
    from latency.measure import LatencyError

    specs = [SMALL, LARGE, references.get("mnasnet_a1").replace(resolution=32, num_classes=10)]
    for s in specs:
        table.predict(s)  # entries measured for real first; whole networks are faked below
    alone = iter([2.0, 2.2, 1.8])  # the anchor alone beside each network: median 2.0
    ratios = iter([0.5, 1.5, 1.0, 0.75, 1.25])
    monkeypatch.setattr(lut, "measure_onnx", lambda model, cfg: types.SimpleNamespace(median_ms=next(alone)))
    monkeypatch.setattr(lut, "measure_pair", lambda a, b, cfg: types.SimpleNamespace(ratio=next(ratios)))
    ms, ref = lut.measure_anchored(specs, LARGE, FAST)
    assert ref == 2.0 and ms == pytest.approx([1.0, 3.0, 2.0])
    ms, ref = lut.measure_anchored(specs[:2], LARGE, FAST, anchor_ms=4.0)  # a given reference: no anchor alone
    assert ref == 4.0 and ms == pytest.approx([3.0, 5.0])

    alone = iter([2.0, 2.2, 1.8])
    ratios = iter([0.5, 1.5, 1.0, 0.75, 0.5])
    assert table.anchor_ms(LARGE) is None
    table.calibrate(specs, anchor=LARGE)
    assert table.anchor_ms(LARGE) == 2.0 and table.store.meta("anchor")["name"] == LARGE.name
    assert sorted(p["measured_ms"] for p in table.store.points()) == pytest.approx([1.0, 2.0, 3.0])
    # validation measures against the table's anchor latency, not a new one (no anchor alone here)
    rows = validate(table, specs[:2], anchor=LARGE)
    assert [r.measured_ms for r in rows] == pytest.approx([1.5, 1.0])
    assert [r.predicted_ms for r in rows] == pytest.approx([table.predict(s).latency_ms for s in specs[:2]])
    with pytest.raises(LatencyError, match="anchored on mobilenetv3_large"):
        validate(table, specs[:1], anchor=SMALL)


def test_io_term_sums_tensor_sizes_and_is_fitted_with_the_factors():
    from latency.lut_store import IO_MELEMS, io_melems

    keys = [{"kind": "conv", "resolution": 224, "in_channels": 3, "out_channels": 16, "stride": 2},
            {"kind": "mbconv", "resolution": 7, "in_channels": 160, "out_channels": 160, "stride": 2},  # 7 -> 4
            {"kind": "pool", "resolution": 7, "in_channels": 960, "out_channels": 960, "stride": 1},  # out 1×1
            {"kind": "linear", "resolution": 1, "in_channels": 960, "out_channels": 1280, "stride": 1}]
    expected = (3 * 224**2 + 16 * 112**2) + (160 * 49 + 160 * 16) + (960 * 49 + 960) + (960 + 1280)
    assert io_melems(keys) == pytest.approx(expected / 1e6)
    rng = np.random.default_rng(1)
    pts = []
    for _ in range(16):
        sums = {"conv": float(rng.uniform(1, 5)), "dsconv": float(rng.uniform(0, 2)),
                "mbconv": float(rng.uniform(1, 5)), "other": 0.2, IO_MELEMS: float(rng.uniform(2, 8))}
        y = 1.2 * sums["conv"] + 1.0 * sums["dsconv"] + 1.1 * sums["mbconv"] + 0.2 - 0.3 * sums[IO_MELEMS]
        pts.append((sums, y))
    cal = fit_calibration(pts)
    assert cal.io_ms_per_melem == pytest.approx(-0.3, abs=0.02)
    assert cal.factors["conv"] == pytest.approx(1.2, rel=0.03) and cal.loo_max_abs_error < 0.02
    assert cal.predict(pts[0][0], 0.5) == pytest.approx(pts[0][1] + 0.5, rel=0.01)
    assert Calibration.from_dict(cal.to_dict()) == cal
    # Points of an older file lack the sum: the factors alone are fitted, and old calibrations still load.
    old = [({g: v for g, v in s.items() if g != IO_MELEMS}, y) for s, y in pts[:8]] + pts[8:]
    assert fit_calibration(old).io_ms_per_melem is None and fit_calibration(old).factors is not None
    legacy = {"scale": 0.9, "factors": None, "n_points": 3, "loo_mean_abs_error": 0.01, "loo_max_abs_error": 0.02}
    assert Calibration.from_dict(legacy).predict({"conv": 1.0, IO_MELEMS: 5.0}, 0.1) == pytest.approx(1.0)


def test_prediction_applies_the_io_term(table):
    from latency.lut_store import IO_MELEMS

    raw, layer_ms, sums, _ = table.raw_sum(SMALL)
    assert sums[IO_MELEMS] > 0 and sum(sums[g] for g in GROUPS) == pytest.approx(sum(layer_ms))
    cal = Calibration(scale=1.0, factors=dict.fromkeys(GROUPS, 1.0), n_points=8, io_ms_per_melem=-0.01)
    table.store.set_meta("calibration", cal.to_dict())
    again = LatencyTable(table.path, FAST)
    assert again.predict(SMALL).latency_ms == pytest.approx(raw - 0.01 * sums[IO_MELEMS])


def test_calibration_is_the_ridge_least_squares_of_the_relative_error():
    from latency.lut_store import IO_MELEMS

    rng = np.random.default_rng(2)
    pts = []
    for _ in range(10):  # off-model networks of very different sizes: the weighting matters
        sums = {"conv": float(rng.uniform(0.5, 20)), "dsconv": float(rng.uniform(0, 3)),
                "mbconv": float(rng.uniform(0.5, 20)), "other": 0.2, IO_MELEMS: float(rng.uniform(2, 8))}
        pts.append((sums, sum(v for k, v in sums.items() if k != IO_MELEMS) * float(rng.uniform(0.8, 1.2))))
    scale, factors, terms = fit_model(pts, "groups")
    cal = Calibration(scale=scale, factors=factors, io_ms_per_melem=terms[IO_MELEMS])
    cols = list(GROUPS) + [IO_MELEMS]
    x = np.array([[s[c] / y for c in cols] for s, y in pts])
    scale = np.median([y / sum(s[g] for g in GROUPS) for s, y in pts])
    lam = 0.01 * max((x.T @ x).diagonal()[:4])
    prior = np.sqrt(lam) * np.eye(5)[:4]  # ridge rows on the four factors, toward the scale
    a = np.vstack([x, prior])
    b = np.concatenate([np.ones(len(pts)), np.sqrt(lam) * scale * np.ones(4)])
    expected = np.linalg.lstsq(a, b, rcond=None)[0]
    assert [cal.factors[g] for g in GROUPS] == pytest.approx(np.maximum(expected[:4], 0), rel=1e-6)
    assert cal.io_ms_per_melem == pytest.approx(expected[4], rel=1e-6, abs=1e-9)


def test_blocks_are_measured_after_a_context_layer():
    specs = [references.get(n) for n in ("mobilenetv3_small", "mobilenetv3_large", "mnasnet_a1", "mobilenetv2")]
    layers = [layer for spec in specs for layer in walk(spec)]
    # No layer of a network is itself a context layer, so their entries never collide.
    assert not any(is_context_key(layer.key.to_dict()) for layer in layers)
    for layer in layers:
        key, ctx = layer.key, layer_context(layer.key)
        alone = key.kind.value in ("pool", "linear") or key.in_channels < 8  # the stem reads the image
        assert (ctx is None) == alone, layer
        if ctx is not None:
            assert ctx.to_dict() == context_key(key.to_dict())  # the stdlib version (device script) agrees
            assert (ctx.kind.value, ctx.kernel_size, ctx.stride, ctx.activation) == ("conv", 1, 1, None)
            assert (ctx.resolution, ctx.in_channels, ctx.out_channels) == (key.resolution,) + (key.in_channels,) * 2
            assert is_context_key(ctx.to_dict()) and layer_context(ctx) is None
    keys = [layer.key for layer in walk(SMALL)]
    needed = entry_keys(keys)
    assert set(keys) < set(needed) and len(needed) == len(set(needed))
    assert all(needed.index(layer_context(k)) < needed.index(k) for k in keys if layer_context(k))


def test_layer_cost_is_the_entry_minus_its_context_entry():
    block = walk(SMALL)[1].key.to_dict()
    stem, pool = walk(SMALL)[0].key.to_dict(), walk(SMALL)[-3].key.to_dict()
    assert context_key(block) is not None and context_key(stem) is None and pool["kind"] == "pool"
    entries = {canonical_key(block): 0.30, canonical_key(context_key(block)): 0.08, canonical_key(stem): 0.21,
               canonical_key(pool): 0.005}
    total, costs = layer_costs([stem, block, pool], entries, 0.01)
    assert costs == pytest.approx((0.20, 0.22, 0.0)) and total == pytest.approx(0.43)  # never below 0


def test_predicted_layer_costs_come_from_the_entries(table):
    from latency.lut_store import network_sums

    p = table.predict(SMALL)
    keys = [layer.key for layer in walk(SMALL)]
    found = table.lookup(entry_keys(keys))
    for key, ms in zip(keys, p.layer_ms):
        ctx = layer_context(key)
        base = found[ctx] if ctx is not None else table.overhead_ms
        assert ms == pytest.approx(max(found[key] - base, 0.0))
    # the device script's path (key dicts, stdlib only) gives the same costs and sums
    dicts = [k.to_dict() for k in keys]
    raw, layer_ms = layer_costs(dicts, {canonical_key(k.to_dict()): v for k, v in found.items()}, table.overhead_ms)
    assert raw == pytest.approx(p.raw_sum_ms) and layer_ms == pytest.approx(p.layer_ms)
    assert network_sums(dicts, layer_ms) == pytest.approx(table.raw_sum(SMALL)[2])


def test_weights_term_counts_parameters_and_is_fitted():
    from latency.lut_store import IO_MELEMS

    assert layer_params({"kind": "conv", "in_channels": 3, "expand_channels": 16, "out_channels": 16,
                         "kernel_size": 3, "se_channels": 0}) == 27 * 16
    assert layer_params({"kind": "mbconv", "in_channels": 16, "expand_channels": 64, "out_channels": 24,
                         "kernel_size": 5, "se_channels": 16}) == 16 * 64 + 25 * 64 + 64 * 24 + 2 * 64 * 16
    assert layer_params({"kind": "linear", "in_channels": 960, "expand_channels": 1280, "out_channels": 1280,
                         "kernel_size": 1, "se_channels": 0}) == 960 * 1280
    assert layer_params({"kind": "pool", "in_channels": 960, "expand_channels": 960, "out_channels": 960,
                         "kernel_size": 7, "se_channels": 0}) == 0
    rng = np.random.default_rng(3)
    pts = []
    for _ in range(16):
        sums = {"conv": float(rng.uniform(1, 5)), "dsconv": float(rng.uniform(0, 2)),
                "mbconv": float(rng.uniform(1, 5)), "other": 0.2, IO_MELEMS: float(rng.uniform(2, 8)),
                MPARAMS: float(rng.uniform(2, 6))}
        pts.append((sums, sums["conv"] + sums["dsconv"] + sums["mbconv"] + 0.2 - 0.05 * sums[IO_MELEMS]
                    + 0.12 * sums[MPARAMS]))
    cal = fit_calibration(pts)
    assert cal.ms_per_mparam == pytest.approx(0.12, abs=0.01) and cal.io_ms_per_melem == pytest.approx(-0.05, abs=0.01)
    assert cal.loo_max_abs_error < 0.02 and Calibration.from_dict(cal.to_dict()) == cal
    assert cal.predict(pts[0][0], 0.5) == pytest.approx(pts[0][1] + 0.5, rel=0.01)
    assert re.search(r"io -0\.0\d\d ms per 10⁶ elements, weights \+0\.1[12]\d ms per 10⁶ parameters; 16 whole",
                     cal.describe())


def test_table_sums_carry_the_weights(table):
    _, _, sums, _ = table.raw_sum(SMALL)
    expected = sum(layer_params(layer.key.to_dict()) for layer in walk(SMALL)) / 1e6
    assert sums[MPARAMS] == pytest.approx(expected) and expected > 0


def test_calibration_keeps_the_model_that_predicts_left_out_networks_best():
    from latency.lut_store import IO_MELEMS, MODELS

    rng = np.random.default_rng(4)
    noisy, exact = [], []
    for _ in range(10):
        sums = {"conv": float(rng.uniform(1, 5)), "dsconv": float(rng.uniform(0, 2)),
                "mbconv": float(rng.uniform(1, 5)), "other": 0.2, IO_MELEMS: float(rng.uniform(2, 8)),
                MPARAMS: float(rng.uniform(2, 6))}
        total = sum(sums[g] for g in GROUPS)
        noisy.append((sums, 1.1 * total * float(rng.uniform(0.95, 1.05))))  # one factor, 5 % noise
        exact.append((sums, 1.3 * sums["conv"] + 0.9 * (total - sums["conv"]) + 0.1 * sums[MPARAMS]))
    loo = {}
    for m in MODELS:  # what fit_calibration scores each model by
        errors = []
        for i, (sums, y) in enumerate(noisy):
            scale, factors, terms = fit_model(noisy[:i] + noisy[i + 1:], m)
            cal = Calibration(scale=scale, factors=factors, io_ms_per_melem=terms.get(IO_MELEMS),
                              ms_per_mparam=terms.get(MPARAMS))
            errors.append(abs(cal.predict(sums, 0.0) - y) / y)
        loo[m] = float(np.mean(errors))
    chosen = fit_calibration(noisy)
    assert chosen.loo_mean_abs_error == pytest.approx(min(loo.values()))
    assert loo["groups"] > loo["scale"] == min(loo.values())  # six coefficients on ten noisy networks fit the noise
    assert chosen.factors is None and chosen.describe().startswith("one factor 1.1")
    assert "left out networks worse" in chosen.describe()
    rich = fit_calibration(exact)  # data that needs a factor per kind gets one
    assert rich.factors["conv"] == pytest.approx(1.3, rel=0.05)  # (ridge: a little toward the scale)
    assert rich.factors["mbconv"] == pytest.approx(0.9, rel=0.05) and rich.loo_mean_abs_error < 0.02
    shared = Calibration(scale=1.0, factors=dict.fromkeys(GROUPS, 1.05), n_points=12, ms_per_mparam=0.1)
    assert shared.describe().startswith("one factor 1.050 for every block kind, other 1.050, weights +0.100 ms per")
