"""The same network in PyTorch, built from a convgraph graph, for side-by-side benchmarks.

Benchmark-only (PyTorch is never a runtime dependency). The modules take convgraph's parameters
unchanged -- same names, same shapes -- which also checks that the array conventions match.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convgraph.graph import ordered


class GraphModule(nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.graph = graph
        self.names = ordered(graph)
        self.layers = nn.ModuleDict()
        for name in self.names:
            module = _module(graph.nodes[name], graph)
            if module is not None:
                self.layers[_key(name)] = module

    def forward(self, x):
        values = {}
        for name in self.names:
            data = self.graph.nodes[name]
            inputs = [values[source] for source in data["inputs"]] or [x]
            op = data["op"]
            if op == "input":
                out = inputs[0]
            elif op == "add":
                out = inputs[0]
                for other in inputs[1:]:
                    out = out + other
            elif op == "concat":
                out = torch.cat(inputs, dim=1)
            elif op == "flatten":
                out = torch.flatten(inputs[0], 1)
            elif op == "fc":
                out = self.layers[_key(name)](torch.flatten(inputs[0], 1))
            else:
                out = self.layers[_key(name)](_pad_same(inputs[0], data))
            values[name] = out
        return values[self.graph.graph["output"]]

    def load_convgraph(self, params: dict) -> None:
        """convgraph's parameters (PyTorch names with the node's path) -> this module."""
        state = {}
        for key, value in params.items():
            node, field = key.rsplit(".", 1)
            state[f"layers.{_key(node)}.{field}"] = torch.from_numpy(np.asarray(value))
        self.load_state_dict(state, strict=True)


def _key(name: str) -> str:
    return name.replace("/", "__")


def _pad_same(x, data):
    """convgraph's 'same' (TensorFlow's) puts the odd padding after: pad explicitly."""
    if data["op"] not in ("conv", "pool") or data["attrs"].get("pad") != "same":
        return x
    d = data["derived"]
    fill = float("-inf") if data["op"] == "pool" and data["attrs"]["mode"] == "max" else 0.0
    return F.pad(x, (d["pad_left"], d["pad_right"], d["pad_top"], d["pad_bottom"]), value=fill)


def _module(data, graph):
    op, attrs = data["op"], data["attrs"]
    if op == "conv":
        (kw, kh), (sw, sh), (dw, dh) = attrs["size"], attrs["stride"], attrs["dilation"]
        pad = (0, 0) if attrs["pad"] == "same" else (attrs["pad"][1], attrs["pad"][0])
        depth = graph.nodes[data["inputs"][0]]["output"].depth
        return nn.Conv2d(depth, attrs["filters"], (kh, kw), (sh, sw), pad, (dh, dw),
                         data["derived"]["groups"], attrs["bias"])
    if op == "pool":
        (kw, kh), (sw, sh) = attrs["size"], attrs["stride"]
        pad = (0, 0) if attrs["pad"] == "same" else (attrs["pad"][1], attrs["pad"][0])
        ceil = attrs["rounding"] == "ceil"
        if attrs["mode"] == "max":
            return nn.MaxPool2d((kh, kw), (sh, sw), pad, ceil_mode=ceil)
        return nn.AvgPool2d((kh, kw), (sh, sw), pad, ceil_mode=ceil,
                            count_include_pad=attrs["count_pad"])
    if op == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if op == "fc":
        inputs = graph.nodes[data["inputs"][0]]["output"].elements
        return nn.Linear(inputs, attrs["units"], attrs["bias"])
    if op == "batchnorm":
        return nn.BatchNorm2d(data["output"].depth, attrs["eps"], attrs["momentum"])
    simple = {"relu": nn.ReLU(), "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(),
              "softmax": nn.Softmax(dim=1), "dropout": nn.Dropout(attrs.get("rate", 0.5))}
    if op == "leakyrelu":
        return nn.LeakyReLU(attrs["slope"])
    return simple.get(op)
