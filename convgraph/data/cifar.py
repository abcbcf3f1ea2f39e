"""CIFAR-10 in either official format: the binary version or the python (pickle) version.

Binary (``cifar-10-batches-bin``): ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
``test_batch.bin``, each a run of 3073-byte records -- one label byte, then 3072 pixel bytes in
channel, row, column order (1024 red, 1024 green, 1024 blue), which is already (D, H, W).

Python (``cifar-10-batches-py``): ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, each a
pickled dict with ``b'data'`` (N, 3072) uint8 in the same CHW order and ``b'labels'`` a list. They
are read with :func:`convgraph.data.safepickle.safe_load`, never with plain ``pickle``.
"""

from __future__ import annotations

import os

import numpy as np

from convgraph.errors import DataError

from .dataset import Dataset, check_labels, listing, read_file, require_dir
from .safepickle import safe_load

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
PIXELS = 3 * 32 * 32
RECORD = 1 + PIXELS

_HINT = ("pass --data DIR naming the folder from cifar-10-binary.tar.gz or "
         "cifar-10-python.tar.gz (cifar-10-batches-bin/ or cifar-10-batches-py/, or the folder "
         "that holds one of them).")


def _batch_names(split: str) -> list[str]:
    if split == "train":
        return [f"data_batch_{i}" for i in range(1, 6)]
    return ["test_batch"]


def _locate(path: str, split: str) -> tuple[str, str]:
    """(format, folder): where the split's first batch is, as ``.bin`` or as a pickle."""
    first = _batch_names(split)[0]
    folders = [path, os.path.join(path, "cifar-10-batches-bin"),
               os.path.join(path, "cifar-10-batches-py")]
    for folder in folders:
        # lexists: a folder or FIFO of a batch's name is refused as what it is when it is read,
        # not reported as missing
        if os.path.lexists(os.path.join(folder, first + ".bin")):
            return "bin", folder
        if os.path.lexists(os.path.join(folder, first)):
            return "py", folder
    raise DataError(
        f"no CIFAR-10 {split} batch in {path}: looked for {first}.bin (binary version) or "
        f"{first} (python version) there and in its cifar-10-batches-bin/ and "
        f"cifar-10-batches-py/; the folder holds {listing(path)}.",
        hint=_HINT,
    )


def _read_binary(path: str) -> tuple[np.ndarray, np.ndarray]:
    raw = read_file(path, "CIFAR-10 batch")
    if len(raw) == 0 or len(raw) % RECORD:
        raise DataError(
            f"CIFAR-10 batch {path} is truncated or corrupt: it holds {len(raw):,} bytes, which "
            f"is not a whole number of {RECORD}-byte records (1 label byte + {PIXELS} pixels).",
            hint="download the data set again.",
        )
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD)
    labels = check_labels(records[:, 0], 10, path)
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _entry(batch: dict, key: str):
    # Python 2 pickles read with encoding="bytes" have bytes keys; a re-pickled copy may have str.
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def _read_pickle(path: str) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_load(read_file(path, "CIFAR-10 batch"), path)
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR-10 batch {path} holds a {type(batch).__name__}, not the dict "
                        "of b'data' and b'labels' the python version has.", hint=_HINT)
    data, labels = _entry(batch, "data"), _entry(batch, "labels")
    if data is None or labels is None:
        keys = ", ".join(repr(k) for k in batch)
        raise DataError(f"CIFAR-10 batch {path} has no b'data' or no b'labels' entry (it has "
                        f"{keys or 'no keys'}); is it a CIFAR-100 file?", hint=_HINT)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != PIXELS:
        shape = getattr(data, "shape", None)
        raise DataError(f"CIFAR-10 batch {path}: b'data' should be a uint8 array of shape "
                        f"(N, {PIXELS}), got {type(data).__name__} "
                        f"{getattr(data, 'dtype', '')} {shape}.", hint=_HINT)
    if isinstance(labels, list) and (len(labels) != len(data)
                                     or not all(type(v) is int for v in labels)):
        # checked before numpy walks it: a small pickle can nest one list inside itself
        # into a structure of billions of entries (the memo shares them) that np.asarray
        # would spend minutes and all memory expanding
        raise DataError(f"CIFAR-10 batch {path}: b'labels' should be a flat list of "
                        f"{len(data):,} integers (one per image); it is not.", hint=_HINT)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"CIFAR-10 batch {path}: b'labels' should be a list of integers, got "
                        f"{labels.dtype} with shape {labels.shape}.", hint=_HINT)
    if len(labels) != len(data):
        raise DataError(f"CIFAR-10 batch {path} holds {len(data):,} images but {len(labels):,} "
                        "labels.", hint="download the data set again.")
    return data.reshape(-1, 3, 32, 32), check_labels(labels, 10, path)


def _class_names(folder: str, form: str) -> list[str]:
    """Names from batches.meta.txt / batches.meta when present, else the official ten."""
    if form == "bin":
        path = os.path.join(folder, "batches.meta.txt")
        if not os.path.lexists(path):
            return list(CIFAR10_CLASSES)
        text = read_file(path, "CIFAR-10 meta").decode("utf-8", errors="replace")
        names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        path = os.path.join(folder, "batches.meta")
        if not os.path.lexists(path):
            return list(CIFAR10_CLASSES)
        meta = safe_load(read_file(path, "CIFAR-10 meta"), path)
        raw = _entry(meta, "label_names") if isinstance(meta, dict) else None
        if not isinstance(raw, list):
            raise DataError(f"CIFAR-10 meta file {path} has no b'label_names' list.", hint=_HINT)
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in raw]
    if len(names) != 10:
        raise DataError(f"CIFAR-10 meta file {path} names {len(names)} classes, not 10.",
                        hint=_HINT)
    return names


def load_cifar10(path: str | None, split: str) -> Dataset:
    """Load the ``split`` of CIFAR-10 from folder ``path`` (binary or python version)."""
    if path is None:
        raise DataError("the cifar10 data set has no default location.", hint=_HINT)
    require_dir(path, "the cifar10 data set", hint=_HINT)
    form, folder = _locate(path, split)
    images, labels = [], []
    for name in _batch_names(split):
        file = os.path.join(folder, name + (".bin" if form == "bin" else ""))
        if not os.path.lexists(file):
            raise DataError(
                f"CIFAR-10 batch {file} is missing (the {split} split needs "
                f"{', '.join(_batch_names(split))}); the folder holds {listing(folder)}.",
                hint="download and unpack the complete data set again.",
            )
        x, y = (_read_binary if form == "bin" else _read_pickle)(file)
        images.append(x)
        labels.append(y)
    x = np.ascontiguousarray(np.concatenate(images))
    return Dataset(f"cifar10 ({split})", x, np.concatenate(labels), 10,
                   _class_names(folder, form))
