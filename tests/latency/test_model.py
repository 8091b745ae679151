"""Conformance of the latency models (:mod:`latency.model`): one suite run against every implementation,
then what is particular to the tables, the factory, and the consumers' thin functions over it.

Tiny networks at 32² and quick measurement settings: these tests check behaviour, never timings.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from latency.lut import LatencyTable, MissingEntryError
from latency.lut_store import TableStore
from latency.measure import LatencyError, MeasureConfig
from latency.model import (
    KINDS,
    AnalyticLatency,
    DeviceTableLatency,
    LatencyModel,
    MeasuredLatency,
    TableLatency,
    analytic_latency_ms,
    latency_model,
)
from search_spaces import references

RES = 32
FAST = MeasureConfig(warmup_min_s=0.0, min_runs=10, max_runs=200, time_cap_s=0.2, lock_timeout_s=120, sessions=1)


def tiny(name: str):
    return references.get(name).replace(resolution=RES, num_classes=10, in_channels=1)


SMALL = tiny("mobilenetv3_small")
NARROW = tiny("mobilenetv3_small_050")  # SMALL at width multiplier 0.5
ABSENT = tiny("mobilenetv3_small_075")  # in neither table of this module
CAN_MEASURE = {"predicted": True, "measured": True, "device-table": False, "analytic": False}
DETERMINISTIC = ("predicted", "device-table", "analytic")


@pytest.fixture(scope="module")
def tables(module_cache):
    """(this machine's table, the same entries as another device's table), both holding SMALL and NARROW."""
    here = module_cache / "here.sqlite"
    local = LatencyTable(here, FAST)
    for spec in (SMALL, NARROW):
        local.predict(spec)  # the entries are measured once for the whole module
    there = module_cache / "there.sqlite"
    shutil.copyfile(here, there)
    TableStore(there).set_meta("fingerprint", {**FAST.fingerprint().to_dict(), "cpu_model": "elsewhere"})
    return here, there


def build(kind: str, tables, resolution: int = RES) -> LatencyModel:
    here, there = tables
    if kind == "predicted":
        return TableLatency(LatencyTable(here, FAST), resolution)
    if kind == "measured":
        return MeasuredLatency(FAST, resolution)
    if kind == "device-table":
        return DeviceTableLatency(LatencyTable(there, FAST), resolution)
    return AnalyticLatency(resolution)


@pytest.fixture(params=KINDS)
def model(request, tables) -> LatencyModel:
    return build(request.param, tables)


# ------------------------------------------------------------------------------------------------
# The contract, for every model
# ------------------------------------------------------------------------------------------------


def test_latency_is_a_positive_finite_float(model):
    assert isinstance(model, LatencyModel) and model.kind in KINDS and model.name == model.kind
    ms = model.latency_ms(SMALL)
    assert isinstance(ms, float) and math.isfinite(ms) and ms > 0
    assert model.resolution == RES and model.deploy(SMALL.replace(resolution=224)) == SMALL


@pytest.mark.parametrize("kind", DETERMINISTIC)
def test_deterministic_models_repeat_themselves_at_their_resolution(kind, tables):
    m = build(kind, tables)
    first = m.latency_ms(SMALL)
    assert m.latency_ms(SMALL) == first
    assert m.latency_ms(SMALL.replace(resolution=64)) == first  # timed at the deployment resolution
    assert build(kind, tables).latency_ms(SMALL) == first  # a model reopened on the same file


def test_a_narrower_network_is_not_slower_by_the_analytic_model():
    # Only the analytic model promises this: a table holds timings, and at 32² two tiny networks can
    # time within noise of each other (CI once measured the 0.5-width network 10 % slower).
    m = AnalyticLatency(RES)
    assert m.latency_ms(NARROW) < m.latency_ms(SMALL)


def test_can_measure_agrees_with_measure_and_ratio(model):
    assert model.can_measure is CAN_MEASURE[model.kind]
    measured, ratio = model.measure_ms(SMALL), model.ratio(NARROW, SMALL)
    if model.can_measure:
        assert isinstance(measured, float) and math.isfinite(measured) and measured > 0
        assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
        assert model.measure_config is not None
        paired = model.paired(NARROW, SMALL)  # the ratio with its interval
        assert 0 < paired.ratio_ci_low <= paired.ratio <= paired.ratio_ci_high
    else:
        assert measured is None and ratio is None and model.measure_config is None
        assert model.paired(NARROW, SMALL) is None
        with pytest.raises(LatencyError, match="cannot measure"):
            model.measurement(SMALL)


def test_describe_and_key_name_the_backend_and_the_device(model, tables):
    d = model.describe()
    assert json.loads(json.dumps(d)) == d
    assert d["kind"] == model.kind and d["backend"] == model.backend and d["resolution"] == RES
    assert model.kind in model.key and model.backend in model.key and str(RES) in model.key
    fp = model.fingerprint
    if model.kind == "analytic":
        assert fp is None and model.backend == "analytic"
        assert d["depthwise_ms_per_mmadd"] > d["dense_ms_per_mmadd"] > 0  # the constants are stated
    else:
        assert model.backend == fp["backend"] == "ort-cpu"
        assert d["intra_op_threads"] == fp["intra_op_threads"] == FAST.intra_op_threads
        assert d["device"] == ("elsewhere" if model.kind == "device-table" else fp["cpu_model"])
    if model.kind in ("predicted", "measured"):
        assert d["device_key"] == FAST.fingerprint().key  # names this machine's table file too
    again = build(model.kind, tables)
    assert again.key == model.key and repr(again) == repr(model)
    assert build(model.kind, tables, resolution=64).key != model.key


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


def test_device_table_names_a_missing_entry_and_never_measures(tables, monkeypatch):
    import latency.lut
    import latency.measure

    def refuse(*a, **k):
        raise AssertionError("a device table measured something")

    for module, name in ((latency.lut, "measure_onnx"), (latency.measure, "measure_onnx"),
                         (latency.measure, "measure_pair")):
        monkeypatch.setattr(module, name, refuse)
    _, there = tables
    before = there.read_bytes()
    m = build("device-table", tables)
    assert type(m) is DeviceTableLatency and m.fingerprint["cpu_model"] == "elsewhere"
    assert m.latency_ms(SMALL) > 0
    with pytest.raises(MissingEntryError, match=r"another device.*lacks \d+ entr.*e\.g\. (bneck|mbconv|conv|dsconv)"):
        m.latency_ms(ABSENT)
    assert m.measure_ms(SMALL) is None and m.ratio(SMALL, NARROW) is None
    with pytest.raises(LatencyError, match="another device"):
        m.calibrate_near([SMALL])
    assert there.read_bytes() == before


def test_a_local_table_opened_as_a_device_table_is_read_only(tables):
    here, _ = tables
    before = here.read_bytes()
    m = latency_model("device-table", lut_path=here, measure_config=FAST, resolution=RES)
    assert type(m) is DeviceTableLatency and not m.can_measure
    assert m.latency_ms(SMALL) == build("predicted", tables).latency_ms(SMALL)
    with pytest.raises(MissingEntryError, match="lacks"):
        m.latency_ms(ABSENT)
    assert here.read_bytes() == before


def test_table_calibrate_near_records_and_refits(tables, tmp_path):
    here, _ = tables
    path = tmp_path / "cal.sqlite"
    shutil.copyfile(here, path)
    m = TableLatency(LatencyTable(path, FAST), RES)
    assert not m.table.calibration.fitted
    measured, cal = m.calibrate_near([SMALL.replace(resolution=224), NARROW])  # measured at RES
    assert len(measured) == 2 and all(math.isfinite(x) and x > 0 for x in measured)
    assert cal.fitted and cal.n_points == 2 and m.table.calibration == cal
    assert m.table.predict(SMALL).calibrated


# ------------------------------------------------------------------------------------------------
# The factory and the analytic model
# ------------------------------------------------------------------------------------------------


def test_factory_builds_each_kind_once_per_process(tables):
    here, there = tables
    t = latency_model("predicted", lut_path=here, measure_config=FAST, resolution=RES)
    assert type(t) is TableLatency and t.can_measure
    assert latency_model("predicted", lut_path=here, measure_config=FAST, resolution=RES) is t
    wide = latency_model("predicted", lut_path=here, measure_config=FAST, resolution=64)
    assert wide is not t and wide.table is t.table  # one table per file: one calibration in memory
    assert type(latency_model("predicted", lut_path=there, measure_config=FAST, resolution=RES)) is DeviceTableLatency
    assert type(latency_model("measured", measure_config=FAST, resolution=RES)) is MeasuredLatency
    assert type(latency_model("analytic", resolution=RES)) is AnalyticLatency
    with pytest.raises(LatencyError, match="existing table"):
        latency_model("device-table", lut_path=here.parent / "none.sqlite", measure_config=FAST)
    with pytest.raises(ValueError, match="unknown latency model 'bogus'; known: predicted, measured"):
        latency_model("bogus")


def test_analytic_model_is_the_stand_in_latency():
    a1 = references.get("mnasnet_a1")
    assert AnalyticLatency(224).latency_ms(a1) == analytic_latency_ms(a1) == pytest.approx(78, abs=2)
    assert AnalyticLatency(RES).latency_ms(a1) == analytic_latency_ms(a1.replace(resolution=RES))


# ------------------------------------------------------------------------------------------------
# The consumers' thin functions (evaluation.evaluate)
# ------------------------------------------------------------------------------------------------


def test_eval_config_latency_modes_go_through_the_interface(tables):
    from evaluation import configs
    from evaluation.evaluate import EvalConfig, candidate_latency, latency_table
    from evaluation.evaluate import latency_model as eval_model

    here, _ = tables
    base = {"lut_path": str(here), "measure": FAST.to_dict(), "deploy_resolution": RES}
    predicted = configs.from_dict(EvalConfig, {**base, "latency": "predicted"}, where="config.json")  # an old run's
    assert type(eval_model(predicted)) is TableLatency and latency_table(predicted) is eval_model(predicted).table
    pred, meas = candidate_latency(SMALL, predicted)
    assert meas is None and pred == build("predicted", tables).latency_ms(SMALL)
    pred, meas = candidate_latency(SMALL, EvalConfig(**base, latency="measured"))
    assert pred is None and meas > 0
    pred, meas = candidate_latency(SMALL, EvalConfig(**base, latency="analytic"))
    assert meas is None and pred == analytic_latency_ms(SMALL)
    assert type(eval_model(predicted, "measured")) is MeasuredLatency
