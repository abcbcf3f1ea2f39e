"""Learning-rate schedules: constant, step or cosine, after an optional linear warm-up.

The rate is a function of the position in training (epoch and step within it), computed on the
host once per step and passed to the optimizer kernels as an argument.
"""

from __future__ import annotations

import math


def learning_rate(train: dict, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The rate for ``step`` (0-based) of ``epoch`` (0-based).

    >>> learning_rate({"lr": 0.1, "schedule": "step", "step_epochs": 2, "gamma": 0.5,
    ...                "warmup_epochs": 0, "epochs": 6}, 4, 0, 10)
    0.025
    """
    base = train["lr"]
    position = epoch + step / max(steps_per_epoch, 1)  # in epochs, fractional
    warmup = train["warmup_epochs"]
    if warmup and position < warmup:  # linear from lr/10 to lr
        return base * (0.1 + 0.9 * position / warmup)
    schedule = train["schedule"]
    if schedule == "step":
        return base * train["gamma"] ** (epoch // train["step_epochs"])
    if schedule == "cosine":
        span = max(train["epochs"] - warmup, 1e-9)
        progress = min(max((position - warmup) / span, 0.0), 1.0)
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base
