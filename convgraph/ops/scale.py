"""A learned per-channel multiplier (layer scale, as ConvNeXt puts one after each block)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convgraph.ops import values as v
from convgraph.ops.base import Op, Param, Weight, register
from convgraph.ops.cases import Case


@dataclass(frozen=True)
class ConstantWeight(Weight):
    """A weight that starts at one value everywhere (layer scale's ``init``, e.g. 1e-6)."""

    value: float = 1.0

    def initial(self, rng: np.random.Generator, scheme: str = "he") -> np.ndarray:
        return np.full(self.shape, self.value)


@register
class Scale(Op):
    name = "scale"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "SCALE", output="8x6x5", params=5, macs=0),
        Case("7x7x96", "SCALE(init=1e-6)", output="7x7x96", params=96, macs=0),
        Case("4x3x3", "SCALE", grad=True),
        Case("5x7x3", "SCALE", batch=7),
        Case("1x1x20", "SCALE(init=0.5)", batch=1),
        Case("9x7x3", "CONV(12, 3, pad=1)-SCALE-RELU", batch=7, other_profile=True),
        Case("13x9x17", "SCALE(init=1e-6)-CONV(5, 3, pad=1)", batch=1),  # writes into a halo
    )
    aliases = ("layerscale", "layer_scale")
    summary = "Multiply each depth slice by a learned factor (layer scale)."
    kernels = ("scale", "reduction")  # reduction: SUM_SPLITS of the weight's gradient
    colour = "#e0cffc"
    positional = ("init",)
    params = {
        "init": Param(v.number(), default=1.0, doc="the factors' first value (ConvNeXt: 1e-6)"),
    }

    def infer(self, node):
        return node.input_volumes[0], {}

    def weights(self, node):
        return {"weight": ConstantWeight((node.output.depth,), "ones",
                                         value=node.attrs["init"])}

    def flops(self, node):
        return node.output.elements  # one multiply per value

    def device_params(self, node, params, input_layout, output_layout):
        # padding channels get factor 0: they stay 0
        padded = np.zeros(output_layout.stride_c, np.float32)
        padded[: output_layout.volume.depth] = params["weight"]
        return {"weight": padded}

    def device_param_elements(self, node, input_layout, output_layout):
        return {"weight": output_layout.stride_c}

    def host_params(self, node, device, input_layout, output_layout):
        return {"weight": np.asarray(device["weight"])[: output_layout.volume.depth].copy()}

    def lower(self, ctx) -> None:
        layouts = {"X": ctx.input_layout(), "Y": ctx.output_layout}
        ctx.pixel_launch("scale", "SCALE_FORWARD", layouts,
                         [ctx.input_tensor(), ctx.param("weight"), ctx.output_tensor], None,
                         ctx.node.flops, shapes_at_run_time=True)

    def reference(self, node, inputs, params):
        factors = np.asarray(params["weight"], np.float64)[None, :, None, None]
        return np.asarray(inputs[0], np.float64) * factors

    def onnx_export(self, node, onnx):  # the (D,) factors as (1, D, 1, 1), broadcast by Mul
        factors = onnx.add("Reshape", [onnx.param("weight"),
                                       onnx.constant("factor_shape", [1, -1, 1, 1], "int64")])
        onnx.add("Mul", [onnx.inputs[0], factors], output=onnx.output)

    def lower_backward(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        partial, images = ctx.split_sum("weight")  # dL/dweight = sum of dy * x per channel
        # the partial sums lie y's channel stride apart: the weight's elements (device_params)
        ctx.channel_split_launch("scale", "SCALE_BACKWARD_WEIGHT", {"X": x, "Y": y},
                                 [ctx.input_tensor(), ctx.output_grad, partial, ctx.BATCH],
                                 images, shapes_at_run_time=True)
        ctx.sum_splits("weight")
        if ctx.needs_grad():
            grad, accumulate = ctx.input_grad()
            ctx.pixel_launch("scale", "SCALE_BACKWARD_DATA", {"X": x, "Y": y},
                             [ctx.output_grad, ctx.param("weight"), grad],
                             {"ACCUMULATE": accumulate}, shapes_at_run_time=True)

    def reference_backward(self, node, inputs, output, grad, params, seed):
        x = np.asarray(inputs[0], np.float64)
        factors = np.asarray(params["weight"], np.float64)[None, :, None, None]
        return [grad * factors], {"weight": (grad * x).sum(axis=(0, 2, 3))}
