"""Bounded reading of ``.npy`` and ``.npz`` files: every claim checked before anything is allocated.

``numpy.load`` believes a file's header: an ``.npy`` header that claims (10**12, 3, 32, 32) makes it
allocate that much before it finds the data missing, an object array makes it fail deep inside, and
a deflated zip member is decompressed to whatever size the zip's directory says. Here each member
is read in four steps, each refusing with a DataError that names the file and the member:

1. the zip directory: only stored or deflated members (what ``numpy.savez`` and
   ``savez_compressed`` write), each no larger than MAX_EXPANSION times its compressed size
   (a decompression bomb is refused before it is inflated) and than the memory left;
2. the ``.npy`` header (at most 64 KiB): a plain numeric dtype (no objects, which numpy stores as
   pickles, no records, strings or sub-arrays) and a shape of non-negative sizes;
3. shape x item size against the bytes the member holds: equal, or the file is refused;
4. only then one buffer of exactly that size, filled from the member (never more than it holds).

>>> with NpzReader("data.npz", "the npz data set") as archive:  # doctest: +SKIP
...     x = archive.read("x")
"""

from __future__ import annotations

import ast
import math
import os
import struct
import zipfile
import zlib

import numpy as np

from convgraph.errors import DataError
from convgraph.files import readable_file

_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 65536  # numpy writes headers of ~100 bytes; its own limit is 10,000
# Deflate can expand 1032:1 (a 258-byte match coded in 2 bits), so a 1 MB file can claim a GB.
# Real data sets compress 2:1 to 10:1 (MNIST's gzip files 5:1), near-blank images perhaps 50:1;
# more than this is refused as a decompression bomb before anything is decompressed.
MAX_EXPANSION = 200
_KINDS = "biuf"  # bool, signed, unsigned, floating point: the only dtypes a data file needs
_NAMES = {"b": "booleans", "i": "integers", "u": "unsigned integers", "f": "floats",
          "c": "complex numbers", "O": "Python objects", "U": "text", "S": "bytes",
          "V": "records", "M": "dates", "m": "time spans"}


def expandable(compressed: int) -> int:
    """The most bytes ``compressed`` bytes of deflate (zip or gzip) data may decompress to:
    MAX_EXPANSION times as many, and 64 KiB for tiny files."""
    return MAX_EXPANSION * compressed + 65536


def available_memory() -> int | None:
    """Bytes of memory this process could still get (MemAvailable; else physical memory)."""
    try:
        with open("/proc/meminfo", "rb") as handle:
            for line in handle.read(65536).splitlines():
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_memory(nbytes: int, where: str) -> None:
    """DataError unless ``nbytes`` (what a file claims to hold) fits in the memory left."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise DataError(f"{where} claims {nbytes:,} bytes of data, more than the "
                        f"{free:,} bytes of memory this machine has free; it was not loaded.",
                        hint="use a smaller file (or a subset of it), or a machine with more "
                             "memory.")


def dtype_problem(dtype: np.dtype) -> str | None:
    """Why ``dtype`` cannot be read from a data file, or None when it can."""
    if dtype.hasobject:
        return ("an object array, which numpy stores as a pickle; pickles are never loaded "
                "(unpickling can run code)")
    if dtype.fields is not None or dtype.subdtype is not None:
        return f"a structured array ({dtype}); plain numeric arrays are expected"
    if dtype.kind not in _KINDS:
        return (f"{_NAMES.get(dtype.kind, dtype.kind)} ({dtype}); numbers (booleans, integers "
                "or floats) are expected")
    return None


def _read_exactly(handle, count: int) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise EOFError(f"it ends after {len(data)} of {count} bytes")
    return data


def read_npy_header(handle, where: str, container: str = ".npy"
                    ) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header bytes) of the ``.npy`` data at ``handle``'s start;
    ``container`` (".npy" or ".npz") is the kind of file named in messages."""
    try:
        magic = handle.read(8)
        if len(magic) < 8 or magic[:6] != _MAGIC:
            raise DataError(f"{where} is not a .npy array (it does not start with the .npy "
                            "magic bytes).")
        major = magic[6]
        if major == 1:
            (length,) = struct.unpack("<H", _read_exactly(handle, 2))
            start = 10
        elif major in (2, 3):
            (length,) = struct.unpack("<I", _read_exactly(handle, 4))
            start = 12
        else:
            raise DataError(f"{where} is a .npy file of format version {major}, which is not "
                            "known (1, 2 and 3 are).")
        if length > _MAX_HEADER:
            raise DataError(f"{where} has a .npy header of {length:,} bytes (numpy writes about "
                            f"100; at most {_MAX_HEADER:,} are read).")
        text = _read_exactly(handle, length).decode("utf-8" if major == 3 else "latin1")
        header = ast.literal_eval(text)
    except DataError:
        raise
    except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as why:
        raise DataError(f"{where} is truncated or corrupt inside its .npy header ({why}).",
                        hint="write the file again.") from None
    except Exception as why:  # literal_eval: SyntaxError, ValueError, RecursionError, MemoryError
        raise DataError(f"{where} has a .npy header that cannot be parsed "
                        f"({type(why).__name__}).", hint="write the file again.") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise DataError(f"{where} has a .npy header that is not numpy's (a dict of descr, "
                        "fortran_order and shape).", hint="write the file again with numpy.")
    shape, fortran = header["shape"], header["fortran_order"]
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape) \
            or len(shape) > 32:
        raise DataError(f"{where} has a .npy header whose shape {shape!r} is not a tuple of "
                        "at most 32 sizes of 0 or more.", hint="write the file again.")
    if not isinstance(fortran, bool):
        raise DataError(f"{where} has a .npy header whose fortran_order is {fortran!r}, not "
                        "True or False.", hint="write the file again.")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except Exception as why:  # TypeError, ValueError, RecursionError from a hostile descr
        raise DataError(f"{where} has a .npy header with an unknown dtype "
                        f"{str(header['descr'])[:80]!r} ({type(why).__name__}).",
                        hint="write the file again.") from None
    problem = dtype_problem(dtype)
    if problem:
        raise DataError(f"{where} is not a readable {container} file: it holds {problem}.",
                        hint="save plain numeric arrays (numpy.savez with uint8, integer or "
                             "float32 arrays).")
    return shape, fortran, dtype, start + length


def read_npy_data(handle, where: str, shape, fortran: bool, dtype: np.dtype,
                  available: int) -> np.ndarray:
    """The array after a header already read: its size (shape x item size, exact integers)
    checked against the ``available`` bytes before a buffer of exactly that size is filled."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != available:
        state = "truncated" if available < nbytes else "longer than its header says"
        raise DataError(
            f"{where} is {state}: its header claims an array of shape "
            f"{'x'.join(map(str, shape)) or '()'} of {dtype} ({nbytes:,} bytes), but it holds "
            f"{available:,} bytes of data.", hint="write the file again.")
    check_memory(nbytes, where)
    buffer = bytearray(nbytes)
    view, filled = memoryview(buffer), 0
    try:
        while filled < nbytes:
            got = handle.readinto(view[filled:])
            if not got:
                raise EOFError(f"it ends after {filled:,} of {nbytes:,} bytes")
            filled += got
        if handle.read(1):
            raise DataError(f"{where} is longer than its header says.",
                            hint="write the file again.")
    except DataError:
        raise
    except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as why:
        raise DataError(f"{where} is truncated or corrupt ({why}).",
                        hint="write the file again.") from None
    array = np.frombuffer(buffer, dtype)
    if fortran:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def read_npy(path, what: str) -> np.ndarray:
    """The array of the ``.npy`` file ``path`` (a regular file), read within its size."""
    path = readable_file(path, what)
    where = f"{what} {path}"
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            shape, fortran, dtype, header = read_npy_header(handle, where)
            return read_npy_data(handle, where, shape, fortran, dtype, size - header)
    except OSError as why:
        raise DataError(f"{where} cannot be read: {why.strerror or why}.") from None


class NpzReader:
    """The members of an ``.npz`` (a zip of ``.npy`` files), each read only when asked for and
    only after the zip's and the member's claims are checked against the file.

    ``files`` lists the array names as ``numpy.load`` does (member names without ``.npy``).
    """

    def __init__(self, path, what: str):
        self.path = readable_file(path, what)
        self.what = what
        self.where = f"{what} {self.path}"
        try:
            self.size = self.path.stat().st_size
            with open(self.path, "rb") as handle:
                head = handle.read(4)
        except OSError as why:
            raise DataError(f"{self.where} cannot be read: {why.strerror or why}.") from None
        if not head.startswith(b"PK"):
            raise DataError(f"{self.where} is not an .npz file (it does not start like a zip "
                            "archive).")
        try:
            self.zip = zipfile.ZipFile(self.path)
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
                NotImplementedError, struct.error, UnicodeDecodeError) as why:
            raise DataError(f"{self.where} is not a readable .npz file; it may be truncated or "
                            f"corrupt ({why}).") from None
        self.members = {}
        for info in infos:
            if info.is_dir():
                continue
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self.members.setdefault(name, info)
        self.files = list(self.members)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.zip.close()

    def __contains__(self, key) -> bool:
        return key in self.members

    def read(self, key: str) -> np.ndarray:
        """The array ``key``, or DataError naming the file and the member."""
        info = self.members[key]
        where = f"{self.where} ('{key}')"
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DataError(f"{where} is compressed with zip method {info.compress_type}; "
                            "numpy writes only stored or deflated members.",
                            hint="save it with numpy.savez or numpy.savez_compressed.")
        if info.flag_bits & 0x1:
            raise DataError(f"{where} is encrypted.", hint="save it without a password.")
        limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED \
            else expandable(info.compress_size)
        if info.compress_size > self.size or info.file_size > limit:
            raise DataError(f"{where}: the zip directory claims {info.file_size:,} bytes from "
                            f"{info.compress_size:,} compressed bytes in a {self.size:,}-byte "
                            f"file (at most {MAX_EXPANSION} times as many are read); it is "
                            "corrupt or a decompression bomb, and was not inflated.",
                            hint="write the file again, uncompressed (numpy.savez).")
        try:
            with self.zip.open(info) as handle:
                shape, fortran, dtype, header = read_npy_header(handle, where, ".npz")
                return read_npy_data(handle, where, shape, fortran, dtype,
                                     info.file_size - header)
        except DataError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
                RuntimeError, struct.error, zlib.error) as why:
            raise DataError(f"{where} cannot be read; the file may be truncated or corrupt "
                            f"({why}).", hint="write the file again.") from None

    def read_all(self) -> dict[str, np.ndarray]:
        return {key: self.read(key) for key in self.files}


def all_finite(array: np.ndarray) -> bool:
    """Whether every value of ``array`` is a finite number, in one pass and no temporaries.

    A float array's dot product with itself is NaN or infinite when any value is (NaN
    propagates through every product and sum, and an infinity squares to +inf), so the common
    case costs one BLAS pass: 15 us for a batch of 64 CIFAR images, against 27 us for a
    ``first_nonfinite`` search, which the input check ran twice (2026-12-02). A non-finite
    dot product can also be a finite array whose squares overflow (values beyond ~1e17 in
    float32): only then does the exact search decide."""
    if array.dtype.kind not in ("f", "c"):
        return True  # integers and booleans are always finite
    if array.dtype in (np.float32, np.float64) and array.flags.c_contiguous and array.size:
        flat = array.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            if math.isfinite(float(np.dot(flat, flat))):
                return True
    return first_nonfinite(array) is None


def first_nonfinite(array: np.ndarray) -> tuple[int, ...] | None:
    """The index of the first NaN or infinite value of ``array`` (C order), or None.

    Searched in chunks of the first axis, so the temporaries stay small for a big data set."""
    if array.dtype.kind not in ("f", "c"):  # float or complex
        return None
    if array.ndim == 0:
        return None if np.isfinite(array) else ()
    rows = max(1, (1 << 22) // max(1, array[:1].size))
    for start in range(0, array.shape[0], rows):
        bad = ~np.isfinite(array[start:start + rows])
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad)), bad.shape)
            return (start + int(index[0]),) + tuple(int(i) for i in index[1:])
    return None


def describe_value(value) -> str:
    value = float(value)
    return "NaN" if math.isnan(value) else ("+inf" if value > 0 else "-inf")


def place(index: tuple[int, ...], images: bool = True) -> str:
    """Where ``index`` is, as messages say it: ``image 3 (channel 0, row 2, column 5)`` for an
    index into (N, depth, height, width) images, else ``index (1, 2)``."""
    if not images or not index:
        return f"index {index}"
    text = f"image {index[0]}"
    if len(index) == 4:
        text += f" (channel {index[1]}, row {index[2]}, column {index[3]})"
    return text
