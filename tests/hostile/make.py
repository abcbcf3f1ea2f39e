"""Writers of hostile files, byte by byte where a real library would refuse to write them.

Each writer takes the path to create and writes one real file of a real format (npy, npz, PNG,
IDX, gzip, CIFAR pickle, convgraph checkpoint); nothing here imports convgraph, so the corpus
measures the code rather than agreeing with it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import pickle
import socket
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

# ------------------------------------------------------------------------------------ npy, npz


def npy_bytes(header: str | bytes, body: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    """An .npy file with exactly this header text (padded as numpy pads it) and body."""
    text = header.encode("latin1") if isinstance(header, str) else header
    if version[0] == 1:
        pad = 64 - (10 + len(text) + 1) % 64
        text = text + b" " * (pad % 64) + b"\n"
        return b"\x93NUMPY" + bytes(version) + struct.pack("<H", len(text)) + text + body
    pad = 64 - (12 + len(text) + 1) % 64
    text = text + b" " * (pad % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<I", len(text)) + text + body


def npy_header(descr: str, shape, fortran: bool = False) -> str:
    return f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, }}"


def array_bytes(array, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def write_npz(path: Path, members: dict, compress: bool = False) -> None:
    """An npz (a zip) whose members are arrays (saved by numpy) or raw bytes (written as they
    are, under ``name.npy``)."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, value in members.items():
            data = value if isinstance(value, bytes) else array_bytes(np.asarray(value))
            archive.writestr(name if name.endswith("/") else f"{name}.npy", data)


def tiny_set(seed: int = 0, count: int = 96, classes: int = 4, size: int = 8, depth: int = 1):
    """(x, y): ``count`` learnable uint8 images (count, depth, size, size) of ``classes``
    classes, each brightening its own quadrant."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, count)
    x = rng.integers(0, 60, (count, depth, size, size)).astype(np.uint8)
    half = size // 2
    for c in range(classes):
        rows, cols = divmod(c % 4, 2)
        x[y == c, :, rows * half:rows * half + half, cols * half:cols * half + half] += 150
    return x, y


def data_members(**changes) -> dict:
    """The base data set's members (x, y, x_test, y_test), with some replaced or removed (None)."""
    x, y = tiny_set()
    members = {"x": x, "y": y, "x_test": x[:32], "y_test": y[:32]}
    for key, value in changes.items():
        if value is None:
            members.pop(key, None)
        else:
            members[key] = value
    return members


def poisoned(value: float, index, dtype=np.float32, split: str = "train") -> dict:
    """Data members whose images (of ``split``) are floats with one pixel set to ``value``."""
    x, y = tiny_set()
    images = (x if split == "train" else x[:32]).astype(dtype)
    images[index] = value
    key = "x" if split == "train" else "x_test"
    return data_members(**{key: images})


# -------------------------------------------------------------------------------------- images


def png_bytes(width: int, height: int, colour: int = 0, rows: bytes | None = None,
              truncate: int | None = None) -> bytes:
    """A grayscale 8-bit PNG of any claimed size, compressed as it is written (a bomb costs
    kilobytes here and width*height bytes to whoever decodes it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    squeeze = zlib.compressobj(9)
    row = b"\x00" + bytes(width)
    body = []
    if rows is not None:
        body.append(squeeze.compress(rows))
    else:
        for _ in range(height):
            body.append(squeeze.compress(row))
    body.append(squeeze.flush())
    data = b"".join(body)
    if truncate is not None:
        data = data[:truncate]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


@functools.cache
def png_bomb(side: int) -> bytes:
    return png_bytes(side, side)


def small_png(side: int = 8, value: int = 100) -> bytes:
    rows = b"".join(b"\x00" + bytes([value]) * side for _ in range(side))
    return png_bytes(side, side, rows=rows)


def image_folder(root: Path, classes=("a", "b", "c", "d"), per_class: int = 4,
                 image: bytes | None = None) -> None:
    """train/<class>/*.png and test/<class>/*.png of 8x8 grayscale images."""
    for split in ("train", "test"):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (folder / f"{i}.png").write_bytes(image or small_png(8, 40 * index + i))


# ------------------------------------------------------------------------------ IDX, gzip, CIFAR


def idx_bytes(magic: int, dims, body: bytes = b"", ndim: int | None = None) -> bytes:
    count = len(dims) if ndim is None else ndim
    kind = magic >> 8 & 0xFF
    return struct.pack(">HBB", 0, kind, count) + b"".join(struct.pack(">I", d) for d in dims) + body


IMAGES, LABELS = 0x0803, 0x0801


def mnist_folder(root: Path, images: bytes | None = None, labels: bytes | None = None,
                 count: int = 16, gz: bool = False) -> None:
    """The four IDX files of a 28x28 MNIST-like set, any of the train ones replaced."""
    root.mkdir(parents=True, exist_ok=True)
    good_images = idx_bytes(IMAGES, (count, 28, 28), bytes(count * 784))
    good_labels = idx_bytes(LABELS, (count,), bytes(i % 10 for i in range(count)))
    files = {"train-images-idx3-ubyte": images or good_images,
             "train-labels-idx1-ubyte": labels or good_labels,
             "t10k-images-idx3-ubyte": good_images, "t10k-labels-idx1-ubyte": good_labels}
    for name, data in files.items():
        if gz and data[:2] != b"\x1f\x8b":
            (root / f"{name}.gz").write_bytes(gzip.compress(data, 1))
        elif data[:2] == b"\x1f\x8b":
            (root / f"{name}.gz").write_bytes(data)
        else:
            (root / name).write_bytes(data)


@functools.cache
def gzip_bomb(megabytes: int, head: bytes = b"") -> bytes:
    """A valid gzip file of a few hundred KiB that decompresses to ``head`` and ``megabytes``
    MiB of zeros (one member of 64 MiB, repeated: concatenated members are one gzip stream)."""
    member = gzip.compress(bytes(64 << 20), 9)
    return gzip.compress(head, 9) + member * max(1, megabytes // 64)


def cifar_pickle(data, labels, protocol: int = 2) -> bytes:
    return pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"}, protocol)


def cifar_folder(root: Path, train: bytes | None = None, count: int = 10) -> None:
    """data_batch_1..5 and test_batch (python form), the first training batch replaceable."""
    root.mkdir(parents=True, exist_ok=True)
    good = cifar_pickle(np.zeros((count, 3072), np.uint8), [i % 10 for i in range(count)])
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(train if (i == 1 and train is not None) else good)
    (root / "test_batch").write_bytes(good)


def nested_labels_pickle(depth: int = 10, width: int = 10) -> bytes:
    """~1 KiB that unpickles to a list nested ``depth`` deep, ``width`` wide, each level the
    same memoised list: ``width**depth`` labels once numpy flattens it."""
    level: list = [0] * width
    for _ in range(depth - 1):
        level = [level] * width
    return cifar_pickle(np.zeros((10, 3072), np.uint8), level)


def malicious_pickle() -> bytes:
    """A pickle that would run ``os.system`` when loaded (a harmless command)."""
    return b"cos\nsystem\n(S'true'\ntR."


def recursive_pickle(depth: int = 200_000) -> bytes:
    """A list nested ``depth`` deep, written as opcodes (pickle.dumps itself would recurse)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


# --------------------------------------------------------------------------------- checkpoints


def _checksum(arrays: dict) -> str:
    """The checksum of today's format: SHA-256 over every array but the header, by name."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def edit_checkpoint(path: Path, header=None, arrays=None, reseal: bool = True,
                    raw_header: bytes | None = None) -> None:
    """Rewrite the checkpoint at ``path``: ``header(dict) -> new header`` (any JSON value),
    ``arrays(dict) -> None`` edits the arrays in place; ``reseal`` recomputes the checksum, as
    a careful forger would."""
    with np.load(path, allow_pickle=False) as archive:
        members = {key: archive[key] for key in archive.files}
    meta = json.loads(members.pop("header").tobytes().decode())
    if arrays is not None:
        arrays(members)
    if reseal and isinstance(meta, dict):
        meta["checksum"] = _checksum(members)
    if header is not None:
        meta = header(meta)
        if reseal and isinstance(meta, dict) and "checksum" in meta:
            meta["checksum"] = _checksum(members)
    text = raw_header if raw_header is not None else json.dumps(meta).encode()
    members["header"] = np.frombuffer(text, np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **members)


# ------------------------------------------------------------------------------- special files


def special(path: Path, kind: str) -> None:
    """Make ``path`` a special thing: fifo, socket, folder, devzero, devnull, devfull, loop
    (a symlink loop), dangling, empty, proc (a symlink into /proc)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.is_file():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    elif kind == "folder":
        path.mkdir()
    elif kind in ("devzero", "devnull", "devfull", "devurandom"):
        path.symlink_to("/dev/" + kind[3:])
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "dangling":
        path.symlink_to(path.parent / "no-such-target")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "proc":
        path.symlink_to("/proc/self/mem")
    else:
        raise ValueError(kind)


SPECIALS = ("fifo", "socket", "folder", "devzero", "devnull", "loop", "dangling", "empty")
