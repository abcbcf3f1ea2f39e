"""The network's input volume (INPUT)."""

from __future__ import annotations

from convgraph.ops import values as v
from convgraph.ops.base import Op, Param, register
from convgraph.ops.cases import Case


@register
class Input(Op):
    name = "input"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("7x5x3", "", batch=7, output="7x5x3", params=0, macs=0),  # the network is its input
    )
    summary = "The input volume, width x height x depth (e.g. 32x32x3)."
    positional = ("shape",)
    params = {"shape": Param(v.volume, doc="WxHxD, e.g. 32x32x3")}
    min_inputs, max_inputs = 0, 0
    colour = "#e2e3e5"

    def infer(self, node):
        return node.attrs["shape"], {}

    def flops(self, node):
        return 0

    def lower(self, ctx) -> None:
        """Nothing to run: the host writes the batch into this tensor."""

    def reference(self, node, inputs, params):
        return inputs[0]

    def onnx_export(self, node, onnx):  # the model's input (normalised, where it is)
        onnx.same_as_input()


    def reference_backward(self, node, inputs, output, grad, params, seed):
        return [], {}
