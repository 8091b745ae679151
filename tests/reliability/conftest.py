"""Shared pieces of the fault-injection tests (issue 7): CLI runner, tiny search configs, run-dir checks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.evaluate import EvalConfig
from nas.search import SearchConfig
from tests.reliability import procs

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")
NAS = str(Path(sys.executable).with_name("nas"))
FAST_MEASURE = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2, "sessions": 1}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own latency tables, locks and caches."""
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HWNAS_DEBUG", raising=False)
    monkeypatch.delenv("HWNAS_INJECT_FAULT", raising=False)


@pytest.fixture
def no_leftover_processes():
    """Processes this test started (Ray's included) are gone at the end; stragglers are killed, and reported."""
    before = procs.descendants(os.getpid())
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
    started = {p: t for p, t in procs.descendants(os.getpid()).items() if before.get(p) != t}
    left = procs.wait_gone(started, 30)
    procs.kill_all(left)
    assert not left, f"left running: {[procs.cmdline(p)[:60] for p in left]}"


def nas(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([NAS, *args], capture_output=True, text=True, timeout=timeout, env=full_env)


def nas_many(commands: list[list[str]], env: dict | None = None, timeout: float = 300,
             parallel: int = 4) -> list[subprocess.CompletedProcess]:
    """Run several ``nas`` commands, ``parallel`` at a time (each is mostly interpreter start-up)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda args: nas(*args, env=env, timeout=timeout), commands))


def one_line_error_problems(proc: subprocess.CompletedProcess, *hints: str) -> list[str]:
    """What is wrong with ``proc`` as a clean failure (empty: nothing)."""
    problems = []
    if proc.returncode == 0:
        problems.append("exit status 0")
    if proc.stderr.count("\n") != 1 or not proc.stderr.startswith("nas: error: "):
        problems.append(f"stderr is not one error line: {proc.stderr[-500:]!r}")
    if "Traceback" in proc.stderr + proc.stdout:
        problems.append("a traceback was printed")
    problems += [f"{hint!r} not in {proc.stderr.strip()!r}" for hint in hints if hint not in proc.stderr]
    return problems


def assert_one_line_error(proc: subprocess.CompletedProcess, *hints: str) -> None:
    """Non-zero exit, exactly one line on stderr naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout[-1000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("nas: error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    for hint in hints:
        assert hint in proc.stderr, proc.stderr


def tiny_eval(lut: Path | None = None, **changes) -> EvalConfig:
    """Proxy training of a few steps on a few hundred images; latency measured (no table to calibrate)
    unless a table is given."""
    base = dict(holdout=200, train_subset=400, train={"steps": 2, "batch_size": 16, "threads": 1},
                latency="measured" if lut is None else "predicted", lut_path=str(lut) if lut else None,
                deploy_resolution=32, measure=FAST_MEASURE)
    return EvalConfig(**{**base, **changes})


def tiny_search(run_dir: Path, lut: Path | None = None, eval_changes: dict | None = None, **changes) -> SearchConfig:
    base = dict(run_dir=str(run_dir), space="mobilenetv3_small", searcher="random", trials=3, target_ms=5.0,
                top_k=1, workers=1, eval=tiny_eval(lut, **(eval_changes or {})))
    return SearchConfig(**{**base, **changes})


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_run_dir_intact(run: Path) -> dict:
    """Every file of a run directory is whole: CSVs parse with a consistent header, JSON files parse,
    the study journal loads, weights load weights-only. Returns {file name: parsed content}."""
    import optuna
    import torch
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from evaluation.rundir import STUDY_FILE
    from nas.search import STUDY_NAME

    assert not list(run.glob(".*.tmp")), "a temporary file of an atomic write was left behind"
    parsed = {}
    for path in sorted(run.rglob("*")):
        if path.is_dir() or path.name == "log.txt":
            continue
        rel = str(path.relative_to(run))
        if path.suffix == ".csv":
            text = path.read_text()
            rows = read_csv(path)
            if text:
                width = len(next(csv.reader([text.splitlines()[0]])))
                assert all(len(r) == width and None not in r for r in rows), rel
                assert text.endswith("\n"), rel
            parsed[rel] = rows
        elif path.suffix == ".json":
            parsed[rel] = json.loads(path.read_text())
        elif path.suffix == ".pt":
            parsed[rel] = torch.load(path, weights_only=True)
        elif path.name == STUDY_FILE:
            assert path.read_bytes().endswith(b"\n"), "torn last record in the study journal"
            storage = JournalStorage(JournalFileBackend(str(path)))
            parsed[rel] = optuna.load_study(study_name=STUDY_NAME, storage=storage).get_trials(deepcopy=False)
    return parsed


def pytest_terminal_summary(terminalreporter):
    fuzz = sys.modules.get("tests.reliability.test_fuzz_spec")
    FUZZ_CASES = getattr(fuzz, "FUZZ_CASES", None)
    if FUZZ_CASES:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(FUZZ_CASES.items()))
        terminalreporter.write_line(f"spec-loader fuzz cases run: {sum(FUZZ_CASES.values())} ({parts})")
