"""Planning a training step: forward (training mode), loss, backward, optimizer, all on the device.

Every tensor keeps its own buffer (the backward pass reads the forward activations), with a
gradient buffer of the same layout. Walking the graph backwards, each op lowers its gradient
kernels (ops/ ``lower_backward``); the first consumer of a tensor to run writes its gradient and
the others add to it, decided here at plan time. An activation fused into a conv, fc or batchnorm
is differentiated in place, from the stored output, just before that layer's own backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from convgraph.codegen.layout import Layout, channel_stride
from convgraph.codegen.plan import ACTIVATION_CODES, KernelSpec, Launch, Lowering, _Planner
from convgraph.codegen.profile import DeviceProfile
from convgraph.errors import SpecError
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY

TRAINABLE = {"conv": ("weight", "bias"), "fc": ("weight", "bias"), "batchnorm": ("weight", "bias")}


@dataclass
class TrainingPlan:
    storage_of: dict[str, str]
    layouts: dict[str, Layout]
    kernels: dict[str, KernelSpec]
    groups: dict[str, list[Launch]]  # train (forward + loss + backward), step, evaluate
    input: str
    logits: str  # the storage the loss reads
    classes: int
    trainable: list[tuple[str, str]]  # (node, key) with gradients and optimizer state
    param_sizes: dict[tuple[str, str], int]  # elements of every device parameter
    saved: dict[str, int] = field(default_factory=dict)  # batchnorm node -> saved stat elements
    optimizer_slots: int = 1
    scratch: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # (node, key) -> (elements per split, images per split): partial sums split over the batch
    work: dict[tuple[str, str], int] = field(default_factory=dict)  # fixed scratch, elements
    sites: dict = field(default_factory=dict)  # tunable kernel sites by key (codegen/tuning.py)

    # the interface the Executor reads
    def launch_groups(self) -> dict[str, list[Launch]]:
        return self.groups

    def buffer_sizes(self, batch: int) -> dict[str, int]:
        sizes = {}
        for storage, layout in self.layouts.items():
            sizes[f"act:{storage}"] = layout.bytes_for(batch)
            sizes[f"grad:{storage}"] = layout.bytes_for(batch)
        sizes.update({"labels": 4 * batch, "losses": 4 * batch, "correct": 4 * batch})
        for (node, key), (elements, images) in self.scratch.items():
            sizes[f"scratch:{node}:{key}"] = 4 * elements * -(-batch // images)
        return sizes

    def fixed_sizes(self) -> dict[str, int]:
        """Bytes of the buffers that do not depend on the batch."""
        sizes = {f"param:{n}:{k}": 4 * c for (n, k), c in self.param_sizes.items()}
        for node, key in self.trainable:
            count = 4 * self.param_sizes[(node, key)]
            sizes[f"pgrad:{node}:{key}"] = count
            for slot in range(self.optimizer_slots):
                sizes[f"state:{node}:{key}:{slot}"] = count
        sizes.update({f"saved:{node}": 4 * count for node, count in self.saved.items()})
        sizes.update({f"work:{node}:{key}": 4 * count for (node, key), count in self.work.items()})
        return sizes

    def buffer_name(self, arg: tuple) -> str | None:
        kind = arg[0]
        if kind == "tensor":
            return f"act:{arg[1]}"
        if kind == "grad":
            return f"grad:{arg[1]}"
        if kind in ("param", "pgrad", "scratch", "work"):
            return f"{kind}:{arg[1]}:{arg[2]}"
        if kind == "state":
            return f"state:{arg[1]}:{arg[2]}:{arg[3]}"
        if kind == "saved":
            return f"saved:{arg[1]}"
        if kind in ("labels", "losses", "correct"):
            return kind
        return None

    def layout_of(self, node: str) -> Layout:
        return self.layouts[self.storage_of[node]]


class TrainLowering(Lowering):
    """Lowering for training: adds gradient buffers and whether to add to them."""

    def __init__(self, planner: _TrainingPlanner, name: str):
        super().__init__(planner, name)
        self.training = planner

    @property
    def output_grad(self) -> tuple:
        return ("grad", self.output_storage)

    def needs_grad(self, slot: int = 0) -> bool:
        return self.input_storage(slot) != self.training.input_storage

    def input_grad(self, slot: int = 0) -> tuple[tuple, int]:
        """The gradient buffer of input ``slot`` and 1 if this launch must add to it."""
        storage = self.input_storage(slot)
        accumulate = int(storage in self.training.written)
        self.training.written.add(storage)
        return ("grad", storage), accumulate

    def input_gate(self, accumulate: int) -> tuple[str, float, tuple] | None:
        """The activation fused into the layer before this one, for this node's input-gradient
        kernel to differentiate as it writes (ACT name, slope, the activation's stored output),
        sparing that layer a pass over the whole tensor; None unless that gradient is whole
        once this kernel writes it: the first writer, and the activation's only consumer."""
        graph = self.planner.graph
        source = self.node["inputs"][0]
        producer = graph.nodes[source].get("fused_into")
        if (accumulate or not producer or graph.nodes[producer].get("epilogue") != source
                or list(graph.successors(source)) != [self.name]
                or list(graph.successors(producer)) != [source]):
            return None
        self.training.gated.add(producer)
        data = graph.nodes[source]
        return (ACTIVATION_CODES[data["op"]], float(data["attrs"].get("slope", 0.0)),
                ("tensor", self.input_storage()))

    def saved(self) -> tuple:
        self.training.saved[self.name] = 2 * self.output_layout.stride_c
        return ("saved", self.name)

    def param_elements(self, key: str) -> int:
        return self.training.param_sizes[(self.name, key)]

    def split_sum(self, key: str, images: int | None = None) -> tuple[tuple, int]:
        """A scratch buffer for partial sums of parameter ``key`` over splits of the batch of
        ``images`` each (the profile's default), and the images per split; call sum_splits
        afterwards to add them into its gradient."""
        return self.split_scratch(key, self.param_elements(key), images)

    def split_scratch(self, key: str, elements: int, images: int | None = None
                      ) -> tuple[tuple, int]:
        """A scratch buffer of ``elements`` per split of the batch (``images`` each)."""
        images = images or self.profile.images_per_split
        self.training.scratch[(self.name, key)] = (elements, images)
        return ("scratch", self.name, key), images

    def channel_split_launch(self, family: str, selector: str, layouts: dict, args: list,
                             images: int, defines: dict | None = None) -> None:
        """A per-channel reduction split over the batch: work-item (channel vector, split)
        covers ``images`` images. One work-item per channel vector left the second core idle
        and one core summing a whole tensor (16 channels: one work-item)."""
        first = next(iter(layouts.values()))
        width = self.vector_width(*layouts.values())
        every = {"HEIGHT": first.volume.height, "WIDTH": first.volume.width,
                 "CHANNEL_VECTORS": first.stride_c // width, "VECTOR_WIDTH": width,
                 "IMAGES_PER_SPLIT": images}
        for prefix, layout in layouts.items():
            every.update(layout.defines(prefix))
        every.update(defines or {})
        self.launch(family, selector, every, (first.stride_c // width, 1), 1, args,
                    batch_divisor=images)

    def work_buffer(self, key: str, elements: int) -> tuple:
        """A batch-independent scratch buffer of this node (e.g. re-laid weights)."""
        self.training.work[(self.name, key)] = elements
        return ("work", self.name, key)

    def sum_splits(self, key: str, site: str | None = None) -> None:
        """Add the partial sums of ``key`` into its gradient; ``site``: the tuning site whose
        split this is, so the tuner times the sum with the kernel (fewer images per split is
        a faster kernel but a longer sum)."""
        elements = self.param_elements(key)
        images = self.training.scratch[(self.name, key)][1]
        self.launch("reduction", "SUM_SPLITS",
                    {"ELEMENTS": elements, "IMAGES_PER_SPLIT": images},
                    (elements,), None,
                    [("scratch", self.name, key), ("pgrad", self.name, key), ("batch",)],
                    site=site)


class _TrainingPlanner(_Planner):
    def __init__(self, graph, profile, param_sizes):
        super().__init__(graph, profile)
        self.param_sizes = param_sizes
        self.written: set[str] = set()
        self.saved: dict[str, int] = {}
        self.gated: set[str] = set()  # layers whose fused activation a consumer differentiates
        self.scratch: dict[tuple[str, str], tuple[int, int]] = {}
        self.work: dict[tuple[str, str], int] = {}
        self.input_storage = ""


def param_sizes(graph: nx.DiGraph, layouts_of) -> dict[tuple[str, str], int]:
    """Elements of every device parameter, from each op's own re-layout of zero arrays."""
    sizes = {}
    for name in ordered(graph):
        data = graph.nodes[name]
        shapes = {**data["param_shapes"], **data["buffer_shapes"]}
        if not shapes:
            continue
        zeros = {key: np.zeros(shape, np.float32) for key, shape in shapes.items()}
        inputs = data["inputs"]
        relaid = REGISTRY[data["op"]].device_params(
            data, zeros, layouts_of(inputs[0]) if inputs else None, layouts_of(name))
        sizes.update({(name, key): int(np.asarray(value).size) for key, value in relaid.items()})
    return sizes


def plan_training(graph: nx.DiGraph, profile: DeviceProfile, optimizer: str = "sgd",
                  train: dict | None = None) -> TrainingPlan:
    """The kernels and launches of one training step, and of evaluation, for ``graph``."""
    train = train or graph.graph["train"]
    names = ordered(graph)
    planner = _TrainingPlanner(graph, profile, {})
    for name in names:
        data = graph.nodes[name]
        if data.get("fused_into"):  # fused activations and flattens read by fc share storage
            planner.storage_of[name] = planner.storage_of[data["inputs"][0]]
        else:
            planner.storage_of[name] = name
            planner.layouts[name] = Layout(data["output"], channel_stride(data["output"].depth))
    for name in names:
        data = graph.nodes[name]
        if data.get("fused_into") or not data["inputs"]:
            continue
        need = REGISTRY[data["op"]].input_halo(data, graph.nodes[data["inputs"][0]]["output"])
        if need is not None:
            source = planner.storage_of[data["inputs"][0]]
            planner.layouts[source] = planner.layouts[source].with_halo(need)
        need = REGISTRY[data["op"]].output_grad_halo(data)  # the gradient shares the layout
        if need is not None:
            planner.layouts[name] = planner.layouts[name].with_halo(need)
    planner.param_sizes = param_sizes(
        graph, lambda n: planner.layouts[planner.storage_of[n]])
    planner.input_storage = planner.storage_of[names[0]]
    logits_node = _logits_node(graph)
    logits = planner.storage_of[logits_node]
    work = [n for n in names if not graph.nodes[n].get("fused_into")]

    groups: dict[str, list[Launch]] = {}
    planner.launches = []
    for name in work:  # evaluation: inference kernels, dropout as a copy; then the loss
        if names.index(name) > names.index(logits_node):
            break
        op = REGISTRY[graph.nodes[name]["op"]]
        (op.lower_eval if hasattr(op, "lower_eval") else op.lower)(TrainLowering(planner, name))
    _lower_loss(planner, logits_node, logits, train)
    groups["evaluate"] = planner.launches

    planner.launches = []
    planner.written = set()
    for name in work:
        if names.index(name) > names.index(logits_node):
            break
        REGISTRY[graph.nodes[name]["op"]].lower_train(TrainLowering(planner, name))
    _lower_loss(planner, logits_node, logits, train)
    for name in reversed(work):
        if names.index(name) > names.index(logits_node) or name == names[0]:
            continue
        ctx = TrainLowering(planner, name)
        _lower_epilogue_backward(ctx)
        REGISTRY[graph.nodes[name]["op"]].lower_backward(ctx)
    groups["train"] = planner.launches

    trainable = [(node, key) for node, key in planner.param_sizes
                 if key in TRAINABLE.get(graph.nodes[node]["op"], ())
                 and (key != "bias" or graph.nodes[node]["attrs"].get("bias", True))]
    planner.launches = []
    for node, key in trainable:
        _lower_optimizer(planner, node, key, optimizer, train)
    groups["step"] = planner.launches
    classes = graph.nodes[logits_node]["output"].depth
    return TrainingPlan(planner.storage_of, planner.layouts, planner.kernels, groups,
                        planner.input_storage, logits, classes, trainable, planner.param_sizes,
                        planner.saved, 2 if optimizer in ("adam", "adamw") else 1,
                        planner.scratch, planner.work, planner.sites)


def _logits_node(graph: nx.DiGraph) -> str:
    """The node whose output the loss reads: the output, or the input of a final softmax."""
    output = graph.graph["output"]
    data = graph.nodes[output]
    if data["op"] == "softmax":
        output = data["inputs"][0]
        data = graph.nodes[output]
    volume = data["output"]
    if volume.width != 1 or volume.height != 1:
        raise SpecError(
            f"training needs class scores (a 1x1xD output), but '{output}' outputs {volume}.",
            location=data["layer"].location, layer=output,
            hint="end the network with fc (or gap) to one score per class.")
    return output


def _lower_loss(planner: _TrainingPlanner, node: str, logits: str, train: dict) -> None:
    layout = planner.layouts[logits]
    ctx = TrainLowering(planner, node)
    planner.written.add(logits)
    ctx.launch("reduction", "SOFTMAX_CROSS_ENTROPY",
               {"CHANNELS": layout.volume.depth, "SMOOTHING": float(train["label_smoothing"]),
                **layout.defines("X")},
               (1,), 0, [("tensor", logits), ("labels",), ("grad", logits), ("losses",),
                         ("correct",), ("batch",)])


def _lower_epilogue_backward(ctx: TrainLowering) -> None:
    """dL/dz = f'(y) dL/dy in place, for an activation fused into this node."""
    fused = ctx.node.get("epilogue")
    if not fused or ctx.name in ctx.training.gated:
        return
    data = ctx.planner.graph.nodes[fused]
    layout = ctx.output_layout
    ctx.pixel_launch("elementwise", "ACTIVATION_BACKWARD", {"Y": layout, "X": layout},
                     [("tensor", ctx.output_storage), ctx.output_grad, ctx.output_grad],
                     {"ACTIVATION": ACTIVATION_CODES[data["op"]],
                      "SLOPE": float(data["attrs"].get("slope", 0.0)), "ACCUMULATE": 0})


def _lower_optimizer(planner, node: str, key: str, optimizer: str, train: dict) -> None:
    count = planner.param_sizes[(node, key)]
    ctx = TrainLowering(planner, node)
    defines = {"COUNT": count, "WEIGHT_DECAY": float(train["weight_decay"])}
    target = [("param", node, key), ("pgrad", node, key)]
    if optimizer == "sgd":
        defines.update({"MOMENTUM": float(train["momentum"]),
                        "NESTEROV": int(train["nesterov"])})
        ctx.launch("optim", "SGD_STEP", defines, (count,), None,
                   target + [("state", node, key, 0), ("lr",)])
    else:
        beta1, beta2 = train["betas"]
        defines.update({"BETA1": float(beta1), "BETA2": float(beta2),
                        "DECOUPLED": int(optimizer == "adamw"), "ADAM_EPSILON": 1e-8})
        ctx.launch("optim", "ADAM_STEP", defines, (count,), None,
                   target + [("state", node, key, 0), ("state", node, key, 1), ("lr",),
                             ("correction1",), ("correction2",)])


def channel_sum(ctx: TrainLowering, grad: tuple, layout: Layout, target: tuple) -> None:
    """target = dy summed over images and pixels, per channel (bias gradients): partial sums
    over splits of the batch, then added up."""
    _, node, key = target
    partial, images = ctx.split_sum(key)
    ctx.channel_split_launch("reduction", "CHANNEL_SUM", {"Y": layout},
                             [grad, partial, ("batch",)], images,
                             {"CHANNELS": layout.volume.depth,
                              "ELEMENTS": ctx.param_elements(key)})
    ctx.sum_splits(key)
