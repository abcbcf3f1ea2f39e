"""The hostile-input corpus: several hundred cases generated from compact tables, one function
per class of issue 12's findings and beyond them. ``corpus()`` is the whole corpus, each case's
``quick`` flag marks the CI subset (a few per class).

Exit statuses come from errors.py's table (the classes' ``exit_status``); where the issue leaves
the choice open (say, a lock refusal), a case allows the statuses that the table permits.
"""

from __future__ import annotations

import gzip
import json
import signal
from pathlib import Path

import numpy as np

from convgraph.errors import (
    DataError,
    DeviceError,
    OutputError,
    SpecError,
    TrainingDiverged,
    UsageError,
)
from tests.hostile import make as mk
from tests.hostile.case import KEEP, Case

OK, USAGE, SPEC, DATA = 0, UsageError.exit_status, SpecError.exit_status, DataError.exit_status
DEVICE, DIVERGED, OUTPUT = DeviceError.exit_status, TrainingDiverged.exit_status, \
    OutputError.exit_status
INT, HUP, TERM = 130, 129, 143

TRAIN = ("run", "spec.yaml", "--limit", "64", "--epochs", "1")
LONG = ("run", "spec.yaml", "--limit", "64", "--epochs", "3000")  # ~30 s: a signal lands in it


def predict(path: str, *extra) -> tuple:
    return ("run", "spec.yaml", "--weights", "weights.npz", "--predict", path, *extra)


def _quick(cases: list[Case], every: int) -> list[Case]:
    """Mark every ``every``-th case (the first included) as part of the quick subset."""
    return [Case(**{**c.__dict__, "quick": c.quick or i % every == 0}) for i, c in
            enumerate(cases)]


def _writer(name: str, data) -> callable:
    """make(): write ``data`` (bytes, str, or npz members) at ``name`` in the case folder."""
    def make(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        elif isinstance(data, str):
            path.write_text(data)
        elif callable(data):
            data(path)
        else:
            mk.write_npz(path, data)
    return make


def _spec(text: str, name: str = "net.yaml"):
    return _writer(name, text)


# --------------------------------------------------------------------------- non-finite data


def nonfinite() -> list[Case]:
    cases = []
    values = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}
    where = {"first": (0, 0, 0, 0), "middle": (40, 0, 3, 5), "last": (-1, 0, 7, 7)}
    for vname, value in values.items():
        for wname, index in where.items():
            for dtype in (np.float32, np.float64, np.float16):
                for split in ("train", "test"):
                    if split == "test":
                        index = {"first": index, "middle": (20, 0, 3, 5),
                                 "last": (31, 0, 7, 7)}[wname]
                    members = mk.poisoned(value, index, dtype, split)
                    cases.append(Case(
                        f"nonfinite/{split}-{vname}-{wname}-{np.dtype(dtype).name}", "nonfinite",
                        TRAIN + ("--data", "bad.npz", "--checkpoint-dir", "ckpt"), (DATA,),
                        make=_writer("bad.npz", members), message="bad.npz",
                        keep=("weights.npz",), updates=("ckpt/last.npz", "ckpt/best.npz")))
    for vname, value in values.items():  # --predict inputs
        for label in ("all", "one"):
            x = np.full((4, 1, 8, 8), 100.0, np.float32)
            if label == "all":
                x[:] = value
            else:
                x[2, 0, 4, 4] = value
            cases.append(Case(f"nonfinite/predict-{label}-{vname}-npy", "nonfinite",
                              predict("bad.npy"), (DATA,),
                              make=_writer("bad.npy", mk.array_bytes(x)), message="bad.npy"))
            cases.append(Case(f"nonfinite/predict-{label}-{vname}-npz", "nonfinite",
                              predict("bad.npz"), (DATA,),
                              make=_writer("bad.npz", {"x": x}), message="bad.npz"))
    for vname, value in values.items():  # weights and checkpoints holding non-finite values
        def poison(members, value=value):
            key = next(k for k in sorted(members) if k.startswith("param/"))
            members[key] = np.full_like(members[key], value)
        def poison_weights(path, value=value):
            with np.load(Path(path).parent / "weights.npz") as archive:
                arrays = {k: archive[k] for k in archive.files}
            mk.edit_checkpoint  # noqa: B018 - same format as a checkpoint
            key = next(k for k in sorted(arrays) if k.startswith("param/"))
            arrays[key] = np.full_like(arrays[key], value)
            arrays.pop("header")
            mk.write_npz(path, arrays)
        for command, label in ((("eval", "spec.yaml", "--weights", "ckpt/last.npz"), "eval"),
                               (("run", "spec.yaml", "--weights", "ckpt/last.npz", "--predict",
                                 "x.npy"), "predict"),
                               (("run", "spec.yaml", "--checkpoint-dir", "ckpt", "--resume",
                                 "--epochs", "2", "--limit", "64"), "resume")):
            cases.append(Case(f"nonfinite/checkpoint-{vname}-{label}", "nonfinite", command,
                              (DATA,), make=lambda f, p=poison: mk.edit_checkpoint(
                                  f / "ckpt/last.npz", arrays=p), message="last.npz"))
        cases.append(Case(f"nonfinite/weights-file-{vname}", "nonfinite",
                          ("eval", "spec.yaml", "--weights", "w.npz"), (DATA,),
                          make=_writer("w.npz", poison_weights), message="w.npz"))
    for lr in ("1e30", "1e38", "3e38"):  # the training guard: diverged, last good kept
        cases.append(Case(f"nonfinite/diverging-lr-{lr}", "nonfinite",
                          ("run", "spec.yaml", "--limit", "64", "--epochs", "2", "--lr", lr,
                           "--checkpoint-dir", "ckpt"), (DIVERGED, USAGE),
                          keep=("weights.npz",), updates=("ckpt/last.npz", "ckpt/best.npz")))
    for big in (1e30, 3e38, -3e38):  # finite pixels; the last two overflow float32 statistics
        x, y = mk.tiny_set()
        images = x.astype(np.float32)
        images[0, 0, 0, 0] = big
        cases.append(Case(f"nonfinite/huge-pixel-{big:g}", "nonfinite",
                          TRAIN + ("--data", "bad.npz", "--checkpoint-dir", "ckpt"),
                          (DATA, DIVERGED, OK),  # OK: statistics in float64 stay finite
                          make=_writer("bad.npz", mk.data_members(x=images)),
                          updates=("ckpt/last.npz", "ckpt/best.npz"), keep=("weights.npz",)))
    return _quick(cases, 12)


# ------------------------------------------------------------------------------- concurrency


def concurrent() -> list[Case]:
    cases = []
    run = ("run", "spec.yaml", "--limit", "64", "--epochs", "150", "--checkpoint-dir")
    for folder in ("shared", "ckpt"):
        updates = ("ckpt/last.npz", "ckpt/best.npz") if folder == "ckpt" else ()
        keep = ("weights.npz",) if folder == "ckpt" else KEEP
        for seeds in ((0, 0), (0, 1)):
            cases.append(Case(f"concurrent/two-runs-{folder}-seeds-{seeds[0]}{seeds[1]}",
                              "concurrent", run + (folder, "--seed", str(seeds[0])),
                              (OK, OUTPUT, USAGE),
                              alongside=run + (folder, "--seed", str(seeds[1])),
                              keep=keep, updates=updates or (f"{folder}/last.npz",),
                              timeout=120))
        cases.append(Case(f"concurrent/run-and-resume-{folder}", "concurrent",
                          run + (folder,), (OK, OUTPUT, USAGE, DATA),
                          alongside=run + (folder, "--resume"), keep=keep,
                          updates=updates or (f"{folder}/last.npz",), timeout=120))
    for name in (".last.npz.abc123.tmp", ".best.npz.zz.tmp"):  # another writer's temporary file
        cases.append(Case(f"concurrent/stale-temporary-{name}", "concurrent",
                          TRAIN + ("--checkpoint-dir", "ckpt"), (OK,),
                          make=_writer(f"ckpt/{name}", b"partial"), keep=("weights.npz",),
                          updates=("ckpt/last.npz", "ckpt/best.npz")))
    return _quick(cases, 3)


# --------------------------------------------------------------------------- memory estimate


def memory() -> list[Case]:
    cases = []
    for volume in ("2000x2000x3", "4000x4000x3", "100000x100000x3"):
        text = (f"name: big\ninput: {volume}\npattern: \"[INPUT-CONV(4, 3, pad=1)-RELU-POOL-"
                "FC(4)]\"\ntrain: {dataset: embedded}\n")
        fits = (OK, DEVICE) if volume != "100000x100000x3" else (DEVICE,)  # a CPU may hold it
        commands = {"compile": (("compile", "net.yaml"), fits),
                    "run": (("run", "net.yaml", "--epochs", "1", "--limit", "64"),
                            (DEVICE, DATA)),
                    "no-kernels": (("compile", "net.yaml", "--no-kernels"), (OK, DEVICE))}
        if volume == "100000x100000x3":  # a verify that fits is minutes of numpy, not a case
            commands["verify"] = (("run", "net.yaml", "--verify"), (DEVICE,))
        for label, (command, allowed) in commands.items():
            cases.append(Case(f"memory/{label}-{volume}", "memory", command, allowed,
                              make=_spec(text), timeout=60))
    for pad in (20000, 200000):
        text = (f"name: padded\ninput: 8x8x1\npattern: \"[INPUT-CONV(4, 3, pad={pad})-RELU-"
                "POOL-FC(4)]\"\n")
        for command in (("compile", "net.yaml"), ("run", "net.yaml", "--epochs", "1")):
            cases.append(Case(f"memory/{command[0]}-pad-{pad}", "memory", command,
                              (DEVICE, SPEC), make=_spec(text), timeout=60))
    for units in (10**6, 10**8):
        text = f"name: wide\ninput: 8x8x1\npattern: \"[INPUT-FC({units})-FC(4)]\"\n"
        cases.append(Case(f"memory/compile-fc-{units}", "memory", ("compile", "net.yaml"),
                          (OK, DEVICE) if units < 10**8 else (DEVICE, SPEC), make=_spec(text),
                          timeout=60))
    for batch in ("1000000", "100000000"):
        cases.append(Case(f"memory/compile-batch-{batch}", "memory",
                          ("compile", "spec.yaml", "--batch", batch),
                          (OK, DEVICE) if batch == "1000000" else (DEVICE, USAGE)))
        cases.append(Case(f"memory/run-batch-{batch}", "memory", TRAIN + ("--batch", batch),
                          (DEVICE, USAGE)))
    return _quick(cases, 6)


# ------------------------------------------------------------------------------ hostile files


def hostile_files() -> list[Case]:
    cases = []
    train_npz = TRAIN + ("--data", "bad.npz")

    def npz_case(name, members, message="bad.npz", expect=(DATA,)):
        cases.append(Case(f"files/npz-{name}", "hostile files", train_npz, expect,
                          make=_writer("bad.npz", members), message=message))

    x, y = mk.tiny_set()
    # headers that claim more than the file holds
    for label, shape in (("1e12-images", (10**12, 1, 8, 8)), ("2^62", (2**62, 1, 8, 8)),
                         ("overflow", (2**40, 2**40, 8, 8)), ("negative", (-1, 1, 8, 8)),
                         ("1e9", (10**9, 1, 8, 8))):
        header = mk.npy_bytes(mk.npy_header("|u1", shape), bytes(64))
        npz_case(f"header-{label}", {**mk.data_members(x=None), "x": header})
        npz_case(f"labels-header-{label}", {**mk.data_members(y=None),
                                            "y": mk.npy_bytes(mk.npy_header("<i8", shape[:1]),
                                                              bytes(64))})
    for label, header in (
            ("not-a-dict", "[1, 2, 3]"), ("garbage", "{'descr': lambda: 1}"),
            ("unknown-dtype", "{'descr': '<q9', 'fortran_order': False, 'shape': (96, 1, 8, 8), }"),
            ("object", mk.npy_header("|O", (96, 1, 8, 8))),
            ("fortran", mk.npy_header("|u1", (96, 1, 8, 8), fortran=True)),
            ("structured", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (96,), }"),
            ("huge-text", "{'descr': '|u1', 'fortran_order': False, 'shape': (96, 1, 8, 8), "
                          + "'x': 0, " * 7000 + "}")):
        npz_case(f"x-header-{label}", {**mk.data_members(x=None),
                                       "x": mk.npy_bytes(header, bytes(96 * 64))},
                 expect=(OK, DATA) if label == "fortran" else (DATA,))
    npz_case("header-v2-4GiB-length", {**mk.data_members(x=None),
                                       "x": b"\x93NUMPY\x02\x00\xff\xff\xff\xff{"})
    npz_case("header-v3", {**mk.data_members(x=None),
                           "x": mk.npy_bytes(mk.npy_header("|u1", (96, 1, 8, 8)),
                                             bytes(96 * 64), version=(3, 0))},
             expect=(OK, DATA))
    npz_case("truncated-body", {**mk.data_members(x=None),
                                "x": mk.array_bytes(x)[:-100]})
    npz_case("pickle-member", {**mk.data_members(x=None), "x": mk.malicious_pickle()})
    npz_case("object-array", {**mk.data_members(x=None),
                              "x": mk.array_bytes(np.array([x, "s"], dtype=object),
                                                  allow_pickle=True)})
    npz_case("pickled-labels", {**mk.data_members(y=None),
                                "y": mk.array_bytes(np.array(list(y), dtype=object),
                                                    allow_pickle=True)})
    zeros = np.zeros((0, 1, 8, 8), np.uint8)
    for label, members, expect in (
            ("zero-images", mk.data_members(x=zeros, y=np.zeros(0, np.int64)), (DATA,)),
            ("zero-test-images", mk.data_members(x_test=zeros, y_test=np.zeros(0, np.int64)),
             (DATA,)),
            ("labels-negative", mk.data_members(y=np.full(96, -1)), (DATA,)),
            ("labels-too-large", mk.data_members(y=np.full(96, 4)), (DATA,)),
            ("labels-huge", mk.data_members(y=np.full(96, 2**62)), (DATA,)),
            ("labels-float", mk.data_members(y=y.astype(np.float32)), (DATA,)),
            ("labels-float-nan", mk.data_members(y=np.full(96, np.nan)), (DATA,)),
            ("labels-bool", mk.data_members(y=y.astype(bool)), (DATA,)),
            ("labels-2d", mk.data_members(y=y[:, None]), (DATA,)),
            ("labels-short", mk.data_members(y=y[:10]), (DATA,)),
            ("labels-strings", mk.data_members(y=y.astype("U3")), (DATA,)),
            ("x-2d", mk.data_members(x=x.reshape(96, 64)), (DATA,)),
            ("x-5d", mk.data_members(x=x[:, None]), (DATA,)),
            ("x-scalar", mk.data_members(x=np.uint8(3)), (DATA,)),
            ("x-channels-last", mk.data_members(x=x.transpose(0, 2, 3, 1)), (DATA,)),
            ("x-16x16", mk.data_members(x=np.zeros((96, 1, 16, 16), np.uint8)), (DATA,)),
            ("x-3-channels", mk.data_members(x=np.zeros((96, 3, 8, 8), np.uint8)), (DATA,)),
            ("x-complex", mk.data_members(x=x.astype(np.complex64)), (DATA,)),
            ("x-strings", mk.data_members(x=x.astype("U3")), (DATA,)),
            ("x-bool", mk.data_members(x=x.astype(bool)), (DATA, OK)),
            ("x-int64-over-255", mk.data_members(x=x.astype(np.int64) * 100), (DATA,)),
            ("x-negative-ints", mk.data_members(x=x.astype(np.int16) - 300), (DATA,)),
            ("x-datetime", mk.data_members(x=x.astype("datetime64[s]")), (DATA,)),
            ("x-test-wrong-size", mk.data_members(x_test=np.zeros((32, 1, 4, 4), np.uint8)),
             (DATA,)),
            ("no-x", mk.data_members(x=None), (DATA,)),
            ("no-y", mk.data_members(y=None), (DATA,)),
            ("no-test-split", mk.data_members(x_test=None, y_test=None), (OK, DATA)),
            ("only-test-split", mk.data_members(x=None, y=None), (DATA,))):
        npz_case(label, members, expect=expect)
    for label, data in (("empty", b""), ("pk-only", b"PK"),
                        ("pk-garbage", b"PK\x03\x04" + bytes(60)),
                        ("text", b"hello"), ("a-pickle", mk.malicious_pickle()),
                        ("gzip", gzip.compress(b"x" * 100)), ("npy-not-npz", mk.array_bytes(x))):
        npz_case(f"file-{label}", data)

    def zip_with_folder(path):
        mk.write_npz(path, {**mk.data_members(), "dir/": b""})
    npz_case("zip-with-folder-member", zip_with_folder, expect=(OK, DATA))

    def zip_bomb(path):  # a member that inflates to 1 GiB (stored in ~1 MiB)
        import zipfile
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("y.npy", mk.array_bytes(y))
            with archive.open("x.npy", "w", force_zip64=True) as member:
                member.write(mk.npy_bytes(mk.npy_header("|u1", (2**24, 1, 8, 8))))
                block = bytes(1 << 24)
                for _ in range(64):
                    member.write(block)
    npz_case("zip-bomb-1GiB", zip_bomb, expect=(DATA, DEVICE))

    # PNG bombs and broken images in an image folder (the folder data set)
    folder_train = ("run", "spec.yaml", "--dataset", "folder", "--data", "imgs", "--limit", "64",
                    "--epochs", "1")

    def image_case(name, data, expect=(DATA,), quick=False):
        def make(folder, data=data):
            mk.image_folder(folder / "imgs")
            target = folder / "imgs/train/a/0.png"
            if callable(data):
                data(target)
            else:
                target.write_bytes(data)
        cases.append(Case(f"files/image-{name}", "hostile files", folder_train, expect,
                          make=make, message="0.png", needs="PIL", quick=quick, timeout=60))

    image_case("bomb-20000", lambda p: p.write_bytes(mk.png_bomb(20000)))
    image_case("bomb-claims-100000", mk.png_bytes(100000, 100000, rows=b"\x00"))
    image_case("bomb-claims-2^31", mk.png_bytes(2**31 - 1, 2**31 - 1, rows=b"\x00"))
    image_case("wide-1x10^7", lambda p: p.write_bytes(mk.png_bytes(10**7, 1)))
    image_case("truncated", mk.small_png()[:40])
    image_case("idat-truncated", mk.png_bytes(8, 8, truncate=5))
    image_case("empty", b"")
    image_case("not-an-image", b"not a png at all")
    image_case("16x16", mk.small_png(16))
    image_case("zero-size", mk.png_bytes(0, 0, rows=b""))
    for kind in ("fifo", "devzero", "folder", "loop", "dangling", "socket"):
        image_case(f"special-{kind}", lambda p, kind=kind: mk.special(p, kind),
                   expect=(OK, DATA) if kind == "folder" else (DATA,))

    # IDX files: overflowing dimensions, gzip bombs, truncation
    mnist_spec = ("name: digits\ninput: 28x28x1\npattern: \"[INPUT-CONV(4, 3, pad=1)-RELU-POOL-"
                  "FC(10)]\"\n")
    idx_run = ("run", "mnist.yaml", "--dataset", "mnist", "--data", "digits", "--limit", "16",
               "--epochs", "1")

    def idx_case(name, images=None, labels=None, gz=False, expect=(DATA,), message=None):
        def make(folder):
            (folder / "mnist.yaml").write_text(mnist_spec)
            mk.mnist_folder(folder / "digits", images() if callable(images) else images,
                            labels, gz=gz)
        cases.append(Case(f"files/idx-{name}", "hostile files", idx_run, expect, make=make,
                          message=message or "train-", timeout=60))

    for label, dims in (("overflow-2^32", (65536, 65536, 65536)), ("2^31", (2**31, 28, 28)),
                        ("huge-count", (2**32 - 1, 28, 28)), ("zero-count", (0, 28, 28)),
                        ("wrong-rows", (16, 27, 28)), ("zero-rows", (16, 0, 0))):
        idx_case(f"images-{label}", images=mk.idx_bytes(mk.IMAGES, dims, bytes(1024)))
        idx_case(f"images-{label}-gz", images=mk.idx_bytes(mk.IMAGES, dims, bytes(1024)), gz=True)
    idx_case("labels-overflow", labels=mk.idx_bytes(mk.LABELS, (2**32 - 1,), bytes(16)))
    idx_case("labels-out-of-range", labels=mk.idx_bytes(mk.LABELS, (16,), bytes([200]) * 16))
    idx_case("labels-count-mismatch", labels=mk.idx_bytes(mk.LABELS, (15,), bytes(15)))
    idx_case("ndim-255", images=mk.idx_bytes(mk.IMAGES, (16, 28, 28), bytes(16 * 784), ndim=255))
    idx_case("ndim-0", images=mk.idx_bytes(mk.IMAGES, (), b""))
    idx_case("wrong-magic", images=b"\x00\x00\x0d\x03" + bytes(100))
    idx_case("float-type", images=b"\x00\x00\x0d\x03" + (16).to_bytes(4, "big")
             + (28).to_bytes(4, "big") * 2 + bytes(16 * 784 * 4))
    idx_case("truncated", images=mk.idx_bytes(mk.IMAGES, (16, 28, 28), bytes(100)))
    idx_case("empty", images=b"\x00")
    idx_case("gzip-bomb-512MiB",
             images=lambda: mk.gzip_bomb(512, mk.idx_bytes(mk.IMAGES, (10**6, 28, 28))))
    idx_case("gzip-bomb-small-claim",
             images=lambda: mk.gzip_bomb(256, mk.idx_bytes(mk.IMAGES, (16, 28, 28))))
    idx_case("gzip-truncated", images=gzip.compress(mk.idx_bytes(mk.IMAGES, (16, 28, 28),
                                                                 bytes(16 * 784)))[:-20])
    idx_case("gzip-garbage", images=b"\x1f\x8b" + bytes(200))

    def idx_folder_case(name, kind):
        def make(folder):
            (folder / "mnist.yaml").write_text(mnist_spec)
            mk.mnist_folder(folder / "digits")
            (folder / "digits/train-images-idx3-ubyte").unlink()
            mk.special(folder / "digits/train-images-idx3-ubyte", kind)
        cases.append(Case(f"files/idx-special-{name}", "hostile files", idx_run, (DATA,),
                          make=make, message="train-images",
                          forbid=(r"missing|does not exist|not found",) if kind == "folder"
                          else ()))
    for kind in ("folder", "fifo", "devzero", "loop"):
        idx_folder_case(kind, kind)

    # CIFAR-10 pickles and binaries
    cifar_spec = ("name: cifar\ninput: 32x32x3\npattern: \"[INPUT-CONV(4, 3, pad=1)-RELU-POOL-"
                  "FC(10)]\"\n")
    cifar_run = ("run", "cifar.yaml", "--dataset", "cifar10", "--data", "batches", "--limit",
                 "16", "--epochs", "1")

    def cifar_case(name, train=None, binary=None, expect=(DATA,), make_extra=None):
        def make(folder):
            (folder / "cifar.yaml").write_text(cifar_spec)
            if binary is not None:
                root = folder / "batches"
                root.mkdir()
                good = b"".join(bytes([i % 10]) + bytes(3072) for i in range(10))
                for i in range(1, 6):
                    (root / f"data_batch_{i}.bin").write_bytes(binary if i == 1 else good)
                (root / "test_batch.bin").write_bytes(good)
            else:
                mk.cifar_folder(folder / "batches", train)
            if make_extra:
                make_extra(folder)
        cases.append(Case(f"files/cifar-{name}", "hostile files", cifar_run, expect, make=make,
                          message="data_batch_1", timeout=60))

    cifar_case("labels-10^10-nested", mk.nested_labels_pickle(10, 10))
    cifar_case("labels-10^6-nested", mk.nested_labels_pickle(6, 10))
    cifar_case("malicious-global", mk.malicious_pickle())
    cifar_case("recursion-200000", mk.recursive_pickle(200_000))
    cifar_case("truncated", mk.cifar_pickle(np.zeros((10, 3072), np.uint8), [0] * 10)[:-30])
    cifar_case("not-a-dict", mk.cifar_pickle(None, None)[:0] + b"\x80\x02K\x05.")
    cifar_case("labels-out-of-range", mk.cifar_pickle(np.zeros((10, 3072), np.uint8), [99] * 10))
    cifar_case("labels-negative", mk.cifar_pickle(np.zeros((10, 3072), np.uint8), [-1] * 10))
    cifar_case("labels-strings", mk.cifar_pickle(np.zeros((10, 3072), np.uint8), ["a"] * 10))
    cifar_case("data-float", mk.cifar_pickle(np.zeros((10, 3072), np.float32), [0] * 10))
    cifar_case("data-wrong-width", mk.cifar_pickle(np.zeros((10, 100), np.uint8), [0] * 10))
    cifar_case("data-bytes", mk.cifar_pickle(bytes(30720), [0] * 10))
    cifar_case("count-mismatch", mk.cifar_pickle(np.zeros((10, 3072), np.uint8), [0] * 9))
    cifar_case("empty-file", b"")
    cifar_case("protocol-5", mk.cifar_pickle(np.zeros((10, 3072), np.uint8), [0] * 10, 5),
               expect=(OK, DATA))
    cifar_case("binary-ragged", binary=bytes(3073 * 2 + 7))
    cifar_case("binary-label-200", binary=bytes([200]) + bytes(3072))
    cifar_case("binary-empty", binary=b"")
    return _quick(cases, 10)


# ---------------------------------------------------------------- caches: programs and tuning


def caches() -> list[Case]:
    cases = []
    binary = {"CONVGRAPH_BINARY_CACHE": "1"}

    def each_binary(action):
        def mutate(folder):
            found = list((folder / ".cache/programs").glob("*.bin"))
            for path in found:
                action(path)
            if not found:  # no binary was stored: the case still runs, but say so in the name
                (folder / ".cache/programs").mkdir(parents=True, exist_ok=True)
        return mutate

    mutations = {
        "truncated-half": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        "truncated-64": lambda p: p.write_bytes(p.read_bytes()[:64]),
        "empty": lambda p: p.write_bytes(b""),
        "zeros": lambda p: p.write_bytes(bytes(len(p.read_bytes()))),
        "bit-flips": lambda p: p.write_bytes(bytes(b ^ 0x5A if i % 97 == 0 else b
                                                   for i, b in enumerate(p.read_bytes()))),
        "garbage": lambda p: p.write_bytes(b"\x7fELF" + bytes(range(256)) * 8),
        "fifo": lambda p: mk.special(p, "fifo"),
        "devzero": lambda p: mk.special(p, "devzero"),
        "folder": lambda p: mk.special(p, "folder"),
        "loop": lambda p: mk.special(p, "loop"),
    }
    commands = {"compile": ("compile", "spec.yaml"), "run": TRAIN + ("--save", "out.npz"),
                "eval": ("eval", "spec.yaml", "--weights", "weights.npz")}
    for mname, action in mutations.items():
        for cname, command in commands.items():
            cases.append(Case(f"caches/program-{mname}-{cname}", "caches", command, (OK,),
                              env=binary, prepare=(command,), mutate=each_binary(action),
                              timeout=60))

    tables = {
        "garbage": lambda p: p.write_bytes(b"\x00not json"),
        "empty": lambda p: p.write_bytes(b""),
        "list": lambda p: p.write_text("[1, 2, 3]"),
        "wrong-types": lambda p: p.write_text(json.dumps({"format": 1, "entries": [1],
                                                          "device": "x"})),
        "entries-garbage": lambda p: p.write_text(json.dumps({"entries": {"k": {"TILE": "x"}},
                                                              "device": {"name": 5}})),
        "deep-nesting": lambda p: p.write_text("[" * 100000 + "]" * 100000),
        "non-utf8": lambda p: p.write_bytes(b"{\"a\": \"\xff\xfe\"}"),
        "huge-20MiB": lambda p: p.write_text(json.dumps({"entries": {}, "pad": "x" * (20 << 20)})),
        "fifo": lambda p: mk.special(p, "fifo"),
        "devzero": lambda p: mk.special(p, "devzero"),
        "folder": lambda p: mk.special(p, "folder"),
        "socket": lambda p: mk.special(p, "socket"),
        "loop": lambda p: mk.special(p, "loop"),
    }
    for tname, action in tables.items():
        for cname, command in (("compile", ("compile", "spec.yaml")),
                               ("run", TRAIN + ("--save", "out.npz"))):
            cases.append(Case(f"caches/tuning-{tname}-{cname}", "caches", command, (OK,),
                              make=lambda f, a=action: _in_tuning(f, a)))
    for where, target in (("under-a-file", "{dir}/afile/cache"), ("in-proc", "/proc/1/nocache"),
                          ("is-a-file", "{dir}/afile"), ("dev-null", "/dev/null")):
        for cname, command in (("compile", ("compile", "spec.yaml")),
                               ("run", TRAIN + ("--save", "out.npz"))):
            cases.append(Case(f"caches/cache-folder-{where}-{cname}", "caches", command, (OK,),
                              make=_writer("afile", b"x"), env={"CONVGRAPH_CACHE": target}))
    for where, target in (("under-a-file", "{dir}/afile/cache"), ("is-a-file", "{dir}/afile")):
        cases.append(Case(f"caches/tune-cache-{where}", "caches",
                          ("tune", "spec.yaml", "--budget", "2"), (OUTPUT,),
                          make=_writer("afile", b"x"), env={"CONVGRAPH_CACHE": target},
                          timeout=60))
    cases.append(Case("caches/tune-tuning-folder-is-a-file", "caches",
                      ("tune", "spec.yaml", "--budget", "2"), (OUTPUT,),
                      make=_writer(".cache/tuning", b"x"), timeout=60))
    return _quick(cases, 8)


def _in_tuning(folder: Path, action) -> None:
    """A tuning table of another device (every *.json there is read as one) made hostile."""
    path = folder / ".cache/tuning/other-device.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    action(path)


# ---------------------------------------------------------------------------- output targets


TARGETS = {  # kind -> the path, given the extension the flag's output has
    "under-a-file": lambda ext: "afile/sub/x" + ext,
    "in-proc": lambda ext: "/proc/1/nope/x" + ext,
    "a-folder": lambda ext: "afolder" + ext,
    "fifo": lambda ext: "afifo" + ext,
    "dev-full": lambda ext: "/dev/full",
    "name-too-long": lambda ext: "n" * 300 + ext,
    "symlink-loop": lambda ext: "aloop/x" + ext,
    "dangling-parent": lambda ext: "adangling/x" + ext,
}


def _targets(ext: str):
    def make(folder: Path) -> None:
        (folder / "afile").write_bytes(b"not a folder")
        (folder / f"afolder{ext}").mkdir()
        mk.special(folder / f"afifo{ext}", "fifo")
        mk.special(folder / "aloop", "loop")
        mk.special(folder / "adangling", "dangling")
    return make


def outputs() -> list[Case]:
    cases = []
    flags = {  # flag -> (command for a target, the extension its output has)
        "checkpoint-dir": (lambda t: TRAIN + ("--checkpoint-dir", t), ""),
        "save": (lambda t: TRAIN + ("--save", t), ".npz"),
        "metrics": (lambda t: TRAIN + ("--metrics", t), ".jsonl"),
        "plot": (lambda t: TRAIN + ("--plot", t), ".png"),
        "predict-output": (lambda t: predict("x.npy", "--output", t), ".npy"),
        "compile-o": (lambda t: ("compile", "spec.yaml", "-o", t), ""),
        "compile-graph-dot": (lambda t: ("compile", "spec.yaml", "--graph", t), ".dot"),
        "compile-graph-svg": (lambda t: ("compile", "spec.yaml", "--graph", t), ".svg"),
    }
    # /dev/full only where nothing can be created beside it or renamed over it: a save (a
    # temporary file renamed over the target), numpy (which appends .npy/.npz) or a drawing
    # (which appends its format) would write into /dev as root
    dev_full = ("checkpoint-dir", "metrics", "compile-o")
    for fname, (build, ext) in flags.items():
        for tname, target in TARGETS.items():
            if fname in ("checkpoint-dir", "compile-o") and tname == "a-folder":
                continue  # a folder is what these want
            if tname == "dev-full" and fname not in dev_full:
                continue
            argv = build(target(ext))
            cases.append(Case(f"outputs/{fname}-{tname}", "outputs", argv, (OUTPUT,),
                              make=_targets(ext), weights=argv[-1] if fname == "save" else None,
                              forbid=(r"format dot knows",) if "graph" in fname else (),
                              timeout=20))
    # a failing --save after training: the weights must land somewhere named
    cases.append(Case("outputs/save-into-missing-folder", "outputs",
                      TRAIN + ("--save", "newdir/sub/w.npz"), (OK, OUTPUT),
                      weights="newdir/sub/w.npz"))
    cases.append(Case("outputs/metrics-into-missing-folder", "outputs",
                      TRAIN + ("--metrics", "newdir/m.jsonl"), (OK, OUTPUT)))
    cases.append(Case("outputs/predict-output-is-a-folder-name", "outputs",
                      predict("x.npy", "--output", "scores/"), (OUTPUT, USAGE)))
    cases.append(Case("outputs/checkpoint-dir-is-the-data-file", "outputs",
                      TRAIN + ("--checkpoint-dir", "data.npz"), (OUTPUT,),
                      keep=KEEP + ("data.npz",)))
    return _quick(cases, 8)


# ------------------------------------------------------------------------------------- signals


def signals() -> list[Case]:
    cases = []
    names = {signal.SIGINT: ("int", INT), signal.SIGTERM: ("term", TERM),
             signal.SIGHUP: ("hup", HUP)}
    moments = {"0.05s": 0.05, "0.15s": 0.15, "0.3s": 0.3, "0.6s": 0.6, "1s": 1.0,
               "training-line": "training 'tiny'", "after-epoch-1": "epoch 1:",
               "after-epoch-5": "epoch 5:"}
    for number, (sname, status) in names.items():
        for mname, moment in moments.items():
            for ckpt in (True, False):
                argv = LONG + (("--checkpoint-dir", "run1") if ckpt else ())
                saves = ckpt and isinstance(moment, str) and "epoch" in moment
                cases.append(Case(f"signals/{sname}-at-{mname}-{'ckpt' if ckpt else 'nockpt'}",
                                  "signals", argv, (status,), signal=(number, moment),
                                  updates=("run1/last.npz",) if saves else (),
                                  message="resume" if saves else None, timeout=60))
    for number, (sname, status) in names.items():  # other commands
        for label, argv, moment in (
                ("resume", ("run", "spec.yaml", "--limit", "64", "--epochs", "3000",
                            "--checkpoint-dir", "ckpt", "--resume"), "epoch 3:"),
                ("tune", ("tune", "spec.yaml", "--budget", "60"), 2.0),
                ("eval", ("eval", "spec.yaml", "--weights", "weights.npz"), 0.2),
                ("compile", ("compile", "spec.yaml"), 0.2)):
            allowed = (status,) if label in ("resume", "tune") else (status, OK)
            cases.append(Case(f"signals/{sname}-{label}", "signals", argv, allowed,
                              signal=(number, moment), keep=("weights.npz",),
                              updates=("ckpt/last.npz", "ckpt/best.npz"), timeout=60))
    # the quick (CI) subset sends no signal in the first 0.3 s: the interpreter's own start-up
    # comes before any handler of convgraph's, and on a loaded machine it can take longer
    # than 0.05 s (a KeyboardInterrupt traceback from Python itself, not from convgraph); the
    # whole corpus keeps those moments
    return [Case(**{**c.__dict__, "quick": False})
            if isinstance(c.signal[1], float) and c.signal[1] < 0.3 else c
            for c in _quick(cases, 7)]


# ---------------------------------------------------------------------------- checkpoint header


def checkpoint_header() -> list[Case]:
    cases = []

    def setter(key, value):
        def edit(meta):
            meta = dict(meta)
            if value is _MISSING:
                meta.pop(key, None)
            else:
                meta[key] = value
            return meta
        return edit

    edits = {}
    for key, values in {
            "epoch": (-1, "x", None, 1.5, [1], 10**12, True),
            "step": (_MISSING, -5, "a", 2**70),
            "batch": (100000, -1, _MISSING, "0"),
            "mean": ("x", [float("nan")], [0.0, 0.0, 0.0], [1e6], [[1]]),
            "std": (0, -1, [0.0], [float("inf")], _MISSING),
            "network": (_MISSING, "0" * 64, 5),
            "format": (_MISSING, "convgraph-checkpoint-99", None),
            "checksum": (_MISSING, 0)}.items():
        for value in values:
            label = "missing" if value is _MISSING else json.dumps(value)[:16]
            edits[f"{key}-{label}"] = dict(header=setter(key, value),
                                           reseal=key != "checksum")
    edits["header-list"] = dict(header=lambda meta: [meta])
    edits["header-string"] = dict(header=lambda meta: "header")
    edits["header-number"] = dict(header=lambda meta: 7)
    edits["header-empty"] = dict(header=lambda meta: {})
    edits["header-non-utf8"] = dict(raw_header=b"\xff\xfe{}")
    edits["header-deep"] = dict(raw_header=b"[" * 100000 + b"]" * 100000)
    edits["header-huge"] = dict(header=lambda meta: {**meta, "pad": "x" * (8 << 20)})
    harmless = ("header-huge", "param-float64")  # an unknown key, a wider float: may load

    def slot_shape(members):
        key = next(k for k in sorted(members) if k.startswith("optim/"))
        members[key] = np.zeros((3, 3), np.float32)

    def param_shape(members):
        key = next(k for k in sorted(members) if k.startswith("param/"))
        members[key] = np.zeros((2, 2), np.float32)

    def param_missing(members):
        members.pop(next(k for k in sorted(members) if k.startswith("param/")))

    def param_extra(members):
        members["param/ghost.weight"] = np.zeros(3, np.float32)

    def param_float64(members):
        key = next(k for k in sorted(members) if k.startswith("param/"))
        members[key] = members[key].astype(np.float64)

    def param_object(members):
        key = next(k for k in sorted(members) if k.startswith("param/"))
        members[key] = members[key].astype(np.int8)

    for name, edit in (("optimizer-slot-shape", slot_shape), ("param-shape", param_shape),
                       ("param-missing", param_missing), ("param-extra", param_extra),
                       ("param-float64", param_float64), ("param-int8", param_object)):
        edits[name] = dict(arrays=edit)
    edits["unsealed-epoch-7"] = dict(header=setter("epoch", 7), reseal=False)
    edits["unsealed-param-shape"] = dict(arrays=param_shape, reseal=False)
    commands = {
        "resume": ("run", "spec.yaml", "--limit", "64", "--epochs", "3", "--checkpoint-dir",
                   "ckpt", "--resume"),
        "eval": ("eval", "spec.yaml", "--weights", "ckpt/last.npz"),
        "predict": ("run", "spec.yaml", "--weights", "ckpt/last.npz", "--predict", "x.npy"),
    }
    for ename, edit in edits.items():
        for cname, command in commands.items():
            # a resume that accepts the forged file may overwrite it, but only with a whole one
            cases.append(Case(f"checkpoint/{ename}-{cname}", "checkpoint header", command,
                              (OK, DATA) if ename in harmless else (DATA,),
                              make=lambda f, e=edit: mk.edit_checkpoint(f / "ckpt/last.npz", **e),
                              message="last.npz",
                              keep=("weights.npz",) if cname == "resume" else KEEP,
                              updates=("ckpt/last.npz", "ckpt/best.npz") if cname == "resume"
                              else ()))
    for kind in ("truncated", "empty", "zeros"):
        def broken(folder, kind=kind):
            path = folder / "ckpt/last.npz"
            data = path.read_bytes()
            path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                              "zeros": bytes(len(data))}[kind])
        for cname, command in commands.items():
            cases.append(Case(f"checkpoint/file-{kind}-{cname}", "checkpoint header", command,
                              (DATA,), make=broken, message="last.npz"))
    return _quick(cases, 12)


_MISSING = object()


# ------------------------------------------------------------------------------ special files


def special_files() -> list[Case]:
    cases = []
    roles = {
        "predict-input": (predict("thing.npy"), "thing.npy"),
        "data-npz": (TRAIN + ("--data", "thing.npz"), "thing.npz"),
        "weights": (("eval", "spec.yaml", "--weights", "thing.npz"), "thing.npz"),
        "resume-last": (("run", "spec.yaml", "--limit", "64", "--epochs", "2",
                         "--checkpoint-dir", "ck", "--resume"), "ck/last.npz"),
        "spec": (("compile", "thing.yaml"), "thing.yaml"),
        "check-spec": (("check", "thing.yaml"), "thing.yaml"),
        "run-spec": (("run", "thing.yaml", "--epochs", "1"), "thing.yaml"),
    }
    for rname, (argv, path) in roles.items():
        for kind in mk.SPECIALS + ("devurandom", "proc"):
            expect = (SPEC,) if "spec" in rname else (DATA, USAGE) if rname == "resume-last" \
                else (DATA,)  # nothing to resume (2) or an unreadable one (5), never a restart
            cases.append(Case(f"special/{rname}-{kind}", "special files", argv, expect,
                              make=lambda f, p=path, k=kind: mk.special(f / p, k),
                              message=Path(path).name, timeout=20))
    for kind in ("fifo", "devzero", "loop"):  # the spec's own data path
        text = mk_spec_with_data("thing.npz")
        cases.append(Case(f"special/spec-data-{kind}", "special files",
                          ("run", "net.yaml", "--epochs", "1"), (DATA,),
                          make=lambda f, k=kind, t=text: (f.joinpath("net.yaml").write_text(t),
                                                          mk.special(f / "thing.npz", k)),
                          message="thing.npz", timeout=20))
    return _quick(cases, 9)


def mk_spec_with_data(path: str) -> str:
    return ("name: tiny\ninput: 8x8x1\npattern: \"[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]\"\n"
            f"train: {{dataset: npz, data: {path}, batch: 16}}\n")


# ---------------------------------------------------------------------- untrusted text, markup


def untrusted_text() -> list[Case]:
    cases = []
    names = {"markup-close": "[/oops]", "markup-bold": "[bold]x", "markup-link":
             "[link=http://x]y[/link]", "escape-csi": "\x1b[31mred", "c1-csi": "\u009b31m",
             "rtl-override": "abc\u202edef", "emoji": "net-\U0001F600", "long-10k": "n" * 10000,
             "lone-surrogate": "\\ud800", "nul": "\\0x", "bell": "\\a", "newline": "a\\nb"}
    for nname, name in names.items():
        text = ("name: \"" + name.replace("\x1b", "\\e").replace("\u009b", "\\x9b") + "\"\n"
                "input: 8x8x1\npattern: \"[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]\"\n"
                "train: {dataset: npz, data: data.npz, batch: 16}\n")
        forbid = (r"\x1b\[31m", "\u009b", "\u202e")
        for cname, argv in (("compile", ("compile", "net.yaml")),
                            ("no-kernels", ("compile", "net.yaml", "--no-kernels")),
                            ("check", ("check", "net.yaml")),
                            ("json", ("compile", "net.yaml", "--json", "--no-kernels")),
                            ("run", ("run", "net.yaml", "--epochs", "1", "--limit", "64"))):
            cases.append(Case(f"text/name-{nname}-{cname}", "untrusted text", argv, (OK, SPEC),
                              make=_spec(text), forbid=forbid))
    paths = {"markup": "d[/x]/spec.yaml", "markup-bold": "[bold]/spec.yaml",
             "unicode": "données/数据.yaml", "escape": "e\x1b[2J/spec.yaml",
             "c1": "c\u0085\u009b/spec.yaml", "spaces": "a b/c d.yaml",
             "long-component": ("p" * 250) + "/spec.yaml",
             "deep": "/".join(["d" * 200] * 15) + "/spec.yaml"}
    for pname, rel in paths.items():
        def make(folder, rel=rel):
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text((folder / "spec.yaml").read_text())
        for cname, argv in (("compile", ("compile", rel)), ("check", ("check", rel)),
                            ("run", ("run", rel, "--epochs", "1", "--limit", "64",
                                     "--data", "{dir}/data.npz"))):
            cases.append(Case(f"text/path-{pname}-{cname}", "untrusted text", argv, (OK,),
                              make=make, forbid=(r"\x1b\[2J", "\u009b")))
    raw = b"spec\xff\xfe.yaml"  # a non-UTF-8 file name, as bytes on the command line

    def non_utf8(folder):
        (bytes(folder) + b"/" + raw and open(bytes(folder) + b"/" + raw, "wb")).write(
            (folder / "spec.yaml").read_bytes())
    for cname, argv in (("compile", ("compile", raw)), ("check", ("check", raw)),
                        ("missing", ("compile", b"no\xff.yaml"))):
        cases.append(Case(f"text/non-utf8-name-{cname}", "untrusted text", argv,
                          (SPEC,) if cname == "missing" else (OK,), make=non_utf8))
    for cname, classes in (("markup", ("[b]a", "[red]b", "[link=x]c", "d")),
                           ("escape", ("\x1b[2Ja", "b\u009b", "c", "d"))):
        def make(folder, classes=classes):
            mk.image_folder(folder / "imgs", classes=classes)
        argv = ("run", "spec.yaml", "--dataset", "folder", "--data", "imgs", "--epochs", "1",
                "--save", "w.npz")
        cases.append(Case(f"text/class-names-{cname}", "untrusted text", argv, (OK,), make=make,
                          needs="PIL", forbid=(r"\x1b\[2J", "\u009b")))
    for kind, value in (("markup", "[/x]"), ("escape", "\x1b[2J"), ("c1", "\u009b")):
        cases.append(Case(f"text/set-value-{kind}", "untrusted text",
                          TRAIN + ("--set", f"optimizer={value}"), (SPEC, USAGE),
                          forbid=(r"\x1b\[2J", "\u009b")))
        cases.append(Case(f"text/data-path-{kind}", "untrusted text",
                          TRAIN + ("--data", f"{value}.npz"), (DATA,),
                          forbid=(r"\x1b\[2J", "\u009b")))
    return _quick(cases, 12)


# ---------------------------------------------------------------- values silently reinterpreted


def values() -> list[Case]:
    cases = []
    table = [
        ("limit-0", ("run", "spec.yaml", "--epochs", "1", "--limit", "0"), (USAGE,)),
        ("limit-negative", ("run", "spec.yaml", "--epochs", "1", "--limit", "-5"), (USAGE,)),
        ("limit-minus-one", ("run", "spec.yaml", "--epochs", "1", "--limit", "-1"), (USAGE,)),
        ("limit-huge", ("run", "spec.yaml", "--epochs", "1", "--limit", str(10**12)), (OK,)),
        ("limit-not-a-number", ("run", "spec.yaml", "--limit", "ten"), (USAGE,)),
        ("top-0", predict("x.npy", "--top", "0"), (USAGE,)),
        ("top-negative", predict("x.npy", "--top", "-1"), (USAGE,)),
        ("top-huge", predict("x.npy", "--top", str(10**9)), (OK, USAGE)),
        ("epochs-0", TRAIN[:-2] + ("--epochs", "0"), (USAGE,)),
        ("epochs-negative", TRAIN[:-2] + ("--epochs", "-3"), (USAGE,)),
        ("batch-0-run", TRAIN + ("--batch", "0"), (USAGE,)),
        ("batch-0-compile", ("compile", "spec.yaml", "--batch", "0"), (USAGE,)),
        ("batch-negative-run", TRAIN + ("--batch", "-4"), (USAGE,)),
        ("batch-negative-compile", ("compile", "spec.yaml", "--batch", "-4"), (USAGE,)),
        ("lr-nan", TRAIN + ("--lr", "nan"), (USAGE,)),
        ("lr-inf", TRAIN + ("--lr", "inf"), (USAGE,)),
        ("lr-negative", TRAIN + ("--lr", "-0.1"), (USAGE,)),
        ("seed-negative", TRAIN + ("--seed", "-1"), (OK, USAGE)),
        ("seed-2^64", TRAIN + ("--seed", str(2**64)), (OK, USAGE)),
        ("seed-2^200", TRAIN + ("--seed", str(2**200)), (OK, USAGE)),
        ("budget-0", ("tune", "spec.yaml", "--budget", "0"), (USAGE,)),
        ("budget-negative", ("tune", "spec.yaml", "--budget", "-5"), (USAGE,)),
        ("budget-nan", ("tune", "spec.yaml", "--budget", "nan"), (USAGE,)),
        ("budget-inf", ("tune", "spec.yaml", "--budget", "inf"), (USAGE,)),
        ("set-epochs-0", TRAIN[:-2] + ("--set", "epochs=0"), (SPEC, USAGE)),
        ("set-lr-nan", TRAIN + ("--set", "lr=.nan"), (SPEC, USAGE)),
        ("set-batch-negative", TRAIN + ("--set", "train.batch=-3"), (SPEC, USAGE)),
        ("set-momentum-5", TRAIN + ("--set", "momentum=5"), (SPEC, USAGE)),
        ("set-label-smoothing-2", TRAIN + ("--set", "label_smoothing=2"), (SPEC, USAGE)),
        ("set-crop-pad-negative", TRAIN + ("--set", "crop_pad=-1"), (SPEC, USAGE)),
        ("set-weight-decay-negative", TRAIN + ("--set", "weight_decay=-1"), (SPEC, USAGE)),
        ("set-betas-wrong", TRAIN + ("--set", "betas=[2, 3]"), (SPEC, USAGE)),
        ("set-no-equals", TRAIN + ("--set", "lr"), (SPEC, USAGE)),
        ("set-unknown-key", TRAIN + ("--set", "zzz=1"), (SPEC, USAGE)),
        ("set-batch-string", TRAIN + ("--set", "train.batch=x"), (SPEC, USAGE)),
        ("set-huge-value-100k", TRAIN + ("--set", "optimizer=" + "a" * 100_000),  # the OS: 128k
         (SPEC, USAGE)),
        ("set-huge-int", TRAIN + ("--set", "epochs=" + "9" * 5000), (SPEC, USAGE)),
        ("set-deep-value", TRAIN + ("--set", "betas=" + "[" * 5000 + "]" * 5000), (SPEC, USAGE)),
        ("set-empty-key", TRAIN + ("--set", "=1"), (SPEC, USAGE)),
        ("set-network-key", ("compile", "spec.yaml", "--set", "input=1x1x0"), (SPEC,)),
        ("resume-without-checkpoint-dir", TRAIN + ("--resume",), (USAGE,)),
        ("resume-nothing-to-resume", TRAIN + ("--checkpoint-dir", "empty", "--resume"),
         (USAGE, DATA, OK)),  # OK: it says 'nothing to resume ... starting from scratch'
        ("resume-other-batch", ("run", "spec.yaml", "--limit", "64", "--epochs", "2",
                                "--checkpoint-dir", "ckpt", "--resume", "--batch", "8"),
         (USAGE, DATA)),
        ("resume-other-limit", ("run", "spec.yaml", "--limit", "32", "--epochs", "2",
                                "--checkpoint-dir", "ckpt", "--resume"), (USAGE, DATA)),
        ("resume-other-data", ("run", "spec.yaml", "--limit", "64", "--epochs", "2",
                               "--checkpoint-dir", "ckpt", "--resume", "--data", "other.npz"),
         (USAGE, DATA)),
        ("output-is-a-folder", predict("x.npy", "--output", "afolder"), (OUTPUT, USAGE)),
        ("predict-without-weights", ("run", "spec.yaml", "--predict", "x.npy"), (USAGE,)),
        ("predict-wrong-range-0..1", predict("small.npy"), (OK,)),
        ("output-without-predict", TRAIN + ("--output", "s.npy"), (USAGE,)),
        ("verify-and-profile", ("run", "spec.yaml", "--verify", "--profile"), (USAGE,)),
        ("predict-and-verify", ("run", "spec.yaml", "--predict", "x.npy", "--verify"), (USAGE,)),
        ("resume-with-weights", ("run", "spec.yaml", "--limit", "64", "--epochs", "2",
                                 "--checkpoint-dir", "ckpt", "--resume", "--weights",
                                 "weights.npz"), (USAGE, OK)),
        ("epochs-not-a-number", ("run", "spec.yaml", "--epochs", "1e3"), (USAGE,)),
        ("batch-float", ("compile", "spec.yaml", "--batch", "1.5"), (USAGE,)),
        ("unknown-optimizer", TRAIN + ("--optimizer", "lion"), (USAGE,)),
        ("unknown-dataset", TRAIN + ("--dataset", "imagenet"), (SPEC, USAGE, DATA)),
        ("tune-mode-unknown", ("tune", "spec.yaml", "--mode", "fast"), (USAGE,)),
    ]
    for name, argv, expect in table:
        updates = ("ckpt/last.npz", "ckpt/best.npz") if "resume" in name else ()
        keep = ("weights.npz",) if updates else KEEP
        cases.append(Case(f"values/{name}", "values", argv, expect, updates=updates, keep=keep,
                          make=_values_files))
    # a training set of 0 images, by every route
    for label, members in (("npz-empty", mk.data_members(x=np.zeros((0, 1, 8, 8), np.uint8),
                                                         y=np.zeros(0, np.int64))),):
        cases.append(Case(f"values/zero-images-{label}", "values", TRAIN + ("--data", "e.npz"),
                          (DATA,), make=_writer("e.npz", members)))
    return _quick(cases, 6)


def _values_files(folder: Path) -> None:
    (folder / "afolder").mkdir()
    (folder / "empty").mkdir()
    x, y = mk.tiny_set(seed=5)
    mk.write_npz(folder / "other.npz", {"x": x, "y": y, "x_test": x[:32], "y_test": y[:32]})
    np.save(folder / "small.npy", np.full((4, 1, 8, 8), 0.5, np.float32))


# ------------------------------------------------------------------------ predict inputs, weights


def predict_inputs() -> list[Case]:
    cases = []
    x = np.full((4, 1, 8, 8), 100.0, np.float32)
    table = {
        "zero-images": (np.zeros((0, 1, 8, 8), np.float32), (DATA,)),
        "wrong-size": (np.zeros((4, 1, 16, 16), np.float32), (DATA,)),
        "wrong-depth": (np.zeros((4, 3, 8, 8), np.float32), (DATA,)),
        "channels-last": (x.transpose(0, 2, 3, 1), (DATA,)),
        "one-image-3d": (x[0], (OK, DATA)),
        "2d": (x[0, 0], (OK, DATA)),
        "5d": (x[None], (DATA,)),
        "scalar": (np.float32(1), (DATA,)),
        "complex": (x.astype(np.complex64), (DATA,)),
        "strings": (x.astype("U3"), (DATA,)),
        "bool": (x.astype(bool), (OK, DATA)),
        "uint8": (x.astype(np.uint8), (OK,)),
        "int64-huge": (np.full((4, 1, 8, 8), 2**62, np.int64), (DATA, OK)),
        "float64": (x.astype(np.float64), (OK,)),
        "float16": (x.astype(np.float16), (OK,)),
        "big-batch-1000": (np.zeros((1000, 1, 8, 8), np.float32), (OK,)),
    }
    for name, (array, expect) in table.items():
        cases.append(Case(f"predict/npy-{name}", "predict", predict("in.npy"), expect,
                          make=_writer("in.npy", mk.array_bytes(array))))
        cases.append(Case(f"predict/npz-{name}", "predict", predict("in.npz"), expect,
                          make=_writer("in.npz", {"x": array})))
    for name, raw in (
            ("header-1e12", mk.npy_bytes(mk.npy_header("<f4", (10**12, 1, 8, 8)), bytes(64))),
            ("header-overflow", mk.npy_bytes(mk.npy_header("<f4", (2**40, 2**40, 8, 8)))),
            ("header-negative", mk.npy_bytes(mk.npy_header("<f4", (-4, 1, 8, 8)))),
            ("object", mk.array_bytes(np.array([1, "a"], dtype=object), allow_pickle=True)),
            ("pickle", mk.malicious_pickle()), ("empty", b""), ("text", b"1,2,3\n"),
            ("truncated", mk.array_bytes(x)[:-10]),
            ("fortran", mk.npy_bytes(mk.npy_header("<f4", (4, 1, 8, 8), True), x.tobytes()))):
        cases.append(Case(f"predict/raw-{name}", "predict", predict("in.npy"),
                          (OK,) if name == "fortran" else (DATA,),
                          make=_writer("in.npy", raw), message=None if name == "fortran"
                          else "in.npy"))
    for name, members in (("no-x-two-arrays", {"a": x, "b": x}), ("empty-npz", {}),
                          ("x-pickled", {"x": mk.malicious_pickle()})):
        cases.append(Case(f"predict/npz-{name}", "predict", predict("in.npz"), (DATA,),
                          make=_writer("in.npz", members), message="in.npz"))
    for name, argv in (("missing-input", predict("nope.npy")),
                       ("missing-weights", ("run", "spec.yaml", "--weights", "nope.npz",
                                            "--predict", "x.npy")),
                       ("input-a-folder", predict("afolder")),
                       ("weights-wrong-network", ("run", "spec.yaml", "--weights", "w2.npz",
                                                  "--predict", "x.npy")),
                       ("weights-empty-npz", ("run", "spec.yaml", "--weights", "w3.npz",
                                              "--predict", "x.npy")),
                       ("weights-nan", ("run", "spec.yaml", "--weights", "w4.npz",
                                        "--predict", "x.npy")),
                       ("weights-a-text-file", ("run", "spec.yaml", "--weights", "spec.yaml",
                                                "--predict", "x.npy"))):
        cases.append(Case(f"predict/{name}", "predict", argv, (DATA,), make=_predict_files))
    return _quick(cases, 6)


def _predict_files(folder: Path) -> None:
    (folder / "afolder").mkdir()
    mk.write_npz(folder / "w2.npz", {"conv9.weight": np.zeros((3, 3), np.float32)})
    mk.write_npz(folder / "w3.npz", {})
    with np.load(folder / "weights.npz") as archive:
        arrays = {k: archive[k] for k in archive.files if k.startswith("param/")}
    mk.write_npz(folder / "w4.npz", {k[len("param/"):]: np.full_like(v, np.nan)
                                     for k, v in arrays.items()})


# ------------------------------------------------------------------------------ exit statuses


def exit_statuses() -> list[Case]:
    def files(folder):
        (folder / "afile").write_bytes(b"x")
        (folder / "nospec").mkdir()
        (folder / "empty.yaml").write_text("")
    table = [
        ("compile-o-under-a-file", ("compile", "spec.yaml", "-o", "afile/out"), (OUTPUT,)),
        ("graph-under-a-file", ("compile", "spec.yaml", "--graph", "afile/g.svg"), (OUTPUT,)),
        ("graph-missing-folder", ("compile", "spec.yaml", "--graph", "nodir/g.svg"),
         (OUTPUT, OK)),  # OK: the folder is created, as for -o
        ("graph-unknown-format", ("compile", "spec.yaml", "--graph", "g.xyz"), (USAGE, OUTPUT)),
        ("run-folder-without-spec", ("run", "nospec"), (USAGE,)),
        ("compile-folder-without-spec", ("compile", "nospec"), (USAGE, SPEC)),
        ("missing-spec", ("compile", "nope.yaml"), (SPEC,)),
        ("empty-spec", ("compile", "empty.yaml"), (SPEC,)),
        ("unknown-device", ("compile", "spec.yaml", "--device", "nosuchdevice"), (DEVICE,)),
        ("device-99:99", ("compile", "spec.yaml", "--device", "99:99"), (DEVICE,)),
        ("device-env-unknown", ("compile", "spec.yaml"), (DEVICE,)),
        ("no-arguments", (), (USAGE,)),
        ("unknown-command", ("frobnicate",), (USAGE,)),
        ("eval-without-weights", ("eval", "spec.yaml"), (USAGE,)),
        ("version", ("--version",), (OK,)),
        ("help", ("--help",), (OK,)),
        ("check-two-bad", ("check", "nope.yaml", "empty.yaml"), (SPEC,)),
        ("devices", ("devices", "--json"), (OK,)),
        ("tune-missing-spec", ("tune", "nope.yaml", "--budget", "1"), (SPEC,)),
        ("eval-missing-weights", ("eval", "spec.yaml", "--weights", "nope.npz"), (DATA,)),
        ("run-missing-data", TRAIN + ("--data", "nope.npz"), (DATA,)),
        ("run-data-is-spec", TRAIN + ("--data", "spec.yaml"), (DATA,)),
    ]
    cases = []
    for name, argv, expect in table:
        env = {"CONVGRAPH_DEVICE": "nosuchdevice"} if name == "device-env-unknown" else {}
        cases.append(Case(f"exit/{name}", "exit statuses", argv, expect, make=files, env=env))
    return _quick(cases, 4)


# -------------------------------------------------------------------------- misleading messages


def messages() -> list[Case]:
    cases = []

    def nested(depth):
        blocks = {f"b{i}": {"layers": [{"op": f"b{i + 1}"} if i + 1 < depth else
                                       {"op": "relu"}]} for i in range(depth)}
        return json.dumps({"name": "nested", "input": "8x8x1", "blocks": blocks,
                           "layers": [{"op": "b0"}, {"op": "fc", "units": 4}]})
    for depth in (9, 20, 40):
        cases.append(Case(f"messages/nested-blocks-{depth}", "messages",
                          ("compile", "net.yaml", "--no-kernels"), (OK, SPEC),
                          make=_spec(nested(depth)), forbid=(r"uses itself",)))
    for pattern, forbid in (("[INPUT-CONV??-FC(4)]", r"unclosed"),
                            ("[INPUT-CONV(4,,3)-FC(4)]", r"unclosed"),
                            ("[INPUT-CONV(4, 3)-FC(4)]]", r"^$")):
        text = f"name: m\ninput: 8x8x1\npattern: \"{pattern}\"\n"
        cases.append(Case(f"messages/pattern-{pattern[7:16]}", "messages",
                          ("check", "net.yaml"), (SPEC,), make=_spec(text), forbid=(forbid,)))
    for name, env in (("home-a-file", {"HOME": "{dir}/afile", "POCL_CACHE_DIR": None,
                                       "XDG_CACHE_HOME": None}),
                      ("home-in-proc", {"HOME": "/proc/1/nohome", "POCL_CACHE_DIR": None,
                                        "XDG_CACHE_HOME": None})):
        # (no case unsets HOME: the caches would fall back to the real ~/.cache)
        cases.append(Case(f"messages/{name}-compile", "messages", ("compile", "spec.yaml"),
                          (OK, DEVICE), make=_writer("afile", b"x"), env=env,
                          forbid=(r"install pocl",), timeout=60))
    bad_specs = {
        "unknown-op": "[INPUT-CONVV(4)-FC(4)]", "bad-pool": "[INPUT-POOL(3, stride=2)-FC(4)]",
        "odd-stride": "[INPUT-CONV(4, 3, stride=2)-FC(4)]", "no-input": "[CONV(4, 3)-FC(4)]",
        "fc-first": "[INPUT-FC(0)]", "negative-filters": "[INPUT-CONV(-4, 3)-FC(4)]",
        "zero-size": "[INPUT-CONV(4, 0)-FC(4)]", "too-big-kernel": "[INPUT-CONV(4, 9)-FC(4)]",
        "pad-negative": "[INPUT-CONV(4, 3, pad=-1)-FC(4)]",
        "unknown-arg": "[INPUT-CONV(4, 3, padd=1)-FC(4)]",
        "dropout-2": "[INPUT-DROPOUT(2)-FC(4)]", "groups": "[INPUT-CONV(3, 3, groups=2)-FC(4)]",
    }
    for name, pattern in bad_specs.items():
        text = f"name: m\ninput: 8x8x1\npattern: \"{pattern}\"\n"
        cases.append(Case(f"messages/bad-spec-{name}", "messages", ("check", "net.yaml"),
                          (SPEC,), make=_spec(text), message="Fix:"))
    cases.append(Case("messages/idx-path-a-folder", "messages",
                      ("run", "spec.yaml", "--dataset", "mnist", "--data", "afolder/x"),
                      (DATA, SPEC), make=lambda f: (f / "afolder/x").mkdir(parents=True)))
    return _quick(cases, 5)


# ------------------------------------------------------------------ beyond: odd but ordinary


def beyond() -> list[Case]:
    cases = []
    table = [
        ("empty-data-file", TRAIN + ("--data", "empty.npz"), (DATA,)),
        ("empty-weights", ("eval", "spec.yaml", "--weights", "empty.npz"), (DATA,)),
        ("empty-predict", predict("empty.npy"), (DATA,)),
        ("empty-spec-run", ("run", "empty.yaml"), (SPEC,)),
        ("spec-null", ("compile", "null.yaml"), (SPEC,)),
        ("spec-binary", ("compile", "binary.yaml"), (SPEC,)),
        ("spec-2MiB", ("compile", "big.yaml"), (SPEC,)),
        ("unicode-data-name", TRAIN + ("--data", "données-数据.npz"), (OK,)),
        ("unicode-checkpoint-dir", TRAIN + ("--checkpoint-dir", "чекпойнт"), (OK,)),
        ("long-checkpoint-dir-250", TRAIN + ("--checkpoint-dir", "c" * 250), (OK,)),
        # ~3,000 characters: under PATH_MAX (4096) with any temporary folder in front
        ("long-path-3000", TRAIN + ("--checkpoint-dir", "/".join(["d" * 200] * 15)), (OK,)),
        ("long-path-5000-component", TRAIN + ("--save", "s" * 5000 + ".npz"), (OUTPUT,)),
        ("symlink-loop-spec", ("compile", "loop.yaml"), (SPEC,)),
        ("symlink-loop-data", TRAIN + ("--data", "loop.npz"), (DATA,)),
        ("symlink-loop-checkpoint-dir", TRAIN + ("--checkpoint-dir", "loopdir"), (OUTPUT,)),
        ("checkpoint-dir-symlink-to-ckpt", ("run", "spec.yaml", "--limit", "64", "--epochs",
                                            "2", "--checkpoint-dir", "link", "--resume"),
         (OK,)),
        ("data-symlink-ok", TRAIN + ("--data", "link.npz"), (OK,)),
        ("weights-are-data", ("eval", "spec.yaml", "--weights", "data.npz"), (DATA,)),
        ("data-are-weights", TRAIN + ("--data", "weights.npz"), (DATA,)),
        ("data-is-checkpoint", TRAIN + ("--data", "ckpt/last.npz"), (DATA,)),
        ("spec-is-npz", ("compile", "data.npz"), (SPEC,)),
        ("predict-the-checkpoint", predict("ckpt/last.npz"), (DATA,)),
        ("save-to-the-checkpoint", TRAIN + ("--save", "ckpt/last.npz"), (OK, OUTPUT, USAGE)),
        ("checkpoint-dir-with-garbage-best", TRAIN + ("--checkpoint-dir", "junk"), (OK,)),
        ("metrics-appends", TRAIN + ("--metrics", "m.jsonl"), (OK,)),
        ("dataset-embedded-limit", ("run", "spec.yaml", "--dataset", "embedded", "--limit",
                                    "64", "--epochs", "1"), (OK,)),
        ("labels-only-one-class", TRAIN + ("--data", "oneclass.npz"), (OK,)),
        ("twice-the-same-flag", TRAIN + ("--epochs", "1", "--epochs", "1"), (OK,)),
        ("stdin-as-predict", predict("/dev/stdin"), (DATA,)),
        ("dash-as-spec", ("compile", "-"), (SPEC, USAGE)),
    ]

    def files(folder):
        for name in ("empty.npz", "empty.npy", "empty.yaml"):
            (folder / name).write_bytes(b"")
        (folder / "null.yaml").write_text("null\n")
        (folder / "binary.yaml").write_bytes(bytes(range(256)) * 4)
        (folder / "big.yaml").write_text("name: x\n" + "# pad\n" * (2 << 18))
        (folder / "données-数据.npz").write_bytes((folder / "data.npz").read_bytes())
        mk.special(folder / "loop.yaml", "loop")
        mk.special(folder / "loop.npz", "loop")
        mk.special(folder / "loopdir", "loop")
        (folder / "link").symlink_to("ckpt")
        (folder / "link.npz").symlink_to("data.npz")
        (folder / "junk").mkdir()
        (folder / "junk/best.npz").write_bytes(b"garbage")
        (folder / "junk/.last.npz.dead.tmp").write_bytes(b"garbage")
        x, y = mk.tiny_set()
        mk.write_npz(folder / "oneclass.npz", mk.data_members(y=np.zeros(96, np.int64),
                                                              y_test=np.zeros(32, np.int64)))
    for name, argv, expect in table:
        updates = ("ckpt/last.npz", "ckpt/best.npz") if "ckpt" in " ".join(
            a for a in argv if isinstance(a, str)) or "link" in argv else ()
        cases.append(Case(f"beyond/{name}", "beyond", argv, expect, make=files,
                          updates=updates, keep=("weights.npz",) if updates else KEEP,
                          weights=argv[-1] if "--save" in argv else None))
    return _quick(cases, 5)


CLASSES = {
    "nonfinite": nonfinite, "concurrent": concurrent, "memory": memory,
    "hostile files": hostile_files, "caches": caches, "outputs": outputs, "signals": signals,
    "checkpoint header": checkpoint_header, "special files": special_files,
    "untrusted text": untrusted_text, "values": values, "predict": predict_inputs,
    "exit statuses": exit_statuses, "messages": messages, "beyond": beyond,
}


def corpus(classes=None, quick: bool = False) -> list[Case]:
    """The cases of ``classes`` (every class by default), or only their quick subset."""
    cases = [case for name, build in CLASSES.items() if not classes or name in classes
             for case in build()]
    names = [case.name for case in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate case names: {duplicates}")
    return [case for case in cases if case.quick] if quick else cases
