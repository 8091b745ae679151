"""The device bundle: graphs without weights, filled on the device; a script that needs onnxruntime + numpy only."""

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from latency.device_lut import build_table, fill_weights, random_tensor, read_manifest, weights_filled
from latency.lut import WEIGHTS_INLINE_BYTES, export_bundle, layer_onnx, strip_weights
from latency.measure import LatencyError, MeasureConfig, measure_onnx, model_op_types
from latency.quantize import quantize_int8
from search_spaces import references, walk

FAST = MeasureConfig(warmup_min_s=0.0, min_runs=10, max_runs=200, time_cap_s=0.2, lock_timeout_s=120, sessions=2)
TINY = references.get("mobilenetv3_small").replace(resolution=32, num_classes=10)
# The widest MBConv layer of the network: big enough that its weights leave the graph.
BIG_KEY = max((layer.key for layer in walk(TINY)), key=lambda k: k.in_channels * k.expand_channels)


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path, monkeypatch):
    # Do not queue behind (or block) real measurements on this machine; the device script inherits it.
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


def _ort_outputs(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _input(model_bytes):
    dims = onnx.load_model_from_string(model_bytes).graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value or 1 for d in dims]
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


# -- op-type scan without the onnx package -------------------------------------------------------------


def test_model_op_types_matches_onnx_and_reads_subgraphs_and_functions():
    data = layer_onnx(BIG_KEY)
    assert model_op_types(data) == {n.op_type for n in onnx.load_model_from_string(data).graph.node}
    branch = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "b", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    call = helper.make_node("MyFn", ["y"], ["z"], domain="local")
    graph = helper.make_graph([node, call], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    fn = helper.make_function("local", "MyFn", ["a"], ["b"], [helper.make_node("QuantizeLinear", ["a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    model = helper.make_model(graph, functions=[fn], opset_imports=[helper.make_opsetid("", 17),
                                                                     helper.make_opsetid("local", 1)])
    assert model_op_types(model.SerializeToString()) == {"If", "Relu", "MyFn", "QuantizeLinear"}


@pytest.mark.parametrize("bad", [b"\x07garbage", b"\x3a\xff\xff\xff\xff\x0f", b"\x08\x07"])
def test_model_op_types_rejects_malformed_bytes(bad):
    with pytest.raises(LatencyError, match="cannot parse ONNX model"):
        model_op_types(bad)


# -- weights stripped at export, filled on the device --------------------------------------------------


def test_stripped_layer_is_small_and_runs_once_filled(tmp_path):
    data = layer_onnx(BIG_KEY)
    graph, weights = strip_weights(data, "layer.onnx.weights")
    assert weights is not None and len(graph) < 4096 < len(data)
    assert all(t["length"] >= WEIGHTS_INLINE_BYTES for t in weights["tensors"])
    assert weights["bytes"] >= sum(t["length"] for t in weights["tensors"])
    assert model_op_types(graph) == model_op_types(data)
    path = tmp_path / "layer.onnx"
    path.write_bytes(graph)
    with pytest.raises(Exception):  # noqa: B017 - ORT's own error type: the weights file is missing
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _input(data)
    with weights_filled(tmp_path, {"file": "layer.onnx", "weights": weights}) as model:
        assert (tmp_path / "layer.onnx.weights").stat().st_size == weights["bytes"]
        out = _ort_outputs(model, x)
        assert out.shape == _ort_outputs_bytes(data, x).shape and np.all(np.isfinite(out))
        assert measure_onnx(model, FAST).median_ms > 0
    assert not (tmp_path / "layer.onnx.weights").exists()  # one model's weights on disk at a time


def _ort_outputs_bytes(data, x):
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_small_model_keeps_its_weights_inline():
    data = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])])).SerializeToString()
    assert strip_weights(data, "w.weights") == (data, None)


def test_int8_model_keeps_scales_inline_and_runs_once_filled(tmp_path):
    fp32 = tmp_path / "layer.onnx"
    data = layer_onnx(BIG_KEY)
    fp32.write_bytes(data)
    x = _input(data)
    int8 = quantize_int8(fp32, [x, x * 0.5], tmp_path / "layer.int8.onnx")
    graph, weights = strip_weights(int8.read_bytes(), "q.onnx.weights")
    assert weights is not None
    # int8 weights and int32 biases leave; the per-channel float scales (over 1 KiB here) stay
    assert TensorProto.INT8 in {t["data_type"] for t in weights["tensors"]} <= {TensorProto.INT8, TensorProto.INT32}
    scales = [t for t in onnx.load_model_from_string(graph).graph.initializer if t.data_type == TensorProto.FLOAT]
    assert max(len(t.raw_data) for t in scales) >= WEIGHTS_INLINE_BYTES
    (tmp_path / "q.onnx").write_bytes(graph)
    with weights_filled(tmp_path, {"file": "q.onnx", "weights": weights}) as model:
        assert np.all(np.isfinite(_ort_outputs(model, x)))
        assert measure_onnx(model, MeasureConfig(**{**FAST.to_dict(), "precision": "int8"})).median_ms > 0


def test_random_tensor_types_and_scale():
    rng = np.random.default_rng(0)
    w = random_tensor(TensorProto.FLOAT, [64, 32, 3, 3], rng)
    assert w.dtype == np.float32 and w.size == 64 * 32 * 9
    assert w.std() == pytest.approx((2 / (32 * 9)) ** 0.5, rel=0.05)
    q = random_tensor(TensorProto.INT8, [1000], rng)
    assert q.dtype == np.int8 and q.min() < -100 and q.max() > 100
    assert random_tensor(TensorProto.INT32, [10], rng).dtype == np.int32
    with pytest.raises(ValueError, match="unsupported ONNX tensor type 8"):
        random_tensor(TensorProto.STRING, [1], rng)


def test_fill_weights_rejects_a_recipe_that_does_not_match_its_type(tmp_path):
    bad = {"file": "m.weights", "bytes": 8, "tensors": [{"name": "w", "offset": 0, "length": 8, "data_type": 1,
                                                         "dims": [4]}]}
    with pytest.raises(ValueError, match="'w' has 8 bytes in the manifest, 16 from its type"):
        fill_weights(tmp_path / "m.onnx", bad)


# -- the bundle and its script ------------------------------------------------------------------------

# Refuses every top-level import that is not the standard library, numpy, onnxruntime, their declared
# dependencies, or the bundle's own files: what a device with only `pip install onnxruntime numpy` has.
GUARD = textwrap.dedent('''
    import importlib.abc, importlib.metadata as md, os, re, sys
    bundle = os.path.realpath(sys.argv[1])
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "latency", "device_lut"}
    for dist in ("onnxruntime", "numpy"):
        for req in md.requires(dist) or []:
            if "extra ==" not in req:
                name = re.split(r"[ <>=;!~\\[]", req, 1)[0]
                allowed |= {m for m, ds in md.packages_distributions().items() if name in ds}
    allowed.discard("onnx")

    class Guard(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top not in allowed and not top.startswith("_"):
                raise ImportError(f"GUARD: device script imported {name}")
            if top == "latency" and "." not in name:
                for entry in sys.path:
                    if os.path.isfile(os.path.join(entry, "latency", "__init__.py")):
                        if os.path.realpath(entry) != bundle:
                            raise ImportError(f"GUARD: latency would come from {entry}, not the bundle")
                        break
            return None

    sys.meta_path.insert(0, Guard())
    import runpy
    sys.argv = [bundle + "/device_lut.py", bundle, "--out", sys.argv[2]]
    runpy.run_path(bundle + "/device_lut.py", run_name="__main__")
''')


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    keys = [layer.key for layer in walk(TINY)][:3]
    return export_bundle(keys, [TINY], tmp_path_factory.mktemp("b") / "bundle")


def _run_device(bundle_dir, out, cwd):
    return subprocess.run([sys.executable, "-I", "-c", GUARD, str(bundle_dir), str(out)], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def test_device_script_runs_with_onnxruntime_and_numpy_only(bundle, tmp_path):
    manifest = read_manifest(bundle)
    assert manifest["bundle_version"] == 2 and manifest["precision"] == "fp32"
    assert any(e["weights"] for e in manifest["entries"]) and manifest["networks"][0]["weights"]
    assert not list(bundle.rglob("*.weights"))
    out = tmp_path / "device.sqlite"
    proc = _run_device(bundle, out, tmp_path)
    assert proc.returncode == 0 and "GUARD" not in proc.stderr, proc.stderr[-3000:]
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == len(manifest["entries"])
        assert conn.execute("SELECT COUNT(*) FROM calibration_points").fetchone()[0] == 1
    assert not list(bundle.rglob("*.weights"))  # filled for each measurement, removed afterwards


def test_the_guard_refuses_onnx(bundle, tmp_path):
    # The guard must be able to fail: a device script that imports onnx is stopped.
    broken = tmp_path / "bundle"
    shutil.copytree(bundle, broken)
    script = broken / "device_lut.py"
    script.write_text(script.read_text().replace("import numpy as np\n", "import numpy as np\nimport onnx\n", 1))
    proc = _run_device(broken, tmp_path / "t.sqlite", tmp_path)
    assert proc.returncode != 0 and "GUARD: device script imported onnx" in proc.stderr


def test_a_version_1_bundle_with_weights_inline_still_builds(bundle, tmp_path):
    old = tmp_path / "bundle"
    shutil.copytree(bundle, old)
    manifest = read_manifest(old)
    for item in manifest["entries"] + manifest["networks"]:
        weights = item.pop("weights")
        if weights:
            fill_weights(old / item["file"], weights)
            onnx.save_model(onnx.load(str(old / item["file"])), str(old / item["file"]))  # weights back inline
            (old / item["file"]).with_name(weights["file"]).unlink()
    manifest["bundle_version"] = 1
    del manifest["precision"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert not list(old.rglob("*.weights"))
    store = build_table(old, tmp_path / "t.sqlite", FAST, log=lambda line: None)
    assert len(dict(store.all_entries())) == len(manifest["entries"]) and len(store.points()) == 1


def test_newer_bundle_is_refused_with_one_line(bundle, tmp_path):
    newer = tmp_path / "bundle"
    newer.mkdir()
    manifest = json.loads((bundle / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "bundle_version": 3}))
    proc = subprocess.run([sys.executable, str(bundle / "device_lut.py"), str(newer), "--out", str(tmp_path / "t")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is a version 3 bundle; this script reads versions 1, 2" in proc.stderr


@pytest.mark.slow
def test_device_script_in_a_clean_venv_with_only_onnxruntime_and_numpy(bundle, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "onnxruntime", "numpy"],
                         capture_output=True, text=True, timeout=1200)
    if pip.returncode != 0:
        pytest.skip(f"cannot install onnxruntime + numpy into a fresh venv (no package index?): {pip.stderr[-300:]}")
    listed = subprocess.run([str(venv / "bin" / "python"), "-c",
                             "import importlib.metadata as m; print(sorted(d.metadata['Name'].lower() "
                             "for d in m.distributions()))"], capture_output=True, text=True, check=True)
    assert "'onnx'" not in listed.stdout and "'torch'" not in listed.stdout, listed.stdout
    out = tmp_path / "device.sqlite"
    proc = subprocess.run([str(venv / "bin" / "python"), str(bundle / "device_lut.py"), str(bundle), "--out",
                           str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == len(read_manifest(bundle)["entries"])
