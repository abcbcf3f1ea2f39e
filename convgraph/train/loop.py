"""The training loop: epochs of batches, evaluation, checkpoints, metrics, progress, Ctrl-C.

Everything random is a function of the seed and the position in training (the batch order and
augmentation of (seed, epoch); dropout of the step), and checkpoints hold the position, so a run
that is interrupted and resumed ends with the same weights as one that was not.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convgraph.data import Dataset, batches, input_normalization
from convgraph.errors import DataError
from convgraph.train.checkpoint import (
    load_checkpoint,
    network_hash,
    save_checkpoint,
    saved_normalization,
)
from convgraph.train.schedule import learning_rate
from convgraph.train.session import TrainingSession


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float | None
    test_accuracy: float | None
    images_per_s: float
    seconds: float
    lr: float

    def as_json(self) -> dict:
        return {key: (round(value, 6) if isinstance(value, float) else value)
                for key, value in self.__dict__.items()}


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: np.ndarray
    labels: np.ndarray

    def confusion(self, classes: int) -> np.ndarray:
        matrix = np.zeros((classes, classes), np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix


@dataclass
class Progress:
    """Where training stands: what a checkpoint records to resume exactly."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # the next batch of that epoch
    step: int = 0  # optimizer steps taken
    loss_sum: float = 0.0  # of the epoch so far
    correct: float = 0.0
    seen: int = 0
    seconds: float = 0.0
    best_accuracy: float = -1.0
    history: list = field(default_factory=list)


class Interrupted(Exception):
    """Ctrl-C during training, after the checkpoint was written."""


class Callback:
    """Hooks into training (``Model.fit(callbacks=[...])``, ``Trainer.fit``), Keras-style; each
    one does nothing unless overridden. ``convgraph run`` draws its progress bar and epoch lines
    through one of these."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """After the session is built (and resumed), before the first batch."""

    def on_batch_end(self, trainer: Trainer, done: int, total: int, loss: float,
                     accuracy: float, images_per_s: float) -> None:
        """After each optimizer step: batches done of the epoch's total, the epoch's running
        mean loss and accuracy, its speed."""

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        """After each epoch's evaluation, checkpoint and metrics line."""


def evaluate(session, data: Dataset, mean=None, std=None) -> Evaluation:
    """Loss and accuracy of ``data`` on ``session`` (a training or an evaluation session) in
    inference mode (running statistics, no dropout), inputs standardised with ``mean`` and
    ``std`` as in training: one implementation for the figures of every epoch,
    ``Model.evaluate`` and ``convgraph eval``."""
    loss_sum, predictions = 0.0, []
    for x, y in batches(data, session.batch, seed=0, epoch=0, shuffle=False, mean=mean, std=std):
        result = session.evaluate_batch(x, y)
        loss_sum += result.loss
        predictions.append(session.last_predictions(result.count))
    predicted = np.concatenate(predictions) if predictions else np.zeros(0, np.int64)
    labels = np.asarray(data.y)
    return Evaluation(loss_sum / max(len(labels), 1),
                      float((predicted == labels).mean()) if len(labels) else 0.0,
                      predicted, labels)


class Trainer:
    """Trains a TrainingSession on a Dataset; ``Model.fit`` (and so ``convgraph run``) drives
    this."""

    def __init__(self, session: TrainingSession, train_data: Dataset,
                 test_data: Dataset | None = None, checkpoint_dir=None, metrics_file=None):
        self.session = session
        self.graph = session.graph
        self.settings = session.train
        self.train_data, self.test_data = train_data, test_data
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.metrics_file = Path(metrics_file) if metrics_file else None
        self.progress = Progress()
        self.resumed = False  # whether resume() found a checkpoint to continue from
        stats = input_normalization(self.settings, None, train_data)
        self.mean, self.std = stats if stats is not None else (None, None)

    # ------------------------------------------------------------------ checkpoints

    def header(self) -> dict:
        p = self.progress
        return {"spec": self.graph.graph["name"], "network": network_hash(self.graph),
                "epoch": p.epoch, "batch": p.batch, "step": p.step, "loss_sum": p.loss_sum,
                "correct": p.correct, "seen": p.seen, "seconds": p.seconds,
                "best_accuracy": p.best_accuracy, "history": p.history,
                "seed": self.settings["seed"],
                "mean": None if self.mean is None else [float(v) for v in self.mean],
                "std": None if self.std is None else [float(v) for v in self.std]}

    def save(self, best: bool = False) -> None:
        if self.checkpoint_dir is None:
            return
        last = self.checkpoint_dir / "last.npz"
        save_checkpoint(last, self.session.params, self.session.optimizer_state(),
                        self.header())
        if best:  # copy, then rename: best.npz is never half-written either
            temporary = self.checkpoint_dir / ".best.npz.tmp"
            shutil.copyfile(last, temporary)
            temporary.replace(self.checkpoint_dir / "best.npz")

    def resume(self) -> bool:
        """Continue from checkpoint_dir/last.npz if there is one; True if resumed."""
        if self.checkpoint_dir is None:
            raise DataError("--resume needs --checkpoint-dir DIR.")
        last = self.checkpoint_dir / "last.npz"
        if not last.exists():
            return False
        params, optimizer, header = load_checkpoint(last, network_hash(self.graph))
        self.session.set_params(params)
        self.session.load_optimizer_state(optimizer)
        self.session.step_count = header["step"]
        p = self.progress
        p.epoch, p.batch, p.step = header["epoch"], header["batch"], header["step"]
        p.loss_sum, p.correct, p.seen = header["loss_sum"], header["correct"], header["seen"]
        p.seconds, p.best_accuracy = header["seconds"], header["best_accuracy"]
        p.history = header["history"]
        saved = saved_normalization(header)
        if saved is not None:  # the statistics the run started with win (input_normalization)
            self.mean, self.std = saved
        self.resumed = True
        return True

    # ------------------------------------------------------------------ running

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_data.y) / self.session.batch)

    def fit(self, epochs: int | None = None, report=None, on_batch=None,
            callbacks=()) -> list[EpochRecord]:
        """Train to ``epochs`` (default: the spec's). ``report(record)`` is called after each
        epoch, ``on_batch(done, total, loss, accuracy, images_per_s)`` after each batch, and
        each Callback of ``callbacks`` at the start, after each batch and after each epoch."""
        epochs = epochs or self.settings["epochs"]
        for callback in callbacks:
            callback.on_train_begin(self)
        records = []
        p = self.progress
        total = self.steps_per_epoch()
        try:
            while p.epoch < epochs:
                started = time.perf_counter() - p.seconds
                stream = batches(self.train_data, self.session.batch, seed=self.settings["seed"],
                                 epoch=p.epoch, crop_pad=self.settings["crop_pad"],
                                 flip=self.settings["flip"], mean=self.mean, std=self.std,
                                 start=p.batch)
                rate = learning_rate(self.settings, p.epoch, p.batch, total)
                for x, y in stream:
                    rate = learning_rate(self.settings, p.epoch, p.batch, total)
                    result = self.session.step(x, y, rate)
                    p.batch += 1
                    p.step += 1
                    p.loss_sum += result.loss
                    p.correct += result.correct
                    p.seen += result.count
                    p.seconds = time.perf_counter() - started
                    figures = (p.batch, total, p.loss_sum / p.seen, p.correct / p.seen,
                               p.seen / max(p.seconds, 1e-9))
                    if on_batch:
                        on_batch(*figures)
                    for callback in callbacks:
                        callback.on_batch_end(self, *figures)
                record = self._finish_epoch(rate)
                records.append(record)
                if report:
                    report(record)
                for callback in callbacks:
                    callback.on_epoch_end(self, record)
        except KeyboardInterrupt:
            self.save()
            raise Interrupted() from None
        return records

    def _finish_epoch(self, rate: float) -> EpochRecord:
        p = self.progress
        test = self.evaluate(self.test_data) if self.test_data is not None else None
        record = EpochRecord(
            epoch=p.epoch + 1, train_loss=p.loss_sum / max(p.seen, 1),
            train_accuracy=p.correct / max(p.seen, 1),
            test_loss=test.loss if test else None, test_accuracy=test.accuracy if test else None,
            images_per_s=p.seen / max(p.seconds, 1e-9), seconds=p.seconds, lr=rate)
        p.history.append(record.as_json())
        best = test is not None and test.accuracy > p.best_accuracy
        if best:
            p.best_accuracy = test.accuracy
        p.epoch += 1
        p.batch = 0
        p.loss_sum = p.correct = p.seconds = 0.0
        p.seen = 0
        self.save(best=best or test is None)
        if self.metrics_file is not None:
            self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_file, "a") as handle:
                handle.write(json.dumps(record.as_json()) + "\n")
        return record

    def evaluate(self, data: Dataset) -> Evaluation:
        """Loss and accuracy in inference mode (running statistics, no dropout)."""
        return evaluate(self.session, data, self.mean, self.std)

