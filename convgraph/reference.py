"""The numpy reference executor: the whole graph in float64, op by op (ops/ ``reference``).

This is the living definition the generated kernels are checked against, in tests and by
``convgraph run --verify``.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from convgraph.graph import loss_input, ordered
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


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0):
    """Mean loss over the batch, per-image correctness, and d(mean loss)/d(logits)."""
    z = logits.reshape(logits.shape[0], -1)
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    classes = z.shape[1]
    target = np.full(z.shape, smoothing / classes)
    target[np.arange(z.shape[0]), labels] += 1.0 - smoothing
    losses = -(target * log_p).sum(axis=1)
    grad = (np.exp(log_p) - target) / z.shape[0]
    return losses, z.argmax(axis=1) == labels, grad.reshape(logits.shape)


def reference_gradients(graph: nx.DiGraph, params: dict, x, labels, seed: int = 0,
                        smoothing: float = 0.0):
    """One training-mode forward and backward pass in float64.

    Returns (per-image losses, per-image correctness, values by node, gradients by node output,
    parameter gradients by '<node>.<key>')."""
    names = ordered(graph)
    values = {}
    for name in names:
        data = graph.nodes[name]
        inputs = [values[source] for source in data["inputs"]] or [np.asarray(x, np.float64)]
        values[name] = REGISTRY[data["op"]].reference_train(data, inputs,
                                                            node_params(params, name), seed)
    logits = loss_input(graph)  # before a final softmax: the loss applies its own
    losses, correct, d_logits = softmax_cross_entropy(values[logits], np.asarray(labels),
                                                      smoothing)
    grads = {logits: d_logits}
    param_grads = {}
    for name in reversed(names[: names.index(logits) + 1]):
        data = graph.nodes[name]
        if name not in grads or not data["inputs"]:
            continue
        inputs = [values[source] for source in data["inputs"]]
        d_inputs, d_params = REGISTRY[data["op"]].reference_backward(
            data, inputs, values[name], grads[name], node_params(params, name), seed)
        for source, grad in zip(data["inputs"], d_inputs):
            grads[source] = grads[source] + grad if source in grads else grad
        param_grads.update({f"{name}.{key}": value for key, value in d_params.items()})
    return losses, correct, values, grads, param_grads
