"""Graph passes after shape inference: each a small function taking the graph first.

insert_flatten makes the flatten an fc implies explicit; mark_fusions marks the work that runs
inside another node's kernel. They need shapes, so they sit above shapes.py (which needs only
the graph), keeping graph -> shapes -> passes a line without a circle.
"""

from __future__ import annotations

import networkx as nx

from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY, LayerDef
from convgraph.shapes import annotate


def insert_flatten(graph: nx.DiGraph) -> None:
    """Make the implicit flatten before an op that reads its input as a vector (an op declaring
    ``implicit_flatten``: fc) explicit, where that input is a volume (needs shapes)."""
    for name in ordered(graph):
        node = graph.nodes[name]
        flatten = REGISTRY[node.op].implicit_flatten
        if flatten is None:
            continue
        (source,) = node.inputs
        volume = graph.nodes[source]["output"]
        if volume.width == volume.height == 1:
            continue
        flat = f"{name}_flatten"
        while flat in graph:
            flat += "_"
        layer = node.layer
        flat_layer = LayerDef(flat, flatten, {}, [source], layer.location, {}, [layer.where()],
                              f"inserted before {node.op}")
        graph.add_node(
            flat,
            op=flatten,
            attrs={},
            inputs=[source],
            layer=flat_layer,
            order=node.order - 0.5,
            inserted=True,
        )
        graph.remove_edge(source, name)
        graph.add_edge(source, flat)
        graph.add_edge(flat, name)
        node["inputs"] = [flat]  # the LayerDef keeps what the spec wrote
        annotate(graph, flat)
        node["input_volumes"] = [graph.nodes[flat].output]


def mark_fusions(graph: nx.DiGraph) -> None:
    """Mark work that can run inside another node's kernel: an activation (an op with an
    ``activation_code``) inside the node feeding it when that node ``takes_epilogue`` (conv,
    fc, batchnorm: bias + activation epilogue), and a flatten inside the op that declared it
    as its ``implicit_flatten``."""
    output = graph.graph["output"]
    for name in ordered(graph):
        node = graph.nodes[name]
        if len(node.inputs) != 1:
            continue
        (source,) = node.inputs
        producer = graph.nodes[source]
        if graph.out_degree(source) != 1 or source == output:
            continue
        op, producer_op = REGISTRY[node.op], REGISTRY[producer.op]
        if (op.activation_code is not None and producer_op.takes_epilogue
                and not producer.epilogue):
            producer["epilogue"] = name
            node["fused_into"] = source
        elif op.implicit_flatten is not None and op.implicit_flatten == producer.op:
            producer["fused_into"] = name
