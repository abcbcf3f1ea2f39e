"""Convolution: filters x (depth/groups) x kernel, sliding with stride, padding and dilation."""

from __future__ import annotations

import itertools
import math

import numpy as np

from convgraph.core import Volume
from convgraph.ops import conv_gemm, winograd
from convgraph.ops import values as v
from convgraph.ops.base import (
    InputExtent,
    Node,
    OnnxLayer,
    OnnxUnsupported,
    Op,
    Param,
    Weight,
    fold_output_affine,
    register,
)
from convgraph.ops.cases import Case
from convgraph.ops.spatial import (
    choose_tile,
    covering_pads,
    onnx_pair,
    onnx_window,
    reference_unwindow,
    reference_windows,
    slide,
    widest_dividing,
)


def resolved_groups(node: Node, depth: int) -> int:
    return depth if node.attrs["groups"] == "depthwise" else node.attrs["groups"]


@register
class Conv(Op):
    name = "conv"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        # shape rule: (W - F + 2P)/S + 1, and parameters K * (C/groups * F_h * F_w) + K, by hand
        # the notes' example: AlexNet's first layer
        Case("227x227x3", "CONV(96, 11, stride=4)", output="55x55x96", params=96 * 363 + 96,
             macs=55 * 55 * 96 * 363),
        Case("32x32x3", "CONV(12, 3, pad=1)", output="32x32x12", params=12 * 27 + 12,
             macs=32 * 32 * 12 * 27),
        Case("32x32x3", "CONV(12, 3, pad=1, bias=false)", output="32x32x12", params=12 * 27,
             macs=32 * 32 * 12 * 27),
        Case("32x32x3", "CONV(8, 5)", output="28x28x8", params=8 * 75 + 8, macs=28 * 28 * 8 * 75),
        Case("31x31x3", "CONV(4, 3, stride=2)", output="15x15x4", params=4 * 27 + 4,
             macs=15 * 15 * 4 * 27),
        Case("32x32x3", "CONV(4, 3, stride=3, pad=2)", output="12x12x4", params=4 * 27 + 4,
             macs=12 * 12 * 4 * 27),
        # non-square kernel (WxH = 5x3), input and stride
        Case("20x10x2", "CONV(3, 5x3)", output="16x8x3", params=3 * 2 * 15 + 3,
             macs=16 * 8 * 3 * 30),
        Case("21x11x1", "CONV(2, 3, stride=2x1, pad=1x0)", output="11x9x2", params=2 * 9 + 2,
             macs=11 * 9 * 2 * 9),
        # 'same': ceil(W / S), the odd extra padding after
        Case("28x28x1", "CONV(32, 5, pad=same)", output="28x28x32", params=32 * 25 + 32,
             macs=28 * 28 * 32 * 25),
        Case("28x28x1", "CONV(2, 5, stride=2, pad=same)", output="14x14x2", params=2 * 25 + 2,
             macs=14 * 14 * 2 * 25),
        Case("7x7x1", "CONV(1, 2, stride=3, pad=same)", output="3x3x1", params=5, macs=9 * 4),
        Case("32x32x3", "CONV(4, 3, pad=valid)", output="30x30x4", params=4 * 27 + 4,
             macs=30 * 30 * 4 * 27),
        # dilation 2: a 3x3 kernel covers 5x5
        Case("32x32x3", "CONV(4, 3, dilation=2)", output="28x28x4", params=4 * 27 + 4,
             macs=28 * 28 * 4 * 27),
        Case("32x32x3", "CONV(4, 3, dilation=2, pad=same)", output="32x32x4", params=4 * 27 + 4,
             macs=32 * 32 * 4 * 27),
        # groups and depthwise
        Case("16x16x32", "CONV(64, 3, pad=1, groups=4)", output="16x16x64",
             params=64 * 8 * 9 + 64, macs=256 * 64 * 72),
        Case("16x16x32", "CONV(32, 3, pad=1, groups=depthwise)", output="16x16x32",
             params=32 * 9 + 32, macs=256 * 32 * 9),
        Case("16x16x32", "CONV(64, 1)", output="16x16x64", params=64 * 32 + 64,
             macs=256 * 64 * 32),
        # finite differences of the numpy backward
        Case("7x6x3", "CONV(4, 3, pad=1)", grad=True),
        Case("9x7x4", "CONV(6, 3, stride=2, pad=same, groups=2)", grad=True),
        Case("8x8x3", "CONV(5, 3, dilation=2, pad=2, bias=false)", grad=True),
        Case("6x5x4", "CONV(8, 3, pad=1, groups=depthwise)", grad=True),
        Case("9x7x2", "CONV(3, 5x3, stride=3x1, pad=1x0)", grad=True),
        # device kernels; other_profile: odd heights (work-groups that do not divide the rows),
        # partial pixel tiles, width-1 vectors
        Case("8x8x3", "CONV(16, 1)", batch=7),  # 1x1
        # odd width: the last pixel tile is partial
        Case("13x9x3", "CONV(12, 3, pad=1)", batch=7, other_profile=True),
        # depth 1, 3 filters, width 31
        Case("31x5x1", "CONV(3, 3, pad=1)", batch=1, other_profile=True),
        Case("12x10x17", "CONV(20, 5, pad=2)", batch=7),  # depth 17, 20 filters, 5x5
        Case("15x15x3", "CONV(8, 7, stride=2, pad=3)", batch=1),  # 7x7, stride 2
        Case("9x9x2", "CONV(4, 7)", batch=1),  # 7x7 valid
        Case("15x9x4", "CONV(6, 3, stride=3, pad=valid)", batch=7),  # stride 3
        # same: odd extra bottom/right
        Case("13x9x3", "CONV(8, 4, stride=2, pad=same)", batch=1, other_profile=True),
        Case("13x10x5", "CONV(4, 2, pad=same)", batch=1),  # same, stride 1: all extra bottom/right
        Case("13x9x3", "CONV(6, 5x3, pad=2x1)", batch=7),  # non-square kernel and input, WxH pad
        Case("13x9x3", "CONV(4, 3, stride=2x1, pad=1)", batch=1),  # WxH stride
        Case("11x11x4", "CONV(8, 3, pad=2, dilation=2)", batch=7),  # dilation 2
        Case("14x9x3", "CONV(5, 3x2, dilation=2x3, pad=1x0)", batch=1),  # WxH dilation
        # groups 2, 6 filters per group
        Case("10x10x8", "CONV(12, 3, pad=1, groups=2)", batch=7, other_profile=True),
        Case("9x7x16", "CONV(16, 3, pad=1, groups=4)", batch=1),  # groups 4
        Case("12x6x12", "CONV(20, 1, groups=4)", batch=1),  # groups 4, 5 filters per group
        # depthwise
        Case("13x9x17", "CONV(17, 3, pad=1, groups=depthwise)", batch=7, other_profile=True),
        Case("9x9x6", "CONV(12, 3, stride=2, pad=1, groups=depthwise)", batch=1),  # depthwise x 2
        Case("31x3x3", "CONV(12, 3, pad=same, groups=depthwise)", batch=1),  # depthwise x 4, w 31
        Case("12x12x3", "CONV(4, 3, stride=2, rounding=floor)", batch=7),  # floor drops a column
        Case("12x12x3", "CONV(4, 3, stride=2, rounding=ceil)", batch=1),  # ceil: overhang of 1
        # ceil: overhang past the pad
        Case("13x10x3", "CONV(5, 3, stride=2, pad=1, rounding=ceil)", batch=7,
             other_profile=True),
        Case("31x9x3", "CONV(20, 5, stride=2, pad=2)", batch=1),
        Case("16x4x3", "CONV(48, 3, pad=1)", batch=1),  # 3 filter vectors, full pixel tiles
        Case("6x6x3", "CONV(8, 3, pad=1, bias=false)", batch=1),
        Case("13x9x3", "CONV(12, 3, pad=1)-RELU", batch=7),  # fused epilogues
        Case("13x9x3", "CONV(8, 3, pad=1)-LEAKYRELU(0.2)", batch=1),
        Case("9x9x3", "CONV(8, 1)-SIGMOID", batch=1),
        Case("9x7x3", "CONV(20, 3, pad=same)-TANH", batch=1),
        # conv writing into a halo
        Case("10x10x3", "CONV(8, 3, pad=1)-CONV(12, 5, pad=2)", batch=7, other_profile=True),
        # a first layer of 32 filters: 2 vectors of filters per work-item (forward, and the
        # all-taps weight gradient); a 1x1 stride-2 projection, dx by vectors of channels
        Case("13x9x3", "CONV(32, 3, pad=1)", batch=3),
        Case("11x9x32", "CONV(48, 1, stride=2)", batch=2),
        # the CPU forward's 2 vectors of filters x 4 channels a step, a partial last tile; dx of
        # a 1x1 stride-2 conv by 2 vectors of channels (whole and masked tiles); dx of a
        # stride-1 conv (the forward kernel) by 2 vectors of channels
        Case("13x5x8", "CONV(32, 3, pad=1)", batch=1),
        Case("9x9x32", "CONV(32, 1, stride=2)", batch=1),
        Case("11x7x32", "CONV(16, 3, pad=1)", batch=2),
        # a first layer's 2 rows per work-item (16 filters: 2 x 8 pixels), an odd height: the
        # last row tile clamps its reads and skips its stores
        Case("11x9x3", "CONV(16, 3, pad=1)", batch=2),
    )
    aliases = ("convolution", "conv2d")
    summary = "2-D convolution (CONV): filters slide over the input volume with shared weights."
    positional = ("filters", "size", "stride", "pad")
    # reduction: SUM_SPLITS and CHANNEL_SUM of the gradients; winograd: 3x3 stride-1 layers;
    # conv_gemm: the GPU family (ops/conv_gemm.py)
    kernels = ("conv", "reduction", "winograd", "conv_gemm")
    takes_epilogue = True
    takes_affine = True  # inference: a batchnorm after it folds into its weights
    takes_residual = True  # inference: a residual add after it runs in its epilogue
    colour = "#cfe2ff"
    params = {
        "filters": Param(v.integer(1), doc="number of filters = output depth (depthwise: "
                         "the input depth unless given)"),
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

    onnx_types = ("Conv",)
    onnx_notes = ("2-D; pads (asymmetric too: a symmetric pad and a rounding), auto_pad, "
                  "strides, dilations, group")

    def from_onnx(self, node):
        weight = node.constant(1, "weight")
        if weight.ndim != 4:
            raise OnnxUnsupported(f"its weight has {weight.ndim} axes: convgraph convolves 2-D")
        kernel = tuple(node.attr("kernel_shape", weight.shape[2:]))
        stride = tuple(node.attr("strides", (1, 1)))
        dilation = tuple(node.attr("dilations", (1, 1)))
        attrs = {"filters": int(weight.shape[0]), "size": onnx_pair(kernel),
                 "stride": onnx_pair(stride), "dilation": onnx_pair(dilation),
                 **onnx_window(node, kernel, stride, dilation),
                 "groups": int(node.attr("group", 1))}
        weights = {"weight": weight}
        has_bias = node.has_input(2)
        if has_bias:
            weights["bias"] = node.constant(2, "bias")
        attrs["bias"] = has_bias
        return OnnxLayer(attrs, weights)

    def onnx_fold_bias(self, layer, bias):
        filters = layer.attrs["filters"]
        if layer.attrs["bias"] or bias.size != filters or bias.reshape(-1).shape[0] != filters:
            return False
        if bias.ndim == 4 and bias.shape[2:] != (1, 1) or bias.ndim not in (1, 3, 4):
            return False
        layer.attrs["bias"] = True
        layer.weights["bias"] = bias.reshape(filters)
        return True

    def onnx_folds_pad(self, node):
        return True  # zero padding is what a conv pads with

    def derived_defaults(self, attrs):
        if attrs.get("groups") == "depthwise":  # one filter per input channel
            return {"filters": InputExtent("depth")}
        return {}

    def infer(self, node):
        (x,) = node.input_volumes
        a = node.attrs
        g = resolved_groups(node, x.depth)
        if x.depth % g:
            raise node.error(
                f"input depth {x.depth} is not divisible by groups {g}.",
                attr="groups",
                hint="choose groups that divide the input depth.",
            )
        if a["filters"] % g:
            raise node.error(
                f"filters {a['filters']} is not divisible by groups {g}.",
                attr="filters",
                hint=f"use a multiple of {g} filters, e.g. {g * max(1, a['filters'] // g)}.",
            )
        (kw, kh), (sw, sh), (dw, dh) = a["size"], a["stride"], a["dilation"]
        pad_w, pad_h = ("same", "same") if a["pad"] == "same" else a["pad"]
        across = slide(node.layer, "width", x.width, kw, sw, pad_w, dw, a["rounding"])
        down = slide(node.layer, "height", x.height, kh, sh, pad_h, dh, a["rounding"])
        derived = {
            "groups": g,
            "pad_left": across.pad_before,
            "pad_right": across.pad_after,
            "pad_top": down.pad_before,
            "pad_bottom": down.pad_after,
        }
        return Volume(across.output, down.output, a["filters"]), derived

    def weights(self, node):
        (x,) = node.input_volumes
        kw, kh = node.attrs["size"]
        filters = node.output.depth
        weights = {"weight": Weight((filters, x.depth // node.derived["groups"], kh, kw),
                                    "fan_in")}
        if node.attrs["bias"]:
            weights["bias"] = Weight((filters,), "zeros")
        return weights

    def macs(self, node):
        kw, kh = node.attrs["size"]
        return (node.output.elements * (node.input_volumes[0].depth // node.derived["groups"])
                * kh * kw)

    def input_halo(self, node):
        return _conv_input_halo(node, node.input_volumes[0])

    def output_grad_halo(self, node):
        if node.attrs["stride"] != (1, 1):
            return None
        return _transposed_padding(node)

    def lower(self, ctx) -> None:
        defines, _, width = _conv_defines(ctx)
        defines.update(ctx.max_pool_epilogue())  # a 2x2 max pool it writes (inference)
        residual, residual_args = ctx.residual_epilogue()  # a sum folded in (inference): r
        defines.update(residual)
        y = ctx.output_layout
        args = [ctx.input_tensor(), ctx.param("weight"), ctx.param("bias"), ctx.output_tensor,
                *residual_args]
        # y: the conv's output, or the pool's that it writes; r: the sum's other input
        moved = 4 * (ctx.input_layout().volume.elements + (1 + len(residual_args))
                     * y.volume.elements)
        groups = ctx.derived["groups"]
        _launch_forward(ctx, defines, width, ctx.input_layout().volume.depth // groups,
                        _filters_allocated(ctx.node, y) // groups, ctx.node.output.width, args,
                        moved, "forward")

    def lower_backward(self, ctx) -> None:
        defines, _, width = _conv_defines(ctx)
        if conv_gemm.lower_backward(ctx, defines, _lower_transposed_conv):  # the GPU family
            return
        x = ctx.input_layout()
        groups = ctx.derived["groups"]
        tile = widest_dividing(x.volume.depth // groups, 4)
        # grad-weights loads CHANNEL_TILE inputs as one vector: the wider the better
        wide = widest_dividing(x.volume.depth // groups, 16)
        (kw, kh) = ctx.attrs["size"]
        defines.update({"CHANNEL_TILE": tile, "IN_H": x.volume.height, "IN_W": x.volume.width})
        # few input channels (a first layer): one work-item covers every tap of a channel
        all_taps = wide < 4
        selector = "CONV_BACKWARD_WEIGHTS_TAPS" if all_taps else "CONV_BACKWARD_WEIGHTS"
        algorithm = "direct"
        if not all_taps and winograd.applies(defines):  # (3 channels: Winograd does not pay)
            algorithm = winograd.default_algorithm(
                ctx.profile, x.volume.depth, ctx.attrs["filters"], ctx.node.output.width,
                ctx.node.output.height, rules="winograd_weight_rules")
        # (the Winograd GEMM ignores TAP_COLUMNS: its default keeps the tile it was measured at)
        space = _weight_gradient_space(ctx, defines, width, wide, all_taps,
                                       tap_rows=algorithm == "direct")
        if not all_taps and winograd.applies(defines):
            space = winograd.with_weight_algorithms(space, algorithm)
        site, knobs = ctx.tuned(selector, defines, space)
        partial, images = ctx.split_sum("weight", knobs["IMAGES_PER_SPLIT"])
        if knobs.get("ALGORITHM", "direct") != "direct":
            winograd.lower_weight_gradient(ctx, defines, knobs, ctx.input_tensor(),
                                           ctx.output_grad, partial, images, site)
        else:
            _launch_weight_gradient(ctx, selector, defines, knobs, width, all_taps, partial,
                                    images, site)
        ctx.sum_splits("weight", site)
        if ctx.attrs["bias"]:
            ctx.channel_sum(ctx.output_grad, ctx.output_layout, "bias")
        if ctx.needs_grad() and ctx.attrs["stride"] == (1, 1):
            _lower_transposed_conv(ctx)
        elif ctx.needs_grad():
            _lower_strided_input_grad(ctx, defines)

    def device_params(self, node, params, input_layout, output_layout):
        groups = node.derived["groups"]
        weight = np.asarray(params["weight"], np.float32)  # (K, C/g, kh, kw)
        k, cg, kh, kw = weight.shape
        k_alloc = _filters_allocated(node, output_layout)
        # -> (g, kh, kw, C/g, K/g): VECTOR_WIDTH consecutive filters are one load
        grouped = weight.reshape(groups, k // groups, cg, kh, kw).transpose(0, 3, 4, 2, 1)
        device = np.zeros((groups, kh, kw, cg, k_alloc // groups), np.float32)
        device[..., : k // groups] = grouped
        bias = np.zeros(output_layout.stride_c, np.float32)  # whole vectors: summed as grads
        if "bias" in params:  # a folded batchnorm brings one where the layer has none
            bias[:k] = params["bias"]
        return {"weight": device, "bias": bias}

    def fold_affine(self, node, params, scale, shift):
        return fold_output_affine(params, scale, shift)

    def takes_max_pool(self, node, profile):
        # the direct kernel writes it; a site the profile runs as Winograd keeps the pool as its
        # own pass (its output tiles are not the pool's windows, and F(4x4) ran VGG-CIFAR's
        # conv4 1.7x faster than direct, the pool pass a few percent of either); so does a
        # site the tiled GPU family may run (its work-group tiles are not windows either)
        (kw, kh), (sw, sh), (dw, dh) = (node.attrs[key] for key in ("size", "stride",
                                                                   "dilation"))
        shape = {"KERNEL_H": kh, "KERNEL_W": kw, "STRIDE_H": sh, "STRIDE_W": sw,
                 "DILATION_H": dh, "DILATION_W": dw, "GROUPS": node.derived["groups"]}
        if conv_gemm.offered(profile, shape):  # a GPU's tiled GEMM keeps its pool a pass too
            return False
        if not winograd.applies(shape):
            return True
        out = node.output
        return winograd.default_algorithm(profile, node.input_volumes[0].depth, out.depth,
                                          out.width, out.height) == "direct"

    def device_param_elements(self, node, input_layout, output_layout):
        _, cg, kh, kw = node["param_shapes"]["weight"]  # (K, C/g, kh, kw)
        weight = kh * kw * cg * _filters_allocated(node, output_layout)
        return {"weight": weight, "bias": output_layout.stride_c}

    def reference(self, node, inputs, params):
        (x,) = inputs
        groups = node.derived["groups"]
        windows = reference_windows(np.asarray(x, np.float64), node)  # (N, C, H', W', kh, kw)
        weight = np.asarray(params["weight"], np.float64)
        k, cg = weight.shape[:2]
        kg = k // groups
        parts = [
            np.einsum(
                "nchwij,kcij->nkhw",
                windows[:, g * cg : (g + 1) * cg],
                weight[g * kg : (g + 1) * kg],
                optimize=True,
            )
            for g in range(groups)
        ]
        out = np.concatenate(parts, axis=1)
        if node.attrs["bias"]:
            out += np.asarray(params["bias"], np.float64)[None, :, None, None]
        return out

    def onnx_export(self, node, onnx):
        (kw, kh), (sw, sh), (dw, dh) = (node.attrs[key] for key in ("size", "stride", "dilation"))
        top, left, bottom, right = covering_pads(node)
        weights = [onnx.param("weight")] + ([onnx.param("bias")] if node.attrs["bias"] else [])
        onnx.add("Conv", onnx.inputs + weights, output=onnx.output, kernel_shape=[kh, kw],
                 strides=[sh, sw], dilations=[dh, dw], pads=[top, left, bottom, right],
                 group=node.derived["groups"])

    def host_params(self, node, device, input_layout, output_layout):
        groups = node.derived["groups"]
        k = node.attrs["filters"]
        kw, kh = node.attrs["size"]
        cg = input_layout.volume.depth // groups
        k_alloc = _filters_allocated(node, output_layout)
        relaid = np.asarray(device["weight"]).reshape(groups, kh, kw, cg, k_alloc // groups)
        weight = relaid[..., : k // groups].transpose(0, 4, 3, 1, 2).reshape(k, cg, kh, kw)
        host = {"weight": np.ascontiguousarray(weight)}
        if node.attrs["bias"]:
            host["bias"] = np.asarray(device["bias"])[:k].copy()
        return host

    def reference_backward(self, node, inputs, output, grad, params, seed):
        (x,) = inputs
        groups = node.derived["groups"]
        windows = reference_windows(np.asarray(x, np.float64), node)
        weight = np.asarray(params["weight"], np.float64)
        k, cg = weight.shape[:2]
        kg = k // groups
        d_weight = np.concatenate([np.einsum("nkhw,nchwij->kcij", grad[:, g * kg:(g + 1) * kg],
                                             windows[:, g * cg:(g + 1) * cg], optimize=True)
                                   for g in range(groups)])
        d_windows = np.concatenate([np.einsum("nkhw,kcij->nchwij", grad[:, g * kg:(g + 1) * kg],
                                              weight[g * kg:(g + 1) * kg], optimize=True)
                                    for g in range(groups)], axis=1)
        d_params = {"weight": d_weight}
        if node.attrs["bias"]:
            d_params["bias"] = grad.sum(axis=(0, 2, 3))
        return [reference_unwindow(d_windows, node, x.shape)], d_params


def _conv_defines(ctx):
    """The constants every conv kernel is specialised with, the forward grid and vector width."""
    attrs, derived, node = ctx.attrs, ctx.derived, ctx.node
    x, y = ctx.input_layout(), ctx.output_layout
    groups = derived["groups"]
    k_alloc = _filters_allocated(node, y)
    if groups == 1:
        width = ctx.vector_width(y)
    else:
        width = widest_dividing(attrs["filters"] // groups, ctx.profile.max_vector)
    out = node.output
    (kw, kh), (sw, sh), (dw, dh) = attrs["size"], attrs["stride"], attrs["dilation"]
    activation, slope = ctx.epilogue()
    defines = {
        "IN_CHANNELS": x.volume.depth,
        "FILTERS": attrs["filters"],
        "GROUPS": groups,
        "KERNEL_H": kh,
        "KERNEL_W": kw,
        "STRIDE_H": sh,
        "STRIDE_W": sw,
        "DILATION_H": dh,
        "DILATION_W": dw,
        "PAD_TOP": derived["pad_top"],
        "PAD_LEFT": derived["pad_left"],
        "OUT_H": out.height,
        "OUT_W": out.width,
        "K_ALLOC": k_alloc,
        "VECTOR_WIDTH": width,
        "HAS_BIAS": int(attrs["bias"] or ctx.folds_affine),
        "EPILOGUE": activation,
        "EPILOGUE_SLOPE": slope,
        **x.defines("X"),
        **y.defines("Y"),
    }
    return defines, None, width


def _forward_space(profile, width: int, channels: int, filters: int, out_width: int,
                   row_tiles: bool = True) -> list[dict]:
    """Every setting of a direct forward site, the profile's default first: pixels and rows
    per work-item (rows only with ``row_tiles``: not where a max pool is folded in), vectors of
    filters per work-item, channels per step, vector width, and on a GPU the work-group shape.
    ``channels``/``filters``: per group, as stored."""
    # channels per step: the profile's, or the widest below it that divides the channels (8
    # won on VGG-CIFAR when the kernel loaded them as one vector; broadcast one by one from
    # memory, 4 leaves registers for 2 vectors of filters)
    default_step = max(step for step in (profile.conv_channel_step, 4, 2, 1)
                       if channels % step == 0 and step <= profile.conv_channel_step)
    gpu = profile.conv_local is not None
    locals_ = [_local_text(profile.conv_local)]
    if gpu:  # (on PoCL the work-group shape made no measurable difference: not searched)
        locals_ += ["4,4,4", "1,8,8", "8,8,1", "16,4,1", "2,4,16", "driver"]
    space = []
    for vector in (width, 16, 8, 4):
        if vector > width or filters % vector:
            continue
        # rows per work-item: 2 where the filters fit one or two vectors, so that each weight
        # vector loaded serves twice the pixels (one vector of filters: one fma per input)
        rows_options = (1, 2) if row_tiles and filters <= 2 * vector else (1,)
        for pixels in (profile.conv_tile_pixels, 4, 8, 16, 2, 1):
            tile = choose_tile(out_width, pixels)
            # each input broadcast serves FILTER_VECTORS fmas: on a CPU 2 by default where the
            # filters allow (a first layer's 1-3 channels: VGG-CIFAR conv1, batch 64, 2.33 ->
            # 1.50 ms; wider layers: the profile's note); a GPU, not measured, keeps its many
            # work-items
            first = 2 if channels < 4 and not gpu else profile.conv_filter_vectors
            for vectors, rows in itertools.product(dict.fromkeys((first, 1, 2, 4)),
                                                   rows_options):
                # accumulators in vector registers: 32 on AVX-512, and a GPU's private memory
                if filters % (vector * vectors) or rows * tile * vectors * vector > 256:
                    continue
                for step in dict.fromkeys((default_step, 8, 4, 2)):
                    if channels % step:
                        continue
                    for local in locals_:
                        space.append({"TILE_PIXELS": tile, "TILE_ROWS": rows,
                                      "FILTER_VECTORS": vectors, "CHANNEL_STEP": step,
                                      "VECTOR_WIDTH": vector, "LOCAL": local})
    if row_tiles and channels < 4 and profile.conv_first_tile_rows > 1:
        space = _first_layer_rows_first(space, profile, out_width)
    return space


def _first_layer_rows_first(space: list[dict], profile, out_width: int) -> list[dict]:
    """A first layer's space with the profile's rows per work-item as its default, where its
    filters fit one or two vectors: the same accumulators as a tile of conv_tile_pixels x 2
    vectors of filters, 2 rows x conv_tile_pixels / vectors of them (one input channel a step
    leaves the loop load-bound: each weight vector loaded serves twice the pixels; ResNet-8
    conv1 1.06-1.15x, VGG-CIFAR conv1 1.07-1.17x, README "Weak spots")."""
    default = space[0]
    rows = profile.conv_first_tile_rows
    pixels = choose_tile(out_width, max(1, profile.conv_tile_pixels // default["FILTER_VECTORS"]))
    wanted = {**default, "TILE_ROWS": rows, "TILE_PIXELS": pixels}
    if wanted not in space:  # (the filters fill more than two vectors)
        return space
    return [wanted] + [knobs for knobs in space if knobs != wanted]


def _tuned_forward(ctx, shape: dict, width: int, channels: int, filters: int, out_width: int):
    """The direct forward kernel's knobs for one site (its defines, grid, work-group and site
    key). ``channels``/``filters``: per group, as stored."""
    space = _forward_space(ctx.profile, width, channels, filters, out_width)
    shape = {key: value for key, value in shape.items() if key != "VECTOR_WIDTH"}
    site, knobs = ctx.tuned("CONV_FORWARD", shape, space)
    return (*_direct_forward(shape, knobs, out_width), site)


def _direct_forward(shape: dict, knobs: dict, out_width: int):
    """The direct kernel's defines, grid and work-group for ``knobs``; with a max pool in the
    epilogue, a work-item's pixels are TILE_PIXELS / 4 whole 2x2 windows of a pooled row."""
    defines = {**shape, **{k: v for k, v in knobs.items() if k not in ("LOCAL", "ALGORITHM")}}
    per_item = knobs["VECTOR_WIDTH"] * knobs["FILTER_VECTORS"]
    rows = knobs.get("TILE_ROWS", 1)
    grid = (shape["K_ALLOC"] // per_item, -(-out_width // knobs["TILE_PIXELS"]),
            -(-shape["OUT_H"] // rows))
    if shape.get("POOL_MAX"):
        grid = (grid[0], -(-shape["POOL_OUT_W"] // (knobs["TILE_PIXELS"] // 4)),
                shape["POOL_OUT_H"])
    return defines, grid, _local_tuple(knobs["LOCAL"])


def _launch_forward(ctx, shape: dict, width: int, channels: int, filters: int, out_width: int,
                    args: list, moved: int, role: str) -> None:
    """A conv forward pass (or a stride-1 input gradient, ``role`` "input_grad") of ``args`` =
    [x, w, b, y] (then r, the other input of a sum folded in: RESIDUAL in ``shape``): direct,
    or on 3x3 stride-1 ungrouped sites Winograd, as the site's ALGORITHM
    knob chooses (ops/winograd.py); the tuner times every algorithm with every tile setting."""
    pooled = bool(shape.get("POOL_MAX"))
    space = _forward_space(ctx.profile, width, channels, filters, out_width, not pooled)
    shape = {key: value for key, value in shape.items() if key != "VECTOR_WIDTH"}
    if pooled:  # direct only, each work-item's pixels whole 2x2 windows
        space = _pooled_space(space, shape["POOL_OUT_W"])
    elif winograd.applies(shape):
        space = winograd.with_algorithms(
            space, winograd.default_algorithm(ctx.profile, channels, filters, out_width,
                                              shape["OUT_H"]), channels, filters)
    if conv_gemm.offered(ctx.profile, shape):  # the GPU family first, where the profile asks
        space = conv_gemm.with_family(ctx.profile, space, shape)
    site, knobs = ctx.tuned("CONV_FORWARD", shape, space)
    if knobs.get("ALGORITHM") in conv_gemm.TILED:
        conv_gemm.lower_forward(ctx, shape, knobs, args, site, ctx.node.flops, moved, role)
        return
    if knobs.get("ALGORITHM", "direct") != "direct":
        winograd.lower(ctx, shape, knobs, args, site, ctx.node.flops, role)
        return
    defines, grid, local = _direct_forward(shape, knobs, out_width)
    ctx.launch("conv", "CONV_FORWARD", defines, grid, args, batch_axis=2, local_size=local,
               flops=ctx.node.flops, moved=moved, site=site)


def _pooled_space(space: list[dict], pooled_width: int) -> list[dict]:
    """A forward space whose pixel tiles are whole 2x2 windows: TILE_PIXELS = 4 x the windows
    per work-item, the setting's own pixel count rounded to them (a 7-pixel tile, a divisor
    of a 28-wide row, becomes 2 windows: rounded down, 1, each weight load served 4 pixels
    instead of 7), at most a row's ``pooled_width`` and 256 accumulators; a last partial
    tile is guarded. ``space`` has one row per work-item (TILE_ROWS 1): a pooled row."""
    pooled = []
    for knobs in space:
        per_window = 4 * knobs["FILTER_VECTORS"] * knobs["VECTOR_WIDTH"]  # accumulators
        windows = min(pooled_width, max(1, (knobs["TILE_PIXELS"] + 2) // 4),
                      max(1, 256 // per_window))
        pooled.append({**knobs, "TILE_PIXELS": 4 * windows})
    return [dict(items) for items in dict.fromkeys(tuple(k.items()) for k in pooled)]


def _local_text(local) -> str:
    """A work-group shape as a tuning knob (JSON-stable text): "4,4,4", or "driver"."""
    return "driver" if local is None else ",".join(map(str, local))


def _local_tuple(text: str):
    return None if text == "driver" else tuple(int(n) for n in text.split(","))


def _transposed_padding(node: Node) -> tuple[int, int, int, int]:
    """dx of a stride-1 conv is a conv of dy padded (top, bottom, left, right) by this much."""
    attrs, derived = node.attrs, node.derived
    (kw, kh), (dw, dh) = attrs["size"], attrs["dilation"]
    return (max((kh - 1) * dh - derived["pad_top"], 0),
            max((kh - 1) * dh - derived["pad_bottom"], 0),
            max((kw - 1) * dw - derived["pad_left"], 0),
            max((kw - 1) * dw - derived["pad_right"], 0))


def _weight_gradient_space(ctx, defines: dict, width: int, wide: int, all_taps: bool,
                           tap_rows: bool = True) -> list[dict]:
    """Every setting of a weight-gradient site, the profile's default first: channels loaded as
    one vector, vectors of filters per work-item (their product is the register tile), images
    per batch split (each split's inputs and gradients should stay in cache; every split adds
    a copy of the weights to SUM_SPLITS), and taps of a kernel row per work-item (with
    ``tap_rows``, the profile's row default where it has one)."""
    profile, groups = ctx.profile, ctx.derived["groups"]
    cin = ctx.input_layout().volume.depth // groups
    filter_vectors = defines["K_ALLOC"] // groups // width  # vectors of filters in a group
    # all taps: TAP_ROWS x KERNEL_W x vectors accumulators, so at most 2 vectors of filters
    vectors = widest_dividing(filter_vectors, min(profile.grad_filter_vectors,
                                                  2 if all_taps else 4))
    channels = wide if all_taps else min(wide, 16 // vectors)  # tile: up to 16 vectors
    images = profile.images_per_split
    if profile.split_cache_bytes:  # as many images as fit, up to 16
        per_image = 4 * (ctx.input_layout().image_elements + ctx.output_layout.image_elements)
        images = max(1, min(16, 2 ** int(math.log2(max(1, profile.split_cache_bytes
                                                          // per_image)))))
    default = {"CHANNEL_TILE": channels, "IMAGES_PER_SPLIT": images, "FILTER_VECTORS": vectors}
    (kernel_w, _) = ctx.attrs["size"]
    if profile.grad_tap_columns and tap_rows and kernel_w == 3 and not all_taps:
        # a 3x3 kernel row per work-item: 3 taps x 4 channels x 2 vectors of filters (or 8
        # channels x 1 vector) = 24 accumulators
        row_vectors = widest_dividing(filter_vectors, 2)
        default = {"CHANNEL_TILE": widest_dividing(cin, min(wide, 8 // row_vectors)),
                   "IMAGES_PER_SPLIT": images, "FILTER_VECTORS": row_vectors, "TAP_COLUMNS": 3}
    space = [default] + [
        {"CHANNEL_TILE": c, "IMAGES_PER_SPLIT": i, "FILTER_VECTORS": v}
        for c in ([wide] if all_taps else [wide, 8, 4, 16])
        if all_taps or (c <= wide and cin % c == 0)
        for i in (1, 2, 4, 8, 16)
        for v in ([1, 2] if all_taps else [1, 2, 4]) if filter_vectors % v == 0]
    if all_taps:
        return space
    # a kernel row's taps per work-item share each gradient vector loaded: TAP_COLUMNS x
    # CHANNEL_TILE x FILTER_VECTORS accumulators, at most 24 (of 32 vector registers); every
    # entry names the knob (the tuner walks the knobs of the default)
    space = [{"TAP_COLUMNS": 1, **knobs} for knobs in space]
    return space + [
        {"CHANNEL_TILE": c, "IMAGES_PER_SPLIT": i, "FILTER_VECTORS": v,
         "TAP_COLUMNS": kernel_w}
        for c in (8, 4, 2) if c <= wide and cin % c == 0
        for i in (2, 4, 8, 16)
        for v in (1, 2, 4)
        if kernel_w > 1 and filter_vectors % v == 0 and kernel_w * c * v <= 24]


def _strided_input_grad_space(ctx, phase_pixels: int, width: int) -> list[dict]:
    """Every setting of a strided conv's input-gradient site, the profile's default first.
    BODY "channels" (CONV_BACKWARD_DATA_CHANNELS: vectors of input channels, the forward
    kernel's loop) takes pixels, vectors of channels and gradients per load; "filters"
    (CONV_BACKWARD_DATA: vectors over filters, summed across lanes at the end; kept for grouped
    convs and as the reference the benchmark measures against) takes pixels and a channel tile.
    Both keep each work-item's private tile at most 16 vectors: PoCL replicates private arrays
    across a work-group (8 x 4 vectors crashed ResNet-8). A GPU, where "channels" has not been
    measured, keeps "filters" as its default (the tuner may choose either)."""
    x, count = ctx.input_layout(), ctx.attrs["filters"]
    tile = widest_dividing(x.volume.depth // ctx.derived["groups"], 4)
    space = []
    if ctx.derived["groups"] == 1:
        for pixels in (ctx.profile.grad_tile_pixels * 2, 4, 2, 16):
            for vectors in (1, 2, 4):
                if x.stride_c % (width * vectors) or pixels * vectors * width > 256:
                    continue
                for step in (8, 4, 2, 1):
                    if count % step == 0:
                        space.append({"BODY": "channels", "TILE_PIXELS":
                                      choose_tile(phase_pixels, pixels), "FILTER_VECTORS": vectors,
                                      "CHANNEL_STEP": step, "CHANNEL_TILE": 1})
        # first where the channels allow: 4 pixels x 2 vectors of channels x 4 gradients a step
        # (each gradient broadcast from memory serves 2 fmas; benchmarks/conv_tiles.py, batch
        # 64, alternating: ResNet-8 res3/conv1 1.3x, res3/proj 1.3x over 8 x 1 x 8, which
        # stays first where one vector is all the channels: res2/proj 0.73x with 4 x 1 x 4)
        paired = [k for k in space if (k["FILTER_VECTORS"], k["CHANNEL_STEP"]) == (2, 4)
                  and k["TILE_PIXELS"] == choose_tile(phase_pixels, ctx.profile.grad_tile_pixels)]
        space = paired[:1] + [k for k in space if k not in paired[:1]]
    filters = [{"BODY": "filters", "TILE_PIXELS": choose_tile(phase_pixels, pixels),
                "FILTER_VECTORS": 1, "CHANNEL_STEP": 1, "CHANNEL_TILE": channels}
               for pixels in (ctx.profile.grad_tile_pixels, 2, 4, 8)
               for channels in (tile, 1, 2, 4)
               if channels <= tile and pixels * channels <= 16]
    return filters + space if ctx.profile.conv_local is not None else space + filters


def _lower_strided_input_grad(ctx, defines: dict) -> None:
    """dx of a strided conv, by stride phase (kernels/conv.cl CONV_BACKWARD_DATA_CHANNELS, or
    CONV_BACKWARD_DATA as the site's BODY knob chooses)."""
    x = ctx.input_layout()
    grad, accumulate = ctx.input_grad()
    stride_w = ctx.attrs["stride"][0]
    phase_pixels = -(-x.volume.width // stride_w)  # input pixels of one stride phase
    width = ctx.vector_width(x)
    shape = {**defines, "ACCUMULATE": accumulate}
    site, knobs = ctx.tuned("CONV_BACKWARD_DATA", shape,
                            _strided_input_grad_space(ctx, phase_pixels, width))
    grid_pixels = stride_w * -(-phase_pixels // knobs["TILE_PIXELS"])
    if knobs["BODY"] == "filters":
        ctx.launch("conv", "CONV_BACKWARD_DATA",
                   {**shape, "TILE_PIXELS": knobs["TILE_PIXELS"],
                    "CHANNEL_TILE": knobs["CHANNEL_TILE"]},
                   (x.volume.depth // knobs["CHANNEL_TILE"], grid_pixels, x.volume.height),
                   [ctx.output_grad, ctx.param("weight"), grad],
                   batch_axis=2, flops=ctx.node.flops, site=site)
        return
    (kw, kh), filters = ctx.attrs["size"], ctx.attrs["filters"]
    transposed = ctx.work_buffer("weight_t", kh * kw * filters * x.stride_c)
    ctx.launch("conv", "CONV_TRANSPOSE_WEIGHTS", {**defines, "TRANSPOSED_ALLOC": x.stride_c},
               (filters, x.volume.depth, kh * kw), [ctx.param("weight"), transposed])
    knobs = {key: knobs[key] for key in ("TILE_PIXELS", "FILTER_VECTORS", "CHANNEL_STEP")}
    ctx.launch("conv", "CONV_BACKWARD_DATA_CHANNELS",
               {**shape, **knobs, "VECTOR_WIDTH": width, "TRANSPOSED_ALLOC": x.stride_c},
               (x.stride_c // (width * knobs["FILTER_VECTORS"]), grid_pixels, x.volume.height),
               [ctx.output_grad, transposed, grad],
               batch_axis=2, flops=ctx.node.flops, site=site)


def _launch_weight_gradient(ctx, selector: str, defines: dict, knobs: dict, width: int,
                            all_taps: bool, partial, images: int, site: str) -> None:
    """The direct weight-gradient kernel (conv.cl's CONV_BACKWARD_WEIGHTS[_TAPS]) into the
    per-split ``partial`` sums."""
    x = ctx.input_layout()
    (kw, kh) = ctx.attrs["size"]
    knobs = {k: v for k, v in knobs.items() if k != "ALGORITHM"}
    wide = knobs["CHANNEL_TILE"]
    # whole kernel rows per work-item, at most 9 taps: more accumulators spill (a 5x5
    # kernel in one work-item took 12 ms, by rows 1.6 ms)
    rows = kh if kh * kw <= 9 else 1
    columns = knobs.get("TAP_COLUMNS", 1)  # (CONV_BACKWARD_WEIGHTS only)
    ctx.launch(
        "conv",
        selector,
        {**defines, **knobs, "TAP_ROWS": rows},
        (defines["K_ALLOC"] // width // knobs["FILTER_VECTORS"],
         x.volume.depth * (kh // rows) if all_taps else x.volume.depth // wide,
         1 if all_taps else kh * kw // columns),
        [ctx.input_tensor(), ctx.output_grad, partial, ctx.BATCH],
        batch_axis=2,
        flops=ctx.node.flops,
        batch_divisor=images,
        site=site,
    )


def _lower_transposed_conv(ctx) -> None:
    """dx of a stride-1 conv: the forward kernel run on dy with flipped, transposed weights."""
    attrs, derived = ctx.attrs, ctx.derived
    x, y = ctx.input_layout(), ctx.output_layout
    groups = derived["groups"]
    filters, channels = attrs["filters"], x.volume.depth
    (kw, kh), (dw, dh) = attrs["size"], attrs["dilation"]
    if groups == 1:
        alloc, width = x.stride_c, ctx.vector_width(x)
    else:
        alloc, width = channels, widest_dividing(channels // groups, ctx.profile.max_vector)
    defines, _, _ = _conv_defines(ctx)
    transposed = ctx.work_buffer("weight_t", groups * kh * kw * (filters // groups)
                                 * (alloc // groups))
    ctx.launch("conv", "CONV_TRANSPOSE_WEIGHTS", {**defines, "TRANSPOSED_ALLOC": alloc},
               (filters // groups, channels // groups, groups * kh * kw),
               [ctx.param("weight"), transposed])
    top, _, left, _ = _transposed_padding(ctx.node)
    grad, accumulate = ctx.input_grad()
    # with a gate, the bias slot (no bias here) carries the activation output
    gate, gate_slope, bias_slot = ctx.input_gate(accumulate) or ("ACT_NONE", 0.0, transposed)
    shape = {
        "IN_CHANNELS": filters, "FILTERS": channels, "GROUPS": groups,
        "KERNEL_H": kh, "KERNEL_W": kw, "STRIDE_H": 1, "STRIDE_W": 1, "DILATION_H": dh,
        "DILATION_W": dw, "PAD_TOP": top, "PAD_LEFT": left, "OUT_H": x.volume.height,
        "OUT_W": x.volume.width, "K_ALLOC": alloc,
        "HAS_BIAS": 0, "EPILOGUE": "ACT_NONE", "EPILOGUE_SLOPE": 0.0, "ACCUMULATE": accumulate,
        "GATE": gate, "GATE_SLOPE": gate_slope,
        **y.defines("X"), **x.defines("Y"),
    }
    _launch_forward(ctx, shape, width, filters // groups, alloc // groups, x.volume.width,
                    [ctx.output_grad, transposed, bias_slot, grad], 0, "input_grad")


def _filters_allocated(node: Node, output_layout) -> int:
    """Filters as stored: padded to the output's channel stride when ungrouped (so every vector of
    filters is whole), exactly FILTERS when grouped (the vector width divides filters/groups)."""
    return output_layout.stride_c if node.derived["groups"] == 1 else node.attrs["filters"]


def _conv_input_halo(node: Node, volume: Volume) -> tuple[int, int, int, int]:
    """The zero halo this conv reads around its input: its padding, plus any ceil overhang."""
    attrs, derived, out = node.attrs, node.derived, node.output
    (kw, kh), (sw, sh), (dw, dh) = attrs["size"], attrs["stride"], attrs["dilation"]
    bottom = (out.height - 1) * sh + dh * (kh - 1) + 1 - volume.height - derived["pad_top"]
    right = (out.width - 1) * sw + dw * (kw - 1) + 1 - volume.width - derived["pad_left"]
    return (derived["pad_top"], max(bottom, 0), derived["pad_left"], max(right, 0))
