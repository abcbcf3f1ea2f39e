"""MNIST and Fashion-MNIST: the IDX file format, gzip-compressed or raw.

An IDX file is a big-endian header -- two zero bytes, a type byte (0x08 = unsigned byte), the
number of dimensions, then one uint32 per dimension -- followed by the values in row-major order.
Images are magic 2051 (ubyte, 3 dims: N, rows, cols), labels 2049 (ubyte, 1 dim: N).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from convgraph.errors import DataError

from .dataset import Dataset, check_labels, listing, read_file, require_dir

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
    raw = read_file(path, f"IDX {what}")
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as why:
            # BadGzipFile (an OSError), EOFError for a cut file, zlib.error for flipped bytes
            raise DataError(
                f"IDX {what} file {path} is a corrupt or truncated gzip file ({why}).",
                hint="download it again (or reinstall the package that provides it).",
            ) from None
    if len(raw) < 4:
        raise DataError(f"IDX {what} file {path} is truncated: it holds only {len(raw)} bytes.",
                        hint="download it again.")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        other = {IMAGES_MAGIC: "an images file", LABELS_MAGIC: "a labels file"}.get(found)
        looks = f" (that is {other})" if other else " (it is not an IDX file of unsigned bytes)"
        raise DataError(
            f"IDX {what} file {path} starts with magic number {found}{looks}, but {what} files "
            f"start with {magic}.",
            hint="check the images and labels files are not swapped, renamed or corrupt.",
        )
    dims = raw[3]
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"IDX {what} file {path} is truncated inside its header.",
                        hint="download it again.")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        state = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise DataError(
            f"IDX {what} file {path} is {state}: its header promises "
            f"{'x'.join(map(str, shape))} = {expected:,} bytes of data, but it holds "
            f"{len(raw) - header:,}.",
            hint="download it again.",
        )
    # copy: frees the (possibly large) decompressed buffer and gives a writable array
    return np.frombuffer(raw, np.uint8, expected, header).reshape(shape).copy()


def find_idx(folder: str, split: str, kind: str, dataset: str = "mnist") -> str:
    """The path of the ``kind`` ('images' or 'labels') file of ``split`` in ``folder``."""
    prefix, ndim = _PREFIX[split], 3 if kind == "images" else 1
    # gzip'd and raw, with the official '-' and the common '.' before idxN (Kaggle's copies)
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    names = [stem + ext for stem in stems for ext in (".gz", "")]
    for name in names:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
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
