"""Image-classification datasets for proxy training, held in RAM as uint8 tensors.

The search trains every candidate briefly on a proxy task (MnasNet, Tan et al. 2019,
https://arxiv.org/abs/1807.11626, Sec. 5: a held-out part of the *training* split scores candidates;
the test split is never looked at during a search). This module loads such a task from local files
and nothing else: no loader here ever downloads.

Supported names (see `DATASET_NAMES`):

* ``fashion-mnist``: the four IDX files (plain or gzipped), parsed here with numpy. Debian's package
  ``dataset-fashion-mnist`` installs them in `FASHION_MNIST_DEFAULT_DIR`.
* ``cifar10``: the python version (``cifar-10-batches-py``: ``data_batch_1..5``, ``test_batch``,
  ``batches.meta``), read by a restricted unpickler that can only build dicts, lists, strings, numbers
  and numpy arrays.
* ``imagefolder``: ``root/train/<class>/*.png|jpg`` and ``root/test/<class>/*``, or ``root/<class>/*``
  with a seeded 10 % split off as test. Images are converted to RGB and resized.

Every problem with the files raises `DatasetError` (a `ValueError`) with a one-line message that names
the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

__all__ = [
    "CIFAR10_CLASS_NAMES",
    "DATASET_NAMES",
    "Dataset",
    "DatasetError",
    "DatasetNotFoundError",
    "FASHION_MNIST_CLASS_NAMES",
    "FASHION_MNIST_DEFAULT_DIR",
    "holdout_split",
    "load_dataset",
    "read_idx",
]

DATASET_NAMES = ("fashion-mnist", "cifar10", "imagefolder")

FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)
# Bounds checked against the header before anything is allocated, so a corrupt or hostile header
# cannot make us reserve terabytes. They are far above any proxy data set (Fashion-MNIST: 60k, 28 px).
IDX_MAX_ITEMS = 10_000_000
IDX_MAX_SIDE_PX = 4096
IDX_MAX_PAYLOAD_BYTES = 4 * 1024**3
_READ_CHUNK_BYTES = 16 * 1024**2

CIFAR_ROW_BYTES = 3 * 32 * 32
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGEFOLDER_TEST_FRACTION = 0.1
IMAGEFOLDER_MAX_SIZE_PX = 1024

_FASHION_MNIST_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (as root; files go to "
    f"{FASHION_MNIST_DEFAULT_DIR}) or pass --data-dir to a folder with the four IDX files; "
    "nothing is downloaded"
)
_CIFAR10_HINT = (
    "pass --data-dir to the extracted `cifar-10-batches-py` folder of cifar-10-python.tar.gz "
    "(https://www.cs.toronto.edu/~kriz/cifar.html); nothing is downloaded"
)


class DatasetError(ValueError):
    """A data set is missing, malformed or inconsistent; the message names the file and the problem."""


class DatasetNotFoundError(DatasetError):
    """The data set's files are not where they were looked for; the message says how to get them."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set held in RAM.

    Images stay uint8 (0..255) so that 60k 28×28 images take 47 MB; training converts batches to float
    on the fly. The fields are checked on construction.

    Attributes:
        name: Data set name, e.g. ``"fashion-mnist"``.
        train_images: Training images, uint8, shape N×C×H×W.
        train_labels: Training labels, int64, shape N, values in ``[0, num_classes)``.
        test_images: Test images, uint8, shape M×C×H×W with the same C, H, W as the training images.
        test_labels: Test labels, int64, shape M.
        num_classes: Number of classes.
        class_names: One name per class index, or None where the source does not name them.
        source: Folder the data was read from (for the run record).
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] | None
    source: str

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise DatasetError(f"{self.name}: num_classes must be >= 2, got {self.num_classes}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise DatasetError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise DatasetError(
                    f"{self.name}: {split}_images must be uint8 N×C×H×W, got {images.dtype} "
                    f"with shape {tuple(images.shape)}"
                )
            if labels.dtype != torch.int64 or labels.ndim != 1:
                raise DatasetError(
                    f"{self.name}: {split}_labels must be a 1-D int64 tensor, got {labels.dtype} "
                    f"with shape {tuple(labels.shape)}"
                )
            if len(images) != len(labels):
                raise DatasetError(
                    f"{self.name}: {len(images)} {split} images but {len(labels)} {split} labels"
                )
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DatasetError(
                    f"{self.name}: {split} labels span [{int(labels.min())}, {int(labels.max())}], "
                    f"outside [0, {self.num_classes})"
                )
        if len(self.train_images) == 0:
            raise DatasetError(f"{self.name}: the training split is empty")
        if self.train_images.shape[1:] != self.test_images.shape[1:] and len(self.test_images):
            raise DatasetError(
                f"{self.name}: train images are {tuple(self.train_images.shape[1:])} (C×H×W) but "
                f"test images are {tuple(self.test_images.shape[1:])}"
            )

    @property
    def channels(self) -> int:
        """Number of image channels (1 for grayscale, 3 for RGB)."""
        return int(self.train_images.shape[1])

    @property
    def image_size_px(self) -> tuple[int, int]:
        """Stored image height and width in pixels."""
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])


def load_dataset(
    name: str = "fashion-mnist",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    image_size: int = 32,
    split_seed: int = 0,
) -> Dataset:
    """Loads a data set from local files into RAM.

    Args:
        name: One of `DATASET_NAMES`.
        data_dir: Folder holding the files. None means `FASHION_MNIST_DEFAULT_DIR` for fashion-mnist;
            cifar10 and imagefolder have no default and need it.
        image_size: Side in pixels that imagefolder images are resized to (1..1024). The IDX and
            CIFAR data sets keep their native 28 px and 32 px; training resizes batches on the fly.
        split_seed: Seed of the 10 % test split of an imagefolder without train/test subfolders.

    Returns:
        The data set, images as uint8 N×C×H×W tensors.

    Raises:
        DatasetNotFoundError: The folder or a required file is missing; the message says how to
            get the data.
        DatasetError: A file is malformed or the data is inconsistent.
    """
    if name == "fashion-mnist":
        return _load_fashion_mnist(FASHION_MNIST_DEFAULT_DIR if data_dir is None else Path(data_dir))
    if name == "cifar10":
        if data_dir is None:
            raise DatasetNotFoundError(f"cifar10 has no default folder: {_CIFAR10_HINT}")
        return _load_cifar10(Path(data_dir))
    if name == "imagefolder":
        if data_dir is None:
            raise DatasetNotFoundError(
                "imagefolder needs --data-dir: a folder with train/<class>/ and test/<class>/ "
                "subfolders, or with one subfolder per class"
            )
        if isinstance(image_size, bool) or not 1 <= image_size <= IMAGEFOLDER_MAX_SIZE_PX:
            raise DatasetError(
                f"image_size must be an int in [1, {IMAGEFOLDER_MAX_SIZE_PX}] px, got {image_size!r}"
            )
        return _load_imagefolder(Path(data_dir), image_size, split_seed)
    raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def holdout_split(n_train: int, holdout: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits training indices into a part to train on and a fixed held-out part to score on.

    Search accuracy is measured on the held-out part of the training split, never on the test split
    (MnasNet held out 50K ImageNet training images). The split depends only on the arguments.

    Args:
        n_train: Number of training items (>= 2).
        holdout: Held-out size: an int is a count in ``[1, n_train)``; a float in ``(0, 1)`` is a
            fraction of ``n_train``, rounded to the nearest count.
        seed: Seed of the random permutation.

    Returns:
        ``(train_idx, val_idx)``: disjoint, sorted int64 index arrays covering ``range(n_train)``.

    Raises:
        ValueError: ``n_train`` or ``holdout`` is out of range.
    """
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 2:
        raise ValueError(f"n_train must be an int >= 2, got {n_train!r}")
    if isinstance(holdout, bool):
        raise ValueError(f"holdout must be an int count or a float fraction, got {holdout!r}")
    if isinstance(holdout, (int, np.integer)):
        n_val = int(holdout)
    elif isinstance(holdout, (float, np.floating)):
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"a holdout fraction must lie in (0, 1), got {holdout}")
        n_val = round(holdout * n_train)
    else:
        raise ValueError(f"holdout must be an int count or a float fraction, got {holdout!r}")
    if not 1 <= n_val < n_train:
        raise ValueError(
            f"holdout {holdout!r} of {n_train} items leaves {n_val} held out; need 1..{n_train - 1}"
        )
    order = np.random.default_rng(seed).permutation(n_train)
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)


def read_idx(path: str | os.PathLike[str], expected_magic: int) -> np.ndarray:
    """Reads one IDX file of unsigned bytes (plain or gzipped) into a numpy array.

    The header is checked before the payload is read: the magic number, and every dimension against
    `IDX_MAX_ITEMS` / `IDX_MAX_SIDE_PX` and their product against `IDX_MAX_PAYLOAD_BYTES`. The payload
    is then read in chunks, so a header that claims more than the file holds costs no more memory than
    the file itself.

    Args:
        path: The file; a name ending in ``.gz`` is decompressed.
        expected_magic: `IDX_IMAGES_MAGIC` or `IDX_LABELS_MAGIC`.

    Returns:
        uint8 array of shape (count,) for labels or (count, rows, columns) for images.

    Raises:
        DatasetError: Wrong magic, dimensions out of bounds, or a payload shorter or longer than the
            header says.
    """
    path = Path(path)
    ndim = expected_magic & 0xFF
    try:
        with _open_maybe_gzip(path) as stream:
            header = _read_up_to(stream, 4 + 4 * ndim)
            if len(header) < 4:
                raise DatasetError(f"{path}: truncated IDX header ({len(header)} bytes)")
            magic = int.from_bytes(header[:4], "big")
            if magic != expected_magic:
                raise DatasetError(
                    f"{path}: wrong IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x}"
                )
            if len(header) < 4 + 4 * ndim:
                raise DatasetError(f"{path}: truncated IDX header ({len(header)} bytes)")
            dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
            _check_idx_dims(path, dims)
            n_bytes = int(np.prod(dims))
            payload = _read_up_to(stream, n_bytes)
            if len(payload) < n_bytes:
                raise DatasetError(
                    f"{path}: truncated: header says {dims} = {n_bytes} bytes of data, file holds "
                    f"{len(payload)}"
                )
            trailing = len(_read_up_to(stream, 1))
            if trailing:
                raise DatasetError(f"{path}: data continues past the {n_bytes} bytes the header says")
    except (OSError, EOFError, zlib.error) as err:
        # gzip.BadGzipFile is an OSError; zlib.error (a corrupt deflate stream) is not.
        raise DatasetError(f"{path}: cannot read: {err}") from err
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _check_idx_dims(path: Path, dims: list[int]) -> None:
    if dims[0] > IDX_MAX_ITEMS:
        raise DatasetError(f"{path}: header claims {dims[0]} items, more than the {IDX_MAX_ITEMS} allowed")
    if any(side > IDX_MAX_SIDE_PX for side in dims[1:]):
        raise DatasetError(
            f"{path}: header claims images of {dims[1:]} px, a side above the {IDX_MAX_SIDE_PX} allowed"
        )
    if int(np.prod(dims, dtype=np.float64)) > IDX_MAX_PAYLOAD_BYTES:
        raise DatasetError(
            f"{path}: header claims {dims} = more than {IDX_MAX_PAYLOAD_BYTES} bytes of data"
        )


def _open_maybe_gzip(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_up_to(stream: BinaryIO, n_bytes: int) -> bytes:
    """Reads up to n_bytes, chunk by chunk, so memory follows the data actually present."""
    chunks = []
    remaining = n_bytes
    while remaining > 0:
        chunk = stream.read(min(remaining, _READ_CHUNK_BYTES))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _find_idx_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(f"fashion-mnist: {folder / stem}(.gz) not found; {_FASHION_MNIST_HINT}")


def _load_fashion_mnist(folder: Path) -> Dataset:
    if not folder.is_dir():
        raise DatasetNotFoundError(f"fashion-mnist: folder {folder} does not exist; {_FASHION_MNIST_HINT}")
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path = _find_idx_file(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_idx_file(folder, f"{prefix}-labels-idx1-ubyte")
        images = read_idx(images_path, IDX_IMAGES_MAGIC)
        labels = read_idx(labels_path, IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise DatasetError(
                f"{labels_path}: {len(labels)} labels but {images_path.name} holds {len(images)} images"
            )
        if len(labels) and labels.max() >= len(FASHION_MNIST_CLASS_NAMES):
            raise DatasetError(
                f"{labels_path}: label {int(labels.max())} is out of range "
                f"[0, {len(FASHION_MNIST_CLASS_NAMES)})"
            )
        # frombuffer arrays are read-only; torch wants writable memory, so copy once here.
        splits[split] = (
            torch.from_numpy(images[:, None].copy()),
            torch.from_numpy(labels.astype(np.int64)),
        )
    return Dataset(
        name="fashion-mnist",
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
        num_classes=len(FASHION_MNIST_CLASS_NAMES),
        class_names=FASHION_MNIST_CLASS_NAMES,
        source=str(folder),
    )


# --------------------------------------------------------------------------------------------------
# CIFAR-10, python version


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can build only what the CIFAR batches hold.

    A pickle can call any importable callable while loading (``__reduce__``), so a plain
    `pickle.load` of a downloaded file runs whatever the file says. This unpickler resolves no global
    except the three numpy functions that rebuild an array or a scalar, and returns those objects
    directly instead of importing anything. Dicts, lists, tuples, strings, bytes and numbers need no
    globals. The batches were written by Python 2 / numpy 1 (``numpy.core.multiarray``), newer
    pickles name ``numpy._core.multiarray``; both map to the current functions.
    """

    _RECONSTRUCT = np.empty(0).__reduce__()[0]
    _SCALAR = np.uint8(0).__reduce__()[0]
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy.core.multiarray", "scalar"): _SCALAR,
        ("numpy._core.multiarray", "scalar"): _SCALAR,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _load_cifar_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetNotFoundError(f"cifar10: {path} not found; {_CIFAR10_HINT}")
    try:
        with open(path, "rb") as stream:
            # encoding="bytes" keeps Python 2 str keys as bytes (b"data"), as the CIFAR page documents.
            content = _RestrictedUnpickler(stream, encoding="bytes").load()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read: {err}") from err
    except Exception as err:  # noqa: BLE001 - a hostile or corrupt pickle can fail in any way
        raise DatasetError(f"{path}: not a valid CIFAR batch pickle: {err}") from err
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return content


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    content = _load_cifar_pickle(path)
    data, labels = content.get(b"data"), content.get(b"labels")
    if data is None or labels is None:
        raise DatasetError(f"{path}: missing key b'data' or b'labels' (keys: {sorted(content)})")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(f"{path}: b'data' must be a 2-D uint8 array")
    if data.shape[1] != CIFAR_ROW_BYTES:
        raise DatasetError(f"{path}: rows of b'data' hold {data.shape[1]} bytes, expected {CIFAR_ROW_BYTES}")
    if not isinstance(labels, (list, np.ndarray)) or not all(
        isinstance(label, (int, np.integer)) and not isinstance(label, bool) for label in labels
    ):
        raise DatasetError(f"{path}: b'labels' must be a list of ints")
    labels_array = np.asarray(labels, dtype=np.int64)
    if len(labels_array) != len(data):
        raise DatasetError(f"{path}: {len(labels_array)} labels but {len(data)} images")
    if len(labels_array) and (labels_array.min() < 0 or labels_array.max() >= len(CIFAR10_CLASS_NAMES)):
        raise DatasetError(
            f"{path}: labels span [{labels_array.min()}, {labels_array.max()}], outside [0, 10)"
        )
    # Each row is the red 32×32 plane, then green, then blue, row-major: exactly C×H×W.
    return data.reshape(-1, 3, 32, 32), labels_array


def _load_cifar10(folder: Path) -> Dataset:
    # Accept the folder that *contains* the extracted cifar-10-batches-py as well.
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DatasetNotFoundError(f"cifar10: folder {folder} does not exist; {_CIFAR10_HINT}")
    meta_path = folder / "batches.meta"
    meta = _load_cifar_pickle(meta_path)
    names = meta.get(b"label_names")
    if (
        not isinstance(names, list)
        or len(names) != len(CIFAR10_CLASS_NAMES)
        or not all(isinstance(n, (bytes, str)) for n in names)
    ):
        raise DatasetError(f"{meta_path}: b'label_names' must be a list of 10 strings")
    class_names = tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
    train = [_cifar_batch(folder / batch) for batch in CIFAR_TRAIN_BATCHES]
    test_images, test_labels = _cifar_batch(folder / "test_batch")
    return Dataset(
        name="cifar10",
        train_images=torch.from_numpy(np.concatenate([images for images, _ in train])),
        train_labels=torch.from_numpy(np.concatenate([labels for _, labels in train])),
        test_images=torch.from_numpy(np.ascontiguousarray(test_images)),
        test_labels=torch.from_numpy(test_labels),
        num_classes=len(class_names),
        class_names=class_names,
        source=str(folder),
    )


# --------------------------------------------------------------------------------------------------
# Image folders


def _class_folders(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    # Other files (README, .DS_Store, thumbnails databases) are not images; like torchvision's
    # ImageFolder we pick images by suffix.
    return sorted(
        child
        for child in folder.iterdir()
        if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES
    )


def _read_image(path: Path, size_px: int) -> np.ndarray:
    from PIL import Image  # Pillow comes with matplotlib; imported here so IDX/CIFAR users skip it.

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size_px, size_px), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"{path}: cannot read image: {err}") from err


def _read_split(
    folder: Path, class_names: Sequence[str], size_px: int
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, class_name in enumerate(class_names):
        class_folder = folder / class_name
        if not class_folder.is_dir():
            continue
        for path in _image_files(class_folder):
            images.append(_read_image(path, size_px))
            labels.append(label)
    if not images:
        return torch.empty((0, 3, size_px, size_px), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


def _load_imagefolder(root: Path, size_px: int, split_seed: int) -> Dataset:
    if not root.is_dir():
        raise DatasetNotFoundError(f"imagefolder: folder {root} does not exist")
    has_splits = (root / "train").is_dir()
    train_root = root / "train" if has_splits else root
    class_names = tuple(folder.name for folder in _class_folders(train_root))
    if not class_names:
        raise DatasetError(f"imagefolder: {train_root} has no class subfolders")
    if len(class_names) < 2:
        raise DatasetError(f"imagefolder: {train_root} has one class ({class_names[0]}); need >= 2")
    for class_name in class_names:
        if not _image_files(train_root / class_name):
            raise DatasetError(
                f"imagefolder: {train_root / class_name} holds no {'/'.join(IMAGE_SUFFIXES)} images"
            )
    train_images, train_labels = _read_split(train_root, class_names, size_px)
    if has_splits:
        test_root = root / "test"
        if not test_root.is_dir():
            raise DatasetError(f"imagefolder: {root} has train/ but no test/ subfolder")
        unknown = sorted({f.name for f in _class_folders(test_root)} - set(class_names))
        if unknown:
            raise DatasetError(f"imagefolder: {test_root} has classes not in train/: {', '.join(unknown)}")
        test_images, test_labels = _read_split(test_root, class_names, size_px)
    else:
        try:
            keep, held = holdout_split(len(train_labels), IMAGEFOLDER_TEST_FRACTION, split_seed)
        except ValueError as err:
            raise DatasetError(f"imagefolder: {root}: cannot split off a test set: {err}") from err
        keep_t, held_t = torch.from_numpy(keep), torch.from_numpy(held)
        test_images, test_labels = train_images[held_t], train_labels[held_t]
        train_images, train_labels = train_images[keep_t], train_labels[keep_t]
    return Dataset(
        name="imagefolder",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=len(class_names),
        class_names=class_names,
        source=str(root),
    )
