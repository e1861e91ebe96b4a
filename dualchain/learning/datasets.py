"""Image classification datasets as normalised numpy arrays.

``load_dataset`` returns train and test splits with images as float32 ``(N, C, H, W)`` and labels as
int64. Only local files are read: ``digits`` ships inside scikit-learn, the others are read from
``data_dir`` in their usual distribution formats (IDX for MNIST and Fashion-MNIST, the python
pickle batches for CIFAR). Nothing is ever downloaded: a missing or malformed file is a
``DatasetError`` naming the file and what is wrong.

A name of the form ``pkg.module:loader`` is a user's dataset plug-in (docs/plugins.md): the
loader is called with the seed and its arrays are checked here.

Normalisation uses fixed per-dataset constants (the usual published means and standard deviations),
not statistics of the loaded split, so every process that loads the same files gets the same bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import os
import pickle
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dualchain.learning.plugins import PluginError, call, is_plugin, load_object

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")
# A directory where the digits split, once made with scikit-learn, is kept as .npz, so that the
# other processes of a testbed load it with numpy alone (importing scikit-learn costs about a
# CPU second per process). ``dualchain up`` points its processes at WORKDIR/cache.
CACHE_ENV = "DUALCHAIN_DATASET_CACHE"

# Per-channel (mean, std) applied after scaling pixels to [0, 1].
_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.3053,), (0.3760,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_IDX_UBYTE = 0x08
_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_CIFAR_PIXELS = 3 * 32 * 32


class DatasetError(ValueError):
    """A dataset is unknown, or one of its files is missing or malformed."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test splits of one dataset; treat the arrays as read-only."""

    name: str
    train_x: np.ndarray  # float32 (N, C, H, W), normalised
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]  # one sample's shape: (C, H, W) for the built-in images


def load_dataset(name: str, data_dir: Path | None = None, seed: int = 0,
                 cache_dir: Path | None = None) -> Dataset:
    """Load ``name`` (one of ``DATASETS``); ``seed`` only affects the split of ``digits``, which
    is kept in ``cache_dir`` (default: ``$DUALCHAIN_DATASET_CACHE``, if set)."""
    if is_plugin(name):
        try:
            return _load_plugin(name, seed)
        except PluginError as exc:
            raise DatasetError(str(exc)) from None
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)} "
                           "(or a plug-in, pkg.module:loader)")
    if name == "digits":
        cache = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV)
        return _load_digits(seed, Path(cache) if cache else None)
    if data_dir is None:
        raise DatasetError(f"dataset {name!r} is read from files: a data directory is required")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"data directory {data_dir} for dataset {name!r} does not exist")
    if name in ("mnist", "fashion-mnist"):
        return _load_idx_dataset(name, data_dir)
    if name == "cifar10":
        return _load_cifar10(data_dir)
    return _load_cifar100(data_dir)


def _normalise(name: str, pixels: np.ndarray, scale: float) -> np.ndarray:
    """uint8/float pixels (N, C, H, W) to float32 standardised with the fixed constants."""
    mean, std = _NORMALISATION[name]
    x = pixels.astype(np.float32) / np.float32(scale)
    x -= np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    x /= np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def _make(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    scale: float,
) -> Dataset:
    train_x = _normalise(name, train[0], scale)
    test_x = _normalise(name, test[0], scale)
    c, h, w = train_x.shape[1:]
    return Dataset(
        name=name,
        train_x=train_x,
        train_y=train[1].astype(np.int64),
        test_x=test_x,
        test_y=test[1].astype(np.int64),
        num_classes=num_classes,
        input_shape=(int(c), int(h), int(w)),
    )


# --- a user's plug-in ------------------------------------------------------------------------

_PLUGIN_KEYS = ("train_x", "train_y", "test_x", "test_y")


def _load_plugin(spec: str, seed: int) -> Dataset:
    """``loader(seed)`` returns a ``Dataset`` or a mapping of train_x, train_y, test_x, test_y
    (and optionally num_classes); the arrays become float32 features and int64 labels."""
    loader = load_object(spec, "dataset")
    out = call(spec, "dataset", loader, seed)
    if isinstance(out, Dataset):
        out = {key: getattr(out, key) for key in (*_PLUGIN_KEYS, "num_classes")}
    if not isinstance(out, Mapping) or any(key not in out for key in _PLUGIN_KEYS):
        raise PluginError(f"dataset {spec!r} returned a {type(out).__name__}; expected a Dataset "
                          f"or a mapping with {', '.join(_PLUGIN_KEYS)}")
    arrays = {}
    for key in _PLUGIN_KEYS:
        try:
            arrays[key] = np.asarray(out[key])
        except Exception as exc:
            raise PluginError(f"dataset {spec!r}: {key} is not an array ({exc})") from None
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or not len(x):
            raise PluginError(f"dataset {spec!r}: {split}_x must be (N, ...) and {split}_y (N,) "
                              f"with N > 0, got {x.shape} and {y.shape}")
        if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
            raise PluginError(f"dataset {spec!r}: {split}_x must hold finite numbers")
        if not np.issubdtype(y.dtype, np.integer):
            raise PluginError(f"dataset {spec!r}: {split}_y must hold integer class labels")
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise PluginError(f"dataset {spec!r}: train and test samples differ in shape")
    labels = np.concatenate([arrays["train_y"], arrays["test_y"]])
    num_classes = out.get("num_classes")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if (isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer)
            or num_classes < 2 or labels.min() < 0 or labels.max() >= num_classes):
        raise PluginError(f"dataset {spec!r}: labels must lie in 0..num_classes-1 with at least "
                          f"2 classes (num_classes {num_classes!r})")
    train_x = np.ascontiguousarray(arrays["train_x"], dtype=np.float32)
    return Dataset(name=spec, train_x=train_x, train_y=arrays["train_y"].astype(np.int64),
                   test_x=np.ascontiguousarray(arrays["test_x"], dtype=np.float32),
                   test_y=arrays["test_y"].astype(np.int64), num_classes=int(num_classes),
                   input_shape=tuple(int(d) for d in train_x.shape[1:]))


# --- digits (scikit-learn) -------------------------------------------------------------------


def _load_digits(seed: int, cache: Path | None) -> Dataset:
    path = cache / f"digits-split-{seed}.npz" if cache is not None else None
    if path is not None:
        with contextlib.suppress(OSError, ValueError, KeyError), np.load(path) as kept:
            return _make("digits", (kept["train_x"], kept["train_y"]),
                         (kept["test_x"], kept["test_y"]), num_classes=10, scale=16.0)
    # Imported here so the other loaders do not pay scikit-learn's import time.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8)  # float64 in 0..16
    labels = bunch.target.astype(np.int64)
    # Stratified so every class keeps its share in both splits whatever the seed.
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.2, random_state=seed, stratify=labels
    )
    if path is not None:
        with contextlib.suppress(OSError):  # no cache is slower, not wrong
            _save_atomically(path, train_x=train_x, train_y=train_y, test_x=test_x,
                             test_y=test_y)
    return _make("digits", (train_x, train_y), (test_x, test_y), num_classes=10, scale=16.0)


def _save_atomically(path: Path, **arrays: np.ndarray) -> None:
    """Writes an .npz next to ``path`` and renames it into place: a process reading the cache
    never sees half a file, and processes writing it at once all write the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with partial.open("wb") as out:
            np.savez(out, **arrays)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# --- IDX (MNIST, Fashion-MNIST) --------------------------------------------------------------


def _find_file(directory: Path, base: str, what: str) -> Path:
    """``base`` or ``base.gz`` in ``directory``; the plain file wins when both exist."""
    for candidate in (directory / base, directory / (base + ".gz")):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{what}: neither {directory / base} nor {directory / base}.gz exists")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc


def parse_idx(data: bytes, source: str, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions; errors name ``source``."""
    if len(data) < 4:
        raise DatasetError(f"{source}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{source}: bad IDX magic {data[:4].hex()} (must start with 0000)")
    if data[2] != _IDX_UBYTE:
        raise DatasetError(f"{source}: IDX element type 0x{data[2]:02x}, expected 0x08 (ubyte)")
    if data[3] != ndim:
        raise DatasetError(f"{source}: IDX has {data[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DatasetError(
            f"{source}: IDX data {problem}: {len(data)} bytes, dimensions {dims} need {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    return parse_idx(_read_bytes(path), str(path), ndim)


def _idx_split(name: str, directory: Path, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    x_path = _find_file(directory, _IDX_FILES[x_key], name)
    y_path = _find_file(directory, _IDX_FILES[y_key], name)
    images = _read_idx(x_path, 3)
    labels = _read_idx(y_path, 1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{x_path}: images are {images.shape[1:]}, expected (28, 28)")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{y_path}: {labels.shape[0]} labels for {images.shape[0]} images in {x_path}"
        )
    if images.shape[0] == 0:
        raise DatasetError(f"{x_path}: contains no images")
    if labels.max() >= 10:
        raise DatasetError(f"{y_path}: label {int(labels.max())} out of range 0..9")
    return images.reshape(-1, 1, 28, 28), labels


def _load_idx_dataset(name: str, directory: Path) -> Dataset:
    train = _idx_split(name, directory, "train_x", "train_y")
    test = _idx_split(name, directory, "test_x", "test_y")
    return _make(name, train, test, num_classes=10, scale=255.0)


# --- CIFAR python pickles --------------------------------------------------------------------

# The only globals a CIFAR pickle needs (a dict of bytes, lists, ints and one numpy array), in
# every pickle protocol.
# Anything else is refused, since unpickling arbitrary globals runs arbitrary code.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    # Python 3 protocol-2 pickles spell bytes objects as _codecs.encode(str, "latin1").
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _PICKLE_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        try:
            return getattr(importlib.import_module(target[0]), target[1])
        except ImportError:  # numpy < 2 has no numpy._core
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return getattr(importlib.import_module(module), name)


def _read_pickle(path: Path) -> dict[bytes, Any]:
    try:
        with path.open("rb") as fh:
            obj = _SafeUnpickler(fh, encoding="bytes").load()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc
    except Exception as exc:  # any unpickling failure means a malformed file
        raise DatasetError(f"{path}: not a valid CIFAR pickle: {exc}") from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: not a valid CIFAR pickle: top level is {type(obj).__name__}")
    # Keys are bytes with encoding="bytes"; accept str keys too (pickles re-saved by python 3).
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    for key in (b"data", label_key):
        if key not in batch:
            raise DatasetError(f"{path}: CIFAR pickle has no {key.decode()!r} entry")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DatasetError(f"{path}: 'data' must be a uint8 array")
    if data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        raise DatasetError(f"{path}: 'data' has shape {data.shape}, expected (N, {_CIFAR_PIXELS})")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: {label_key.decode()!r} is not a list of integers") from exc
    if labels.shape != (data.shape[0],):
        raise DatasetError(
            f"{path}: {labels.size} {label_key.decode()!r} for {data.shape[0]} images"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{path}: labels out of range 0..{num_classes - 1}")
    # Rows are 1024 red, 1024 green, 1024 blue values of a 32x32 image in row-major order.
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_dir(data_dir: Path, subdir: str, marker: str) -> Path:
    for candidate in (data_dir, data_dir / subdir):
        if (candidate / marker).is_file():
            return candidate
    raise DatasetError(f"{marker} not found in {data_dir} or {data_dir / subdir}")


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _load_cifar10(data_dir: Path) -> Dataset:
    directory = _cifar_dir(data_dir, "cifar-10-batches-py", "test_batch")
    train_parts = []
    for i in range(1, 6):
        path = directory / f"data_batch_{i}"
        if not path.is_file():
            raise DatasetError(f"cifar10: {path} does not exist")
        train_parts.append(_cifar_batch(path, b"labels", 10))
    test = _cifar_batch(directory / "test_batch", b"labels", 10)
    return _make("cifar10", _concat(train_parts), test, num_classes=10, scale=255.0)


def _load_cifar100(data_dir: Path) -> Dataset:
    directory = _cifar_dir(data_dir, "cifar-100-python", "test")
    train_path = directory / "train"
    if not train_path.is_file():
        raise DatasetError(f"cifar100: {train_path} does not exist")
    train = _cifar_batch(train_path, b"fine_labels", 100)
    test = _cifar_batch(directory / "test", b"fine_labels", 100)
    return _make("cifar100", train, test, num_classes=100, scale=255.0)
