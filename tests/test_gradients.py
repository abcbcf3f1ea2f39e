"""Every op's numpy backward (the reference the device kernels are held to) against central finite
differences in float64.

For a random projection R of the output, L = sum(forward(x) * R); d L / d x and d L / d params
from ``reference_backward`` (with dy = R) must match (L(v + h) - L(v - h)) / 2h at sampled
entries: |analytic - numeric| <= 1e-6 + 1e-5 |numeric| (h = 1e-5). The cases are every op's
``Case(..., grad=True)`` (convgraph/ops/cases.py). Kinks are kept away: the inputs of a case
declared with ``kinks=True`` (ReLU-like ops, pooling) are pushed at least 0.05 from the op's
kinks (``Op.kinks``: zero unless declared, relu6's 0 and 6) and made distinct, so max-pooling has
no ties, as Caffe's gradient checker does; they are spread to reach kinks far from zero.
"""

from __future__ import annotations

import numpy as np
import pytest

from convgraph.ops.base import REGISTRY
from convgraph.ops.cases import cases_of, kinds_needed
from convgraph.pipeline import analyse
from convgraph.reference import node_params

# Every op's gradient cases (``Case(..., grad=True)`` in its class, convgraph/ops/): pattern-form
# cases check their one layer, graph-form ones (joins) their network's output.
GRADIENT_CASES = cases_of("gradient")
LAYER_CASES = [(op, case) for op, _, case in GRADIENT_CASES if case.form == "pattern"]
GRAPH_CASES = [(op, case) for op, _, case in GRADIENT_CASES if case.form != "pattern"]


def _check(name, graph, rng, kinks=False, batch=2):
    data = graph.nodes[name]
    op = REGISTRY[data["op"]]
    shapes = {**data["param_shapes"]}
    params = {key: rng.normal(size=shape) for key, shape in shapes.items()}
    inputs = []
    for source in data["inputs"]:
        volume = graph.nodes[source]["output"]
        x = rng.normal(size=(batch, volume.depth, volume.height, volume.width))
        if kinks:  # away from the kinks of ReLU and the ties of max-pooling
            x = _away_from(op.kinks(data), x, rng)
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


def _away_from(kinks, x, rng):
    """``x`` (standard normal) spread so that half its values lie beyond the farthest kink, each
    moved 0.05 further from its nearest kink, plus distinct steps of 1e-3 (no ties)."""
    kinks = np.asarray(kinks, np.float64)
    x = x * max(1.0, float(np.abs(kinks).max()) / 0.67)
    nearest = kinks[np.abs(x[..., None] - kinks).argmin(axis=-1)]
    offset = x - nearest
    x = nearest + np.sign(offset) * (np.abs(offset) + 0.05)
    return x + rng.permutation(x.size).reshape(x.shape) * 1e-3


def _sample(shape, rng, count=12):
    return [tuple(int(rng.integers(0, n)) for n in shape) for _ in range(count)]


@pytest.mark.parametrize(("op", "case"), LAYER_CASES,
                         ids=[f"{case.input}-{case.layers}" for _, case in LAYER_CASES])
def test_reference_backward_matches_finite_differences(op, case):
    graph = analyse(case.spec())
    name = case.subject(graph)
    assert graph.nodes[name]["op"] == op
    _check(name, graph, np.random.default_rng(len(case.layers)), case.kinks)


@pytest.mark.parametrize(("op", "case"), GRAPH_CASES,
                         ids=["-".join(filter(None, (op, case.label))) for op, case in GRAPH_CASES])
def test_reference_backward_of_joins(op, case):
    graph = analyse(case.spec())
    name = case.subject(graph)
    assert graph.nodes[name]["op"] == op
    _check(name, graph, np.random.default_rng(7), case.kinks)


def test_every_op_with_a_backward_is_covered():
    """A new op cannot go without: declare a ``Case(..., grad=True)`` (every op with inputs)."""
    covered = {op for op, _, _ in GRADIENT_CASES}
    missing = sorted(name for name, op in REGISTRY.items()
                     if "gradient" in kinds_needed(op) and name not in covered)
    assert not missing, f"ops with no gradient case (Case(..., grad=True)): {missing}"
    assert len(GRADIENT_CASES) >= 22  # as many as when the cases moved onto the ops, or more


def test_node_params_helper():
    assert node_params({"a.weight": 1, "a/b.bias": 2, "ab.weight": 3}, "a") == {"weight": 1}
