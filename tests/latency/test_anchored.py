"""Anchored measurement (:mod:`latency.anchored`): the stored reference, the ratio × reference number and its
two intervals, bad reference files, and ``nas latency measure --anchor``. Tiny networks at 32² and quick
measurement settings: behaviour, never timings."""

from __future__ import annotations

import dataclasses
import json

import pytest

from latency.anchored import anchor_reference, measure_anchored_one, reference_path
from latency.measure import LatencyError, MeasureConfig
from search_spaces import references
from search_spaces.export import export_onnx

FAST = MeasureConfig(warmup_min_s=0.0, min_runs=10, max_runs=200, time_cap_s=0.2, lock_timeout_s=120, sessions=3,
                     min_pairs=5, max_pairs=40)
SMALL = references.get("mobilenetv3_small").replace(resolution=32, num_classes=10, in_channels=1)
NARROW = references.get("mobilenetv3_small_050").replace(resolution=32, num_classes=10, in_channels=1)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_reference_is_measured_once_per_device_and_anchor_then_reused(cache):
    first = anchor_reference(SMALL, FAST)
    path = reference_path(SMALL, FAST)
    assert path.parent == cache / "anchors" and path.name.startswith(FAST.fingerprint().key)
    assert first.sessions == 3 and first.ci_low_ms <= first.median_ms <= first.ci_high_ms
    assert first.arch_id == SMALL.arch_id and first.fingerprint_key == FAST.fingerprint().key
    again = anchor_reference(SMALL, FAST)
    assert again == first  # read back, not measured again
    two_threads = dataclasses.replace(FAST, intra_op_threads=2)
    assert reference_path(SMALL, two_threads) != path  # another setting is another device: its own reference
    assert reference_path(NARROW, FAST) != path  # and another anchor
    renewed = anchor_reference(SMALL, FAST, remeasure=True)
    assert json.loads(path.read_text())["measured_at"] == renewed.measured_at


def test_an_anchored_number_is_the_ratio_times_the_reference_with_both_intervals(cache):
    ref = anchor_reference(SMALL, FAST)
    m = measure_anchored_one(export_onnx(NARROW), SMALL, FAST)
    assert m.reference == ref
    assert m.median_ms == pytest.approx(m.ratio * ref.median_ms)
    assert m.ratio_ci_low <= m.ratio <= m.ratio_ci_high
    assert m.relative_ci_low_ms == pytest.approx(m.ratio_ci_low * ref.median_ms)
    assert m.relative_ci_high_ms == pytest.approx(m.ratio_ci_high * ref.median_ms)
    # the full interval adds the reference's own uncertainty: never narrower than the ratio's alone
    assert m.ci_low_ms <= m.relative_ci_low_ms + 1e-12 and m.ci_high_ms >= m.relative_ci_high_ms - 1e-12
    assert 0 < m.ratio < 1.5  # half the width of the anchor: not slower than it by half
    d = m.to_dict()
    assert d["reference"]["median_ms"] == ref.median_ms and "samples_a_ns" not in d["paired"]
    json.dumps(d)


def test_the_anchor_against_itself_is_a_ratio_near_one(cache):
    m = measure_anchored_one(export_onnx(SMALL), SMALL, FAST)
    assert 0.8 < m.ratio < 1.25


def test_an_unreadable_reference_is_an_error_naming_the_file_never_replaced(cache):
    path = reference_path(SMALL, FAST)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(LatencyError, match="unreadable.*--remeasure-anchor"):
        anchor_reference(SMALL, FAST)
    assert path.read_text() == "{not json"


def test_cli_measure_with_an_anchor(cache, capsys):
    from hwnas.cli import main

    base = ["latency", "measure", "mobilenetv3_small_050", "--resolution", "32", "--in-channels", "1",
            "--num-classes", "10", "--latency-time-cap", "0.5"]
    assert main([*base, "--anchor", "mobilenetv3_small", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["median_ms"] == pytest.approx(out["ratio"] * out["reference"]["median_ms"])
    assert out["reference"]["anchor"] == "mobilenetv3_small" and out["arch"] == "mobilenetv3_small_050"
    assert main([*base, "--anchor", "mobilenetv3_small"]) == 0
    text = capsys.readouterr().out
    assert "anchored on mobilenetv3_small" in text and "× mobilenetv3_small's" in text
    for args, message in ((["--remeasure-anchor"], "--remeasure-anchor needs --anchor NAME"),
                          (["--anchor", "mobilenetv3_small", "--precision", "int8"], "--anchor measures fp32"),
                          (["--anchor", "mobilenetv3_smal"], "mobilenetv3_small")):
        assert main([*base, *args]) != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
