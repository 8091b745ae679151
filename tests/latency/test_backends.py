"""Latency backends (:mod:`latency.backends`): fingerprints and tables per backend, the refusals, the
``command`` backend's faults (alone and inside a search), and ``ray-node`` on a real 2-node Ray cluster.

Real ONNX Runtime, real subprocesses, real Ray; tiny networks. These tests check behaviour, never timings.
"""

from __future__ import annotations

import csv
import sys
import threading
import time
from pathlib import Path

import onnxruntime
import pytest

from latency.backends import BackendFault, node_log, node_resource, parse_command_output
from latency.device import device_fingerprint
from latency.lut import LatencyTable, default_table_path
from latency.measure import LatencyError, MeasureConfig, measure_onnx
from latency.model import device_key, latency_model
from search_spaces import references
from search_spaces.export import export_onnx

FAST = {"warmup_min_s": 0.0, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.2, "sessions": 1}

# A stand-in for a device's benchmark tool: what it prints (or does) is its first argument.
FAKE_TOOL = """
import sys, time
from pathlib import Path
mode, onnx, shape = sys.argv[1], sys.argv[2], sys.argv[3]
assert Path(onnx).stat().st_size > 0, "no model file"
dims = [int(d) for d in shape.split(",")]


def calls_before():  # how often the tool ran before (a counter file beside it)
    counter = Path(sys.argv[0]).with_suffix(".count")
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    return n


if mode == "ok":
    print("2.5 ms")
elif mode == "cycle":  # 1, 5, 3, 1, ...: the median of three runs is 3
    print([1.0, 5.0, 3.0][calls_before() % 3])
elif mode == "corners-then-nan":  # the search's start times its space's two corner networks; then nan
    print(2.5 if calls_before() < 2 else "nan")
elif mode == "fail-first":  # the first call fails, every later one prints 2.5
    if calls_before() == 0:
        sys.exit("adb: device offline")
    print(2.5)
elif mode == "shape":  # the sum of the input's dimensions
    print(sum(dims))
elif mode == "nothing":
    pass
elif mode == "fail":
    print("adb: device offline", file=sys.stderr)
    sys.exit(3)
elif mode == "hang":
    time.sleep(30)
else:
    print(mode)
"""


def tiny(name: str = "mobilenetv3_small"):
    return references.get(name).replace(resolution=32, num_classes=10, in_channels=1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def onnx_bytes():
    return export_onnx(tiny())


def tool(tmp_path, mode: str, **fields) -> MeasureConfig:
    script = tmp_path / "fake_tool.py"
    script.write_text(FAKE_TOOL)
    return MeasureConfig(backend="command", command=f"{sys.executable} {script} {mode} {{onnx}} {{input_shape}}",
                         device="fake-phone", **{"command_repeats": 1, **fields})


# ------------------------------------------------------------------------------------------------
# Fingerprints, tables, refusals
# ------------------------------------------------------------------------------------------------


def test_the_default_fingerprint_and_table_are_unchanged():
    # the fingerprint the default settings had before there were backends: existing tables still open
    assert MeasureConfig().fingerprint() == device_fingerprint()
    assert MeasureConfig().fingerprint().provider == "CPUExecutionProvider"
    assert default_table_path(MeasureConfig()).name == f"{device_fingerprint().key}.sqlite"
    old = {k: v for k, v in MeasureConfig().to_dict().items() if not k.startswith(("command", "node"))}
    old.pop("device")
    assert MeasureConfig.from_dict(old) == MeasureConfig()  # a config.json written before backends


def test_every_backend_setting_has_its_own_fingerprint_and_table(tmp_path):
    configs = [MeasureConfig(), MeasureConfig(intra_op_threads=2), tool(tmp_path, "ok"),
               tool(tmp_path, "other"), MeasureConfig(backend="ray-node", device="pixel7"),
               MeasureConfig(backend="ray-node", device="pixel8")]
    keys = [c.fingerprint().key for c in configs]
    paths = {default_table_path(c) for c in configs}
    assert len(set(keys)) == len(paths) == len(configs)
    fp = tool(tmp_path, "ok").fingerprint()
    assert (fp.backend, fp.cpu_model, fp.ort_version) == ("command", "fake-phone", "n/a")
    assert "fake_tool.py ok {onnx}" in fp.provider
    assert MeasureConfig(backend="ray-node", device="pixel7").fingerprint().provider == "ray-node: latency:pixel7"


@pytest.mark.parametrize("backend,provider", [("ort-cuda", "CUDAExecutionProvider"),
                                              ("ort-tensorrt", "TensorrtExecutionProvider")])
def test_a_gpu_backend_without_its_provider_is_refused_in_one_line(backend, provider):
    if provider in onnxruntime.get_available_providers():
        pytest.skip(f"{provider} is available here")
    with pytest.raises(ValueError) as info:
        MeasureConfig(backend=backend)
    message = str(info.value)
    assert message.startswith(f"latency backend {backend} needs onnxruntime-gpu's {provider}; available: ")
    assert "CPUExecutionProvider" in message and "\n" not in message


@pytest.mark.parametrize("fields,names", [
    ({"backend": "tflite"}, "backend"),
    ({"backend": "command"}, "command"),
    ({"backend": "command", "command": "bench.sh model.onnx"}, "{onnx}"),
    ({"command": "bench.sh {onnx}"}, "command"),
    ({"backend": "ray-node"}, "device"),
    ({"backend": "ray-node", "device": "a b"}, "device"),
    ({"backend": "command", "command": "b {onnx}", "command_timeout_s": 0}, "command_timeout_s"),
    ({"backend": "command", "command": "b {onnx}", "command_repeats": 0}, "command_repeats"),
])
def test_bad_backend_settings_name_the_field(fields, names):
    with pytest.raises(ValueError, match="MeasureConfig") as info:
        MeasureConfig(**fields)
    assert names in str(info.value)


def test_a_table_of_this_device_with_other_settings_is_refused_naming_both(tmp_path):
    path = tmp_path / "one_thread.sqlite"
    one = MeasureConfig(**FAST)
    LatencyTable(path, one)  # created with the 1-thread fingerprint
    two = MeasureConfig(**FAST, intra_op_threads=2)
    with pytest.raises(LatencyError) as info:
        latency_model("predicted", lut_path=path, measure_config=two)
    message = str(info.value)
    assert device_key(one.fingerprint().to_dict()) in message and device_key(two.fingerprint().to_dict()) in message
    assert "1 thread(s)" in message and "2 thread(s)" in message and "\n" not in message
    assert latency_model("predicted", lut_path=path, measure_config=one).can_measure  # its own settings: fine
    with pytest.raises(LatencyError, match="latency table .* was made for ort-cpu .* but these settings are command"):
        latency_model("predicted", lut_path=path, measure_config=tool(tmp_path, "ok"))  # another backend


# ------------------------------------------------------------------------------------------------
# The command backend
# ------------------------------------------------------------------------------------------------


def test_a_command_gets_the_model_and_its_shape_and_the_median_of_its_repeats_counts(tmp_path, onnx_bytes):
    m = measure_onnx(onnx_bytes, tool(tmp_path, "ok"))
    assert m.median_ms == 2.5 and m.n_samples == 1 and m.fingerprint.backend == "command"
    m = measure_onnx(onnx_bytes, tool(tmp_path, "cycle", command_repeats=3))
    assert m.median_ms == 3.0 and m.n_samples == 3 and m.input_shapes == (("input", (1, 1, 32, 32)),)
    assert measure_onnx(onnx_bytes, tool(tmp_path, "shape")).median_ms == 1 + 1 + 32 + 32


@pytest.mark.parametrize("mode,reason", [
    ("nothing", "printed nothing"),
    ("fast", "printed 'fast', not a number"),
    ("fail", "exited with status 3"),
    ("hang", "did not finish within command_timeout_s=0.5 s"),
    ("0", "must be > 0 ms"),
    ("-2", "must be > 0 ms"),
    ("nan", "not a finite number"),
    ("1e9", "'1e9'; at least command_max_ms"),
])
def test_a_command_that_misbehaves_is_a_latency_error_saying_why(tmp_path, onnx_bytes, mode, reason):
    start = time.monotonic()
    with pytest.raises(BackendFault) as info:
        measure_onnx(onnx_bytes, tool(tmp_path, mode, command_timeout_s=0.5))
    assert isinstance(info.value, LatencyError)
    assert reason in str(info.value), str(info.value)
    assert time.monotonic() - start < 20
    if mode == "fail":
        assert "device offline" in str(info.value)  # stderr is shown


def test_output_validation_is_exactly_one_plausible_number():
    assert parse_command_output(" 12.5\n", 1e5) == 12.5
    assert parse_command_output("12.5 ms\n", 1e5) == 12.5
    for bad in ("12.5 13.0", "latency: 12.5", "inf", "12.5 s"):
        with pytest.raises(BackendFault):
            parse_command_output(bad, 1e5)


def test_a_failing_command_writes_nothing_to_the_table(tmp_path):
    from latency.lut_store import TableStore

    table = LatencyTable(tmp_path / "phone.sqlite", tool(tmp_path, "ok"))  # measures its overhead entry
    assert table.overhead_ms == 2.5 and table.can_measure
    with pytest.raises(BackendFault, match="not a number"):
        LatencyTable(tmp_path / "broken.sqlite", tool(tmp_path, "fast"))
    store = TableStore(tmp_path / "broken.sqlite")
    assert store.meta("overhead_ms") is None and store.count() == 0 and store.points() == []


# ------------------------------------------------------------------------------------------------
# Inside a search: the trial fails with the reason, the search goes on
# ------------------------------------------------------------------------------------------------

FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow  # about 40 s on the 2-core development VM (Ray's start dominates)
@pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")
def test_in_a_search_a_command_fault_fails_only_its_trial(tmp_path):
    from evaluation.evaluate import EvalConfig
    from nas.search import SearchConfig, run_search

    cfg = tool(tmp_path, "corners-then-nan", command_timeout_s=20.0)
    lut = tmp_path / "t.sqlite"
    eval_cfg = EvalConfig(holdout=500, train_subset=1000, train={"steps": 2, "batch_size": 32, "threads": 1},
                          deploy_resolution=32, latency="measured", lut_path=str(lut),
                          measure={k: v for k, v in cfg.to_dict().items() if v != MeasureConfig().to_dict()[k]})
    search = SearchConfig(run_dir=str(tmp_path / "run"), space="mobilenetv3_small", searcher="random", trials=2,
                          target_ms=5.0, top_k=1, eval=eval_cfg, workers=1)
    out = run_search(search, echo=None)
    with open(tmp_path / "run" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]
    assert all("printed 'nan', not a finite number" in r["error"] for r in rows), [r["error"] for r in rows]
    assert out.found is None and out.failed == 2
    assert not lut.exists()  # nothing was written to a table


@pytest.mark.slow  # three searches of two trials (Ray's start dominates)
@pytest.mark.skipif(not FMNIST.exists(), reason="needs the dataset-fashion-mnist Debian package")
def test_a_failed_re_measurement_of_the_top_k_passes_to_the_next_and_all_failed_is_one_error(tmp_path):
    from evaluation.evaluate import EvalConfig
    from nas.search import SearchConfig, run_search

    def search(mode: str):
        cfg = tool(tmp_path, mode, command_timeout_s=20.0)
        eval_cfg = EvalConfig(holdout=500, train_subset=1000, train={"steps": 2, "batch_size": 32, "threads": 1},
                              deploy_resolution=32, latency="measured", lut_path=str(tmp_path / "t.sqlite"),
                              measure={k: v for k, v in cfg.to_dict().items() if v != MeasureConfig().to_dict()[k]})
        return SearchConfig(run_dir=str(tmp_path / "run"), space="mobilenetv3_small", searcher="random", trials=2,
                            target_ms=5.0, top_k=2, eval=eval_cfg, workers=1)

    run = tmp_path / "run"
    first = run_search(search("ok"), echo=None)
    assert first.found is not None
    # The device goes away after the trials: resumed, the search only re-measures its top 2 again.
    (run / "remeasured.json").unlink()
    (run / "found.json").unlink()
    with pytest.raises(BackendFault, match="re-measuring every one of the top 2 trials failed .*device offline"):
        run_search(search("fail"), resume=True, echo=None)
    assert not (run / "found.json").exists() and len(list(csv.DictReader(open(run / "trials.csv")))) == 2
    # One re-measurement fails: the other of the top 2 is the winner, and the log says why.
    lines: list[str] = []
    out = run_search(search("fail-first"), resume=True, echo=lines.append)
    failed = [line for line in lines if line.startswith("re-measuring trial")]
    assert len(failed) == 1 and "device offline" in failed[0], lines
    assert out.found is not None and f"trial {out.found_metrics['trial']}:" not in failed[0]


# ------------------------------------------------------------------------------------------------
# ray-node on a local 2-node cluster
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_node_measures_on_the_resource_node_one_at_a_time(tmp_path, onnx_bytes):
    import ray
    from ray.cluster_utils import Cluster

    from evaluation.execution import loopback_only

    with loopback_only():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        try:
            device_node = cluster.add_node(num_cpus=1, resources={node_resource("pixel7"): 1})
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
            try:
                cfg = MeasureConfig(**FAST, backend="ray-node", device="pixel7", node_timeout_s=60)
                before = len(node_log())
                results: list = []
                threads = [threading.Thread(target=lambda: results.append(measure_onnx(onnx_bytes, cfg)))
                           for _ in range(3)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(300)
                assert len(results) == 3 and all(m.median_ms > 0 for m in results)
                assert all(m.fingerprint == cfg.fingerprint() for m in results)
                log = node_log()[before:]
                assert [e["node_id"] for e in log] == [device_node.node_id] * 3  # all on the device's node
                spans = sorted((e["start"], e["end"]) for e in log)
                assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans

                absent = MeasureConfig(**FAST, backend="ray-node", device="absent", node_timeout_s=1)
                t0 = time.monotonic()
                with pytest.raises(LatencyError, match="no Ray node offers the resource latency:absent") as info:
                    measure_onnx(onnx_bytes, absent)
                assert not isinstance(info.value, BackendFault)  # a set-up error: it stops a search
                assert time.monotonic() - t0 < 30
            finally:
                ray.shutdown()
        finally:
            cluster.shutdown()
