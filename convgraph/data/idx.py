"""MNIST and Fashion-MNIST: the IDX file format, gzip-compressed or raw.

An IDX file is a big-endian header -- two zero bytes, a type byte (0x08 = unsigned byte), the
number of dimensions, then one uint32 per dimension -- followed by the values in row-major order.
Images are magic 2051 (ubyte, 3 dims: N, rows, cols), labels 2049 (ubyte, 1 dim: N).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from convgraph.errors import DataError
from convgraph.files import readable_file

from .arrays import check_memory, expandable
from .dataset import Dataset, check_labels, listing, require_dir

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# Debian's dataset-fashion-mnist package installs the four .gz files here.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST_CLASSES = [str(digit) for digit in range(10)]

_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes, checking its magic number and its size.

    The header is read first and its dimensions checked against what the file can hold before
    anything else is read: a raw file must hold exactly the bytes they promise, a gzip file at
    most MAX_EXPANSION times its compressed size (data/arrays.py). The data are
    then read into one buffer of exactly that size, and one byte more is asked for: a gzip bomb
    behind a small header is refused after reading only what the header promised.

    Parameters
    ----------
    path : str
        The file; gzip compression is recognised by its first two bytes, not by its name.
    magic : int
        ``IMAGES_MAGIC`` or ``LABELS_MAGIC``.

    Returns
    -------
    numpy.ndarray
        uint8, shape (N, rows, cols) for images, (N,) for labels.
    """
    what = "images" if magic == IMAGES_MAGIC else "labels"
    name = f"IDX {what} file {path}"
    target = readable_file(path, f"IDX {what} file")
    compressed = False
    try:
        size = target.stat().st_size
        with open(target, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=raw, mode="rb") as handle:
                    return _read_idx_stream(handle, name, what, magic, expandable(size), size)
            return _read_idx_stream(raw, name, what, magic, size, None)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as why:
        if isinstance(why, OSError) and not compressed:
            raise DataError(f"{name} cannot be read: {why.strerror or why}.") from None
        # BadGzipFile (an OSError), EOFError for a cut file, zlib.error for flipped bytes
        raise DataError(
            f"{name} is a corrupt or truncated gzip file ({why}).",
            hint="download it again (or reinstall the package that provides it).",
        ) from None


def _read_idx_stream(handle, name: str, what: str, magic: int, most: int,
                     compressed: int | None) -> np.ndarray:
    """The array of an IDX stream (raw or decompressing) that can hold at most ``most`` bytes
    (the file's size; for gzip the most its ``compressed`` size can expand to)."""
    head = handle.read(4)
    if len(head) < 4:
        raise DataError(f"{name} is truncated: it holds only {len(head)} bytes.",
                        hint="download it again.")
    found = struct.unpack(">I", head)[0]
    if found != magic:
        other = {IMAGES_MAGIC: "an images file", LABELS_MAGIC: "a labels file"}.get(found)
        looks = f" (that is {other})" if other else " (it is not an IDX file of unsigned bytes)"
        raise DataError(
            f"{name} starts with magic number {found}{looks}, but {what} files "
            f"start with {magic}.",
            hint="check the images and labels files are not swapped, renamed or corrupt.",
        )
    dims = head[3]
    header = 4 + 4 * dims
    packed = handle.read(4 * dims)
    if len(packed) < 4 * dims:
        raise DataError(f"{name} is truncated inside its header.", hint="download it again.")
    shape = struct.unpack(f">{dims}I", packed)
    expected = math.prod(shape)  # exact: four uint32 dimensions overflow int64's product
    claim = f"its header promises {'x'.join(map(str, shape))} = {expected:,} bytes of data"
    if header + expected > most:
        holds = (f"its {compressed:,} gzip-compressed bytes may expand to at most {most:,} "
                 f"(more would be a decompression bomb; it was not decompressed)"
                 if compressed is not None else f"it holds {most - header:,}")
        raise DataError(f"{name} is truncated or corrupt: {claim}, but {holds}.",
                        hint="download it again.")
    check_memory(expected, name)
    buffer = bytearray(expected)
    view, filled = memoryview(buffer), 0
    while filled < expected:
        got = handle.readinto(view[filled:])
        if not got:
            break
        filled += got
    if filled < expected:
        raise DataError(f"{name} is truncated: {claim}, but it holds {filled:,}.",
                        hint="download it again.")
    if handle.read(1):
        raise DataError(f"{name} is longer than its header says: {claim}, but more follows.",
                        hint="download it again.")
    return np.frombuffer(buffer, np.uint8).reshape(shape)


def find_idx(folder: str, split: str, kind: str, dataset: str = "mnist") -> str:
    """The path of the ``kind`` ('images' or 'labels') file of ``split`` in ``folder``."""
    prefix, ndim = _PREFIX[split], 3 if kind == "images" else 1
    # gzip'd and raw, with the official '-' and the common '.' before idxN (Kaggle's copies)
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    names = [stem + ext for stem in stems for ext in (".gz", "")]
    for name in names:
        candidate = os.path.join(folder, name)
        if os.path.lexists(candidate):
            # there, so a folder or a FIFO of that name is refused as what it is, not "missing"
            return str(readable_file(candidate, f"the {dataset} {split} {kind} file"))
    raise DataError(
        f"the {dataset} {split} {kind} file is missing from {folder}: looked for {names[0]} or "
        f"{names[1]}; the folder holds {listing(folder)}.",
        hint="point --data at the folder holding the four IDX files.",
    )


def load_idx_dataset(kind: str, path: str | None, split: str) -> Dataset:
    """Load MNIST or Fashion-MNIST (``kind``) from the IDX files in folder ``path``."""
    if path is None:
        if kind == "mnist":
            raise DataError(
                "the mnist data set has no default location.",
                hint="pass --data DIR (or train: {data: DIR}) naming the folder that holds "
                "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.",
            )
        path = FASHION_MNIST_DIR
        hint = ("install Debian's package (apt install dataset-fashion-mnist), or pass "
                "--data DIR naming a folder with the four IDX files.")
    else:
        hint = "pass --data DIR naming the folder that holds the four IDX files."
    require_dir(path, f"the {kind} data set", hint=hint)

    images_path = find_idx(path, split, "images", kind)
    labels_path = find_idx(path, split, "labels", kind)
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.ndim != 3:
        raise DataError(f"IDX images file {images_path} has {images.ndim} dimensions; images "
                        "files have 3 (count, rows, columns).")
    if labels.ndim != 1:
        raise DataError(f"IDX labels file {labels_path} has {labels.ndim} dimensions; labels "
                        "files have 1 (count).")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images):,} images but {labels_path} holds "
            f"{len(labels):,} labels; the two files of a split must have one label per image.",
            hint="check both files come from the same data set and split, and are complete.",
        )
    y = check_labels(labels, 10, labels_path)
    names = FASHION_MNIST_CLASSES if kind == "fashion-mnist" else MNIST_CLASSES
    return Dataset(f"{kind} ({split})", images[:, None, :, :], y, 10, list(names))
