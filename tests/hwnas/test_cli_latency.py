"""`nas latency ...` end to end through the console script (real ONNX Runtime, small resolutions)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NAS = str(Path(sys.executable).with_name("nas"))


def run(tmp_path, *args, ok=True):
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([NAS, "latency", *args], capture_output=True, text=True, timeout=600, env=env)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_measure_json_reports_statistics_and_device(tmp_path):
    out = json.loads(run(tmp_path, "measure", "mobilenetv3_small", "--resolution", "64", "--json").stdout)
    assert out["p10_ms"] <= out["median_ms"] <= out["p90_ms"]
    assert out["n_samples"] >= 30 and out["warmup_runs"] >= 10
    assert out["fingerprint"]["intra_op_threads"] == 1 and out["precision"] == "fp32"


def test_measure_times_what_a_search_timed_and_says_when_it_does_not(tmp_path):
    as_registered = run(tmp_path, "measure", "mobilenetv3_small", "--resolution", "32").stdout
    assert "mobilenetv3_small at 32²×3, 1000 classes" in as_registered
    assert "not comparable; add --in-channels 1 --num-classes 10 to time what a search timed" in as_registered
    as_searched = run(tmp_path, "measure", "mobilenetv3_small", "--resolution", "32", "--in-channels", "1",
                      "--num-classes", "10").stdout
    assert "mobilenetv3_small at 32²×1, 10 classes" in as_searched and "note:" not in as_searched


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(), reason="needs Fashion-MNIST")
def test_measure_int8_is_calibrated_on_real_images(tmp_path):
    out = json.loads(run(tmp_path, "measure", "mobilenetv3_small", "--resolution", "64", "--precision", "int8",
                         "--calibration-samples", "4", "--json").stdout)
    assert out["precision"] == "int8" and out["median_ms"] > 0


QUICK = ("--latency-time-cap", "0.2")  # draft timing: the table's logic is under test, not its precision


def test_build_predict_validate_with_a_table_file(tmp_path):
    lut = tmp_path / "t.sqlite"
    built = json.loads(run(tmp_path, "build-lut", "--arch", "mobilenetv3_small", "mnasnet_a1", "mobilenetv2_035",
                           "--resolution", "32", "--calibrate", "3", "--lut", str(lut), *QUICK, "--json").stdout)
    assert built["measured"] == built["keys"] > 0 and built["calibration"]["n_points"] == 3
    again = json.loads(run(tmp_path, "build-lut", "--arch", "mobilenetv3_small", "--resolution", "32",
                           "--calibrate", "0", "--lut", str(lut), *QUICK, "--json").stdout)
    assert again["measured"] == 0  # cached
    pred = json.loads(run(tmp_path, "predict", "mobilenetv3_small", "--resolution", "32", "--lut", str(lut),
                          "--no-measure", "--json").stdout)
    assert pred["calibrated"] and pred["predicted_ms"] > 0 and pred["entries_measured_now"] == 0
    missing = run(tmp_path, "predict", "mobilenetv3_large", "--resolution", "32", "--lut", str(lut), "--no-measure",
                  ok=False)
    assert missing.returncode == 2 and "lacks" in missing.stderr and missing.stderr.count("\n") == 1
    val = json.loads(run(tmp_path, "validate", "--space", "mobilenetv3_small", "--n", "2", "--resolution", "32",
                         "--lut", str(lut), *QUICK, "--json").stdout)
    assert val["summary"]["n"] == 2 and len(val["rows"]) == 2 and val["plain"] is None  # nothing anchored


def test_anchored_calibration_and_validation_share_the_tables_anchor(tmp_path):
    lut = tmp_path / "t.sqlite"
    built = json.loads(run(tmp_path, "build-lut", "--arch", "mobilenetv3_small", "mobilenetv2_035", "--resolution",
                           "32", "--calibrate", "2", "--anchor", "mnasnet_a1", "--lut", str(lut), *QUICK,
                           "--json").stdout)
    anchor = built["anchor"]
    assert anchor["name"] == "mnasnet_a1" and anchor["resolution"] == 32 and anchor["ms"] > 0
    val = json.loads(run(tmp_path, "validate", "--space", "mobilenetv3_small", "--n", "2", "--resolution", "32",
                         "--anchor", "mnasnet_a1", "--lut", str(lut), *QUICK, "--json").stdout)
    assert val["anchor"] == anchor and all(r["measured_ms"] > 0 for r in val["rows"])
    # plain validation beside the anchored one: same predictions, each network measured alone
    plain = val["plain"]
    assert plain["summary"]["n"] == 2 and [r["arch_id"] for r in plain["rows"]] == [r["arch_id"] for r in val["rows"]]
    assert [r["predicted_ms"] for r in plain["rows"]] == [r["predicted_ms"] for r in val["rows"]]
    assert all(r["measured_ms"] > 0 for r in plain["rows"])
    other = run(tmp_path, "validate", "--space", "mobilenetv3_small", "--n", "1", "--resolution", "32",
                "--anchor", "mobilenetv2", "--lut", str(lut), ok=False)
    assert other.returncode == 2 and "anchored on mnasnet_a1" in other.stderr


def test_a_file_that_is_not_a_table_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a table" * 100)
    proc = run(tmp_path, "predict", "mobilenetv3_small", "--lut", str(bad), ok=False)
    assert proc.returncode == 2 and "not a latency table" in proc.stderr and "Traceback" not in proc.stderr


# -- latency backends (latency.backends) ---------------------------------------------------------------------


def test_backend_options_refuse_bad_input_in_one_line(capsys):
    import onnxruntime

    cases = [(["--latency-node", "pixel7"], "--latency-node: expected device=NAME, got 'pixel7'"),
             (["--latency-backend", "command"], "needs --latency-command TEMPLATE"),
             (["--latency-command", "bench.sh model.onnx"], "--latency-command 'bench.sh model.onnx' is invalid"),
             (["--latency-command", "b {onnx}", "--latency-node", "device=x"], "two backends"),
             (["--latency-time-cap", "0"], "--latency-time-cap 0.0")]
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        cases.append((["--latency-backend", "ort-cuda"],
                      "latency backend ort-cuda needs onnxruntime-gpu's CUDAExecutionProvider; available: "))
    from hwnas.cli import main

    for args, message in cases:  # in this process: the console script's start costs seconds each
        assert main(["latency", "measure", "mobilenetv3_small", "--resolution", "32", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)


def test_measure_with_the_worked_command_example(tmp_path):
    script = Path(__file__).parents[2] / "experiments" / "latency_command_example.sh"
    os.environ.setdefault("PYTHON", sys.executable)
    out = json.loads(run(tmp_path, "measure", "mobilenetv3_small", "--resolution", "32", "--latency-command",
                         f"{script} {{onnx}} {{input_shape}}", "--latency-device", "local-ort",
                         "--latency-repeats", "1", "--json").stdout)
    assert out["median_ms"] > 0 and out["n_samples"] == 1
    assert out["fingerprint"]["backend"] == "command" and out["fingerprint"]["cpu_model"] == "local-ort"


def test_a_table_of_other_settings_is_refused_naming_both(tmp_path, monkeypatch):
    from latency.lut import LatencyTable
    from latency.measure import MeasureConfig

    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))
    lut = tmp_path / "one_thread.sqlite"
    LatencyTable(lut, MeasureConfig(warmup_min_s=0.0, min_runs=10, time_cap_s=0.2, sessions=1))
    proc = run(tmp_path, "predict", "mobilenetv3_small", "--resolution", "32", "--lut", str(lut), "--threads", "2",
               "--no-measure", ok=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "1 thread(s)" in proc.stderr and "2 thread(s)" in proc.stderr and proc.stderr.count(" key ") == 2


def test_backend_options_become_measure_settings_and_the_default_adds_none():
    import argparse

    from hwnas.cli import add_latency_backend_options, latency_measure_options

    parser = argparse.ArgumentParser()
    add_latency_backend_options(parser)
    assert latency_measure_options(parser.parse_args([])) == {}  # a default run's config.json is unchanged
    assert latency_measure_options(parser.parse_args(["--threads", "2"])) == {"intra_op_threads": 2}
    assert latency_measure_options(parser.parse_args(["--latency-command", "b {onnx}", "--latency-repeats", "5"])) \
        == {"backend": "command", "command": "b {onnx}", "command_repeats": 5}
    assert latency_measure_options(parser.parse_args(["--latency-node", "device=pixel7"])) \
        == {"backend": "ray-node", "device": "pixel7"}
    assert latency_measure_options(parser.parse_args(["--latency-time-cap", "0.2"])) == {"time_cap_s": 0.2}
