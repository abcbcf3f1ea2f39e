"""Segmentation targets: (N, H, W) masks of class indices, one per pixel of the network's output.

A network whose loss input is spatial (W or H > 1) trains on masks instead of one label per
image; each mask value is a class in ``[0, classes)`` or the ignore label (``train:
ignore_label``, 255 by default, VOC's and Cityscapes' "void"), a pixel that counts for nothing.
"""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.errors import DataError

MASK_HINT = ("save masks as (N, height, width) integers (uint8 is enough), each pixel a class "
             "from 0 or the ignore label (train: ignore_label, 255 by default), e.g. "
             "numpy.savez(path, x=images, masks=masks).")


def is_spatial(volume: Volume) -> bool:
    """Whether a network with output ``volume`` is trained per pixel (W or H > 1)."""
    return volume.width > 1 or volume.height > 1


def check_masks(y: np.ndarray, classes: int, output: Volume, ignore_label: int,
                where: str) -> np.ndarray:
    """``y`` (N, H, W) masks, their integer dtype kept, after checking their shape is the
    network's output H x W and every value a class or the ignore label; DataError naming the
    first bad pixel."""
    if y.dtype.kind not in "iu":
        raise DataError(f"{where}: the masks have dtype {y.dtype}; mask values must be "
                        "integers.", hint=MASK_HINT)
    if y.ndim != 3 or y.shape[1:] != (output.height, output.width):
        found = "x".join(map(str, y.shape))
        raise DataError(
            f"{where}: the masks have shape {found}, but the network's output is {output}, so "
            f"they should be (N, {output.height}, {output.width}): one class per output pixel.",
            hint=MASK_HINT if y.ndim != 3 else
            "resize the masks to the output's height x width (nearest neighbour), or change "
            "the network so its output matches them.")
    bad = (y < 0) | ((y >= classes) & (y != ignore_label))
    if bad.any():
        image, row, column = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{where}: mask value {int(y[image, row, column])} (image {image}, row {row}, "
            f"column {column}) is neither a class in 0..{classes - 1} nor the ignore label "
            f"{ignore_label}.",
            hint="check the masks' class numbering, widen the last layer to one score per "
                 "class, or set train: ignore_label to the value that marks void pixels.")
    return y


def check_targets(y: np.ndarray, classes: int, output: Volume, ignore_label: int,
                  where: str) -> np.ndarray:
    """The labels a network with ``output`` trains on: masks (checked by check_masks) for a
    spatial output, (N,) class indices otherwise; DataError when the kind does not fit."""
    if is_spatial(output):
        if y.ndim == 1:
            raise DataError(
                f"{where} holds one label per image, but the network's output is {output}, so "
                "it trains per pixel and needs (N, height, width) masks.",
                hint="train it on a segmentation set (train: {dataset: shapes}, or an npz with "
                     "masks), or end the network with gap or fc for one score per class.")
        return check_masks(y, classes, output, ignore_label, where)
    if y.ndim != 1:
        raise DataError(
            f"{where} holds masks of shape {'x'.join(map(str, y.shape))}, but the network's "
            f"output is {output}: one set of class scores per image, not per pixel.",
            hint="end the network at a spatial score map (e.g. a 1x1 conv to one channel per "
                 "class) to train on masks, or give one label per image.")
    return y


def confusion(labels: np.ndarray, predictions: np.ndarray, classes: int,
              ignore_label: int | None = None) -> np.ndarray:
    """The (classes, classes) confusion matrix of ``labels`` (rows) against ``predictions``
    (columns), over every image or pixel whose label is not ``ignore_label``."""
    labels = np.asarray(labels).reshape(-1)
    predictions = np.asarray(predictions).reshape(-1)
    if ignore_label is not None:
        kept = labels != ignore_label
        labels, predictions = labels[kept], predictions[kept]
    counts = np.bincount(labels.astype(np.int64) * classes + predictions, minlength=classes ** 2)
    return counts[: classes ** 2].reshape(classes, classes)


def mean_iou(matrix: np.ndarray) -> float:
    """Mean intersection over union over the classes present (in the labels or the
    predictions): per class, true positives / (labelled + predicted - true positives).

    >>> mean_iou(np.array([[2, 0], [1, 1]]))  # IoU 2/3 and 1/2
    0.5833333333333333
    """
    true = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - true
    present = union > 0
    return float((true[present] / union[present]).mean()) if present.any() else 0.0
