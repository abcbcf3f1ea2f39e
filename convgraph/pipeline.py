"""The compile pipeline, read as its sentence: spec -> graph -> shapes -> passes.

(Code generation and the runtime extend this: -> plan -> kernels -> run.)
"""

from __future__ import annotations

import networkx as nx

from convgraph.graph import build_graph
from convgraph.passes import insert_flatten, mark_fusions
from convgraph.shapes import infer_shapes
from convgraph.spec import load_spec


def analyse(source, overrides=()) -> nx.DiGraph:
    """Parse, build, shape-check and annotate a network; raises SpecError on any problem.

    >>> g = analyse({"input": "32x32x3", "pattern": "[INPUT-CONV(12, 3, pad=1)-RELU-POOL-FC(10)]"})
    >>> [str(g.nodes[n]["output"]) for n in ("conv1", "pool1", "fc1")]
    ['32x32x12', '16x16x12', '1x1x10']
    """
    spec = load_spec(source, overrides)
    graph = build_graph(spec)
    infer_shapes(graph)
    insert_flatten(graph)
    mark_fusions(graph)
    graph.graph["spec"] = spec
    return graph
