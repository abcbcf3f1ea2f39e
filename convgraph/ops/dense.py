"""Fully connected (FC) layers and flattening of volumes into vectors."""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.ops import conv_gemm
from convgraph.ops import values as v
from convgraph.ops.base import (
    OnnxLayer,
    OnnxUnsupported,
    Op,
    Param,
    Weight,
    fold_output_affine,
    register,
)
from convgraph.ops.cases import Case
from convgraph.ops.spatial import widest_dividing


@register
class Dense(Op):
    name = "fc"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        # shape rule: fc reads the whole volume, flattened
        Case("7x7x512", "FC(4096)", output="1x1x4096", params=25088 * 4096 + 4096,
             macs=25088 * 4096),
        Case("1x1x10", "FC(3, bias=false)", output="1x1x3", params=30, macs=30),
        # finite differences
        Case("3x2x4", "FC(5)", grad=True),
        Case("1x1x6", "FC(3, bias=false)", grad=True),
        # device kernels; batch 17: more images than a work-item's tile of rows on every profile
        # (tests/test_kernels.py checks that it still is)
        Case("1x1x20", "FC(10)", batch=17, other_profile=True),  # more images than a tile of rows
        Case("1x1x20", "FC(10)", batch=9),  # a partial second tile on the GPU profile
        Case("5x3x7", "FC(33)", batch=7),  # from a volume: flatten elided
        Case("5x3x7", "FC(1)", batch=1),
        Case("1x1x64", "FC(1, bias=false)", batch=1),
        Case("4x4x3", "FC(10, bias=false)", batch=1),
        Case("1x1x3", "FC(33)", batch=17),
        Case("1x1x17", "FC(12)-RELU", batch=7),  # fused epilogue
        Case("6x6x3", "CONV(5, 3)-FC(20)-TANH", batch=1),
        Case("5x3x7", {  # fc reading (through an elided flatten) a volume with a halo of 1
            "fc": {"op": "fc", "units": 10, "inputs": ["input"]},
            "conv": {"op": "conv", "filters": 10, "size": "7x5", "pad": 1, "inputs": ["input"]},
            "add": {"op": "add", "inputs": ["fc", "conv"]},
        }, batch=7, other_profile=True, label="halo"),
        # 64 units: 4 vectors of units per work-item in the weight gradient (odd: backward)
        Case("2x2x12", "FC(64)", batch=1),
        Case("3x1x16", "FC(64)", batch=5),
    )
    aliases = ("dense", "linear", "fully_connected")
    summary = "Fully connected layer (FC): every output sees every input; output 1x1xunits."
    positional = ("units",)
    # reduction: the bias gradient's CHANNEL_SUM; conv_gemm: the GPU family (ops/conv_gemm.py)
    kernels = ("dense", "reduction", "conv_gemm")
    takes_epilogue = True
    takes_affine = True  # a batchnorm after it folds into its weights in inference
    implicit_flatten = "flatten"
    onnx_types = ("Gemm", "MatMul")
    onnx_notes = ("Gemm: alpha, beta, transB, a constant B and C (no transA); MatMul: a "
                  "constant 2-D B, a following Add of a constant becomes the bias")

    def from_onnx(self, node):
        matrix = node.constant(1, "weight matrix B").astype(np.float64)
        if matrix.ndim != 2:
            raise OnnxUnsupported(f"its B has shape {list(matrix.shape)}: convgraph needs 2-D")
        if node.input_shapes[0] is None or len(node.input_shapes[0]) != 2:
            raise OnnxUnsupported(f"its input has shape {node.input_shapes[0]}: convgraph "
                                  "multiplies (N, features)")
        if node.attr("transA", 0):
            raise OnnxUnsupported("transA=1 (a transposed input) is not supported")
        # fc holds (units, inputs), as Gemm's B with transB=1 and MatMul's B transposed
        transposed = node.op_type == "Gemm" and node.attr("transB", 0)
        weight = (matrix if transposed else matrix.T) * node.attr("alpha", 1.0)
        units = weight.shape[0]
        weights = {"weight": weight}
        if node.op_type == "Gemm" and node.has_input(2):
            bias = node.constant(2, "bias C") * node.attr("beta", 1.0)
            if bias.size not in (1, units) or max(bias.shape, default=1) != bias.size:
                raise OnnxUnsupported(f"its C has shape {list(bias.shape)}: convgraph adds one "
                                      f"bias per output ({units})")
            weights["bias"] = np.broadcast_to(bias.reshape(-1), (units,))
        return OnnxLayer({"units": units, "bias": "bias" in weights}, weights)

    def onnx_fold_bias(self, layer, bias):
        units = layer.attrs["units"]
        if layer.attrs["bias"] or bias.size != units or max(bias.shape, default=1) != units:
            return False
        layer.attrs["bias"] = True
        layer.weights["bias"] = bias.reshape(units)
        return True
    colour = "#d1e7dd"
    params = {
        "units": Param(v.integer(1), doc="number of outputs"),
        "bias": Param(v.boolean, default=True, doc="add a learned bias per output"),
    }

    def infer(self, node):
        return Volume(1, 1, node.attrs["units"]), {}

    def weights(self, node):
        # (units, inputs) with inputs flattened in (depth, height, width) order, as PyTorch does
        units = node.output.depth
        weights = {"weight": Weight((units, node.input_volumes[0].elements), "fan_in")}
        if node.attrs["bias"]:
            weights["bias"] = Weight((units,), "zeros")
        return weights

    def macs(self, node):
        return node.input_volumes[0].elements * node.output.depth

    def _defines(self, ctx) -> tuple[dict, int, int]:
        """Shapes, layouts, vector width and row tile of every fc kernel; x is the stored input:
        the volume itself when a flatten was elided (no copy)."""
        x, y = ctx.input_layout(), ctx.output_layout
        width = ctx.vector_width(y)
        rows = ctx.profile.dense_tile_rows
        return {
            "IN_H": x.volume.height, "IN_W": x.volume.width, "IN_CHANNELS": x.volume.depth,
            "UNITS": ctx.attrs["units"], "U_ALLOC": y.stride_c, "VECTOR_WIDTH": width,
            "TILE_ROWS": rows, **x.defines("X"), **y.defines("Y"),
        }, width, rows

    def lower(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        defines, width, rows = self._defines(ctx)
        activation, slope = ctx.epilogue()
        defines.update({"HAS_BIAS": int(ctx.attrs["bias"] or ctx.folds_affine),
                        "EPILOGUE": activation,
                        "EPILOGUE_SLOPE": slope})
        args = [ctx.input_tensor(), ctx.param("weight"), ctx.param("bias"), ctx.output_tensor,
                ctx.BATCH]
        moved = 4 * (x.volume.elements + y.stride_c)
        if conv_gemm.lower_dense(ctx, defines, args, moved):  # the GPU family
            return
        vectors = y.stride_c // width
        default = {"TILE_ROWS": rows,
                   "CHANNEL_STEP": widest_dividing(x.volume.depth, ctx.profile.dense_channel_step),
                   "UNIT_VECTORS": widest_dividing(vectors, ctx.profile.dense_unit_vectors)}
        site, knobs = ctx.tuned("DENSE_FORWARD", defines, [default] + [  # images x units
            {"TILE_ROWS": r, "UNIT_VECTORS": v, "CHANNEL_STEP": step}
            for r in (4, 8, 16) for v in (1, 2, 4) for step in (1, 2, 4, 8)
            if vectors % v == 0 and x.volume.depth % step == 0])
        ctx.launch(
            "dense",
            "DENSE_FORWARD",
            {**defines, **knobs},
            (vectors // knobs["UNIT_VECTORS"], 1),
            args,
            batch_axis=1,
            flops=ctx.node.flops,
            moved=moved,
            batch_divisor=knobs["TILE_ROWS"],
            site=site,
        )

    def fold_affine(self, node, params, scale, shift):
        return fold_output_affine(params, scale, shift)

    def device_params(self, node, params, input_layout, output_layout):
        # PyTorch's (units, C*H*W) in (c, h, w) order -> (H*W*C, U_ALLOC) in (h, w, c) order
        volume = input_layout.volume
        weight = np.asarray(params["weight"], np.float32)
        units = weight.shape[0]
        hwc = weight.reshape(units, volume.depth, volume.height, volume.width).transpose(2, 3, 1, 0)
        device = np.zeros((volume.elements, output_layout.stride_c), np.float32)
        device[:, :units] = hwc.reshape(volume.elements, units)
        bias = np.zeros(output_layout.stride_c, np.float32)
        if "bias" in params:  # a folded batchnorm brings one where the layer has none
            bias[:units] = params["bias"]
        return {"weight": device, "bias": bias}

    def device_param_elements(self, node, input_layout, output_layout):
        return {"weight": input_layout.volume.elements * output_layout.stride_c,
                "bias": output_layout.stride_c}

    def reference(self, node, inputs, params):
        x = np.asarray(inputs[0], np.float64)
        out = x.reshape(x.shape[0], -1) @ np.asarray(params["weight"], np.float64).T
        if node.attrs["bias"]:
            out += np.asarray(params["bias"], np.float64)
        return out[:, :, None, None]

    def onnx_export(self, node, onnx):
        # Gemm multiplies matrices: (N, D*H*W) rows in, (N, units) out, kept as a volume
        rows = onnx.add("Flatten", onnx.inputs, axis=1)
        weights = [onnx.param("weight")] + ([onnx.param("bias")] if node.attrs["bias"] else [])
        onnx.as_volume(onnx.add("Gemm", [rows] + weights, transB=1), onnx.output)

    def lower_backward(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        defines, width, rows = self._defines(ctx)
        if conv_gemm.lower_dense_backward(ctx, defines):  # the GPU family
            return
        # inputs per work-item of the gradient kernels: one pixel's channels
        tile = widest_dividing(x.volume.depth, 4)
        defines["INPUT_TILE"] = tile
        vectors = y.stride_c // width
        site, knobs = ctx.tuned("DENSE_BACKWARD_WEIGHTS", defines,
                                _weight_gradient_space(ctx.profile, x.volume.depth, vectors))
        ctx.launch(
            "dense",
            "DENSE_BACKWARD_WEIGHTS",
            {**defines, **knobs},
            (vectors // knobs["UNIT_VECTORS"], x.volume.elements // knobs["INPUT_TILE"]),
            [ctx.input_tensor(), ctx.output_grad, ctx.param_grad("weight"), ctx.BATCH],
            flops=ctx.node.flops,
            site=site,
        )
        if ctx.attrs["bias"]:
            ctx.channel_sum(ctx.output_grad, y, "bias")
        if ctx.needs_grad():
            grad, accumulate = ctx.input_grad()
            shape = {**defines, "ACCUMULATE": accumulate}
            site, knobs = ctx.tuned("DENSE_BACKWARD_DATA", shape, _input_gradient_space(
                ctx.profile, x.volume.depth, rows, tile))
            ctx.launch(
                "dense",
                "DENSE_BACKWARD_DATA",
                {**shape, **knobs},
                (x.volume.elements // knobs["INPUT_TILE"], 1),
                [ctx.output_grad, ctx.param("weight"), grad, ctx.BATCH],
                batch_axis=1,
                flops=ctx.node.flops,
                batch_divisor=knobs["TILE_ROWS"],
                site=site,
            )

    def host_params(self, node, device, input_layout, output_layout):
        volume = input_layout.volume
        units = node.attrs["units"]
        relaid = np.asarray(device["weight"]).reshape(volume.elements, -1)[:, :units]
        weight = relaid.reshape(volume.height, volume.width, volume.depth, units)
        host = {"weight": np.ascontiguousarray(weight.transpose(3, 2, 0, 1).reshape(units, -1))}
        if node.attrs["bias"]:
            host["bias"] = np.asarray(device["bias"])[:units].copy()
        return host

    def reference_backward(self, node, inputs, output, grad, params, seed):
        x = np.asarray(inputs[0], np.float64)
        flat = x.reshape(x.shape[0], -1)
        dy = grad.reshape(grad.shape[0], -1)
        weight = np.asarray(params["weight"], np.float64)
        d_params = {"weight": dy.T @ flat}
        if node.attrs["bias"]:
            d_params["bias"] = dy.sum(axis=0)
        return [(dy @ weight).reshape(x.shape)], d_params


def _weight_gradient_space(profile, channels: int, vectors: int) -> list[dict]:
    """Every setting of an fc weight-gradient site, the profile's default first: inputs per
    work-item (one load; they divide a pixel's ``channels``) and vectors of units (of the
    ``vectors`` stored), a register tile of at most 16 vectors."""
    default = {"INPUT_TILE": widest_dividing(channels, profile.dense_grad_inputs),
               "UNIT_VECTORS": widest_dividing(vectors, profile.dense_grad_unit_vectors)}
    return [default] + [{"INPUT_TILE": tile, "UNIT_VECTORS": units}
                        for tile in (4, 8, 2) for units in (1, 2, 4)
                        if channels % tile == 0 and vectors % units == 0 and tile * units <= 16]


def _input_gradient_space(profile, channels: int, rows: int, tile: int) -> list[dict]:
    """Every setting of an fc input-gradient site, the profile's default first: images and
    inputs per work-item, each pair a vector accumulator (summed across lanes at the end)."""
    default = {"TILE_ROWS": min(rows, profile.dense_grad_rows), "INPUT_TILE": tile}
    return [default] + [{"TILE_ROWS": r, "INPUT_TILE": i}
                        for r in (4, 8, 16) for i in (4, 2)
                        if channels % i == 0]


@register
class Flatten(Op):
    name = "flatten"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("5x5x16", "FLATTEN", output="1x1x400", params=0, macs=0),
        Case("3x2x4", "FLATTEN", grad=True),
        Case("5x3x7", "FLATTEN", batch=7),
        Case("4x2x3", "FLATTEN-RELU", batch=1),
        Case("6x6x17", "CONV(3, 3, pad=1)-FLATTEN-SIGMOID", batch=1, other_profile=True),
    )
    summary = "Reshape a volume to 1x1x(W*H*D) in (depth, height, width) order; implicit before fc."
    kernels = ("layout",)

    def infer(self, node):
        return Volume(1, 1, node.input_volumes[0].elements), {}

    onnx_types = ("Flatten", "Reshape", "Squeeze")
    onnx_notes = ("to (N, C*H*W) or (N, C*H*W, 1, 1) only: Flatten axis 1, the Reshape (a "
                  "constant target or one computed from Shape) and Squeeze exporters emit "
                  "before a classifier")

    def from_onnx(self, node):
        source, result = node.input_shapes[0], node.output_shapes[0]
        known = source is not None and all(isinstance(n, int) for n in source[1:])
        features = int(np.prod(source[1:])) if known else None
        # (N, C*H*W), or (N, C*H*W, 1, 1): the 1x1xD volume convgraph's own export keeps
        flat = result is not None and (len(result) == 2 or (
            len(result) == 4 and [str(n) for n in result[2:]] == ["1", "1"]))
        if not flat or str(result[1]) != str(features):
            raise OnnxUnsupported(f"it makes {result} of {source}: convgraph flattens only "
                                  "(N, C, H, W) to (N, C*H*W) or (N, C*H*W, 1, 1)")
        return OnnxLayer({})

    def flops(self, node):
        return 0

    def lower(self, ctx) -> None:  # only when not read directly by an fc (see graph passes)
        x, y = ctx.input_layout(), ctx.output_layout
        volume = x.volume
        defines = {
            "HEIGHT": volume.height,
            "WIDTH": volume.width,
            "CHANNELS": volume.depth,
            **x.defines("X"),
            **y.defines("Y"),
        }
        ctx.launch(
            "layout",
            "FLATTEN_FORWARD",
            defines,
            (volume.depth, volume.width, volume.height),
            [ctx.input_tensor(), ctx.output_tensor],
            batch_axis=2,
            local_size=ctx.profile.pixel_local,
            moved=8 * volume.elements,
        )

    def reference(self, node, inputs, params):
        x = np.asarray(inputs[0], np.float64)
        return x.reshape(x.shape[0], -1, 1, 1)

    def onnx_export(self, node, onnx):  # (N, D, H, W) -> (N, D*H*W, 1, 1), same order
        onnx.as_volume(onnx.inputs[0], onnx.output)

    def lower_backward(self, ctx) -> None:
        x, y = ctx.input_layout(), ctx.output_layout
        grad, accumulate = ctx.input_grad()
        volume = x.volume
        ctx.launch(
            "layout",
            "FLATTEN_BACKWARD",
            {
                "HEIGHT": volume.height,
                "WIDTH": volume.width,
                "CHANNELS": volume.depth,
                "ACCUMULATE": accumulate,
                **x.defines("X"),
                **y.defines("Y"),
            },
            (volume.depth, volume.width, volume.height),
            [ctx.output_grad, grad],
            batch_axis=2,
            local_size=ctx.profile.pixel_local,
        )


    def reference_backward(self, node, inputs, output, grad, params, seed):
        return [grad.reshape(inputs[0].shape)], {}
