"""docs/API.md's example runs as written (real data, training, Ray and ONNX Runtime), and hwnas.api
exports what the document names."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import onnxruntime as ort
import pytest

import hwnas.api

DOC = Path(__file__).resolve().parents[2] / "docs" / "API.md"
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_name_the_document_lists_is_exported():
    first_cells = [line.split("|")[1] for line in DOC.read_text().split("## ")[0].splitlines()
                   if line.startswith("| `")]
    named = {n for cell in first_cells for n in re.findall(r"`([A-Za-z_]+)`", cell)}
    assert named and named <= set(hwnas.api.__all__), named - set(hwnas.api.__all__)
    for name in hwnas.api.__all__:
        assert getattr(hwnas.api, name) is not None


@pytest.mark.slow  # ≈ 3 min (a search, NetAdapt and training as written); `make test-all` runs it
@pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")
def test_the_example_runs_as_written(module_cache, monkeypatch):
    (code,) = _blocks()
    monkeypatch.chdir(module_cache)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {"__name__": "api_example"})
    text = out.getvalue()
    assert re.search(r"found mobilenetv3_small-evolution-trial\d+: accuracy 0\.\d+, \d+\.\d+ ms measured", text), text
    assert "target met: True" in text, text
    runs = module_cache / "runs" / "api-example"
    assert (runs / "report" / "report.html").stat().st_size > 10_000
    session = ort.InferenceSession(str(runs / "refined-224.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 1, 224, 224]
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("search/found.json", "search/trials.csv", "report/report.html"):  # atomic writes: a new file's mode
        assert os.stat(runs / name).st_mode & 0o777 == 0o666 & ~umask, name
