"""Folding in inference: work that an inference plan does inside the conv (or fc) before it.

Three folds, each chosen from the ops' declarations (ops/base.py), never from op names:

- **affine**: a node that is a per-channel affine in inference (``affine_in_inference``: a
  batchnorm with its running statistics) reading only a node whose weights can take it
  (``takes_affine``: conv, depthwise conv, fc), which nothing else reads. The producer's
  weights become w * scale and its bias b * scale + shift (``fold_params``, float64 on the
  host each time parameters are uploaded), the affine's kernel disappears and the activation
  fused after it moves into the producer's epilogue.
- **max pool**: a 2x2 stride-2 max pool without padding whose windows tile its input
  (``is_foldable_max_pool``) reading, through activations fused into it or folded affines, a
  node whose forward kernel can write it on this device (``takes_max_pool``: a conv the
  profile runs direct, not as Winograd), with no other reader on the way. The conv writes
  only the pooled maxima, into the pool's tensor.
- **residual sum**: a sum of two inputs (``folds_into_producer``: add) one of which comes,
  through a folded affine, from a node whose kernels can add a tensor in their epilogue
  (``takes_residual``: a conv on any profile, direct, Winograd or tiled GEMM) with no
  activation or pool of its own and no other reader; the other input must be computed before
  that node in the plan's order (so of two convs, the one launched last takes the sum: ResNet's
  projection shortcut, which comes after the block's second conv). The conv adds the other
  input, read at the output index through its own layout, before the activation; an
  activation reading only the sum (ResNet's relu after the add) runs in that epilogue too. The
  sum and that activation launch nothing and share the conv's tensor.

Training plans never fold: their batchnorm normalises with batch statistics, and the backward
pass needs the conv's own output. ``CONVGRAPH_FOLD=0`` turns folding off (a debugging aid, and
the benchmark's reference), ``CONVGRAPH_FOLD=affine,pool_window`` (a list of FOLD_KINDS) makes
only those folds; ``convgraph run --verify`` plans without folding, since it reads every
layer's own tensor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import networkx as nx

from convgraph.errors import UsageError
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY
from convgraph.reference import node_params


@dataclass
class Folds:
    """What an inference plan folds, by node name."""

    affine: dict[str, str] = field(default_factory=dict)  # affine node -> producer taking it
    pool: dict[str, str] = field(default_factory=dict)  # pool node -> conv writing it
    # producer -> the activation node its epilogue applies now (the one after the affine, or
    # after a sum folded into it)
    epilogue: dict[str, str | None] = field(default_factory=dict)
    residual: dict[str, str] = field(default_factory=dict)  # sum node -> conv adding it
    # sum node -> its input that the conv's tensor holds (the sum shares it; the other input
    # is what the conv's epilogue reads)
    residual_through: dict[str, str] = field(default_factory=dict)
    activation: dict[str, str] = field(default_factory=dict)  # activation after a sum -> conv

    @property
    def absorbed(self) -> set[str]:
        """Nodes whose work another node's kernel does: they launch nothing."""
        return set(self.affine) | set(self.pool) | set(self.residual) | set(self.activation)

    def shared_input(self, graph: nx.DiGraph, name: str) -> str:
        """The input whose tensor node ``name`` shares when it passes through (launches
        nothing): a folded sum's, the one its conv writes; any other node's, its first."""
        return self.residual_through.get(name, graph.nodes[name].inputs[0])

    def residual_of(self, writer: str, graph: nx.DiGraph) -> str | None:
        """The input of the sum folded into ``writer`` that its epilogue adds (None: none)."""
        for total, conv in self.residual.items():
            if conv == writer:
                through = self.residual_through[total]
                return next(x for x in graph.nodes[total].inputs if x != through)
        return None

    def pool_of(self, writer: str) -> str | None:
        """The pool node ``writer``'s kernel writes, if one is folded into it."""
        return next((pool for pool, conv in self.pool.items() if conv == writer), None)


FOLD_KINDS = ("affine", "pool_window", "residual_sum")  # what CONVGRAPH_FOLD may list


def folding_enabled() -> bool:
    """False when the environment says ``CONVGRAPH_FOLD=0`` (a debugging aid)."""
    return os.environ.get("CONVGRAPH_FOLD", "1").strip() not in ("0", "off", "no", "false")


def chosen_kinds() -> set[str]:
    """The folds an inference plan makes: those ``CONVGRAPH_FOLD`` lists
    (``affine,pool_window``: the benchmark's reference for what the sums add), else every kind
    (``0`` is ``folding_enabled``'s)."""
    setting = os.environ.get("CONVGRAPH_FOLD", "").strip().lower()
    kinds = {kind.strip() for kind in setting.split(",") if kind.strip()}
    if not kinds or kinds <= {"0", "1", "on", "off", "yes", "no", "true", "false"}:
        return set(FOLD_KINDS)
    unknown = sorted(kinds - set(FOLD_KINDS))
    if unknown:
        raise UsageError(f"CONVGRAPH_FOLD={setting!r} names {', '.join(unknown)}, which is no "
                         f"kind of fold; the kinds are {', '.join(FOLD_KINDS)}.",
                         hint="set CONVGRAPH_FOLD to 1 (every fold), 0 (none) or a list such "
                              "as affine,pool_window.")
    return kinds


def inference_folds(graph: nx.DiGraph, profile) -> Folds:
    """The folds of ``graph``'s inference plan on a device with ``profile`` (after
    mark_fusions; nothing is changed), of the kinds ``chosen_kinds`` names."""
    folds, kinds = Folds(), chosen_kinds()
    for name in ordered(graph) if "affine" in kinds else ():
        producer = _affine_producer(graph, name)
        if producer is not None:
            folds.affine[name] = producer
            folds.epilogue[producer] = graph.nodes[name].epilogue
    for name in ordered(graph) if "pool_window" in kinds else ():
        writer = _pool_writer(graph, name, folds, profile)
        if writer is not None:
            folds.pool[name] = writer
    position = {name: index for index, name in enumerate(ordered(graph))}
    for name in ordered(graph) if "residual_sum" in kinds else ():
        found = _residual_writer(graph, name, folds, position)
        if found is None:
            continue
        conv, through = found
        folds.residual[name], folds.residual_through[name] = conv, through
        after = _activation_after(graph, name)
        if after is not None:
            folds.activation[after] = conv
        folds.epilogue[conv] = after
    return folds


def _sole_reader(graph: nx.DiGraph, source: str) -> bool:
    """Whether one node alone reads ``source`` (once) and it is not the network's output."""
    return graph.out_degree(source) == 1 and source != graph.graph["output"]


def _affine_producer(graph: nx.DiGraph, name: str) -> str | None:
    node = graph.nodes[name]
    if not REGISTRY[node.op].affine_in_inference or len(node.inputs) != 1 or node.fused_into:
        return None
    (source,) = node.inputs
    producer = graph.nodes[source]
    if (REGISTRY[producer.op].takes_affine and _sole_reader(graph, source)
            and not producer.epilogue and not producer.fused_into):
        return source
    return None


def _pool_writer(graph: nx.DiGraph, name: str, folds: Folds, profile) -> str | None:
    """The conv that can write pool ``name`` in its epilogue: back through the activation
    fused into it and a folded affine, each read by nothing else."""
    node = graph.nodes[name]
    if len(node.inputs) != 1 or not REGISTRY[node.op].is_foldable_max_pool(node):
        return None
    source = node.inputs[0]
    while _sole_reader(graph, source):
        data = graph.nodes[source]
        if data.fused_into and graph.nodes[data.fused_into].epilogue == source:
            source = data.fused_into  # an activation another node's epilogue applies
        elif source in folds.affine:
            source = folds.affine[source]
        elif REGISTRY[data.op].takes_max_pool(data, profile):
            return source if folds.pool_of(source) is None else None
        else:
            return None
    return None


def _residual_writer(graph: nx.DiGraph, name: str, folds: Folds,
                     position: dict[str, int]) -> tuple[str, str] | None:
    """(conv, input) where sum ``name`` can run in that conv's epilogue, the sum's ``input``
    coming from it: of the inputs that do (back through a folded affine, each read by nothing
    else, to a node that ``takes_residual`` with no activation or pool of its own), the one
    whose conv comes last in the plan, so that the other input is written before it."""
    node = graph.nodes[name]
    if (not REGISTRY[node.op].folds_into_producer or len(node.inputs) != 2
            or len(set(node.inputs)) != 2):
        return None
    found = None
    for through, other in (node.inputs, node.inputs[::-1]):
        conv = _residual_producer(graph, through, folds)
        if conv is None or position[other] > position[conv]:
            continue
        if found is None or position[conv] > position[found[0]]:
            found = (conv, through)
    return found


def _residual_producer(graph: nx.DiGraph, source: str, folds: Folds) -> str | None:
    """The node whose epilogue can add a tensor to ``source`` (a sum's input): ``source``
    itself, or the producer of the affine ``source`` folded into, each read only once."""
    while _sole_reader(graph, source):
        data = graph.nodes[source]
        if source in folds.affine:
            source = folds.affine[source]
        elif (REGISTRY[data.op].takes_residual and not data.fused_into
              and epilogue_node(graph, folds, source) is None
              and folds.pool_of(source) is None and source not in folds.residual.values()):
            return source
        else:
            return None
    return None


def _activation_after(graph: nx.DiGraph, name: str) -> str | None:
    """The activation that alone reads sum ``name`` (it can run in the same epilogue)."""
    if not _sole_reader(graph, name):
        return None
    (reader,) = graph.successors(name)
    data = graph.nodes[reader]
    if REGISTRY[data.op].activation_code is None or len(data.inputs) != 1 or data.fused_into:
        return None
    return reader


def epilogue_node(graph: nx.DiGraph, folds: Folds, name: str) -> str | None:
    """The activation node ``name``'s kernel applies: its own fused one, or the one after the
    affine folded into it."""
    return folds.epilogue.get(name, graph.nodes[name].epilogue)


def folded_affines(plan) -> dict[str, str]:
    """Affine node -> producer for every affine ``plan`` folded (read from the plan itself: a
    folded node shares its producer's tensor, so a plan rebuilt from an artifact tells too)."""
    graph = plan.graph
    return {name: graph.nodes[name].inputs[0] for name in ordered(graph)
            if REGISTRY[graph.nodes[name].op].affine_in_inference
            and plan.storage_of[name] != name}


def fold_params(plan, params: dict) -> dict:
    """``params`` (PyTorch-named host arrays) as ``plan``'s kernels take them: each folded
    affine's scale and shift multiplied into its producer's weight and bias in float64, the
    affine's own arrays left out (no kernel reads them)."""
    folded = dict(params)
    graph = plan.graph
    for name, producer in folded_affines(plan).items():
        node, source = graph.nodes[name], graph.nodes[producer]
        scale, shift = REGISTRY[node.op].inference_affine(node, node_params(params, name))
        taken = REGISTRY[source.op].fold_affine(source, node_params(params, producer),
                                                scale, shift)
        for key in node_params(params, name):
            del folded[f"{name}.{key}"]
        folded.update({f"{producer}.{key}": value for key, value in taken.items()})
    return folded


def folded_layers(plan) -> dict[str, str]:
    """Layer -> the layer whose kernel does its work, for every layer ``plan`` folded (read
    from the plan, as ``folded_affines``): what the compile line and --profile name."""
    graph = plan.graph
    launched = {launch.node for launch in plan.launches}
    folded = dict(folded_affines(plan))
    for name in ordered(graph):
        if name in launched or plan.storage_of.get(name) != name:
            continue
        writer = next((node for node in launched
                       if node != name and plan.storage_of[node] == name), None)
        if writer is not None:  # a pool the conv before it writes
            folded[name] = writer
    for name in ordered(graph):  # a sum the conv before it adds, and the activation after it
        node = graph.nodes[name]
        if name in launched or not node.inputs:
            continue
        op, source = REGISTRY[node.op], node.inputs[0]
        summed = op.folds_into_producer or (
            op.activation_code is not None and not node.fused_into and source in folded
            and REGISTRY[graph.nodes[source].op].folds_into_producer)
        writer = next((other for other in launched
                       if plan.storage_of[other] == plan.storage_of[name]), None)
        if summed and writer is not None:
            folded[name] = writer
    return folded
