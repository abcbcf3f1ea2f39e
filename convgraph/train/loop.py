"""The training loop: epochs of batches, evaluation, checkpoints, metrics, progress, signals.

Everything random is a function of the seed and the position in training (the batch order and
augmentation of (seed, epoch); dropout of the step), and checkpoints hold the position -- with
what it counts (the batch size) and in what (the data set's name, size and a digest of its
labels) -- so a run that is interrupted and resumed ends with the same weights as one that was
not, and a resume whose batches would mean something else is refused.

Ctrl-C, SIGTERM and SIGHUP (see signals.py) stop training at a batch boundary: a step and
its bookkeeping are never cut in half, and the checkpoint written then is exact.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convgraph import signals
from convgraph.data import Dataset, batches, input_normalization
from convgraph.data.masks import confusion, mean_iou
from convgraph.errors import DataError, TrainingDiverged, UsageError
from convgraph.params import check_params
from convgraph.train.callbacks import Callback, notify
from convgraph.train.checkpoint import (
    FORMAT,
    FolderLock,
    copy_checkpoint,
    labels_digest,
    load_checkpoint,
    model_fields,
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
    # segmentation only (None, and absent from as_json, for a classifier): mean IoU over the
    # classes present; the accuracies are then pixel accuracies over counted pixels
    train_miou: float | None = None
    test_miou: float | None = None

    def as_json(self) -> dict:
        return {key: (round(value, 6) if isinstance(value, float) else value)
                for key, value in self.__dict__.items()
                if not (key in SEGMENTATION_METRICS and value is None)}


SEGMENTATION_METRICS = ("train_miou", "test_miou")


@dataclass
class Evaluation:
    """What evaluating a data set gives: the mean loss and the accuracy (of images, or of the
    counted pixels for segmentation, whose ``predictions`` and ``labels`` are (N, H, W) and
    ``miou`` the mean IoU over the classes present)."""

    loss: float
    accuracy: float
    predictions: np.ndarray
    labels: np.ndarray
    miou: float | None = None
    ignore_label: int | None = None

    def confusion(self, classes: int) -> np.ndarray:
        """Rows: true class; columns: predicted class (pixels with the ignore label left out)."""
        return confusion(self.labels, self.predictions, classes,
                         self.ignore_label if self.labels.ndim == 3 else None)


@dataclass
class Progress:
    """Where training stands: what a checkpoint records to resume exactly."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # the next batch of that epoch
    step: int = 0  # optimizer steps taken
    loss_sum: float = 0.0  # of the epoch so far
    correct: float = 0.0
    seen: int = 0
    units: int = 0  # what loss_sum and correct count: images, or counted pixels (segmentation)
    confusion: list | None = None  # segmentation: the epoch's pixel confusion matrix so far
    seconds: float = 0.0
    best_accuracy: float = -1.0
    history: list = field(default_factory=list)


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP during training, after the checkpoint was written.

    ``exit_status`` is the signal's (130, 143, 129), ``signal`` its name, ``saved`` the
    checkpoint written (None without a checkpoint folder), ``epoch`` and ``batch`` the
    position it holds (0-based epoch, next batch)."""

    def __init__(self, signal_name: str = "SIGINT", exit_status: int = 130, saved=None,
                 epoch: int = 0, batch: int = 0):
        super().__init__(signal_name)
        self.signal, self.exit_status, self.saved = signal_name, exit_status, saved
        self.epoch, self.batch = epoch, batch


# the train: settings a checkpoint records (and --resume reports)
SAVED_SETTINGS = ("optimizer", "lr", "momentum", "nesterov", "betas", "weight_decay", "schedule",
                  "step_epochs", "gamma", "warmup_epochs", "batch", "epochs", "dataset", "data",
                  "seed", "normalize", "crop_pad", "flip", "loss", "label_smoothing", "init")

__all__ = ["Callback", "EpochRecord", "Evaluation", "Interrupted", "Trainer", "evaluate"]


def evaluate(session, data: Dataset, mean=None, std=None) -> Evaluation:
    """Loss and accuracy of ``data`` on ``session`` (a training or an evaluation session) in
    inference mode (running statistics, no dropout), inputs standardised with ``mean`` and
    ``std`` as in training: one implementation for the figures of every epoch,
    ``Model.evaluate`` and ``convgraph eval``. For segmentation the loss and accuracy are over
    the counted pixels, and the mean IoU is measured too."""
    loss_sum, units, correct, predictions = 0.0, 0, 0.0, []
    for x, y in batches(data, session.batch, seed=0, epoch=0, shuffle=False, mean=mean, std=std):
        result = session.evaluate_batch(x, y)
        loss_sum += result.loss
        units += result.units
        correct += result.correct
        predictions.append(session.last_predictions(result.count))
    predicted = np.concatenate(predictions) if predictions else np.zeros(0, np.int64)
    labels = np.asarray(data.y)
    if labels.ndim == 3:  # masks
        ignore = session.ignore_label
        matrix = confusion(labels, predicted, session.plan.classes, ignore)
        return Evaluation(loss_sum / max(units, 1), correct / max(units, 1), predicted, labels,
                          mean_iou(matrix), ignore)
    return Evaluation(loss_sum / max(len(labels), 1),
                      float((predicted == labels).mean()) if len(labels) else 0.0,
                      predicted, labels)


class Trainer:
    """Trains a TrainingSession on a Dataset; ``Model.fit`` (and so ``convgraph run``) drives
    this.

    ``epochs`` (default: the spec's ``train: epochs``) is the run's length: what the learning
    rate schedule spans and what ``fit`` trains to, as ``--epochs`` sets it. ``shuffle=False``
    visits the training images in their stored order every epoch (augmentation stays seeded).
    Callbacks act on training through ``stop_training`` and ``epoch_lr``
    (convgraph/train/callbacks.py)."""

    def __init__(self, session: TrainingSession, train_data: Dataset,
                 test_data: Dataset | None = None, checkpoint_dir=None, metrics_file=None,
                 epochs: int | None = None, shuffle: bool = True):
        self.session = session
        self.graph = session.graph
        self.settings = dict(session.train)
        if epochs is not None:
            self.settings["epochs"] = epochs
        self.shuffle = shuffle
        self.stop_training = False  # set by a callback: training ends after this epoch
        self.epoch_lr: float | None = None  # set by a callback: this epoch's rate
        self.last_lr = float(self.settings["lr"])  # the rate of the last step taken
        self.train_data, self.test_data = train_data, test_data
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.metrics_file = Path(metrics_file) if metrics_file else None
        self.progress = Progress()
        self.resumed = False  # whether resume() found a checkpoint to continue from
        # the first step of a fit, timed apart: its launches are where most drivers (PoCL)
        # compile the kernels, which is no part of an epoch's images/s
        self.first_step_seconds: float | None = None
        stats = input_normalization(self.settings, None, train_data)
        self.mean, self.std = stats if stats is not None else (None, None)

    # ------------------------------------------------------------------ checkpoints

    def header(self) -> dict:
        p = self.progress
        settings = {key: self.settings[key] for key in SAVED_SETTINGS if key in self.settings}
        return {**model_fields(self.graph, self.train_data.class_names),
                "epoch": p.epoch, "batch": p.batch, "step": p.step, "loss_sum": p.loss_sum,
                "correct": p.correct, "seen": p.seen, "units": p.units,
                "confusion": p.confusion, "seconds": p.seconds,
                "best_accuracy": p.best_accuracy, "history": p.history,
                "seed": self.settings["seed"], "batch_size": self.session.batch,
                "steps_per_epoch": self.steps_per_epoch(), "data": self.data_identity(),
                "shuffle": self.shuffle,
                "settings": json.loads(json.dumps(settings, default=str)),
                "mean": None if self.mean is None else [float(v) for v in self.mean],
                "std": None if self.std is None else [float(v) for v in self.std]}

    def data_identity(self) -> dict:
        """What the batch position counts in: the training set's name, size and labels."""
        return {"name": self.train_data.name, "size": len(self.train_data.y),
                "labels": labels_digest(self.train_data.y)}

    def lock(self) -> FolderLock:
        """The checkpoint folder's lock (taken with ``with``); refuses a folder another run
        holds (OutputError naming its pid)."""
        return FolderLock(self.checkpoint_dir)

    def save(self, best: bool = False) -> None:
        """Write last.npz (and best.npz), after checking every weight and gradient: a
        non-finite state never overwrites a good checkpoint (TrainingDiverged instead)."""
        if self.checkpoint_dir is None:
            return
        self.session.check_finite("weights")
        if self.progress.step > 0:
            self.session.check_finite("gradients")
        params, optimizer = self.session.params, self.session.optimizer_state()
        for key, value in optimizer.items():
            if not np.all(np.isfinite(value)):
                self.session.restore_good_weights()
                raise TrainingDiverged(
                    f"the optimizer state '{key}' became NaN or infinite by step "
                    f"{self.progress.step}; training stopped without saving it.",
                    hint="lower the learning rate (--lr); the last good checkpoint is kept.")
        last = self.checkpoint_dir / "last.npz"
        with signals.deferred():  # the pair is written whole, or the signal waits
            save_checkpoint(last, params, optimizer, self.header())
            if best:
                copy_checkpoint(last, self.checkpoint_dir / "best.npz")

    def resume(self) -> bool:
        """Continue from checkpoint_dir/last.npz if there is one; True if resumed.

        The checkpoint must be of this network, at this batch size, on this training set
        (name, size and labels) and with this seed, or its batch position would count other
        batches: each mismatch is a UsageError saying how to resume. ``resumed_from`` is its
        header (for ``resume_summary``)."""
        if self.checkpoint_dir is None:
            raise UsageError("--resume needs --checkpoint-dir DIR (the folder whose last.npz "
                             "to continue from).",
                             hint="add --checkpoint-dir DIR, or leave out --resume.")
        last = self.checkpoint_dir / "last.npz"
        with self.lock():
            if not last.exists() and not last.is_symlink():
                return False
            params, optimizer, header = load_checkpoint(last, network_hash(self.graph))
            self._check_resumable(header, params, optimizer, str(last))
            try:
                self.session.set_params(params)
                self.session.load_optimizer_state(optimizer)
            except DataError as exc:
                raise DataError(f"the checkpoint {last}: {exc.message}", hint=exc.hint) from None
        self.session.step_count = header["step"]
        p = self.progress
        p.epoch, p.batch, p.step = header["epoch"], header["batch"], header["step"]
        p.loss_sum, p.correct, p.seen = header["loss_sum"], header["correct"], header["seen"]
        p.units, p.confusion = header.get("units", p.seen), header.get("confusion")
        p.seconds, p.best_accuracy = header["seconds"], header["best_accuracy"]
        p.history = header["history"]
        if p.history:
            self.last_lr = float(p.history[-1]["lr"])
        saved = saved_normalization(header)
        if saved is not None:  # the statistics the run started with win (input_normalization)
            self.mean, self.std = saved
        self.resumed = True
        self.resumed_from = header
        return True

    def _check_resumable(self, header: dict, params: dict, optimizer: dict, name: str) -> None:
        """Refuse a checkpoint whose position means something else in this run."""
        if header.get("format") != FORMAT or "batch_size" not in header:
            raise DataError(
                f"the checkpoint {name} was written by an older convgraph (format 1), which did "
                "not record the batch size and data set its position counts, so it cannot be "
                "resumed exactly.",
                hint=f"start a new run from its weights: --weights {name} with another "
                     "--checkpoint-dir (the optimizer state starts afresh).")
        required = ("epoch", "batch", "step", "loss_sum", "correct", "seen", "seconds",
                    "best_accuracy", "history", "data", "steps_per_epoch")
        for key in required:
            if key not in header:
                raise DataError(f"the checkpoint {name} has no '{key}' in its header, so it "
                                "cannot be resumed.", hint="use an earlier checkpoint, or "
                                "start afresh without --resume.")
        saved_settings = header.get("settings") or {}
        batch = header["batch_size"]
        if batch != self.session.batch:
            raise UsageError(
                f"--resume: {name} was saved training at batch size {batch}, this run's is "
                f"{self.session.batch}; its position (epoch {header['epoch'] + 1}, batch "
                f"{header['batch']}) counts batches of {batch}.",
                hint=f"resume with --batch {batch}, or train at the new batch size in another "
                     "--checkpoint-dir.")
        data, here = header["data"], self.data_identity()
        if (data["name"], data["size"], data["labels"]) != (here["name"], here["size"],
                                                            here["labels"]):
            what = ("its labels differ" if (data["name"], data["size"]) == (here["name"],
                                                                             here["size"])
                    else f"this run's is '{here['name']}' ({here['size']:,} images)")
            raise UsageError(
                f"--resume: {name} was saved training on '{data['name']}' ({data['size']:,} "
                f"images); {what}, so its position (epoch {header['epoch'] + 1}, batch "
                f"{header['batch']}) would count other images.",
                hint="resume with the same --dataset, --data and --limit, or train on the new "
                     "data in another --checkpoint-dir.")
        if header.get("seed") != self.settings["seed"]:
            raise UsageError(
                f"--resume: {name} was saved with seed {header.get('seed')}, this run has "
                f"seed {self.settings['seed']}; the rest of the epoch would visit another "
                "order of images.", hint=f"resume with --seed {header.get('seed')}.")
        if header.get("shuffle", True) != self.shuffle:
            raise UsageError(
                f"--resume: {name} was saved training with shuffle={header.get('shuffle', True)}"
                f", this run has shuffle={self.shuffle}; the rest of the epoch would visit "
                "other images.", hint=f"resume with shuffle={header.get('shuffle', True)}.")
        saved_optimizer = saved_settings.get("optimizer")
        if saved_optimizer is not None and saved_optimizer != self.settings["optimizer"]:
            raise UsageError(
                f"--resume: {name} holds {saved_optimizer} state, this run uses "
                f"{self.settings['optimizer']}.",
                hint=f"resume with --optimizer {saved_optimizer}, or start afresh in another "
                     "--checkpoint-dir.")
        total = self.steps_per_epoch()
        if header["steps_per_epoch"] != total or header["batch"] > total:
            raise DataError(f"the checkpoint {name} has an invalid header field 'batch': "
                            f"batch {header['batch']} of {header['steps_per_epoch']} does not "
                            f"lie in an epoch of {total} batches.",
                            hint="use an earlier checkpoint, or start afresh.")
        if header["step"] != header["epoch"] * total + header["batch"]:
            raise DataError(f"the checkpoint {name} has an invalid header field 'step': "
                            f"{header['step']} steps do not make epoch {header['epoch']}, "
                            f"batch {header['batch']} of {total}.",
                            hint="use an earlier checkpoint, or start afresh.")
        if len(header["history"]) != header["epoch"]:
            raise DataError(f"the checkpoint {name} has an invalid header field 'history': "
                            f"{len(header['history'])} epoch records for {header['epoch']} "
                            "epochs.", hint="use an earlier checkpoint, or start afresh.")
        depth = self.train_data.x.shape[1]
        if header.get("mean") is not None and len(header["mean"]) != depth:
            raise DataError(f"the checkpoint {name} has an invalid header field 'mean': "
                            f"{len(header['mean'])} channels, the input has {depth}.")
        try:
            check_params(self.graph, params, f"the checkpoint {name}")
        except DataError as exc:
            raise DataError(exc.message, hint="use an earlier checkpoint, or start afresh.") \
                from None
        wanted = {f"{node}.{key}/{slot}" for slot in range(self.session.plan.optimizer_slots)
                  for node, key in self.session.plan.trainable}
        if set(optimizer) != wanted:
            odd = sorted(set(optimizer) ^ wanted)
            raise DataError(f"the checkpoint {name}: its optimizer state does not fit this "
                            f"network and optimizer ({', '.join(odd[:4])}"
                            f"{' ...' if len(odd) > 4 else ''}).",
                            hint="use an earlier checkpoint, or start afresh.")

    def resume_summary(self) -> str:
        """What ``resume`` continued from, in words: the position and the saved settings
        (and the ones this run changes)."""
        header = getattr(self, "resumed_from", None)
        if header is None:
            return ""
        p, total = self.progress, self.steps_per_epoch()
        saved = header.get("settings") or {}
        text = (f"epoch {p.epoch + 1} of {self.settings['epochs']}, batch {p.batch} of {total} "
                f"(step {p.step}); saved with batch {header['batch_size']}, "
                f"{saved.get('optimizer', '?')} lr {saved.get('lr', '?')}, seed "
                f"{header.get('seed')}, {saved.get('epochs', '?')} epochs, on "
                f"'{header['data']['name']}' ({header['data']['size']:,} images)")
        changed = [f"{key} {saved[key]} -> {self.settings[key]}"
                   for key in ("lr", "epochs", "schedule", "momentum", "weight_decay")
                   if key in saved and saved[key] != self.settings.get(key)]
        if changed:
            text += "; this run changes " + ", ".join(changed)
        return text

    # ------------------------------------------------------------------ running

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_data.y) / self.session.batch)

    def fit(self, epochs: int | None = None, report=None, on_batch=None,
            callbacks=()) -> list[EpochRecord]:
        """Train to ``epochs`` (default: the run's, ``settings["epochs"]``). ``report(record)``
        is called after each epoch, ``on_batch(done, total, loss, accuracy, images_per_s)``
        after each batch, and the hooks of ``callbacks`` (train/callbacks.py) at the start and
        the end, before and after each epoch and each batch.

        Holds the checkpoint folder's lock throughout. Ctrl-C (and, where the caller routes
        them, SIGTERM and SIGHUP) stops at the next batch boundary: the state is saved and
        Interrupted raised. A callback's ``stop_training`` ends training after the epoch."""
        if self.checkpoint_dir is None:
            return self._fit(epochs, report, on_batch, callbacks)
        with self.lock():
            return self._fit(epochs, report, on_batch, callbacks)

    def _fit(self, epochs, report, on_batch, callbacks) -> list[EpochRecord]:
        epochs = epochs or self.settings["epochs"]
        records = []
        p = self.progress
        self.stop_training = False
        try:
            with signals.handled((signal.SIGINT,), only_default=True):
                notify(callbacks, "on_train_begin", self)
                while p.epoch < epochs and not self.stop_training:
                    record = self._train_epoch(on_batch, callbacks)
                    records.append(record)
                    if report:
                        report(record)
                    notify(callbacks, "on_epoch_end", self, record)
                notify(callbacks, "on_train_end", self, records)
        except KeyboardInterrupt as exc:
            signals.taken()
            saved = None
            if self.checkpoint_dir is not None:
                try:
                    self.save()
                except KeyboardInterrupt:
                    pass  # a second signal during the save: held until it completed
                saved = self.checkpoint_dir / "last.npz"
            raise Interrupted(signals.name_of(exc), signals.status_of(exc), saved, p.epoch,
                              p.batch) from None
        return records

    def _train_epoch(self, on_batch, callbacks) -> EpochRecord:
        """The rest of the epoch in progress (all of it, unless resumed mid-epoch), evaluated,
        checkpointed and logged."""
        p = self.progress
        total = self.steps_per_epoch()
        self.epoch_lr = None
        notify(callbacks, "on_epoch_begin", self, p.epoch)
        started = time.perf_counter() - p.seconds
        stream = batches(self.train_data, self.session.batch, seed=self.settings["seed"],
                         epoch=p.epoch, shuffle=self.shuffle, crop_pad=self.settings["crop_pad"],
                         flip=self.settings["flip"], mean=self.mean, std=self.std, start=p.batch,
                         ignore_label=self.session.ignore_label)
        rate = self._rate(total)
        untimed = 0  # images of the run's first step (the first launch): not the epoch's time
        for x, y in stream:
            notify(callbacks, "on_batch_begin", self, p.batch, total)
            with signals.deferred():  # a step and its bookkeeping, whole
                rate = self._rate(total)
                step_started = time.perf_counter()
                result = self.session.step(x, y, rate)
                if self.first_step_seconds is None:
                    self.first_step_seconds = time.perf_counter() - step_started
                    started += self.first_step_seconds
                    untimed = result.count
                self.last_lr = rate
                p.batch += 1
                p.step += 1
                p.loss_sum += result.loss
                p.correct += result.correct
                p.seen += result.count
                p.units += result.units
                if y.ndim == 3:
                    self._count_pixels(y, result.count)
                p.seconds = time.perf_counter() - started
            figures = (p.batch, total, p.loss_sum / max(p.units, 1), p.correct / max(p.units, 1),
                       (p.seen - untimed) / max(p.seconds, 1e-9))
            if on_batch:
                on_batch(*figures)
            notify(callbacks, "on_batch_end", self, *figures)
        return self._finish_epoch(rate, untimed)

    def _count_pixels(self, masks: np.ndarray, count: int) -> None:
        """Add the step's pixels to the epoch's confusion matrix (segmentation)."""
        classes = self.session.plan.classes
        matrix = confusion(masks, self.session.last_pixel_predictions(count), classes,
                           self.session.ignore_label)
        p = self.progress
        p.confusion = (matrix if p.confusion is None else np.asarray(p.confusion) + matrix
                       ).tolist()

    def _rate(self, total: int) -> float:
        """The next step's learning rate: a callback's ``epoch_lr``, else the schedule's."""
        if self.epoch_lr is not None:
            return self.epoch_lr
        return learning_rate(self.settings, self.progress.epoch, self.progress.batch, total)

    def _finish_epoch(self, rate: float, untimed: int = 0) -> EpochRecord:
        p = self.progress
        test = self.evaluate(self.test_data) if self.test_data is not None else None
        record = EpochRecord(
            epoch=p.epoch + 1, train_loss=p.loss_sum / max(p.units, 1),
            train_accuracy=p.correct / max(p.units, 1),
            test_loss=test.loss if test else None, test_accuracy=test.accuracy if test else None,
            images_per_s=(p.seen - untimed) / max(p.seconds, 1e-9), seconds=p.seconds,
            lr=rate, train_miou=None if p.confusion is None else mean_iou(
                np.asarray(p.confusion)),
            test_miou=test.miou if test else None)
        with signals.deferred():  # the epoch's end, its checkpoint and metrics line, whole
            p.history.append(record.as_json())
            # best.npz: the best test accuracy, or for segmentation the best test mean IoU
            score = None if test is None else test.miou if test.miou is not None \
                else test.accuracy
            best = score is not None and score > p.best_accuracy
            if best:
                p.best_accuracy = score
            p.epoch += 1
            p.batch = 0
            p.loss_sum = p.correct = p.seconds = 0.0
            p.seen = p.units = 0
            p.confusion = None
            self.save(best=best or test is None)
            if self.metrics_file is not None:
                self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
                with open(self.metrics_file, "a") as handle:
                    handle.write(json.dumps(record.as_json()) + "\n")
        return record

    def evaluate(self, data: Dataset) -> Evaluation:
        """Loss and accuracy in inference mode (running statistics, no dropout)."""
        return evaluate(self.session, data, self.mean, self.std)

