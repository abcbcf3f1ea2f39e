"""Elementwise activations and softmax: the output volume equals the input volume."""

from __future__ import annotations

from convgraph.ops import values as v
from convgraph.ops.base import Op, Param, register


class Elementwise(Op):
    flops_per_element = 1

    def infer(self, layer, inputs):
        return inputs[0], {}

    def flops(self, layer, inputs, output, derived):
        return self.flops_per_element * output.elements


@register
class Relu(Elementwise):
    name = "relu"
    summary = "max(0, x)."


@register
class LeakyRelu(Elementwise):
    name = "leakyrelu"
    aliases = ("leaky_relu", "lrelu")
    summary = "x if x > 0 else slope * x."
    positional = ("slope",)
    params = {"slope": Param(v.number(0.0, 1.0), default=0.01, doc="slope for x < 0")}
    flops_per_element = 2


@register
class Sigmoid(Elementwise):
    name = "sigmoid"
    summary = "1 / (1 + exp(-x))."
    flops_per_element = 4


@register
class Tanh(Elementwise):
    name = "tanh"
    summary = "tanh(x)."
    flops_per_element = 4


@register
class Softmax(Elementwise):
    name = "softmax"
    summary = "exp(x) / sum(exp(x)) along depth, at each (x, y)."
    flops_per_element = 4  # subtract max, exp, sum, divide
