"""Fixtures shared by the test packages."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """A fresh folder for the module, with HWNAS_CACHE_DIR pointing inside it (restored afterwards)."""
    tmp = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWNAS_CACHE_DIR", str(tmp / "cache"))
        yield tmp
