"""Fixtures shared by the test packages."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def ray_temp_dir():
    """Ray's temporary files (session folders, logs, sockets) of every Ray the tests start — in-process,
    in `nas` subprocesses, `ray start` heads — go to one folder, removed at the end of the run.

    A local Ray of the framework removes its own folder when it shuts down; this catches the rest
    (killed drivers, cluster heads). The folder's path is short (``/tmp/hwnas-ray-XXXXXXXX``): Ray's
    socket paths inside it must stay under 108 bytes.
    """
    path = tempfile.mkdtemp(prefix="hwnas-ray-")
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = path
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """A fresh folder for the module, with HWNAS_CACHE_DIR pointing inside it (restored afterwards)."""
    tmp = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWNAS_CACHE_DIR", str(tmp / "cache"))
        yield tmp


@pytest.fixture(scope="module")
def shared_ray():
    """One local Ray instance for a module's in-process searches and refinements: each one's own ``RayPool``
    finds Ray running and leaves it running (as the stages of ``nas experiment run`` share one), instead of
    every test paying Ray's start and its workers' imports. Modules that test Ray's own life cycle (a
    cluster, a killed worker or driver) do not use it."""
    from evaluation.execution import RayPool

    pool = RayPool(num_cpus=os.cpu_count())
    try:
        yield pool
    finally:
        pool.shutdown()


# ---- one calibrated latency table for the tiny searches ------------------------------------------

#: The tiny searches' measurement settings (tests/nas/test_search.py and the modules built on it).
FAST_MEASURE = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2, "sessions": 1}


@pytest.fixture(scope="session")
def calibrated_table(tmp_path_factory):
    """A latency table calibrated once per test run, as a first ``mobilenetv3_small`` search at 64² on
    Fashion-MNIST (1 channel, 10 classes) calibrates its table: the same CALIBRATION_NETWORKS whole
    networks (seed 0) and the space's corners, through :func:`nas.search.ensure_calibration` itself.

    Modules whose searches only need *a* calibrated table copy it (:func:`seed_table`) instead of each
    timing the same whole networks again; a table's fingerprint holds the machine and ORT settings, not
    the run counts, so every tiny measure setting (and the CLI's default) can use it. Tests of a first
    calibration (its lines, its lock, a fresh cache) keep a fresh table: they do not use this fixture.
    """
    from evaluation.evaluate import EvalConfig
    from nas.search import CALIBRATION_NETWORKS, SearchConfig, ensure_calibration
    from search_spaces.spaces import get_space

    root = tmp_path_factory.mktemp("calibrated")
    path = root / "t.sqlite"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWNAS_CACHE_DIR", str(root / "cache"))
        cfg = SearchConfig(run_dir=str(root / "unused"), space="mobilenetv3_small", target_ms=1.0,
                           eval=EvalConfig(lut_path=str(path), deploy_resolution=64, measure=FAST_MEASURE))
        space = get_space("mobilenetv3_small", resolution=64, in_channels=1, num_classes=10)
        ensure_calibration(cfg, space)
    from latency.lut import LatencyTable
    from latency.measure import MeasureConfig

    assert LatencyTable(path, MeasureConfig(**FAST_MEASURE)).calibration.n_points >= CALIBRATION_NETWORKS
    return path


def seed_table(calibrated: os.PathLike, dest: os.PathLike) -> Path:
    """Copy the session's calibrated table to ``dest`` (parents created) and return ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(calibrated, dest)
    return dest


def seed_default_table(calibrated: os.PathLike, cache: os.PathLike) -> Path:
    """Copy the calibrated table to where a CLI run without ``--lut`` looks with ``HWNAS_CACHE_DIR=cache``:
    ``<cache>/lut/<fingerprint key>.sqlite`` (the default settings' key, the same machine fingerprint)."""
    from latency.lut import default_table_path
    from latency.measure import MeasureConfig

    old = os.environ.get("HWNAS_CACHE_DIR")
    os.environ["HWNAS_CACHE_DIR"] = str(cache)
    try:
        dest = default_table_path(MeasureConfig())
    finally:
        if old is None:
            os.environ.pop("HWNAS_CACHE_DIR", None)
        else:
            os.environ["HWNAS_CACHE_DIR"] = old
    return seed_table(calibrated, dest)
