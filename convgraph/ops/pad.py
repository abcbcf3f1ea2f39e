"""Explicit zero padding around width and height (as ONNX's Pad and PyTorch's ZeroPad2d)."""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.ops import values as v
from convgraph.ops.base import OnnxLayer, OnnxUnsupported, Op, Param, register
from convgraph.ops.cases import Case

SIDES = ("left", "right", "top", "bottom")


@register
class Pad(Op):
    name = "pad"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        # shape rule
        Case("8x6x3", "PAD(1)", output="10x8x3", params=0, macs=0),
        Case("8x6x3", "PAD(2x1)", output="12x8x3", params=0, macs=0),
        Case("8x6x3", "PAD(left=1, top=2)", output="9x8x3", params=0, macs=0),
        Case("8x6x3", "PAD(3, right=0, bottom=1)", output="11x10x3", params=0, macs=0),
        # finite differences
        Case("4x3x2", "PAD(right=2, top=1)", grad=True),
        # device kernels: odd sizes, batch 1, uneven sides, halos read and written
        Case("13x9x5", "PAD(1)", batch=7),
        Case("7x5x20", "PAD(left=3, top=1, bottom=2)", batch=1, other_profile=True),
        Case("1x1x3", "PAD(2x1)", batch=1),
        Case("9x7x3", "CONV(4, 3, pad=1)-PAD(0, right=1, bottom=1)-CONV(5, 3, pad=1)", batch=7),
    )
    aliases = ("zeropad", "zero_pad")
    summary = "Zeros added around width and height: pad on every side, or each side its own."
    positional = ("pad",)
    kernels = ("pad",)
    onnx_types = ("Pad",)
    onnx_notes = ("zero, constant mode, H and W only: folded into the next conv or average "
                  "pool, or its own `pad` where a reader cannot take it (a max pool, a join)")

    def from_onnx(self, node):
        mode = node.attr("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        value = node.constant(2, "value") if node.has_input(2) else 0.0
        if node.has_input(3):
            raise OnnxUnsupported("a Pad with axes is not supported")
        if mode != "constant" or float(np.asarray(value).reshape(-1)[0]) != 0.0:
            raise OnnxUnsupported(f"mode '{mode}' with value {value}: convgraph pads with "
                                  "zeros")
        pads = [int(p) for p in np.asarray(node.constant(1, "pads")).reshape(-1)]
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
            raise OnnxUnsupported(f"pads {pads}: convgraph pads H and W only, by >= 0")
        top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
        if top == bottom and left == right:
            return OnnxLayer({"pad": top if top == left else [left, top]})
        return OnnxLayer({"left": left, "right": right, "top": top, "bottom": bottom})
    colour = "#fff3cd"
    params = {
        "pad": Param(v.pair(0), default=(0, 0),
                     doc="zeros on each side: int, WxH (left and right W, top and bottom H)"),
        **{side: Param(v.integer(0), default=None, doc=f"zeros on the {side} (default: pad)")
           for side in SIDES},
    }

    def derived_defaults(self, attrs):
        across, down = attrs["pad"]
        return {"left": across, "right": across, "top": down, "bottom": down}

    def infer(self, node):
        (x,) = node.input_volumes
        a = node.attrs
        return Volume(x.width + a["left"] + a["right"], x.height + a["top"] + a["bottom"],
                      x.depth), {}

    def flops(self, node):
        return 0  # a copy

    def _defines(self, ctx) -> tuple[dict, int]:
        x, y, a = ctx.input_layout(), ctx.output_layout, ctx.attrs
        width = ctx.vector_width(x, y)
        return {"IN_H": x.volume.height, "IN_W": x.volume.width, "OUT_H": y.volume.height,
                "OUT_W": y.volume.width, "PAD_TOP": a["top"], "PAD_LEFT": a["left"],
                "CHANNEL_VECTORS": y.stride_c // width, "VECTOR_WIDTH": width,
                **x.defines("X"), **y.defines("Y")}, width

    def lower(self, ctx) -> None:
        y = ctx.output_layout
        defines, width = self._defines(ctx)
        ctx.launch("pad", "PAD_FORWARD", defines,
                   (y.stride_c // width, y.volume.width, y.volume.height),
                   [ctx.input_tensor(), ctx.output_tensor], batch_axis=2,
                   local_size=ctx.profile.pixel_local,
                   moved=4 * (ctx.input_layout().volume.elements + y.volume.elements))

    def reference(self, node, inputs, params):
        a = node.attrs
        return np.pad(np.asarray(inputs[0], np.float64),
                      ((0, 0), (0, 0), (a["top"], a["bottom"]), (a["left"], a["right"])))

    def onnx_export(self, node, onnx):  # pads: (N, D, top, left) begins, then the ends
        a = node.attrs
        pads = [0, 0, a["top"], a["left"], 0, 0, a["bottom"], a["right"]]
        onnx.add("Pad", [onnx.inputs[0], onnx.constant("pads", pads, "int64")],
                 output=onnx.output, mode="constant")

    def lower_backward(self, ctx) -> None:
        x = ctx.input_layout()
        grad, accumulate = ctx.input_grad()
        defines, width = self._defines(ctx)
        defines["ACCUMULATE"] = accumulate
        ctx.launch("pad", "PAD_BACKWARD", defines,
                   (x.stride_c // width, x.volume.width, x.volume.height),
                   [ctx.output_grad, grad], batch_axis=2, local_size=ctx.profile.pixel_local)

    def reference_backward(self, node, inputs, output, grad, params, seed):
        a, (x,) = node.attrs, inputs
        height, width = x.shape[2:]
        return [grad[:, :, a["top"]:a["top"] + height, a["left"]:a["left"] + width].copy()], {}
