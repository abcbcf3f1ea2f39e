"""Fully connected (FC) layers and flattening of volumes into vectors."""

from __future__ import annotations

from convgraph.ops import values as v
from convgraph.ops.base import Op, Param, Volume, register


@register
class Dense(Op):
    name = "fc"
    aliases = ("dense", "linear", "fully_connected")
    summary = "Fully connected layer (FC): every output sees every input; output 1x1xunits."
    positional = ("units",)
    params = {
        "units": Param(v.integer(1), doc="number of outputs"),
        "bias": Param(v.boolean, default=True, doc="add a learned bias per output"),
    }

    def infer(self, layer, inputs):
        return Volume(1, 1, layer.attrs["units"]), {}

    def parameter_shapes(self, layer, inputs, output):
        # (units, inputs) with inputs flattened in (depth, height, width) order, as PyTorch does
        shapes = {"weight": (output.depth, inputs[0].elements)}
        if layer.attrs["bias"]:
            shapes["bias"] = (output.depth,)
        return shapes

    def macs(self, layer, inputs, output, derived):
        return inputs[0].elements * output.depth


@register
class Flatten(Op):
    name = "flatten"
    summary = "Reshape a volume to 1x1x(W*H*D) in (depth, height, width) order; implicit before fc."

    def infer(self, layer, inputs):
        return Volume(1, 1, inputs[0].elements), {}

    def flops(self, layer, inputs, output, derived):
        return 0
