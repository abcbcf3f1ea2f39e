"""Batch normalisation and dropout: training-time layers with the input's volume."""

from __future__ import annotations

import numpy as np

from convgraph.ops import values as v
from convgraph.ops.base import Op, Param, register


@register
class BatchNorm(Op):
    name = "batchnorm"
    aliases = ("bn", "batch_norm")
    summary = "Normalise each depth slice over the batch, then scale and shift (learned)."
    params = {
        "eps": Param(
            v.number(0.0, 1.0, exclusive_min=True), default=1e-5, doc="added to the variance"
        ),
        "momentum": Param(
            v.number(0.0, 1.0), default=0.1, doc="weight of the new batch in the running statistics"
        ),
    }

    def infer(self, layer, inputs):
        return inputs[0], {}

    def parameter_shapes(self, layer, inputs, output):
        return {"weight": (output.depth,), "bias": (output.depth,)}

    def buffer_shapes(self, layer, inputs, output):
        return {"running_mean": (output.depth,), "running_var": (output.depth,)}

    def flops(self, layer, inputs, output, derived):
        return 2 * output.elements  # inference: one scale, one shift

    def lower(self, ctx) -> None:
        activation, slope = ctx.epilogue()
        args = [("tensor", ctx.input_storage())]
        args += [("param", ctx.name, key) for key in ("weight", "bias", "running_mean",
                                                      "running_var")]
        ctx.pixel_launch("norm", "BATCHNORM_INFERENCE",
                         {"X": ctx.input_layout(), "Y": ctx.output_layout},
                         args + [("tensor", ctx.output_storage)],
                         {"EPSILON": ctx.attrs["eps"], "EPILOGUE": activation,
                          "EPILOGUE_SLOPE": slope}, ctx.node["flops"])

    def device_params(self, node, params, input_layout, output_layout):
        # padding channels get gamma 0, variance 1: they come out as 0, never NaN
        out = {}
        for key, fill in (("weight", 0.0), ("bias", 0.0), ("running_mean", 0.0),
                          ("running_var", 1.0)):
            padded = np.full(output_layout.stride_c, fill, np.float32)
            padded[: output_layout.volume.depth] = params[key]
            out[key] = padded
        return out

    def reference(self, node, inputs, params):
        def channel(key):
            return np.asarray(params[key], np.float64)[None, :, None, None]

        x = np.asarray(inputs[0], np.float64)
        scale = channel("weight") / np.sqrt(channel("running_var") + node["attrs"]["eps"])
        return (x - channel("running_mean")) * scale + channel("bias")


@register
class Dropout(Op):
    name = "dropout"
    summary = "Zero values with probability rate in training (scaling the rest); identity after."
    positional = ("rate",)
    inference_identity = True
    params = {
        "rate": Param(
            v.number(0.0, 1.0, exclusive_max=True),
            default=0.5,
            doc="probability of dropping a value",
        )
    }

    def infer(self, layer, inputs):
        return inputs[0], {}

    def flops(self, layer, inputs, output, derived):
        return 0

    def reference(self, node, inputs, params):
        return np.asarray(inputs[0], np.float64)  # inference
