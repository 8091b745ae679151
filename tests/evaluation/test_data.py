"""Tests of evaluation.data: IDX, CIFAR-10 and image-folder loading, validation, and the held-out split."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.data import (
    CIFAR10_CLASS_NAMES,
    FASHION_MNIST_DEFAULT_DIR,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    Dataset,
    DatasetError,
    DatasetNotFoundError,
    holdout_split,
    load_dataset,
)

# --------------------------------------------------------------------------------------------------
# helpers


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, dims: list[int] | None = None) -> Path:
    """Writes an IDX file (gzipped when the name ends in .gz); magic/dims override the true header."""
    if magic is None:
        magic = IDX_IMAGES_MAGIC if array.ndim == 3 else IDX_LABELS_MAGIC
    dims = list(array.shape) if dims is None else dims
    content = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    content += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def make_idx_folder(
    folder: Path, n_train: int = 12, n_test: int = 5, side: int = 6, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Writes a small, valid Fashion-MNIST-style folder and returns the arrays it holds."""
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / f"{stem}{suffix}", array)
    return arrays


def py2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """Assembles a batch pickle opcode by opcode as Python 2 / numpy 1 wrote the real CIFAR files.

    Python 3 cannot produce this format (its protocol-2 bytes go through _codecs.encode), and the
    real batches name numpy.core.multiarray, which numpy 2 renamed.
    """

    def short_str(text: bytes) -> bytes:
        return b"U" + bytes([len(text)]) + text

    def int32(value: int) -> bytes:
        return b"J" + struct.pack("<i", value)

    out = b"\x80\x02}("  # PROTO 2, EMPTY_DICT, MARK
    out += short_str(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short_str(b"b") + b"\x87R"
    out += b"(" + int32(1) + int32(data.shape[0]) + int32(data.shape[1]) + b"\x86"
    out += b"cnumpy\ndtype\n" + short_str(b"u1") + b"K\x00K\x01\x87R"
    out += b"(" + int32(3) + short_str(b"|") + b"NNN" + int32(-1) + int32(-1) + int32(0) + b"tb"
    out += b"\x89T" + struct.pack("<I", data.size) + data.tobytes() + b"tb"
    out += short_str(b"labels") + b"](" + b"".join(int32(label) for label in labels) + b"e"
    out += short_str(b"batch_label") + short_str(b"training batch 1 of 5")
    out += b"u."  # SETITEMS, STOP
    return out


def make_cifar_folder(folder: Path, per_batch: int = 4, py2: bool = True) -> list[np.ndarray]:
    """Writes a CIFAR-10 python folder with per_batch images per batch; returns the data arrays."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    datas = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        if py2:
            content = py2_cifar_pickle(data, labels)
        else:
            content = pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"})
        (folder / name).write_bytes(content)
        datas.append(data)
    meta = {b"label_names": [name.encode() for name in CIFAR10_CLASS_NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return datas


def save_png(path: Path, size: tuple[int, int], color: int | tuple[int, int, int], mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST / IDX


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = make_idx_folder(tmp_path, gz=gz)
    data = load_dataset("fashion-mnist", tmp_path)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.train_images.shape == (12, 1, 6, 6) and data.test_images.shape == (5, 1, 6, 6)
    np.testing.assert_array_equal(data.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.train_labels.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(data.test_images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert data.num_classes == 10 and data.class_names[0] == "T-shirt/top"
    assert data.source == str(tmp_path)
    assert data.channels == 1 and data.image_size_px == (6, 6)


def test_idx_accepts_path_strings_and_mixed_compression(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, gz=False)
    # gzip only the test images: each file is looked up on its own.
    plain = tmp_path / "t10k-images-idx3-ubyte"
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    assert len(load_dataset("fashion-mnist", str(tmp_path)).test_labels) == 5


def _corrupt(folder: Path, stem: str, content: bytes) -> Path:
    path = folder / f"{stem}.gz"
    path.write_bytes(gzip.compress(content))
    return path


def _header(magic: int, *dims: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)


@pytest.mark.parametrize(
    ("stem", "content", "message"),
    [
        ("train-images-idx3-ubyte", _header(IDX_LABELS_MAGIC, 12) + bytes(12), "wrong IDX magic number 0x00000801"),
        ("train-labels-idx1-ubyte", _header(IDX_IMAGES_MAGIC, 12, 6, 6) + bytes(432), "wrong IDX magic"),
        ("train-images-idx3-ubyte", _header(IDX_IMAGES_MAGIC, 12, 6, 6) + bytes(400), "truncated"),
        ("train-images-idx3-ubyte", _header(IDX_IMAGES_MAGIC, 12), "truncated IDX header"),
        ("train-images-idx3-ubyte", b"\x00\x00", "truncated IDX header"),
        ("train-images-idx3-ubyte", _header(IDX_IMAGES_MAGIC, 12, 6, 6) + bytes(433), "continues past"),
        ("train-labels-idx1-ubyte", _header(IDX_LABELS_MAGIC, 11) + bytes(11), "11 labels but"),
        ("train-labels-idx1-ubyte", _header(IDX_LABELS_MAGIC, 12) + bytes(11) + b"\x0a", "label 10 is out of range"),
        ("t10k-images-idx3-ubyte", _header(IDX_IMAGES_MAGIC, 20_000_000, 1, 1), "more than the 10000000 allowed"),
        ("t10k-images-idx3-ubyte", _header(IDX_IMAGES_MAGIC, 5, 5000, 6), "above the 4096 allowed"),
        ("t10k-images-idx3-ubyte", _header(IDX_IMAGES_MAGIC, 9_000_000, 4000, 4000), "bytes of data"),
    ],
    ids=[
        "labels-magic-in-images",
        "images-magic-in-labels",
        "truncated-payload",
        "truncated-header",
        "truncated-magic",
        "trailing-bytes",
        "count-mismatch",
        "label-out-of-range",
        "too-many-items",
        "side-too-large",
        "payload-too-large",
    ],
)
def test_corrupt_idx_raises_one_line_error_naming_file(tmp_path: Path, stem: str, content: bytes, message: str) -> None:
    make_idx_folder(tmp_path)
    path = _corrupt(tmp_path, stem, content)
    with pytest.raises(DatasetError, match=message) as caught:
        load_dataset("fashion-mnist", tmp_path)
    text = str(caught.value)
    assert "\n" not in text
    assert path.name in text


def test_corrupt_gzip_stream_raises_dataset_error(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(40))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: cannot read"):
        load_dataset("fashion-mnist", tmp_path)


def test_huge_idx_header_allocates_nothing_before_failing(tmp_path: Path) -> None:
    # Within every bound (1M × 28 × 28 = 784 MB) but the file holds 100 bytes: memory must follow the
    # file, not the header.
    make_idx_folder(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_header(IDX_IMAGES_MAGIC, 1_000_000, 28, 28) + bytes(100))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="truncated"):
            load_dataset("fashion-mnist", tmp_path)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 20 * 1024**2


def test_missing_fashion_mnist_folder_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    text = str(caught.value)
    assert "apt-get install dataset-fashion-mnist" in text and "--data-dir" in text
    assert "nowhere" in text and "\n" not in text


def test_missing_idx_file_says_how_to_get_it(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"t10k-labels-idx1-ubyte\(\.gz\) not found.*apt-get install"):
        load_dataset("fashion-mnist", tmp_path)


def test_unknown_dataset_name_lists_choices() -> None:
    with pytest.raises(DatasetError, match="fashion-mnist, cifar10, imagefolder"):
        load_dataset("mnist", None)


@pytest.mark.skipif(
    not FASHION_MNIST_DEFAULT_DIR.is_dir(),
    reason=f"{FASHION_MNIST_DEFAULT_DIR} absent: install Debian's dataset-fashion-mnist to run this test",
)
def test_real_fashion_mnist_loads() -> None:
    data = load_dataset("fashion-mnist", None)
    assert data.train_images.shape == (60000, 1, 28, 28)
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert data.num_classes == 10 and len(data.class_names) == 10
    # Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
    assert data.train_labels.bincount().tolist() == [6000] * 10
    assert data.test_labels.bincount().tolist() == [1000] * 10
    assert 60 < data.train_images.float().mean() < 90  # the known mean pixel value is 72.9


# --------------------------------------------------------------------------------------------------
# CIFAR-10


@pytest.mark.parametrize("py2", [True, False], ids=["python2-numpy1-format", "python3-pickle"])
def test_cifar_batches_load(tmp_path: Path, py2: bool) -> None:
    datas = make_cifar_folder(tmp_path / "cifar-10-batches-py", py2=py2)
    # The parent of the extracted folder works too.
    data = load_dataset("cifar10", tmp_path)
    assert data.train_images.shape == (20, 3, 32, 32) and data.test_images.shape == (4, 3, 32, 32)
    assert data.class_names == CIFAR10_CLASS_NAMES
    # Row layout: 1024 red, 1024 green, 1024 blue bytes, each plane row-major.
    first = datas[0][0]
    np.testing.assert_array_equal(data.train_images[0, 1].numpy(), first[1024:2048].reshape(32, 32))
    np.testing.assert_array_equal(data.test_images.reshape(4, -1).numpy(), datas[-1])


class _RunsShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_malicious_cifar_pickle_is_refused_without_running(tmp_path: Path, payload: str) -> None:
    folder = tmp_path / "cifar"
    make_cifar_folder(folder)
    marker = tmp_path / "pwned"
    evil = _RunsShellCommand(marker) if payload == "os.system" else _CallsEval()
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": evil, b"labels": [0]}))
    with pytest.raises(DatasetError, match="data_batch_3: not a valid CIFAR batch pickle: refusing to load global"):
        load_dataset("cifar10", folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, "hold 3000 bytes, expected 3072"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "1 labels but 2 images"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"outside \[0, 10\)"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "2-D uint8 array"),
        ({b"labels": [0, 1]}, "missing key"),
        ([1, 2, 3], "expected a pickled dict"),
    ],
    ids=["row-bytes", "count-mismatch", "label-range", "dtype", "missing-key", "not-a-dict"],
)
def test_malformed_cifar_batch_raises(tmp_path: Path, content: object, message: str) -> None:
    make_cifar_folder(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(content))
    with pytest.raises(DatasetError, match=f"test_batch: .*{message}"):
        load_dataset("cifar10", tmp_path)


def test_truncated_cifar_pickle_raises(tmp_path: Path) -> None:
    make_cifar_folder(tmp_path)
    path = tmp_path / "data_batch_1"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match="data_batch_1: not a valid CIFAR batch pickle"):
        load_dataset("cifar10", tmp_path)


def test_missing_cifar_folder_and_default(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="--data-dir .*nothing is downloaded"):
        load_dataset("cifar10", None)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nowhere")
    make_cifar_folder(tmp_path)
    (tmp_path / "data_batch_5").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_5 not found"):
        load_dataset("cifar10", tmp_path)


# --------------------------------------------------------------------------------------------------
# Image folders


def test_imagefolder_with_train_and_test(tmp_path: Path) -> None:
    save_png(tmp_path / "train" / "cat" / "a.png", (40, 20), (255, 0, 0))
    save_png(tmp_path / "train" / "cat" / "b.JPG", (10, 10), (255, 0, 0))
    save_png(tmp_path / "train" / "dog" / "a.png", (8, 8), 128, mode="L")
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    save_png(tmp_path / "test" / "dog" / "x.png", (8, 8), (0, 0, 255))
    data = load_dataset("imagefolder", tmp_path, image_size=16)
    assert data.class_names == ("cat", "dog") and data.num_classes == 2
    assert data.train_images.shape == (3, 3, 16, 16) and data.test_images.shape == (1, 3, 16, 16)
    assert data.train_labels.tolist() == [0, 0, 1] and data.test_labels.tolist() == [1]
    assert data.train_images[0, :, 5, 5].tolist() == [255, 0, 0]
    assert data.train_images[2, :, 5, 5].tolist() == [128, 128, 128]  # grayscale became RGB
    assert data.test_images[0, :, 0, 0].tolist() == [0, 0, 255]


def test_imagefolder_without_splits_holds_out_a_seeded_tenth(tmp_path: Path) -> None:
    for index in range(10):
        save_png(tmp_path / "a" / f"{index}.png", (4, 4), (index, 0, 0))
        save_png(tmp_path / "b" / f"{index}.png", (4, 4), (0, index, 0))
    first = load_dataset("imagefolder", tmp_path, image_size=4)
    again = load_dataset("imagefolder", tmp_path, image_size=4)
    assert len(first.train_labels) == 18 and len(first.test_labels) == 2
    assert torch.equal(first.test_images, again.test_images)
    assert torch.equal(first.train_labels, again.train_labels)
    other = load_dataset("imagefolder", tmp_path, image_size=4, split_seed=5)
    assert not torch.equal(first.test_images, other.test_images)
    # Every image lands in exactly one split.
    pixels = sorted(tuple(img[:, 0, 0].tolist()) for img in torch.cat([first.train_images, first.test_images]))
    assert pixels == sorted([(i, 0, 0) for i in range(10)] + [(0, i, 0) for i in range(10)])


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="has no class subfolders"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_png(tmp_path / "a" / "0.png", (4, 4), (0, 0, 0))
    with pytest.raises(DatasetError, match=r"[/\\]b holds no .png/.jpg/.jpeg images"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "b" / "0.png").write_bytes(b"not really a png")
    with pytest.raises(DatasetError, match="0.png: cannot read image"):
        load_dataset("imagefolder", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("imagefolder", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="needs --data-dir"):
        load_dataset("imagefolder", None)
    with pytest.raises(DatasetError, match="image_size"):
        load_dataset("imagefolder", tmp_path, image_size=0)


def test_imagefolder_test_class_must_exist_in_train(tmp_path: Path) -> None:
    save_png(tmp_path / "train" / "a" / "0.png", (4, 4), (0, 0, 0))
    save_png(tmp_path / "train" / "b" / "0.png", (4, 4), (0, 0, 0))
    save_png(tmp_path / "test" / "c" / "0.png", (4, 4), (0, 0, 0))
    with pytest.raises(DatasetError, match="classes not in train/: c"):
        load_dataset("imagefolder", tmp_path)


# --------------------------------------------------------------------------------------------------
# Dataset and holdout_split


def test_dataset_validates_its_fields() -> None:
    images = torch.zeros((4, 1, 5, 5), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3])
    base = dict(name="t", train_images=images, train_labels=labels, test_images=images, test_labels=labels,
                num_classes=4, class_names=None, source="-")
    Dataset(**base)
    for change, message in [
        ({"train_labels": torch.tensor([0, 1, 2, 4])}, "outside"),
        ({"train_labels": torch.tensor([0, 1, 2])}, "4 train images but 3"),
        ({"test_images": images.float()}, "must be uint8"),
        ({"train_labels": labels.int()}, "int64"),
        ({"test_images": torch.zeros((4, 3, 5, 5), dtype=torch.uint8)}, "test images are"),
        ({"class_names": ("a",)}, "1 class names for 4"),
    ]:
        with pytest.raises(DatasetError, match=message):
            Dataset(**{**base, **change})


@settings(max_examples=50, deadline=None)
@given(
    n_train=st.integers(2, 5000),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_holdout_split_is_disjoint_complete_and_deterministic(n_train: int, fraction: float, seed: int) -> None:
    n_val = round(fraction * n_train)
    if not 1 <= n_val < n_train:
        with pytest.raises(ValueError, match="held out"):
            holdout_split(n_train, fraction, seed)
        return
    train_idx, val_idx = holdout_split(n_train, fraction, seed)
    assert len(val_idx) == n_val and len(train_idx) == n_train - n_val
    assert train_idx.dtype == np.int64 and val_idx.dtype == np.int64
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(n_train))
    again_train, again_val = holdout_split(n_train, fraction, seed)
    np.testing.assert_array_equal(train_idx, again_train)
    np.testing.assert_array_equal(val_idx, again_val)


def test_holdout_split_counts_and_seeds() -> None:
    train_idx, val_idx = holdout_split(60000, 10000, seed=0)
    assert len(val_idx) == 10000 and len(np.intersect1d(train_idx, val_idx)) == 0
    _, other_val = holdout_split(60000, 10000, seed=1)
    assert not np.array_equal(val_idx, other_val)
    # Not simply the tail: the held-out part is spread over the whole split.
    assert val_idx.min() < 1000 and val_idx.max() > 59000


@pytest.mark.parametrize(
    ("n_train", "holdout"), [(10, 0), (10, 10), (10, 1.0), (10, 0.0), (1, 1), (10, True), (10, "3")]
)
def test_holdout_split_rejects_bad_arguments(n_train: int, holdout: object) -> None:
    with pytest.raises(ValueError):
        holdout_split(n_train, holdout, seed=0)
