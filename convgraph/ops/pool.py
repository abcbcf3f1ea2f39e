"""Pooling: max or average over windows (POOL), and global average pooling."""

from __future__ import annotations

from convgraph.ops import values as v
from convgraph.ops.base import Op, Param, Volume, register
from convgraph.ops.spatial import slide


@register
class Pool(Op):
    name = "pool"
    aliases = ("maxpool", "avgpool", "pooling")
    presets = {"maxpool": {"mode": "max"}, "avgpool": {"mode": "avg"}}
    summary = "Max or average pooling (POOL) over size x size windows."
    positional = ("size", "stride")
    params = {
        "mode": Param(v.choice("max", "avg"), default="max", doc="max or avg"),
        "size": Param(v.pair(1), default=(2, 2), doc="window size, int or WxH"),
        "stride": Param(v.pair(1), default=None, doc="stride; defaults to the window size"),
        "pad": Param(v.padding, default=(0, 0), doc="padding per side: int, WxH, same or valid"),
        "count_pad": Param(
            v.boolean, default=False, doc="avg only: divide by the whole window, padding included"
        ),
        "rounding": Param(v.ROUNDING, default=None, doc="exact, floor or ceil"),
    }

    def infer(self, layer, inputs):
        (x,) = inputs
        a = layer.attrs
        (kw, kh), (sw, sh) = a["size"], a["stride"]
        if a["pad"] != "same":
            for pad, k, axis in ((a["pad"][0], kw, "width"), (a["pad"][1], kh, "height")):
                if 2 * pad > k:
                    raise layer.error(
                        f"padding {pad} is more than half the window {axis} {k}; some windows "
                        "would hold only padding.",
                        attr="pad",
                        hint=f"use pad {k // 2} or less.",
                    )
        pad_w, pad_h = ("same", "same") if a["pad"] == "same" else a["pad"]
        across = slide(layer, "width", x.width, kw, sw, pad_w, 1, a["rounding"], kw // 2)
        down = slide(layer, "height", x.height, kh, sh, pad_h, 1, a["rounding"], kh // 2)
        derived = {
            "pad_left": across.pad_before,
            "pad_right": across.pad_after,
            "pad_top": down.pad_before,
            "pad_bottom": down.pad_after,
        }
        return Volume(across.output, down.output, x.depth), derived

    def flops(self, layer, inputs, output, derived):
        kw, kh = layer.attrs["size"]
        return output.elements * kw * kh  # one compare or add per tap


@register
class GlobalAvgPool(Op):
    name = "gap"
    aliases = ("globalavgpool", "global_avg_pool", "globalpool")
    summary = "Global average pooling: each depth slice averaged to one value (1x1xD)."

    def infer(self, layer, inputs):
        (x,) = inputs
        return Volume(1, 1, x.depth), {}

    def flops(self, layer, inputs, output, derived):
        return inputs[0].elements
