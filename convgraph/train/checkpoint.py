"""Checkpoints: weights, optimizer state, progress and RNG state in one .npz, saved atomically.

Format: a ``.npz`` (read with ``allow_pickle=False``, so loading never runs code) whose arrays are
``param/<node>.<key>`` (PyTorch names and shapes), ``optim/<node>.<key>/<slot>`` and
``header`` (UTF-8 JSON as uint8: format version, epoch, step, batch index, the spec's network
hash, metrics, and a SHA-256 checksum over every other array). Saving writes a temporary file in
the same folder and renames it over the old one, so a crash mid-save leaves the previous
checkpoint whole.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import networkx as nx
import numpy as np

from convgraph.errors import DataError
from convgraph.files import atomic_write
from convgraph.graph import signature

FORMAT = "convgraph-checkpoint-1"


def network_hash(graph: nx.DiGraph) -> str:
    """A hash of the network itself (layers, settings, wiring, volumes) -- not of ``train:``, so a
    run can resume with another learning rate but never into another network."""
    text = repr([(name, op, attrs, inputs, tuple(volume) if volume else None)
                 for name, op, attrs, inputs, volume in signature(graph)])
    return hashlib.sha256(text.encode()).hexdigest()


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_checkpoint(path, params: dict, optimizer: dict, header: dict) -> None:
    """Write a checkpoint atomically (temporary file, fsync, rename)."""
    target = Path(path)
    arrays = {f"param/{k}": np.asarray(v, np.float32) for k, v in params.items()}
    arrays.update({f"optim/{k}": np.asarray(v, np.float32) for k, v in optimizer.items()})
    meta = dict(header, format=FORMAT, checksum=_checksum(arrays))
    arrays["header"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    atomic_write(target, lambda handle: np.savez(handle, **arrays))


def load_checkpoint(path, expected_hash: str | None = None) -> tuple[dict, dict, dict]:
    """(params, optimizer state, header), after checking the format, checksum and network."""
    name = str(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise DataError(f"the checkpoint {name} does not exist.") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"the checkpoint {name} is truncated or corrupt ({exc}).",
                        hint="use an earlier checkpoint (last.npz / best.npz), or start "
                             "afresh without --resume.") from None
    return _unpack(arrays, name, expected_hash)


def _unpack(arrays: dict, name: str, expected_hash: str | None = None
            ) -> tuple[dict, dict, dict]:
    """A checkpoint's arrays, as read from ``name``, checked and split into (params,
    optimizer state, header)."""
    arrays = dict(arrays)
    if "header" not in arrays:
        raise DataError(f"{name} is not a convgraph checkpoint (no header).")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(f"the checkpoint {name} has a corrupt header.") from None
    if header.get("format") != FORMAT:
        raise DataError(f"{name} is not a {FORMAT} file (format {header.get('format')!r}).")
    if header.get("checksum") != _checksum(arrays):
        raise DataError(f"the checkpoint {name} fails its checksum: it was corrupted after it "
                        "was written.", hint="use an earlier checkpoint, or start afresh.")
    if expected_hash is not None and header.get("network") != expected_hash:
        raise DataError(
            f"the checkpoint {name} was saved from a different network (spec "
            f"'{header.get('spec', '?')}'), so its weights do not fit this one.",
            hint="resume with the spec that made it, or start afresh without --resume.")
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optimizer = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    return params, optimizer, header


def saved_normalization(header: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-channel (mean, std) a checkpoint's header records the weights were trained
    with, or None."""
    if header.get("mean") is None:
        return None
    return np.array(header["mean"]), np.array(header["std"])


def load_weights(path) -> tuple[dict, tuple[np.ndarray, np.ndarray] | None]:
    """(params, normalisation) from a checkpoint or a plain weights ``.npz`` (arrays named
    ``<node>.weight`` ...), reading the file once: a checkpoint gives its weights and the input
    normalisation they were trained with (None if none), a weights file its arrays and None.

    Raises DataError naming the file when it is missing, unreadable, or a checkpoint that fails
    its checks.

    >>> params, normalization = load_weights("runs/best.npz")  # doctest: +SKIP
    """
    from convgraph.params import load_arrays

    arrays = load_arrays(path)
    if "header" not in arrays:
        return arrays, None
    params, _, header = _unpack(arrays, str(path))
    return params, saved_normalization(header)
