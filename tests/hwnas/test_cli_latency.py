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


def test_build_predict_validate_with_a_table_file(tmp_path):
    lut = tmp_path / "t.sqlite"
    built = json.loads(run(tmp_path, "build-lut", "--arch", "mobilenetv3_small", "mnasnet_a1", "mobilenetv2_035",
                           "--resolution", "32", "--calibrate", "3", "--lut", str(lut), "--json").stdout)
    assert built["measured"] == built["keys"] > 0 and built["calibration"]["n_points"] == 3
    again = json.loads(run(tmp_path, "build-lut", "--arch", "mobilenetv3_small", "--resolution", "32",
                           "--calibrate", "0", "--lut", str(lut), "--json").stdout)
    assert again["measured"] == 0  # cached
    pred = json.loads(run(tmp_path, "predict", "mobilenetv3_small", "--resolution", "32", "--lut", str(lut),
                          "--no-measure", "--json").stdout)
    assert pred["calibrated"] and pred["predicted_ms"] > 0 and pred["entries_measured_now"] == 0
    missing = run(tmp_path, "predict", "mobilenetv3_large", "--resolution", "32", "--lut", str(lut), "--no-measure",
                  ok=False)
    assert missing.returncode == 2 and "lacks" in missing.stderr and missing.stderr.count("\n") == 1
    val = json.loads(run(tmp_path, "validate", "--space", "mobilenetv3_small", "--n", "2", "--resolution", "32",
                         "--lut", str(lut), "--json").stdout)
    assert val["summary"]["n"] == 2 and len(val["rows"]) == 2


def test_anchored_calibration_and_validation_share_the_tables_anchor(tmp_path):
    lut = tmp_path / "t.sqlite"
    built = json.loads(run(tmp_path, "build-lut", "--arch", "mobilenetv3_small", "mobilenetv2_035", "--resolution",
                           "32", "--calibrate", "2", "--anchor", "mnasnet_a1", "--lut", str(lut), "--json").stdout)
    anchor = built["anchor"]
    assert anchor["name"] == "mnasnet_a1" and anchor["resolution"] == 32 and anchor["ms"] > 0
    val = json.loads(run(tmp_path, "validate", "--space", "mobilenetv3_small", "--n", "2", "--resolution", "32",
                         "--anchor", "mnasnet_a1", "--lut", str(lut), "--json").stdout)
    assert val["anchor"] == anchor and all(r["measured_ms"] > 0 for r in val["rows"])
    other = run(tmp_path, "validate", "--space", "mobilenetv3_small", "--n", "1", "--resolution", "32",
                "--anchor", "mobilenetv2", "--lut", str(lut), ok=False)
    assert other.returncode == 2 and "anchored on mnasnet_a1" in other.stderr


def test_a_file_that_is_not_a_table_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a table" * 100)
    proc = run(tmp_path, "predict", "mobilenetv3_small", "--lut", str(bad), ok=False)
    assert proc.returncode == 2 and "not a latency table" in proc.stderr and "Traceback" not in proc.stderr
