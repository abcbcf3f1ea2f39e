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


def pixel_cross_entropy(logits: np.ndarray, masks: np.ndarray, smoothing: float = 0.0,
                        ignore_label: int = 255):
    """Per-pixel softmax cross-entropy of (N, C, H, W) scores against (N, H, W) masks, as
    PyTorch's ``cross_entropy(logits, masks, ignore_index=ignore_label, label_smoothing=...)``:
    pixels labelled ``ignore_label`` add no loss, no gradient and no count.

    Returns per-image loss sums and correct-pixel counts over the counted pixels, the counted
    pixels per image, and d(loss averaged over the batch's counted pixels)/d(logits) (zero
    everywhere when no pixel counts).
    """
    logits = np.asarray(logits, np.float64)
    masks = np.asarray(masks)
    classes = logits.shape[1]
    counted = masks != ignore_label  # (N, H, W)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    onehot = np.moveaxis(np.eye(classes)[np.where(counted, masks, 0)], -1, 1)  # (N, C, H, W)
    target = onehot * (1.0 - smoothing) + smoothing / classes
    pixel_loss = -(target * log_p).sum(axis=1) * counted
    total = max(int(counted.sum()), 1)
    grad = (np.exp(log_p) - target) * counted[:, None] / total
    right = (logits.argmax(axis=1) == masks) & counted
    return (pixel_loss.sum(axis=(1, 2)), right.sum(axis=(1, 2)), counted.sum(axis=(1, 2)), grad)


def loss_and_gradient(logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0,
                      ignore_label: int = 255):
    """The training loss of a batch: (per-image losses, per-image correct, d loss/d logits).
    Class scores (N, C, 1, 1) with (N,) labels take the classification loss, a spatial map
    (N, C, H, W) with (N, H, W) masks the per-pixel one (losses and correct then summed over
    each image's counted pixels)."""
    if logits.ndim == 4 and logits.shape[2] * logits.shape[3] > 1:
        losses, correct, _, grad = pixel_cross_entropy(logits, labels, smoothing, ignore_label)
        return losses, correct, grad
    return softmax_cross_entropy(logits, labels, smoothing)


def reference_gradients(graph: nx.DiGraph, params: dict, x, labels, seed: int = 0,
                        smoothing: float = 0.0, ignore_label: int = 255):
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
    losses, correct, d_logits = loss_and_gradient(values[logits], np.asarray(labels),
                                                  smoothing, ignore_label)
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
