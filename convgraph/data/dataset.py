"""The in-memory data set every loader returns, and the checks shared by the loaders.

Images are kept in PyTorch's (N, depth, height, width) order, the order of every host array
convgraph takes and returns. The device holds activations as NHWC with halos and padded channels
(codegen/layout.py), so the runtime packs each batch into that layout (a transpose) as it copies
it in, and unpacks what it reads back.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import numpy as np

from convgraph.core import Volume
from convgraph.errors import DataError
from convgraph.files import readable_file


@dataclass
class Dataset:
    """One split of a data set, fully in memory.

    Attributes
    ----------
    name : str
        What to call it in messages and logs, e.g. ``"fashion-mnist (train)"``.
    x : numpy.ndarray
        Images, shape (N, depth, height, width). ``uint8`` (0..255) as stored by every file loader
        and the embedded generator, or ``float32`` from an ``.npz`` that holds floats; float pixels
        are used as they are (not divided by 255).
    y : numpy.ndarray
        Labels, shape (N,), ``int64``, each in ``[0, classes)``; or, for segmentation, masks
        (N, height, width) of integers (uint8 or wider), each a class or the ignore label
        (data/masks.py).
    classes : int
        Number of classes (the width of the network's output).
    class_names : list of str, optional
        A name per class where the data set provides them.
    note : str, optional
        Something the user should be told about how the data was read (printed by the runtime),
        e.g. that a folder without train/test sub-folders serves both splits.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    classes: int
    class_names: list[str] | None = None
    note: str | None = None

    def __post_init__(self):
        # A loader bug should fail here, not as a confusing shape error deep in training.
        if self.x.ndim != 4:
            raise ValueError(f"Dataset.x must be (N, D, H, W), got shape {self.x.shape}")
        if self.y.shape[:1] != (self.x.shape[0],) or self.y.ndim not in (1, 3):
            raise ValueError(f"Dataset.y must be ({self.x.shape[0]},) or "
                             f"({self.x.shape[0]}, H, W), got {self.y.shape}")
        if self.x.dtype not in (np.uint8, np.float32):
            raise ValueError(f"Dataset.x must be uint8 or float32, got {self.x.dtype}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def first(self, count: int) -> Dataset:
        """The first ``count`` images (``convgraph run --limit``), names and classes kept."""
        return Dataset(self.name, self.x[:count], self.y[:count], self.classes,
                       self.class_names, self.note)

    @property
    def masks(self) -> bool:
        """Whether the labels are per-pixel masks (N, H, W) (segmentation)."""
        return self.y.ndim == 3

    def volume(self) -> Volume:
        """The volume of one image, width x height x depth as specs write it."""
        _, depth, height, width = self.x.shape
        return Volume(int(width), int(height), int(depth))


def describe(volume: Volume, classes: int) -> str:
    """``"28x28x1 images in 10 classes"`` -- the phrase used by every mismatch message."""
    return f"{volume} images in {classes} class{'es' if classes != 1 else ''}"


def check_fits(what: str, found: Volume, found_classes: int, volume: Volume, classes: int):
    """Raise DataError unless a data set's image volume and class count are the spec's.

    Parameters
    ----------
    what : str
        The data set and where it came from, e.g. ``"fashion-mnist (/usr/share/...)"``.
    found, found_classes : Volume, int
        What the data set holds.
    volume, classes : Volume, int
        The spec's input volume and the number of classes its output layer produces.
    """
    if tuple(found) == tuple(volume) and found_classes == classes:
        return
    raise DataError(
        f"{what} holds {describe(found, found_classes)}, but the spec's input is {volume} and "
        f"its output has {classes} classes.",
        hint=f"set the spec's input to {found} and its last layer to {found_classes} units, "
        "or train on a data set that matches the spec (train: {dataset: ...}).",
    )


def check_labels(y: np.ndarray, classes: int, where: str) -> np.ndarray:
    """Return ``y`` as int64 after checking every label is in ``[0, classes)``.

    ``where`` names the file the labels came from, for the message.
    """
    if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        index = int(np.flatnonzero(y == bad)[0])
        raise DataError(
            f"{where}: label {bad} (record {index}) is outside 0..{classes - 1}; the data set "
            f"should hold {classes} classes, numbered from 0.",
            hint="check the file is not corrupt, or make the spec's last layer wide enough "
            "for every class.",
        )
    return y.astype(np.int64, copy=False)


def read_file(path: str, what: str) -> bytes:
    """All bytes of ``path``, a regular file (files.readable_file: a FIFO, device or folder is
    refused at once instead of blocking or never ending); else a DataError naming it."""
    target = readable_file(path, f"{what} file")
    try:
        with open(target, "rb") as handle:
            return handle.read()
    except OSError as why:
        raise DataError(f"{what} file {path} cannot be read: {why.strerror or why}.") from None


def require_dir(path: str, what: str, hint: str | None = None) -> str:
    """``path`` if it is an existing directory, else a DataError saying what it should hold."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{what}: the folder {path} does not exist.", hint=hint) from None
    except OSError as why:
        raise DataError(f"{what}: the folder {path} cannot be read: {why.strerror or why}.",
                        hint=hint) from None
    if stat.S_ISREG(mode):
        raise DataError(f"{what}: {path} is a file, but a folder is expected.", hint=hint)
    if not stat.S_ISDIR(mode):
        raise DataError(f"{what}: {path} is a special file (a FIFO, device or socket), but a "
                        "folder is expected.", hint=hint)
    return path


def listing(folder: str, limit: int = 8) -> str:
    """A short, sorted list of what a folder holds, for 'file not found' messages."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return "(it cannot be listed)"
    if not names:
        return "(it is empty)"
    shown = ", ".join(names[:limit])
    return f"({shown}{', ...' if len(names) > limit else ''})"
