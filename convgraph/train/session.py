"""A network being trained on one device: parameters, gradients and optimizer state stay there.

A step uploads one batch (images and labels), enqueues the training-mode forward pass, the loss,
the backward pass and the optimizer step back to back, and reads back only the batch's summed
loss and number of correct answers. An EvaluationSession runs only the inference-and-loss part
of the same plan (its 'evaluate' group), in a program of its own.

Both run on a Target (runtime/target.py) they are given or open: a model's training and
evaluation share its device, context and queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np

from convgraph.codegen import launches as buffers
from convgraph.codegen.training import TrainingPlan, plan_training
from convgraph.errors import DataError, TrainingDiverged
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY
from convgraph.params import check_params, initial_params, to_device_layouts
from convgraph.runtime.executor import check_memory
from convgraph.runtime.program import SubPlan
from convgraph.runtime.target import Target, build

# How often (in optimizer steps) the guard downloads every parameter and every gradient and
# checks them for NaN and infinity on the host, besides the loss it checks at every step: the
# first step, then every CHECK_EVERY steps, and at every checkpoint. A check is one read per
# parameter buffer (2 x the parameter bytes) and latency-bound: measured on this machine's PoCL
# at batch 64, 7.7 ms for the seed network (one step: 15 ms) and 2.7 ms for VGG-CIFAR (3.3 MB
# of parameters; one step: 1.5 s), so every 100 steps costs under 1% of training time.
CHECK_EVERY = 100


@dataclass
class StepResult:
    loss: float  # summed over the batch (over its counted pixels, for segmentation)
    correct: float
    count: int  # images
    units: int | None = None  # what loss and correct are summed over: images, or counted pixels

    def __post_init__(self):
        if self.units is None:
            self.units = self.count


class _Session:
    """A plan built on a target with the network's parameters on the device: batches go in,
    losses, correct counts and logits come out. (The part training and evaluation share.)"""

    plan: TrainingPlan

    def _start(self, graph: nx.DiGraph, device, batch: int, title: str) -> None:
        """Check the memory, build, and allocate: ``self.plan`` is set, nothing else is."""
        self.graph = graph
        self.train = dict(graph.graph["train"])
        self.target = Target.open(device)
        self.info, self.device, self.profile = (self.target.info, self.target.device,
                                                self.target.profile)
        fixed = sum(self.plan.fixed_sizes().values())
        check_memory(self.info, self.plan, batch, fixed)  # before building or allocating
        self.build = build(self.plan, self.target, title)
        self.source = self.build.source
        self.context, self.queue = self.target.context, self.target.queue
        self.batch = batch
        self.executor = self.build.executor()
        self.step_count = 0

    def _layouts(self, name: str):
        inputs = self.graph.nodes[name]["inputs"]
        return (self.plan.layout_of(inputs[0]) if inputs else None, self.plan.layout_of(name))

    def set_params(self, params: dict) -> None:
        check_params(self.graph, params)
        self._good_weights = None  # the next training step checks these
        wanted = self.plan.fixed_sizes()
        arrays = {buffers.param(name, key).name: value for (name, key), value
                  in to_device_layouts(self.graph, params, self.plan.layout_of).items()}
        self.executor.upload({name: value for name, value in arrays.items() if name in wanted})

    def _write_batch(self, x: np.ndarray, labels: np.ndarray | None) -> int:
        count = x.shape[0]
        if count > self.batch:
            raise DataError(f"a batch of {count} images is larger than the planned {self.batch}.")
        # packed straight into the device's input buffer where it is mapped; the last batch's
        # copy has finished where it is not (every step ends with a blocking read)
        self.executor.write_images(x)
        if labels is not None:
            labels = self._checked_labels(np.asarray(labels), count)
            self._labels = np.ascontiguousarray(labels, np.int32)
            self._units = (int(np.count_nonzero(labels != self.ignore_label))
                           if self.plan.segmentation else count)
            self.executor.write(buffers.LABELS.name, self._labels)
        return count

    @property
    def ignore_label(self) -> int:
        return int(self.train.get("ignore_label", 255))

    def _checked_labels(self, labels: np.ndarray, count: int) -> np.ndarray:
        """Class indices (N,), or for a per-pixel loss (N, H, W) masks of classes and the
        ignore label; DataError otherwise."""
        classes = self.plan.classes
        if not self.plan.segmentation:
            if labels.min(initial=0) < 0 or labels.max(initial=0) >= classes:
                raise DataError(f"labels must lie in [0, {classes}), got "
                                f"{labels.min()}..{labels.max()}.")
            return labels
        volume = self.plan.layouts[self.plan.logits].volume
        if labels.shape != (count, volume.height, volume.width):
            raise DataError(f"masks must be (N, H, W) = ({count}, {volume.height}, "
                            f"{volume.width}) for the network's {volume} output, got "
                            f"{labels.shape}.")
        bad = (labels < 0) | ((labels >= classes) & (labels != self.ignore_label))
        if bad.any():
            raise DataError(f"mask values must lie in [0, {classes}) or be the ignore label "
                            f"{self.ignore_label}, got {int(labels[bad].flat[0])}.")
        return labels

    def _read_metrics(self, count: int) -> StepResult:
        """The batch's summed loss and correct count, read back with one wait for the device
        (the losses' copy is queued without waiting; the correct counts' read, after it in the
        queue, waits for both): each wait costs the host a wake-up of PoCL's threads."""
        if getattr(self, "_metrics", None) is None:
            self._metrics = (np.empty(self.batch, np.float32), np.empty(self.batch, np.float32))
        losses, correct = self._metrics
        self.executor.read(buffers.LOSSES.name, losses, blocking=False)
        self.executor.read(buffers.CORRECT.name, correct)
        return StepResult(float(losses[:count].sum(dtype=np.float64)),
                          float(correct[:count].sum()), count, self._units)

    def last_pixel_predictions(self, count: int) -> np.ndarray:
        """The top class of each pixel of the last batch, (count, H, W), from the loss kernel
        (segmentation only)."""
        volume = self.plan.layouts[self.plan.logits].volume
        host = np.empty(self.batch * self.plan.pixels, np.int32)
        node = next(n for n, key in self.plan.scratch if key == "predicted")
        name = buffers.scratch(node, "predicted").name
        predicted = self.executor.read(name, host)
        return predicted[:count * self.plan.pixels].reshape(count, volume.height, volume.width)

    def evaluate_batch(self, x: np.ndarray, labels: np.ndarray) -> StepResult:
        """Loss and correct count of one batch in inference mode (running statistics)."""
        count = self._write_batch(x, labels)
        self.executor.enqueue(count, group="evaluate")  # ends with the loss
        return self._read_metrics(count)

    def last_predictions(self, count: int) -> np.ndarray:
        """The top class of each image (or, segmenting, of each pixel: (count, H, W)) of the
        last evaluated batch."""
        logits = self.executor.read_tensor(self.plan.logits, count)
        if self.plan.segmentation:
            return logits.argmax(axis=1)
        return logits.reshape(count, -1).argmax(axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores (N, classes), or segmenting (N, classes, H, W)."""
        volume = self.plan.layouts[self.plan.logits].volume
        blank = (np.zeros((x.shape[0], volume.height, volume.width), np.int32)
                 if self.plan.segmentation else np.zeros(x.shape[0], np.int32))
        count = self._write_batch(x, blank)
        self.executor.enqueue(count, group="evaluate")
        scores = self.executor.read_tensor(self.plan.logits, count)
        return scores if self.plan.segmentation else scores.reshape(count, -1)

    def device_memory(self) -> int:
        """Bytes held on the device: parameters (and, training, gradients and optimizer
        state), activations."""
        return (sum(self.plan.fixed_sizes().values())
                + sum(self.plan.buffer_sizes(self.batch).values()))


class EvaluationSession(_Session):
    """Inference and loss only, for ``Model.evaluate`` and ``convgraph eval``: the training
    plan's 'evaluate' group (the kernels a training run evaluates with, so the figures are the
    same) in a program of its own, without backward or optimizer kernels or their buffers.

    ``device`` is a selector or a Target; parameters start at the spec's seeded
    initialisation unless ``params`` are given.
    """

    def __init__(self, graph: nx.DiGraph, device=None, batch: int = 64, params=None):
        target = Target.open(device)
        train = graph.graph["train"]
        whole = plan_training(graph, target.profile, train["optimizer"], train)
        self.plan = SubPlan(whole, {"evaluate": whole.groups["evaluate"]})
        self._start(graph, target, batch, graph.graph["name"] + " (evaluation)")
        parameters = {buffers.param(node, key).name for node, key in whole.param_sizes}
        zeros = {name: np.zeros(size // 4, np.float32)  # whatever is not a parameter starts at 0
                 for name, size in self.plan.fixed_sizes().items() if name not in parameters}
        if zeros:
            self.executor.upload(zeros)
        self.set_params(params if params is not None
                        else initial_params(graph, train["init"], train["seed"]))
        self.executor.allocate(batch)


class TrainingSession(_Session):
    """Compile ``graph`` for training on a device and hold its state there.

    ``device`` is a selector (``P:D``, a name fragment, None for the default) or a Target (a
    model's, to train on its context and queue); parameters start at the spec's seeded
    initialisation unless ``params`` are given.

    >>> session = TrainingSession(graph, batch=16)  # doctest: +SKIP
    >>> session.step(x, labels, lr=0.01).loss       # doctest: +SKIP
    36.9
    """

    def __init__(self, graph: nx.DiGraph, device=None, batch: int = 64, params=None):
        target = Target.open(device)
        train = graph.graph["train"]
        self.plan = plan_training(graph, target.profile, train["optimizer"], train)
        self._start(graph, target, batch, graph.graph["name"] + " (training)")
        self.set_params(params if params is not None
                        else initial_params(graph, train["init"], train["seed"]))
        self.reset_optimizer()
        self.executor.allocate(batch)
        self.check_every = CHECK_EVERY
        self._good_weights = None  # device arrays of the last parameters found finite
        # the global index of this session's first image in each batch (a data-parallel
        # shard's, train/distributed.py): dropout masks follow it
        self.sample_offset = 0

    # ------------------------------------------------------------------ parameters and state

    def _to_host(self, buffer_of, keys=None) -> dict[str, np.ndarray]:
        """Download the device arrays ``buffer_of(node, key)`` names and re-lay them as
        PyTorch's (all parameters, or only ``keys``)."""
        host = {}
        for name in ordered(self.graph):
            data = self.graph.nodes[name]
            wanted = [key for (node, key) in self.plan.param_sizes
                      if node == name and (keys is None or (node, key) in keys)]
            if not wanted:
                continue
            device = {key: self.executor.download(buffer_of(name, key)) for key in wanted}
            relaid = REGISTRY[data["op"]].host_params(data, _fill(data, device),
                                                      *self._layouts(name))
            host.update({f"{name}.{key}": value for key, value in relaid.items()
                         if key in wanted})
        return host

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The current parameters (and batchnorm statistics), PyTorch-named and shaped."""
        return self._to_host(lambda node, key: buffers.param(node, key).name)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Momentum (SGD) or first and second moments (Adam), named ``<param>/<slot>``."""
        state = {}
        for slot in range(self.plan.optimizer_slots):
            part = self._to_host(lambda node, key, s=slot: buffers.state(node, key, s).name,
                                 set(self.plan.trainable))
            state.update({f"{key}/{slot}": value for key, value in part.items()})
        return state

    def reset_optimizer(self) -> None:
        zeros = {}
        for node, key in self.plan.trainable:
            count = self.plan.param_sizes[(node, key)]
            for slot in range(self.plan.optimizer_slots):
                zeros[buffers.state(node, key, slot).name] = np.zeros(count, np.float32)
            zeros[buffers.param_grad(node, key).name] = np.zeros(count, np.float32)
        zeros.update({buffers.saved(node).name: np.zeros(count, np.float32)
                      for node, count in self.plan.saved.items()})
        zeros.update({buffers.work(node, key).name: np.zeros(count, np.float32)  # padding: 0
                      for (node, key), count in self.plan.work.items()})
        self.executor.upload(zeros)

    def load_optimizer_state(self, state: dict) -> None:
        arrays = {}
        for slot in range(self.plan.optimizer_slots):
            for node, key in self.plan.trainable:
                name = f"{node}.{key}/{slot}"
                if name not in state:
                    raise DataError(f"the optimizer state lacks '{name}'.")
                data = self.graph.nodes[node]
                shape = tuple(data["param_shapes"][key])
                if tuple(np.shape(state[name])) != shape:
                    raise DataError(f"the optimizer state '{name}' has shape "
                                    f"{tuple(np.shape(state[name]))}, but its parameter has "
                                    f"{shape}.")
                relaid = REGISTRY[data["op"]].device_params(
                    data, _host_fill(data, {key: state[name]}), *self._layouts(node))
                arrays[buffers.state(node, key, slot).name] = np.asarray(relaid[key], np.float32)
        self.executor.upload(arrays)

    def step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> StepResult:
        """One optimizer step on one batch; returns its summed loss and correct count.

        Raises TrainingDiverged (before the optimizer step) when the loss is not finite, and,
        on the steps the guard checks (the first, then every ``check_every``), when a
        parameter or a gradient is not: the session then holds the last parameters found
        finite."""
        count = self._write_batch(x, labels)  # checked (and copied) before the step counts
        checking = self.begin_step()
        if checking:
            self.check_finite("weights")
        result = self._train_group(count, lr)
        self.check_loss(result)
        if checking:
            self.check_finite("gradients")
        self.optimizer_step(count=result.count, lr=lr)
        return result

    def begin_step(self) -> bool:
        """Count the step about to run; True when the guard checks weights and gradients at
        it (the first step, then every ``check_every``)."""
        self.step_count += 1
        return self._good_weights is None or (
            self.check_every > 0 and (self.step_count - 1) % self.check_every == 0)

    def forward_backward(self, x: np.ndarray, labels: np.ndarray, lr: float) -> StepResult:
        """The first half of the step begun: the forward pass, the loss and the backward pass
        (the gradients of the batch-mean loss land in the gradient buffers). A data-parallel
        run (train/distributed.py) averages the gradients across shards before
        optimizer_step."""
        return self._train_group(self._write_batch(x, labels), lr)

    def start_forward_backward(self, x: np.ndarray, labels: np.ndarray, lr: float) -> int:
        """forward_backward without waiting for it (several devices then run at once); returns
        the image count for finish_forward_backward."""
        count = self._write_batch(x, labels)
        self.executor.enqueue(count, group="train", scalars=self._scalars(lr))
        return count

    def finish_forward_backward(self, count: int) -> StepResult:
        return self._read_metrics(count)

    def _train_group(self, count: int, lr: float) -> StepResult:
        self.executor.enqueue(count, group="train", scalars=self._scalars(lr))
        return self._read_metrics(count)

    def check_loss(self, result: StepResult) -> None:
        """TrainingDiverged if the step's loss is not finite (before the optimizer step)."""
        if not math.isfinite(result.loss):
            raise TrainingDiverged(
                f"the loss became {result.loss} at step {self.step_count}"
                f"{self._first_non_finite(result.count)}; training stopped before the "
                "optimizer step could spread it.",
                hint="lower the learning rate (--lr), add batchnorm, or check the data "
                     "normalisation; the last checkpoint is kept.")

    def optimizer_step(self, count: int, lr: float) -> None:
        """The second half of a step: one optimizer kernel per trainable parameter."""
        self.executor.enqueue(max(count, 1), group="step", scalars=self._scalars(lr))

    def check_finite(self, kind: str = "weights") -> None:
        """Download every parameter (``kind`` 'weights') or every trainable parameter's
        gradient ('gradients') and raise TrainingDiverged naming the first layer, in forward
        order, that holds a NaN or an infinity. Finite weights are kept as the last good
        ones; on a failure the session is given them back, so what is read from it (and
        saved) afterwards is never non-finite."""
        if kind == "weights":
            pairs = list(self.plan.param_sizes)
            buffer_of = buffers.param
        else:
            pairs = list(self.plan.trainable)
            buffer_of = buffers.param_grad
        order = {name: index for index, name in enumerate(ordered(self.graph))}
        arrays = {}
        for node, key in sorted(pairs, key=lambda pair: order.get(pair[0], 0)):
            name = buffer_of(node, key).name
            values = self.executor.download(name)
            if not np.all(np.isfinite(values)):
                bad = int(np.count_nonzero(~np.isfinite(values)))
                self.restore_good_weights()
                raise TrainingDiverged(
                    f"the {kind} of layer '{node}' ({node}.{key}: {bad:,} of {values.size:,} "
                    f"values) became NaN or infinite by step {self.step_count}, though the "
                    "loss stayed finite; training stopped"
                    + (" before the optimizer step could apply them" if kind == "gradients"
                       else "") + ".",
                    hint="check the data for NaN or infinite values, lower the learning rate "
                         "(--lr) or add batchnorm; the last good checkpoint is kept.")
            arrays[name] = values
        if kind == "weights":
            self._good_weights = arrays

    def restore_good_weights(self) -> None:
        """Put back the parameters the last weights check found finite (if there was one)."""
        if getattr(self, "_good_weights", None):
            self.executor.upload(self._good_weights)

    def gradients(self, x: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
        """Run the forward and backward passes without an optimizer step (batchnorm's running
        statistics still move), and return the gradient of every node's output and of every
        trainable parameter, PyTorch-shaped: what tests and --verify compare with numpy."""
        count = self._write_batch(x, labels)
        self.step_count += 1
        self.executor.enqueue(count, group="train", scalars=self._scalars(1.0))
        names = ordered(self.graph)
        last = max(i for i, n in enumerate(names) if self.plan.storage_of[n] == self.plan.logits)
        grads = {name: self.executor.read_tensor(self.plan.storage_of[name], count, "grad")
                 for name in names[1:last + 1]
                 if not self.graph.nodes[name].get("fused_into")}  # none past the logits
        param_grads = self._to_host(lambda node, key: buffers.param_grad(node, key).name,
                                    set(self.plan.trainable))
        return grads, param_grads

    def dropout_seed(self) -> int:
        """The dropout seed of the current step (the kernels add a per-layer salt)."""
        return int((self.train["seed"] * 1_000_003 + self.step_count * 7_919) % 2**32)

    def _scalars(self, lr: float) -> dict:
        beta1, beta2 = self.train["betas"]
        return {"seed": np.uint32(self.dropout_seed()), "lr": np.float32(lr),
                "sample_offset": np.uint32(self.sample_offset),
                "correction1": np.float32(1.0 - beta1 ** self.step_count),
                "correction2": np.float32(1.0 - beta2 ** self.step_count)}

    def _first_non_finite(self, count: int) -> str:
        """Which layer's values went non-finite first, in forward order, for the message."""
        for name in ordered(self.graph):
            storage = self.plan.storage_of[name]
            values = self.executor.read_tensor(storage, count)
            if not np.all(np.isfinite(values)):
                return f" (the first non-finite values are the output of layer '{name}')"
        for name in reversed(ordered(self.graph)):
            storage = self.plan.storage_of[name]
            values = self.executor.read_tensor(storage, count, kind="grad")
            if not np.all(np.isfinite(values)):
                return f" (the first non-finite gradient is that of layer '{name}')"
        return ""


def _fill(data: dict, device: dict) -> dict:
    """host_params wants every key the op has; absent ones (not downloaded) are zeros."""
    full = dict(device)
    for key in data["param_shapes"]:
        full.setdefault(key, np.zeros(1, np.float32))
    for key in data["buffer_shapes"]:
        full.setdefault(key, np.zeros(1, np.float32))
    return full


def _host_fill(data: dict, given: dict) -> dict:
    """device_params wants every parameter; the ones not given are zeros of their shape."""
    full = {key: np.zeros(shape, np.float32)
            for key, shape in {**data["param_shapes"], **data["buffer_shapes"]}.items()}
    full.update(given)
    return full
