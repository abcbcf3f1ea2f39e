"""Hostile input files: each class of file an attacker (or a broken disk) can hand convgraph is
refused at once with a DataError naming the file (exit 5), never a hang, a traceback, exit 70 or
an allocation of what a header merely claims.

The files are written here byte by byte (numpy, zipfile, gzip, struct, pickle) in tmp_path. The
CLI runs in-process where nothing can block, and as a subprocess under a timeout where a FIFO
could block it; the claims "far beyond memory" run the loaders in a subprocess whose address
space is limited (RLIMIT_AS) to a few hundred MiB above what it has, so an allocation of the
claimed size would fail there as a MemoryError instead of passing unnoticed on an overcommitting
kernel.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from convgraph.core import Volume
from convgraph.data import load_dataset
from convgraph.errors import DataError

from .conftest import tiny_images

SPEC = 'input: 8x8x1\npattern: "[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]"\n'
VOLUME = Volume(8, 8, 1)
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds for a subprocess: a blocked read fails the test instead of hanging it


@pytest.fixture
def spec(write_spec):
    return write_spec(SPEC)


def run_args(spec, data, kind="npz"):
    return ("run", spec, "--dataset", kind, "--data", data, "--limit", 64, "--epochs", 1)


def refused(status, err, *fragments):
    """The CLI said one 'convgraph: error:' paragraph holding every fragment and exited 5."""
    assert status == 5, err
    assert err.startswith("convgraph: error: ") and "Traceback" not in err, err
    assert "internal error" not in err
    for fragment in fragments:
        assert str(fragment) in err, (fragment, err)


def subprocess_cli(*args):
    """(status, stderr) of ``python -m convgraph.cli ARGS`` run to completion within TIMEOUT."""
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    return done.returncode, done.stderr


def limited(code: str, margin_mib: int = 256) -> tuple[int, str]:
    """Run ``code`` (Python using ``load_dataset``, ``Volume``, ``load_arrays``) in a subprocess
    whose address space may grow by only ``margin_mib`` MiB once convgraph is imported; it exits
    5 with the message on a DataError, 70 on a MemoryError, 0 when nothing was refused."""
    program = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from PIL import Image
        from convgraph.core import Volume
        from convgraph.data import load_dataset
        from convgraph.errors import DataError
        from convgraph.params import load_arrays
        with open("/proc/self/status") as status:
            size = next(int(line.split()[1]) * 1024 for line in status
                        if line.startswith("VmSize:"))
        limit = size + MARGIN * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
        CODE
        except DataError as error:
            print(error)
            sys.exit(5)
        except MemoryError:
            print("MemoryError")
            sys.exit(70)
        sys.exit(0)
    """).replace("MARGIN", str(margin_mib)).replace("CODE", textwrap.indent(code, "    "))
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=ROOT, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def error_of(function, *args) -> str:
    with pytest.raises(DataError) as caught:
        function(*args)
    return str(caught.value)


def load(kind, path, split="train", volume=VOLUME, classes=4):
    return load_dataset(kind, str(path), split, volume, classes)


# ------------------------------------------------------------------------- hostile file writers


def npy_bytes(shape, descr="|u1", data: bytes = b"", fortran=False) -> bytes:
    """A .npy file whose header claims ``shape`` of ``descr``, followed by ``data`` (which need
    not be as long as the header claims)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)})
    return buffer.getvalue() + data


def write_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def good_arrays(count=64, classes=4):
    x, y = tiny_images(count=count, classes=classes)
    return x, y


def write_npz(path: Path, **arrays) -> Path:
    x, y = good_arrays()
    content = {"x": x, "y": y, "x_test": x[:16], "y_test": y[:16]}
    content.update(arrays)
    np.savez(path, **content)
    return path


def idx(magic: int, shape, data: bytes) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(shape)}I", *shape) + data


def write_mnist(folder: Path, *, images: bytes | None = None, labels: bytes | None = None,
                gz=True) -> Path:
    """The four IDX files of a tiny 8x8 MNIST, with the train images or labels file replaced
    by the bytes given (already compressed or not, as they are to be written)."""
    folder.mkdir(exist_ok=True)
    x, y = good_arrays()
    for prefix, count in (("train", 64), ("t10k", 16)):
        image_bytes = idx(2051, (count, 8, 8), x[:count, 0].tobytes())
        label_bytes = idx(2049, (count,), y[:count].astype(np.uint8).tobytes())
        if prefix == "train" and images is not None:
            image_bytes = images
        elif gz:
            image_bytes = gzip.compress(image_bytes)
        if prefix == "train" and labels is not None:
            label_bytes = labels
        elif gz:
            label_bytes = gzip.compress(label_bytes)
        ext = ".gz" if gz else ""
        (folder / f"{prefix}-images-idx3-ubyte{ext}").write_bytes(image_bytes)
        (folder / f"{prefix}-labels-idx1-ubyte{ext}").write_bytes(label_bytes)
    return folder


def gzip_stream(chunks) -> bytes:
    """gzip of the concatenated chunks, compressed as they come (a bomb never exists whole)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    return b"".join(compressor.compress(chunk) for chunk in chunks) + compressor.flush()


def png(width: int, height: int, mode_byte: int = 0, depth: int = 8, rows: bytes | None = None):
    """A PNG of ``width`` x ``height`` (colour type ``mode_byte``, bit ``depth``); its pixel
    data ``rows`` (default: one blank row), so a huge size costs nothing to write."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, depth, mode_byte, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"\0" * (width + 1))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def image_folder(root: Path, names=("a", "b", "c", "d")) -> Path:
    from PIL import Image

    x, _ = good_arrays(count=8)
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        Image.fromarray(x[i, 0]).save(root / name / "0.png")
    return root


class _Reduce:
    """Pickles as ``function(*args)``: how a hostile pickle asks for a call."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _reconstruct():
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


# ------------------------------------------------------------------- 1. regular files only

SPECIAL = ["fifo", "dev-zero-link", "socket", "folder"]


def make_special(path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero-link":
        path.symlink_to("/dev/zero")
    elif kind == "socket":
        import socket

        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()  # the socket file stays
    else:
        path.mkdir()
    return path


WHAT = {"fifo": "named pipe", "dev-zero-link": "a device", "socket": "a socket",
        "folder": "is a folder"}


@pytest.mark.parametrize("kind", SPECIAL)
def test_npz_data_that_is_a_special_file_is_refused_at_once(spec, tmp_path, kind):
    path = make_special(tmp_path / "data.npz", kind)
    status, err = subprocess_cli(*run_args(spec, path))
    refused(status, err, path, WHAT[kind])


@pytest.fixture
def weights(spec, tmp_path):
    """A weights .npz that fits ``spec`` and an input .npy of 4 images for it."""
    import convgraph

    path = tmp_path / "weights.npz"
    np.savez(path, **convgraph.compile(spec, device="cpu", batch=4).params)
    np.save(tmp_path / "x.npy", good_arrays(count=4)[0])
    return path


@pytest.mark.parametrize("kind", SPECIAL)
def test_predict_input_and_weights_that_are_special_files_are_refused(spec, weights, tmp_path,
                                                                      kind):
    special = make_special(tmp_path / "special.npy", kind)
    status, err = subprocess_cli("run", spec, "--weights", weights, "--predict", special)
    refused(status, err, special, WHAT[kind])
    status, err = subprocess_cli("run", spec, "--weights", special, "--predict",
                                 tmp_path / "x.npy")
    refused(status, err, special, WHAT[kind])


def write_spec_file(tmp_path: Path) -> Path:
    """The tiny spec with 10 classes, as MNIST has."""
    path = tmp_path / "spec10.yaml"
    path.write_text(SPEC.replace("FC(4)", "FC(10)"))
    return path


@pytest.mark.parametrize("kind", ["fifo", "folder", "dev-zero-link"])
@pytest.mark.parametrize("which", ["images", "labels"])
def test_idx_file_that_is_a_special_file_is_named_as_such_not_missing(tmp_path, kind, which):
    folder = write_mnist(tmp_path / "mnist")
    path = folder / f"train-{which}-idx{3 if which == 'images' else 1}-ubyte.gz"
    path.unlink()
    make_special(path, kind)
    status, err = subprocess_cli(*run_args(write_spec_file(tmp_path), folder, "mnist"))
    refused(status, err, path, WHAT[kind])
    assert "missing" not in err


@pytest.mark.parametrize("form", ["bin", "py"])
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_cifar_batch_that_is_a_special_file_is_refused(tmp_path, form, kind):
    folder = tmp_path / "cifar"
    folder.mkdir()
    record = bytes(3073)
    for i in range(1, 6):
        name = f"data_batch_{i}" + (".bin" if form == "bin" else "")
        if i == 3:
            make_special(folder / name, kind)
        elif form == "bin":
            (folder / name).write_bytes(record)
        else:
            (folder / name).write_bytes(pickle.dumps(
                {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}))
    code = f"load_dataset('cifar10', {str(folder)!r}, 'train', Volume(32, 32, 3), 10)"
    status, out = limited(code)
    assert status == 5, out
    assert f"data_batch_3{'.bin' if form == 'bin' else ''}" in out and WHAT[kind] in out


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link"])
def test_image_in_a_folder_that_is_a_special_file_is_refused(spec, tmp_path, kind):
    root = image_folder(tmp_path / "images")
    special = make_special(root / "b" / "1.png", kind)
    status, err = subprocess_cli(*run_args(spec, root, "folder"))
    refused(status, err, special, WHAT[kind])


# ---------------------------------------------------------- 2. header claims against the file


def test_npz_member_claiming_a_trillion_images_is_refused_before_allocating(cli, spec, tmp_path):
    x, y = good_arrays()
    path = write_zip(tmp_path / "huge.npz", {
        "x.npy": npy_bytes((10**12, 1, 8, 8), data=x.tobytes()),
        "y.npy": npy_bytes((64,), "<i8", y.astype("<i8").tobytes()),
    })
    status, out = limited(f"load_dataset('npz', {str(path)!r}, 'train', Volume(8, 8, 1), 4)")
    assert status == 5, out
    assert str(path) in out and "'x'" in out and "64,000,000,000,000 bytes" in out
    assert "truncated" in out
    status, _, err = cli(*run_args(spec, path))
    refused(status, err, path, "1000000000000x1x8x8")


@pytest.mark.parametrize("shape", [(2**62, 2**62), (2**40, 1, 8, 8), (-1, 1, 8, 8)])
def test_predict_npy_header_with_a_huge_shape_is_refused(cli, spec, tmp_path, shape):
    path = tmp_path / "x.npy"
    path.write_bytes(npy_bytes(shape, "<f4", bytes(256)))
    status, out = limited(f"load_arrays({str(path)!r}, 'input')")
    assert status == 5, out
    assert str(path) in out
    status, _, err = cli("run", spec, "--predict", path, "--random-weights")
    refused(status, err, path)


def test_npz_member_longer_than_its_header_claims_is_refused(tmp_path):
    x, y = good_arrays()
    path = write_zip(tmp_path / "long.npz", {
        "x.npy": npy_bytes((32, 1, 8, 8), data=x.tobytes()),  # 64 images' bytes for 32
        "y.npy": npy_bytes((32,), "<i8", y[:32].astype("<i8").tobytes()),
    })
    message = error_of(load, "npz", path)
    assert str(path) in message and "longer than its header says" in message


@pytest.mark.parametrize("form", ["object", "pickle-member", "structured", "text", "complex"])
def test_npz_members_that_are_not_plain_numbers_are_refused_clearly(cli, spec, tmp_path, form):
    x, y = good_arrays()
    path = tmp_path / "odd.npz"
    if form == "object":
        write_npz(path, y=np.array([{"label": 1}] * 64, dtype=object))
    elif form == "pickle-member":  # a member that is a bare pickle, not an .npy at all
        write_zip(path, {"x.npy": pickle.dumps(x), "y.npy": pickle.dumps(y)})
    elif form == "structured":
        write_npz(path, y=np.zeros(64, [("label", "<i8"), ("weight", "<f4")]))
    elif form == "text":
        write_npz(path, y=np.array(["cat"] * 64))
    else:
        write_npz(path, x=x.astype(np.complex64))
    status, _, err = cli(*run_args(spec, path))
    refused(status, err, path)
    expected = {"object": "pickle", "pickle-member": "not a .npy array",
                "structured": "structured", "text": "text", "complex": "complex"}[form]
    assert expected in err


def test_npz_zip_directory_claiming_more_than_deflate_can_hold_is_refused(tmp_path):
    x, y = good_arrays()
    path = write_npz(tmp_path / "set.npz")
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    # an honest member, inflated from a few KB to ~300 MB of zeros: a decompression bomb
    members["x.npy"] = npy_bytes((300 * 2**14, 1, 8, 8)) + bytes(300 * 2**20)
    write_zip(path, members, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2 * 2**20
    status, out = limited(f"load_dataset('npz', {str(path)!r}, 'train', Volume(8, 8, 1), 4)",
                          margin_mib=128)
    assert status == 5, out
    assert str(path) in out and "decompression bomb" in out


def test_npz_truncated_inside_a_member_or_its_directory(tmp_path):
    path = write_npz(tmp_path / "set.npz")
    whole = path.read_bytes()
    for cut in (len(whole) - 30, len(whole) // 2, 40):
        path.write_bytes(whole[:cut])
        assert str(path) in error_of(load, "npz", path)


@pytest.mark.parametrize("shape", [(2**32 - 1, 2**32 - 1, 2**32 - 1), (2**31, 8, 8),
                                   (10**9, 8, 8)])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_dimensions_beyond_the_file_are_refused_before_allocating(tmp_path, shape, gz):
    raw = idx(2051, shape, bytes(64 * 8))
    folder = write_mnist(tmp_path / "mnist", images=gzip.compress(raw) if gz else raw, gz=gz)
    status, out = limited(f"load_dataset('mnist', {str(folder)!r}, 'train', "
                          "Volume(8, 8, 1), 10)")
    assert status == 5, out
    assert "train-images-idx3-ubyte" in out and f"{shape[0]}x{shape[1]}x{shape[2]}" in out
    assert ("decompression bomb" if gz else "truncated") in out


def test_idx_gzip_bomb_is_refused_after_reading_what_the_header_promises(tmp_path):
    # header: 64 images of 8x8, then 64 images and 400 MB of zeros more
    x, _ = good_arrays()
    head = idx(2051, (64, 8, 8), x[:, 0].tobytes())
    bomb = gzip_stream([head] + [bytes(2**20)] * 400)
    folder = write_mnist(tmp_path / "mnist", images=bomb)
    status, out = limited(f"load_dataset('mnist', {str(folder)!r}, 'train', "
                          "Volume(8, 8, 1), 10)", margin_mib=128)
    assert status == 5, out
    assert "train-images-idx3-ubyte.gz" in out and "longer than its header says" in out


def test_cifar_binary_batch_not_a_whole_number_of_records_is_refused(tmp_path):
    folder = tmp_path / "cifar"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(bytes(3073 * (2 if i != 4 else 1) + 7))
    message = error_of(load_dataset, "cifar10", str(folder), "train", Volume(32, 32, 3), 10)
    assert "data_batch_1.bin" in message and "3073-byte records" in message


def _hostile_pickles():
    """(name, object whose pickle is ~1 KB or less and asks for ~10 GB while unpickled)."""
    huge = 10**10
    return {
        "reconstruct": _Reduce(_reconstruct(), np.ndarray, (huge,), b"b"),
        "bytes": _Reduce(bytes, huge),
        "labels-list": _Reduce(list, _Reduce(bytearray, huge)),
        "dtype-subarray": _Reduce(_reconstruct(), np.ndarray, (8,),  # 8 items of 1 GiB
                                  _Reduce(np.dtype, ("u1", (2**15, 2**15)))),
    }


@pytest.mark.parametrize("name", list(_hostile_pickles()))
def test_cifar_pickle_expanding_to_ten_billion_labels_is_refused(tmp_path, name):
    folder = tmp_path / "cifar"
    folder.mkdir()
    labels = _hostile_pickles()[name]
    good = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}
    for i in range(1, 6):
        batch = {**good, b"labels": labels} if i == 2 else good
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    assert (folder / "data_batch_2").stat().st_size < 8192
    status, out = limited(f"load_dataset('cifar10', {str(folder)!r}, 'train', "
                          "Volume(32, 32, 3), 10)")
    assert status == 5, out
    assert "data_batch_2" in out and "refused before allocating" in out


def test_cifar_pickle_with_an_object_array_state_claiming_ten_billion_items(tmp_path):
    # the BUILD opcode: an empty array given (10**10,) objects as its state by __setstate__
    folder = tmp_path / "cifar"
    folder.mkdir()
    body = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b"
            b"\x87R(K\x01\x8a\x05" + (10**10).to_bytes(5, "little") + b"\x85cnumpy\ndtype\n"
            b"X\x02\x00\x00\x00O8\x89\x88\x87R(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xff"
            b"J\xff\xff\xff\xffK?tb\x89]K\x01atb.")
    (folder / "test_batch").write_bytes(body)
    status, out = limited(f"load_dataset('cifar10', {str(folder)!r}, 'test', "
                          "Volume(32, 32, 3), 10)")
    assert status == 5, out
    assert "test_batch" in out and "80,000,000,000 bytes" in out


# ----------------------------------------------------------------- 3. decompression bounded


def test_png_decompression_bomb_in_an_image_folder_is_refused(cli, spec, tmp_path):
    root = image_folder(tmp_path / "images")
    bomb = root / "c" / "bomb.png"
    bomb.write_bytes(png(100_000, 100_000))
    status, _, err = cli(*run_args(spec, root, "folder"))
    refused(status, err, bomb, "decompression bomb")
    # between Pillow's warning and its error (89M..179M pixels): an error too
    bomb.write_bytes(png(10_000, 10_000))
    status, _, err = cli(*run_args(spec, root, "folder"))
    refused(status, err, bomb, "decompression bomb")


def test_image_of_the_wrong_size_is_named_before_it_is_decoded(tmp_path):
    root = image_folder(tmp_path / "images")
    large = root / "a" / "large.png"
    large.write_bytes(png(9000, 9000))  # 81M pixels: under Pillow's limit, never decoded here
    status, out = limited(f"load_dataset('folder', {str(root)!r}, 'train', Volume(8, 8, 1), 4)",
                          margin_mib=64)
    assert status == 5, out
    assert str(large) in out and "9000x9000" in out and "8x8" in out


def test_sixteen_bit_image_is_refused_with_its_mode(tmp_path):
    root = image_folder(tmp_path / "images")
    deep = root / "d" / "deep.png"
    deep.write_bytes(png(8, 8, 0, 16, b"".join(b"\0" + b"\x12\x34" * 8 for _ in range(8))))
    message = error_of(load, "folder", root)
    assert str(deep) in message and "I;16" in message and "8-bit" in message


@pytest.mark.parametrize("garbage", [b"\x89PNG\r\n\x1a\n" + bytes(30), b"GIF89a" + bytes(5),
                                     b"BM" + bytes(60)])
def test_corrupt_image_is_refused_naming_it(tmp_path, garbage):
    root = image_folder(tmp_path / "images")
    bad = root / "a" / "bad.png"
    bad.write_bytes(garbage)
    message = error_of(load, "folder", root)
    assert str(bad) in message


# ------------------------------------------------------------ 4. non-finite values never pass


@pytest.mark.parametrize(("split", "value", "shown"), [
    ("train", np.nan, "NaN"), ("train", np.inf, "+inf"), ("test", -np.inf, "-inf"),
    ("test", np.nan, "NaN"), ("train", 1e39, "+inf")])
def test_npz_with_a_non_finite_pixel_is_refused_naming_split_and_place(cli, spec, tmp_path, split,
                                                                        value, shown):
    x, y = good_arrays()
    x = x.astype(np.float64 if value == 1e39 else np.float32) / 255
    bad = x.copy()
    bad[5, 0, 2, 3] = value
    path = tmp_path / "bad.npz"
    if split == "train":
        np.savez(path, x=bad, y=y, x_test=x[:16], y_test=y[:16])
    else:
        np.savez(path, x=x, y=y, x_test=bad[:16], y_test=y[:16])
    status, _, err = cli(*run_args(spec, path))
    key = "x" if split == "train" else "x_test"
    refused(status, err, path, f"'{key}' (the {split} split)", shown,
            "image 5 (channel 0, row 2, column 3)")


def test_predict_input_with_nan_is_refused_naming_the_file_and_image(cli, spec, tmp_path):
    x = np.full((3, 1, 8, 8), 0.5, np.float32)
    x[2, 0, 7, 1] = np.nan
    path = tmp_path / "x.npy"
    np.save(path, x)
    status, _, err = cli("run", spec, "--predict", path, "--random-weights")
    refused(status, err, path, "NaN", "image 2 (channel 0, row 7, column 1)")


def test_model_forward_and_predict_refuse_non_finite_input(spec):
    import convgraph

    model = convgraph.compile(spec, device="cpu", batch=4)
    x = np.full((3, 1, 8, 8), 0.5, np.float32)
    assert model.predict(x).shape == (3, 4)
    x[1, 0, 4, 6] = np.inf
    for method in (model.forward, model.predict):
        message = error_of(method, x)
        assert "+inf" in message and "image 1 (channel 0, row 4, column 6)" in message
    message = error_of(model.predict, np.full((2, 1, 8, 8), 1e300))  # finite, not in float32
    assert "image 0" in message and "float32" in message
    message = error_of(model.predict, np.ones((2, 1, 8, 8), np.complex64))
    assert "real numbers" in message


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_split_of_zero_images_is_refused(cli, spec, tmp_path, split):
    x, y = good_arrays()
    path = tmp_path / "empty.npz"
    if split == "train":
        np.savez(path, x=x[:0], y=y[:0], x_test=x[:16], y_test=y[:16])
    else:
        np.savez(path, x=x, y=y, x_test=x[:0], y_test=y[:0])
    status, _, err = cli(*run_args(spec, path))
    refused(status, err, path, f"the {split} split", "no images")


def test_weights_with_nan_are_refused_naming_the_file(cli, spec, tmp_path):
    import convgraph

    model = convgraph.compile(spec, device="cpu", batch=4)
    params = dict(model.params)
    key = next(iter(params))
    params[key] = params[key].copy()
    params[key].flat[3] = np.nan
    path = tmp_path / "w.npz"
    np.savez(path, **params)
    x, _ = good_arrays(count=4)
    np.save(tmp_path / "x.npy", x)
    status, _, err = cli("run", spec, "--weights", path, "--predict", tmp_path / "x.npy")
    refused(status, err, path, key, "NaN")
