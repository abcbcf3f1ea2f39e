"""Training callbacks, where a Keras user looks for them: ``from convgraph.callbacks import
EarlyStopping``. They live in convgraph/train/callbacks.py, beside the loop that calls them."""

from convgraph.train.callbacks import (
    Callback,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
)

__all__ = ["Callback", "EarlyStopping", "History", "LearningRateScheduler", "ModelCheckpoint",
           "ProgressBar"]
