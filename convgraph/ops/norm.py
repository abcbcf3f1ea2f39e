"""Batch normalisation and dropout: training-time layers with the input's volume."""

from __future__ import annotations

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


@register
class Dropout(Op):
    name = "dropout"
    summary = "Zero values with probability rate in training (scaling the rest); identity after."
    positional = ("rate",)
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
