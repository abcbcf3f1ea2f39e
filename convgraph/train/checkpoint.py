"""Checkpoints: weights, optimizer state, progress and RNG state in one .npz, saved atomically.

Format 2 (``convgraph-checkpoint-2``): a ``.npz`` (read with ``allow_pickle=False``, so loading
never runs code) whose arrays are ``param/<node>.<key>`` (PyTorch names and shapes, float32),
``optim/<node>.<key>/<slot>`` and ``header`` (UTF-8 JSON as uint8: format, epoch, step, batch
position, batch size, the data set's identity, the saved settings, the spec's network hash,
metrics, normalisation, the expanded spec and the class names (so that the file alone is a
model: ``convgraph.load``), and a SHA-256 checksum over every other array *and the rest of the
header*). Format 1 files (whose checksum left the header out) still load; every field of either
is validated (types, ranges, consistency with the arrays) before anything uses it, and each
refusal is a DataError naming the file and the field.

Saving writes a temporary file in the same folder, ``.<name>.<pid>.<random>.tmp``, and renames it
over the old one, so a crash mid-save leaves the previous checkpoint whole; a save removes only
the temporary files of writers that are no longer alive. A checkpoint folder belongs to one run
at a time (:class:`FolderLock`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import time
from pathlib import Path

import networkx as nx
import numpy as np

from convgraph import signals
from convgraph.errors import DataError, OutputError
from convgraph.files import atomic_write
from convgraph.graph import signature

FORMAT = "convgraph-checkpoint-2"
FORMAT_1 = "convgraph-checkpoint-1"  # header outside the checksum; still read
LOCK_NAME = ".convgraph.lock"
MAX_BATCH = 1 << 20  # a batch size beyond this is not one a checkpoint can have been saved at
MAX_SPEC_CHARS = 1 << 20  # a spec file is at most 1 MiB (spec/yamlload.py)
MAX_CLASSES = 1 << 20  # an fc's units are at most 1048576
# the numbers of an epoch record (train.loop.EpochRecord), each a finite number or null
EPOCH_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                "images_per_s", "seconds", "lr")


def network_hash(graph: nx.DiGraph) -> str:
    """A hash of the network itself (layers, settings, wiring, volumes) -- not of ``train:``, so a
    run can resume with another learning rate but never into another network."""
    text = repr([(name, op, attrs, inputs, tuple(volume) if volume else None)
                 for name, op, attrs, inputs, volume in signature(graph)])
    return hashlib.sha256(text.encode()).hexdigest()


def model_fields(graph: nx.DiGraph, class_names=None) -> dict:
    """The header fields that make a weights file a whole model: the spec's name, the network's
    hash, the expanded spec (so the file alone rebuilds the network: ``convgraph.load``) and the
    class names (None or one per class)."""
    from convgraph.spec.expand import expanded_yaml

    return {"spec": graph.graph["name"], "network": network_hash(graph),
            "spec_yaml": expanded_yaml(graph.graph["spec"]),
            "class_names": None if class_names is None else [str(c) for c in class_names]}


def labels_digest(labels) -> str:
    """A short digest of a data set's labels, in order: what a checkpoint's position refers to."""
    return hashlib.sha256(np.ascontiguousarray(labels, np.int64).tobytes()).hexdigest()[:16]


def _checksum(arrays: dict[str, np.ndarray], header: dict | None = None) -> str:
    """SHA-256 over every array (name, dtype, shape, bytes) and, format 2, the header's JSON
    without its checksum."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    if header is not None:
        rest = {key: value for key, value in header.items() if key != "checksum"}
        digest.update(b"header|" + json.dumps(rest, sort_keys=True).encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- temporary files

def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (someone else's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _remove_dead_writers(folder: Path, name: str) -> None:
    """Remove ``.<name>.<pid>.*.tmp`` left by killed saves whose writer is dead: never a
    temporary file another live process is writing (nor one whose writer it cannot tell)."""
    pattern = re.compile(re.escape(f".{name}.") + r"(\d+)\..*\.tmp\Z")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        found = pattern.match(entry.name)
        if found and int(found.group(1)) != os.getpid() and not pid_alive(int(found.group(1))):
            try:
                entry.unlink()
            except OSError:
                pass


def _write_npz(target: Path, arrays: dict) -> None:
    atomic_write(target, lambda handle: np.savez(handle, **arrays),
                 temporary_prefix=f".{target.name}.{os.getpid()}.")


def save_checkpoint(path, params: dict, optimizer: dict, header: dict) -> None:
    """Write a checkpoint atomically (temporary file, fsync, rename); a stopping signal during
    the save is held until it completes."""
    with signals.deferred():
        target = Path(path)
        arrays = {f"param/{k}": np.asarray(v, np.float32) for k, v in params.items()}
        arrays.update({f"optim/{k}": np.asarray(v, np.float32) for k, v in optimizer.items()})
        meta = dict(header, format=FORMAT)
        meta["checksum"] = _checksum(arrays, meta)
        arrays["header"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_writers(target.parent, target.name)
        _write_npz(target, arrays)


def copy_checkpoint(source, target) -> None:
    """Copy a checkpoint to ``target`` atomically (best.npz is never half-written either)."""
    source, target = Path(source), Path(target)
    data = source.read_bytes()
    with signals.deferred():
        _remove_dead_writers(target.parent, target.name)
        atomic_write(target, lambda handle: handle.write(data),
                     temporary_prefix=f".{target.name}.{os.getpid()}.")


# ----------------------------------------------------------------------------- one run per folder

class FolderLock:
    """An exclusive OS lock (``flock``) on ``DIR/.convgraph.lock``, held while a run uses the
    checkpoint folder; the file records the holder's pid and start time, for the message a
    second run gets. The kernel releases the lock when the holder exits, however it dies, so a
    killed run never leaves the folder locked.

    Locks are counted per process: taking a folder this process already holds succeeds (the
    CLI holds it for the whole command, the Trainer again for resume and fit).
    """

    _held: dict[str, list] = {}  # real path -> [file descriptor, count]

    def __init__(self, folder):
        self.folder = Path(folder)
        self.key = None

    def acquire(self) -> FolderLock:
        key = os.path.realpath(self.folder)
        held = FolderLock._held.get(key)
        if held is not None:
            held[1] += 1
            self.key = key
            return self
        from convgraph.files import writable_folder

        writable_folder(self.folder, "the checkpoint folder")
        path = self.folder / LOCK_NAME
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK,
                                 0o644)
        except OSError as exc:
            raise OutputError(f"cannot lock the checkpoint folder {self.folder} ({path}: "
                              f"{exc.strerror or exc}).",
                              hint=f"remove {path} if it is not a regular file, or choose "
                                   "another --checkpoint-dir.") from None
        try:
            if not _regular(descriptor):
                raise OutputError(f"cannot lock the checkpoint folder {self.folder}: {path} "
                                  "is not a regular file.", hint=f"remove {path}.")
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(descriptor)
                raise OutputError(
                    f"the checkpoint folder {self.folder} is in use by another run ({holder}); "
                    "two runs in one folder would overwrite each other's checkpoints.",
                    hint="wait for that run to finish (or stop it), or give this run another "
                         "--checkpoint-dir.") from None
            except OSError as exc:
                raise OutputError(f"cannot lock the checkpoint folder {self.folder}: "
                                  f"{exc.strerror or exc}.",
                                  hint="choose a checkpoint folder on a local disk.") from None
            record = json.dumps({"pid": os.getpid(), "started": time.strftime(
                "%Y-%m-%d %H:%M:%S %Z"), "started_unix": round(time.time(), 3)}).encode()
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, record + b"\n", 0)
        except BaseException:
            os.close(descriptor)
            raise
        FolderLock._held[key] = [descriptor, 1]
        self.key = key
        return self

    def release(self) -> None:
        key, self.key = self.key, None
        held = FolderLock._held.get(key) if key is not None else None
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del FolderLock._held[key]
            os.close(held[0])  # closing the last descriptor releases the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _regular(descriptor: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(descriptor).st_mode)


def _holder(descriptor: int) -> str:
    """'pid N, started T' from the lock file, as far as it can be read."""
    try:
        record = json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
        pid, started = int(record["pid"]), str(record.get("started", "?"))
        return f"pid {pid}, started {started}"
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "a process that holds its lock"


# ----------------------------------------------------------------------------- loading

def load_checkpoint(path, expected_hash: str | None = None) -> tuple[dict, dict, dict]:
    """(params, optimizer state, header), after checking the format, checksum, every header
    field and the network."""
    from convgraph.files import readable_file

    name = str(path)
    try:
        readable_file(path, "the checkpoint")
    except DataError as exc:
        if "does not exist" in exc.message:
            raise DataError(f"the checkpoint {name} does not exist.") from None
        raise
    from convgraph.data.arrays import NpzReader

    try:  # every member's header checked against the file's bytes before it is read
        with NpzReader(path, "the checkpoint") as archive:
            arrays = archive.read_all()
    except DataError as exc:
        raise DataError(exc.message, hint="use an earlier checkpoint (last.npz / best.npz), "
                                          "or start afresh without --resume.") from None
    return _unpack(arrays, name, expected_hash)


def _unpack(arrays: dict, name: str, expected_hash: str | None = None
            ) -> tuple[dict, dict, dict]:
    """A checkpoint's arrays, as read from ``name``, checked and split into (params,
    optimizer state, header)."""
    arrays = dict(arrays)
    if "header" not in arrays:
        raise DataError(f"{name} is not a convgraph checkpoint (no header).")
    raw = arrays.pop("header")
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DataError(f"the checkpoint {name} has a corrupt header (not UTF-8 JSON bytes).",
                        hint="use an earlier checkpoint, or start afresh.") from None
    if not isinstance(header, dict):
        raise DataError(f"the checkpoint {name} has a corrupt header: a JSON "
                        f"{type(header).__name__}, not an object.",
                        hint="use an earlier checkpoint, or start afresh.")
    version = header.get("format")
    if version not in (FORMAT, FORMAT_1):
        raise DataError(f"{name} is not a {FORMAT} file (format {version!r}).",
                        hint="it was written by another program or a newer convgraph.")
    expected = _checksum(arrays, header if version == FORMAT else None)
    if header.get("checksum") != expected:
        raise DataError(f"the checkpoint {name} fails its checksum: it was corrupted after it "
                        "was written.", hint="use an earlier checkpoint, or start afresh.")
    if expected_hash is not None and header.get("network") != expected_hash:
        raise DataError(
            f"the checkpoint {name} was saved from a different network (spec "
            f"'{header.get('spec', '?')}'), so its weights do not fit this one.",
            hint="resume with the spec that made it, or start afresh without --resume.")
    _check_header(header, name)
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optimizer = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    _check_arrays(params, optimizer, name)
    return params, optimizer, header


# ----------------------------------------------------------------------------- header fields

def _bad(name: str, field: str, why: str) -> DataError:
    return DataError(f"the checkpoint {name} has an invalid header field '{field}': {why}.",
                     hint="use an earlier checkpoint (last.npz / best.npz), or start afresh "
                          "without --resume.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _integer(header, name, field, low=0, high=None) -> None:
    if field not in header:
        return
    value = header[field]
    if not _is_int(value):
        raise _bad(name, field, f"{json.dumps(value)[:40]} is not a whole number")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _bad(name, field, f"{value} is out of range (must be {bound})")


def _number(header, name, field, low=None, high=None) -> None:
    if field not in header:
        return
    value = header[field]
    if not _is_number(value):
        raise _bad(name, field, f"{json.dumps(value)[:40]} is not a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise _bad(name, field, f"{value} is out of range")


def _check_header(header: dict, name: str) -> None:
    """Every field a checkpoint may have, checked for type and range (absent ones are allowed:
    a weights file written by ``--save`` has no training position)."""
    for field in ("spec", "network"):
        if field in header and not isinstance(header[field], str):
            raise _bad(name, field, "not a string")
    for field in ("epoch", "step", "seen"):
        _integer(header, name, field)
    _integer(header, name, "batch_size", 1, MAX_BATCH)
    _integer(header, name, "steps_per_epoch", 1)
    _integer(header, name, "batch", 0, header.get("steps_per_epoch", 1 << 40))
    if "seed" in header and not _is_int(header["seed"]):
        raise _bad(name, "seed", "not a whole number")
    _number(header, name, "loss_sum", 0.0)
    _number(header, name, "correct", 0.0)
    _number(header, name, "seconds", 0.0)
    _number(header, name, "best_accuracy", -1.0, 1.0)
    if _is_int(header.get("seen")) and _is_number(header.get("correct")) \
            and header["correct"] > header["seen"]:
        raise _bad(name, "correct", f"{header['correct']} correct of {header['seen']} seen")
    if _is_int(header.get("batch_size")) and _is_int(header.get("batch")) \
            and _is_int(header.get("seen")) \
            and header["seen"] > header["batch"] * header["batch_size"]:
        raise _bad(name, "seen", f"{header['seen']} images seen in {header['batch']} batches "
                                 f"of {header['batch_size']}")
    if "history" in header:
        history = header["history"]
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise _bad(name, "history", "not a list of epoch records")
        for index, record in enumerate(history):  # printed, plotted and compared later
            for key in EPOCH_FIELDS:
                value = record.get(key)
                if value is not None and not _is_number(value):
                    raise _bad(name, "history", f"epoch record {index + 1}: '{key}' is "
                                                f"{json.dumps(value)[:40]}, not a finite number")
    for field in ("data", "settings"):
        if field in header and not isinstance(header[field], dict):
            raise _bad(name, field, "not an object")
    data = header.get("data")
    if isinstance(data, dict):
        if not isinstance(data.get("name"), str) or not isinstance(data.get("labels"), str):
            raise _bad(name, "data", "its name or labels digest is missing")
        _integer(data, name, "size", 1)
    _check_normalization(header, name)
    _check_model_fields(header, name)


def _check_model_fields(header: dict, name: str) -> None:
    """The expanded spec (a string, as long as a spec may be) and the class names (null, or a
    list of strings)."""
    if "spec_yaml" in header:
        text = header["spec_yaml"]
        if not isinstance(text, str):
            raise _bad(name, "spec_yaml", "not a string")
        if len(text) > MAX_SPEC_CHARS:
            raise _bad(name, "spec_yaml", f"{len(text):,} characters, more than a spec may have")
    names = header.get("class_names")
    if names is None:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _bad(name, "class_names", "not a list of strings")
    if len(names) > MAX_CLASSES:
        raise _bad(name, "class_names", f"{len(names):,} names (at most {MAX_CLASSES:,})")


def _check_normalization(header: dict, name: str) -> None:
    mean, std = header.get("mean"), header.get("std")
    if mean is None and std is None:
        return
    for field, values in (("mean", mean), ("std", std)):
        if not isinstance(values, list) or not values:
            raise _bad(name, field, "not a list of numbers, one per input channel")
        for value in values:
            if not _is_number(value):
                raise _bad(name, field, f"{json.dumps(value)[:40]} is not a finite number")
    if len(mean) != len(std):
        raise _bad(name, "std", f"{len(std)} values for {len(mean)} channels of 'mean'")
    if any(value <= 0 for value in std):
        raise _bad(name, "std", f"{min(std)} is not a positive standard deviation (inputs "
                                "would be divided by it)")


def _check_arrays(params: dict, optimizer: dict, name: str) -> None:
    """Parameters finite float32; every optimizer slot the shape of its parameter."""
    for key, array in params.items():
        if array.dtype != np.float32:
            raise DataError(f"the checkpoint {name}: parameter '{key}' is {array.dtype}, "
                            "not float32.")
        if not np.all(np.isfinite(array)):
            raise DataError(f"the checkpoint {name}: parameter '{key}' holds NaN or infinite "
                            "values, so it cannot be used.",
                            hint="use an earlier checkpoint, or start afresh.")
    for key, array in optimizer.items():
        base, _, slot = key.rpartition("/")
        if not slot.isdigit() or base not in params:
            raise DataError(f"the checkpoint {name}: optimizer slot '{key}' belongs to no "
                            "parameter of the checkpoint.")
        if array.shape != params[base].shape:
            raise DataError(f"the checkpoint {name}: optimizer slot '{key}' has shape "
                            f"{array.shape}, but its parameter has {params[base].shape}.",
                            hint="use an earlier checkpoint, or start afresh.")
        if array.dtype != np.float32 or not np.all(np.isfinite(array)):
            raise DataError(f"the checkpoint {name}: optimizer slot '{key}' is not finite "
                            "float32.")


def saved_normalization(header: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-channel (mean, std) a checkpoint's header records the weights were trained
    with, or None."""
    if header.get("mean") is None:
        return None
    return np.array(header["mean"]), np.array(header["std"])


def load_model_file(path) -> tuple[dict, dict | None]:
    """(params, header) from a checkpoint or a weights ``.npz``, reading the file once; the
    header is None for a plain weights file (arrays named ``<node>.weight`` ...).

    >>> params, header = load_model_file("runs/best.npz")  # doctest: +SKIP
    >>> header["spec_yaml"].splitlines()[1]                 # doctest: +SKIP
    'name: lenet5'
    """
    from convgraph.params import load_arrays

    arrays = load_arrays(path)
    if "header" not in arrays:
        return arrays, None
    params, _, header = _unpack(arrays, str(path))
    return params, header


def load_weights(path) -> tuple[dict, tuple[np.ndarray, np.ndarray] | None]:
    """(params, normalisation) from a checkpoint or a plain weights ``.npz`` (arrays named
    ``<node>.weight`` ...), reading the file once: a checkpoint gives its weights and the input
    normalisation they were trained with (None if none), a weights file its arrays and None.

    Raises DataError naming the file when it is missing, unreadable, or a checkpoint that fails
    its checks.

    >>> params, normalization = load_weights("runs/best.npz")  # doctest: +SKIP
    """
    params, header = load_model_file(path)
    return params, None if header is None else saved_normalization(header)
