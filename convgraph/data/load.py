"""``load_dataset``: one entry point from the spec's ``train:`` settings to a checked Dataset."""

from __future__ import annotations

from convgraph.core import Volume
from convgraph.errors import DataError, suggest

from .cifar import load_cifar10
from .dataset import Dataset, check_fits
from .embedded import load_embedded
from .folder import load_folder
from .idx import load_idx_dataset
from .kinds import KINDS
from .masks import check_targets
from .npz import load_npz
from .shapes import load_shapes

SPLITS = ("train", "test")


def load_dataset(kind: str, path: str | None, split: str, volume: Volume, classes: int,
                 seed: int = 0, output: Volume | None = None,
                 ignore_label: int = 255) -> Dataset:
    """Load one split of a data set and check it fits the spec.

    Parameters
    ----------
    kind : str
        ``embedded``, ``fashion-mnist``, ``mnist``, ``cifar10``, ``npz`` or ``folder`` (the
        spec's ``train.dataset``).
    path : str or None
        The spec's ``train.data``: a folder (IDX files, CIFAR-10 batches, class folders) or an
        ``.npz`` file. None uses the default location where there is one (Fashion-MNIST:
        ``/usr/share/datasets/fashion-mnist``); the embedded set ignores it.
    split : str
        ``train`` or ``test``.
    volume : Volume
        The spec's input volume; the images must have exactly this width, height and depth.
    classes : int
        The number of classes the network outputs; the data set must have exactly as many.
    seed : int
        Only for ``embedded`` and ``shapes``: which generated data set (each split has its own
        stream).
    output : Volume, optional
        The network's output volume: when given, the labels are checked to be what it trains
        on, (N, H, W) masks of its H x W for a spatial output (segmentation, data/masks.py),
        one class per image otherwise.
    ignore_label : int
        The mask value of pixels that count for nothing (``train: ignore_label``).

    Returns
    -------
    Dataset
        x uint8 (or float32 from a float .npz), (N, depth, height, width); y int64 (N,), or
        integer masks (N, H, W).

    Raises
    ------
    DataError
        A missing, unreadable, truncated or corrupt file, a special file (FIFO, device, folder
        where a file belongs), a header that claims more than the file holds, a wrong magic
        number, a label out of range, NaN or infinite pixels, a split without images, or a data
        set whose images or classes do not fit the spec; the message names the file and what is
        wrong.
    """
    kind = str(kind).lower()
    if kind not in KINDS:
        raise DataError(f"unknown data set '{kind}'.{suggest(kind, KINDS)}",
                        hint="choose one of: " + ", ".join(KINDS) + ".")
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    volume = Volume(*volume)
    if kind == "embedded":
        data = load_embedded(split, volume, classes, seed)
    elif kind == "shapes":
        data = load_shapes(split, volume, classes, output and Volume(*output), seed)
    elif kind in ("fashion-mnist", "mnist"):
        data = load_idx_dataset(kind, path, split)
    elif kind == "cifar10":
        data = load_cifar10(path, split)
    elif kind == "npz":
        data = load_npz(path, split, volume, classes)
    else:
        data = load_folder(path, split, volume, classes)
    where = kind if path is None or kind in ("embedded", "shapes") else f"{kind} ({path})"
    check_fits(where, data.volume(), data.classes, volume, classes)
    if output is not None:
        data.y = check_targets(data.y, classes, Volume(*output), ignore_label,
                               f"the {split} split of {where}")
    if len(data) == 0:
        # a run on nothing would "train" without a single step and report success
        raise DataError(f"the {split} split of {where} holds no images; a data set needs at "
                        "least one image in each split.",
                        hint="check the file holds the images (x / x_test in an .npz), or "
                             "point --data at the complete data set.")
    return data
