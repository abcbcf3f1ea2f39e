"""Planning: which tensor lives where, which kernels run in which order, with what sizes.

plan_forward(graph, profile) walks the graph in topological order and asks each node's op to
lower itself (ops/<family>.py ``lower``) into specialised kernels and launches. Nodes that do no
work in inference share their input's storage: dropout, an activation fused into the conv/fc
before it, a flatten read directly by its fc. Storage is then packed into buffers by liveness.
Launch arguments are typed (codegen/launches.py); an inference plan maps each activation to the
buffer it shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx

from convgraph.codegen.fold import (
    Folds,
    epilogue_node,
    folded_layers,
    folding_enabled,
    inference_folds,
)
from convgraph.codegen.launches import (
    BATCH,
    SAMPLE_OFFSET,
    SEED,
    Arg,
    Buffer,
    Ints,
    KernelSpec,
    Launch,
    param,
    param_grad,
    tensor,
    work,
)
from convgraph.codegen.layout import Layout, channel_stride, vector_width
from convgraph.codegen.profile import DeviceProfile
from convgraph.codegen.tuning import Site, site_key
from convgraph.core import Volume
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY, OpDeclarationError

__all__ = ["KernelSpec", "Launch", "Lowering", "Plan", "param_sizes", "plan_forward"]


@dataclass
class Plan:
    storage_of: dict[str, str]  # node -> the node whose tensor it reads/writes
    layouts: dict[str, Layout]  # storage -> layout
    kernels: dict[str, KernelSpec]
    launches: list[Launch]
    buffer_of: dict[str, int]  # storage -> buffer index
    buffer_elements: list[int]  # per image, per buffer
    input: str
    output: str
    sites: dict[str, Site] = field(default_factory=dict)  # tunable kernel sites by key
    graph: nx.DiGraph | None = field(default=None, repr=False)  # what was planned
    work: dict[tuple[str, str], int] = field(default_factory=dict)  # fixed scratch, elements
    _fixed: dict[str, int] | None = field(default=None, init=False, repr=False)

    # the ExecutablePlan protocol (codegen/launches.py), which the executor runs
    def layout_of(self, node: str) -> Layout:
        return self.layouts[self.storage_of[node]]

    def activation_bytes(self, batch: int) -> int:
        return 4 * batch * sum(self.buffer_elements)

    def launch_groups(self) -> dict[str, list[Launch]]:
        return {"forward": self.launches}

    def buffer_sizes(self, batch: int) -> dict[str, int]:
        """Bytes of every per-batch device buffer, by name: activations share buffers
        'act0', 'act1'... by liveness; and the work buffers."""
        sizes = {f"act{index}": 4 * batch * elements
                 for index, elements in enumerate(self.buffer_elements)}
        # scratch of a fixed size that kernels fill each pass (transformed weights): allocated
        # with the activations, since the executor uploads only parameters as fixed buffers
        sizes.update({work(node, key).name: 4 * count
                      for (node, key), count in self.work.items()})
        return sizes

    def fixed_sizes(self) -> dict[str, int]:
        """Bytes of the parameters as the kernels hold them, by buffer name (worked out on
        first use: re-laying zeros for VGG-16's 138M parameters takes seconds, and running
        a model never needs the table)."""
        if self._fixed is None:
            self._fixed = {param(node, key).name: 4 * count
                           for (node, key), count in param_sizes(self.graph,
                                                                 self.layout_of).items()}
        return self._fixed

    def folded_layers(self) -> dict[str, str]:
        """Layer -> the layer whose kernel does its work, for each layer this inference plan
        folded (codegen/fold.py: a batchnorm into the conv before it, a pool into its
        epilogue); what listings of the plan name."""
        return folded_layers(self)

    def buffer_name(self, arg: Arg) -> str | None:
        """The device buffer a launch argument names (None for scalars); an activation names
        the buffer it shares."""
        if not isinstance(arg, Buffer):
            return None
        if arg.kind == "act":
            return f"act{self.buffer_of[arg.node]}"
        return arg.name


class Lowering:
    """What an op's ``lower`` sees of one node, and how it adds kernels and launches.

    ``ctx.node`` is the node's view every Op method gets (ops/base.Node). Launch arguments come
    from here: ``ctx.input_tensor(slot)``, ``ctx.output_tensor``, ``ctx.param(key)``,
    ``ctx.BATCH``; ``families``: the kernel files launches may come from (the op's declared
    ``kernels``; the planner's own launches name theirs)."""

    BATCH, SEED, SAMPLE_OFFSET = BATCH, SEED, SAMPLE_OFFSET

    def __init__(self, planner: _Planner, name: str, families: tuple[str, ...] | None = None):
        self.planner = planner
        self.name = name
        self.node = planner.graph.nodes[name]
        self.op = REGISTRY[self.node.op]
        self.families = self.op.kernels if families is None else families
        self.profile = planner.profile
        self.epilogue_applied = False

    @property
    def attrs(self) -> dict:
        return self.node.attrs

    @property
    def derived(self) -> dict:
        return self.node.derived

    def input_storage(self, slot: int = 0) -> str:
        return self.planner.storage_of[self.node.inputs[slot]]

    def input_tensor(self, slot: int = 0) -> Buffer:
        return tensor(self.input_storage(slot))

    @property
    def output_tensor(self) -> Buffer:
        return tensor(self.output_storage)

    def param(self, key: str) -> Buffer:
        """This node's parameter ``key``, as its kernels hold it."""
        return param(self.name, key)

    def param_grad(self, key: str) -> Buffer:
        return param_grad(self.name, key)

    def input_layout(self, slot: int = 0) -> Layout:
        return self.planner.layouts[self.input_storage(slot)]

    @property
    def output_storage(self) -> str:
        return self.planner.storage_of[self.name]

    @property
    def output_layout(self) -> Layout:
        return self.planner.layouts[self.output_storage]

    def epilogue(self) -> tuple[str, float]:
        """The activation fused into this node's kernel, as (ACT_* name, slope): in an
        inference plan that folds a batchnorm into this node, the one fused after that."""
        fused = epilogue_node(self.planner.graph, self.planner.folds, self.name)
        self.epilogue_applied = True
        if not fused:
            return "ACT_NONE", 0.0
        activation = self.planner.graph.nodes[fused]
        return REGISTRY[activation.op].epilogue_args(activation)

    @property
    def folds_affine(self) -> bool:
        """Whether this node's weights and bias hold a per-channel affine folded after it
        (codegen/fold.py): its kernels then add a bias even where the layer has none."""
        return self.name in self.planner.folds.affine.values()

    def max_pool_epilogue(self) -> dict:
        """The defines of the 2x2 stride-2 max pool this node's forward kernel writes into the
        pool's tensor (``ctx.output_layout``), or {} where none is folded into it: POOL_MAX,
        the pooled height and width, and POOL_FIRST where the activation commutes with max
        (max first, one activation per pooled value)."""
        pool = self.planner.folds.pool_of(self.name)
        if pool is None:
            return {}
        fused = epilogue_node(self.planner.graph, self.planner.folds, self.name)
        activation = self.planner.graph.nodes[fused] if fused else None
        first = activation is None or REGISTRY[activation.op].commutes_with_max(activation)
        out = self.planner.graph.nodes[pool].output
        return {"POOL_MAX": 1, "POOL_OUT_H": out.height, "POOL_OUT_W": out.width,
                "POOL_FIRST": int(first)}

    def residual_epilogue(self) -> tuple[dict, list[Arg]]:
        """(defines, args) of the sum folded into this node's forward kernel (inference,
        codegen/fold.py), or ({}, []): RESIDUAL and the layout (prefix R) of the sum's other
        input, which the kernel takes as its last argument and adds at the output index
        before the activation."""
        other = self.planner.folds.residual_of(self.name, self.planner.graph)
        if other is None:
            return {}, []
        storage = self.planner.storage_of[other]
        return ({"RESIDUAL": 1, **self.planner.layouts[storage].defines("R")},
                [tensor(storage)])

    def tuned(self, selector: str, shape: dict, space: list[dict]) -> tuple[str, dict]:
        """(site key, knobs) for a kernel specialised by ``shape``: the device's tuned choice
        among ``space`` (every setting the kernel supports here, the default first)."""
        space = tuple(dict.fromkeys(tuple(sorted(k.items())) for k in space))
        space = tuple(dict(items) for items in space)
        key = site_key(selector, shape)
        self.planner.sites.setdefault(key, Site(key, self.name, selector, space))
        return key, self.profile.tuning.choice(key, space)

    def work_buffer(self, key: str, elements: int) -> Buffer:
        """A batch-independent scratch buffer of this node (e.g. transformed weights)."""
        self.planner.work[(self.name, key)] = elements
        return work(self.name, key)

    def batch_scratch(self, key: str, elements: int) -> Buffer:
        """Scratch of ``elements`` floats per image, live only during this node's launches
        (e.g. Winograd's transformed tiles). In inference it is a tensor of its own, so it
        shares buffers with the activations by liveness; a training plan, where every tensor
        keeps its buffer and a gradient, holds it as scratch split by one image."""
        split = getattr(self, "split_scratch", None)
        if split is not None:
            return split(key, elements, 1)[0]
        storage = f"{self.name}:{key}"
        self.planner.layouts[storage] = Layout(Volume(1, 1, elements), elements)
        return tensor(storage)

    def launch(self, family: str, selector: str, defines: dict, global_size, args: list[Arg], *,
               batch_axis: int | None = None, local_size=None, flops: int = 0, moved: int = 0,
               batch_divisor: int = 1, site: str | None = None,
               exact_local: bool = False, per_params: bool = False) -> None:
        """Add one launch of kernels/<family>.cl's ``selector`` kernel specialised by
        ``defines`` (shared when identical): ``global_size`` work-items, per image along
        ``batch_axis``; ``flops`` and ``moved`` bytes per image, for --profile.
        ``exact_local``: the kernel needs exactly ``local_size`` (a whole number of groups
        along every axis), never a smaller work-group. ``per_params``: it reads only
        parameters (and writes a work buffer), so an inference plan runs it once per upload of
        the parameters, not every pass."""
        if family not in self.families:
            raise OpDeclarationError(
                f"op '{self.op.name}' (node '{self.name}') launches {selector} from "
                f"kernels/{family}.cl, but declares kernels = {self.families}: add '{family}' "
                "to the op's kernels.")
        spec = KernelSpec("", family, selector, dict(defines))
        kernel = self.planner.add_kernel(spec, self.name)
        local = None
        if local_size is None and batch_axis is not None and self.profile.batch_free_local:
            local_size = _batch_free_local(global_size, batch_axis)
        if local_size is not None:
            local = [min(size, max(1, g)) for size, g in zip(local_size, global_size)]
            if batch_axis is not None:
                # Never round the batch axis up to whole work-groups: the kernels check the other
                # axes but not the row, so a partial group would write past the last image (past
                # the buffer at the planned batch). The largest power of two dividing the rows of
                # one image still divides them after the executor halves it.
                width = 1
                while width * 2 <= local[batch_axis] and global_size[batch_axis] % (width * 2) == 0:
                    width *= 2
                local[batch_axis] = width
            local = tuple(local)
        if exact_local and (local is None or tuple(local) != tuple(local_size) or any(
                g % size for g, size in zip(global_size, local_size))):
            raise OpDeclarationError(
                f"node '{self.name}' launches {selector} with exact work-groups {local_size} "
                f"over {tuple(global_size)} work-items: the grid must be whole work-groups.")
        self.planner.launches.append(Launch(kernel, self.name, tuple(global_size), batch_axis,
                                            local, args, flops, moved, batch_divisor, site,
                                            exact_local, per_params))

    def vector_width(self, *layouts: Layout) -> int:
        """The widest vector the device profile allows that divides every channel stride."""
        width = self.profile.max_vector
        for layout in layouts:
            width = min(width, vector_width(layout.stride_c))
        return width

    def channel_launch(self, family: str, selector: str, layouts: dict[str, Layout], args: list,
                       defines: dict | None = None, *, shapes_at_run_time: bool = False) -> None:
        """A kernel with one work-item per channel vector, reducing over images and pixels
        (``shapes_at_run_time``: as in ``pixel_launch``)."""
        first = next(iter(layouts.values()))
        width = self.vector_width(*layouts.values())
        every, args = self.pixel_shapes(layouts, width, args, shapes_at_run_time)
        every.update(defines or {})
        self.launch(family, selector, every, (first.stride_c // width,), args)

    def pixel_launch(self, family: str, selector: str, layouts: dict[str, Layout], args: list,
                     defines: dict | None = None, flops: int = 0, *,
                     shapes_at_run_time: bool = False) -> None:
        """A kernel with one work-item per (channel vector, pixel), as in elementwise.cl.
        ``shapes_at_run_time``: the kernel takes its grid and the ``layouts`` as int4
        arguments after ``args`` (common.cl's AT_RUN) instead of as defines, so one compiled
        kernel serves every shape."""
        first = next(iter(layouts.values()))
        width = self.vector_width(*layouts.values())
        volume = first.volume
        every, args = self.pixel_shapes(layouts, width, args, shapes_at_run_time)
        every.update(defines or {})
        moved = 4 * volume.width * volume.height * first.stride_c * len(layouts)
        self.launch(family, selector, every,
                    (first.stride_c // width, volume.width, volume.height), args, batch_axis=2,
                    local_size=self.profile.pixel_local, flops=flops, moved=moved)

    @staticmethod
    def pixel_shapes(layouts: dict[str, Layout], width: int, args: list,
                     at_run_time: bool) -> tuple[dict, list]:
        """(defines, args) giving a pixel-wise kernel its shapes: as defines (HEIGHT, WIDTH,
        CHANNEL_VECTORS and each layout's), or at run time as arguments after ``args``: the
        grid over the first layout, then each layout (``Ints.grid``, ``Ints.layout``)."""
        first = next(iter(layouts.values()))
        if at_run_time:
            shapes = [Ints.grid(first, width), *map(Ints.layout, layouts.values())]
            return {"VECTOR_WIDTH": width}, [*args, *shapes]
        every = {"HEIGHT": first.volume.height, "WIDTH": first.volume.width,
                 "CHANNEL_VECTORS": first.stride_c // width, "VECTOR_WIDTH": width}
        for prefix, layout in layouts.items():
            every.update(layout.defines(prefix))
        return every, list(args)


def lower_forward(lower, ctx: Lowering) -> None:
    """Run one of an op's forward lowerings (``lower``, ``lower_eval``, ``lower_train``) for
    ``ctx``'s node. An activation the passes fused into the node must be applied by its kernels
    (they read ``ctx.epilogue()``): an op that declares ``takes_epilogue`` and does not would
    silently drop it."""
    lower(ctx)
    if ctx.node.epilogue and not ctx.epilogue_applied:
        raise OpDeclarationError(
            f"op '{ctx.op.name}' declares takes_epilogue, but its lowering of node '{ctx.name}' "
            f"did not apply the fused activation '{ctx.node.epilogue}' (ctx.epilogue()).")


def _batch_free_local(global_size, batch_axis: int, most: int = 256) -> tuple[int, ...]:
    """A work-group shape that does not depend on the batch: the whole extent of the other axes
    and, on the batch axis, rows of one image (``launch`` makes that a power of two dividing
    them), at most ``most`` items. PoCL compiles a kernel once per work-group shape, and the
    shape it picks itself follows the global size: every new batch size (a last partial
    batch, evaluation) cost VGG-CIFAR 3.8 s of recompiling until the shape stopped following it.
    Groups of many items keep PoCL's per-group overhead low (1-item-wide groups made the seed
    network's step 25% slower)."""
    local = list(global_size)
    while math.prod(local) > most:
        axis = max(range(len(local)), key=lambda a: (local[a], a == batch_axis))
        local[axis] = -(-local[axis] // 2)
    return tuple(local)


def passes_through(graph: nx.DiGraph, name: str, folds: Folds | None = None) -> bool:
    """Nodes that do no work in inference and share their input's tensor (with ``folds``, an
    inference plan's: a folded batchnorm, and a folded pool, whose conv writes its tensor)."""
    node = graph.nodes[name]
    return (bool(node.fused_into) or REGISTRY[node.op].inference_identity
            or (folds is not None and name in folds.absorbed))


def param_sizes(graph: nx.DiGraph, layouts_of) -> dict[tuple[str, str], int]:
    """Elements of every device parameter, from each op's declared sizes (nothing allocated:
    a spec of terabytes is sized, and refused, before any array exists)."""
    from convgraph.params import device_param_elements

    return device_param_elements(graph, layouts_of)


class _Planner:
    def __init__(self, graph: nx.DiGraph, profile: DeviceProfile, share_kernels: bool = True):
        self.graph = graph
        self.profile = profile
        self.share_kernels = share_kernels
        self.storage_of: dict[str, str] = {}
        self.layouts: dict[str, Layout] = {}
        self.kernels: dict[str, KernelSpec] = {}
        self._by_identity: dict[tuple, str] = {}
        self.launches: list[Launch] = []
        self.sites: dict[str, Site] = {}
        self.work: dict[tuple[str, str], int] = {}
        self.folds = Folds()  # training plans fold nothing

    def add_kernel(self, spec: KernelSpec, node: str) -> str:
        """The name of the kernel ``spec`` specialises: an identical one already planned is
        shared (PoCL compiles each distinct kernel at its first launch, 0.1-0.8 s here), unless
        the planner was told not to (the tests compare both)."""
        key = spec.identity()
        if key in self._by_identity and self.share_kernels:
            name = self._by_identity[key]
            self.kernels[name].layers.append(node)
            return name
        base = "k_" + "".join(ch if ch.isalnum() else "_" for ch in node) + f"_{spec.selector}"
        name = base.lower()
        while name in self.kernels:
            name += "_"
        spec.name = name
        spec.layers.append(node)
        self.kernels[name] = spec
        self._by_identity[key] = name
        return name


def plan_forward(graph: nx.DiGraph, profile: DeviceProfile, share_buffers: bool = True,
                 fold: bool | None = None, share_kernels: bool = True) -> Plan:
    """Storage, layouts, kernels and launches for inference on a device with ``profile``.

    ``share_buffers=False`` keeps every tensor in its own buffer, so all can be read back after a
    pass (``convgraph run --verify``). ``fold`` (default: when sharing buffers, unless
    ``CONVGRAPH_FOLD=0``): batchnorms into the conv or fc before them and 2x2 max pools into the
    conv's epilogue (codegen/fold.py); the plan's parameters are then ``fold_params``'s.
    ``share_kernels=False`` gives every launch a kernel of its own even where layers specialise
    one identically (a reference for the shared plan)."""
    planner = _Planner(graph, profile, share_kernels)
    if share_buffers if fold is None else fold:
        planner.folds = inference_folds(graph, profile) if folding_enabled() or fold else Folds()
    folds = planner.folds
    names = ordered(graph)
    for name in names:
        data = graph.nodes[name]
        pool = folds.pool_of(name)
        if passes_through(graph, name, folds):
            planner.storage_of[name] = planner.storage_of[folds.shared_input(graph, name)]
        else:  # a conv writing a folded pool writes the pool's tensor
            planner.storage_of[name] = name if pool is None else pool
            volume = graph.nodes[pool]["output"] if pool else data["output"]
            planner.layouts[planner.storage_of[name]] = Layout(volume,
                                                               channel_stride(volume.depth))
    for name in names:  # halos: each tensor gets the widest padding any reader needs
        node = graph.nodes[name]
        if passes_through(graph, name, folds) or not node.inputs:
            continue
        need = REGISTRY[node.op].input_halo(node)
        if need is not None:
            source = planner.storage_of[node.inputs[0]]
            planner.layouts[source] = planner.layouts[source].with_halo(need)
    for name in names:
        if passes_through(graph, name, folds):
            continue
        lower_forward(REGISTRY[graph.nodes[name].op].lower, Lowering(planner, name))
    output = planner.storage_of[graph.graph["output"]]
    buffer_of, sizes = assign_buffers(planner, names, output, share_buffers)
    return Plan(planner.storage_of, planner.layouts, planner.kernels, planner.launches,
                buffer_of, sizes, planner.storage_of[names[0]], output, planner.sites, graph,
                planner.work)


def assign_buffers(planner: _Planner, names: list[str], output: str, share: bool = True):
    """Share buffers between tensors whose lifetimes do not overlap (inference).

    A tensor with a zero halo only shares with tensors of the identical layout, so the halo, written
    once as zeros, stays zero. The input and output keep their own buffers.
    """
    position = {launch_index: launch for launch_index, launch in enumerate(planner.launches)}
    first, last = {}, {}
    for index, launch in position.items():
        for arg in launch.args:
            if isinstance(arg, Buffer) and arg.kind == "act":
                first.setdefault(arg.node, index)
                last[arg.node] = index
    input_storage = planner.storage_of[names[0]]
    first[input_storage] = -1
    for storage in (input_storage, output):
        last[storage] = len(planner.launches) + 1
    order = sorted(first, key=lambda s: (first[s], s))
    buffers: list[dict] = []  # {"layout", "free_after", "elements"}
    buffer_of = {}
    for storage in order:
        layout = planner.layouts[storage]
        haloed = any(layout.halo)
        choice = None
        pinned = storage in (input_storage, output)
        for index, buffer in enumerate(buffers):
            if not share or pinned or buffer["pinned"] or buffer["free_after"] >= first[storage]:
                continue
            if (haloed or buffer["haloed"]) and buffer["layout"] != layout:
                continue
            if choice is None or abs(buffer["elements"] - layout.image_elements) < abs(
                    buffers[choice]["elements"] - layout.image_elements):
                choice = index
        if choice is None:
            buffers.append({"layout": layout, "elements": 0, "free_after": -2, "haloed": haloed,
                            "pinned": pinned})
            choice = len(buffers) - 1
        buffer = buffers[choice]
        buffer["elements"] = max(buffer["elements"], layout.image_elements)
        buffer["free_after"] = last[storage]
        buffer_of[storage] = choice
    return buffer_of, [b["elements"] for b in buffers]
