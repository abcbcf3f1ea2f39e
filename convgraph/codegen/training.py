"""Planning a training step: forward (training mode), loss, backward, optimizer, all on the device.

Every tensor keeps its own buffer (the backward pass reads the forward activations), with a
gradient buffer of the same layout. Walking the graph backwards, each op lowers its gradient
kernels (ops/ ``lower_backward``); the first consumer of a tensor to run writes its gradient and
the others add to it, decided here at plan time. An activation fused into a conv, fc or batchnorm
is differentiated in place, from the stored output, just before that layer's own backward. One
whose derivative needs its input (``derivative_from = "input"``: hardswish, silu, gelu) is not
fused in training: it runs on its own, so the layer before it keeps its output, the activation's
input (storing it from a fused kernel would cost the same memory and a second output per kernel).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from convgraph.codegen.launches import (
    CORRECT,
    CORRECTION1,
    CORRECTION2,
    LABELS,
    LOSSES,
    LR,
    Arg,
    Buffer,
    Ints,
    KernelSpec,
    Launch,
    grad,
    param,
    param_grad,
    saved,
    scratch,
    state,
    tensor,
    work,
)
from convgraph.codegen.layout import Layout, channel_stride, planar_input
from convgraph.codegen.plan import Lowering, _Planner, lower_forward, param_sizes
from convgraph.codegen.profile import DeviceProfile
from convgraph.graph import loss_input, ordered
from convgraph.ops.base import REGISTRY

__all__ = ["TrainLowering", "TrainingPlan", "is_pixelwise", "param_sizes", "plan_training"]


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
    pixels: int = 1  # labels per image: 1 (a class), or H x W (a segmentation mask)

    @property
    def segmentation(self) -> bool:
        """Whether the loss is per pixel: labels are (N, H, W) masks."""
        return self.pixels > 1

    # the ExecutablePlan protocol (codegen/launches.py), which the executor runs
    def launch_groups(self) -> dict[str, list[Launch]]:
        return self.groups

    def buffer_sizes(self, batch: int) -> dict[str, int]:
        sizes = {}
        for storage, layout in self.layouts.items():
            sizes[tensor(storage).name] = layout.bytes_for(batch)
            sizes[grad(storage).name] = layout.bytes_for(batch)
        sizes.update({buffer.name: 4 * batch for buffer in (LOSSES, CORRECT)})
        sizes[LABELS.name] = 4 * batch * self.pixels
        for (node, key), (elements, images) in self.scratch.items():
            sizes[scratch(node, key).name] = 4 * elements * -(-batch // images)
        return sizes

    def fixed_sizes(self) -> dict[str, int]:
        """Bytes of the buffers that do not depend on the batch."""
        sizes = {param(n, k).name: 4 * c for (n, k), c in self.param_sizes.items()}
        for node, key in self.trainable:
            count = 4 * self.param_sizes[(node, key)]
            sizes[param_grad(node, key).name] = count
            for slot in range(self.optimizer_slots):
                sizes[state(node, key, slot).name] = count
        sizes.update({saved(node).name: 4 * count for node, count in self.saved.items()})
        sizes.update({work(node, key).name: 4 * count
                      for (node, key), count in self.work.items()})
        return sizes

    def buffer_name(self, arg: Arg) -> str | None:
        """Every buffer of a training plan is its own: the name is the argument's."""
        return arg.name if isinstance(arg, Buffer) else None

    def layout_of(self, node: str) -> Layout:
        return self.layouts[self.storage_of[node]]


class TrainLowering(Lowering):
    """Lowering for training: adds gradient buffers and whether to add to them."""

    def __init__(self, planner: _TrainingPlanner, name: str,
                 families: tuple[str, ...] | None = None):
        super().__init__(planner, name, families)
        self.training = planner

    @property
    def output_grad(self) -> Buffer:
        return grad(self.output_storage)

    def launch(self, *args, per_params: bool = False, **kwargs) -> None:
        """As in inference, but every launch runs every step: the optimizer changes the
        parameters on the device (a filter transform runs once per step)."""
        super().launch(*args, **kwargs)

    def epilogue(self) -> tuple[str, float]:
        """As in inference, but no activation that training runs on its own (runs_alone)."""
        if runs_alone(self.planner.graph, self.node.epilogue):
            self.epilogue_applied = True
            return "ACT_NONE", 0.0
        return super().epilogue()

    def needs_grad(self, slot: int = 0) -> bool:
        return self.input_storage(slot) != self.training.input_storage

    def input_grad(self, slot: int = 0) -> tuple[Buffer, int]:
        """The gradient buffer of input ``slot`` and 1 if this launch must add to it."""
        storage = self.input_storage(slot)
        accumulate = int(storage in self.training.written)
        self.training.written.add(storage)
        return grad(storage), accumulate

    def input_gate(self, accumulate: int) -> tuple[str, float, Buffer] | None:
        """The activation fused into the layer before this one, for this node's input-gradient
        kernel to differentiate as it writes (ACT name, slope, the activation's stored output),
        sparing that layer a pass over the whole tensor; None unless that gradient is whole
        once this kernel writes it: the first writer, and the activation's only consumer."""
        graph = self.planner.graph
        source = self.node.inputs[0]
        producer = fused_in_training(graph, source)
        if (accumulate or not producer or graph.nodes[producer].epilogue != source
                or list(graph.successors(source)) != [self.name]
                or list(graph.successors(producer)) != [source]):
            return None
        self.training.gated.add(producer)
        activation = graph.nodes[source]
        return (*REGISTRY[activation.op].epilogue_args(activation), self.input_tensor())

    def saved(self) -> Buffer:
        """This node's saved batch statistics (mean and inverse deviation per channel)."""
        self.training.saved[self.name] = 2 * self.output_layout.stride_c
        return saved(self.name)

    def param_elements(self, key: str) -> int:
        return self.training.param_sizes[(self.name, key)]

    def split_sum(self, key: str, images: int | None = None) -> tuple[Buffer, int]:
        """A scratch buffer for partial sums of parameter ``key`` over splits of the batch of
        ``images`` each (the profile's default), and the images per split; call sum_splits
        afterwards to add them into its gradient."""
        return self.split_scratch(key, self.param_elements(key), images)

    def split_scratch(self, key: str, elements: int, images: int | None = None
                      ) -> tuple[Buffer, int]:
        """A scratch buffer of ``elements`` per split of the batch (``images`` each)."""
        images = images or self.profile.images_per_split
        self.training.scratch[(self.name, key)] = (elements, images)
        return scratch(self.name, key), images

    def channel_split_launch(self, family: str, selector: str, layouts: dict, args: list,
                             images: int, defines: dict | None = None, *,
                             shapes_at_run_time: bool = False) -> None:
        """A per-channel reduction split over the batch: work-item (channel vector, split)
        covers ``images`` images. One work-item per channel vector left the second core idle
        and one core summing a whole tensor (16 channels: one work-item).
        ``shapes_at_run_time``: as in ``pixel_launch``."""
        first = next(iter(layouts.values()))
        width = self.vector_width(*layouts.values())
        every, args = self.pixel_shapes(layouts, width, args, shapes_at_run_time)
        every["IMAGES_PER_SPLIT"] = images
        every.update(defines or {})
        self.launch(family, selector, every, (first.stride_c // width, 1), args, batch_axis=1,
                    batch_divisor=images)

    def work_buffer(self, key: str, elements: int) -> Buffer:
        """A batch-independent scratch buffer of this node (e.g. re-laid weights)."""
        self.training.work[(self.name, key)] = elements
        return work(self.name, key)

    def sum_splits(self, key: str, site: str | None = None) -> None:
        """Add the partial sums of ``key`` into its gradient; ``site``: the tuning site whose
        split this is, so the tuner times the sum with the kernel (fewer images per split is
        a faster kernel but a longer sum)."""
        elements = self.param_elements(key)
        images = self.training.scratch[(self.name, key)][1]
        self.launch("reduction", "SUM_SPLITS",
                    {"ELEMENTS": elements, "IMAGES_PER_SPLIT": images},
                    (elements,), [scratch(self.name, key), self.param_grad(key), self.BATCH],
                    site=site)

    def channel_sum(self, dy: Buffer, layout: Layout, key: str) -> None:
        """The gradient of parameter ``key`` = ``dy`` (``layout``) summed over images and pixels,
        per channel (bias gradients): partial sums over splits of the batch, then added up."""
        partial, images = self.split_sum(key)
        self.channel_split_launch("reduction", "CHANNEL_SUM", {"Y": layout},
                                  [dy, partial, self.BATCH], images,
                                  {"CHANNELS": layout.volume.depth,
                                   "ELEMENTS": self.param_elements(key)})
        self.sum_splits(key)


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


def runs_alone(graph: nx.DiGraph, name: str | None) -> bool:
    """Whether node ``name`` is an activation fused in inference that a training step runs
    on its own: its derivative needs its input, which the fused kernel would overwrite."""
    if not name or not graph.nodes[name].fused_into:
        return False
    return REGISTRY[graph.nodes[name].op].derivative_from == "input"


def fused_in_training(graph: nx.DiGraph, name: str) -> str | None:
    """The node whose kernel does ``name``'s work in a training step (``fused_into``, less
    the activations that run alone there)."""
    return None if runs_alone(graph, name) else graph.nodes[name].fused_into


def plan_training(graph: nx.DiGraph, profile: DeviceProfile, optimizer: str = "sgd",
                  train: dict | None = None) -> TrainingPlan:
    """The kernels and launches of one training step, and of evaluation, for ``graph``."""
    train = train or graph.graph["train"]
    names = ordered(graph)
    planner = _TrainingPlanner(graph, profile, {})
    for name in names:
        node = graph.nodes[name]
        if fused_in_training(graph, name):  # fused activations, flattens read by fc share storage
            planner.storage_of[name] = planner.storage_of[node.inputs[0]]
        else:
            planner.storage_of[name] = name
            planner.layouts[name] = Layout(node.output, channel_stride(node.output.depth))
    for name in names:
        node = graph.nodes[name]
        if fused_in_training(graph, name) or not node.inputs:
            continue
        op = REGISTRY[node.op]
        need = op.input_halo(node)
        if need is not None:
            source = planner.storage_of[node.inputs[0]]
            planner.layouts[source] = planner.layouts[source].with_halo(need)
        need = op.output_grad_halo(node)  # the gradient shares the layout
        if need is not None:
            planner.layouts[name] = planner.layouts[name].with_halo(need)
    planar_input(graph, planner.layouts, planner.storage_of, planner.storage_of[names[0]],
                 lambda name: bool(fused_in_training(graph, name)), profile)
    planner.param_sizes = param_sizes(
        graph, lambda n: planner.layouts[planner.storage_of[n]])
    planner.input_storage = planner.storage_of[names[0]]
    logits_node = _logits_node(graph)
    logits = planner.storage_of[logits_node]
    last = names.index(logits_node)  # nothing after the node the loss reads is lowered
    lowered = [n for n in names[: last + 1] if not fused_in_training(graph, n)]

    groups: dict[str, list[Launch]] = {}
    planner.launches = []
    for name in lowered:  # evaluation: inference kernels, dropout as a copy; then the loss
        lower_forward(REGISTRY[graph.nodes[name].op].lower_eval, TrainLowering(planner, name))
    _lower_loss(planner, logits_node, logits, train)
    groups["evaluate"] = planner.launches

    planner.launches = []
    planner.written = set()
    for name in lowered:
        lower_forward(REGISTRY[graph.nodes[name].op].lower_train, TrainLowering(planner, name))
    _lower_loss(planner, logits_node, logits, train)
    for name in reversed(lowered):
        if name == names[0]:
            continue
        _lower_epilogue_backward(planner, name)
        REGISTRY[graph.nodes[name].op].lower_backward(TrainLowering(planner, name))
    groups["train"] = planner.launches

    trainable = [(node, key) for node, key in planner.param_sizes
                 if key in graph.nodes[node].weights and graph.nodes[node].weights[key].trainable]
    planner.launches = []
    for node, key in trainable:
        _lower_optimizer(planner, node, key, optimizer, train)
    groups["step"] = planner.launches
    volume = graph.nodes[logits_node].output
    return TrainingPlan(planner.storage_of, planner.layouts, planner.kernels, groups,
                        planner.input_storage, logits, volume.depth, trainable,
                        planner.param_sizes, planner.saved,
                        2 if optimizer in ("adam", "adamw") else 1, planner.scratch,
                        planner.work, planner.sites,
                        volume.width * volume.height if is_pixelwise(volume) else 1)


def is_pixelwise(volume) -> bool:
    """Whether a loss input of ``volume`` is scored per pixel (segmentation: W or H > 1) rather
    than as one set of class scores per image (1x1xC)."""
    return volume.width > 1 or volume.height > 1


def _logits_node(graph: nx.DiGraph) -> str:
    """The node whose output the loss reads (graph.loss_input): class scores (1x1xC) or, for a
    per-pixel loss, a WxHxC map of them."""
    return loss_input(graph)


def _lower_loss(planner: _TrainingPlanner, node: str, logits: str, train: dict) -> None:
    layout = planner.layouts[logits]
    ctx = TrainLowering(planner, node, families=("reduction",))
    planner.written.add(logits)
    if is_pixelwise(layout.volume):
        _lower_pixel_loss(ctx, layout, logits, train)
        return
    ctx.launch("reduction", "SOFTMAX_CROSS_ENTROPY",
               {"CHANNELS": layout.volume.depth, "SMOOTHING": float(train["label_smoothing"]),
                **layout.defines("X")},
               (1,), [tensor(logits), LABELS, grad(logits), LOSSES, CORRECT, ctx.BATCH],
               batch_axis=0)


def _lower_pixel_loss(ctx: TrainLowering, layout: Layout, logits: str, train: dict) -> None:
    """Per-pixel softmax cross-entropy, averaged over the batch's counted pixels (those whose
    label is not ``ignore_label``), as PyTorch's ``cross_entropy(..., ignore_index=...)``:
    count per image, then loss, top class and gradient per pixel, then sums per image."""
    volume = layout.volume
    pixels = volume.width * volume.height
    counted, _ = ctx.split_scratch("counted", 1, 1)
    pixel_losses, _ = ctx.split_scratch("pixel_losses", pixels, 1)
    predicted, _ = ctx.split_scratch("predicted", pixels, 1)
    defines = {"HEIGHT": volume.height, "WIDTH": volume.width, "CHANNELS": volume.depth,
               "IGNORE_LABEL": int(train.get("ignore_label", 255)),
               "SMOOTHING": float(train["label_smoothing"]), **layout.defines("X")}
    ctx.launch("reduction", "PIXEL_COUNT", defines, (1,), [LABELS, counted, ctx.BATCH],
               batch_axis=0)
    ctx.launch("reduction", "PIXEL_CROSS_ENTROPY", defines, (volume.width, volume.height),
               [tensor(logits), LABELS, counted, grad(logits), pixel_losses, predicted,
                ctx.BATCH], batch_axis=1)
    ctx.launch("reduction", "PIXEL_TOTALS", defines, (1,),
               [pixel_losses, predicted, LABELS, LOSSES, CORRECT, ctx.BATCH], batch_axis=0)


def _lower_epilogue_backward(planner: _TrainingPlanner, name: str) -> None:
    """dL/dz = f'(y) dL/dy in place, for an activation fused into node ``name``: the
    activation's own kernel, on the node's output and gradient."""
    fused = planner.graph.nodes[name].epilogue
    if not fused or name in planner.gated or runs_alone(planner.graph, fused):
        return
    activation = planner.graph.nodes[fused]
    op = REGISTRY[activation.op]
    ctx = TrainLowering(planner, name, families=op.kernels)
    code, slope = op.epilogue_args(activation)
    layout = ctx.output_layout
    ctx.pixel_launch("elementwise", "ACTIVATION_BACKWARD", {"Y": layout, "X": layout},
                     [ctx.output_tensor, ctx.output_grad, ctx.output_grad],
                     {"ACTIVATION": code, "SLOPE": slope, "ACCUMULATE": 0},
                     shapes_at_run_time=True)


def _lower_optimizer(planner, node: str, key: str, optimizer: str, train: dict) -> None:
    count = planner.param_sizes[(node, key)]
    ctx = TrainLowering(planner, node, families=("optim",))
    # the count at run time: one compiled kernel steps every parameter
    defines = {"WEIGHT_DECAY": float(train["weight_decay"])}
    target = [param(node, key), param_grad(node, key)]
    if optimizer == "sgd":
        defines.update({"MOMENTUM": float(train["momentum"]),
                        "NESTEROV": int(train["nesterov"])})
        ctx.launch("optim", "SGD_STEP", defines, (count,),
                   target + [state(node, key, 0), LR, Ints((count,))])
    else:
        beta1, beta2 = train["betas"]
        defines.update({"BETA1": float(beta1), "BETA2": float(beta2),
                        "DECOUPLED": int(optimizer == "adamw"), "ADAM_EPSILON": 1e-8})
        ctx.launch("optim", "ADAM_STEP", defines, (count,),
                   target + [state(node, key, 0), state(node, key, 1), LR, CORRECTION1,
                             CORRECTION2, Ints((count,))])
