"""Elementwise activations and softmax: the output volume equals the input volume."""

from __future__ import annotations

import numpy as np

from convgraph.ops import values as v
from convgraph.ops.base import Op, Param, register


class Elementwise(Op):
    """An activation: elementwise.cl's ACTIVATION_FORWARD/_BACKWARD with its ``activation_code``
    (which also lets it run fused as the epilogue of a conv, fc or batchnorm before it)."""

    flops_per_element = 1
    kernels = ("elementwise",)

    def infer(self, node):
        return node.input_volumes[0], {}

    def flops(self, node):
        return self.flops_per_element * node.output.elements

    def lower(self, ctx) -> None:
        code, slope = self.epilogue_args(ctx.node)
        ctx.pixel_launch(
            "elementwise",
            "ACTIVATION_FORWARD",
            {"X": ctx.input_layout(), "Y": ctx.output_layout},
            [ctx.input_tensor(), ctx.output_tensor],
            {"ACTIVATION": code, "SLOPE": slope},
            ctx.node.flops,
        )

    def reference(self, node, inputs, params):
        return self.function(np.asarray(inputs[0], np.float64), **node.attrs)

    def lower_backward(self, ctx) -> None:
        grad, accumulate = ctx.input_grad()
        code, slope = self.epilogue_args(ctx.node)
        ctx.pixel_launch(
            "elementwise",
            "ACTIVATION_BACKWARD",
            {"Y": ctx.output_layout, "X": ctx.input_layout()},
            [ctx.output_tensor, ctx.output_grad, grad],
            {"ACTIVATION": code, "SLOPE": slope, "ACCUMULATE": accumulate},
        )

    def reference_backward(self, node, inputs, output, grad, params, seed):
        return [grad * self.derivative(output, **node.attrs)], {}


@register
class Relu(Elementwise):
    name = "relu"
    summary = "max(0, x)."
    activation_code = "ACT_RELU"

    def function(self, x):
        return np.maximum(x, 0.0)

    def derivative(self, y):  # from the output, as the kernels compute it
        return (y > 0).astype(np.float64)


@register
class LeakyRelu(Elementwise):
    name = "leakyrelu"
    aliases = ("leaky_relu", "lrelu")
    summary = "x if x > 0 else slope * x."
    positional = ("slope",)
    params = {"slope": Param(v.number(0.0, 1.0), default=0.01, doc="slope for x < 0")}
    flops_per_element = 2
    activation_code = "ACT_LEAKY_RELU"

    def epilogue_args(self, node):
        return self.activation_code, float(node.attrs["slope"])

    def function(self, x, slope):
        return np.where(x > 0, x, x * slope)

    def derivative(self, y, slope):
        return np.where(y > 0, 1.0, slope)


@register
class Sigmoid(Elementwise):
    name = "sigmoid"
    summary = "1 / (1 + exp(-x))."
    flops_per_element = 4
    activation_code = "ACT_SIGMOID"

    def function(self, x):
        return 1.0 / (1.0 + np.exp(-x))

    def derivative(self, y):
        return y * (1.0 - y)


@register
class Tanh(Elementwise):
    name = "tanh"
    summary = "tanh(x)."
    flops_per_element = 4
    activation_code = "ACT_TANH"

    def function(self, x):
        return np.tanh(x)

    def derivative(self, y):
        return 1.0 - y * y


@register
class Softmax(Elementwise):
    name = "softmax"
    summary = "exp(x) / sum(exp(x)) along depth, at each (x, y)."
    flops_per_element = 4  # subtract max, exp, sum, divide
    kernels = ("reduction",)
    loss_reads_input = True  # the cross-entropy kernel applies its own softmax

    def lower(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        volume = x.volume
        ctx.launch(
            "reduction",
            "SOFTMAX_FORWARD",
            {
                "HEIGHT": volume.height,
                "WIDTH": volume.width,
                "CHANNELS": volume.depth,
                **x.defines("X"),
                **y.defines("Y"),
            },
            (volume.width, volume.height),
            [ctx.input_tensor(), ctx.output_tensor],
            batch_axis=1,
            flops=ctx.node.flops,
            moved=8 * volume.elements,
        )

    def function(self, x):
        shifted = np.exp(x - x.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def lower_backward(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        grad, accumulate = ctx.input_grad()
        volume = x.volume
        ctx.launch(
            "reduction",
            "SOFTMAX_BACKWARD",
            {
                "HEIGHT": volume.height,
                "WIDTH": volume.width,
                "CHANNELS": volume.depth,
                "ACCUMULATE": accumulate,
                **x.defines("X"),
                **y.defines("Y"),
            },
            (volume.width, volume.height),
            [ctx.output_tensor, ctx.output_grad, grad],
            batch_axis=1,
        )


    def reference_backward(self, node, inputs, output, grad, params, seed):
        return [output * (grad - (grad * output).sum(axis=1, keepdims=True))], {}
