"""Fixtures shared by the test packages."""

from __future__ import annotations

import os
import shutil
import tempfile

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
