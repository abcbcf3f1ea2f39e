"""Hooks into training, Keras-style: ``Model.fit(callbacks=[...])`` and ``Trainer.fit`` call them.

A callback overrides the hooks it needs; the trainer passes itself to each, so a callback reads
``trainer.progress`` (epoch, batch, step), ``trainer.settings`` (the ``train:`` section, its
``epochs`` the run's) and ``trainer.session`` (the device program, its ``params``), and acts on
training through three attributes:

- ``trainer.stop_training = True`` ends training cleanly after the epoch in progress (its
  record, checkpoint and metrics line are written; ``fit`` returns the history);
- ``trainer.epoch_lr`` (a number) is the learning rate the epoch's steps use, in place of the
  spec's schedule; it is None (the schedule's) at each epoch's start, so set it in
  ``on_epoch_begin`` (or ``on_batch_begin``, for the steps from there on);
- ``trainer.session.set_params(params)`` replaces the weights (``EarlyStopping`` restores the
  best ones that way).

Epochs are counted from 0 in hooks (``trainer.progress.epoch``, as Keras counts them) and from 1
in EpochRecords and printed lines (``epoch 1: ...``, as ``convgraph run`` prints them).

>>> model.fit(train, epochs=20, validation_split=0.1,                  # doctest: +SKIP
...           callbacks=[EarlyStopping("test_loss", patience=3, restore_best_weights=True),
...                      ModelCheckpoint("runs/best.npz", save_best_only=True),
...                      LearningRateScheduler(lambda epoch, lr: lr * 0.9)])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from convgraph.errors import UsageError, suggest

# what an EpochRecord measures, by the names a monitor may use; Keras's names are aliases
# (the mean IoUs are measured for segmentation only)
METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "train_miou",
           "test_miou")
ALIASES = {"loss": "train_loss", "accuracy": "train_accuracy", "val_loss": "test_loss",
           "val_accuracy": "test_accuracy", "miou": "train_miou", "val_miou": "test_miou"}
HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_begin", "on_batch_end", "on_epoch_end",
         "on_train_end")


class Callback:
    """Hooks into training; each does nothing unless overridden. ``convgraph run`` draws its
    progress bar and epoch lines through one of these.

    A callback whose ``draws_progress`` is true replaces the progress ``fit(verbose=1)`` draws
    (as Keras leaves out its own bar when one is given)."""

    draws_progress = False

    def on_train_begin(self, trainer) -> None:
        """After the session is built (and resumed), before the first batch."""

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        """Before the first batch of ``epoch`` (0-based; also a resumed epoch in progress)."""

    def on_batch_begin(self, trainer, batch: int, total: int) -> None:
        """Before each optimizer step: ``batch`` (0-based) of the epoch's ``total``."""

    def on_batch_end(self, trainer, done: int, total: int, loss: float,
                     accuracy: float, images_per_s: float) -> None:
        """After each optimizer step: batches done of the epoch's total, the epoch's running
        mean loss and accuracy, its speed."""

    def on_epoch_end(self, trainer, record) -> None:
        """After each epoch's evaluation, checkpoint and metrics line."""

    def on_train_end(self, trainer, records: list) -> None:
        """After the last epoch (or the one a callback stopped training at); not called when a
        signal or a divergence ends training."""


def notify(callbacks, hook: str, *args) -> None:
    """Call ``hook`` on each callback that has it (a duck-typed one may have only some)."""
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)


def check_callbacks(callbacks) -> list:
    """``callbacks`` as a list of objects with at least one hook; UsageError otherwise."""
    if isinstance(callbacks, Callback) or not _iterable(callbacks):
        raise UsageError(f"callbacks must be a list of Callbacks, got {_kind(callbacks)}.",
                         hint="pass callbacks=[EarlyStopping(...), ...] (a list, even of one).")
    listed = list(callbacks)
    for index, callback in enumerate(listed):
        if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
            raise UsageError(f"callbacks[{index}] is {_kind(callback)}, which has none of the "
                             f"hooks ({', '.join(HOOKS)}).",
                             hint="subclass convgraph.callbacks.Callback and override the hooks "
                                  "you need.")
    return listed


def _iterable(value) -> bool:
    if isinstance(value, (str, bytes)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _kind(value) -> str:
    return f"a {type(value).__name__} ({value!r:.60})"


# ---------------------------------------------------------------------------- monitored metrics

def metric_name(monitor, who: str) -> str:
    """The EpochRecord field ``monitor`` names (Keras's ``val_loss`` is ``test_loss``)."""
    if not isinstance(monitor, str) or ALIASES.get(monitor, monitor) not in METRICS:
        raise UsageError(f"{who} cannot monitor {monitor!r}: training measures "
                         f"{', '.join(METRICS)}.{suggest(str(monitor), [*METRICS, *ALIASES])}",
                         hint="monitor one of those (val_loss and val_accuracy are the test_ "
                              "ones).")
    return ALIASES.get(monitor, monitor)


def check_measured(metric: str, trainer, who: str) -> None:
    """A test_ metric needs test data, and a mean IoU a segmentation network: UsageError at
    the start, not a KeyError at epoch 1."""
    if metric.endswith("miou") and not trainer.session.plan.segmentation:
        raise UsageError(f"{who} monitors '{metric}', but this network is a classifier (a "
                         "1x1 output): the mean IoU is measured for segmentation only.",
                         hint="monitor 'test_accuracy' or 'test_loss'.")
    if metric.startswith("test_") and trainer.test_data is None:
        raise UsageError(f"{who} monitors '{metric}', but this fit has no test data to measure "
                         "it on.",
                         hint="give validation_data=(x, y) or validation_split=0.1, or monitor "
                              f"'{metric.replace('test_', 'train_')}'.")


class _Monitor:
    """The best value of one metric so far, and whether a new one improves on it."""

    def __init__(self, monitor, mode: str, min_delta: float, who: str):
        self.metric = metric_name(monitor, who)
        if mode not in ("auto", "min", "max"):
            raise UsageError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}.",
                             hint="'auto' minimises a loss and maximises an accuracy.")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or \
                not math.isfinite(min_delta) or min_delta < 0:
            raise UsageError(f"{who}: min_delta must be a finite number of at least 0, got "
                             f"{min_delta!r}.", hint="e.g. min_delta=0.001.")
        if mode == "auto":
            mode = "max" if self.metric.endswith(("accuracy", "miou")) else "min"
        self.mode, self.min_delta, self.who = mode, float(min_delta), who
        self.best: float | None = None

    def start(self, trainer) -> None:
        check_measured(self.metric, trainer, self.who)
        self.best = None

    def improves(self, record) -> bool:
        """Whether ``record``'s value beats the best by more than min_delta (and keep it)."""
        value = getattr(record, self.metric)
        if not math.isfinite(value):
            return False
        better = (self.best is None or
                  (value < self.best - self.min_delta if self.mode == "min"
                   else value > self.best + self.min_delta))
        if better:
            self.best = value
        return better


def _count(value, name: str, who: str, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(f"{who}: {name} must be a whole number of at least {least}, got "
                         f"{value!r}.", hint=f"e.g. {name}={max(least, 3)}.")
    return value


class EarlyStopping(Callback):
    """Stop training after ``patience`` epochs in a row in which ``monitor`` did not improve
    (by more than ``min_delta``), as Keras's EarlyStopping does (``patience`` 0 or 1: at the
    first such epoch). ``mode`` 'auto' minimises losses and maximises accuracies.

    With ``restore_best_weights`` the model ends with the weights of the best epoch (also when
    training ran to its last epoch). ``stopped_epoch`` is the 1-based epoch it stopped after (0:
    it did not stop), ``best`` the best value seen.

    >>> EarlyStopping("test_accuracy", patience=2, restore_best_weights=True)  # doctest: +SKIP
    """

    def __init__(self, monitor: str = "test_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False):
        self.monitor = _Monitor(monitor, mode, min_delta, "EarlyStopping")
        self.patience = _count(patience, "patience", "EarlyStopping")
        self.restore_best_weights = bool(restore_best_weights)
        self.wait = 0
        self.stopped_epoch = 0
        self.best_weights = None
        self.best_epoch = 0

    @property
    def best(self) -> float | None:
        return self.monitor.best

    def on_train_begin(self, trainer) -> None:
        self.monitor.start(trainer)
        self.wait, self.stopped_epoch, self.best_weights, self.best_epoch = 0, 0, None, 0

    def on_epoch_end(self, trainer, record) -> None:
        if self.monitor.improves(record):
            self.wait, self.best_epoch = 0, record.epoch
            if self.restore_best_weights:
                self.best_weights = trainer.session.params  # a host copy
            return
        self.wait += 1
        if self.wait >= self.patience:  # Keras's rule (so patience 0 and 1 both stop at once)
            self.stopped_epoch = record.epoch
            trainer.stop_training = True

    def on_train_end(self, trainer, records) -> None:
        last = records[-1].epoch if records else 0
        if self.best_weights is not None and self.best_epoch != last:
            trainer.session.set_params(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the weights (with the input normalisation: what ``Model.save`` and ``--save``
    write, atomically) after each epoch, or with ``save_best_only`` only after an epoch that
    improves ``monitor``. ``path`` may hold ``{epoch}`` and the metrics, formatted as Python
    does: ``"runs/w-{epoch:02d}-{test_accuracy:.3f}.npz"``. ``Model.load_weights`` and
    ``convgraph eval --weights`` read the files.

    >>> ModelCheckpoint("runs/best.npz", "test_accuracy", save_best_only=True)  # doctest: +SKIP
    """

    def __init__(self, path, monitor: str = "test_loss", save_best_only: bool = False,
                 mode: str = "auto"):
        if not isinstance(path, (str, Path)) or not str(path):
            raise UsageError(f"ModelCheckpoint needs a file path, got {_kind(path)}.",
                             hint='e.g. ModelCheckpoint("runs/best.npz").')
        self.path = str(path)
        self.monitor = _Monitor(monitor, mode, 0.0, "ModelCheckpoint")
        self.save_best_only = bool(save_best_only)
        self.saved: list[Path] = []  # the files written, in order

    def on_train_begin(self, trainer) -> None:
        from convgraph.files import writable_file

        if self.save_best_only:
            self.monitor.start(trainer)
        sample = {"epoch": 1, **{metric: 0.0 for metric in METRICS}, "lr": 0.0}
        try:
            first = self.path.format(**sample)
        except (KeyError, IndexError, ValueError) as exc:
            raise UsageError(f"ModelCheckpoint's path {self.path!r} cannot be formatted: {exc}.",
                             hint=f"use {{epoch}} and the metrics ({', '.join(METRICS)}, lr) "
                                  "as fields, e.g. 'w-{epoch:02d}.npz'.") from None
        writable_file(first, "ModelCheckpoint's file")  # before the first epoch's work
        self.saved = []

    def on_epoch_end(self, trainer, record) -> None:
        from convgraph.train.checkpoint import save_checkpoint

        if self.save_best_only and not self.monitor.improves(record):
            return
        fields = {key: (value if value is not None else math.nan)
                  for key, value in record.__dict__.items()}
        path = Path(self.path.format(**fields))
        save_checkpoint(path, trainer.session.params, {}, trainer.header())
        self.saved.append(path)


class LearningRateScheduler(Callback):
    """Set each epoch's learning rate: ``schedule(epoch, lr) -> lr``, called before every epoch
    with the 0-based epoch and the rate the previous epoch used (the spec's ``lr`` before the
    first), as Keras does. The rate returned is the one every optimizer step of the epoch uses,
    in place of the spec's schedule and warm-up; it is the ``lr`` of the epoch's record.

    >>> LearningRateScheduler(lambda epoch, lr: lr if epoch < 5 else lr * 0.5)  # doctest: +SKIP
    """

    def __init__(self, schedule):
        if not callable(schedule):
            raise UsageError(f"LearningRateScheduler needs a function (epoch, lr) -> lr, got "
                             f"{_kind(schedule)}.",
                             hint="e.g. LearningRateScheduler(lambda epoch, lr: lr * 0.9).")
        self.schedule = schedule

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        returned = self.schedule(epoch, trainer.last_lr)
        try:  # a numpy scalar is a number too; a bool is not a rate
            rate = math.nan if isinstance(returned, bool) else float(returned)
        except (TypeError, ValueError):
            rate = math.nan
        if not math.isfinite(rate) or rate <= 0:
            raise UsageError(f"LearningRateScheduler's function returned {returned!r:.60} for "
                             f"epoch {epoch}; a learning rate is a finite number above 0.",
                             hint="return the rate to train the epoch with, e.g. lr * 0.9.")
        trainer.epoch_lr = rate


class ProgressBar(Callback):
    """The progress ``convgraph run`` shows and ``fit(verbose=1)`` shows alike: on a terminal a
    bar for each phase (the first launch's kernel compile, each epoch's batches, its
    evaluation), and always a line for the compile and one per epoch, on standard output.
    ``on_start(trainer)`` prints what comes before the bar (the CLI's opening line)."""

    draws_progress = True

    def __init__(self, console=None):
        self.console, self.bar = console, None
        self.compile_shown = False

    def on_start(self, trainer) -> None:
        """Lines before the bar; none here."""

    def on_train_begin(self, trainer) -> None:
        from convgraph.display import output_console
        from convgraph.train.report import EpochBar

        self.console = self.console or output_console()
        self.on_start(trainer)
        self.bar = EpochBar(self.console, trainer.settings["epochs"]).__enter__()
        self.bar.compiling(len(trainer.session.plan.kernels))

    def on_batch_end(self, trainer, done, total, loss, accuracy, images_per_s) -> None:
        from convgraph.train.report import first_step_line

        if not self.compile_shown and trainer.first_step_seconds is not None:
            self.compile_shown = True  # the first step, with the kernels' compile, is done
            self.console.print(first_step_line(len(trainer.session.plan.kernels),
                                               trainer.first_step_seconds,
                                               trainer.progress.epoch + 1),
                               highlight=False, markup=False)
        self.bar.update(trainer.progress.epoch, done, total, loss, accuracy, images_per_s)
        if done == total and trainer.test_data is not None:
            self.bar.evaluating(len(trainer.test_data.y))

    def on_epoch_end(self, trainer, record) -> None:
        from convgraph.train.report import epoch_line

        # the output policy (display.py): wrapped between words on a terminal, whole in a pipe
        self.console.print(epoch_line(record), highlight=False, markup=False)

    def on_train_end(self, trainer, records) -> None:
        self.close()

    def close(self) -> None:
        """Take the bar off the screen (also when training ends with an exception, or the
        terminal hung up: SIGHUP leaves nothing to draw on)."""
        bar, self.bar = self.bar, None
        if bar is not None:
            try:
                bar.__exit__(None, None, None)
            except OSError:
                pass


class History(Sequence):
    """What ``Model.fit`` returns: the EpochRecords of the epochs it trained (a sequence, so
    ``history[-1].test_accuracy`` works), and Keras's views of them: ``history`` (metric ->
    one value per epoch: train_loss, train_accuracy, test_loss, test_accuracy where measured,
    lr, images_per_s, seconds) and ``epoch`` (the 1-based epoch numbers).

    >>> history = model.fit(train, epochs=3, validation_split=0.1)  # doctest: +SKIP
    >>> history.history["test_accuracy"]                          # doctest: +SKIP
    [0.41, 0.55, 0.62]
    """

    def __init__(self, records: list, stopped_early: bool = False):
        self.records = list(records)
        self.stopped_early = stopped_early  # a callback ended training before its last epoch

    def __getitem__(self, index):
        return self.records[index]

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"History({len(self)} epochs: {', '.join(self.history)})"

    @property
    def epoch(self) -> list[int]:
        return [record.epoch for record in self.records]

    @property
    def history(self) -> dict[str, list[float]]:
        fields = [key for key in self.records[0].__dict__ if key != "epoch"] if self else []
        return {key: [getattr(record, key) for record in self.records] for key in fields
                if all(getattr(record, key) is not None for record in self.records)}
