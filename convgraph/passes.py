"""Graph passes after shape inference: each a small function taking the graph first.

insert_flatten makes the flatten an fc implies explicit; mark_fusions marks the work that runs
inside another node's kernel. They need shapes, so they sit above shapes.py (which needs only
the graph), keeping graph -> shapes -> passes a line without a circle.
"""

from __future__ import annotations

import networkx as nx

from convgraph.graph import ordered
from convgraph.ops.base import LayerDef
from convgraph.shapes import annotate


def insert_flatten(graph: nx.DiGraph) -> None:
    """Make the implicit flatten before an fc that reads a volume explicit (needs shapes)."""
    for name in ordered(graph):
        data = graph.nodes[name]
        if data["op"] != "fc":
            continue
        (source,) = data["inputs"]
        volume = graph.nodes[source]["output"]
        if volume.width == volume.height == 1:
            continue
        flat = f"{name}_flatten"
        while flat in graph:
            flat += "_"
        layer = data["layer"]
        flat_layer = LayerDef(
            flat, "flatten", {}, [source], layer.location, {}, [layer.where()], "inserted before fc"
        )
        graph.add_node(
            flat,
            op="flatten",
            attrs={},
            inputs=[source],
            layer=flat_layer,
            order=data["order"] - 0.5,
            inserted=True,
        )
        graph.remove_edge(source, name)
        graph.add_edge(source, flat)
        graph.add_edge(flat, name)
        data["inputs"] = [flat]  # the LayerDef keeps what the spec wrote
        annotate(graph, flat)


FUSABLE_EPILOGUES = ("relu", "leakyrelu", "sigmoid", "tanh")


def mark_fusions(graph: nx.DiGraph) -> None:
    """Mark work that can run inside another node's kernel: an activation inside the conv, fc or
    batchnorm feeding it (bias + activation epilogue), and a flatten inside the fc reading it."""
    output = graph.graph["output"]
    for name in ordered(graph):
        data = graph.nodes[name]
        if len(data["inputs"]) != 1:
            continue
        (source,) = data["inputs"]
        producer = graph.nodes[source]
        if graph.out_degree(source) != 1 or source == output:
            continue
        if (data["op"] in FUSABLE_EPILOGUES and producer["op"] in ("conv", "fc", "batchnorm")
                and not producer.get("epilogue")):
            producer["epilogue"] = name
            data["fused_into"] = source
        elif data["op"] == "fc" and producer["op"] == "flatten":
            producer["fused_into"] = name
