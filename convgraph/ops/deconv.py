"""Transposed convolution (deconv): each input pixel scatters its kernel-weighted values onto
the output, stride apart; the conv's input-gradient kernel run forward (conv.cl).

A deconv from D to E is the adjoint of the conv from E to D with the same weights, stride,
padding, dilation and groups; so its forward pass is that conv's CONV_BACKWARD_DATA, the
gradient of its input that conv's CONV_FORWARD, and the gradient of its weights that conv's
CONV_BACKWARD_WEIGHTS with the roles of input and gradient swapped. The weights are PyTorch's
ConvTranspose2d (in, out/groups, kh, kw): exactly that conv's (filters, channels/groups, kh,
kw), so the conv's device layout serves all three kernels and PyTorch weights port directly.
"""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.ops import values as v
from convgraph.ops.base import OnnxLayer, OnnxUnsupported, Op, Param, Weight, register
from convgraph.ops.cases import Case
from convgraph.ops.conv import _tuned_forward  # the conv's tuned forward kernel, reused as is
from convgraph.ops.spatial import choose_tile, onnx_pair, widest_dividing


def transposed_extent(size: int, kernel: int, stride: int, pad: int, dilation: int,
                      output_padding: int) -> int:
    """Output size along one axis, as PyTorch's ConvTranspose2d:
    (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1.

    >>> transposed_extent(7, 3, 2, 1, 1, 1)
    14
    """
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1


# An encoder-decoder in miniature: conv down, deconv and bilinear upsampling back up, the skip
# concatenated, a per-pixel 1x1 head (three classes per pixel)
TINY_UNET = {
    "down1": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},
    "relu1": "relu",
    "pool": {"op": "pool", "size": 2},
    "down2": {"op": "conv", "filters": 8, "size": 3, "pad": 1},
    "relu2": "relu",
    "up": {"op": "deconv", "filters": 4, "size": 2, "stride": 2},
    "side": {"op": "upsample", "factor": 2, "mode": "bilinear", "inputs": ["relu2"]},
    "skip": {"op": "concat", "inputs": ["up", "relu1", "side"]},
    "fuse": {"op": "conv", "filters": 4, "size": 3, "pad": 1},
    "relu3": "relu",
    "scores": {"op": "conv", "filters": 3, "size": 1},
}


@register
class Deconv(Op):
    name = "deconv"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        # shape rule: (W - 1) * S - 2P + D * (F - 1) + output_padding + 1; parameters
        # C_in * (C_out / groups) * kh * kw + C_out; multiply-adds per input value
        Case("7x7x8", "DECONV(4, 2, stride=2)", output="14x14x4", params=8 * 4 * 4 + 4,
             macs=49 * 8 * 4 * 4),
        Case("7x5x8", "DECONV(4, 3, stride=2, pad=1, output_padding=1)", output="14x10x4",
             params=8 * 4 * 9 + 4, macs=35 * 8 * 4 * 9),
        Case("5x5x6", "DECONV(9, 3, groups=3, bias=false)", output="7x7x9", params=6 * 3 * 9,
             macs=25 * 6 * 3 * 9),
        Case("4x3x2", "DECONV(3, 3x2, stride=3x1, dilation=2, pad=1x0)", output="12x5x3",
             params=2 * 3 * 6 + 3, macs=12 * 2 * 3 * 6),
        # finite differences of the numpy backward
        Case("4x3x3", "DECONV(4, 3, stride=2, pad=1, output_padding=1)", grad=True),
        Case("3x4x4", "DECONV(6, 2, stride=3, groups=2)", grad=True),
        Case("4x4x2", "DECONV(3, 3, dilation=2, pad=2, bias=false)", grad=True),
        # device kernels: strides 1 to 3, output_padding, groups, dilation, odd sizes, batch 1
        Case("7x5x3", "DECONV(4, 2, stride=2)", batch=7, other_profile=True),
        Case("7x5x8", "DECONV(5, 3, stride=2, pad=1, output_padding=1)", batch=1),
        Case("5x4x6", "DECONV(12, 3, pad=1)", batch=7, other_profile=True),  # stride 1
        Case("4x5x3", "DECONV(2, 4x3, stride=3, pad=1x0, output_padding=2x1)", batch=1),
        Case("6x5x8", "DECONV(12, 3, stride=2, pad=1, groups=4)", batch=7),
        Case("5x5x4", "DECONV(3, 3, dilation=2, pad=2, bias=false)", batch=1),
        Case("9x3x17", "DECONV(20, 3, stride=2)", batch=1),  # depth 17, 20 filters
        Case("1x1x5", "DECONV(3, 4, stride=2, pad=1)", batch=7),  # one pixel in
        # fused epilogues, with and without a bias
        Case("7x5x3", "DECONV(6, 2, stride=2)-RELU", batch=7, other_profile=True),
        Case("5x4x4", "DECONV(4, 3, stride=2, bias=false)-LEAKYRELU(0.2)", batch=1),
        Case("5x4x4", "DECONV(5, 3, pad=1)-SIGMOID", batch=1),
        # a conv reading its output (a halo), and a relu after the conv before it
        Case("5x4x3", "CONV(6, 3, pad=1)-RELU-DECONV(4, 2, stride=2)-CONV(3, 3, pad=1)",
             batch=7),
        Case("8x6x3", TINY_UNET, batch=7, other_profile=True, label="tiny-unet"),
    )
    aliases = ("deconvolution", "conv_transpose", "convtranspose", "transposed_conv")
    summary = ("Transposed convolution (DECONV): each input pixel scatters the kernel onto the "
               "output, stride apart (upsampling with learned weights).")
    positional = ("filters", "size", "stride", "pad")
    kernels = ("conv", "deconv", "reduction")  # reduction: SUM_SPLITS, CHANNEL_SUM
    takes_epilogue = True  # deconv.cl's DECONV_EPILOGUE applies it with the bias
    onnx_types = ("ConvTranspose",)
    onnx_notes = ("2-D; pads (more before than after becomes output_padding), "
                  "output_padding, output_shape and auto_pad where they give whole pads, "
                  "strides, dilations, group")

    def from_onnx(self, node):
        weight = node.constant(1, "weight")
        if weight.ndim != 4:
            raise OnnxUnsupported(f"its weight has {weight.ndim} axes: convgraph deconvolves "
                                  "2-D")
        groups = int(node.attr("group", 1))
        kernel = tuple(int(n) for n in node.attr("kernel_shape", weight.shape[2:]))
        stride = tuple(int(n) for n in node.attr("strides", (1, 1)))
        dilation = tuple(int(n) for n in node.attr("dilations", (1, 1)))
        extra = tuple(int(n) for n in node.attr("output_padding", (0, 0)))
        before, after = self._onnx_transposed_pads(node, kernel, stride, dilation, extra)
        pad, output_padding = [], []
        for axis, begin, end, s, d, e in zip(("H", "W"), before, after, stride, dilation,
                                             extra):
            added = e + begin - end  # rows kept at the end beyond PyTorch's symmetric crop
            if not 0 <= added < max(s, d):
                raise OnnxUnsupported(f"pads {begin} before and {end} after along {axis} "
                                      f"(output_padding {e}): convgraph crops the same before "
                                      "and after, then adds below the stride at the end")
            pad.append(begin)
            output_padding.append(added)
        attrs = {"filters": int(weight.shape[1]) * groups, "size": onnx_pair(kernel),
                 "stride": onnx_pair(stride), "pad": onnx_pair(pad),
                 "output_padding": onnx_pair(output_padding), "dilation": onnx_pair(dilation),
                 "groups": groups, "bias": node.has_input(2)}
        weights = {"weight": weight}
        if node.has_input(2):
            weights["bias"] = node.constant(2, "bias")
        return OnnxLayer(attrs, weights)

    @staticmethod
    def _onnx_transposed_pads(node, kernel, stride, dilation, extra) -> tuple[tuple, tuple]:
        """The (H, W) pads ONNX's ConvTranspose crops before and after: its pads, or the total
        its output_shape (or auto_pad SAME_*: the input times the stride) leaves, split as ONNX
        splits it (SAME_UPPER puts the odd one after, the others before)."""
        auto_pad = node.attr("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if node.attr("output_shape") is None and auto_pad in ("NOTSET", "VALID"):
            pads = [int(p) for p in node.attr("pads", [0, 0, 0, 0])] if auto_pad == "NOTSET" \
                else [0, 0, 0, 0]
            return (pads[0], pads[1]), (pads[2], pads[3])
        size = node.spatial_input()
        output = node.output_shapes[0]
        if output is None or not all(isinstance(n, int) for n in output[2:]):
            raise OnnxUnsupported("its output shape is unknown")
        before, after = [], []
        for n, out, k, s, d, e in zip(size, output[2:], kernel, stride, dilation, extra):
            total = s * (n - 1) + e + (k - 1) * d + 1 - int(out)
            if total < 0:
                raise OnnxUnsupported(f"output_shape {list(output[2:])} is larger than the full "
                                      "transposed convolution: it would need negative pads")
            first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            before.append(first)
            after.append(total - first)
        return tuple(before), tuple(after)
    colour = "#cfe2ff"
    params = {
        "filters": Param(v.integer(1), doc="number of filters = output depth"),
        "size": Param(v.pair(1), doc="kernel size, int or WxH"),
        "stride": Param(v.pair(1), default=(1, 1), doc="stride, int or WxH"),
        "pad": Param(v.pair(0), default=(0, 0),
                     doc="padding removed from each side of the output, int or WxH"),
        "output_padding": Param(v.pair(0), default=(0, 0),
                                doc="rows and columns added at the bottom and right (below "
                                "stride or dilation), int or WxH"),
        "dilation": Param(v.pair(1), default=(1, 1), doc="spacing between kernel taps"),
        "groups": Param(v.integer(1), default=1, doc="split input and filters into groups"),
        "bias": Param(v.boolean, default=True, doc="add a learned bias per filter"),
    }

    def onnx_export(self, node, onnx):
        # the weight is ConvTranspose's (in, out / groups, kH, kW) as it is PyTorch's
        (kw, kh), (sw, sh), (dw, dh), (pw, ph), (ow, oh) = (node.attrs[key] for key in (
            "size", "stride", "dilation", "pad", "output_padding"))
        weights = [onnx.param("weight")] + ([onnx.param("bias")] if node.attrs["bias"] else [])
        onnx.add("ConvTranspose", onnx.inputs + weights, output=onnx.output,
                 kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw],
                 pads=[ph, pw, ph, pw], output_padding=[oh, ow], group=node.attrs["groups"])

    def infer(self, node):
        (x,) = node.input_volumes
        a = node.attrs
        groups = a["groups"]
        for what, count in (("input depth", x.depth), ("filters", a["filters"])):
            if count % groups:
                raise node.error(
                    f"{what} {count} is not divisible by groups {groups}.",
                    attr="groups" if what == "input depth" else "filters",
                    hint=f"choose groups that divide both the input depth ({x.depth}) and "
                    f"filters ({a['filters']}).",
                )
        extents = []
        for axis, index, size in (("width", 0, x.width), ("height", 1, x.height)):
            kernel, stride, pad = a["size"][index], a["stride"][index], a["pad"][index]
            dilation, extra = a["dilation"][index], a["output_padding"][index]
            if extra >= max(stride, dilation):
                raise node.error(
                    f"output_padding {axis} {extra} is not below the stride ({stride}) or the "
                    f"dilation ({dilation}); it would add rows no input pixel reaches.",
                    attr="output_padding",
                    hint=f"use output_padding {max(stride, dilation) - 1} or less, as "
                    "PyTorch's ConvTranspose2d requires.",
                )
            extent = transposed_extent(size, kernel, stride, pad, dilation, extra)
            if extent < 1:
                most = (transposed_extent(size, kernel, stride, 0, dilation, extra) - 1) // 2
                raise node.error(
                    f"output {axis} ({size} - 1)*{stride} - 2*{pad} + {dilation}*({kernel} - 1)"
                    f" + {extra} + 1 = {extent} is below 1.",
                    attr="pad",
                    hint=f"use pad {most} or less.",
                )
            extents.append(extent)
        pad_w, pad_h = a["pad"]
        derived = {"groups": groups, "pad_left": pad_w, "pad_top": pad_h}
        return Volume(extents[0], extents[1], a["filters"]), derived

    def weights(self, node):
        (x,) = node.input_volumes
        kw, kh = node.attrs["size"]
        groups = node.attrs["groups"]
        weights = {"weight": Weight((x.depth, node.attrs["filters"] // groups, kh, kw),
                                    "fan_in")}
        if node.attrs["bias"]:
            weights["bias"] = Weight((node.attrs["filters"],), "zeros")
        return weights

    def macs(self, node):
        kw, kh = node.attrs["size"]
        (x,) = node.input_volumes
        return x.elements * (node.attrs["filters"] // node.attrs["groups"]) * kh * kw

    def output_grad_halo(self, node):
        # the gradient of the output is the input of the equivalent conv (CONV_FORWARD and
        # CONV_BACKWARD_WEIGHTS read it without bounds checks): its padding, less the rows
        # output_padding added at the bottom and right
        (pad_w, pad_h), (extra_w, extra_h) = node.attrs["pad"], node.attrs["output_padding"]
        return (pad_h, max(pad_h - extra_h, 0), pad_w, max(pad_w - extra_w, 0))

    def lower(self, ctx) -> None:
        defines, width = _equivalent_conv_defines(ctx)
        out = ctx.node.output
        groups = ctx.derived["groups"]
        channel_tile = widest_dividing(out.depth // groups, 4)
        stride_w = ctx.attrs["stride"][0]
        phase_pixels = -(-out.width // stride_w)  # output pixels of one stride phase
        # PoCL replicates private arrays across a work-group: TILE_PIXELS x CHANNEL_TILE
        # vectors kept at most 16, as for the conv's own input gradient
        site, knobs = ctx.tuned("CONV_BACKWARD_DATA", defines, [
            {"TILE_PIXELS": choose_tile(phase_pixels, pixels), "CHANNEL_TILE": channels}
            for pixels in (ctx.profile.grad_tile_pixels, 2, 4, 8)
            for channels in (channel_tile, 1, 2, 4)
            if channels <= channel_tile and pixels * channels <= 16])
        ctx.launch(
            "conv", "CONV_BACKWARD_DATA", {**defines, **knobs, "ACCUMULATE": 0},
            (out.depth // knobs["CHANNEL_TILE"],
             stride_w * -(-phase_pixels // knobs["TILE_PIXELS"]), out.height),
            [ctx.input_tensor(), ctx.param("weight"), ctx.output_tensor], batch_axis=2,
            flops=ctx.node.flops, site=site,
            moved=4 * (ctx.input_layout().volume.elements + out.elements))
        activation, slope = ctx.epilogue()
        if ctx.attrs["bias"] or activation != "ACT_NONE":
            # no bias: the bias slot is any buffer, unread
            bias = ctx.param("bias") if ctx.attrs["bias"] else ctx.param("weight")
            ctx.pixel_launch("deconv", "DECONV_EPILOGUE", {"Y": ctx.output_layout},
                             [ctx.output_tensor, bias],
                             {"HAS_BIAS": int(ctx.attrs["bias"]), "EPILOGUE": activation,
                              "EPILOGUE_SLOPE": slope}, flops=out.elements)

    def lower_backward(self, ctx) -> None:
        defines, width = _equivalent_conv_defines(ctx)
        groups = ctx.derived["groups"]
        out, x = ctx.node.output, ctx.input_layout()
        (kw, kh) = ctx.attrs["size"]
        # dW: the equivalent conv's weight gradient, its input being dL/d(output) and its
        # output gradient this node's input
        wide = widest_dividing(out.depth // groups, 16)
        vectors = defines["K_ALLOC"] // groups // width
        space = [{"CHANNEL_TILE": c, "IMAGES_PER_SPLIT": i, "FILTER_VECTORS": f}
                 for c in (wide, 8, 4, 2, 1) if c <= wide
                 for i in (ctx.profile.images_per_split, 1, 2, 4, 8, 16)
                 for f in (1, 2, 4) if vectors % f == 0 and c * f <= 16]
        site, knobs = ctx.tuned("CONV_BACKWARD_WEIGHTS", defines, space)
        partial, images = ctx.split_sum("weight", knobs["IMAGES_PER_SPLIT"])
        ctx.launch(
            "conv", "CONV_BACKWARD_WEIGHTS", {**defines, **knobs},
            (defines["K_ALLOC"] // width // knobs["FILTER_VECTORS"],
             out.depth // knobs["CHANNEL_TILE"], kh * kw),
            [ctx.output_grad, ctx.input_tensor(), partial, ctx.BATCH], batch_axis=2,
            flops=ctx.node.flops, batch_divisor=images, site=site)
        ctx.sum_splits("weight", site)
        if ctx.attrs["bias"]:
            ctx.channel_sum(ctx.output_grad, ctx.output_layout, "bias")
        if not ctx.needs_grad():
            return
        # dL/d(input): the equivalent conv's forward pass over dL/d(output)
        grad, accumulate = ctx.input_grad()
        # with a gate (an activation fused into the layer before), the bias slot carries that
        # activation's output and the gradient leaves differentiated through it, as the
        # conv's own stride-1 input gradient does
        gate, gate_slope, bias_slot = (ctx.input_gate(accumulate)
                                       or ("ACT_NONE", 0.0, ctx.param("weight")))
        shape = {**defines, "ACCUMULATE": accumulate, "GATE": gate, "GATE_SLOPE": gate_slope}
        shape, grid, local, site = _tuned_forward(
            ctx, shape, width, out.depth // groups, defines["K_ALLOC"] // groups,
            x.volume.width)
        ctx.launch("conv", "CONV_FORWARD", shape, grid,
                   [ctx.output_grad, ctx.param("weight"), bias_slot, grad],
                   batch_axis=2, local_size=local, flops=ctx.node.flops, site=site)

    def device_params(self, node, params, input_layout, output_layout):
        groups = node.attrs["groups"]
        weight = np.asarray(params["weight"], np.float32)  # (C_in, C_out/g, kh, kw)
        cin, cog, kh, kw = weight.shape
        k_alloc = _inputs_allocated(node, input_layout)
        # -> (g, kh, kw, C_out/g, C_in/g): the equivalent conv's layout (conv.cl), input
        # channels padded to K_ALLOC / groups
        grouped = weight.reshape(groups, cin // groups, cog, kh, kw).transpose(0, 3, 4, 2, 1)
        device = np.zeros((groups, kh, kw, cog, k_alloc // groups), np.float32)
        device[..., : cin // groups] = grouped
        bias = np.zeros(output_layout.stride_c, np.float32)  # whole vectors (DECONV_EPILOGUE)
        if node.attrs["bias"]:
            bias[: node.attrs["filters"]] = params["bias"]
        return {"weight": device, "bias": bias}

    def device_param_elements(self, node, input_layout, output_layout):
        _, cog, kh, kw = node["param_shapes"]["weight"]
        elements = {"weight": kh * kw * cog * _inputs_allocated(node, input_layout)}
        elements["bias"] = output_layout.stride_c
        return elements

    def host_params(self, node, device, input_layout, output_layout):
        groups = node.attrs["groups"]
        cin, cout = input_layout.volume.depth, node.attrs["filters"]
        kw, kh = node.attrs["size"]
        k_alloc = _inputs_allocated(node, input_layout)
        relaid = np.asarray(device["weight"]).reshape(groups, kh, kw, cout // groups,
                                                      k_alloc // groups)
        weight = relaid[..., : cin // groups].transpose(0, 4, 3, 1, 2)
        host = {"weight": np.ascontiguousarray(weight.reshape(cin, cout // groups, kh, kw))}
        if node.attrs["bias"]:
            host["bias"] = np.asarray(device["bias"])[:cout].copy()
        return host

    def reference(self, node, inputs, params):
        """Each input pixel (h, w) adds input x kernel at output (h S - P + r D, w S - P + s D)."""
        (x,) = inputs
        x = np.asarray(x, np.float64)  # (N, C_in, H, W)
        weight = np.asarray(params["weight"], np.float64)  # (C_in, C_out/g, kh, kw)
        full, crop = _uncropped(node, x.shape)
        (sw, sh), (dw, dh) = node.attrs["stride"], node.attrs["dilation"]
        height, width = x.shape[2:]
        for r in range(weight.shape[2]):
            for s in range(weight.shape[3]):
                full[:, :, r * dh:r * dh + (height - 1) * sh + 1:sh,
                     s * dw:s * dw + (width - 1) * sw + 1:sw] += _grouped(
                         "nihw,io->nohw", x, weight[:, :, r, s], node.attrs["groups"])
        out = full[crop]
        if node.attrs["bias"]:
            out = out + np.asarray(params["bias"], np.float64)[None, :, None, None]
        return out

    def reference_backward(self, node, inputs, output, grad, params, seed):
        (x,) = inputs
        x = np.asarray(x, np.float64)
        weight = np.asarray(params["weight"], np.float64)
        groups = node.attrs["groups"]
        full, crop = _uncropped(node, x.shape)
        full[crop] = grad  # dL/d(output) in the uncropped output's frame
        (sw, sh), (dw, dh) = node.attrs["stride"], node.attrs["dilation"]
        height, width = x.shape[2:]
        d_x = np.zeros_like(x)
        d_weight = np.zeros_like(weight)
        cin_g = weight.shape[0] // groups
        for r in range(weight.shape[2]):
            for s in range(weight.shape[3]):
                read = full[:, :, r * dh:r * dh + (height - 1) * sh + 1:sh,
                            s * dw:s * dw + (width - 1) * sw + 1:sw]  # (N, C_out, H, W)
                d_x += _grouped("nohw,io->nihw", read, weight[:, :, r, s], groups)
                for g in range(groups):
                    cout_g = weight.shape[1]
                    d_weight[g * cin_g:(g + 1) * cin_g, :, r, s] = np.einsum(
                        "nihw,nohw->io", x[:, g * cin_g:(g + 1) * cin_g],
                        read[:, g * cout_g:(g + 1) * cout_g])
        d_params = {"weight": d_weight}
        if node.attrs["bias"]:
            d_params["bias"] = np.asarray(grad).sum(axis=(0, 2, 3))
        return [d_x], d_params


def _grouped(subscripts: str, volume, taps, groups: int):
    """One kernel tap of a grouped transposed conv: ``volume`` (N, C, H, W) times ``taps``
    (C_in, C_out/g), group by group; "nihw,io->nohw" scatters, "nohw,io->nihw" gathers back."""
    cin_g, cout_g = taps.shape[0] // groups, taps.shape[1]
    read_g = cin_g if subscripts.startswith("nihw") else cout_g
    return np.concatenate([
        np.einsum(subscripts, volume[:, g * read_g:(g + 1) * read_g],
                  taps[g * cin_g:(g + 1) * cin_g]) for g in range(groups)], axis=1)


def _uncropped(node, input_shape) -> tuple[np.ndarray, tuple]:
    """Zeros for the whole scatter of an (N, C_in, H, W) input, before the padding is cut away
    and output_padding added, and the index of the output inside it."""
    (kw, kh), (sw, sh) = node.attrs["size"], node.attrs["stride"]
    (dw, dh), (pad_w, pad_h) = node.attrs["dilation"], node.attrs["pad"]
    out = node.output
    height = max((input_shape[2] - 1) * sh + dh * (kh - 1) + 1, pad_h + out.height)
    width = max((input_shape[3] - 1) * sw + dw * (kw - 1) + 1, pad_w + out.width)
    full = np.zeros((input_shape[0], out.depth, height, width))
    crop = (slice(None), slice(None), slice(pad_h, pad_h + out.height),
            slice(pad_w, pad_w + out.width))
    return full, crop


def _inputs_allocated(node, input_layout) -> int:
    """Input channels as the weights store them (the equivalent conv's K_ALLOC): padded to the
    input's channel stride when ungrouped, exactly C_in when grouped."""
    return input_layout.stride_c if node.attrs["groups"] == 1 else input_layout.volume.depth


def _equivalent_conv_defines(ctx) -> tuple[dict, int]:
    """conv.cl's constants for the conv this deconv is the adjoint of (output -> input): its
    input (X) is this node's output, its output (Y) this node's input; and the vector width
    over its filters (this node's input channels)."""
    attrs, derived = ctx.attrs, ctx.derived
    x, y = ctx.input_layout(), ctx.output_layout
    groups = derived["groups"]
    if groups == 1:
        width = ctx.vector_width(x)
    else:
        width = widest_dividing(x.volume.depth // groups, ctx.profile.max_vector)
    (kw, kh), (sw, sh), (dw, dh) = attrs["size"], attrs["stride"], attrs["dilation"]
    return {
        "IN_CHANNELS": y.volume.depth, "FILTERS": x.volume.depth, "GROUPS": groups,
        "KERNEL_H": kh, "KERNEL_W": kw, "STRIDE_H": sh, "STRIDE_W": sw,
        "DILATION_H": dh, "DILATION_W": dw,
        "PAD_TOP": derived["pad_top"], "PAD_LEFT": derived["pad_left"],
        "IN_H": y.volume.height, "IN_W": y.volume.width,
        "OUT_H": x.volume.height, "OUT_W": x.volume.width,
        "K_ALLOC": _inputs_allocated(ctx.node, x), "VECTOR_WIDTH": width,
        "HAS_BIAS": 0, "EPILOGUE": "ACT_NONE", "EPILOGUE_SLOPE": 0.0,
        "GATE": "ACT_NONE", "GATE_SLOPE": 0.0,
        **y.defines("X"), **x.defines("Y"),
    }, width
