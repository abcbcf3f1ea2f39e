"""Ops that join branches: elementwise add (residuals) and concatenation along depth."""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.ops.base import OnnxLayer, OnnxUnsupported, Op, register
from convgraph.ops.cases import Case


@register
class Add(Op):
    name = "add"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        # finite differences: the same input read twice accumulates both gradients
        Case("4x3x2", {"a": {"op": "conv", "filters": 2, "size": 1, "inputs": ["input"]},
                       "s": {"op": "add", "inputs": ["a", "input", "a"]}},
             grad=True, label="with-repeated-input"),
        # device kernels (the first also a shape case): joins of the input and 1x1 convs of it
        Case(("9x7x4", "9x7x4"), "ADD", batch=7, output="9x7x4", params=0, macs=0),
        Case(("13x5x20", "13x5x20", "13x5x20"), "ADD", batch=1),
        Case("9x7x3", {  # add(x, x)
            "conv": {"op": "conv", "filters": 5, "size": 3, "pad": 1, "inputs": ["input"]},
            "add": {"op": "add", "inputs": ["conv", "conv"]},
        }, batch=1, label="same-twice"),
        Case("9x7x3", {"add": {"op": "add", "inputs": ["input", "input"]}}, batch=7,
             label="input-twice"),
        Case("9x7x4", {  # the input has a halo of 1 (read by a pad-1 conv), add's output one of 2
            "wide": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},
            "narrow": {"op": "conv", "filters": 4, "size": 1, "inputs": ["input"]},
            "add": {"op": "add", "inputs": ["wide", "narrow", "input"]},
            "out": {"op": "conv", "filters": 6, "size": 5, "pad": 2, "inputs": ["add"]},
        }, batch=1, other_profile=True, label="halos"),
    )
    aliases = ("sum", "residual")
    onnx_types = ("Add", "Sum")
    onnx_notes = ("volumes of one shape (no broadcasting); an Add of a constant after a conv "
                  "or MatMul becomes its bias")

    def from_onnx(self, node):
        if len(set(map(str, node.input_shapes))) != 1:
            raise OnnxUnsupported(f"it broadcasts {node.input_shapes}: convgraph adds volumes "
                                  "of one shape")
        if len(node.input_shapes) == 1:
            raise OnnxUnsupported("a Sum of one input is not supported")
        return OnnxLayer({}, inputs=tuple(range(len(node.input_shapes))))
    summary = "Elementwise sum of two or more volumes of the same size (residual connections)."
    min_inputs, max_inputs = 2, None
    kernels = ("elementwise",)
    colour = "#f8d7da"
    # inference: a sum of two whose one input is a conv read by nothing else runs in that
    # conv's epilogue (codegen/fold.py), with the activation after it: a ResNet block's add
    # and relu launch nothing
    folds_into_producer = True

    def infer(self, node):
        inputs = node.input_volumes
        first = inputs[0]
        for name, vol in zip(node.inputs[1:], inputs[1:]):
            if vol == first:
                continue
            if vol.depth != first.depth and vol[:2] == first[:2]:
                raise node.error(
                    f"depth mismatch: input '{name}' is {vol} but input '{node.inputs[0]}' is "
                    f"{first}; add needs equal volumes.",
                    hint=f"project the narrower branch with a 1x1 conv to depth "
                    f"{max(vol.depth, first.depth)}.",
                )
            raise node.error(
                f"volume mismatch: input '{name}' is {vol} but input '{node.inputs[0]}' is "
                f"{first}; add needs equal volumes.",
                hint="give the shortcut the same stride as the main branch (e.g. a 1x1 conv "
                "with that stride).",
            )
        return first, {}

    def flops(self, node):
        return (len(node.inputs) - 1) * node.output.elements

    def lower(self, ctx) -> None:
        # y = x0 + x1, then y = y + x2, ... (one launch per extra input)
        y = ctx.output_layout
        first = ctx.input_tensor(0)
        for slot in range(1, len(ctx.node.inputs)):
            a, a_layout = (
                (first, ctx.input_layout(0)) if slot == 1 else (ctx.output_tensor, y)
            )
            ctx.pixel_launch(
                "elementwise",
                "ADD_FORWARD",
                {"A": a_layout, "B": ctx.input_layout(slot), "Y": y},
                [a, ctx.input_tensor(slot), ctx.output_tensor],
                None,
                y.volume.elements,
                shapes_at_run_time=True,
            )

    def reference(self, node, inputs, params):
        return sum(np.asarray(x, np.float64) for x in inputs)

    def onnx_export(self, node, onnx):
        onnx.add("Sum", onnx.inputs, output=onnx.output)

    def lower_backward(self, ctx) -> None:
        for slot in range(len(ctx.node.inputs)):
            if not ctx.needs_grad(slot):
                continue
            grad, accumulate = ctx.input_grad(slot)
            ctx.pixel_launch(
                "elementwise",
                "GRADIENT_COPY",
                {"X": ctx.output_layout, "Y": ctx.input_layout(slot)},
                [ctx.output_grad, grad],
                {"ACCUMULATE": accumulate},
                shapes_at_run_time=True,
            )

    def reference_backward(self, node, inputs, output, grad, params, seed):
        return [grad.copy() for _ in inputs], {}


@register
class Concat(Op):
    name = "concat"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        # finite differences
        Case("4x3x2", {"a": {"op": "conv", "filters": 3, "size": 1, "inputs": ["input"]},
                       "c": {"op": "concat", "inputs": ["input", "a"]}}, grad=True),
        # device kernels (the first also a shape case): joins of the input and 1x1 convs of it
        Case(("11x7x3", "11x7x5", "11x7x17"), "CONCAT", batch=7, output="11x7x25", params=0,
             macs=0),
        Case(("5x5x16", "5x5x1"), "CONCAT", batch=1),
        Case("9x7x3", {  # inputs with and without a halo, concatenated into a tensor with a halo
            "a": {"op": "conv", "filters": 5, "size": 3, "pad": 1, "inputs": ["input"]},
            "b": {"op": "pool", "size": 3, "stride": 1, "pad": 1, "inputs": ["input"]},
            "cat": {"op": "concat", "inputs": ["b", "a", "input", "a"]},
            "out": {"op": "conv", "filters": 7, "size": 3, "pad": 1, "inputs": ["cat"]},
        }, batch=1, other_profile=True, label="halos"),
    )
    aliases = ("concatenate",)
    onnx_types = ("Concat",)
    onnx_notes = "along the channels (axis 1)"

    def from_onnx(self, node):
        rank = len(node.input_shapes[0] or ())
        axis = node.attr("axis", 1)
        if (axis + rank if axis < 0 else axis) != 1 or len(node.input_shapes) < 2:
            raise OnnxUnsupported(f"axis {axis}: convgraph concatenates 2+ inputs along "
                                  "the channels (axis 1)")
        return OnnxLayer({}, inputs=tuple(range(len(node.input_shapes))))
    summary = "Stack two or more volumes of the same width and height along depth."
    min_inputs, max_inputs = 2, None
    kernels = ("layout",)
    colour = "#f8d7da"

    def infer(self, node):
        inputs = node.input_volumes
        first = inputs[0]
        for name, vol in zip(node.inputs[1:], inputs[1:]):
            if vol[:2] != first[:2]:
                raise node.error(
                    f"spatial mismatch: input '{name}' is {vol.width}x{vol.height} but input "
                    f"'{node.inputs[0]}' is {first.width}x{first.height}; concat joins along "
                    "depth and needs equal width and height.",
                    hint="pool or stride the larger branch, or pad the smaller one, to match.",
                )
        return Volume(first.width, first.height, sum(x.depth for x in inputs)), {}

    def flops(self, node):
        return 0

    def lower(self, ctx) -> None:
        y = ctx.output_layout
        offset = 0
        for slot in range(len(ctx.node.inputs)):
            x = ctx.input_layout(slot)
            volume = x.volume
            ctx.launch(
                "layout",
                "CONCAT_COPY",
                {
                    "HEIGHT": volume.height,
                    "WIDTH": volume.width,
                    "CHANNELS": volume.depth,
                    "CHANNEL_OFFSET": offset,
                    **x.defines("X"),
                    **y.defines("Y"),
                },
                (volume.depth, volume.width, volume.height),
                [ctx.input_tensor(slot), ctx.output_tensor],
                batch_axis=2,
                local_size=ctx.profile.pixel_local,
                moved=8 * volume.elements,
            )
            offset += volume.depth

    def reference(self, node, inputs, params):
        return np.concatenate([np.asarray(x, np.float64) for x in inputs], axis=1)

    def onnx_export(self, node, onnx):
        onnx.add("Concat", onnx.inputs, output=onnx.output, axis=1)

    def lower_backward(self, ctx) -> None:
        y = ctx.output_layout
        offset = 0
        for slot in range(len(ctx.node.inputs)):
            x = ctx.input_layout(slot)
            volume = x.volume
            if ctx.needs_grad(slot):
                grad, accumulate = ctx.input_grad(slot)
                ctx.launch(
                    "layout",
                    "CONCAT_BACKWARD",
                    {
                        "HEIGHT": volume.height,
                        "WIDTH": volume.width,
                        "CHANNELS": volume.depth,
                        "CHANNEL_OFFSET": offset,
                        "ACCUMULATE": accumulate,
                        **x.defines("X"),
                        **y.defines("Y"),
                    },
                    (volume.depth, volume.width, volume.height),
                    [ctx.output_grad, grad],
                    batch_axis=2,
                    local_size=ctx.profile.pixel_local,
                )
            offset += volume.depth


    def reference_backward(self, node, inputs, output, grad, params, seed):
        edges = np.cumsum([x.shape[1] for x in inputs])[:-1]
        return [part.copy() for part in np.split(grad, edges, axis=1)], {}
