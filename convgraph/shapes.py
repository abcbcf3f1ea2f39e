"""Shape inference: every node's output volume, parameters, FLOPs and activation memory.

Works through the graph in topological order; each op's pure shape rule (ops/) raises a located
ShapeError when a layer cannot work (non-whole output, kernel larger than its input, mismatches).
"""

from __future__ import annotations

import math

import networkx as nx

from convgraph.errors import SpecError
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY, FromInput

BYTES_PER_VALUE = 4  # fp32 activations


def infer_shapes(graph: nx.DiGraph) -> nx.DiGraph:
    """Annotate every node in place; returns the graph for chaining."""
    for name in ordered(graph):
        annotate(graph, name)
    return graph


def annotate(graph: nx.DiGraph, name: str) -> None:
    node = graph.nodes[name]
    op = REGISTRY[node.op]
    node["input_volumes"] = [graph.nodes[source]["output"] for source in node.inputs]
    resolve_from_input(node)
    output, derived = op.infer(node)
    if min(output) < 1:
        raise node.error(f"output volume {output} is empty.")
    node.update(output=output, derived=derived)
    weights = op.weights(node)
    param_shapes = {key: w.shape for key, w in weights.items() if w.trainable}
    buffer_shapes = {key: w.shape for key, w in weights.items() if not w.trainable}
    node.update(
        weights=weights,
        param_shapes=param_shapes,
        buffer_shapes=buffer_shapes,
        params=sum(math.prod(shape) for shape in param_shapes.values()),
        buffers=sum(math.prod(shape) for shape in buffer_shapes.values()),
        macs=op.macs(node),
        flops=op.flops(node),
        activation_bytes=output.elements * BYTES_PER_VALUE,
    )


def resolve_from_input(node) -> None:
    """Replace the settings that follow from the input volume (``$in.depth // 2``, a
    depthwise conv's filters: FromInput values) by their numbers, read by each setting's
    Param as if the spec had written them. The node gets its own attrs; its LayerDef keeps the
    formula (``--expand`` shows it)."""
    pending = {key: value for key, value in node.attrs.items() if isinstance(value, FromInput)}
    if not pending:
        return
    if not node.input_volumes:
        key = next(iter(pending))
        raise node.error(f"'{key}: {pending[key]}' reads the input volume, but this layer has "
                         "no input.", attr=key, hint="write the number itself.", kind=SpecError)
    volume = node.input_volumes[0]
    attrs = dict(node.attrs)
    for key, formula in pending.items():
        param = REGISTRY[node.op].params[key]
        try:
            number = formula.value(volume)
        except ValueError as why:
            raise node.error(f"`{formula}`: {why} (input {volume}).", attr=key,
                             hint="divide by a value that is not 0 for this input, or write "
                                  "the number.", kind=SpecError) from None
        try:
            attrs[key] = param.parse(number)
        except ValueError as why:
            raise node.error(f"'{key}' expects {why}, got {number} from `{formula}` with input "
                             f"{volume}.", attr=key, hint="change the formula, or write the "
                             "number.", kind=SpecError) from None
    node["attrs"] = attrs


def totals(graph: nx.DiGraph) -> dict:
    """Per-image totals over the whole network."""
    nodes = [graph.nodes[n] for n in graph]
    return {
        "params": sum(d["params"] for d in nodes),
        "buffers": sum(d["buffers"] for d in nodes),
        "macs": sum(d["macs"] for d in nodes),
        "flops": sum(d["flops"] for d in nodes),
        "activation_bytes": sum(d["activation_bytes"] for d in nodes),
        "param_bytes": sum(d["params"] + d["buffers"] for d in nodes) * BYTES_PER_VALUE,
    }
