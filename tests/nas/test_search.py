"""The search loop end to end: real data, real training, real Ray, real ONNX Runtime — tiny budgets."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluation.evaluate import EvalConfig
from nas.search import SearchConfig, SearchError, run_search
from search_spaces import load
from search_spaces.builder import build_model
from tests.conftest import seed_default_table, seed_table

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")

FAST_MEASURE = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2, "sessions": 1}


def tiny(run_dir, **changes) -> SearchConfig:
    eval_cfg = EvalConfig(holdout=500, train_subset=1000, train={"steps": 4, "batch_size": 32, "threads": 1},
                          deploy_resolution=64, measure=FAST_MEASURE, lut_path=str(Path(run_dir).parent / "t.sqlite"))
    cfg = SearchConfig(run_dir=str(run_dir), space="mobilenetv3_small", searcher="random", trials=3, target_ms=1.0,
                       top_k=2, eval=eval_cfg)
    eval_changes = changes.pop("eval", {})
    return SearchConfig.from_dict({**cfg.to_dict(), **changes, "eval": {**eval_cfg.to_dict(), **eval_changes}})


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def seeded(tmp_path, calibrated_table):
    """``tiny(tmp_path / ...)``'s table, calibrated already (the session's copy): for tests of what a search
    does, not of its first calibration (test_search_writes_a_complete_run_directory keeps a fresh table)."""
    return seed_table(calibrated_table, tmp_path / "t.sqlite")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_search_writes_a_complete_run_directory(tmp_path, shared_ray):
    """A first search on a fresh table: it calibrates the table itself (the other tests here start calibrated)."""
    out = run_search(tiny(tmp_path / "run"), echo=None)
    run = tmp_path / "run"
    for name in ("config.json", "study.journal", "trials.csv", "pareto.csv", "found.json", "found_metrics.json",
                 "found.pt", "log.txt", "remeasured.json"):
        assert (run / name).exists(), name
    rows = read_csv(run / "trials.csv")
    assert len(rows) == 3 and all(r["state"] == "COMPLETE" for r in rows)
    assert rows[0]["b0.op"] and float(rows[0]["accuracy"]) >= 0 and float(rows[0]["latency_predicted_ms"]) > 0
    config = json.loads((run / "config.json").read_text())
    assert config["search"]["seed"] == 0 and config["environment"]["torch"] == torch.__version__
    low, high = config["latency_range_ms"]
    assert 0 < low < high
    found = load(run / "found.json")
    assert found.arch_id == out.found.arch_id and found.num_classes == 10 and found.in_channels == 1
    model = build_model(found)
    model.load_state_dict(torch.load(run / "found.pt", weights_only=True))
    metrics = json.loads((run / "found_metrics.json").read_text())
    assert metrics["latency_measured_ms"] > 0 and metrics["arch_id"] == found.arch_id
    # the winner was re-measured; the seed (the first trial) was the space's known architecture
    assert str(metrics["trial"]) in json.loads((run / "remeasured.json").read_text())
    assert out.completed == 3 and out.failed == 0


def test_existing_run_is_never_overwritten_and_resume_extends_it(tmp_path, seeded, shared_ray):
    run = tmp_path / "run"
    run_search(tiny(run, trials=2), echo=None)
    first = read_csv(run / "trials.csv")
    with pytest.raises(SearchError, match="not empty.*--resume"):
        run_search(tiny(run, trials=2), echo=None)
    run_search(tiny(run, trials=3), resume=True, echo=None)
    rows = read_csv(run / "trials.csv")
    assert len(rows) == 3
    for before, after in zip(first, rows[:2]):  # finished trials are kept, not re-run
        assert (before["arch_id"], before["accuracy"]) == (after["arch_id"], after["accuracy"])


def test_diverging_candidates_fail_their_trial_not_the_search(tmp_path, seeded, shared_ray):
    cfg = tiny(tmp_path / "run", trials=2, eval={"train": {"steps": 4, "batch_size": 32, "threads": 1, "lr": 1e9}})
    out = run_search(cfg, echo=None)
    rows = read_csv(tmp_path / "run" / "trials.csv")
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]
    assert all("diverged" in r["error"] for r in rows)
    assert out.found is None and not (tmp_path / "run" / "found.json").exists()


@pytest.mark.parametrize(
    "args,hint",
    [
        (["--target-ms", "-3"], "positive"),
        (["--target-like", "mobilenetv9"], "unknown architecture"),
        (["--target-ms", "5", "--data-dir", "/nonexistent/fmnist"], "apt-get install dataset-fashion-mnist"),
        (["--target-ms", "5", "--trials", "0"], "at least 1"),
    ],
)
def test_bad_options_give_one_line_errors(tmp_path, args, hint):
    nas = str(Path(sys.executable).with_name("nas"))
    proc = subprocess.run([nas, "search", "--run-dir", str(tmp_path / "run"), *args], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "HWNAS_CACHE_DIR": str(tmp_path / "c")})
    assert proc.returncode == 2, proc.stderr
    assert hint in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_proposed_duplicate_reuses_the_earlier_result(tmp_path, seeded, shared_ray):
    # Enqueue the first trial's decisions again, as a searcher might propose them.
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from evaluation.rundir import STUDY_FILE

    cfg = tiny(tmp_path / "run", trials=1)
    run_search(cfg, echo=None)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "run" / STUDY_FILE)))
    study = optuna.load_study(study_name="search", storage=storage)
    study.enqueue_trial(study.trials[0].params)
    run_search(tiny(tmp_path / "run", trials=2), resume=True, echo=None)
    rows = read_csv(tmp_path / "run" / "trials.csv")
    assert rows[1]["duplicate_of"] == "0" and rows[1]["accuracy"] == rows[0]["accuracy"]
    assert rows[1]["arch_id"] == rows[0]["arch_id"] and float(rows[1]["train_s"]) == 0.0


def test_search_and_refine_log_through_one_helper(tmp_path):
    import nas.search
    import netadapt.refine
    from evaluation.rundir import log_line

    echoed = []
    log_line(tmp_path, "first", echoed.append)
    log_line(tmp_path, "second", None)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d first", lines[0]) and lines[1].endswith(" second") and len(lines) == 2
    assert echoed == ["first"]
    assert netadapt.refine.log_line is log_line
    assert not hasattr(nas.search, "_log") and not hasattr(netadapt.refine, "_log")


def test_measured_latency_search_logs_only_what_it_knows(tmp_path, shared_ray):
    lines: list[str] = []
    run_search(tiny(tmp_path / "run", trials=1, top_k=1, target_ms=5.0, eval={"latency": "measured"}),
               echo=lines.append)
    remeasured = [line for line in lines if line.startswith("re-measured trial")]
    assert remeasured and not any("predicted" in line for line in remeasured), remeasured
    assert "nan" not in (tmp_path / "run" / "log.txt").read_text()


def test_a_failed_start_leaves_no_run_directory_behind(tmp_path, monkeypatch):
    import evaluation.execution

    def no_ray(**kwargs):
        raise RuntimeError("Ray did not start")

    monkeypatch.setattr(evaluation.execution, "RayPool", no_ray)  # fails after config.json, log.txt and the journal
    cfg = tiny(tmp_path / "runs" / "run", target_ms=5.0, eval={"latency": "measured"})
    with pytest.raises(RuntimeError, match="Ray did not start"):
        run_search(cfg, echo=None)
    assert not (tmp_path / "runs").exists()  # the run directory and the parent it created
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError, match="Ray did not start"):
        run_search(tiny(existing, target_ms=5.0, eval={"latency": "measured"}), echo=None)
    assert existing.is_dir() and not any(existing.iterdir())  # kept, without the failed start's files
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(SearchError, match="not empty"):
        run_search(tiny(existing, target_ms=5.0, eval={"latency": "measured"}), echo=None)
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


# The driver-killed-then-resumed test lives in tests/reliability/test_driver_killed.py.


def test_nas_search_command_end_to_end(tmp_path, calibrated_table):
    """The console script end to end; its default table (in HWNAS_CACHE_DIR) starts calibrated, as on a machine
    that searched before (a first calibration is test_search_writes_a_complete_run_directory's)."""
    import os

    seed_default_table(calibrated_table, tmp_path / "c")

    nas = str(Path(sys.executable).with_name("nas"))
    run = tmp_path / "run"
    proc = subprocess.run(
        [nas, "search", "--run-dir", str(run), "--space", "mobilenetv3_small", "--searcher", "tpe", "--reward", "hard",
         "--target-like", "mobilenetv3_small_050", "--trials", "2", "--steps", "4", "--batch-size", "32",
         "--holdout", "500", "--train-subset", "1000", "--deploy-resolution", "64", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HWNAS_CACHE_DIR": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["completed"] == 2 and out["found"]["arch_id"] == load(run / "found.json").arch_id
    config = json.loads((run / "config.json").read_text())
    assert config["search"]["alpha"] == 0.0 and config["search"]["beta"] == -1.0
    assert config["search"]["eval"]["deploy_resolution"] == 64 and config["search"]["eval"]["train"]["steps"] == 4
