"""The data layer: loaders read the real file formats (written here, byte by byte, in tmp_path),
refuse bad files with a DataError naming the file, and batches() is deterministic and resumable."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convgraph.core import Volume
from convgraph.data import Dataset, batch_count, batches, channel_stats, load_dataset
from convgraph.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")

# ---------------------------------------------------------------------------- IDX (MNIST)

H, W = 6, 5  # non-square, so that swapping height and width cannot go unnoticed


def write_idx(path: Path, magic: int, array: np.ndarray, *, gz: bool):
    """An IDX file: magic, one big-endian uint32 per dimension, then the bytes, row-major."""
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.fixture
def mnist_dir(tmp_path):
    """Train (7 images) and test (3) IDX files in the official names, gzipped; returns
    (folder, {split: (images (N, H, W), labels)})."""
    rng = np.random.default_rng(1)
    content = {}
    for split, prefix, n in (("train", "train", 7), ("test", "t10k", 3)):
        images = rng.integers(0, 256, (n, H, W), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", 2051, images, gz=True)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", 2049, labels, gz=True)
        content[split] = (images, labels)
    return tmp_path, content


MNIST_VOLUME = Volume(W, H, 1)


def load_mnist(folder, split="train", volume=MNIST_VOLUME, classes=10):
    return load_dataset("mnist", str(folder), split, volume, classes)


@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_round_trip(mnist_dir, split):
    folder, content = mnist_dir
    images, labels = content[split]
    data = load_mnist(folder, split)
    assert data.name == f"mnist ({split})"
    assert data.x.dtype == np.uint8 and data.x.shape == (len(images), 1, H, W)
    assert data.y.dtype == np.int64
    np.testing.assert_array_equal(data.x[:, 0], images)  # IDX is row-major (rows, columns)
    assert data.x[2, 0, 4, 1] == images[2, 4, 1]
    np.testing.assert_array_equal(data.y, labels)
    assert data.volume() == Volume(W, H, 1) and data.classes == 10 and len(data) == len(images)


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "train-images.idx3-ubyte"])
def test_idx_uncompressed_names(tmp_path, name):
    images = np.arange(2 * H * W, dtype=np.uint8).reshape(2, H, W)
    write_idx(tmp_path / name, 2051, images, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", 2049, np.array([3, 9], np.uint8), gz=False)
    data = load_mnist(tmp_path)
    np.testing.assert_array_equal(data.x[:, 0], images)
    assert data.y.tolist() == [3, 9]


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def test_idx_truncated_file(mnist_dir):
    folder, _ = mnist_dir
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.unlink()
    cut = folder / "train-images-idx3-ubyte"
    cut.write_bytes(raw[:-7])
    message = error_of(load_mnist, folder)
    assert str(cut) in message and "truncated" in message


def test_idx_truncated_gzip(mnist_dir):
    folder, _ = mnist_dir
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    message = error_of(load_mnist, folder)
    assert str(path) in message and "gzip" in message


def test_idx_corrupt_gzip(mnist_dir):
    folder, _ = mnist_dir
    path = folder / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[20:40] = bytes(20)  # inside the deflate stream
    path.write_bytes(bytes(raw))
    message = error_of(load_mnist, folder)
    assert str(path) in message and "corrupt" in message


def test_idx_wrong_magic(mnist_dir):
    folder, content = mnist_dir
    # a labels file where the images file should be
    path = write_idx(folder / "train-images-idx3-ubyte.gz", 2049, content["train"][1], gz=True)
    message = error_of(load_mnist, folder)
    assert str(path) in message and "2049" in message and "2051" in message


def test_idx_count_mismatch(mnist_dir):
    folder, content = mnist_dir
    path = write_idx(folder / "train-labels-idx1-ubyte.gz", 2049, content["train"][1][:5],
                     gz=True)
    message = error_of(load_mnist, folder)
    assert str(path) in message and "7 images" in message and "5 labels" in message


def test_idx_label_out_of_range(mnist_dir):
    folder, _ = mnist_dir
    path = write_idx(folder / "t10k-labels-idx1-ubyte.gz", 2049, np.array([1, 10, 2], np.uint8),
                     gz=True)
    message = error_of(load_mnist, folder, "test")
    assert str(path) in message and "label 10" in message


def test_idx_volume_and_classes_must_fit_the_spec(mnist_dir):
    folder, _ = mnist_dir
    message = error_of(load_mnist, folder, volume=Volume(32, 32, 3))
    assert f"{W}x{H}x1 images in 10 classes" in message and "32x32x3" in message
    assert str(folder) in message
    message = error_of(load_mnist, folder, classes=5)
    assert "10 classes" in message and "5 classes" in message


def test_idx_missing_files(mnist_dir, tmp_path):
    folder, _ = mnist_dir
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    message = error_of(load_mnist, folder, "test")
    assert "t10k-images-idx3-ubyte.gz" in message and str(folder) in message
    assert "does not exist" in error_of(load_mnist, tmp_path / "nowhere")
    assert "--data DIR" in error_of(load_dataset, "mnist", None, "train", Volume(28, 28, 1), 10)


def test_fashion_mnist_default_location_missing(monkeypatch, tmp_path):
    import convgraph.data.idx

    monkeypatch.setattr(convgraph.data.idx, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    message = error_of(load_dataset, "fashion-mnist", None, "train", Volume(28, 28, 1), 10)
    assert str(tmp_path / "absent") in message and "dataset-fashion-mnist" in message


def test_unknown_data_set_kind():
    assert "fashion-mnist" in error_of(load_dataset, "fashion", None, "train",
                                       Volume(28, 28, 1), 10)


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_default_location():
    train = load_dataset("fashion-mnist", None, "train", Volume(28, 28, 1), 10)
    test = load_dataset("fashion-mnist", None, "test", Volume(28, 28, 1), 10)
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert set(np.unique(train.y)) == set(range(10)) == set(np.unique(test.y))
    assert train.class_names[0] == "T-shirt/top" and train.name == "fashion-mnist (train)"
    message = error_of(load_dataset, "fashion-mnist", None, "test", Volume(32, 32, 3), 10)
    assert "fashion-mnist holds 28x28x1 images in 10 classes" in message and "32x32x3" in message


# ---------------------------------------------------------------------------- CIFAR-10


def cifar_content(n_per_batch: int, batches_: int, seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_per_batch * batches_, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n_per_batch * batches_)
    return images, labels


def write_cifar_bin(folder: Path, n=3):
    """Five train batches of n records and a test batch of 2: 1 label byte + 3072 CHW bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = cifar_content(n, 5, 2), cifar_content(2, 1, 3)
    for name, (images, labels), lo, hi in (
        *((f"data_batch_{i}.bin", train, (i - 1) * n, i * n) for i in range(1, 6)),
        ("test_batch.bin", test, 0, 2),
    ):
        records = np.concatenate([labels[lo:hi, None].astype(np.uint8), images[lo:hi]], axis=1)
        (folder / name).write_bytes(records.tobytes())
    return {"train": train, "test": test}


def write_cifar_py(folder: Path, n=3, protocol=pickle.DEFAULT_PROTOCOL):
    """The python version: pickled dicts of b'data' (N, 3072) uint8 and b'labels' (a list)."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = cifar_content(n, 5, 4), cifar_content(2, 1, 5)
    for name, (images, labels), lo, hi in (
        *((f"data_batch_{i}", train, (i - 1) * n, i * n) for i in range(1, 6)),
        ("test_batch", test, 0, 2),
    ):
        batch = {b"batch_label": name.encode(), b"labels": labels[lo:hi].tolist(),
                 b"data": images[lo:hi], b"filenames": [b"x.png"] * (hi - lo)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return {"train": train, "test": test}


CIFAR_VOLUME = Volume(32, 32, 3)


def load_cifar(folder, split="train", volume=CIFAR_VOLUME, classes=10):
    return load_dataset("cifar10", str(folder), split, volume, classes)


def check_cifar(data, images, labels):
    assert data.x.dtype == np.uint8 and data.x.shape == (len(images), 3, 32, 32)
    # CHW: channel c, row r, column k is byte c*1024 + r*32 + k of the record's pixels
    assert data.x[1, 2, 3, 4] == images[1, 2 * 1024 + 3 * 32 + 4]
    np.testing.assert_array_equal(data.x.reshape(len(images), -1), images)
    np.testing.assert_array_equal(data.y, labels)


@pytest.mark.parametrize("layout", [".", "cifar-10-batches-bin"])
def test_cifar_binary_round_trip(tmp_path, layout):
    content = write_cifar_bin(tmp_path / layout)
    for split in ("train", "test"):
        data = load_cifar(tmp_path, split)
        check_cifar(data, *content[split])
        assert data.name == f"cifar10 ({split})" and data.class_names[0] == "airplane"


def test_cifar_binary_class_names(tmp_path):
    write_cifar_bin(tmp_path)
    names = [f"class{i}" for i in range(10)]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    assert load_cifar(tmp_path).class_names == names


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_cifar_pickle_round_trip(tmp_path, protocol):
    content = write_cifar_py(tmp_path / "cifar-10-batches-py", protocol=protocol)
    names = [f"n{i}".encode() for i in range(10)]
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=protocol))
    for split in ("train", "test"):
        data = load_cifar(tmp_path, split)
        check_cifar(data, *content[split])
        assert data.class_names == [n.decode() for n in names]


class _Exploit:
    """Unpickling this runs ``call(*args)`` -- what a malicious data file would do."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("how", ["os.system", "builtins.eval", "inside the dict"])
def test_cifar_malicious_pickle_is_refused_without_running(tmp_path, how):
    write_cifar_py(tmp_path)
    marker = tmp_path / "pwned"
    if how == "os.system":
        payload = _Exploit(os.system, f"touch '{marker}'")
    elif how == "builtins.eval":
        payload = _Exploit(eval, f"__import__('pathlib').Path({str(marker)!r}).touch()")
    else:
        payload = {b"data": np.zeros((1, 3072), np.uint8),
                   b"labels": _Exploit(os.system, f"touch '{marker}'")}
    path = tmp_path / "data_batch_2"
    path.write_bytes(pickle.dumps(payload))
    message = error_of(load_cifar, tmp_path)
    assert str(path) in message and "refused" in message
    assert not marker.exists()


def test_cifar_missing_batch(tmp_path):
    write_cifar_bin(tmp_path)
    (tmp_path / "data_batch_3.bin").unlink()
    message = error_of(load_cifar, tmp_path)
    assert "data_batch_3.bin" in message and "missing" in message
    (tmp_path / "empty").mkdir()
    message = error_of(load_cifar, tmp_path / "empty")
    assert "data_batch_1.bin" in message and "cifar-10-batches-py" in message


def test_cifar_truncated_binary(tmp_path):
    write_cifar_bin(tmp_path)
    path = tmp_path / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-100])
    message = error_of(load_cifar, tmp_path, "test")
    assert str(path) in message and "truncated" in message


def test_cifar_truncated_pickle(tmp_path):
    write_cifar_py(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:200])
    message = error_of(load_cifar, tmp_path, "test")
    assert str(path) in message and "truncated" in message


def test_cifar_label_out_of_range(tmp_path):
    write_cifar_bin(tmp_path)
    path = tmp_path / "data_batch_4.bin"
    raw = bytearray(path.read_bytes())
    raw[3073] = 12  # the second record's label byte
    path.write_bytes(bytes(raw))
    message = error_of(load_cifar, tmp_path)
    assert str(path) in message and "label 12" in message


def test_cifar_must_fit_the_spec(tmp_path):
    write_cifar_bin(tmp_path)
    message = error_of(load_cifar, tmp_path, volume=Volume(28, 28, 1))
    assert "32x32x3 images in 10 classes" in message and "28x28x1" in message
    assert "100 classes" in error_of(load_cifar, tmp_path, classes=100)


# ---------------------------------------------------------------------------- npz


NPZ_VOLUME = Volume(W, H, 2)


def load_npz(path, split="train", volume=NPZ_VOLUME, classes=4):
    return load_dataset("npz", str(path), split, volume, classes)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (5, 2, H, W), dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 2, H, W), dtype=np.uint8)
    path = tmp_path / "set.npz"
    np.savez(path, x=x, y=np.array([0, 1, 2, 3, 0]), x_test=x_test, y_test=np.array([3, 2, 1]))
    train, test = load_npz(path), load_npz(path, "test")
    np.testing.assert_array_equal(train.x, x)
    np.testing.assert_array_equal(test.x, x_test)
    assert train.y.tolist() == [0, 1, 2, 3, 0] and test.y.tolist() == [3, 2, 1]
    assert train.y.dtype == np.int64 and train.classes == 4


@pytest.mark.parametrize("form", ["compressed", "fortran", "big-endian", "int16", "bool",
                                  "float64", "npy-version-2"])
def test_npz_reader_reads_what_numpy_writes(tmp_path, form):
    """The bounded reader (data/arrays.py) gives exactly numpy.load's arrays for every layout
    numpy writes: deflated members, Fortran order, other byte orders and widths."""
    from convgraph.data.arrays import NpzReader
    from convgraph.params import load_arrays

    rng = np.random.default_rng(8)
    x = rng.integers(0, 256, (5, 2, H, W)).astype(np.uint8)
    y = np.array([0, 1, 2, 3, 0])
    if form == "fortran":
        x = np.asfortranarray(x)
    elif form == "big-endian":
        x = (x / 255).astype(">f4")
        y = y.astype(">i4")
    elif form == "int16":
        x = x.astype(np.int16)
    elif form == "bool":
        x = x > 127
    elif form == "float64":
        x = x / 255.0
    path = tmp_path / "set.npz"
    save = np.savez_compressed if form == "compressed" else np.savez
    save(path, x=x, y=y)
    if form == "npy-version-2":  # the header format numpy uses for very long headers
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            for key, array in (("x", x), ("y", y)):
                with archive.open(f"{key}.npy", "w") as member:
                    np.lib.format.write_array(member, array, version=(2, 0))
    with NpzReader(path, "test") as archive, np.load(path) as expected:
        for key in ("x", "y"):
            got = archive.read(key)
            assert got.dtype == expected[key].dtype and got.shape == expected[key].shape
            np.testing.assert_array_equal(got, expected[key])
    np.testing.assert_array_equal(load_arrays(path)["x"], x)
    data = load_npz(path)
    np.testing.assert_array_equal(data.x, x if x.dtype in (np.uint8, np.float32, ">f4")
                                  else x.astype(data.x.dtype))
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_arrays(tmp_path / "x.npy", "input")["x"], x)


def test_npz_one_channel_and_float(tmp_path):
    path = tmp_path / "gray.npz"
    x = np.random.default_rng(7).random((4, H, W), dtype=np.float32)
    np.savez(path, x=x, y=np.array([1, 1, 0, 0], np.uint8))
    data = load_npz(path, volume=Volume(W, H, 1), classes=2)
    assert data.x.dtype == np.float32 and data.x.shape == (4, 1, H, W)
    np.testing.assert_array_equal(data.x[:, 0], x)


def test_npz_errors(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, x=np.zeros((2, 2, H, W), np.uint8), y=np.array([0, 4]))
    message = error_of(load_npz, path)
    assert str(path) in message and "label 4" in message
    np.savez(path, x=np.zeros((2, 2, H, W), np.uint8), y=np.array([0, 1]))
    message = error_of(load_npz, path, "test")
    assert str(path) in message and "x_test" in message and "test split" in message
    np.savez(path, x=np.zeros((2, H, W, 2), np.uint8), y=np.array([0, 1]))
    assert "channels-last" in error_of(load_npz, path)
    np.savez(path, x=np.zeros((2, 2, H, W), np.uint8), y=np.array([0, 1, 1]))
    assert "(2,)" in error_of(load_npz, path)
    np.savez(path, x=np.zeros((2, 2, 4, 4), np.uint8), y=np.array([0, 1]))
    assert "4x4x2" in error_of(load_npz, path)
    assert "does not exist" in error_of(load_npz, tmp_path / "none.npz")
    (tmp_path / "text.npz").write_text("hello")
    assert "not an .npz" in error_of(load_npz, tmp_path / "text.npz")


def test_npz_pickled_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    y = np.empty(2, dtype=object)
    y[:] = [_Exploit(os.system, f"touch '{marker}'"), 1]
    np.savez(path, x=np.zeros((2, 2, H, W), np.uint8), y=y)
    message = error_of(load_npz, path)
    assert str(path) in message and "pickle" in message
    assert not marker.exists()


def test_npz_truncated(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, x=np.zeros((50, 2, H, W), np.uint8), y=np.zeros(50, np.int64))
    path.write_bytes(path.read_bytes()[:-300])
    assert str(path) in error_of(load_npz, path)


# ---------------------------------------------------------------------------- image folders


def test_folder_without_pillow_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.setitem(sys.modules, "PIL", None)  # "import PIL" now fails
    message = error_of(load_dataset, "folder", str(tmp_path), "train", Volume(W, H, 3), 1)
    assert "pip install pillow" in message and ".[images]" in message


@pytest.fixture
def image_tree(tmp_path):
    """DIR/train/{cat,ant}/ and DIR/test/{cat,ant}/ of W x H RGB PNGs; returns (DIR, pixels by
    (split, class, index)) with pixels (H, W, 3)."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(8)
    pixels = {}
    for split, n in (("train", 2), ("test", 1)):
        for name in ("cat", "ant"):  # written out of order: classes are sorted by name
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
                Image.fromarray(image, "RGB").save(tmp_path / split / name / f"{i}.png")
                pixels[split, name, i] = image
    return tmp_path, pixels


def test_folder_round_trip(image_tree):
    root, pixels = image_tree
    data = load_dataset("folder", str(root), "train", Volume(W, H, 3), 2)
    assert data.class_names == ["ant", "cat"] and data.y.tolist() == [0, 0, 1, 1]
    assert data.x.shape == (4, 3, H, W) and data.x.dtype == np.uint8
    np.testing.assert_array_equal(data.x[0], pixels["train", "ant", 0].transpose(2, 0, 1))
    np.testing.assert_array_equal(data.x[3], pixels["train", "cat", 1].transpose(2, 0, 1))
    test = load_dataset("folder", str(root), "test", Volume(W, H, 3), 2)
    assert test.y.tolist() == [0, 1] and test.note is None


def test_folder_grayscale(image_tree):
    from PIL import Image

    root, pixels = image_tree
    data = load_dataset("folder", str(root), "train", Volume(W, H, 1), 2)
    expected = np.asarray(Image.fromarray(pixels["train", "ant", 1]).convert("L"))
    assert data.x.shape == (4, 1, H, W)
    np.testing.assert_array_equal(data.x[1, 0], expected)


def test_folder_errors(image_tree):
    from PIL import Image

    root, _ = image_tree
    message = error_of(load_dataset, "folder", str(root), "train", Volume(W, H, 3), 3)
    assert "2 classes" in message and "3 classes" in message
    odd = root / "train" / "cat" / "big.png"
    Image.new("RGB", (W + 1, H)).save(odd)
    message = error_of(load_dataset, "folder", str(root), "train", Volume(W, H, 3), 2)
    assert str(odd) in message and f"{W + 1}x{H}" in message and f"{W}x{H}" in message
    odd.unlink()
    bad = root / "train" / "ant" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    message = error_of(load_dataset, "folder", str(root), "train", Volume(W, H, 3), 2)
    assert str(bad) in message and "cannot be read" in message


def test_folder_without_splits_serves_both_with_a_note(image_tree, tmp_path):
    root, _ = image_tree
    flat = root / "train"  # its class folders, with no train/test below
    for split in ("train", "test"):
        data = load_dataset("folder", str(flat), split, Volume(W, H, 3), 2)
        assert len(data) == 4 and "no train/ and test/" in data.note


# ---------------------------------------------------------------------------- embedded


@pytest.fixture(scope="module")
def embedded():
    started = time.perf_counter()
    data = load_dataset("embedded", None, "train", Volume(32, 32, 3), 10)
    return data, time.perf_counter() - started


def test_embedded_shape_balance_and_speed(embedded):
    data, seconds = embedded
    assert data.x.shape == (10000, 3, 32, 32) and data.x.dtype == np.uint8
    assert data.y.dtype == np.int64 and data.name == "embedded (train)"
    assert np.bincount(data.y, minlength=10).min() >= 900  # every class, balanced
    assert len(data.class_names) == 10 and data.volume() == Volume(32, 32, 3)
    assert data.x.std() > 30  # not blank
    assert seconds < 10  # about 1 s on one core; generous so a busy machine does not fail it


def test_embedded_is_deterministic_and_splits_differ(embedded):
    data, _ = embedded
    again = load_dataset("embedded", None, "train", Volume(32, 32, 3), 10)
    np.testing.assert_array_equal(again.x, data.x)
    np.testing.assert_array_equal(again.y, data.y)
    test = load_dataset("embedded", None, "test", Volume(32, 32, 3), 10)
    assert test.x.shape == (2000, 3, 32, 32) and test.name == "embedded (test)"
    assert not np.array_equal(test.x[:100], data.x[:100])
    other = load_dataset("embedded", None, "test", Volume(32, 32, 3), 10, seed=1)
    assert not np.array_equal(other.x, test.x)


def test_embedded_other_volumes_and_class_counts():
    gray = load_dataset("embedded", None, "test", Volume(28, 28, 1), 10)
    assert gray.x.shape == (2000, 1, 28, 28) and set(np.unique(gray.y)) == set(range(10))
    odd = load_dataset("embedded", None, "test", Volume(20, 12, 5), 2)
    assert odd.x.shape == (2000, 5, 12, 20) and np.bincount(odd.y).tolist() == [1000, 1000]
    assert odd.class_names == ["disc", "square"]
    message = error_of(load_dataset, "embedded", None, "test", Volume(32, 32, 3), 11)
    assert "2 to 10 classes" in message and "has 11" in message
    assert "8x8" in error_of(load_dataset, "embedded", None, "test", Volume(4, 4, 1), 10)


def test_embedded_is_not_linearly_trivial(embedded):
    """A nearest-class-mean template classifier on the raw pixels is far from perfect."""
    data, _ = embedded
    test = load_dataset("embedded", None, "test", Volume(32, 32, 3), 10)
    flat = data.x.reshape(len(data), -1).astype(np.float32)
    means = np.stack([flat[data.y == k].mean(axis=0) for k in range(10)])
    probe = test.x.reshape(len(test), -1).astype(np.float32)
    distance = (probe**2).sum(1)[:, None] - 2 * probe @ means.T + (means**2).sum(1)[None]
    accuracy = (distance.argmin(axis=1) == test.y).mean()
    assert accuracy < 0.6


# ---------------------------------------------------------------------------- batches


def numbered(n=10, depth=2, height=4, width=5) -> Dataset:
    """Image i is filled with i (so a batch's images say which they are); label i % 3."""
    x = np.arange(n * depth * height * width, dtype=np.uint8).reshape(n, depth, height, width)
    x[:] = np.arange(n, dtype=np.uint8)[:, None, None, None]
    x[:, :, 0, 0] = 200  # a marked corner shows where crops and flips moved the image
    return Dataset("numbered", x, np.arange(n, dtype=np.int64) % 3, 3)


def all_of(data, batch, **kwargs):
    return list(batches(data, batch, **kwargs))


def test_batches_cover_everything_once_with_a_smaller_last_batch():
    data = numbered(10)
    out = all_of(data, 4, seed=0, epoch=0)
    assert [len(y) for _, y in out] == [4, 4, 2] == [x.shape[0] for x, _ in out]
    assert batch_count(data, 4) == 3 and batch_count(data, 5) == 2
    ids = np.concatenate([x[:, 0, 1, 1] for x, _ in out]) * 255
    assert sorted(np.rint(ids).astype(int)) == list(range(10))
    for x, y in out:
        assert x.dtype == np.float32 and y.dtype == np.int32 and x.flags.c_contiguous
        assert x.shape[1:] == (2, 4, 5)
        np.testing.assert_array_equal(y, np.rint(x[:, 0, 1, 1] * 255).astype(int) % 3)


def test_batches_in_order_without_shuffle_scale_uint8_to_unit():
    data = numbered(6)
    (x, y), = all_of(data, 6, seed=0, epoch=0, shuffle=False)
    np.testing.assert_allclose(x, data.x / 255, rtol=1e-6)
    assert y.tolist() == [0, 1, 2, 0, 1, 2]
    floats = Dataset("f", data.x.astype(np.float32), data.y, 3)
    (x, _), = all_of(floats, 6, seed=0, epoch=0, shuffle=False)
    np.testing.assert_array_equal(x, floats.x)  # float data is not divided by 255


AUGMENT = {"crop_pad": 2, "flip": True}


def test_batches_are_deterministic_per_seed_and_epoch():
    data = numbered(30)
    first = all_of(data, 7, seed=3, epoch=2, **AUGMENT)
    again = all_of(data, 7, seed=3, epoch=2, **AUGMENT)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    other_epoch = all_of(data, 7, seed=3, epoch=3, **AUGMENT)
    other_seed = all_of(data, 7, seed=4, epoch=2, **AUGMENT)
    assert not np.array_equal(np.concatenate([x for x, _ in first]),
                              np.concatenate([x for x, _ in other_epoch]))
    assert not np.array_equal(np.concatenate([x for x, _ in first]),
                              np.concatenate([x for x, _ in other_seed]))


@pytest.mark.parametrize("start", [0, 1, 3, 4, 5])
def test_batches_resume_mid_epoch(start):
    data = numbered(30)
    full = all_of(data, 7, seed=5, epoch=1, mean=[0.1, 0.2], std=[0.5, 0.25], **AUGMENT)
    resumed = all_of(data, 7, seed=5, epoch=1, mean=[0.1, 0.2], std=[0.5, 0.25], start=start,
                     **AUGMENT)
    assert len(resumed) == len(full) - min(start, len(full))
    for (x1, y1), (x2, y2) in zip(full[start:], resumed):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_crop_and_flip_keep_shapes_and_move_pixels():
    data = numbered(40, depth=1, height=6, width=6)
    (plain, _), = all_of(data, 40, seed=0, epoch=0, shuffle=False)
    (cropped, _), = all_of(data, 40, seed=0, epoch=0, shuffle=False, crop_pad=2)
    (flipped, _), = all_of(data, 40, seed=0, epoch=0, shuffle=False, flip=True)
    assert cropped.shape == flipped.shape == plain.shape
    assert not np.array_equal(cropped, plain) and not np.array_equal(flipped, plain)
    # each crop is the zero-padded image at some offset within the padding
    padded = np.pad(plain, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(40):
        assert any(np.array_equal(cropped[i], padded[i, :, r:r + 6, c:c + 6])
                   for r in range(5) for c in range(5))
    # each flip is the image or its mirror, and both happen
    mirrored = [np.array_equal(flipped[i], plain[i, :, :, ::-1]) for i in range(40)]
    same = [np.array_equal(flipped[i], plain[i]) for i in range(40)]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)


def test_normalisation_gives_zero_mean_unit_std_per_channel(embedded):
    data, _ = embedded
    mean, std = channel_stats(data)
    assert mean.shape == std.shape == (3,) and mean.dtype == np.float32
    reference = data.x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, reference.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std, reference.std(axis=(0, 2, 3)), rtol=1e-4)
    x = np.concatenate([x for x, _ in batches(data, 1000, seed=0, epoch=0, mean=mean, std=std)])
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-3)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-3)


def test_batches_reject_bad_arguments():
    data = numbered(4)
    with pytest.raises(ValueError, match="channels"):
        next(batches(data, 2, seed=0, epoch=0, mean=[0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="batch"):
        next(batches(data, 0, seed=0, epoch=0))
