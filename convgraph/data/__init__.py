"""The data layer of training: loading data sets into memory and cutting them into batches.

``load_dataset`` reads one split of the data set named by the spec's ``train:`` section and checks
it fits the spec's input volume and class count; ``batches`` yields the deterministic, augmented,
normalised mini-batches of one epoch; ``channel_stats`` gives the per-channel statistics used to
normalise, and ``input_normalization`` decides which statistics a run uses. ``KINDS`` lists the
data sets (the spec's ``train.dataset`` choices). Images are (N, depth, height, width), PyTorch's
order.
"""

from .batches import as_unit, batch_count, batches, channel_stats, input_normalization
from .dataset import Dataset
from .kinds import KINDS

__all__ = ["Dataset", "load_dataset", "batches", "channel_stats", "batch_count", "as_unit",
           "input_normalization", "KINDS"]


def __getattr__(name: str):
    """``load_dataset`` on first use: it imports every loader (IDX, CIFAR, npz, folders...),
    which compiling a spec never needs (it reads only the names, kinds.py)."""
    if name == "load_dataset":
        from .load import load_dataset

        return load_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
