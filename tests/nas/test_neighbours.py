"""Searches beside each other: a second process that needs the calibration of a table another process is
calibrating waits for it and uses its calibration (instead of measuring the same networks again and
storing a different fit). Real processes, a real table, real entry measurements; the "first process"
(the test) stores its calibration points without timing CALIBRATION_NETWORKS whole networks (their ONNX
export alone would take half a minute here)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from evaluation.evaluate import EvalConfig, latency_model
from nas.search import CALIBRATION_NETWORKS, SearchConfig, ensure_calibration
from nas.searchers import metric_names
from search_spaces.spaces import get_space

FAST_MEASURE = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2, "sessions": 1}
SECOND = """
import sys
from evaluation.evaluate import EvalConfig
from nas.search import SearchConfig, ensure_calibration
from search_spaces.spaces import get_space
cfg = SearchConfig(run_dir="unused", space="mobilenetv3_small", target_ms=5.0,
                   eval=EvalConfig(lut_path=sys.argv[1], deploy_resolution=32, measure={measure!r}))
space = get_space("mobilenetv3_small", resolution=32, in_channels=1, num_classes=10)
ensure_calibration(cfg, space, echo=lambda line: print(line, flush=True))
print("done", flush=True)
""".format(measure=FAST_MEASURE)


def _neighbours_of_the_seed(space, n: int) -> list:
    """``n`` architectures that each change one decision of the space's seed: few distinct layers to
    measure (the test's cost), distinct networks all the same."""
    seed = next(iter(space.seeds().values()))
    specs: dict = {}
    for d in space.decisions():
        for choice in d.choices:
            spec = space.decode({**seed, d.name: choice})
            if choice != seed[d.name] and spec.arch_id not in specs:
                specs[spec.arch_id] = spec
                break
        if len(specs) == n:
            return list(specs.values())
    raise AssertionError("the space has too few single-decision neighbours")


def test_a_second_process_waits_for_the_calibration_and_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))
    lut = tmp_path / "t.sqlite"
    cfg = SearchConfig(run_dir="unused", space="mobilenetv3_small", target_ms=5.0,
                       eval=EvalConfig(lut_path=str(lut), deploy_resolution=32, measure=FAST_MEASURE))
    table = latency_model(cfg.eval).table
    space = get_space("mobilenetv3_small", resolution=32, in_channels=1, num_classes=10)
    with table.calibration_lock():  # this process is "the first search", calibrating
        second = subprocess.Popen([sys.executable, "-c", SECOND, str(lut)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        first_line = second.stdout.readline()  # blocks until the second process says something
        assert first_line.startswith("waiting for another process that is calibrating the latency table"), first_line
        for spec in _neighbours_of_the_seed(space, CALIBRATION_NETWORKS):
            table.add_point(spec, 0.9 * table.predict(spec).raw_sum_ms)  # entries measured here
        table.fit()
        time.sleep(0.5)  # the second one keeps waiting while the lock is held
        assert second.poll() is None
    rest = second.communicate(timeout=300)[0]
    assert second.returncode == 0, rest
    assert "using the calibration of" in rest, rest
    assert not any(line.startswith("calibrating") for line in rest.splitlines()), rest
    stored = type(table)(lut, table.cfg).calibration  # what the file holds now
    assert stored.n_points == CALIBRATION_NETWORKS  # the second process measured no network
    # a calibrated table with its entries: the next search measures nothing and says nothing
    lines: list[str] = []
    ensure_calibration(cfg, space, echo=lines.append)
    assert lines == []


def test_metric_names_follow_what_the_study_is_told():
    assert metric_names("rl") == ["reward"] and metric_names("nsga2") == ["accuracy", "latency_ms"]
    with pytest.raises(ValueError, match="did you mean 'nsga2'"):
        metric_names("nsga")


def test_a_table_calibrated_on_fewer_networks_is_topped_up_with_new_ones(tmp_path, monkeypatch):
    """A table from an older default (fewer calibration networks) gets only the missing ones measured,
    never its own networks again; then it is complete and the next search measures nothing."""
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))
    cfg = SearchConfig(run_dir="unused", space="mobilenetv3_small", target_ms=5.0,
                       eval=EvalConfig(lut_path=str(tmp_path / "t.sqlite"), deploy_resolution=32,
                                       measure=FAST_MEASURE))
    space = get_space("mobilenetv3_small", resolution=32, in_channels=1, num_classes=10)
    table = latency_model(cfg.eval).table
    seed = space.decode(next(iter(space.seeds().values()))).replace(resolution=32)
    distinct = {s.arch_id: s for s in (seed, *_neighbours_of_the_seed(space, CALIBRATION_NETWORKS))}
    older = list(distinct.values())[:CALIBRATION_NETWORKS - 5]
    for spec in older:  # what an older default recorded: the seed first (the list starts with it), then others
        table.add_point(spec, 0.9 * table.predict(spec).raw_sum_ms)
    table.fit()
    before = {p["arch_id"]: p["measured_ms"] for p in table.store.points()}
    assert len(before) == CALIBRATION_NETWORKS - 5

    lines: list[str] = []
    ensure_calibration(cfg, space, echo=lines.append)
    assert any("on 5 whole networks" in line for line in lines), lines
    after = {p["arch_id"]: p["measured_ms"] for p in table.store.points()}
    assert len(after) == CALIBRATION_NETWORKS and type(table)(table.path, table.cfg).calibration.n_points == len(after)
    assert {k: after[k] for k in before} == before  # the recorded networks were not measured again

    lines.clear()
    ensure_calibration(cfg, space, echo=lines.append)
    assert not any(line.startswith("calibrating") for line in lines), lines
