"""A network being trained on one device: parameters, gradients and optimizer state stay there.

A step uploads one batch (images and labels), enqueues the training-mode forward pass, the loss,
the backward pass and the optimizer step back to back, and reads back only the batch's summed
loss and number of correct answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np

from convgraph.codegen.profile import profile_for
from convgraph.codegen.source import program_source
from convgraph.codegen.training import TrainingPlan, plan_training
from convgraph.errors import DataError, TrainingDiverged
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY
from convgraph.params import check_params, initial_params, to_device_layouts
from convgraph.runtime.devices import select_device
from convgraph.runtime.executor import Executor, check_memory
from convgraph.runtime.program import build_program


@dataclass
class StepResult:
    loss: float  # summed over the batch
    correct: float
    count: int


class TrainingSession:
    """Compile ``graph`` for training on a device and hold its state there."""

    def __init__(self, graph: nx.DiGraph, device: str | None = None, batch: int = 64):
        import pyopencl as cl

        self.graph = graph
        self.train = dict(graph.graph["train"])
        self.info, self.device = select_device(device)
        self.profile = profile_for(self.info)
        self.plan: TrainingPlan = plan_training(graph, self.profile, self.train["optimizer"],
                                                self.train)
        fixed = sum(self.plan.fixed_sizes().values())
        check_memory(self.info, self.plan, batch, fixed)  # before building or allocating
        self.source = program_source(self.plan, graph.graph["name"] + " (training)")
        self.context = cl.Context([self.device])
        self.queue = cl.CommandQueue(
            self.context, self.device, properties=cl.command_queue_properties.PROFILING_ENABLE)
        self.build = build_program(self.context, self.device, self.info, self.source,
                                   list(self.profile.build_options))
        self.batch = batch
        self.executor = Executor(self.context, self.queue, self.device, self.info, self.plan,
                                 self.build.program)
        self.step_count = 0
        self.set_params(initial_params(graph, self.train["init"], self.train["seed"]))
        self.reset_optimizer()
        self.executor.allocate(batch)

    # ------------------------------------------------------------------ parameters and state

    def _layouts(self, name: str):
        inputs = self.graph.nodes[name]["inputs"]
        return (self.plan.layout_of(inputs[0]) if inputs else None, self.plan.layout_of(name))

    def set_params(self, params: dict) -> None:
        check_params(self.graph, params)
        arrays = {f"param:{name}:{key}": value for (name, key), value
                  in to_device_layouts(self.graph, params, self.plan.layout_of).items()}
        self.executor.upload(arrays)

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
        return self._to_host(lambda node, key: f"param:{node}:{key}")

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Momentum (SGD) or first and second moments (Adam), named ``<param>/<slot>``."""
        state = {}
        for slot in range(self.plan.optimizer_slots):
            part = self._to_host(lambda node, key, s=slot: f"state:{node}:{key}:{s}",
                                 set(self.plan.trainable))
            state.update({f"{key}/{slot}": value for key, value in part.items()})
        return state

    def reset_optimizer(self) -> None:
        zeros = {}
        for node, key in self.plan.trainable:
            count = self.plan.param_sizes[(node, key)]
            for slot in range(self.plan.optimizer_slots):
                zeros[f"state:{node}:{key}:{slot}"] = np.zeros(count, np.float32)
            zeros[f"pgrad:{node}:{key}"] = np.zeros(count, np.float32)
        zeros.update({f"saved:{node}": np.zeros(count, np.float32)
                      for node, count in self.plan.saved.items()})
        zeros.update({f"work:{node}:{key}": np.zeros(count, np.float32)  # padding stays zero
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
                relaid = REGISTRY[data["op"]].device_params(
                    data, _host_fill(data, {key: state[name]}), *self._layouts(node))
                arrays[f"state:{node}:{key}:{slot}"] = np.asarray(relaid[key], np.float32)
        self.executor.upload(arrays)

    def device_memory(self) -> int:
        """Bytes held on the device: parameters, gradients, optimizer state, activations."""
        return (sum(self.plan.fixed_sizes().values())
                + sum(self.plan.buffer_sizes(self.batch).values()))

    # ------------------------------------------------------------------ running

    def _write_batch(self, x: np.ndarray, labels: np.ndarray | None) -> int:
        count = x.shape[0]
        if count > self.batch:
            raise DataError(f"a batch of {count} images is larger than the planned {self.batch}.")
        # the last batch's copy has finished (every step ends with a blocking read)
        self._staging = self.plan.layouts[self.plan.input].pack(x, getattr(self, "_staging", None))
        self.executor.write(f"act:{self.plan.input}", self._staging)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.min(initial=0) < 0 or labels.max(initial=0) >= self.plan.classes:
                raise DataError(f"labels must lie in [0, {self.plan.classes}), got "
                                f"{labels.min()}..{labels.max()}.")
            self._labels = np.ascontiguousarray(labels, np.int32)
            self.executor.write("labels", self._labels)
        return count

    def _read_metrics(self, count: int) -> StepResult:
        losses = self.executor.read("losses", np.empty(self.batch, np.float32))
        correct = self.executor.read("correct", np.empty(self.batch, np.float32))
        return StepResult(float(losses[:count].sum(dtype=np.float64)),
                          float(correct[:count].sum()), count)

    def step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> StepResult:
        """One optimizer step on one batch; returns its summed loss and correct count."""
        count = self._write_batch(x, labels)
        self.step_count += 1
        scalars = self._scalars(lr)
        self.executor.enqueue(count, group="train", scalars=scalars)
        result = self._read_metrics(count)
        if not math.isfinite(result.loss):
            raise TrainingDiverged(
                f"the loss became {result.loss} at step {self.step_count}"
                f"{self._first_non_finite(count)}; training stopped before the optimizer "
                "step could spread it.",
                hint="lower the learning rate (--lr), add batchnorm, or check the data "
                     "normalisation; the last checkpoint is kept.")
        self.executor.enqueue(count, group="step", scalars=scalars)
        return result

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
        param_grads = self._to_host(lambda node, key: f"pgrad:{node}:{key}",
                                    set(self.plan.trainable))
        return grads, param_grads

    def dropout_seed(self) -> int:
        """The dropout seed of the current step (the kernels add a per-layer salt)."""
        return int((self.train["seed"] * 1_000_003 + self.step_count * 7_919) % 2**32)

    def _scalars(self, lr: float) -> dict:
        beta1, beta2 = self.train["betas"]
        return {"seed": np.uint32(self.dropout_seed()), "lr": np.float32(lr),
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

    def evaluate_batch(self, x: np.ndarray, labels: np.ndarray) -> StepResult:
        """Loss and correct count of one batch in inference mode (running statistics)."""
        count = self._write_batch(x, labels)
        self.executor.enqueue(count, group="evaluate")  # ends with the loss
        return self._read_metrics(count)

    def last_predictions(self, count: int) -> np.ndarray:
        """The top class of each image of the last evaluated batch."""
        logits = self.executor.read_tensor(self.plan.logits, count)
        return logits.reshape(count, -1).argmax(axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        count = self._write_batch(x, np.zeros(x.shape[0], np.int32))
        self.executor.enqueue(count, group="evaluate")
        return self.executor.read_tensor(self.plan.logits, count).reshape(count, -1)


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
