"""The numpy reference executor: the whole graph in float64, op by op (ops/ ``reference``).

This is the living definition the generated kernels are checked against, in tests and by
``convgraph run --verify``.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY


def node_params(params: dict, name: str) -> dict:
    prefix = name + "."
    return {key[len(prefix):]: value for key, value in params.items() if key.startswith(prefix)}


def reference_forward(graph: nx.DiGraph, params: dict, x, keep: bool = False):
    """Forward (N, D, H, W) through the graph; returns the output, or every node's value."""
    values = {}
    for name in ordered(graph):
        data = graph.nodes[name]
        inputs = [values[source] for source in data["inputs"]] or [np.asarray(x, np.float64)]
        values[name] = REGISTRY[data["op"]].reference(data, inputs, node_params(params, name))
    return values if keep else values[graph.graph["output"]]
