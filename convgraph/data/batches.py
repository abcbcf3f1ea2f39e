"""Mini-batches for training and evaluation: order, augmentation and normalisation.

Every random choice of an epoch -- the order and each image's crop offset and flip -- is drawn up
front from ``numpy.random.default_rng([seed, epoch])``, in a fixed sequence, before the first
batch is made. So the batches depend only on (data, settings, seed, epoch), and a run resumed
after batch k (``start=k``) gets exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convgraph.errors import DataError

from .dataset import Dataset

_STATS_CHUNK = 4096  # images per step in channel_stats: bounds the float64 temporaries


def batch_count(data: Dataset, batch: int) -> int:
    """How many batches :func:`batches` yields per epoch (the last one may be smaller)."""
    return -(-len(data) // batch)


def as_unit(x: np.ndarray) -> np.ndarray:
    """Pixels as float32, uint8 scaled to [0, 1]; float data is taken as already scaled."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) * np.float32(1 / 255)
    return x.astype(np.float32, copy=False)


def _per_channel(value, depth: int, name: str) -> np.ndarray:
    array = np.asarray(value, np.float32).reshape(-1)
    if array.size == 1:
        array = np.repeat(array, depth)
    if array.size != depth:
        raise ValueError(f"{name} has {array.size} values, but the images have {depth} channels")
    return array.reshape(1, depth, 1, 1)


def _crop(x: np.ndarray, pad: int, offsets: np.ndarray, fill=0) -> np.ndarray:
    """Pad each image (N, D, H, W) by ``pad`` pixels of ``fill`` and cut out its original size
    at ``offsets`` (row, col)."""
    n, _, height, width = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    # windows[i, :, r, c] is the height x width window at (r, c); pick one per image
    windows = sliding_window_view(padded, (height, width), axis=(2, 3))
    return np.ascontiguousarray(windows[np.arange(n), :, offsets[:, 0], offsets[:, 1]])


def batches(
    data: Dataset,
    batch: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    crop_pad: int = 0,
    flip: bool = False,
    mean=None,
    std=None,
    start: int = 0,
    ignore_label: int = 255,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the mini-batches of one epoch.

    Parameters
    ----------
    data : Dataset
        The split to iterate over.
    batch : int
        Images per batch; the last batch holds the remainder and may be smaller.
    seed, epoch : int
        Select the epoch's random stream, ``numpy.random.default_rng([seed, epoch])``.
    shuffle : bool
        Visit the images in a random order (training) or in stored order (evaluation).
    crop_pad : int
        Augmentation: pad each image with ``crop_pad`` zero pixels (black, before normalisation,
        as torchvision's ``RandomCrop(padding=...)``) on every side, then crop a random window
        of the original size. Masks are cropped with their images, their padding
        ``ignore_label`` (those pixels count for nothing).
    flip : bool
        Augmentation: mirror each image (and its mask) left-right with probability 1/2.
    mean, std : array-like of length depth (or a scalar), optional
        Normalise each channel as ``(x - mean) / std`` after scaling uint8 pixels to [0, 1];
        see :func:`channel_stats`. Either may be omitted (mean 0, std 1).
    start : int
        Skip the first ``start`` batches (to resume mid-epoch); the rest are exactly those of an
        uninterrupted pass.
    ignore_label : int
        The mask value of the pixels a crop pads masks with.

    Yields
    ------
    x : numpy.ndarray
        float32 (B, depth, height, width), C-contiguous.
    y : numpy.ndarray
        int32 (B,), or masks (B, height, width) when the data set holds masks.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if start < 0:
        raise ValueError(f"start must be at least 0, got {start}")
    if crop_pad < 0:
        raise ValueError(f"crop_pad must be at least 0, got {crop_pad}")
    n = len(data)
    depth = data.x.shape[1]
    if data.masks and (crop_pad or flip) and data.y.shape[1:] != data.x.shape[2:]:
        raise DataError(
            f"{data.name}: its masks are {data.y.shape[2]}x{data.y.shape[1]} but its images "
            f"{data.x.shape[3]}x{data.x.shape[2]}, so crop_pad and flip cannot move them "
            "together.", hint="train without crop_pad and flip, or with masks the images' size.")
    # Draw everything for the whole epoch now, in a fixed order, so that neither `start` nor
    # the batch size of earlier batches can shift the random stream of later ones.
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n) if shuffle else np.arange(n)
    offsets = rng.integers(0, 2 * crop_pad + 1, size=(n, 2)) if crop_pad else None
    flips = rng.random(n) < 0.5 if flip else None
    shift = None if mean is None else _per_channel(mean, depth, "mean")
    scale = None if std is None else 1.0 / _per_channel(std, depth, "std")

    for lo in range(start * batch, n, batch):
        hi = min(n, lo + batch)
        x = as_unit(data.x[order[lo:hi]])  # fancy indexing copies, so x is ours to change
        y = data.y[order[lo:hi]].astype(np.int32)
        if offsets is not None:
            x = _crop(x, crop_pad, offsets[lo:hi])
            if data.masks:  # the same window of the mask; its padding counts for nothing
                y = _crop(y[:, None], crop_pad, offsets[lo:hi], ignore_label)[:, 0]
        if flips is not None:
            mirrored = flips[lo:hi]
            x[mirrored] = x[mirrored, :, :, ::-1]
            if data.masks:
                y[mirrored] = y[mirrored, :, ::-1]
        if shift is not None:
            x -= shift
        if scale is not None:
            x *= scale
        yield x, np.ascontiguousarray(y)


def channel_stats(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the pixels scaled as :func:`batches` scales
    them (uint8 / 255; float data as it is).

    Computed in float64 over chunks of images, so it is exact enough and needs little memory
    even for 60,000 images. A channel with zero spread gets std 1, so normalising by it never
    divides by zero.

    Returns
    -------
    mean, std : numpy.ndarray
        float32, shape (depth,); pass them to :func:`batches` as ``mean`` and ``std``.
    """
    depth = data.x.shape[1]
    total = np.zeros(depth)
    squares = np.zeros(depth)
    for lo in range(0, len(data), _STATS_CHUNK):
        chunk = data.x[lo:lo + _STATS_CHUNK].astype(np.float64)
        if data.x.dtype == np.uint8:
            chunk /= 255.0
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
    count = max(1, len(data) * data.x.shape[2] * data.x.shape[3])
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std[std < 1e-12] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def input_normalization(settings: dict, saved=None, train_data=None):
    """The per-channel (mean, std) inputs are standardised with, or None: the one rule of
    training, evaluation and prediction.

    The statistics the weights were trained with (``saved``, from a checkpoint) when there are
    any; else, when the spec's ``train:`` ``settings`` say ``normalize: true``, those of the
    training set (``train_data``: a Dataset, or a function returning one, called only then);
    else (no statistics and no training set to take them from, or ``normalize: false``) none.

    >>> input_normalization({"normalize": False}, None, None) is None
    True
    """
    if saved is not None:
        return saved
    if not settings["normalize"] or train_data is None:
        return None
    return channel_stats(train_data() if callable(train_data) else train_data)
