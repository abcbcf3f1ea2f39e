"""Ops that join branches: elementwise add (residuals) and concatenation along depth."""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.ops.base import Op, register


@register
class Add(Op):
    name = "add"
    aliases = ("sum", "residual")
    summary = "Elementwise sum of two or more volumes of the same size (residual connections)."
    min_inputs, max_inputs = 2, None
    kernels = ("elementwise",)
    colour = "#f8d7da"

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
            )

    def reference(self, node, inputs, params):
        return sum(np.asarray(x, np.float64) for x in inputs)

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
            )

    def reference_backward(self, node, inputs, output, grad, params, seed):
        return [grad.copy() for _ in inputs], {}


@register
class Concat(Op):
    name = "concat"
    aliases = ("concatenate",)
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
