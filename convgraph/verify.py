"""`convgraph run --verify`: every generated kernel checked on the device against numpy.

verify_model runs one batch with every tensor kept, then checks each kernel's output against the
numpy reference computed from the *device's own inputs* to that layer, so an error is pinned to
the kernel that made it; verify_training does the same for the backward kernels of one training
step. This sits above the runtime and training (it drives a Model and a TrainingSession), so it
is a module of its own and runtime/ never imports training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY
from convgraph.reference import node_params

TOLERANCE = 1e-4  # max |device - reference| / max |reference|, float32 against float64


def relative_error(value: np.ndarray, reference: np.ndarray, floor: float = 0.0) -> float:
    """The error metric of every kernel check: max absolute error over the largest magnitude
    (at least ``floor``: a parameter's gradient is judged against the largest of its layer's,
    since one that is zero by construction -- a conv's bias before a batchnorm -- has only
    rounding noise to be measured against)."""
    value = np.asarray(value, np.float64)
    reference = np.asarray(reference, np.float64)
    if value.shape != reference.shape:
        raise ValueError(f"shapes differ: {value.shape} vs {reference.shape}")
    if not np.all(np.isfinite(value)):
        return float("inf")
    scale = max(float(np.abs(reference).max(initial=0.0)), floor, 1e-30)
    return float(np.abs(value - reference).max(initial=0.0)) / scale


@dataclass
class Check:
    node: str
    op: str
    kernels: list[str]
    error: float

    @property
    def passed(self) -> bool:
        return self.error <= TOLERANCE


def random_params(model, seed: int = 0) -> dict:
    """Parameters with nothing left at a trivial value: random biases and batchnorm statistics."""
    rng = np.random.default_rng(seed)
    params = model.params
    for key, value in params.items():
        field = key.rsplit(".", 1)[1]
        if field == "running_var":
            params[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif field in ("bias", "running_mean") or (field == "weight" and value.ndim == 1):
            params[key] = rng.normal(0.0, 0.5, value.shape).astype(np.float32)
    return params


def verify_model(model, batch: int | None = None, seed: int = 0) -> list[Check]:
    """Every kernel of ``model`` (compiled with share_buffers=False) against numpy, per layer,
    on ``batch`` images (default: 2, or 1 for a model planned for one: its buffers hold no more)."""
    graph, plan, executor = model.graph, model.plan, model.executor
    batch = min(2, model.batch) if batch is None else batch
    rng = np.random.default_rng(seed)
    volume = graph.nodes[ordered(graph)[0]]["output"]
    x = rng.normal(size=(batch, volume.depth, volume.height, volume.width)).astype(np.float32)
    params = random_params(model, seed)
    model.set_params(params)
    model.forward(x)
    kernels_of: dict[str, list[str]] = {}
    for launch in plan.launches:
        kernels_of.setdefault(launch.node, [])
        if launch.kernel not in kernels_of[launch.node]:
            kernels_of[launch.node].append(launch.kernel)
    checks = []
    for name in ordered(graph):
        if name not in kernels_of:
            continue
        data = graph.nodes[name]
        inputs = [executor.read_tensor(plan.storage_of[source], batch) for source in data["inputs"]]
        expected = REGISTRY[data["op"]].reference(data, inputs, node_params(params, name))
        if data.get("epilogue"):
            fused = graph.nodes[data["epilogue"]]
            expected = REGISTRY[fused["op"]].reference(fused, [expected], {})
        value = executor.read_tensor(plan.storage_of[name], batch)
        op = data["op"] + (f"+{graph.nodes[data['epilogue']]['op']}" if data.get("epilogue")
                           else "")
        checks.append(Check(name, op, kernels_of[name], relative_error(value, expected)))
    return checks


def verify_training(graph, device=None, batch: int = 2, seed: int = 0) -> list[Check]:
    """Every backward kernel of one training step: the loss kernel's gradient of the device's own
    logits, then each layer's gradients from the device's own activations and output gradient
    (verify_training_locally). ``device``: a selector or a Target (a model's, to check on its
    context with its profile).

    Layer by layer, as verify_model: a whole-network float64 comparison measures float32
    rounding compounded through a deep network, not the kernels (MobileNetV2 at 224x224 read
    errors up to 1.3 over 256 gradients whose kernels are each right to 1e-4)."""
    from convgraph.train.session import TrainingSession

    session = TrainingSession(graph, device=device, batch=batch)
    rng = np.random.default_rng(seed)
    session.set_params(random_params(session, seed))
    volume = graph.nodes[ordered(graph)[0]]["output"]
    x = rng.normal(size=(batch, volume.depth, volume.height, volume.width)).astype(np.float32)
    labels = random_labels(session.plan, batch, rng, session.ignore_label)
    checks = verify_training_locally(session, x, labels)
    return [_loss_check(session, labels)] + checks


def _loss_check(session, labels) -> Check:
    """The loss kernel's gradient (of the logits it read this step: class scores, or a score
    per pixel) against float64."""
    from convgraph.reference import loss_and_gradient

    plan = session.plan
    names = [n for n in ordered(session.graph) if plan.storage_of[n] == plan.logits]
    logits = session.executor.read_tensor(plan.logits, len(labels)).astype(np.float64)
    grad = session.executor.read_tensor(plan.logits, len(labels), "grad")
    smoothing = session.graph.graph["train"]["label_smoothing"]
    expected = loss_and_gradient(logits, labels, smoothing, session.ignore_label)[2]
    kernels = _train_kernels(session).get(names[-1], [])
    return Check(f"d {names[-1]}", session.graph.nodes[names[-1]]["op"], kernels,
                 relative_error(grad, expected))


def _train_kernels(session) -> dict[str, list[str]]:
    """{node: its kernels in the training step, in launch order}."""
    kernels_of: dict[str, list[str]] = {}
    for launch in session.plan.groups["train"]:
        if launch.kernel not in kernels_of.setdefault(launch.node, []):
            kernels_of[launch.node].append(launch.kernel)
    return kernels_of


def random_labels(plan, batch: int, rng, ignore_label: int = 255) -> np.ndarray:
    """Labels for a check step: a class per image, or for a per-pixel loss (batch, H, W) masks
    with about one pixel in eight ignored (so the ignore path is checked too)."""
    if not plan.segmentation:
        return rng.integers(0, plan.classes, batch)
    volume = plan.layouts[plan.logits].volume
    masks = rng.integers(0, plan.classes, (batch, volume.height, volume.width))
    masks[rng.random(masks.shape) < 0.125] = ignore_label
    return masks


def layer_scale(param_grads: dict, node: str) -> float:
    """The largest magnitude among ``node``'s parameter gradients (``<node>.<key>`` keys)."""
    return max((float(np.abs(g).max(initial=0.0)) for key, g in param_grads.items()
                if key.rsplit(".", 1)[0] == node), default=0.0)


def verify_training_locally(session, x, labels) -> list[Check]:
    """Every layer's backward kernels on their own: after one device step's forward and
    backward passes, each layer's parameter gradients and each input gradient (the sum of its
    readers' parts, for an input several layers read: a residual's) are recomputed in float64
    from the device's own activations and output gradients, so rounding does not build up
    through deep networks as in a whole-network comparison."""
    graph, plan = session.graph, session.plan
    count = x.shape[0]
    grads, param_grads = session.gradients(x, labels)
    params = session.params
    value = {}

    def activation(name):
        storage = plan.storage_of[name]
        if storage not in value:
            value[storage] = session.executor.read_tensor(storage, count)
        return value[storage]

    kernels_of = _train_kernels(session)
    checks = []
    # an input gradient is the sum of its readers' parts: each reader's part is added here,
    # and the sum is judged once the last reader has added its own
    pending = {}  # storage -> _InputGradient
    for name in ordered(graph):
        data = graph.nodes[name]
        if name not in grads or not data["inputs"] or plan.storage_of[name] != name:
            continue
        op = REGISTRY[data["op"]]
        inputs = [activation(source) for source in data["inputs"]]
        d_inputs, d_params = op.reference_backward(
            data, inputs, activation(name), grads[name].astype(np.float64),
            node_params(params, name), session.dropout_seed())
        floor = max((float(np.abs(g).max(initial=0.0)) for g in d_params.values()), default=0.0)
        for key, expected in d_params.items():
            if f"{name}.{key}" in param_grads:
                checks.append(Check(f"d {name}.{key}", data["op"], kernels_of.get(name, []),
                                    relative_error(param_grads[f"{name}.{key}"], expected,
                                                   floor)))
        for source, expected in zip(data["inputs"], d_inputs):
            if source not in grads:
                continue
            storage = plan.storage_of[source]
            if storage not in pending:
                pending[storage] = _InputGradient(source, _gradient_readers(graph, plan, storage))
            entry = pending[storage]
            entry.add(name, data["op"], expected, kernels_of.get(name, []))
            if entry.complete:  # every reader's part is in
                checks.append(_input_gradient_check(graph, plan, activation, grads, entry))
    return checks


@dataclass
class _InputGradient:
    """An input gradient being summed from its readers' parts (verify_training_locally)."""

    source: str
    readers_left: set[str] | None  # None: a reader the check cannot recompute, never judged
    expected: np.ndarray | float = 0.0
    ops: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)

    def add(self, reader: str, op: str, part: np.ndarray, kernels: list[str]) -> None:
        self.expected = self.expected + part
        if self.readers_left is not None:
            self.readers_left.discard(reader)
        self.ops.append(op)
        self.kernels.extend(k for k in kernels if k not in self.kernels)

    @property
    def complete(self) -> bool:
        return self.readers_left is not None and not self.readers_left


def _gradient_readers(graph, plan, storage: str) -> set[str] | None:
    """The layers whose backward passes add into the gradient of ``storage``, or None where one
    of them is an alias of another storage, which the check cannot recompute."""
    readers = {n for n in graph
               if storage in (plan.storage_of[i] for i in graph.nodes[n]["inputs"])}
    if any(plan.storage_of[n] != n for n in readers):
        return None
    return readers


def _input_gradient_check(graph, plan, activation, grads, entry: _InputGradient) -> Check:
    source, expected, ops = entry.source, entry.expected, entry.ops
    producer = graph.nodes[plan.storage_of[source]]
    if producer.get("epilogue"):  # converted in place by the fused activation (linear in dy)
        fused = graph.nodes[producer["epilogue"]]
        expected = REGISTRY[fused["op"]].reference_backward(
            fused, [None], activation(source), expected, {}, 0)[0][0]
    op = ops[0] if len(set(ops)) == 1 else "+".join(dict.fromkeys(ops))
    return Check(f"d {source}", op, entry.kernels, relative_error(grads[source], expected))
