"""NetAdapt end to end: real data, real training, real Ray and ONNX Runtime, at tiny budgets.

The module fixture chains the two commands as a user does: a tiny ``nas search``, then a refinement
of its ``found.json`` with its ``found.pt``.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluation.evaluate import EvalConfig, WeightsError, load_weights
from nas.search import SearchConfig, run_search
from netadapt.refine import RefineConfig, RefineError, run_refine
from search_spaces import load
from search_spaces.builder import build_model
from tests.conftest import seed_table
from tests.reliability.procs import kill_after_line

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")
FAST_MEASURE = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2, "sessions": 1, "min_pairs": 5,
                "max_pairs": 40}


def tiny_eval(lut: Path) -> EvalConfig:
    return EvalConfig(holdout=300, train_subset=1000, train={"steps": 4, "batch_size": 32, "threads": 1},
                      deploy_resolution=64, measure=FAST_MEASURE, lut_path=str(lut))


def tiny_refine(run_dir: Path, lut: Path, **changes) -> RefineConfig:
    base = dict(run_dir=str(run_dir), arch="mobilenetv3_small", reduction=0.06, steps=3, pretrain_epochs=0.02,
                final_epochs=0.02, eval=tiny_eval(lut))
    return RefineConfig(**{**base, **changes})


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def work(module_cache, calibrated_table, shared_ray):
    """The module's folder, its table ``t.sqlite`` calibrated already (the session's copy: NetAdapt is tested
    here, not a first calibration); the module's in-process searches and refinements share one Ray."""
    seed_table(calibrated_table, module_cache / "t.sqlite")
    return module_cache


@pytest.fixture(scope="module")
def refined(work):
    """nas search (2 trials) → netadapt refine --arch found.json --weights found.pt --reduction 0.06."""
    lut = work / "t.sqlite"
    search = SearchConfig(run_dir=str(work / "search"), space="mobilenetv3_small", searcher="random", trials=2,
                          target_ms=1.0, top_k=1, eval=tiny_eval(lut))
    run_search(search, echo=None)
    found = work / "search" / "found.json"
    cfg = tiny_refine(work / "refine", lut, arch=str(found), weights=str(work / "search" / "found.pt"))
    lines: list[str] = []
    out = run_refine(cfg, echo=lines.append)
    return cfg, out, lines


def test_refinement_meets_the_target_and_writes_a_complete_run_directory(refined):
    cfg, out, lines = refined
    run = Path(cfg.run_dir)
    for name in ("config.json", "state.json", "trajectory.csv", "refined.json", "refined.pt", "refined.onnx",
                 "final_metrics.json", "baseline.json", "start.json", "log.txt", "weights/start.pt"):
        assert (run / name).exists(), name
    m = out.metrics
    state = json.loads((run / "state.json").read_text())
    assert state["basis"] == "measured"  # this machine measures: the target is checked on the device
    assert m["target_met"] and state["current"]["latency_measured_ms"] <= m["target_ms"] < state["l0_measured_ms"]
    assert m["target_ms"] == pytest.approx(0.94 * state["l0_measured_ms"])
    assert m["refined"]["madds"] < m["start"]["madds"]
    for part in ("start", "refined", "baseline"):
        assert 0 <= m[part]["accuracy"] <= 1 and 0 <= m[part]["test_accuracy"] <= 1
    # one basis for every latency of the run: the start's measurement that set the target; result and baseline
    # are measured against the start at the end (interleaved ratios), never by a second, separate measurement
    assert m["start"]["latency_measured_ms"] == state["l0_measured_ms"]
    for part in ("refined", "baseline"):
        low, high = m[part]["ratio_to_start_ci"]
        assert 0 < low <= m[part]["ratio_to_start"] <= high
        assert m[part]["latency_measured_ms"] == pytest.approx(m[part]["ratio_to_start"] * state["l0_measured_ms"])
    assert 0 < m["baseline"]["width_multiplier"] < 1
    refined_spec = load(run / "refined.json")
    assert refined_spec.arch_id == m["refined"]["arch_id"]
    build_model(refined_spec).load_state_dict(torch.load(run / "refined.pt", weights_only=True))
    assert any(line.startswith("iteration 1:") for line in lines)


def test_trajectory_keeps_the_best_slope_and_every_proposal_cuts_delta(refined):
    cfg, out, _ = refined
    rows = read_csv(Path(cfg.run_dir) / "trajectory.csv")
    assert rows[0]["kind"] == "start" and rows[0]["chosen"] == "True"
    delta = json.loads((Path(cfg.run_dir) / "state.json").read_text())["delta_ms"]
    iterations = sorted({int(r["iteration"]) for r in rows if r["iteration"] != "0"})
    assert iterations == list(range(1, out.metrics["iterations"] + 1)) and iterations
    previous = float(rows[0]["latency_pred_ms"])
    for k in iterations:
        it = [r for r in rows if int(r["iteration"]) == k]
        chosen = [r for r in it if r["chosen"] == "True"]
        assert len(chosen) == 1
        ok = [r for r in it if not r["error"]]
        assert float(chosen[0]["slope"]) == max(float(r["slope"]) for r in ok)
        for r in it:
            assert float(r["delta_latency_pred_ms"]) <= -delta + 1e-9
            assert r["kind"] in ("expansion", "bottleneck", "head") and int(r["new_width"]) < int(r["old_width"])
            assert float(r["latency_pred_ms"]) == pytest.approx(previous + float(r["delta_latency_pred_ms"]))
        assert chosen[0]["latency_measured_ms"]  # the chosen step is measured against its parent
        previous = float(chosen[0]["latency_pred_ms"])


def test_resuming_a_finished_refinement_changes_nothing(refined):
    cfg, out, _ = refined
    run = Path(cfg.run_dir)
    before = (run / "trajectory.csv").read_text()
    again = run_refine(cfg, resume=True, echo=None)
    assert again.metrics == out.metrics and (run / "trajectory.csv").read_text() == before


def test_impossible_and_already_met_targets_are_clear_errors(work):
    lut = work / "t.sqlite"
    with pytest.raises(RefineError, match="cannot be reached"):
        run_refine(tiny_refine(work / "r1", lut, reduction=None, target_ms=1e-4), echo=None)
    with pytest.raises(RefineError, match="already meets the target"):
        run_refine(tiny_refine(work / "r2", lut, reduction=None, target_ms=1e4), echo=None)
    with pytest.raises(RefineError, match="exactly one"):
        run_refine(tiny_refine(work / "r3", lut, target_ms=1.0), echo=None)
    with pytest.raises(RefineError, match="fraction"):
        run_refine(tiny_refine(work / "r4", lut, reduction=1.5), echo=None)


def test_weights_of_another_network_are_refused(work, refined):
    cfg, _, _ = refined
    narrower = str(Path(cfg.run_dir) / "refined.pt")
    with pytest.raises(RefineError, match="do not fit"):
        run_refine(tiny_refine(work / "r5", work / "t.sqlite", arch=cfg.arch, weights=narrower), echo=None)
    with pytest.raises(RefineError, match="1000 classes"):  # a reference for ImageNet, weights for 10 classes
        run_refine(tiny_refine(work / "r6", work / "t.sqlite", weights=narrower), echo=None)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_a_malicious_checkpoint_does_not_run_code(tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(pickle.dumps({"layers.0.conv.0.weight": _Exploit()}))
    with pytest.raises(WeightsError, match="weights-only"):
        load_weights(bad)
    assert not _Exploit.marker.exists()
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights(tmp_path / "missing.pt")


def test_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    for args in (["--arch", "no_such_net", "--reduction", "0.2"], ["--arch", "mobilenetv3_small", "--reduction", "2"],
                 ["--resume", str(tmp_path)]):
        p = subprocess.run([sys.executable, "-m", "hwnas.cli_netadapt", "refine", *args,
                            "--run-dir", str(tmp_path / "r")],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_refine_reads_the_data_through_the_public_split(tmp_path):
    from evaluation import evaluate
    from netadapt.refine import _train_size

    cfg = tiny_refine(tmp_path / "run", tmp_path / "t.sqlite")
    data, train_idx, val_idx = evaluate.dataset_split(cfg.eval)
    assert len(val_idx) == 300 and len(train_idx) == 1000 and not set(train_idx) & set(val_idx)
    assert evaluate.dataset_split(cfg.eval)[0] is data  # loaded once per process
    assert _train_size(cfg) == 1000
    assert not hasattr(evaluate, "_dataset")


def test_resume_with_a_corrupt_run_file_names_the_file(tmp_path):
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    run = tmp_path / "run"
    run.mkdir()
    config = json.dumps({"refine": tiny_refine(run, tmp_path / "t.sqlite").to_dict()})
    cases = [({"config.json": '{"refine": {'}, "config.json is not valid JSON (line 1 col 13)"),
             ({"config.json": "[]"}, "config.json holds no refinement configuration"),
             ({"config.json": config, "state.json": '{"stage": "iter'}, "state.json is not valid JSON (line 1 col 11)"),
             ({"config.json": config, "state.json": b"\xff\xfe\x00garbage"}, "state.json is not valid JSON"),
             ({"config.json": config, "state.json": "{}"}, "state.json holds no refinement state")]
    for files, hint in cases:
        for name, text in files.items():
            (run / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        p = subprocess.run([sys.executable, "-m", "hwnas.cli_netadapt", "refine", "--resume", str(run)],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 2, p.stderr
        assert p.stderr.startswith("netadapt: error: ") and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert f"{run}/{hint}" in p.stderr, p.stderr


@pytest.mark.slow
def test_killed_mid_iteration_then_resumed_loses_nothing(tmp_path):
    """SIGKILL the driver while iteration 2's proposals train; --resume finishes with a consistent trajectory."""
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    run = tmp_path / "run"
    args = [sys.executable, "-m", "hwnas.cli_netadapt", "refine", "--arch", "mobilenetv3_small", "--reduction", "0.08",
            "--steps", "30", "--pretrain-epochs", "0.02", "--final-epochs", "0.02", "--holdout", "300",
            "--train-subset", "1000", "--batch-size", "32", "--deploy-resolution", "64", "--lut",
            str(tmp_path / "t.sqlite"), "--run-dir", str(run), "--no-report", "--no-baseline"]
    kill_after_line(args, env, "iteration 1:", timeout_s=600)  # iteration 2 is training now
    state = json.loads((run / "state.json").read_text())
    assert state["stage"] == "iterate" and state["iteration"] >= 1
    done_rows = read_csv(run / "trajectory.csv")
    p = subprocess.run([sys.executable, "-m", "hwnas.cli_netadapt", "refine", "--resume", str(run), "--no-report"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = read_csv(run / "trajectory.csv")
    assert rows[: len(done_rows)] == done_rows  # finished iterations kept as they were
    its = [int(r["iteration"]) for r in rows if r["chosen"] == "True"]
    assert its == list(range(len(its)))  # one chosen row per iteration, none twice
    for name in ("state.json", "final_metrics.json", "config.json"):
        json.loads((run / name).read_text())
    assert len(list((run / "weights").glob("iter_*.pt"))) == 1
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
