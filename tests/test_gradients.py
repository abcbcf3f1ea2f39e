"""Every op's numpy backward (the reference the device kernels are held to) against central finite
differences in float64.

For a random projection R of the output, L = sum(forward(x) * R); d L / d x and d L / d params
from ``reference_backward`` (with dy = R) must match (L(v + h) - L(v - h)) / 2h at sampled
entries: |analytic - numeric| <= 1e-6 + 1e-5 |numeric| (h = 1e-5). Kinks are kept away: inputs
are pushed at least 0.05 from zero for ReLU-like ops, and max-pooling gets distinct values, as
Caffe's gradient checker does.
"""

from __future__ import annotations

import numpy as np
import pytest

from convgraph.ops.base import REGISTRY
from convgraph.pipeline import analyse
from convgraph.reference import node_params

CASES = [
    ("7x6x3", "CONV(4, 3, pad=1)"),
    ("9x7x4", "CONV(6, 3, stride=2, pad=same, groups=2)"),
    ("8x8x3", "CONV(5, 3, dilation=2, pad=2, bias=false)"),
    ("6x5x4", "CONV(8, 3, pad=1, groups=depthwise)"),
    ("9x7x2", "CONV(3, 5x3, stride=3x1, pad=1x0)"),
    ("8x6x3", "POOL(2)"),
    ("7x7x2", "POOL(3, 2, pad=1, rounding=ceil)"),
    ("7x7x2", "AVGPOOL(3, 2, pad=1)"),
    ("7x6x2", "AVGPOOL(3, 2, pad=1, count_pad=true, rounding=ceil)"),
    ("5x4x3", "GAP"),
    ("3x2x4", "FC(5)"),
    ("1x1x6", "FC(3, bias=false)"),
    ("3x2x4", "FLATTEN"),
    ("4x3x2", "RELU"),
    ("4x3x2", "LEAKYRELU(0.2)"),
    ("4x3x2", "SIGMOID"),
    ("4x3x2", "TANH"),
    ("3x2x5", "SOFTMAX"),
    ("4x3x3", "BN"),
    ("4x3x3", "DROPOUT(0.4)"),
]
MULTI = [
    {"input": "4x3x2", "nodes": {"a": {"op": "conv", "filters": 2, "size": 1, "inputs": ["input"]},
                                 "s": {"op": "add", "inputs": ["a", "input", "a"]}}},
    {"input": "4x3x2", "nodes": {"a": {"op": "conv", "filters": 3, "size": 1, "inputs": ["input"]},
                                 "c": {"op": "concat", "inputs": ["input", "a"]}}},
]
KINKS = ("relu", "leakyrelu", "pool")


def _graph(case):
    if isinstance(case, dict):
        return analyse(case)
    volume, layer = case
    return analyse({"input": volume, "pattern": f"[INPUT-{layer}]"})


def _check(name, graph, rng, batch=2):
    data = graph.nodes[name]
    op = REGISTRY[data["op"]]
    shapes = {**data["param_shapes"]}
    params = {key: rng.normal(size=shape) for key, shape in shapes.items()}
    inputs = []
    for source in data["inputs"]:
        volume = graph.nodes[source]["output"]
        x = rng.normal(size=(batch, volume.depth, volume.height, volume.width))
        if data["op"] in KINKS:  # away from the kinks of ReLU and the ties of max-pooling
            x = np.sign(x) * (np.abs(x) + 0.05) + rng.permutation(x.size).reshape(x.shape) * 1e-3
        inputs.append(x)
    seed = 1234
    out = op.reference_train(data, inputs, params, seed)
    projection = rng.normal(size=out.shape)

    def loss(current_inputs, current_params):
        return float((op.reference_train(data, current_inputs, current_params, seed)
                      * projection).sum())

    d_inputs, d_params = op.reference_backward(data, inputs, out, projection, params, seed)
    h = 1e-5
    for slot, x in enumerate(inputs):
        for index in _sample(x.shape, rng):
            plus = [v.copy() for v in inputs]
            minus = [v.copy() for v in inputs]
            plus[slot][index] += h
            minus[slot][index] -= h
            numeric = (loss(plus, params) - loss(minus, params)) / (2 * h)
            assert abs(d_inputs[slot][index] - numeric) <= 1e-6 + 1e-5 * abs(numeric), (
                name, slot, index, d_inputs[slot][index], numeric)
    for key, value in params.items():
        for index in _sample(value.shape, rng):
            plus, minus = dict(params), dict(params)
            plus[key], minus[key] = value.copy(), value.copy()
            plus[key][index] += h
            minus[key][index] -= h
            numeric = (loss(inputs, plus) - loss(inputs, minus)) / (2 * h)
            assert abs(d_params[key][index] - numeric) <= 1e-6 + 1e-5 * abs(numeric), (
                name, key, index, d_params[key][index], numeric)


def _sample(shape, rng, count=12):
    return [tuple(int(rng.integers(0, n)) for n in shape) for _ in range(count)]


@pytest.mark.parametrize("case", CASES, ids=[f"{v}-{layer}" for v, layer in CASES])
def test_reference_backward_matches_finite_differences(case):
    graph = _graph(case)
    (name,) = [n for n in graph if n != "input" and not graph.nodes[n].get("inserted")]
    _check(name, graph, np.random.default_rng(len(case[1])))


@pytest.mark.parametrize("case", MULTI, ids=["add-with-repeated-input", "concat"])
def test_reference_backward_of_joins(case):
    graph = _graph(case)
    _check(graph.graph["output"], graph, np.random.default_rng(7))


def test_every_op_with_a_backward_is_covered():
    covered = {_graph(case).nodes[n]["op"] for case in CASES + MULTI
               for n in _graph(case) if n != "input"}
    assert covered | {"input"} == set(REGISTRY)


def test_node_params_helper():
    assert node_params({"a.weight": 1, "a/b.bias": 2, "ab.weight": 3}, "a") == {"weight": 1}
