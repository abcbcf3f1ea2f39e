"""Convolution: filters x (depth/groups) x kernel, sliding with stride, padding and dilation."""

from __future__ import annotations

from convgraph.ops import values as v
from convgraph.ops.base import LayerDef, Op, Param, Volume, register
from convgraph.ops.spatial import slide


def resolved_groups(layer: LayerDef, depth: int) -> int:
    return depth if layer.attrs["groups"] == "depthwise" else layer.attrs["groups"]


@register
class Conv(Op):
    name = "conv"
    aliases = ("convolution", "conv2d")
    summary = "2-D convolution (CONV): filters slide over the input volume with shared weights."
    positional = ("filters", "size", "stride", "pad")
    params = {
        "filters": Param(v.integer(1), doc="number of filters = output depth"),
        "size": Param(v.pair(1), doc="kernel size, int or WxH"),
        "stride": Param(v.pair(1), default=(1, 1), doc="stride, int or WxH"),
        "pad": Param(
            v.padding,
            default=(0, 0),
            doc="zero padding per side: int, WxH, same (output = ceil(input/stride); "
            "odd extra padding bottom/right) or valid (0)",
        ),
        "dilation": Param(v.pair(1), default=(1, 1), doc="spacing between kernel taps"),
        "groups": Param(
            v.groups,
            default=1,
            doc="split input and filters into groups; depthwise = one per input channel",
        ),
        "bias": Param(v.boolean, default=True, doc="add a learned bias per filter"),
        "rounding": Param(
            v.ROUNDING,
            default=None,
            doc="exact (default: output size must be whole), floor or ceil",
        ),
    }

    def infer(self, layer, inputs):
        (x,) = inputs
        a = layer.attrs
        g = resolved_groups(layer, x.depth)
        if x.depth % g:
            raise layer.error(
                f"input depth {x.depth} is not divisible by groups {g}.",
                attr="groups",
                hint="choose groups that divide the input depth.",
            )
        if a["filters"] % g:
            raise layer.error(
                f"filters {a['filters']} is not divisible by groups {g}.",
                attr="filters",
                hint=f"use a multiple of {g} filters, e.g. {g * max(1, a['filters'] // g)}.",
            )
        (kw, kh), (sw, sh), (dw, dh) = a["size"], a["stride"], a["dilation"]
        pad_w, pad_h = ("same", "same") if a["pad"] == "same" else a["pad"]
        across = slide(layer, "width", x.width, kw, sw, pad_w, dw, a["rounding"])
        down = slide(layer, "height", x.height, kh, sh, pad_h, dh, a["rounding"])
        derived = {
            "groups": g,
            "pad_left": across.pad_before,
            "pad_right": across.pad_after,
            "pad_top": down.pad_before,
            "pad_bottom": down.pad_after,
        }
        return Volume(across.output, down.output, a["filters"]), derived

    def parameter_shapes(self, layer, inputs, output):
        (x,) = inputs
        g = resolved_groups(layer, x.depth)
        kw, kh = layer.attrs["size"]
        shapes = {"weight": (output.depth, x.depth // g, kh, kw)}
        if layer.attrs["bias"]:
            shapes["bias"] = (output.depth,)
        return shapes

    def macs(self, layer, inputs, output, derived):
        kw, kh = layer.attrs["size"]
        return output.elements * (inputs[0].depth // derived["groups"]) * kh * kw
