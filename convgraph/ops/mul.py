"""Elementwise product of two volumes, one of them optionally a 1x1xD gate broadcast over width
and height (squeeze-and-excitation: x * sigmoid(fc(gap(x))))."""

from __future__ import annotations

import numpy as np

from convgraph.core import Volume
from convgraph.ops.base import OnnxLayer, OnnxUnsupported, Op, register
from convgraph.ops.cases import Case

_SE_GATE = {  # x * sigmoid(conv1x1(gap(x))): the gate is 1x1xD, broadcast over x
    "squeeze": {"op": "gap", "inputs": ["input"]},
    "excite": {"op": "conv", "filters": 3, "size": 1, "inputs": ["squeeze"]},
    "gate": {"op": "sigmoid", "inputs": ["excite"]},
    "scaled": {"op": "mul", "inputs": ["input", "gate"]},
}


@register
class Mul(Op):
    name = "mul"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        # shape rule: equal volumes, and a gate broadcast over 9x7
        Case(("9x7x4", "9x7x4"), "MUL", batch=7, output="9x7x4", params=0, macs=0),
        Case("9x7x3", _SE_GATE, output="9x7x3", params=0, macs=0, label="se-shape"),
        # finite differences: both orders of the broadcast operand, and x * x
        Case("5x3x3", _SE_GATE, grad=True, label="se-gate"),
        Case("4x3x2", {"g": {"op": "gap", "inputs": ["input"]},
                       "m": {"op": "mul", "inputs": ["g", "input"]}}, grad=True,
             label="gate-first"),
        Case("4x3x2", {"m": {"op": "mul", "inputs": ["input", "input"]}}, grad=True,
             label="square"),
        # device kernels: odd sizes, batch 1, a gate on either side, halos
        Case(("13x5x20", "13x5x20"), "MUL", batch=1),
        Case("9x7x3", _SE_GATE, batch=7, other_profile=True, label="se-block"),
        Case("7x5x17", {"a": {"op": "conv", "filters": 17, "size": 1, "inputs": ["input"]},
                        "g": {"op": "gap", "inputs": ["a"]},
                        "m": {"op": "mul", "inputs": ["g", "input"]}}, batch=1,
             label="gate-first"),
        Case("9x7x3", {"m": {"op": "mul", "inputs": ["input", "input"]}}, batch=7,
             label="square"),
        Case("9x7x4", {  # the input has a halo (read by a pad-1 conv), mul's output one of 2
            "wide": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},
            "g": {"op": "gap", "inputs": ["wide"]},
            "m": {"op": "mul", "inputs": ["input", "g"]},
            "out": {"op": "conv", "filters": 6, "size": 5, "pad": 2, "inputs": ["m"]},
        }, batch=1, other_profile=True, label="halos"),
    )
    aliases = ("multiply", "product")
    summary = ("Elementwise product of two volumes; a 1x1xD one is broadcast over the other's "
               "width and height (squeeze-and-excitation).")
    min_inputs, max_inputs = 2, 2
    kernels = ("mul",)
    onnx_types = ("Mul", "Div")
    onnx_notes = ("two volumes of one shape, or one and a (N, C, 1, 1) gate (squeeze-and-"
                  "excitation); by a constant, per channel ((C, 1, 1), (1, C, 1, 1); (C,) for "
                  "an (N, C) input) or one number: `scale` with those factors; Div by such a "
                  "constant: `scale` by their inverses")

    def from_onnx(self, node):
        constants = [i for i in (0, 1) if node.constants[i] is not None]
        if node.op_type == "Div":
            if constants != [1]:
                raise OnnxUnsupported("convgraph divides a volume by constants only (a scale "
                                      "by their inverses)")
            return self._onnx_scale(node, 1, 1.0 / np.asarray(node.constants[1], np.float64))
        if not constants:
            shapes = [tuple(s[1:]) if s else None for s in node.input_shapes]
            if shapes[0] != shapes[1] and not any(s and len(s) == 3 and s[1:] == (1, 1)
                                                  for s in shapes):
                raise OnnxUnsupported(f"it broadcasts {node.input_shapes}: convgraph "
                                      "multiplies volumes of one shape, or by a (N, C, 1, 1) "
                                      "gate")
            return OnnxLayer({}, inputs=(0, 1))
        if len(constants) == 2:
            raise OnnxUnsupported("both its inputs are constants")
        (index,) = constants
        return self._onnx_scale(node, index, np.asarray(node.constants[index], np.float64))

    @staticmethod
    def _onnx_scale(node, index: int, factors: np.ndarray) -> OnnxLayer:
        """The volume (the other input) times constant ``factors``: a scale, one per channel."""
        volume = node.input_shapes[1 - index]
        depth = int(volume[1]) if volume and len(volume) in (2, 4) else None
        squeezed = factors.reshape([n for n in factors.shape if n != 1] or [1])
        per_channel = (factors.ndim in (3, 4) and factors.shape[-2:] == (1, 1) and (
            factors.ndim == 3 or factors.shape[0] == 1)) or (
            len(volume or ()) == 2 and factors.ndim in (1, 2) and factors.shape[-1] == depth)
        if factors.size == 1 and depth:
            weight = np.full(depth, float(factors.reshape(-1)[0]))
        elif per_channel and squeezed.size == depth:
            weight = squeezed.reshape(depth)
        else:
            raise OnnxUnsupported(f"its constant '{node.input_names[index]}' of shape "
                                  f"{list(factors.shape)}: convgraph multiplies by one factor "
                                  "per channel ((C, 1, 1) or (1, C, 1, 1)) or one number")
        return OnnxLayer({}, {"weight": weight}, inputs=(1 - index,), op="scale")

    colour = "#f8d7da"

    def infer(self, node):
        first, second = node.input_volumes
        if first == second:
            return first, {}
        names = node.inputs
        if first.depth == second.depth and (first[:2] == (1, 1) or second[:2] == (1, 1)):
            return (second if first[:2] == (1, 1) else first), {}
        if first.depth != second.depth:
            # change the gate (the 1x1 input) to the gated volume's depth, else the second
            change = 0 if first[:2] == (1, 1) and second[:2] != (1, 1) else 1
            target = node.input_volumes[1 - change].depth
            raise node.error(
                f"depth mismatch: input '{names[1]}' is {second} but input '{names[0]}' is "
                f"{first}; mul needs equal depths.",
                hint=f"make '{names[change]}' {target} deep (the filters or units of the conv "
                f"or fc that makes it), or project it with a 1x1 conv of {target} filters.",
            )
        raise node.error(
            f"volume mismatch: input '{names[1]}' is {second} but input '{names[0]}' is "
            f"{first}; mul needs equal volumes, or one of 1x1x{first.depth} to broadcast.",
            hint="make one input a 1x1 gate (gap, then a 1x1 conv or fc), or give both "
            "branches the same strides.",
        )

    def flops(self, node):
        return node.output.elements  # one multiply per output value

    @staticmethod
    def _broadcast(volume: Volume, output: Volume) -> int:
        return int(volume != output)  # a 1x1xD gate read at every pixel

    def lower(self, ctx) -> None:
        out = ctx.node.output
        a, b = ctx.input_layout(0), ctx.input_layout(1)
        ctx.pixel_launch(
            "mul", "MUL_FORWARD", {"Y": ctx.output_layout, "A": a, "B": b},
            [ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor],
            {"A_BROADCAST": self._broadcast(a.volume, out),
             "B_BROADCAST": self._broadcast(b.volume, out)},
            ctx.node.flops, shapes_at_run_time=True,
        )

    def reference(self, node, inputs, params):
        a, b = (np.asarray(x, np.float64) for x in inputs)
        return a * b

    def onnx_export(self, node, onnx):  # ONNX's Mul broadcasts (N, D, 1, 1) as mul does
        onnx.add("Mul", onnx.inputs, output=onnx.output)

    def lower_backward(self, ctx) -> None:
        out = ctx.node.output
        for slot, other in ((0, 1), (1, 0)):
            if not ctx.needs_grad(slot):
                continue
            grad, accumulate = ctx.input_grad(slot)
            mine, theirs = ctx.input_layout(slot), ctx.input_layout(other)
            args = [ctx.output_grad, ctx.input_tensor(other), grad]
            defines = {"ACCUMULATE": accumulate,
                       "OTHER_BROADCAST": self._broadcast(theirs.volume, out)}
            if self._broadcast(mine.volume, out):  # the gate: d = sum over pixels of dy * x
                self._gate_backward(ctx, theirs, mine, args, defines)
                continue
            ctx.pixel_launch("mul", "MUL_BACKWARD",
                             {"Y": ctx.output_layout, "B": theirs, "X": mine}, args, defines,
                             shapes_at_run_time=True)

    def _gate_backward(self, ctx, other, gate, args, defines) -> None:
        """MUL_BACKWARD_GATE: work-item (channel vector, image) sums dy * other over the pixels."""
        y = ctx.output_layout
        width = ctx.vector_width(y, other, gate)
        # the grid over y and the three layouts as run-time arguments, as pixel_launch passes
        every, args = ctx.pixel_shapes({"Y": y, "B": other, "X": gate}, width, args, True)
        ctx.launch("mul", "MUL_BACKWARD_GATE", {**defines, **every},
                   (y.stride_c // width, 1), args, batch_axis=1)

    def reference_backward(self, node, inputs, output, grad, params, seed):
        a, b = (np.asarray(x, np.float64) for x in inputs)
        grads = []
        for mine, other in ((a, b), (b, a)):
            full = grad * other
            if mine.shape != full.shape:  # broadcast over width and height: sum it back
                full = full.sum(axis=(2, 3), keepdims=True)
            grads.append(full)
        return grads, {}
