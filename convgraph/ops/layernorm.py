"""Layer normalisation over channels: ConvNeXt's LayerNorm on NCHW volumes.

Each pixel of each image is normalised over its D channels (PyTorch's ``F.layer_norm`` over
the last axis of the NHWC tensor, which is what ConvNeXt's ``LayerNorm(data_format=
"channels_first")`` computes), then scaled and shifted by learned per-channel weight and bias:
``y = (x - mean_c x) / sqrt(var_c x + eps) * weight + bias``, the variance biased (divided by
D). Unlike batchnorm, training and inference compute the same thing: there are no running
statistics, and the batch size does not matter.
"""

from __future__ import annotations

import numpy as np

from convgraph.ops import values as v
from convgraph.ops.base import (
    NotExportable,
    OnnxLayer,
    OnnxUnsupported,
    Op,
    Param,
    Weight,
    register,
)
from convgraph.ops.cases import Case

# LAYERNORM_TRAIN saves (mean, 1/std) of every pixel for the backward kernels
STATS_PER_PIXEL = 2


@register
class LayerNorm(Op):
    name = "layernorm"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "LAYERNORM", output="8x6x5", params=10, macs=0),
        Case("4x3x6", "LAYERNORM", grad=True),
        Case("3x2x1", "LAYERNORM(eps=0.1)", grad=True),  # depth 1: every x is its own mean
        Case("13x9x17", "LAYERNORM", batch=7, other_profile=True),
        Case("5x7x3", "LAYERNORM(eps=1e-5)", batch=1),
        Case("5x3x1", "LAYERNORM", batch=3),  # depth 1: y = bias, dx = 0
        Case("3x2x96", "LAYERNORM", batch=2),  # ConvNeXt-Tiny's first width
        Case("7x5x6", "CONV(20, 3, pad=1)-LAYERNORM-CONV(5, 3, pad=1)", batch=4),  # halos
        Case("6x5x4", {  # the input read with a halo (the conv pads it) and a residual join
            "ln": {"op": "layernorm", "inputs": ["input"]},
            "conv": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},
            "add": {"op": "add", "inputs": ["ln", "conv"]},
        }, batch=2, label="halo"),
    )
    aliases = ("layer_norm", "ln")
    summary = "Normalise each pixel over its channels, then scale and shift (learned)."
    kernels = ("layernorm", "reduction")  # reduction: SUM_SPLITS of the parameter gradients
    onnx_types = ("LayerNormalization",)
    onnx_notes = ("over the channels only: the channels-last pattern (Transpose to NHWC, "
                  "axis -1, Transpose back), the last axis of an (N, C) input, and the "
                  "decomposed ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div (and Mul, Add) "
                  "over axis 1 or, within those Transposes or on (N, C), axis -1; eps kept")

    def from_onnx(self, node):
        # the importer's pattern pass marks the LayerNormalization it makes of those patterns
        # (channels_only): one found alone in an NCHW graph normalises over other axes, but
        # over an (N, C) input (ConvNeXt's head, after the mean over space) it is the same
        shape = node.input_shapes[0]
        pooled = shape is not None and len(shape) == 2 and node.attr("axis", -1) in (-1, 1)
        if not node.attr("channels_only", 0) and not pooled:
            raise OnnxUnsupported(f"axis {node.attr('axis', -1)} on {node.input_shapes[0]}: "
                                  "convgraph normalises each pixel over its channels (the "
                                  "channels-last Transpose, LayerNormalization axis -1, "
                                  "Transpose back that exporters write)")
        if len(node.output_shapes) > 1 and any(s is not None for s in node.output_shapes[1:]):
            raise OnnxUnsupported("its Mean and InvStdDev outputs are not supported")
        depth = int(node.input_shapes[0][1])
        weight = np.asarray(node.constant(1, "scale"), np.float64).reshape(-1)
        bias = np.asarray(node.constant(2, "bias"), np.float64).reshape(-1) \
            if node.has_input(2) else np.zeros(depth)
        if weight.size != depth or bias.size != depth:
            raise OnnxUnsupported(f"scale and bias of {weight.size} and {bias.size} values "
                                  f"for {depth} channels")
        return OnnxLayer({"eps": float(node.attr("epsilon", 1e-5))},
                         {"weight": weight, "bias": bias})
    colour = "#e0cffc"
    params = {
        # ConvNeXt's default; PyTorch's nn.LayerNorm defaults to 1e-5 (write eps: 1e-5 for it)
        "eps": Param(
            v.number(0.0, 1.0, exclusive_min=True), default=1e-6, doc="added to the variance"
        ),
    }

    def infer(self, node):
        return node.input_volumes[0], {}

    def weights(self, node):
        depth = node.output.depth
        return {"weight": Weight((depth,), "ones"), "bias": Weight((depth,), "zeros")}

    def onnx_export(self, node, onnx):
        # ONNX's LayerNormalization (opset 17) normalises the trailing axes: channels moved
        # last and back
        if onnx.opset < 17:
            raise NotExportable("layernorm needs opset 17 or later (ONNX's LayerNormalization)")
        channels_last = onnx.add("Transpose", onnx.inputs, perm=[0, 2, 3, 1])
        normalised = onnx.add("LayerNormalization",
                              [channels_last, onnx.param("weight"), onnx.param("bias")],
                              axis=-1, epsilon=float(node.attrs["eps"]))
        onnx.add("Transpose", [normalised], output=onnx.output, perm=[0, 3, 1, 2])

    def flops(self, node):
        # per value: mean (1), variance (3: subtract, square, add), normalise, scale, shift (4)
        return 8 * node.output.elements

    # --- the kernels ---

    def _defines(self, ctx, x, y) -> dict:
        volume = x.volume
        return {"HEIGHT": volume.height, "WIDTH": volume.width, "CHANNELS": volume.depth,
                "EPSILON": ctx.attrs["eps"], **x.defines("X"), **y.defines("Y")}

    def _pixel_launch(self, ctx, selector: str, args: list, defines: dict, flops: int = 0):
        """One work-item per pixel (w, n * HEIGHT + h), looping over its channels."""
        volume = ctx.input_layout().volume
        ctx.launch("layernorm", selector, defines, (volume.width, volume.height), args,
                   batch_axis=1, flops=flops,
                   moved=4 * 2 * volume.elements)

    def lower(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        self._pixel_launch(
            ctx, "LAYERNORM_FORWARD",
            [ctx.input_tensor(), ctx.param("weight"), ctx.param("bias"), ctx.output_tensor],
            self._defines(ctx, x, y), ctx.node.flops)

    def _stats(self, ctx):
        """The (mean, 1/std) of every pixel, one image per split: a buffer of the batch's size
        that LAYERNORM_TRAIN writes and the backward kernels read."""
        volume = ctx.input_layout().volume
        stats, _ = ctx.split_scratch("stats", STATS_PER_PIXEL * volume.height * volume.width, 1)
        return stats

    def lower_train(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        self._pixel_launch(
            ctx, "LAYERNORM_TRAIN",
            [ctx.input_tensor(), ctx.param("weight"), ctx.param("bias"), ctx.output_tensor,
             self._stats(ctx)],
            self._defines(ctx, x, y), ctx.node.flops)

    def lower_backward(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        stats = self._stats(ctx)
        defines = self._defines(ctx, x, y)
        # the reduce kernel lays each split's partial sums X_STRIDE_C apart
        assert ctx.param_elements("weight") == x.stride_c, "layernorm parameters as stored"
        dweight, images = ctx.split_sum("weight")
        dbias, _ = ctx.split_sum("bias", images)
        ctx.channel_split_launch(
            "layernorm", "LAYERNORM_BACKWARD_REDUCE", {"X": x, "Y": y},
            [ctx.input_tensor(), ctx.output_grad, stats, dweight, dbias, ctx.BATCH], images,
            {"CHANNELS": x.volume.depth})
        ctx.sum_splits("weight")
        ctx.sum_splits("bias")
        if ctx.needs_grad():
            grad, accumulate = ctx.input_grad()
            self._pixel_launch(
                ctx, "LAYERNORM_BACKWARD_DATA",
                [ctx.input_tensor(), ctx.output_grad, ctx.param("weight"), stats, grad],
                {**defines, "ACCUMULATE": accumulate})

    def device_params(self, node, params, input_layout, output_layout):
        # padding channels get weight 0 and bias 0: they come out as 0
        out = {}
        for key in ("weight", "bias"):
            padded = np.zeros(output_layout.stride_c, np.float32)
            padded[: output_layout.volume.depth] = params[key]
            out[key] = padded
        return out

    def device_param_elements(self, node, input_layout, output_layout):
        return dict.fromkeys(("weight", "bias"), output_layout.stride_c)

    def host_params(self, node, device, input_layout, output_layout):
        depth = output_layout.volume.depth
        return {key: np.asarray(value)[:depth].copy() for key, value in device.items()}

    # --- the float64 reference ---

    @staticmethod
    def _normalised(node, x):
        """(xhat, 1/std) of x: (N, D, H, W), the statistics over D, kept as (N, 1, H, W)."""
        mean = x.mean(axis=1, keepdims=True)
        inverse = 1.0 / np.sqrt(x.var(axis=1, keepdims=True) + node.attrs["eps"])
        return (x - mean) * inverse, inverse

    def reference(self, node, inputs, params):
        xhat, _ = self._normalised(node, np.asarray(inputs[0], np.float64))
        weight = np.asarray(params["weight"], np.float64)[None, :, None, None]
        bias = np.asarray(params["bias"], np.float64)[None, :, None, None]
        return xhat * weight + bias

    def reference_backward(self, node, inputs, output, grad, params, seed):
        grad = np.asarray(grad, np.float64)
        xhat, inverse = self._normalised(node, np.asarray(inputs[0], np.float64))
        weight = np.asarray(params["weight"], np.float64)[None, :, None, None]
        scaled = grad * weight  # dL/dxhat
        dx = inverse * (scaled - scaled.mean(axis=1, keepdims=True)
                        - xhat * (scaled * xhat).mean(axis=1, keepdims=True))
        return [dx], {"weight": (grad * xhat).sum(axis=(0, 2, 3)),
                      "bias": grad.sum(axis=(0, 2, 3))}
