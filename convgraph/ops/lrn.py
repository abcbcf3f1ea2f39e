"""Local response normalisation across channels: AlexNet's and GoogLeNet's LRN.

PyTorch's ``nn.LocalResponseNorm`` and ONNX's ``LRN``: each value is divided by a power of the
sum of squares of the ``size`` channels around it at the same pixel,
``y_c = x_c / (k + alpha / size * sum_{|c' - c| <= size // 2} x_c'^2) ^ beta``, the window cut
at the first and last channel (counted as zeros, so the divisor is always ``size``). Only odd
sizes: for even ones PyTorch and ONNX centre the window differently.
"""

from __future__ import annotations

import numpy as np

from convgraph.ops import values as v
from convgraph.ops.base import OnnxLayer, OnnxUnsupported, Op, Param, register
from convgraph.ops.cases import Case

LARGEST_WINDOW = 255  # channels; the kernels loop over the window once per value


def odd_window(value):
    """An odd channel count from 1 to LARGEST_WINDOW (the window is centred on its channel)."""
    expects = f"an odd whole number from 1 to {LARGEST_WINDOW}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(expects)
    if not 1 <= value <= LARGEST_WINDOW or value % 2 == 0:
        raise ValueError(expects)
    return value


@register
class LRN(Op):
    name = "lrn"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "LRN(3)", output="8x6x5", params=0, macs=0),
        Case("4x3x7", "LRN(5)", grad=True),
        Case("3x2x1", "LRN(3, alpha=0.5, beta=0.6, k=2)", grad=True),  # depth 1: window cut
        Case("3x3x6", "LRN(1, alpha=0.3)", grad=True),
        Case("13x9x17", "LRN(5, alpha=0.01)", batch=7, other_profile=True),
        Case("6x5x3", "LRN(7, alpha=0.2, beta=0.5, k=1.5)", batch=1),  # window past both ends
        Case("5x3x1", "LRN(3, alpha=0.4)", batch=2),  # depth 1
        Case("7x7x3", "CONV(24, 3, pad=1)-LRN(5, alpha=0.1)-CONV(6, 3, pad=1)", batch=3),
    )
    aliases = ("local_response_norm",)
    summary = "Divide each value by a power of the sum of squares of its neighbouring channels."
    positional = ("size",)
    kernels = ("lrn",)
    onnx_types = ("LRN",)
    onnx_notes = "odd size; alpha, beta, bias (the `k`)"

    def from_onnx(self, node):
        size = int(node.attr("size"))
        if size % 2 == 0:
            raise OnnxUnsupported(f"size {size}: convgraph's window is centred, so odd")
        return OnnxLayer({"size": size, "alpha": float(node.attr("alpha", 1e-4)),
                          "beta": float(node.attr("beta", 0.75)),
                          "k": float(node.attr("bias", 1.0))})
    colour = "#e0cffc"
    params = {
        "size": Param(odd_window, doc="channels in the window, centred on each channel",
                      expects=f"an odd whole number from 1 to {LARGEST_WINDOW}"),
        "alpha": Param(v.number(0.0), default=1e-4, doc="scale of the mean of squares"),
        "beta": Param(v.number(0.0), default=0.75, doc="exponent of the divisor"),
        "k": Param(v.number(0.0, exclusive_min=True), default=1.0,
                   doc="added to the scaled sum (ONNX's bias); > 0, so the divisor is too"),
    }

    def infer(self, node):
        return node.input_volumes[0], {}

    def onnx_export(self, node, onnx):
        # ONNX's LRN is PyTorch's for odd sizes (the only ones convgraph takes)
        attrs = node.attrs
        onnx.add("LRN", onnx.inputs, output=onnx.output, size=int(attrs["size"]),
                 alpha=float(attrs["alpha"]), beta=float(attrs["beta"]), bias=float(attrs["k"]))

    def flops(self, node):
        # per value: the window's squares and sums, the scale and k, the power, the division
        return (2 * node.attrs["size"] + 4) * node.output.elements

    def _launch(self, ctx, selector: str, args: list, accumulate: int = 0, flops: int = 0):
        """One work-item per (channel, pixel), over the channel stride (padding written 0)."""
        x, y = ctx.input_layout(), ctx.output_layout
        volume = x.volume
        defines = {"HEIGHT": volume.height, "WIDTH": volume.width, "CHANNELS": volume.depth,
                   "HALF_WINDOW": ctx.attrs["size"] // 2,
                   "ALPHA_OVER_SIZE": ctx.attrs["alpha"] / ctx.attrs["size"],
                   "BETA": ctx.attrs["beta"], "K": ctx.attrs["k"], "ACCUMULATE": accumulate,
                   **x.defines("X"), **y.defines("Y")}
        ctx.launch("lrn", selector, defines, (x.stride_c, volume.width, volume.height), args,
                   batch_axis=2, local_size=ctx.profile.pixel_local, flops=flops,
                   moved=4 * 2 * volume.elements)

    def lower(self, ctx) -> None:
        self._launch(ctx, "LRN_FORWARD", [ctx.input_tensor(), ctx.output_tensor],
                     flops=ctx.node.flops)

    def lower_backward(self, ctx) -> None:
        if not ctx.needs_grad():
            return
        grad, accumulate = ctx.input_grad()
        self._launch(ctx, "LRN_BACKWARD", [ctx.input_tensor(), ctx.output_grad, grad],
                     accumulate)

    # --- the float64 reference ---

    @staticmethod
    def _window_sums(node, values):
        """Sum of ``values`` (N, D, H, W) over each channel's window, zeros past the ends."""
        half = node.attrs["size"] // 2
        padded = np.pad(values, ((0, 0), (half, half), (0, 0), (0, 0)))
        running = np.concatenate([np.zeros_like(padded[:, :1]), np.cumsum(padded, axis=1)],
                                 axis=1)
        depth = values.shape[1]
        return running[:, 2 * half + 1: 2 * half + 1 + depth] - running[:, :depth]

    def _divisor_base(self, node, x):
        """k + alpha / size * (the window's sum of squares): the divisor before the power."""
        attrs = node.attrs
        return attrs["k"] + attrs["alpha"] / attrs["size"] * self._window_sums(node, x * x)

    def reference(self, node, inputs, params):
        x = np.asarray(inputs[0], np.float64)
        return x * self._divisor_base(node, x) ** -node.attrs["beta"]

    def reference_backward(self, node, inputs, output, grad, params, seed):
        # dx_j = g_j s_j^-beta - 2 beta alpha/size x_j sum_{c: j in window(c)} g_c x_c s_c^(-beta-1)
        # and j is in c's window exactly when c is in j's (the window is symmetric)
        x = np.asarray(inputs[0], np.float64)
        grad = np.asarray(grad, np.float64)
        attrs = node.attrs
        base = self._divisor_base(node, x)
        through = self._window_sums(node, grad * x * base ** (-attrs["beta"] - 1))
        dx = grad * base ** -attrs["beta"] - (
            2 * attrs["beta"] * attrs["alpha"] / attrs["size"]) * x * through
        return [dx], {}
