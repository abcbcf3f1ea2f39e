"""The graph IR: a networkx DiGraph with one node per layer, and the passes that check it.

Node data: ``op`` (registered name), ``attrs`` (normalised hyperparameters), ``inputs`` (ordered
input names; edges alone cannot hold ``add(x, x)``), ``layer`` (the LayerDef, for located errors).
Shape inference (shapes.py) adds ``output``, ``params``, ``flops`` and friends. Each node's data
is an ops.base.Node, the view every Op method gets (``node.attrs``, ``node.output``...).
Passes are small functions taking the graph first.
"""

from __future__ import annotations

import networkx as nx

from convgraph.errors import ErrorCollector, SpecError, suggest
from convgraph.ops.base import REGISTRY, LayerDef, Node
from convgraph.spec import Spec


class Graph(nx.DiGraph):
    """A networkx DiGraph whose node data are Nodes (a dict, as networkx keeps it, with named
    read access), so that ``graph.nodes[name]`` is what every Op method is given."""

    node_attr_dict_factory = Node


def build_graph(spec: Spec) -> Graph:
    """Turn a parsed spec into a checked DAG with a single input and a single output."""
    graph = Graph(
        name=spec.name,
        source=spec.source,
        form=spec.form,
        train=spec.train,
        rounding=spec.rounding,
        description=spec.description,
    )
    errors = ErrorCollector()  # names, arity and inputs are independent: all reported at once
    for order, layer in enumerate(spec.layers):
        if layer.name in graph:
            first = graph.nodes[layer.name]["layer"].location
            errors.add(SpecError(
                f"two layers are named '{layer.name}' (the other is at line {first.line}).",
                location=layer.location,
                layer=layer.name,
                hint="give each node its own name.",
            ))
            continue
        graph.add_node(
            layer.name,
            op=layer.op,
            attrs=layer.attrs,
            inputs=list(layer.inputs),
            layer=layer,
            order=order,
        )
    for layer in spec.layers:
        with errors.attempt():
            check_arity(layer)
        for source, where in zip(layer.inputs, layer.input_locations):
            if source not in graph:
                errors.add(SpecError(
                    f"unknown input '{source}'.{suggest(source, graph.nodes)}",
                    location=where,
                    layer=layer.name,
                    hint="name a layer of the network: " + _some_names(graph) + ".",
                ))
                continue
            graph.add_edge(source, layer.name)
    errors.raise_if_any()
    check_acyclic(graph)
    check_single_input(graph)
    graph.graph["output"] = check_single_output(graph, spec.output)
    graph.graph["warnings"] = folded_output_notes(graph)
    return graph


def folded_output_notes(graph: nx.DiGraph) -> list[str]:
    """A warning when the output is an op the loss reads through (``loss_reads_input``: a final
    softmax before the built-in softmax cross-entropy). It is folded, never applied twice, but
    a Keras or PyTorch port often ends in one by habit, and should hear what training does."""
    output = graph.graph["output"]
    node = graph.nodes[output]
    if not REGISTRY[node.op].loss_reads_input or not node.inputs:
        return []
    loss = graph.graph["train"].get("loss", "the")
    return [
        f"the output layer '{output}' ({node.op}) is folded into the {loss} loss, which applies "
        f"its own: training reads '{node.inputs[0]}', so the {node.op} is not applied twice; "
        f"predictions still come out of '{output}'."
    ]


def _some_names(graph: nx.DiGraph, limit: int = 24) -> str:
    names = list(graph)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_arity(layer: LayerDef) -> None:
    op = REGISTRY[layer.op]
    count = len(layer.inputs)
    if count < op.min_inputs or (op.max_inputs is not None and count > op.max_inputs):
        wanted = (
            f"exactly {op.min_inputs}"
            if op.min_inputs == op.max_inputs
            else f"at least {op.min_inputs}"
        )
        raise layer.error(
            f"takes {wanted} input(s), but {count} are given.",
            hint="list the layers it joins under 'inputs:'."
            if op.max_inputs is None
            else "give it one input.",
            kind=SpecError,
        )


def check_acyclic(graph: nx.DiGraph) -> None:
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    names = [edge[0] for edge in cycle]
    layer = graph.nodes[names[0]]["layer"]
    raise SpecError(
        "the graph has a cycle: " + " -> ".join(names + [names[0]]) + ".",
        location=layer.location,
        layer=layer.name,
        hint="a CNN is acyclic: make one of these inputs an earlier node.",
    )


def check_single_input(graph: nx.DiGraph) -> None:
    sources = [n for n, data in graph.nodes(data=True) if data["op"] == "input"]
    if len(sources) != 1:
        layer = graph.nodes[sources[1]]["layer"]
        raise SpecError(
            "a network has exactly one input layer, but "
            + " and ".join(f"'{name}'" for name in sources)
            + " are inputs.",
            location=layer.location,
            layer=layer.name,
            hint="keep one input node and start every branch from it.",
        )


def check_single_output(graph: nx.DiGraph, declared: str | None) -> str:
    """The output node; every other node must feed it (no dangling or unused nodes)."""
    sinks = [n for n in graph if graph.out_degree(n) == 0]
    if declared is not None:
        if declared not in graph:
            raise SpecError(
                f"the output '{declared}' is not a node.{suggest(declared, graph)}",
                location=_first_location(graph),
            )
        output = declared
    elif len(sinks) == 1:
        output = sinks[0]
    else:
        names = ", ".join(f"'{s}'" for s in sinks)
        layer = graph.nodes[sinks[0]]["layer"]
        raise SpecError(
            f"the graph has no single output: {names} all feed nothing.",
            location=layer.location,
            layer=layer.name,
            hint="connect the dangling nodes, remove them, or name the output with 'output: NAME'.",
        )
    feeding = nx.ancestors(graph, output) | {output}
    for name in sorted(set(graph) - feeding, key=lambda n: graph.nodes[n]["order"]):
        layer = graph.nodes[name]["layer"]
        raise SpecError(
            f"node '{name}' is unused: nothing leads from it to the output '{output}'.",
            location=layer.location,
            layer=name,
            hint="use it as an input of a later node, or remove it.",
        )
    return output


def _first_location(graph):
    return next(iter(graph.nodes.values()))["layer"].location


def loss_input(graph: nx.DiGraph) -> str:
    """The node whose output the loss reads: the output, or the input of an output op that
    declares ``loss_reads_input`` (a final softmax: the cross-entropy applies its own)."""
    output = graph.graph["output"]
    node = graph.nodes[output]
    return node.inputs[0] if REGISTRY[node.op].loss_reads_input else output


def ordered(graph: nx.DiGraph) -> list[str]:
    """Nodes in a topological order that follows the spec wherever it can."""
    return list(nx.lexicographical_topological_sort(graph, key=lambda n: graph.nodes[n]["order"]))


def signature(graph: nx.DiGraph) -> list[tuple]:
    """What makes two graphs the same network: every node's name, op, attributes, inputs and
    output volume, in topological order. Two specs describe one network iff these are equal."""
    return [
        (
            name,
            graph.nodes[name]["op"],
            tuple(sorted(graph.nodes[name]["attrs"].items())),
            tuple(graph.nodes[name]["inputs"]),
            graph.nodes[name].get("output"),
        )
        for name in ordered(graph)
    ]
