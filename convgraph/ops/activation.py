"""Elementwise activations and softmax: the output volume equals the input volume."""

from __future__ import annotations

import numpy as np

from convgraph.ops import values as v
from convgraph.ops.base import Op, Param, register
from convgraph.ops.cases import Case


class Elementwise(Op):
    """An activation: elementwise.cl's ACTIVATION_FORWARD/_BACKWARD with its ``activation_code``
    (which also lets it run fused as the epilogue of a conv, fc or batchnorm before it)."""

    flops_per_element = 1
    kernels = ("elementwise",)
    onnx_op: str | None = None  # the ONNX operator computing it (onnx_attributes: its settings)

    def onnx_attributes(self, node) -> dict:
        return {}

    def onnx_export(self, node, onnx):
        if self.onnx_op is None:
            super().onnx_export(node, onnx)
            return
        onnx.add(self.onnx_op, onnx.inputs, output=onnx.output, **self.onnx_attributes(node))

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
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "RELU", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "RELU", grad=True, kinks=True),
        Case("13x9x17", "RELU", batch=7),
    )
    summary = "max(0, x)."
    activation_code = "ACT_RELU"
    onnx_op = "Relu"

    def function(self, x):
        return np.maximum(x, 0.0)

    def derivative(self, y):  # from the output, as the kernels compute it
        return (y > 0).astype(np.float64)


@register
class LeakyRelu(Elementwise):
    name = "leakyrelu"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "LEAKYRELU(0.1)", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "LEAKYRELU(0.2)", grad=True, kinks=True),
        Case("5x5x3", "LEAKYRELU(0.2)", batch=1),
        Case("7x3x20", "LEAKYRELU", batch=7),
    )
    aliases = ("leaky_relu", "lrelu")
    summary = "x if x > 0 else slope * x."
    positional = ("slope",)
    params = {"slope": Param(v.number(0.0, 1.0), default=0.01, doc="slope for x < 0")}
    flops_per_element = 2
    activation_code = "ACT_LEAKY_RELU"
    onnx_op = "LeakyRelu"

    def epilogue_args(self, node):
        return self.activation_code, float(node.attrs["slope"])

    def onnx_attributes(self, node):
        return {"alpha": float(node.attrs["slope"])}

    def function(self, x, slope):
        return np.where(x > 0, x, x * slope)

    def derivative(self, y, slope):
        return np.where(y > 0, 1.0, slope)


@register
class Sigmoid(Elementwise):
    name = "sigmoid"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "SIGMOID", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "SIGMOID", grad=True),
        Case("7x3x20", "SIGMOID", batch=7),
    )
    summary = "1 / (1 + exp(-x))."
    flops_per_element = 4
    activation_code = "ACT_SIGMOID"
    onnx_op = "Sigmoid"

    def function(self, x):
        return 1.0 / (1.0 + np.exp(-x))

    def derivative(self, y):
        return y * (1.0 - y)


@register
class Tanh(Elementwise):
    name = "tanh"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "TANH", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "TANH", grad=True),
        Case("6x6x5", "TANH", batch=1),
        Case("9x4x1", "TANH", batch=7, other_profile=True),
    )
    summary = "tanh(x)."
    flops_per_element = 4
    activation_code = "ACT_TANH"
    onnx_op = "Tanh"

    def function(self, x):
        return np.tanh(x)

    def derivative(self, y):
        return 1.0 - y * y


@register
class Softmax(Elementwise):
    name = "softmax"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("1x1x10", "SOFTMAX", output="1x1x10", params=0, macs=0),
        Case("3x2x5", "SOFTMAX", grad=True),
        Case("1x1x10", "SOFTMAX", batch=7),
        Case("3x2x7", "SOFTMAX", batch=1, other_profile=True),
        Case("1x1x20", "FC(33)-SOFTMAX", batch=17),  # more images than fc's tile of rows
    )
    summary = "exp(x) / sum(exp(x)) along depth, at each (x, y)."
    flops_per_element = 4  # subtract max, exp, sum, divide
    kernels = ("reduction",)
    loss_reads_input = True  # the cross-entropy kernel applies its own softmax
    onnx_op = "Softmax"  # opset 13 on: along the one axis given, as here

    def onnx_attributes(self, node):
        return {"axis": 1}

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
