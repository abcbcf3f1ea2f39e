"""Any data set saved with ``numpy.savez``: ``x``, ``y`` and optionally ``x_test``, ``y_test``.

``x`` is (N, D, H, W), or (N, H, W) for one channel; ``y`` is (N,) integer labels, or for
segmentation (N, H, W) integer masks, which may also be saved as ``masks`` (``masks_test``).
The file is read by data/arrays.py, within its size: an object array (which numpy stores as a
pickle) is refused rather than unpickled, and a header's claims are checked before anything is
allocated.
Float images must be finite (NaN or an infinity is refused, naming the image).
"""

from __future__ import annotations

import os

import numpy as np

from convgraph.core import Volume
from convgraph.errors import DataError

from .arrays import NpzReader, describe_value, first_nonfinite, place
from .dataset import Dataset, check_labels

_HINT = ("save it with numpy.savez(path, x=images, y=labels, x_test=..., y_test=...), images "
         "(N, depth, height, width) as uint8 0..255 or float32, labels (N,) integers from 0 "
         "(or masks (N, height, width) for segmentation).")


def _images(x: np.ndarray, path: str, key: str, volume: Volume) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None, :, :]  # (N, H, W): one channel
    if x.ndim != 4:
        raise DataError(f"{path}: '{key}' has shape {x.shape}; expected (N, depth, height, "
                        "width) or (N, height, width).", hint=_HINT)
    n, d, h, w = x.shape
    if (w, h, d) != tuple(volume) and x.shape[1:] == (volume.height, volume.width, volume.depth):
        # The commonest mistake: images saved channels-last, as TensorFlow and PIL hold them.
        raise DataError(
            f"{path}: '{key}' has shape {x.shape}, which looks like channels-last (N, height, "
            f"width, depth) for the spec's {volume} input; convgraph expects (N, depth, height, "
            "width).",
            hint=f"save x.transpose(0, 3, 1, 2) instead of x as '{key}'.",
        )
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind == "f":
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: check_finite
            return np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype.kind in "iub" and x.size and 0 <= int(x.min()) and int(x.max()) <= 255:
        return x.astype(np.uint8)  # integer pixels 0..255 stored in a wider type
    raise DataError(f"{path}: '{key}' has dtype {x.dtype}; pixels must be uint8 (0..255), "
                    "integers in 0..255, or floats.", hint=_HINT)


def _labels(y: np.ndarray, n: int, classes: int, path: str, key: str) -> np.ndarray:
    if y.ndim == 3 and len(y) == n:  # masks: their values are checked against the network's
        if y.dtype.kind not in "iu":   # output and ignore label by load_dataset (data/masks.py)
            raise DataError(f"{path}: '{key}' (masks) has dtype {y.dtype}; mask values must be "
                            "integers.", hint=_HINT)
        return y
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: '{key}' has shape {y.shape}, but there are {n:,} images, so "
                        f"it should be ({n},), or ({n}, height, width) masks.", hint=_HINT)
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: '{key}' has dtype {y.dtype}; labels must be integers.",
                        hint=_HINT)
    return y


def check_finite(x: np.ndarray, path: str, key: str, split: str) -> None:
    """DataError naming the file, the split and the first image (channel, row, column) that
    holds NaN or an infinity: one would train silently into NaN weights (a ReLU's max turns NaN
    into 0, so even the loss stays finite)."""
    index = first_nonfinite(x)
    if index is None:
        return
    bad = int((~np.isfinite(x[index[0]])).sum())
    raise DataError(
        f"{path}: '{key}' (the {split} split) holds {describe_value(x[index])} at "
        f"{place(index)}"
        f"{f' and {bad - 1:,} more non-finite values in that image' if bad > 1 else ''}; "
        "every pixel of a data set must be a finite number.",
        hint="replace or drop the images with NaN or infinite pixels before saving.",
    )


def load_npz(path: str | None, split: str, volume: Volume, classes: int) -> Dataset:
    """Load ``split`` from an ``.npz`` file; the spec's ``classes`` bounds the labels.

    Every member is read within the file's size (data/arrays.py), and float images are checked
    to be finite."""
    if path is None:
        raise DataError("the npz data set needs a file.", hint="pass --data FILE.npz; " + _HINT)
    if os.path.isdir(path):
        raise DataError(f"the npz data set {path} is a folder, but an .npz file is expected.",
                        hint=_HINT)
    if not os.path.lexists(path):
        raise DataError(f"npz file {path} does not exist.", hint="pass --data FILE.npz.")
    xkey, ykey = ("x", "y") if split == "train" else ("x_test", "y_test")
    try:
        with NpzReader(path, "the npz data set") as archive:
            masks = "masks" if split == "train" else "masks_test"
            if ykey not in archive and masks in archive:
                ykey = masks
            missing = [k for k in (xkey, ykey) if k not in archive]
            if missing:
                if split == "test":
                    message = (f"{path} has no test split: it lacks "
                               f"{' and '.join(repr(k) for k in missing)} (it holds "
                               f"{', '.join(archive.files) or 'nothing'}).")
                    hint = "save the test images and labels as x_test and y_test."
                else:
                    message = (f"{path} lacks {' and '.join(repr(k) for k in missing)} (it "
                               f"holds {', '.join(archive.files) or 'nothing'}).")
                    hint = _HINT
                raise DataError(message, hint=hint)
            x, y = archive.read(xkey), archive.read(ykey)
    except DataError as error:
        if error.hint is None:
            error.hint = _HINT
        raise
    images = _images(x, path, xkey, volume)
    check_finite(images, path, xkey, split)
    labels = _labels(y, len(images), classes, path, ykey)
    if labels.ndim == 1:
        labels = check_labels(labels, classes, f"{path} ('{ykey}')")
    return Dataset(f"npz {os.path.basename(path)} ({split})", images, labels, classes)
