"""Upsampling by whole factors: nearest or bilinear, with PyTorch's and ONNX's align_corners."""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.ops import values as v
from convgraph.ops.base import OnnxLayer, OnnxUnsupported, Op, Param, register
from convgraph.ops.cases import Case


def source_coordinates(out_size: int, in_size: int, factor: int, mode: str,
                       align_corners: bool) -> np.ndarray:
    """Where each output coordinate reads its input along one axis (float64), as PyTorch's
    F.interpolate and ONNX Resize define it: nearest floor(dst / factor); bilinear
    (dst + 0.5) / factor - 0.5 clamped at 0 (half-pixel centres), or with align_corners
    dst * (in - 1) / (out - 1) (the corner pixels' centres meet)."""
    dst = np.arange(out_size, dtype=np.float64)
    if mode == "nearest":
        return np.floor(dst / factor)
    if align_corners:
        return dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    return np.maximum((dst + 0.5) / factor - 0.5, 0.0)


def interpolation_matrix(out_size: int, in_size: int, factor: int, mode: str,
                         align_corners: bool) -> np.ndarray:
    """(out_size, in_size): row o holds the weights output o gives each input along an axis.

    >>> interpolation_matrix(4, 2, 2, "bilinear", False)
    array([[1.  , 0.  ],
           [0.75, 0.25],
           [0.25, 0.75],
           [0.  , 1.  ]])
    """
    source = source_coordinates(out_size, in_size, factor, mode, align_corners)
    first = np.floor(source).astype(int)
    second = np.minimum(first + 1, in_size - 1)
    frac = source - first
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, first), 1.0 - frac)
    np.add.at(matrix, (rows, second), frac)
    return matrix


@register
class Upsample(Op):
    name = "upsample"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        # shape rule: width x factor_w, height x factor_h, depth kept
        Case("5x3x4", "UPSAMPLE(2)", output="10x6x4", params=0, macs=0),
        Case("5x3x2", "UPSAMPLE(3x2, mode=bilinear)", output="15x6x2", params=0, macs=0),
        Case("7x7x8", "UPSAMPLE(1, mode=bilinear, align_corners=true)", output="7x7x8",
             params=0, macs=0),
        # finite differences of the numpy backward (the adjoint of the interpolation)
        Case("4x3x2", "UPSAMPLE(2)", grad=True),
        Case("5x3x2", "UPSAMPLE(3x2, mode=bilinear)", grad=True),
        Case("3x4x2", "UPSAMPLE(2x3, mode=bilinear, align_corners=true)", grad=True),
        # device kernels: odd sizes, factors 1 to 3, depth 1, 5 and 20, batch 1 and 7
        Case("7x5x3", "UPSAMPLE(2)", batch=7, other_profile=True),
        Case("5x3x1", "UPSAMPLE(3x2)", batch=1),
        Case("9x7x5", "UPSAMPLE(2, mode=bilinear)", batch=7, other_profile=True),
        Case("5x6x20", "UPSAMPLE(3, mode=bilinear)", batch=1),
        Case("7x5x3", "UPSAMPLE(2x3, mode=bilinear, align_corners=true)", batch=7,
             other_profile=True),
        Case("1x4x2", "UPSAMPLE(3, mode=bilinear, align_corners=true)", batch=1),  # width 1
        Case("6x5x4", "UPSAMPLE(1, mode=bilinear)", batch=1),  # factor 1: the identity
        # writing into a conv's halo, and read by its gradient
        Case("5x4x3", "UPSAMPLE(2, mode=bilinear)-CONV(4, 3, pad=1)", batch=7),
        Case("6x5x3", "CONV(4, 3, pad=1)-RELU-UPSAMPLE(2)", batch=1),
    )
    aliases = ("upsampling", "interpolate")
    summary = "Upsampling (UPSAMPLE) by whole factors: nearest or bilinear interpolation."
    positional = ("factor", "mode")
    kernels = ("upsample",)
    onnx_types = ("Resize",)
    onnx_notes = ("whole factors (scales or sizes input) of H and W; nearest (PyTorch's "
                  "asymmetric/floor, the half-pixel roundings, Keras' tf_half_pixel_for_nn/"
                  "floor) and linear (half_pixel, pytorch_half_pixel: align_corners false; "
                  "align_corners) wherever ONNX reads the same pixels as convgraph, checked "
                  "on the actual sizes; no cubic, antialias or tf_crop_and_resize. The old "
                  "Upsample op is ONNX's until opset 9, below what convgraph imports")

    def from_onnx(self, node):
        mode, transform, nearest_mode = (
            value.decode() if isinstance(value, bytes) else str(value) for value in (
                node.attr("mode", "nearest"),
                node.attr("coordinate_transformation_mode", "half_pixel"),
                node.attr("nearest_mode", "round_prefer_floor")))
        if mode not in ("nearest", "linear"):
            raise OnnxUnsupported(f"mode '{mode}': convgraph upsamples nearest or linear")
        if node.attr("antialias", 0) or transform == "tf_crop_and_resize":
            raise OnnxUnsupported(f"{'antialias' if node.attr('antialias', 0) else transform}"
                                  " is not supported")
        (before, after) = node.input_shapes[0], node.output_shapes[0]
        if before is None or after is None or len(before) != 4 or len(after) != 4 or tuple(
                before[1:2]) != tuple(after[1:2]):
            raise OnnxUnsupported(f"it resizes {before} to {after}: convgraph upsamples H "
                                  "and W of (N, C, H, W)")
        factors = []
        scales = node.constants[2] if node.has_input(2) else None
        for axis in (2, 3):
            size, out = int(before[axis]), int(after[axis])
            if out % size:
                raise OnnxUnsupported(f"{size} to {out} is no whole factor: convgraph "
                                      "upsamples by whole factors")
            factor = out // size
            scale = float(np.asarray(scales).reshape(-1)[axis]) if scales is not None \
                and np.asarray(scales).size == 4 else float(factor)
            wanted = self._onnx_resize_matrix(out, size, scale, mode, transform, nearest_mode)
            ours = {align: interpolation_matrix(out, size, factor, "nearest" if mode ==
                                                "nearest" else "bilinear", align)
                    for align in ((False,) if mode == "nearest" else (False, True))}
            matching = [align for align, matrix in ours.items()
                        if np.allclose(matrix, wanted, atol=1e-6)]
            if not matching:
                raise OnnxUnsupported(f"{mode} with {transform}"
                                      f"{'/' + nearest_mode if mode == 'nearest' else ''} "
                                      f"reads other pixels than convgraph's upsampling for "
                                      f"{size} to {out}")
            factors.append((factor, matching))
        (fh, align_h), (fw, align_w) = factors
        common = [a for a in align_h if a in align_w]
        if not common:
            raise OnnxUnsupported(f"{transform} matches different corner rules along H and W")
        attrs = {"factor": fh if fh == fw else [fw, fh]}
        if mode == "linear":
            attrs["mode"] = "bilinear"
            attrs["align_corners"] = common[-1] if transform == "align_corners" else common[0]
        return OnnxLayer(attrs)

    @staticmethod
    def _onnx_resize_matrix(out_size: int, in_size: int, scale: float, mode: str,
                           transform: str, nearest_mode: str) -> np.ndarray:
        """(out_size, in_size): the weights ONNX Resize gives each input along one axis (its
        coordinate transform, then the nearest rounding or the two linear neighbours, clamped)."""
        dst = np.arange(out_size, dtype=np.float64)
        if transform == "align_corners":
            source = dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
        elif transform == "asymmetric":
            source = dst / scale
        elif transform == "tf_half_pixel_for_nn":
            source = (dst + 0.5) / scale
        elif transform == "pytorch_half_pixel" and out_size == 1:
            source = np.zeros(1)
        else:  # half_pixel, pytorch_half_pixel, half_pixel_symmetric (the same for whole factors)
            source = (dst + 0.5) / scale - 0.5
        matrix = np.zeros((out_size, in_size))
        rows = np.arange(out_size)
        if mode == "nearest":
            rounded = {"floor": np.floor(source), "ceil": np.ceil(source),
                       "round_prefer_ceil": np.floor(source + 0.5),
                       "round_prefer_floor": np.ceil(source - 0.5)}[nearest_mode]
            matrix[rows, np.clip(rounded, 0, in_size - 1).astype(int)] = 1.0
            return matrix
        source = np.clip(source, 0, in_size - 1)
        first = np.floor(source).astype(int)
        second = np.minimum(first + 1, in_size - 1)
        np.add.at(matrix, (rows, first), 1.0 - (source - first))
        np.add.at(matrix, (rows, second), source - first)
        return matrix
    colour = "#e2f0d9"
    params = {
        "factor": Param(v.pair(1), default=(2, 2), doc="scale factor, int or WxH"),
        "mode": Param(v.choice("nearest", "bilinear"), default="nearest",
                      doc="nearest or bilinear"),
        "align_corners": Param(v.boolean, default=False,
                               doc="bilinear only: corner pixels' centres meet, as PyTorch's "
                               "align_corners=True (false: half-pixel centres)"),
    }

    def onnx_export(self, node, onnx):
        # Resize with the coordinate rules this op follows (PyTorch's for whole factors):
        # nearest floor(dst / f), bilinear half-pixel or align-corners
        fw, fh = node.attrs["factor"]
        scales = onnx.constant("scales", [1.0, 1.0, float(fh), float(fw)])
        if node.attrs["mode"] == "nearest":
            rule = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                    "nearest_mode": "floor"}
        else:
            rule = {"mode": "linear", "coordinate_transformation_mode":
                    "align_corners" if node.attrs["align_corners"] else "half_pixel"}
        onnx.add("Resize", [onnx.inputs[0], "", scales], output=onnx.output, **rule)

    def infer(self, node):
        (x,) = node.input_volumes
        a = node.attrs
        if a["align_corners"] and a["mode"] != "bilinear":
            raise node.error(
                "align_corners applies to bilinear interpolation only (PyTorch and ONNX "
                "define nearest without it).",
                attr="align_corners",
                hint="drop align_corners, or set mode: bilinear.",
            )
        factor_w, factor_h = a["factor"]
        return Volume(x.width * factor_w, x.height * factor_h, x.depth), {}

    def flops(self, node):
        # bilinear: four weighted taps per value (4 multiplies, 3 adds); nearest is a copy
        return 7 * node.output.elements if node.attrs["mode"] == "bilinear" else 0

    def _defines(self, ctx) -> tuple[dict, int]:
        """The constants both kernels are specialised with, and the vector width."""
        x, y = ctx.input_layout(), ctx.output_layout
        width = ctx.vector_width(x, y)
        factor_w, factor_h = ctx.attrs["factor"]
        bilinear = ctx.attrs["mode"] == "bilinear"
        # the outputs that can read input i along an axis (upsample.cl): nearest its own
        # factor outputs, bilinear 4 factor + 2 from (i - 1) factor - 1
        window = (lambda f: 4 * f + 2) if bilinear else (lambda f: f)
        return {
            "BILINEAR": int(bilinear), "ALIGN_CORNERS": int(ctx.attrs["align_corners"]),
            "FACTOR_H": factor_h, "FACTOR_W": factor_w,
            "IN_H": x.volume.height, "IN_W": x.volume.width,
            "OUT_H": y.volume.height, "OUT_W": y.volume.width,
            "WINDOW_START": -1 if bilinear else 0, "WINDOW_BEFORE": int(bilinear),
            "WINDOW_H": window(factor_h), "WINDOW_W": window(factor_w),
            "CHANNEL_VECTORS": y.stride_c // width, "VECTOR_WIDTH": width,
            **x.defines("X"), **y.defines("Y"),
        }, width

    def lower(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        defines, width = self._defines(ctx)
        ctx.launch("upsample", "UPSAMPLE_FORWARD", defines,
                   (y.stride_c // width, y.volume.width, y.volume.height),
                   [ctx.input_tensor(), ctx.output_tensor], batch_axis=2,
                   local_size=ctx.profile.pixel_local, flops=ctx.node.flops,
                   moved=4 * (x.volume.elements + y.volume.elements))

    def lower_backward(self, ctx) -> None:
        x = ctx.input_layout()
        grad, accumulate = ctx.input_grad()
        defines, width = self._defines(ctx)
        defines["ACCUMULATE"] = accumulate
        ctx.launch("upsample", "UPSAMPLE_BACKWARD", defines,
                   (x.stride_c // width, x.volume.width, x.volume.height),
                   [ctx.output_grad, grad], batch_axis=2, local_size=ctx.profile.pixel_local)

    def _matrices(self, node, shape) -> tuple[np.ndarray, np.ndarray]:
        """The height and width interpolation matrices for an (N, D, H, W) input."""
        factor_w, factor_h = node.attrs["factor"]
        mode, corners = node.attrs["mode"], node.attrs["align_corners"]
        height, width = shape[2], shape[3]
        return (interpolation_matrix(height * factor_h, height, factor_h, mode, corners),
                interpolation_matrix(width * factor_w, width, factor_w, mode, corners))

    def reference(self, node, inputs, params):
        (x,) = inputs
        rows, columns = self._matrices(node, x.shape)
        # y[n, d, o, p] = sum over (h, w) of rows[o, h] x[n, d, h, w] columns[p, w]
        return np.einsum("oh,ndhw,pw->ndop", rows, np.asarray(x, np.float64), columns)

    def reference_backward(self, node, inputs, output, grad, params, seed):
        (x,) = inputs
        rows, columns = self._matrices(node, x.shape)
        return [np.einsum("oh,ndop,pw->ndhw", rows, np.asarray(grad, np.float64), columns)], {}


