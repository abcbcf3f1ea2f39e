"""The compiled model: spec -> graph -> shapes -> plan -> kernels -> run, behind one object.

A Model is a network on one device (its Target, runtime/target.py) with its parameters on the
host. What it runs is built on that target when first needed, once: the inference program
(``forward``, ``predict``; ``convgraph.compile`` builds it at once), the training program
(``fit``) and the inference-and-loss program (``evaluate``). Everything the command line does
goes through these methods, so a Python user gets exactly what ``convgraph run`` and
``convgraph eval`` print.

The batch a model is planned for follows one rule (``planned_batch``): the one asked for, else
the spec's ``train: batch``; ``fit`` trains at it.

>>> import numpy as np, convgraph                                       # doctest: +SKIP
>>> model = convgraph.compile("specs/seed.yaml", device="cpu")         # doctest: +SKIP
>>> model.forward(np.zeros((2, 3, 32, 32), np.float32)).shape         # doctest: +SKIP
(2, 10)
>>> history = model.fit(model.dataset("train"), epochs=2,              # doctest: +SKIP
...                     validation_data=model.dataset("test"))
>>> history.history["test_accuracy"]                                   # doctest: +SKIP
[0.33, 0.41]
>>> model.evaluate(model.dataset("test")).accuracy                     # doctest: +SKIP
0.41
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from convgraph.codegen.fold import fold_params
from convgraph.codegen.plan import plan_forward
from convgraph.errors import DataError, TrainingDiverged, UsageError
from convgraph.graph import loss_input, ordered
from convgraph.params import (
    check_params,
    device_bytes,
    device_param_bytes,
    initial_params,
    to_device_layouts,
)
from convgraph.pipeline import analyse
from convgraph.runtime.executor import check_memory
from convgraph.runtime.target import Built, Target, build


def planned_batch(graph: nx.DiGraph, batch: int | None = None) -> int:
    """The batch a model is planned and trained for: ``batch`` if given, else the spec's
    ``train: batch`` (the one rule of the API and the command line alike).

    >>> planned_batch(analyse({"input": "8x8x1", "pattern": "[INPUT-FC(2)]",
    ...                        "train": {"batch": 16}}))
    16
    """
    batch = graph.graph["train"]["batch"] if batch is None else batch
    if batch < 1:
        raise DataError(f"batch must be at least 1, got {batch}.")
    return int(batch)


@dataclass
class _Program:
    """A program of the model's and the parameter version it holds."""

    built: Built
    executor: object
    uploaded: int = -1


class Model:
    """A network compiled for one OpenCL device; ``forward`` runs batches of up to ``batch``.

    Parameters
    ----------
    graph : networkx.DiGraph
        An analysed network (``convgraph.analyse``).
    device : str, Target or None
        Where it runs: a device selector (``P:D``, a name fragment, ``gpu``, ``cpu``; None for
        the default) or an open Target (shared with other models).
    batch : int, optional
        The largest batch a pass runs; default the spec's ``train: batch``.
    share_buffers : bool
        Let inference activations share device buffers by liveness (``--verify`` reads every
        tensor, so it turns this off).

    Nothing is built on the device until it is needed; ``convgraph.compile`` builds the
    inference program at once.
    """

    def __init__(self, graph: nx.DiGraph, device=None, batch: int | None = None,
                 share_buffers: bool = True):
        self.graph = graph
        self.batch = planned_batch(graph, batch)
        self.target = Target.open(device)
        self.share_buffers = share_buffers
        self.normalization: tuple[np.ndarray, np.ndarray] | None = None  # (mean, std) per channel
        self.class_names: list[str] | None = None  # one per class, from the training data
        self.trainer = None  # the Trainer of the last fit: its progress, history, checkpoints
        self._params: dict[str, np.ndarray] | None = None  # host copy; seeded init on first use
        self._version = 0  # counts set_params, so each program uploads only what changed
        self._inference: _Program | None = None
        self._training = None  # a TrainingSession, kept from one fit to the next
        self._evaluation = None  # an EvaluationSession
        self._evaluated = -1  # the parameter version it holds

    # ------------------------------------------------------------------ the device

    @property
    def info(self):
        return self.target.info

    @property
    def device(self):
        return self.target.device

    @property
    def profile(self):
        return self.target.profile

    @property
    def context(self):
        return self.target.context

    @property
    def queue(self):
        return self.target.queue

    @property
    def classes(self) -> int:
        """The depth of the network's output (the class count of a classifier)."""
        return self.graph.nodes[self.graph.graph["output"]]["output"].depth

    # ------------------------------------------------------------------ the inference program

    def _infer(self) -> _Program:
        """The inference program, planned, checked against the device's memory and built on
        first use, holding the current parameters."""
        if self._inference is None:
            plan = plan_forward(self.graph, self.target.profile, self.share_buffers)
            # what the device cannot hold is refused now, before building or allocating
            check_memory(self.info, plan, self.batch,
                         device_param_bytes(self.graph, plan.layout_of))
            built = build(plan, self.target, self.graph.graph["name"])
            self._inference = _Program(built, built.executor())
        program = self._inference
        if program.uploaded != self._version:
            layout_of = program.built.plan.layout_of
            # a batchnorm folded into the layer before it: that layer's weights take it
            params = fold_params(program.built.plan, self._host_params())
            device = to_device_layouts(self.graph, params, layout_of)
            program.executor.check_memory(self.batch, device_bytes(device))  # before uploading
            program.executor.upload_params(device)
            program.uploaded = self._version
        return program

    @property
    def plan(self):
        return self._infer().built.plan

    @property
    def source(self) -> str:
        return self._infer().built.source

    @property
    def build(self) -> Built:
        """The inference program's build (``cache_hit``, ``seconds``, ``key``, ``program``)."""
        return self._infer().built

    @property
    def executor(self):
        return self._infer().executor

    # ------------------------------------------------------------------ parameters

    def _host_params(self) -> dict[str, np.ndarray]:
        if self._params is None:
            train = self.graph.graph["train"]
            self._params = initial_params(self.graph, train["init"], train["seed"])
        return self._params

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, PyTorch-named and shaped (``conv1.weight``, ...)."""
        return {key: value.copy() for key, value in self._host_params().items()}

    def set_params(self, params: dict) -> None:
        check_params(self.graph, params)
        self._params = {key: np.asarray(value, np.float32).copy()
                        for key, value in params.items()}
        self._version += 1
        if self._inference is not None:  # a built program gets them now (and checks memory)
            self._infer()

    def load_weights(self, path, train_data=None) -> None:
        """Load a checkpoint or a weights ``.npz`` (read once, see ``load_model_file``): its
        parameters, its class names, and the input normalisation the weights were trained with;
        where the file has none and the spec says ``normalize: true``, the statistics of
        ``train_data`` (a Dataset, or a function returning one, called only then), else none."""
        from convgraph.train.checkpoint import load_model_file

        params, header = load_model_file(path)
        self._take_weights(params, header, path, train_data)

    def _take_weights(self, params: dict, header: dict | None, path, train_data=None) -> None:
        """A weights file's parameters, normalisation and class names, checked to fit."""
        from convgraph.data import input_normalization
        from convgraph.train.checkpoint import saved_normalization

        saved = None if header is None else saved_normalization(header)
        depth = self.graph.nodes[ordered(self.graph)[0]]["output"].depth
        if saved is not None and any(len(stats) != depth for stats in saved):
            raise DataError(
                f"{path} records an input normalisation of {len(saved[0])} channel(s) (mean) "
                f"and {len(saved[1])} (std), but '{self.graph.graph['name']}' takes "
                f"{depth}-channel input.",
                hint="use the weights trained for this network (or retrain it).")
        names = None if header is None else header.get("class_names")
        if names is not None and len(names) != self.classes:
            raise DataError(f"{path} names {len(names)} classes, but "
                            f"'{self.graph.graph['name']}' has {self.classes}.",
                            hint="use the weights trained for this network (or retrain it).")
        self.set_params(params)
        self.normalization = input_normalization(self.graph.graph["train"], saved, train_data)
        if names is not None:
            self.class_names = list(names)

    def save(self, path) -> None:
        """Save the model. A path ending in ``.npz`` gets one file (``save_weights``): the
        weights, the input normalisation, the class names and the expanded spec, so that
        ``convgraph.load(path)`` alone rebuilds the model. Any other path (or an existing
        folder) gets the compiled artifact, a checksummed folder holding the spec, the kernels
        and plan for this device and the weights (``convgraph.artifact``).

        >>> model.save("lenet5.npz"); model.save("out/lenet5")  # doctest: +SKIP
        """
        from pathlib import Path

        if Path(path).suffix != ".npz" or Path(path).is_dir():
            from convgraph.artifact import write_artifact

            write_artifact(path, self.graph, self, weights=True)
            return
        self.save_weights(path)

    def export_onnx(self, path, opset: int | None = None,
                    normalize_input: bool | None = None):
        """Write this model (graph, weights, input normalisation) as an ONNX model to ``path``
        (see ``convgraph.onnx.export.export_onnx``); needs the ``onnx`` extra."""
        from convgraph.onnx.export import DEFAULT_OPSET, export_onnx

        return export_onnx(self, path, DEFAULT_OPSET if opset is None else opset,
                           normalize_input)

    def save_weights(self, path) -> None:
        """Write the weights with the input normalisation, the class names and the expanded
        spec, in the checkpoint format (what ``--save`` writes; ``convgraph.load``,
        ``load_weights`` and ``convgraph eval --weights`` read it), to exactly ``path``."""
        from convgraph.train.checkpoint import model_fields, save_checkpoint

        header = self.trainer.header() if self.trainer is not None else {"history": []}
        header.update(model_fields(self.graph, self.class_names))
        mean, std = self.normalization if self.normalization is not None else (None, None)
        header.update(mean=None if mean is None else [float(v) for v in mean],
                      std=None if std is None else [float(v) for v in std])
        save_checkpoint(path, self.params, {}, header)

    def _use_stored_program(self, plan, source: str) -> None:
        """Run inference with ``plan`` and its program ``source`` as an artifact stored them,
        built through the one build path (checked against the device's memory first)."""
        check_memory(self.info, plan, self.batch, device_param_bytes(self.graph, plan.layout_of))
        built = build(plan, self.target, self.graph.graph["name"], source=source)
        self._inference = _Program(built, built.executor())

    @property
    def param_bytes(self) -> int:
        return self.executor.param_bytes

    def device_memory(self, batch: int | None = None) -> int:
        """Bytes on the device: parameters plus the (liveness-shared) activation buffers."""
        return self.param_bytes + self.plan.activation_bytes(batch or self.batch)

    # ------------------------------------------------------------------ running

    def forward(self, x) -> np.ndarray:
        """Run inference on ``x`` (batch, depth, height, width); returns (batch, classes) for a
        network ending in 1x1xD, else (batch, depth, height, width).

        After ``fit`` (or with ``normalization`` set) inputs are prepared as in training: uint8
        pixels scaled to [0, 1], then standardised per channel."""
        x = self._check_input(x)
        program = self._infer()
        outputs = [self._forward_batch(program, x[start:start + self.batch])
                   for start in range(0, x.shape[0], self.batch)]
        # one batch (the common call) is returned as read: each read is a new array
        out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        volume = self._volumes()[1]
        return out.reshape(out.shape[0], -1) if volume.width == volume.height == 1 else out

    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """The network's output for ``x``, inputs prepared as in training: what
        ``convgraph run --predict`` prints (its class scores, for a classifier).

        ``x`` is an array (batch, depth, height, width), a Dataset (its images), or an iterable
        (a list, a generator) of such batches: the outputs are concatenated in order. The model
        runs at its planned batch; ``batch_size``, if given, may not exceed it (the outputs do
        not depend on it).

        >>> model.predict(np.zeros((3, 3, 32, 32), np.uint8)).shape  # doctest: +SKIP
        (3, 10)
        >>> model.predict(x[i:i + 100] for i in range(0, len(x), 100)).shape  # doctest: +SKIP
        (1000, 10)
        """
        from convgraph.data import Dataset

        self._check_batch_size(batch_size, "predict", exact=False)
        if isinstance(x, Dataset):
            x = x.x
        if isinstance(x, np.ndarray) or hasattr(x, "__array__") or not _iterable(x):
            return self.forward(x)
        outputs = []
        for index, batch in enumerate(x):
            try:
                outputs.append(self.forward(batch))
            except DataError as exc:
                raise DataError(f"predict: batch {index} of the iterable: {exc.message}",
                                hint=exc.hint) from None
        if not outputs:
            raise DataError("predict was given an iterable of no batches.",
                            hint="give an array (batch, depth, height, width), or an iterable "
                                 "that yields at least one.")
        return np.concatenate(outputs)

    def _forward_batch(self, program: _Program, x: np.ndarray) -> np.ndarray:
        executor, plan = program.executor, program.built.plan
        executor.allocate(self.batch)
        executor.write_images(x)
        executor.enqueue(x.shape[0])
        return executor.read_tensor(plan.output, x.shape[0])

    def _volumes(self):
        """(input, output) volumes of the network, looked up once (a topological sort per
        call cost 16 us of the seed network's 1.2 ms pass)."""
        cached = getattr(self, "_volume_cache", None)
        if cached is None or cached[0] is not self.graph:
            graph = self.graph
            cached = self._volume_cache = (graph, graph.nodes[ordered(graph)[0]]["output"],
                                           graph.nodes[graph.graph["output"]]["output"])
        return cached[1], cached[2]

    def _check_input(self, x) -> np.ndarray:
        """``x`` as the float32 (batch, depth, height, width) the device takes, prepared as in
        training; DataError for a wrong shape, values that are not real numbers, and NaN or
        infinite values (before or after normalisation), naming the first bad image.

        The values are checked once, after preparing: a NaN or an infinity in ``x`` stays one,
        and so does a value that float32 or the normalisation turns into one. Only when that
        one pass finds something are ``x`` and then the prepared batch searched for the first
        bad value, so the message is the one the two searches always gave."""
        from convgraph.data.arrays import all_finite, describe_value, first_nonfinite, place

        x = self._check_images(x, "the input batch", values=False)
        # a value beyond float32 becomes inf (and a std of 0 NaN or inf): refused below
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.normalization is not None:
                from convgraph.data import as_unit

                mean, std = self.normalization
                unit = as_unit(x)
                # in place where as_unit made a copy: the same float32 operations as
                # (unit - mean) / std, one temporary fewer
                prepared = np.subtract(unit, np.asarray(mean, np.float32)[None, :, None, None],
                                       out=None if np.may_share_memory(unit, x) else unit)
                np.divide(prepared, np.asarray(std, np.float32)[None, :, None, None],
                          out=prepared)
            else:
                prepared = np.ascontiguousarray(x, np.float32)
        if all_finite(prepared):
            return prepared
        self._refuse_nonfinite(x, "the input batch")
        index = first_nonfinite(prepared)
        if index is not None:  # finite, but too large for float32 (or for the normalisation)
            after = " after normalisation" if self.normalization is not None else ""
            raise DataError(f"the input batch's {place(index)} becomes "
                            f"{describe_value(prepared[index])} as float32{after}: its values "
                            "are far outside the range the network was trained on.",
                            hint="give pixels as uint8 0..255 or floats in the training "
                                 "data's range.")
        return prepared

    def _check_images(self, x, what: str, values: bool = True) -> np.ndarray:
        """``x`` as an array of images (batch, depth, height, width) of the network's input
        volume (one image gains a batch axis): real, finite numbers, at least one image;
        DataError naming ``what`` and the first bad image otherwise (``values`` False leaves
        the finiteness to the caller)."""
        from convgraph.data.arrays import all_finite

        volume = self._volumes()[0]
        try:
            x = np.asarray(x)
        except ValueError as exc:  # ragged nested lists
            raise DataError(f"{what} is not an array of images: {exc}.",
                            hint="give a numpy array (batch, depth, height, width).") from None
        expected = (volume.depth, volume.height, volume.width)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise DataError(f"{what} has shape {x.shape}, but '{self.graph.graph['name']}'"
                            f" takes (batch, {volume.depth}, {volume.height}, {volume.width}) "
                            f"(depth, height, width of {volume}).")
        if not np.issubdtype(x.dtype, np.number) or x.dtype.kind == "c":
            raise DataError(f"{what} holds {x.dtype} values, not real numbers.")
        if x.shape[0] == 0:
            raise DataError(f"{what} holds no images (shape {x.shape}).",
                            hint="give at least one image (batch, depth, height, width).")
        if values and not all_finite(x):
            self._refuse_nonfinite(x, what)
        return x

    @staticmethod
    def _refuse_nonfinite(x: np.ndarray, what: str) -> None:
        """DataError naming the first NaN or infinite value of ``x``, if it holds one."""
        from convgraph.data.arrays import describe_value, first_nonfinite, place

        index = first_nonfinite(x)
        if index is not None:
            # a ReLU's max turns NaN into 0: the scores would look confident and mean nothing
            raise DataError(f"{what} holds {describe_value(x[index])} at "
                            f"{place(index)}; every input value must be a finite number.",
                            hint="replace or drop the images with NaN or infinite values.")

    def input_mismatch(self, x) -> str | None:
        """A sentence when ``x`` is grossly unlike the data the weights were trained on, judged
        from the model's normalisation (the training set's per-channel mean and std, in the
        unit scale uint8 pixels are read in): a float 0..255 batch for weights trained on 0..1
        pixels, or the reverse. None when it fits, or when there is no normalisation to judge by.

        >>> model.input_mismatch(np.full((1, 1, 8, 8), 200.0, np.float32))  # doctest: +SKIP
        'the input ... mean 200 ... trained on data of mean 0.25 ...'
        """
        if self.normalization is None:
            return None
        from convgraph.data import as_unit

        unit = as_unit(np.asarray(x))
        if unit.ndim == 3:
            unit = unit[None]
        if unit.ndim != 4 or unit.size == 0 or not np.isfinite(unit).all():
            return None  # the input check says what is wrong with such a batch
        mean, std = (np.asarray(v, np.float64).reshape(-1) for v in self.normalization)
        if mean.size != unit.shape[1] or std.size != unit.shape[1] or not (std > 0).all():
            return None
        got_mean = unit.mean(axis=(0, 2, 3), dtype=np.float64)
        got_std = unit.std(axis=(0, 2, 3), dtype=np.float64)
        # far beyond what one batch of the same kind of data shows: the mean 8 training stds
        # off, or a spread 25 times wider or narrower (0..255 against 0..1 is a factor of 255)
        off = np.abs(got_mean - mean) > 8 * std
        scaled = (got_std > 25 * std) | ((got_std > 0) & (got_std * 25 < std))
        if not (off | scaled).any():
            return None
        channel = int(np.argmax(off | scaled))
        low, high = float(unit[:, channel].min()), float(unit[:, channel].max())
        return (f"the input's channel {channel} has values {low:.4g}..{high:.4g} (mean "
                f"{got_mean[channel]:.4g}, std {got_std[channel]:.4g}), but the weights were "
                f"trained on data of mean {mean[channel]:.4g}, std {std[channel]:.4g}: the "
                "scores mean little. uint8 pixels are scaled to 0..1; float inputs must be on "
                "the scale of the training data (0..1 for images read from uint8 files).")

    # ------------------------------------------------------------------ data, training, evaluation

    def dataset(self, split: str = "train"):
        """The ``split`` ('train' or 'test') of the data set the spec's ``train:`` section names,
        checked to fit the network: what ``convgraph run`` and ``eval`` load (spec_dataset)."""
        return spec_dataset(self.graph, split)

    def fit(self, data, epochs: int | None = None, *, batch_size: int | None = None,
            validation_data=None, test_data=None, validation_split: float | None = None,
            shuffle: bool = True, verbose: int = 1, callbacks=(), checkpoint_dir=None,
            resume: bool = False, metrics_file=None, report=None, distributed: bool = False,
            devices=None, mpi_timeout: float | None = None):
        """Train on this model's device with the spec's ``train:`` settings, at the model's
        batch, for ``epochs`` (default the spec's ``train: epochs``): exactly what ``convgraph
        run --epochs N`` trains, the learning-rate schedule spanning those N epochs. Returns a
        History (the EpochRecords, ``history.history`` per metric, ``history.epoch``).

        Parameters
        ----------
        data : Dataset or (x, y)
            x (N, depth, height, width) uint8 or float32 images, y (N,) class indices.
        epochs : int, optional
            1 or more; what the run trains to and the schedule spans.
        batch_size : int, optional
            Only the model's own (``compile(spec, batch=...)`` plans another).
        validation_data, test_data : Dataset or (x, y), optional
            Evaluated after each epoch (the test_ metrics); one name for one thing, give one.
        validation_split : float, optional
            Hold out this last fraction of ``data`` (before any shuffling, as Keras does) as
            the validation data.
        shuffle : bool
            False: the batches visit ``data`` in its order, every epoch (augmentation stays
            seeded), for comparisons that must not depend on the order.
        verbose : 0 or 1
            1: the progress bar of ``convgraph run`` on a terminal and one line per epoch
            (unless a callback draws progress); 0: quiet.
        callbacks : list of convgraph.callbacks.Callback
            EarlyStopping, ModelCheckpoint, LearningRateScheduler or your own.
        checkpoint_dir, resume, metrics_file
            ``--checkpoint-dir`` (last.npz every epoch, best.npz), ``--resume`` (continue from
            its last.npz), ``--metrics`` (one JSON line per epoch).
        report : callable, optional
            ``report(record)`` after each epoch.
        distributed : bool
            Data-parallel over the MPI ranks this process was launched among (``mpirun -n N
            python script.py``; mpi4py): each rank trains its shard of every batch on this
            model's device, gradients averaged by allreduce; rank 0 alone writes the
            checkpoints and metrics and shows progress (README, "Distributed training").
        devices : list of device selectors or Targets, optional
            Data-parallel over these devices in this process (and over the ranks, with
            ``distributed``); default: this model's device.
        mpi_timeout : float, optional
            Seconds a rank waits for the others in one collective before it aborts the job.

        The trained weights and the input normalisation replace this model's (also when
        training is interrupted or diverges: the last good weights). ``self.trainer`` is the
        run's Trainer.

        >>> history = model.fit((x, y), epochs=2, validation_split=0.1)  # doctest: +SKIP
        >>> history.history["test_accuracy"]                            # doctest: +SKIP
        [0.52, 0.71]
        """
        from convgraph.train.callbacks import History, ProgressBar, check_callbacks
        from convgraph.train.loop import Interrupted, Trainer

        epochs = check_epochs(epochs, self.graph.graph["train"]["epochs"])
        self._check_batch_size(batch_size, "fit", exact=True)
        for name, value in (("shuffle", shuffle), ("resume", resume)):
            _check_flag(value, name)
        if verbose not in (0, 1) or isinstance(verbose, float):
            raise UsageError(f"fit: verbose must be 0 (quiet) or 1 (progress), got {verbose!r}.",
                             hint="pass verbose=0 or verbose=1.")
        if report is not None and not callable(report):
            raise UsageError(f"fit: report must be a function of the epoch's record, got "
                             f"{type(report).__name__}.", hint="pass report=print, or leave it "
                                                                "out.")
        callbacks = check_callbacks(callbacks)
        _check_outputs(checkpoint_dir, resume, metrics_file)
        train, test = self._fit_data(data, validation_data, test_data, validation_split)
        _check_flag(distributed, "distributed")
        sharded = distributed or devices is not None
        session = (self._sharded_session(distributed, devices, mpi_timeout) if sharded
                   else self._training_session())
        root = getattr(session, "is_root", True)  # only rank 0 writes and shows progress
        progress = None
        if verbose and root and not any(getattr(c, "draws_progress", False) for c in callbacks):
            progress = ProgressBar()
            callbacks.append(progress)
        trainer = Trainer(session, train, test, checkpoint_dir if root else None,
                          metrics_file if root else None, epochs=epochs, shuffle=bool(shuffle))
        self.trainer = trainer
        try:
            if resume and sharded:
                from convgraph.train.distributed import resume_everywhere

                resume_everywhere(trainer)
            elif resume:
                trainer.resume()
            records = trainer.fit(report=report, callbacks=callbacks)
            if sharded:
                session.check_drift()  # every rank ends with rank 0's weights
                session.ranks.finish()
        except (Interrupted, TrainingDiverged):
            self._take_trained(trainer)
            raise
        finally:
            if progress is not None:
                progress.close()
        self._take_trained(trainer)
        return History(records, stopped_early=trainer.stop_training)

    def _check_batch_size(self, batch_size, method: str, exact: bool) -> None:
        """The model is planned for one batch: ``fit`` trains at it (another would change
        training), ``predict`` and ``evaluate`` take any up to it (their results do not
        depend on it)."""
        if batch_size is None:
            return
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise UsageError(f"{method}: batch_size must be a whole number of at least 1, got "
                             f"{batch_size!r}.", hint="leave batch_size out: the model runs at "
                                                      f"its planned batch ({self.batch}).")
        if batch_size == self.batch or (not exact and batch_size < self.batch):
            return
        limit = "is" if exact else "is at most"
        raise UsageError(f"{method}(batch_size={batch_size}): this model is planned for batches "
                         f"of {self.batch}, so its batch size {limit} {self.batch}.",
                         hint=f"compile the model for that batch: convgraph.compile(spec, "
                              f"batch={batch_size}), or leave batch_size out.")

    def _fit_data(self, data, validation_data, test_data, validation_split):
        """The training and the test Dataset of a fit, checked to fit the network."""
        if validation_data is not None and test_data is not None:
            raise UsageError("fit was given both validation_data and test_data: they are one "
                             "thing (the data evaluated after each epoch) by two names.",
                             hint="give one of them.")
        held = validation_data if validation_data is not None else test_data
        train = self._as_dataset(data, "fit's data", batches=False)
        if validation_split is None or (validation_split == 0 and
                                        not isinstance(validation_split, bool)):
            test = None if held is None else self._as_dataset(held, "fit's validation_data")
            return train, test
        if held is not None:
            raise UsageError("fit was given both validation_split and validation_data: the "
                             "split holds out part of data as the validation data.",
                             hint="give one of them.")
        return split_dataset(train, validation_split)

    def _as_dataset(self, data, what: str, batches: bool = True):
        """``data`` as a Dataset of the network's input volume and class count: a Dataset, an
        ``(x, y)`` pair of arrays, or (``batches``) an iterable of ``(x, y)`` batches
        (concatenated); DataError or UsageError saying what does not fit."""
        from convgraph.data import Dataset
        from convgraph.data.dataset import check_fits, check_labels
        from convgraph.data.masks import check_targets

        name = self.graph.graph["name"]
        volume = self.graph.nodes[ordered(self.graph)[0]]["output"]
        if isinstance(data, Dataset):
            check_fits(what, data.volume(), data.classes, volume, self.classes)
            if len(data) == 0:
                raise DataError(f"{what} ({data.name}) holds no images.",
                                hint="give at least one image.")
            data.y = check_targets(data.y, self.classes, *target_of(self.graph), what)
            return data
        if _is_pair(data):
            x, y = self._check_images(data[0], f"{what}'s x"), _labels(data[1], what)
        elif batches and _iterable(data):
            pairs = [self._as_dataset(pair, f"{what} (batch {index})", batches=False)
                     for index, pair in enumerate(data)]
            if not pairs:
                raise DataError(f"{what} is an iterable of no batches.",
                                hint="give (x, y) batches, or an (x, y) pair of arrays.")
            x = np.concatenate([pair.x for pair in pairs])
            y = np.concatenate([pair.y for pair in pairs])
        else:
            also = ", or an iterable of (x, y) batches" if batches else ""
            raise UsageError(f"{what} must be a convgraph.data.Dataset or an (x, y) pair of "
                             f"arrays{also}; got a {type(data).__name__}.",
                             hint="e.g. (x, y) with x (N, depth, height, width) images and y (N,) "
                                  "class indices, or model.dataset('train').")
        if y.shape[:1] != (x.shape[0],) or y.ndim not in (1, 3):
            raise DataError(f"{what} has {x.shape[0]:,} images but {y.shape} labels; y must "
                            f"hold one class index per image ({x.shape[0]:,},), or for "
                            f"segmentation one mask per image ({x.shape[0]:,}, H, W).",
                            hint="give x and y of the same length.")
        where = f"{what}'s y (for '{name}', {self.classes} classes)"
        y = check_targets(y, self.classes, *target_of(self.graph), where)
        if y.ndim == 1:
            y = check_labels(y, self.classes, where).astype(np.int64)
        if x.dtype not in (np.uint8, np.float32):
            x = x.astype(np.float32)
        return Dataset("arrays", np.ascontiguousarray(x), y, self.classes)

    # ------------------------------------------------------------------ description

    def summary(self, print_fn=print, *, as_dict: bool = False):
        """What ``convgraph compile`` prints: the table of layers (op, hyperparameters, output,
        parameters, FLOPs, memory) and the totals line, Keras's ``model.summary()``.

        Each line goes to ``print_fn`` (default ``print``, in the terminal's width, else 140
        columns); ``print_fn=None`` returns the text instead, ``as_dict=True`` the summary as
        ``convgraph compile --json`` writes it (a dict).

        >>> model.summary()                            # doctest: +SKIP
        >>> text = model.summary(print_fn=None)        # doctest: +SKIP
        >>> model.summary(as_dict=True)["total_params"]  # doctest: +SKIP
        2410
        """
        import io

        from rich.console import Console

        from convgraph.summary import print_summary, summary_json

        if as_dict:
            return summary_json(self.graph)
        if print_fn is not None and not callable(print_fn):
            raise UsageError(f"summary: print_fn must be a function of a line (or None), got "
                             f"{type(print_fn).__name__}.", hint="e.g. print_fn=print.")
        probe = Console()
        buffer = io.StringIO()
        print_summary(self.graph, Console(file=buffer, color_system=None,
                                          width=probe.width if probe.is_terminal else 140))
        text = buffer.getvalue()
        if print_fn is None:
            return text
        for line in text.splitlines():
            print_fn(line)
        return None

    def _training_session(self):
        """The training program on this model's target, holding this model's parameters and
        a fresh optimizer state; built on the first fit, reused by later ones."""
        from convgraph.train.session import TrainingSession

        session = self._training
        if session is None:
            session = self._training = TrainingSession(self.graph, self.target, self.batch,
                                                       params=self._host_params())
        else:
            session.set_params(self._host_params())
            session.reset_optimizer()
            session.step_count = 0
        return session

    def _sharded_session(self, distributed: bool, devices, mpi_timeout):
        """A data-parallel session (train/distributed.py) over ``devices`` (default: this
        model's target) and, with ``distributed``, the MPI ranks; built afresh per fit."""
        from convgraph.train.distributed import DEFAULT_TIMEOUT, MpiRanks, Ranks, ShardedSession

        ranks = MpiRanks(mpi_timeout or DEFAULT_TIMEOUT) if distributed else Ranks()
        if devices is not None and (isinstance(devices, str) or not list(devices)):
            raise UsageError(f"fit: devices must be a list of device selectors, got "
                             f"{devices!r}.", hint="pass devices=['0:0', '0:1'], for example.")
        # this model's own device, where the list names it, trains on the model's context
        targets = [self.target] if devices is None else [
            self.target if device == self.target.info.index else device for device in devices]
        return ShardedSession(self.graph, targets, self.batch, params=self._host_params(),
                              ranks=ranks)

    def _take_trained(self, trainer) -> None:
        self.set_params(trainer.session.params)
        self.normalization = None if trainer.mean is None else (trainer.mean, trainer.std)
        names = trainer.train_data.class_names
        self.class_names = None if names is None else list(names)

    def evaluate(self, data, batch_size: int | None = None):
        """Loss and accuracy on ``data`` in inference mode, inputs prepared with the model's
        normalisation: what ``convgraph eval`` prints. ``data`` is a Dataset, an ``(x, y)``
        pair of arrays, or an iterable of ``(x, y)`` batches (evaluated as one set). Runs a
        program of the inference and loss kernels only (built on first use), at the model's
        batch (``batch_size`` may be given up to it; the figures do not depend on it).

        Returns a convgraph.train.loop.Evaluation (``loss``, ``accuracy``, ``predictions``,
        ``labels``, ``confusion(classes)``).

        >>> model.evaluate(model.dataset("test")).accuracy  # doctest: +SKIP
        0.9021
        """
        from convgraph.train.loop import evaluate

        self._check_batch_size(batch_size, "evaluate", exact=False)
        data = self._as_dataset(data, "evaluate's data")
        mean, std = self.normalization if self.normalization is not None else (None, None)
        return evaluate(self._evaluation_session(), data, mean, std)

    def _evaluation_session(self):
        from convgraph.train.session import EvaluationSession

        if self._evaluation is None:
            self._evaluation = EvaluationSession(self.graph, self.target, self.batch,
                                                 params=self._host_params())
        elif self._evaluated != self._version:
            self._evaluation.set_params(self._host_params())
        self._evaluated = self._version
        return self._evaluation

    def kernel_records(self) -> list[dict]:
        """The launches of one forward pass at the planned batch (for --json and the plan file)."""
        executor = self.executor
        records = []
        for launch in self.plan.launches:
            local = executor.local_sizes.get(id(launch), executor.legal_local(launch))
            global_size, _ = launch.sizes(self.batch)
            records.append({"name": launch.kernel, "node": launch.node,
                            "global_size": list(global_size),
                            "local_size": list(local) if local else None})
        return records


def spec_dataset(graph: nx.DiGraph, split: str = "train"):
    """The ``split`` ('train' or 'test') of the data set the spec's ``train:`` section names
    (``dataset``, ``data``), checked to fit the network's input volume and class count. The
    data set is fixed (seed 0) whatever the training seed, so runs stay comparable."""
    from convgraph.data import load_dataset

    train = graph.graph["train"]
    first = graph.nodes[ordered(graph)[0]]["output"]
    classes = graph.nodes[graph.graph["output"]]["output"].depth
    output, ignore_label = target_of(graph)
    return load_dataset(train["dataset"], train["data"], split, first, classes, 0,
                        output=output, ignore_label=ignore_label)


def target_of(graph: nx.DiGraph):
    """(the volume the loss reads, the ignore label): what a data set's labels must fit, one
    class per image for a 1x1xC volume, (N, H, W) masks otherwise (segmentation)."""
    return (graph.nodes[loss_input(graph)]["output"],
            int(graph.graph["train"].get("ignore_label", 255)))


def check_epochs(epochs, spec_epochs: int) -> int | None:
    """``fit``'s epochs as ``convgraph run --epochs`` takes them: None (the spec's
    ``spec_epochs``) or a whole number from 1 to the spec language's limit; UsageError
    otherwise (0 never means "the spec's")."""
    if epochs is None:
        return None
    highest = 100_000  # the spec language's limit (spec/train.py)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or \
            not 1 <= epochs <= highest:
        raise UsageError(f"fit: epochs must be a whole number from 1 to {highest:,}, got "
                         f"{epochs!r}.",
                         hint="give epochs=N (what convgraph run --epochs N trains), or leave it "
                              f"out for the spec's train: epochs ({spec_epochs}).")
    return int(epochs)


def split_dataset(data, fraction):
    """(the first part, the last ``fraction``) of ``data``, in stored order: Keras's
    ``validation_split``. Both parts hold at least one image, or DataError."""
    from convgraph.data import Dataset

    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or \
            not 0 < fraction < 1:
        raise UsageError(f"fit: validation_split must be a fraction between 0 and 1, got "
                         f"{fraction!r}.", hint="e.g. validation_split=0.1 holds out the last "
                                                "10% of the training data.")
    count = len(data)
    split_at = int(count * (1 - fraction))
    if split_at < 1 or split_at >= count:
        raise DataError(f"validation_split={fraction} of {count:,} images leaves "
                        f"{split_at:,} to train on and {count - split_at:,} to validate on.",
                        hint="give more images, or a fraction that leaves some of each.")
    def part(where: slice, label: str) -> Dataset:
        return Dataset(f"{data.name} {label}", data.x[where], data.y[where], data.classes,
                       data.class_names)

    return part(slice(None, split_at), f"[:{split_at}]"), part(slice(split_at, None),
                                                                f"[{split_at}:]")


def _check_flag(value, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise UsageError(f"fit: {name} must be True or False, got {value!r}.",
                         hint=f"pass {name}=True or {name}=False.")


def _check_outputs(checkpoint_dir, resume, metrics_file) -> None:
    """The folders and files fit will write, checked before anything is built (as ``run``
    checks --checkpoint-dir and --metrics)."""
    from convgraph.files import writable_file, writable_folder

    if resume and checkpoint_dir is None:
        raise UsageError("fit(resume=True) needs checkpoint_dir (the folder whose last.npz to "
                         "continue from).", hint="pass checkpoint_dir=..., or leave out resume.")
    if checkpoint_dir is not None:
        writable_folder(checkpoint_dir, "fit's checkpoint_dir")
    if metrics_file is not None:
        writable_file(metrics_file, "fit's metrics_file")


def _iterable(value) -> bool:
    if isinstance(value, (str, bytes, dict)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _is_pair(data) -> bool:
    """An (x, y) pair of arrays, not a sequence of (x, y) batches (whose items are tuples)."""
    return isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], tuple)


def _labels(y, what: str) -> np.ndarray:
    """``y`` as whole-number class indices; DataError for other values."""
    try:
        y = np.asarray(y)
    except ValueError as exc:
        raise DataError(f"{what}'s y is not an array of labels: {exc}.") from None
    if y.dtype.kind in "iu":
        return y
    if y.dtype.kind == "f" and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    if y.dtype.kind == "f" and y.size == 0:
        return y.astype(np.int64)
    raise DataError(f"{what}'s y holds {y.dtype} values, not class indices.",
                    hint="give y as whole numbers 0..classes-1, one per image (not one-hot).")


def compile(spec, device=None, batch: int | None = None, overrides=(),  # noqa: A001
            share_buffers: bool = True) -> Model:
    """Compile a spec (path, dict or analysed graph) for a device (``P:D``, a name fragment,
    an open Target, or the default), planned for batches of up to ``batch`` images (default:
    the spec's ``train: batch``), and build its inference program.

    Parameters are initialised from the spec's ``train: init/seed``; replace them with
    ``model.set_params`` or ``model.load_weights``.
    """
    if batch is not None and batch < 1:
        raise DataError(f"batch must be at least 1, got {batch}.")
    graph = spec if isinstance(spec, nx.DiGraph) else analyse(spec, overrides)
    model = Model(graph, device, batch, share_buffers)
    model._infer()
    return model


def load(path, device=None, batch: int | None = None) -> Model:
    """A ready Model from what ``save`` wrote: a ``.npz`` file (``--save``, ``save_weights``, a
    checkpoint folder's ``last.npz``/``best.npz``) or a compiled artifact folder (``compile
    -o``, ``save(DIR)``), with its weights, input normalisation and class names, on ``device``
    (a selector or a Target), planned for ``batch`` (default: the artifact's, else the spec's).

    An artifact is verified first (DataError naming a missing or altered file); on the device
    and convgraph version it was compiled for, its stored kernels are what runs, else it is
    re-planned and rebuilt (with a note on stderr). A weights file without a spec (from an
    older convgraph, or plain arrays) is a DataError saying to give the spec.

    >>> model = convgraph.load("fashion.npz")                            # doctest: +SKIP
    >>> model.evaluate(model.dataset("test")).accuracy                  # doctest: +SKIP
    0.8551
    """
    from pathlib import Path

    if batch is not None and batch < 1:
        raise DataError(f"batch must be at least 1, got {batch}.")
    if Path(path).is_dir():
        from convgraph.artifact import read_artifact

        return model_from_artifact(read_artifact(path), device, batch)
    return _model_from_file(path, device, batch)


def model_from_artifact(artifact, device=None, batch: int | None = None,
                        weights: bool = True) -> Model:
    """The Model of a verified artifact (``convgraph.artifact.read_artifact``), its inference
    program built from the stored kernels where they are for this device, with the artifact's
    weights unless ``weights`` is false."""
    model = Model(artifact.graph, device, artifact.batch if batch is None else batch)
    stored = artifact.stored_plan(model.info)
    if weights and artifact.weights is not None:
        model.load_weights(artifact.weights)
    if stored is not None:
        model._use_stored_program(*stored)
    model._infer()
    return model


def _model_from_file(path, device, batch) -> Model:
    from convgraph.train.checkpoint import load_model_file

    params, header = load_model_file(path)
    text = None if header is None else header.get("spec_yaml")
    if text is None:
        raise DataError(f"{path} holds weights but no spec (it was written by an older "
                        "convgraph, or it is a plain arrays file), so it cannot be loaded alone.",
                        hint="give the spec: model = convgraph.compile(SPEC), then "
                             f"model.load_weights('{path}').")
    graph = _graph_of_saved_spec(text, header, path)
    model = Model(graph, device, batch)
    model._take_weights(params, header, path)
    model._infer()
    return model


def _graph_of_saved_spec(text: str, header: dict, path) -> nx.DiGraph:
    """The network of the expanded spec a weights file holds, checked to be the one its
    weights were saved from."""
    import json

    from convgraph.errors import SpecError
    from convgraph.spec.yamlload import load_yaml_text
    from convgraph.train.checkpoint import network_hash

    try:  # the strict loader's plain data, as the dict analyse reads
        graph = analyse(json.loads(json.dumps(load_yaml_text(text, f"{path} (its spec)"))))
    except SpecError as exc:
        raise DataError(f"the spec saved in {path} is not valid ({exc}).",
                        hint="load the weights into the network's spec: "
                             "convgraph.compile(SPEC).load_weights(...).") from None
    if network_hash(graph) != header.get("network"):
        raise DataError(f"the spec saved in {path} describes another network than its weights "
                        "were saved from.", hint="the file was altered; save it again.")
    return graph
