"""A NaN loss, an exploding loss, or a model whose export fails marks that trial failed with
the reason, and the search goes on. The faults are real (a NaN weight, weights ×1e4, the exporter given
a wrong input shape), switched on per architecture by ``HWNAS_INJECT_FAULT`` (see evaluation.evaluate)."""

from __future__ import annotations

import optuna
import pytest

from evaluation.evaluate import FAULT_ENV
from nas.search import run_search
from nas.searchers import distributions
from search_spaces.spaces import get_space
from tests.reliability.conftest import check_run_dir_intact, needs_fmnist, read_csv, tiny_search

pytestmark = [needs_fmnist, pytest.mark.slow]


def random_proposals(space, seed: int, n: int) -> list[str]:
    """Arch ids the ``random`` searcher proposes first (Optuna's RandomSampler, same seed, same order)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.decode(study.ask(distributions(space)).params).arch_id for _ in range(n)]


def test_numerical_and_export_faults_fail_only_their_trial(tmp_path, monkeypatch, no_leftover_processes):
    cfg = tiny_search(tmp_path / "run", trials=5, seeds=False, seed=7, top_k=1)
    space = get_space(cfg.space, resolution=cfg.eval.deploy_resolution, in_channels=1, num_classes=10)
    ids = random_proposals(space, cfg.seed, 5)
    assert len(set(ids)) == 5
    faults = ["nan-weights", "huge-weights", "export"]
    monkeypatch.setenv(FAULT_ENV, ",".join(f"{f}:{i}" for f, i in zip(faults, ids)))

    out = run_search(cfg, echo=None)

    rows = read_csv(tmp_path / "run" / "trials.csv")
    assert [r["arch_id"] for r in rows] == ids, "the searcher proposed other architectures than predicted"
    assert [r["state"] for r in rows] == ["FAIL", "FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    nan, huge, export = (rows[i]["error"] for i in range(3))
    assert nan == "training diverged at step 0: training loss is nan"
    assert huge.startswith("training diverged at step 0: training loss is ") and "nan" not in huge
    assert export.startswith("RuntimeError: ") and "channels" in export and "\n" not in export
    assert all(r["accuracy"] == "" and r["reward"] == "" for r in rows[:3])
    assert all(float(r["accuracy"]) >= 0 and float(r["reward"]) > 0 for r in rows[3:])
    assert (out.completed, out.failed) == (2, 3)
    assert out.found is not None and out.found_metrics["trial"] in (3, 4)
    files = check_run_dir_intact(tmp_path / "run")
    assert "found.json" in files and "found.pt" in files
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("FAILED: ") == 3 and "[5/5]" in log
