"""Bad input everywhere gets one line naming the problem, a non-zero exit, no traceback, and
nothing half-written. Every case runs the real CLI as a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from evaluation.data import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC
from search_spaces import references
from search_spaces.spec import MAX_SPEC_BYTES
from tests.reliability.conftest import assert_one_line_error, nas, nas_many, needs_fmnist, one_line_error_problems

SMALL = references.get("mobilenetv3_small").to_dict()


def _spec(**top) -> str:
    return json.dumps({**SMALL, **top})


def _with(path: tuple, value) -> str:
    d = json.loads(json.dumps(SMALL))
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(d)


def _without(path: tuple) -> str:
    d = json.loads(json.dumps(SMALL))
    target = d
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return json.dumps(d)


SPEC_FILES = {
    # name: (file content (str or bytes), what the one-line error must say)
    "malformed": ("{", "malformed JSON"),
    "truncated": (_spec()[: len(_spec()) // 2], "malformed JSON"),
    "deeply-nested": ("[" * 200_000 + "]" * 200_000, "nested deeper than"),
    "nested-in-a-field": (_with(("head",), json.loads("[" * 6 + "]" * 6)), "head: expected an object"),
    "empty": ("", "malformed JSON"),
    "not-an-object": ("[1, 2, 3]", "expected an object, got array"),
    "not-utf8": (b'{"name": "\xff\xfe"}', "not UTF-8"),
    "unknown-field": (_spec(color="red"), "unknown field(s) 'color'"),
    "unknown-block-field": (_with(("blocks", 0, "groups"), 2), "blocks[0]: unknown field(s) 'groups'"),
    "missing-field": (_without(("head",)), "missing required field(s) 'head'"),
    "missing-block-field": (_without(("blocks", 2, "out_channels")), "blocks[2]: missing required field(s)"),
    "channels-too-large": (_with(("stem", "out_channels"), 10**6), "stem.out_channels: must be in 1..4096"),
    "resolution-too-small": (_spec(resolution=4), "resolution: must be in 8..1024"),
    "too-many-blocks": (_spec(blocks=SMALL["blocks"] * 20), "must hold 1..64 blocks"),
    "huge-integer": ('{"resolution": ' + "9" * 5000 + "}", "malformed JSON"),
    "nan-literal": (_spec(resolution=float("nan")), "resolution: expected an integer"),
    "infinite-dropout": (_with(("head", "dropout"), float("inf")), "head.dropout: expected a number"),
    "string-for-int": (_with(("blocks", 1, "kernel_size"), "3"), "blocks[1].kernel_size: must be one of"),
    "bad-kernel": (_with(("blocks", 1, "kernel_size"), 4), "blocks[1].kernel_size: must be one of 1, 3, 5"),
    "string-for-bool": (_with(("blocks", 1, "se"), "yes"), "blocks[1].se: expected true or false"),
    "bad-enum": (_with(("blocks", 1, "activation"), "gelu"), "blocks[1].activation: must be one of"),
    "channel-chain-broken": (_with(("blocks", 1, "in_channels"), 17), "blocks[1].in_channels: must equal"),
    "bad-schema-version": (_spec(schema_version=2), "schema_version"),
    "too-big-file": (" " * (MAX_SPEC_BYTES + 1), f"a spec is at most {MAX_SPEC_BYTES}"),
}


def test_bad_spec_files_and_paths(tmp_path):
    """Each case through `nas arch show FILE` (launched a few at a time: each is mostly start-up)."""
    commands, hints = [], []
    for case, (content, hint) in sorted(SPEC_FILES.items()):
        path = tmp_path / f"{case}.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        commands.append(["arch", "show", str(path)])
        hints.append((str(path), hint))
    for path, hint in ((tmp_path / "missing.json", "no such file"), (tmp_path, "is a directory")):
        commands.append(["arch", "show", str(path)])
        hints.append((str(path), hint))
    problems = {cmd[-1]: p for cmd, h, proc in zip(commands, hints, nas_many(commands))
                if (p := one_line_error_problems(proc, *h))}
    assert not problems, problems


def test_every_command_that_reads_a_spec_rejects_it_cleanly(tmp_path):
    content, hint = SPEC_FILES["channels-too-large"]
    path = tmp_path / "spec.json"
    path.write_text(content)
    commands = [["arch", "export", str(path), "--onnx", str(tmp_path / "out.onnx")], ["latency", "predict", str(path)],
                ["latency", "measure", str(path)], ["latency", "build-lut", "--arch", str(path), "--calibrate", "0"]]
    problems = {" ".join(cmd[:2]): p for cmd, proc in zip(commands, nas_many(commands))
                if (p := one_line_error_problems(proc, str(path), hint))}
    assert not problems, problems
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*.tmp")), "a failed export wrote a file"
    assert not list(tmp_path.rglob("*.sqlite")), "a latency table was created for an invalid spec"


# ------------------------------------------------------------------------------------------------
# Data sets, through `nas search --dataset ... --data-dir ...`
# ------------------------------------------------------------------------------------------------


def _idx(magic: int, dims: list[int], payload: bytes) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def _fmnist_folder(folder: Path, n_train=20, n_test=5, labels_train=None, magic_train=IDX_IMAGES_MAGIC,
                   cut_train_images=0) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    files = {
        "train-images-idx3-ubyte": _idx(magic_train, [n_train, 28, 28],
                                        rng.integers(0, 256, n_train * 784, np.uint8).tobytes()),
        "train-labels-idx1-ubyte": _idx(IDX_LABELS_MAGIC, [labels_train or n_train],
                                        bytes((labels_train or n_train) * [3])),
        "t10k-images-idx3-ubyte": _idx(IDX_IMAGES_MAGIC, [n_test, 28, 28], bytes(n_test * 784)),
        "t10k-labels-idx1-ubyte": _idx(IDX_LABELS_MAGIC, [n_test], bytes(n_test)),
    }
    if cut_train_images:
        files["train-images-idx3-ubyte"] = files["train-images-idx3-ubyte"][:-cut_train_images]
    for name, content in files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(content))
    return folder


def _cifar_truncated(folder: Path) -> Path:
    import pickle

    folder.mkdir(parents=True)
    meta = pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]})
    (folder / "batches.meta").write_bytes(meta)
    batch = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]})
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(batch)
    (folder / "data_batch_3").write_bytes(batch[: len(batch) // 2])
    return folder


DATASETS = {
    "idx-truncated": ("fashion-mnist", lambda d: _fmnist_folder(d, cut_train_images=100), "truncated"),
    "idx-wrong-magic": ("fashion-mnist", lambda d: _fmnist_folder(d, magic_train=0x0803_0000),
                        "wrong IDX magic number"),
    "idx-count-mismatch": ("fashion-mnist", lambda d: _fmnist_folder(d, labels_train=19), "19 labels but"),
    "imagefolder-empty": ("imagefolder", lambda d: (d.mkdir(parents=True), d)[1], "has no class subfolders"),
    "cifar-truncated-batch": ("cifar10", _cifar_truncated, "data_batch_3: not a valid CIFAR batch pickle"),
}


def test_corrupt_datasets_stop_the_search_before_anything_is_written(tmp_path):
    commands, hints = [], []
    for case, (name, make, hint) in sorted(DATASETS.items()):
        folder = make(tmp_path / case / "data")
        commands.append(["search", "--run-dir", str(tmp_path / case / "run"), "--target-ms", "5",
                         "--dataset", name, "--data-dir", str(folder)])
        hints.append(hint)
    problems = {}
    for (case, _), hint, proc in zip(sorted(DATASETS.items()), hints, nas_many(commands)):
        p = one_line_error_problems(proc, hint)
        run = tmp_path / case / "run"
        if run.exists() and any(run.iterdir()):
            p.append(f"files left in the run directory: {[f.name for f in run.iterdir()]}")
        if p:
            problems[case] = p
    assert not problems, problems
    assert not list(tmp_path.rglob("*.sqlite")), "a latency table was created although the data set is bad"


# ------------------------------------------------------------------------------------------------
# Targets, run directories, latency tables
# ------------------------------------------------------------------------------------------------


def test_non_positive_or_non_finite_targets(tmp_path):
    targets = ["0", "nan"]
    procs = nas_many([["search", "--run-dir", str(tmp_path / "run"), f"--target-ms={t}"] for t in targets])
    problems = {t: p for t, proc in zip(targets, procs) if (p := one_line_error_problems(proc, "positive number"))}
    assert not problems, problems
    assert not (tmp_path / "run").exists()


@needs_fmnist
def test_target_below_the_fastest_architecture_of_the_space(tmp_path):
    # The failed start removes the run directory it created (and its parents); one that existed is kept.
    existing = tmp_path / "existing"
    existing.mkdir()
    runs = [tmp_path / "run", tmp_path / "new" / "deeper" / "run", existing]
    procs = nas_many([["search", "--run-dir", str(run), "--space", "mobilenetv3_small", "--target-ms", "0.0001",
                       "--latency", "measured", "--deploy-resolution", "32"] for run in runs], parallel=2)
    for proc in procs:
        assert_one_line_error(proc, "--target-ms 0.0001 is below the fastest architecture of space mobilenetv3_small")
    assert not (tmp_path / "run").exists() and not (tmp_path / "new").exists()
    assert existing.is_dir() and not any(existing.iterdir())


def test_run_directory_already_used_is_left_untouched(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trials.csv").write_text("precious\n")
    assert_one_line_error(nas("search", "--run-dir", str(run), "--target-ms", "5"), "is not empty", "--resume")
    assert (run / "trials.csv").read_text() == "precious\n" and len(list(run.iterdir())) == 1


@pytest.mark.parametrize("kind", ["a-file", "under-a-file", "read-only"])
def test_unusable_run_directory(tmp_path, kind):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    if kind == "a-file":
        run, hint = blocker, "is not a directory"
    elif kind == "under-a-file":
        run, hint = blocker / "run", "not writable"
    else:
        if os.geteuid() == 0:  # root writes through permissions; /proc refuses new entries to everyone
            run, hint = Path("/proc/hwnas-run"), "not writable"
        else:
            ro = tmp_path / "ro"
            ro.mkdir(mode=0o555)
            run, hint = ro / "run", "not writable"
    assert_one_line_error(nas("search", "--run-dir", str(run), "--target-ms", "5"), hint)
    assert blocker.read_text() == "x"


def test_resume_of_a_directory_without_a_search(tmp_path):
    assert_one_line_error(nas("search", "--resume", str(tmp_path)), "holds no search to resume")


def test_resume_with_a_corrupt_config_names_the_file(tmp_path):
    cases = {"torn": ('{"search": {"trials', "is not valid JSON (line 1 col 13)"),
             "binary": (b"\x00\xff\xfe junk", "is not valid JSON"),
             "empty": ("", "is not valid JSON (line 1 col 1)"),
             "no-search": ('{"target_ms": 5}', "holds no search configuration")}
    for case, (text, _) in cases.items():
        (tmp_path / case).mkdir()
        (tmp_path / case / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    procs = nas_many([["search", "--resume", str(tmp_path / case)] for case in cases])
    problems = {case: p for (case, (_, hint)), proc in zip(cases.items(), procs)
                if (p := one_line_error_problems(proc, f"{tmp_path / case / 'config.json'} {hint}"))
                or proc.returncode != 2}
    assert not problems, problems


def _foreign_table(path: Path) -> Path:
    """A latency table built on another device (another CPU): readable here, never measured here."""
    from latency.lut_store import TableStore
    from latency.measure import MeasureConfig

    fingerprint = {**MeasureConfig().fingerprint().to_dict(), "cpu_model": "Imaginary ARM Cortex-X9"}
    TableStore(path).create(fingerprint, MeasureConfig().to_dict())
    return path


@needs_fmnist
def test_search_with_a_table_from_another_device_that_lacks_entries(tmp_path):
    lut = _foreign_table(tmp_path / "other.sqlite")
    before = lut.read_bytes()
    run = tmp_path / "run"
    proc = nas("search", "--run-dir", str(run), "--target-ms", "5", "--space", "mobilenetv3_small",
               "--deploy-resolution", "32", "--lut", str(lut))
    assert_one_line_error(proc, "another device: Imaginary ARM Cortex-X9", "lacks", "export-bundle")
    assert not run.exists() and lut.read_bytes() == before


def test_predict_with_a_table_from_another_device_or_not_a_table(tmp_path):
    lut = _foreign_table(tmp_path / "other.sqlite")
    assert_one_line_error(nas("latency", "predict", "mobilenetv3_small", "--lut", str(lut)), "lacks")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    assert_one_line_error(nas("latency", "predict", "mobilenetv3_small", "--lut", str(junk)), str(junk))
