"""Dataset loaders: digits split, strict IDX parsing (plain and gzip), CIFAR pickles, errors."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dualchain.learning.datasets import DATASETS, DatasetError, load_dataset, parse_idx

MNIST_5K = Path("/work/shared/data/mnist-5k")


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path: Path, data: bytes, gz: bool) -> None:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_idx_dir(
    directory: Path, n_train: int = 12, n_test: int = 5, gz: bool = False, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.sort(rng.integers(0, 10, n_train)).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write(directory / name, idx_bytes(array), gz)
    return arrays


# --- digits ----------------------------------------------------------------------------------


def test_digits_shapes_split_and_normalisation() -> None:
    ds = load_dataset("digits", seed=0)
    assert ds.name == "digits" and ds.num_classes == 10 and ds.input_shape == (1, 8, 8)
    assert ds.train_x.shape == (1437, 1, 8, 8) and ds.test_x.shape == (360, 1, 8, 8)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int64
    assert ds.test_y.dtype == np.int64
    # Stratified: every class in the test split, in roughly its 20% share.
    counts = np.bincount(ds.test_y, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37
    assert abs(float(ds.train_x.mean())) < 0.05 and 0.9 < float(ds.train_x.std()) < 1.1


def test_digits_split_is_deterministic_per_seed() -> None:
    a, b, c = (load_dataset("digits", seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)
    assert not np.array_equal(a.test_x, c.test_x)


def test_digits_cache_gives_the_same_bytes_without_scikit_learn(tmp_path: Path) -> None:
    made = load_dataset("digits", seed=5, cache_dir=tmp_path)  # made with scikit-learn, kept
    assert [p.name for p in tmp_path.iterdir()] == ["digits-split-5.npz"]
    code = ("import sys; from pathlib import Path; import numpy as np; "
            "from dualchain.learning.datasets import load_dataset; "
            f"d = load_dataset('digits', seed=5, cache_dir=Path({str(tmp_path)!r})); "
            "assert 'sklearn' not in sys.modules, 'scikit-learn was imported'; "
            "np.savez(sys.stdout.buffer, *[d.train_x, d.train_y, d.test_x, d.test_y])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    with np.load(io.BytesIO(out)) as kept:
        for i, array in enumerate((made.train_x, made.train_y, made.test_x, made.test_y)):
            assert np.array_equal(kept[f"arr_{i}"], array) and kept[f"arr_{i}"].dtype == array.dtype


def test_a_broken_digits_cache_is_made_again(tmp_path: Path) -> None:
    (tmp_path / "digits-split-0.npz").write_bytes(b"not an npz")
    ds = load_dataset("digits", seed=0, cache_dir=tmp_path)
    assert np.array_equal(ds.test_y, load_dataset("digits", seed=0).test_y)


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(DatasetError, match="known datasets: digits, mnist"):
        load_dataset("imagenet")
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100"}


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100"])
def test_file_datasets_need_an_existing_directory(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data directory is required"):
        load_dataset(name)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(name, tmp_path / "absent")


# --- IDX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_loads_plain_and_gzip(tmp_path: Path, gz: bool, name: str) -> None:
    arrays = make_idx_dir(tmp_path, gz=gz)
    ds = load_dataset(name, tmp_path)
    assert ds.name == name and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.test_x.shape == (5, 1, 28, 28)
    assert np.array_equal(ds.train_y, arrays["train-labels-idx1-ubyte"].astype(np.int64))
    # Order is preserved (labels sorted by class stay sorted) and pixels map back exactly.
    mean, std = (0.1307, 0.3081) if name == "mnist" else (0.2860, 0.3530)
    pixels = np.rint((ds.test_x[:, 0] * std + mean) * 255)
    assert np.array_equal(pixels, arrays["t10k-images-idx3-ubyte"])


def test_idx_plain_file_wins_over_gzip(tmp_path: Path) -> None:
    plain = make_idx_dir(tmp_path, gz=False, seed=1)
    make_idx_dir(tmp_path, gz=True, seed=2)
    ds = load_dataset("mnist", tmp_path)
    assert np.array_equal(ds.train_y, plain["train-labels-idx1-ubyte"].astype(np.int64))


def test_idx_missing_file_is_named(tmp_path: Path) -> None:
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


def corrupt(tmp_path: Path, name: str, data: bytes) -> Path:
    make_idx_dir(tmp_path)
    path = tmp_path / name
    path.write_bytes(data)
    return path


GOOD_LABELS = idx_bytes(np.zeros(12, np.uint8))
GOOD_IMAGES = idx_bytes(np.zeros((12, 28, 28), np.uint8))


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("train-labels-idx1-ubyte", b"\x00\x00", "too short"),
        ("train-labels-idx1-ubyte", b"\x01" + GOOD_LABELS[1:], "bad IDX magic"),
        ("train-labels-idx1-ubyte", idx_bytes(np.zeros(12), type_code=0x0D), "element type 0x0d"),
        ("train-labels-idx1-ubyte", GOOD_IMAGES, "3 dimensions, expected 1"),
        ("train-labels-idx1-ubyte", GOOD_LABELS[:6], "truncated IDX header"),
        ("train-labels-idx1-ubyte", GOOD_LABELS[:-1], "truncated"),
        ("train-labels-idx1-ubyte", GOOD_LABELS + b"\x00", "trailing bytes"),
        ("train-labels-idx1-ubyte", idx_bytes(np.zeros(11, np.uint8)), "11 labels for 12 images"),
        ("train-labels-idx1-ubyte", idx_bytes(np.full(12, 10, np.uint8)), "label 10 out of range"),
        ("train-images-idx3-ubyte", idx_bytes(np.zeros((12, 27, 28))), r"\(27, 28\)"),
        ("train-images-idx3-ubyte", idx_bytes(np.zeros((0, 28, 28))), "12 labels for 0 images"),
    ],
)
def test_idx_malformed_files_are_named(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    path = corrupt(tmp_path, name, data)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset("mnist", tmp_path)
    assert path.name in str(info.value)


def test_idx_corrupt_gzip_is_named(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(GOOD_IMAGES)[:-20])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: cannot read"):
        load_dataset("mnist", tmp_path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset("mnist", tmp_path)


def test_parse_idx_names_the_source() -> None:
    with pytest.raises(DatasetError, match=r"^somefile: bad IDX magic"):
        parse_idx(b"\x12\x34\x08\x01", "somefile", 1)
    assert parse_idx(idx_bytes(np.arange(6).reshape(2, 3)), "x", 2).tolist() == [
        [0, 1, 2],
        [3, 4, 5],
    ]


@pytest.mark.skipif(not MNIST_5K.is_dir(), reason="MNIST sample not present")
def test_real_mnist_sample() -> None:
    ds = load_dataset("mnist", MNIST_5K)
    assert ds.train_x.shape == (4000, 1, 28, 28) and ds.test_x.shape == (1000, 1, 28, 28)
    assert set(np.unique(ds.train_y)) == set(range(10))
    assert abs(float(ds.train_x.mean())) < 0.2


# --- CIFAR -----------------------------------------------------------------------------------


def cifar_batch(n: int, label_key: bytes, classes: int, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, classes, n)],
    }


def dump(path: Path, obj: object, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


@pytest.mark.parametrize("subdir", ["", "cifar-10-batches-py"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_loads(tmp_path: Path, subdir: str, protocol: int) -> None:
    root = tmp_path / subdir
    batches = [cifar_batch(3, b"labels", 10, i) for i in range(6)]
    for i in range(5):
        dump(root / f"data_batch_{i + 1}", batches[i], protocol)
    dump(root / "test_batch", batches[5], protocol)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert ds.train_y.tolist() == [v for b in batches[:5] for v in b[b"labels"]]
    # Channel layout: the first 1024 bytes of a row are the red plane.
    red = np.rint((ds.test_x[0, 0] * 0.2470 + 0.4914) * 255).reshape(-1)
    assert np.array_equal(red, batches[5][b"data"][0, :1024])


def test_cifar100_loads_fine_labels(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    train = cifar_batch(4, b"fine_labels", 100, 0)
    train[b"coarse_labels"] = [0] * 4
    dump(root / "train", train)
    dump(root / "test", cifar_batch(2, b"fine_labels", 100, 1))
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.train_x.shape == (4, 3, 32, 32)
    assert ds.train_y.tolist() == train[b"fine_labels"]


def test_cifar_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="test_batch not found"):
        load_dataset("cifar10", tmp_path)
    dump(tmp_path / "test_batch", cifar_batch(2, b"labels", 10, 0))
    with pytest.raises(DatasetError, match="data_batch_1 does not exist"):
        load_dataset("cifar10", tmp_path)
    dump(tmp_path / "test", cifar_batch(2, b"fine_labels", 100, 0))
    with pytest.raises(DatasetError, match="train does not exist"):
        load_dataset("cifar100", tmp_path)


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (pickle.dumps(Boom()), "is not allowed"),
        (b"garbage", "not a valid CIFAR pickle"),
        (pickle.dumps([1, 2]), "top level is list"),
        (pickle.dumps({b"labels": [1]}), "no 'data' entry"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "no 'fine_labels' entry"),
        (
            pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 0]}),
            r"shape \(2, 100\)",
        ),
        (
            pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"fine_labels": [0, 0]}),
            "uint8",
        ),
        (
            pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0]}),
            "1 'fine_labels' for 2 images",
        ),
        (
            pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [100]}),
            "out of range",
        ),
    ],
)
def test_cifar_malformed_pickles_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    dump(tmp_path / "test", cifar_batch(2, b"fine_labels", 100, 0))
    (tmp_path / "train").write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset("cifar100", tmp_path)
    assert str(tmp_path / "train") in str(info.value)
