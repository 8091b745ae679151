"""`nas arch ...` end to end, through the installed console script."""

import json
import shutil
import subprocess
import sys

import onnxruntime as ort
import pytest

NAS = shutil.which("nas") or str(__import__("pathlib").Path(sys.executable).with_name("nas"))


def run(*args, ok=True):
    proc = subprocess.run([NAS, *args], capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("name,params", [("mobilenetv3_large", 5483032), ("mobilenetv3_small", 2542856)])
def test_show_json_reports_exact_params(name, params):
    out = json.loads(run("arch", "show", name, "--json").stdout)
    assert out["params"] == params
    assert out["layers"][0]["operator"] == "conv2d 3x3"
    assert sum(r["params"] for r in out["layers"]) == params


def test_show_prints_the_paper_table():
    text = run("arch", "show", "mobilenetv3_small").stdout
    assert "bneck 5x5" in text and "2,542,856" in text and "56.51M" in text


def test_list_names_every_reference():
    rows = json.loads(run("arch", "list", "--json").stdout)
    assert {"mobilenetv3_large", "mnasnet_a1", "mobilenetv2_035"} <= {r["name"] for r in rows}


def test_export_writes_a_runnable_onnx(tmp_path):
    out = tmp_path / "a1.onnx"
    run("arch", "export", "mnasnet_a1", "--onnx", str(out), "--resolution", "96", "--num-classes", "10")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, 96, 96]
    assert sess.get_outputs()[0].shape == [1, 10]


def test_spec_file_round_trip_through_the_cli(tmp_path):
    spec = json.loads(run("arch", "show", "mobilenetv3_small", "--json").stdout)["spec"]
    path = tmp_path / "found.json"
    path.write_text(json.dumps(spec))
    assert json.loads(run("arch", "show", str(path), "--json").stdout)["params"] == 2542856


@pytest.mark.parametrize(
    "content,hint",
    [("{", "malformed JSON"), ('{"stem": {"out_channels": 16}}', "missing required field"),
     (None, "no such file")],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, content, hint):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    proc = run("arch", "show", str(path), ok=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and hint in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_name_lists_known_ones():
    proc = run("arch", "show", "mobilenetv9", ok=False)
    assert proc.returncode == 2 and "mobilenetv3_large" in proc.stderr


def test_export_does_not_leave_partial_files_on_error(tmp_path):
    proc = run("arch", "export", "nope", "--onnx", str(tmp_path / "x.onnx"), ok=False)
    assert proc.returncode == 2 and not list(tmp_path.iterdir())
