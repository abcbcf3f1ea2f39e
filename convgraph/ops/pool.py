"""Pooling: max or average over windows (POOL), and global average and max pooling."""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.ops import values as v
from convgraph.ops.base import OnnxLayer, OnnxUnsupported, Op, Param, register
from convgraph.ops.cases import Case
from convgraph.ops.spatial import (
    covering_pads,
    onnx_pair,
    onnx_window,
    reference_unwindow,
    reference_windows,
    slide,
)


@register
class Pool(Op):
    name = "pool"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        # shape rule
        Case("224x224x64", "POOL(2)", output="112x112x64", params=0, macs=0),  # a VGG pool
        Case("31x31x8", "POOL(3, 2)", output="15x15x8", params=0, macs=0),
        Case("32x32x8", "POOL(3, 1, pad=1)", output="32x32x8", params=0, macs=0),
        Case("32x32x8", "POOL(2, mode=avg)", output="16x16x8", params=0, macs=0),
        Case("10x6x3", "AVGPOOL(2x3, 2x3)", output="5x2x3", params=0, macs=0),
        Case("15x15x8", "POOL(2, pad=same)", output="8x8x8", params=0, macs=0),
        # finite differences (distinct inputs: no ties between a window's maxima)
        Case("8x6x3", "POOL(2)", grad=True, kinks=True),
        Case("7x7x2", "POOL(3, 2, pad=1, rounding=ceil)", grad=True, kinks=True),
        Case("7x7x2", "AVGPOOL(3, 2, pad=1)", grad=True, kinks=True),
        Case("7x6x2", "AVGPOOL(3, 2, pad=1, count_pad=true, rounding=ceil)", grad=True,
             kinks=True),
        # device kernels
        Case("8x8x3", "POOL(2)", batch=7),  # max 2
        Case("9x9x5", "POOL(3)", batch=1),  # max 3
        Case("8x6x20", "AVGPOOL(2)", batch=7),  # avg 2
        Case("9x9x5", "AVGPOOL(3, 2, pad=1)", batch=1, other_profile=True),  # avg 3, pad 1
        Case("11x8x5", "POOL(2, 3)", batch=7),  # stride > size
        Case("11x8x5", "AVGPOOL(2, 3)", batch=1),
        Case("13x9x20", "POOL(2, pad=same)", batch=1),  # same: extra bottom/right
        Case("13x10x5", "AVGPOOL(3, 2, pad=same)", batch=1),
        Case("9x9x20", "POOL(3, 2, pad=1)", batch=7),  # depth 20, pad 1
        Case("9x9x5", "AVGPOOL(3, 2, pad=1, count_pad=true)", batch=1),
        # ceil overhang
        Case("10x10x5", "AVGPOOL(3, 2, pad=1, count_pad=true, rounding=ceil)", batch=7,
             other_profile=True),
        Case("10x7x5", "POOL(3, 2, rounding=ceil)", batch=1),
        Case("10x7x5", "AVGPOOL(3, 2, rounding=ceil)", batch=1),
        Case("11x8x20", "POOL(2, rounding=floor)", batch=1),
        Case("12x9x5", "POOL(3x2, 3x1)", batch=1),  # non-square windows
        Case("13x9x20", "AVGPOOL(2x3, 1x2, rounding=floor)", batch=1),
        # pool writing into a halo
        Case("10x10x3", "POOL(2)-CONV(4, 3, pad=1)", batch=1, other_profile=True),
    )
    aliases = ("maxpool", "avgpool", "pooling")
    presets = {"maxpool": {"mode": "max"}, "avgpool": {"mode": "avg"}}
    summary = "Max or average pooling (POOL) over size x size windows."
    positional = ("size", "stride")
    kernels = ("pool",)
    colour = "#fff3cd"
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

    def derived_defaults(self, attrs):
        return {"stride": attrs["size"]}

    def is_foldable_max_pool(self, node):
        (x,) = node.input_volumes
        unpadded = not any(node.derived[key] for key in ("pad_top", "pad_left", "pad_bottom",
                                                         "pad_right"))
        return (node.attrs["mode"] == "max" and node.attrs["size"] == (2, 2)
                and node.attrs["stride"] == (2, 2) and unpadded
                and (node.output.width, node.output.height) == (x.width // 2, x.height // 2))

    onnx_types = ("MaxPool", "AveragePool")
    onnx_notes = ("2-D; pads, auto_pad, ceil_mode, count_include_pad (not with more padding "
                  "after than before); no dilations, no Indices output")

    def from_onnx(self, node):
        kernel = tuple(node.attr("kernel_shape", ()))
        stride = tuple(node.attr("strides", (1, 1)))
        if len(kernel) != 2:
            raise OnnxUnsupported(f"kernel_shape {list(kernel)} is not 2-D")
        if any(d != 1 for d in node.attr("dilations", (1, 1))):
            raise OnnxUnsupported("dilated pooling is not supported")
        if len(node.output_shapes) > 1 and node.output_shapes[1] is not None:
            raise OnnxUnsupported("its Indices output is not supported")
        average = node.op_type == "AveragePool"
        count_pad = bool(node.attr("count_include_pad", 0)) and average
        if node.folded_pads != (0, 0, 0, 0):  # a zero Pad: taps an average counts
            count_pad = True
        attrs = {"mode": "avg" if average else "max", "size": onnx_pair(kernel),
                 "stride": onnx_pair(stride), **onnx_window(node, kernel, stride, (1, 1))}
        pads = [p + q for p, q in zip(node.attr("pads", [0, 0, 0, 0]), node.folded_pads)]
        if count_pad and (pads[2] > pads[0] or pads[3] > pads[1]):
            raise OnnxUnsupported(f"count_include_pad with pads {pads}: convgraph counts "
                                  "the same padding before and after")
        if count_pad:
            attrs["count_pad"] = True
        return OnnxLayer(attrs)

    def onnx_folds_pad(self, node):
        # zeros count as taps of an average; a max would see them where ONNX's own padding
        # is ignored, so a max pool (or an average that ignores its own pads) keeps its Pad
        own_pads = any(node.attr("pads", [0, 0, 0, 0])) or node.attr("auto_pad", "NOTSET") \
            not in ("NOTSET", b"NOTSET", "VALID", b"VALID")
        return node.op_type == "AveragePool" and (
            bool(node.attr("count_include_pad", 0)) or not own_pads)

    def infer(self, node):
        (x,) = node.input_volumes
        a = node.attrs
        (kw, kh), (sw, sh) = a["size"], a["stride"]
        if a["pad"] != "same":
            for pad, k, axis in ((a["pad"][0], kw, "width"), (a["pad"][1], kh, "height")):
                if 2 * pad > k:
                    raise node.error(
                        f"padding {pad} is more than half the window {axis} {k}; some windows "
                        "would hold only padding.",
                        attr="pad",
                        hint=f"use pad {k // 2} or less.",
                    )
        pad_w, pad_h = ("same", "same") if a["pad"] == "same" else a["pad"]
        across = slide(node.layer, "width", x.width, kw, sw, pad_w, 1, a["rounding"], kw // 2)
        down = slide(node.layer, "height", x.height, kh, sh, pad_h, 1, a["rounding"], kh // 2)
        derived = {
            "pad_left": across.pad_before,
            "pad_right": across.pad_after,
            "pad_top": down.pad_before,
            "pad_bottom": down.pad_after,
        }
        return Volume(across.output, down.output, x.depth), derived

    def flops(self, node):
        kw, kh = node.attrs["size"]
        return node.output.elements * kw * kh  # one compare or add per tap

    def _defines(self, ctx) -> tuple[dict, int]:
        """The window, layouts and vector width both pooling kernels are specialised with."""
        attrs, derived, out = ctx.attrs, ctx.derived, ctx.node.output
        x, y = ctx.input_layout(), ctx.output_layout
        width = ctx.vector_width(x, y)
        (kw, kh), (sw, sh) = attrs["size"], attrs["stride"]
        return {
            "IS_MAX": int(attrs["mode"] == "max"), "COUNT_PAD": int(attrs["count_pad"]),
            "IN_H": x.volume.height, "IN_W": x.volume.width, "OUT_H": out.height,
            "OUT_W": out.width, "CHANNEL_VECTORS": y.stride_c // width, "WINDOW_H": kh,
            "WINDOW_W": kw, "STRIDE_H": sh, "STRIDE_W": sw, "PAD_TOP": derived["pad_top"],
            "PAD_LEFT": derived["pad_left"], "PAD_BOTTOM": derived["pad_bottom"],
            "PAD_RIGHT": derived["pad_right"], "VECTOR_WIDTH": width,
            **x.defines("X"), **y.defines("Y"),
        }, width

    def lower(self, ctx) -> None:
        x, y, out = ctx.input_layout(), ctx.output_layout, ctx.node.output
        defines, width = self._defines(ctx)
        ctx.launch("pool", "POOL_FORWARD", defines, (y.stride_c // width, out.width, out.height),
                   [ctx.input_tensor(), ctx.output_tensor], batch_axis=2,
                   local_size=ctx.profile.pixel_local, flops=ctx.node.flops,
                   moved=4 * (x.volume.elements + out.elements))

    def reference(self, node, inputs, params):
        (x,) = inputs
        x = np.asarray(x, np.float64)
        if node.attrs["mode"] == "max":
            return reference_windows(x, node, fill=-np.inf).max(axis=(-2, -1))
        total = reference_windows(x, node, fill=0.0).sum(axis=(-2, -1))
        ones = np.ones((1, 1) + x.shape[2:])
        if node.attrs["count_pad"]:  # the window inside the declared padding
            count = reference_windows(ones, node, fill=0.0, declared_fill=1.0).sum(axis=(-2, -1))
        else:
            count = reference_windows(ones, node, fill=0.0).sum(axis=(-2, -1))
        return total / count

    def onnx_export(self, node, onnx):
        (kw, kh), (sw, sh) = node.attrs["size"], node.attrs["stride"]
        top, left, bottom, right = covering_pads(node)
        window = {"kernel_shape": [kh, kw], "strides": [sh, sw]}
        if node.attrs["mode"] == "max":  # ONNX pads max pooling with -inf, as reference does
            onnx.add("MaxPool", onnx.inputs, output=onnx.output,
                     pads=[top, left, bottom, right], **window)
            return
        x = onnx.inputs[0]
        d = node.derived
        declared = (d["pad_top"], d["pad_left"], d["pad_bottom"], d["pad_right"])
        if node.attrs["count_pad"] and any(declared):
            # the declared padding counts in the average, a ceil overhang does not: pad with
            # real zeros first, and let AveragePool pad (uncounted) only the overhang
            x = onnx.add("Pad", [x, onnx.constant("pads", [0, 0, *declared[:2], 0, 0,
                                                           *declared[2:]], "int64")])
            top = left = 0
            bottom, right = max(bottom - declared[2], 0), max(right - declared[3], 0)
        onnx.add("AveragePool", [x], output=onnx.output, pads=[top, left, bottom, right],
                 count_include_pad=0, **window)

    def lower_backward(self, ctx) -> None:
        x, out = ctx.input_layout(), ctx.node.output
        grad, accumulate = ctx.input_grad()
        defines, width = self._defines(ctx)
        defines["ACCUMULATE"] = accumulate
        args = [ctx.input_tensor(), ctx.output_grad, grad]
        if _windows_tile_the_input(ctx.attrs, ctx.derived, x.volume, out):
            gate = ctx.input_gate(accumulate)  # x, read anyway, is the activation's output
            if gate:
                defines.update({"GATE": gate[0], "GATE_SLOPE": gate[1]})
            ctx.launch("pool", "POOL_BACKWARD_WINDOWS", defines,
                       (x.stride_c // width, out.width, out.height), args, batch_axis=2,
                       local_size=ctx.profile.pixel_local)
            return
        ctx.launch("pool", "POOL_BACKWARD", defines,
                   (x.stride_c // width, x.volume.width, x.volume.height), args, batch_axis=2,
                   local_size=ctx.profile.pixel_local)

    def reference_backward(self, node, inputs, output, grad, params, seed):
        (x,) = inputs
        x = np.asarray(x, np.float64)
        if node.attrs["mode"] == "max":
            windows = reference_windows(x, node, fill=-np.inf)
            flat = windows.reshape(windows.shape[:4] + (-1,))
            first = flat.argmax(axis=-1)  # the first maximum in scan order, as PyTorch
            one_hot = np.zeros(flat.shape)
            np.put_along_axis(one_hot, first[..., None], 1.0, axis=-1)
            d_windows = (one_hot * grad[..., None]).reshape(windows.shape)
        else:
            ones = np.ones((1, 1) + x.shape[2:])
            inside = reference_windows(ones, node, fill=0.0)
            if node.attrs["count_pad"]:
                count = reference_windows(ones, node, fill=0.0, declared_fill=1.0)
            else:
                count = inside
            d_windows = inside * (grad / count.sum(axis=(-2, -1)))[..., None, None]
        return [reference_unwindow(d_windows, node, x.shape)], {}


@register
class GlobalAvgPool(Op):
    name = "gap"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("9x9x4", "GAP", output="1x1x4", params=0, macs=0),
        Case("5x4x3", "GAP", grad=True),
        Case("7x5x20", "GAP", batch=7, other_profile=True),
        Case("1x1x3", "GAP", batch=1),
        Case("13x9x5", "CONV(17, 3, pad=1)-GAP", batch=1),
    )
    aliases = ("globalavgpool", "global_avg_pool", "globalpool")
    onnx_types = ("GlobalAveragePool", "ReduceMean")
    onnx_notes = ("ReduceMean: over axes (2, 3) (attribute before opset 18, constant input "
                  "from 18), keepdims either")

    def from_onnx(self, node):
        node.spatial_input()  # a 2-D input
        if node.op_type == "ReduceMean":
            axes = node.constant(1, "axes") if node.has_input(1) else node.attr("axes")
            axes = sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1)) \
                if axes is not None else None
            if axes != [2, 3]:
                raise OnnxUnsupported(f"axes {axes or 'all'}: convgraph averages over the "
                                      "space only (axes 2 and 3), as gap")
        return OnnxLayer({})
    summary = "Global average pooling: each depth slice averaged to one value (1x1xD)."
    kernels = ("pool",)
    colour = "#fff3cd"

    def infer(self, node):
        (x,) = node.input_volumes
        return Volume(1, 1, x.depth), {}

    def flops(self, node):
        return node.input_volumes[0].elements

    def lower(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        width = ctx.vector_width(x, y)
        defines = {
            "IN_H": x.volume.height,
            "IN_W": x.volume.width,
            "CHANNEL_VECTORS": y.stride_c // width,
            "VECTOR_WIDTH": width,
            **x.defines("X"),
            **y.defines("Y"),
        }
        ctx.launch(
            "pool",
            "GLOBAL_AVG_FORWARD",
            defines,
            (y.stride_c // width, 1),
            [ctx.input_tensor(), ctx.output_tensor],
            batch_axis=1,
            flops=ctx.node.flops,
            moved=4 * x.volume.elements,
        )

    def reference(self, node, inputs, params):
        return np.asarray(inputs[0], np.float64).mean(axis=(2, 3), keepdims=True)

    def onnx_export(self, node, onnx):
        onnx.add("GlobalAveragePool", onnx.inputs, output=onnx.output)

    def lower_backward(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        grad, accumulate = ctx.input_grad()
        width = ctx.vector_width(x, y)
        defines = {
            "IN_H": x.volume.height,
            "IN_W": x.volume.width,
            "CHANNEL_VECTORS": x.stride_c // width,
            "VECTOR_WIDTH": width,
            "ACCUMULATE": accumulate,
            **x.defines("X"),
            **y.defines("Y"),
        }
        ctx.launch(
            "pool",
            "GLOBAL_AVG_BACKWARD",
            defines,
            (x.stride_c // width, x.volume.width, x.volume.height),
            [ctx.output_grad, grad],
            batch_axis=2,
            local_size=ctx.profile.pixel_local,
        )


    def reference_backward(self, node, inputs, output, grad, params, seed):
        x = inputs[0]
        return [np.broadcast_to(grad / (x.shape[2] * x.shape[3]), x.shape).copy()], {}


@register
class GlobalMaxPool(Op):
    name = "globalmaxpool"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("9x9x4", "GLOBALMAXPOOL", output="1x1x4", params=0, macs=0),
        Case("5x4x3", "GLOBALMAXPOOL", grad=True, kinks=True),  # distinct: no ties
        Case("7x5x20", "GLOBALMAXPOOL", batch=7, other_profile=True),
        Case("1x1x3", "GLOBALMAXPOOL", batch=1),
        Case("13x9x5", "CONV(17, 3, pad=1)-GLOBALMAXPOOL", batch=1),
        Case("11x3x7", "POOL(2, 1)-GLOBALMAXPOOL", batch=7),  # overlapping windows: ties
    )
    aliases = ("global_max_pool", "gmp")
    onnx_types = ("GlobalMaxPool",)

    def from_onnx(self, node):
        node.spatial_input()  # a 2-D input
        return OnnxLayer({})
    summary = "Global max pooling: each depth slice reduced to its maximum (1x1xD)."
    kernels = ("globalmax",)
    colour = "#fff3cd"

    def infer(self, node):
        (x,) = node.input_volumes
        return Volume(1, 1, x.depth), {}

    def flops(self, node):
        return node.input_volumes[0].elements  # one compare per value

    def _defines(self, ctx) -> tuple[dict, int]:
        x, y = ctx.input_layout(), ctx.output_layout
        width = ctx.vector_width(x, y)
        return {"IN_H": x.volume.height, "IN_W": x.volume.width,
                "CHANNEL_VECTORS": y.stride_c // width, "VECTOR_WIDTH": width,
                **x.defines("X"), **y.defines("Y")}, width

    def lower(self, ctx) -> None:
        defines, width = self._defines(ctx)
        ctx.launch("globalmax", "GLOBAL_MAX_FORWARD", defines,
                   (ctx.output_layout.stride_c // width, 1),
                   [ctx.input_tensor(), ctx.output_tensor], batch_axis=1,
                   flops=ctx.node.flops, moved=4 * ctx.input_layout().volume.elements)

    def reference(self, node, inputs, params):
        return np.asarray(inputs[0], np.float64).max(axis=(2, 3), keepdims=True)

    def onnx_export(self, node, onnx):
        onnx.add("GlobalMaxPool", onnx.inputs, output=onnx.output)

    def lower_backward(self, ctx) -> None:
        grad, accumulate = ctx.input_grad()
        defines, width = self._defines(ctx)
        defines["ACCUMULATE"] = accumulate
        ctx.launch("globalmax", "GLOBAL_MAX_BACKWARD", defines,
                   (ctx.output_layout.stride_c // width, 1),
                   [ctx.input_tensor(), ctx.output_grad, grad], batch_axis=1)

    def reference_backward(self, node, inputs, output, grad, params, seed):
        x = np.asarray(inputs[0], np.float64)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        first = flat.argmax(axis=-1)  # the first maximum in scan order, as PyTorch
        dx = np.zeros(flat.shape)
        np.put_along_axis(dx, first[..., None], grad.reshape(first.shape)[..., None], axis=-1)
        return [dx.reshape(x.shape)], {}


def _windows_tile_the_input(attrs: dict, derived: dict, volume, out) -> bool:
    """Windows side by side with no gap, overlap, padding or remainder, and small enough for
    one work-item to hold (pool.cl POOL_BACKWARD_WINDOWS)."""
    (kw, kh), (sw, sh) = attrs["size"], attrs["stride"]
    pads = (derived["pad_top"], derived["pad_bottom"], derived["pad_left"], derived["pad_right"])
    return ((kw, kh) == (sw, sh) and not any(pads) and kw * kh <= 9
            and out.width * sw == volume.width and out.height * sh == volume.height)
