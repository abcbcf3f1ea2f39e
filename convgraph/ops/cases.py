"""The test cases an op declares: small networks that exercise it, and what each harness checks.

Every op lists its cases in its ``cases`` class attribute. The harnesses read them from the
registry (``REGISTRY[name].cases``), so declaring a case is all it takes to test an op in each of
them; which harnesses a case serves follows from what it declares:

- ``output`` (with ``params`` and ``macs``): the shape rule (tests/test_shapes.py) compares the
  subject's output volume, parameter count and multiply-adds with these hand-worked values;
- ``batch``: the numpy-vs-device kernels (tests/test_kernels.py, and under Oclgrind the sweep of
  tests/test_oclgrind.py) compile the case, run it forward and backward with batch 1 and with
  ``batch``, and compare every output and gradient with the float64 numpy reference;
  ``other_profile`` runs it forward also with the other device family's code-generation profile;
- ``grad``: finite differences (tests/test_gradients.py) hold the subject's numpy backward to
  central differences; ``kinks`` keeps its inputs away from zero and from ties (ReLU, max-pool).

A case's network is written in one of three ways:

- pattern form: ``layers`` is what follows INPUT in a pattern, ``"CONV(8, 3, pad=1)-RELU"`` for
  ``[INPUT-CONV(8, 3, pad=1)-RELU]`` (``""``: the network is its input);
- graph form: ``layers`` is a ``nodes:`` mapping whose first readers read ``input``;
- a join: ``input`` is a tuple of volumes and ``layers`` the join's name (``"ADD"``): the op
  joins the input (the first volume) and a 1x1 conv of it to each further volume.

The *subject* of a shape or finite-difference check is the case's one layer in pattern form (the
input when there is none; flattens inserted before fc do not count), else the network's output.

Examples
--------
>>> Case("32x32x3", "CONV(12, 3, pad=1)", output="32x32x12", params=12 * 27 + 12,
...      macs=32 * 32 * 12 * 27).spec()["pattern"]
'[INPUT-CONV(12, 3, pad=1)]'
>>> Case(("9x7x4", "9x7x4"), "ADD", batch=7).spec()["nodes"]["join"]
{'op': 'add', 'inputs': ['input', 'branch1']}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    """One network that exercises an op, and what the harnesses check on it (module docstring)."""

    input: str | tuple[str, ...]  # 'WxHxD'; for a join, the volumes it joins
    layers: str | Mapping[str, Any] = ""  # pattern after INPUT, a nodes: mapping, or a join's name
    batch: int | None = None  # device kernels, forward and backward: batch 1 and this batch
    output: str | None = None  # shape rule: the subject's output volume, 'WxHxD'
    params: int | None = None  # shape rule: its parameter count (trainable)
    macs: int | None = None  # shape rule: its multiply-accumulates per image
    grad: bool = False  # finite differences of the subject's numpy backward
    kinks: bool = False  # finite differences: inputs kept 0.05 from zero, all distinct
    other_profile: bool = False  # device kernels: also with the other family's profile
    label: str = ""  # a short name, for test ids of graph-form cases and tests that pick one

    def __post_init__(self):
        if isinstance(self.input, list):
            object.__setattr__(self, "input", tuple(self.input))
        what = f"case {self.input} {self.layers!r}"
        if isinstance(self.input, tuple) and not isinstance(self.layers, str):
            raise ValueError(f"{what}: a join's layers name the join ('ADD'), got a mapping")
        shape = (self.output, self.params, self.macs)
        if any(value is not None for value in shape) and None in shape:
            raise ValueError(f"{what}: a shape case gives output, params and macs together, "
                             f"got output={self.output}, params={self.params}, macs={self.macs}")
        if self.batch is not None and (not isinstance(self.batch, int) or self.batch < 1):
            raise ValueError(f"{what}: batch is a number of images >= 1, got {self.batch!r}")
        if self.other_profile and self.batch is None:
            raise ValueError(f"{what}: other_profile is a device check; give the case a batch")
        if self.kinks and not self.grad:
            raise ValueError(f"{what}: kinks applies to finite differences; set grad=True")
        if self.output is None and self.batch is None and not self.grad:
            raise ValueError(f"{what} checks nothing: give it output/params/macs (shape rule), "
                             f"a batch (device kernels) or grad=True (finite differences)")

    @property
    def kinds(self) -> frozenset[str]:
        """The harnesses this case serves: 'shape', 'device' and 'gradient' (see KINDS)."""
        served = {"shape": self.output is not None, "device": self.batch is not None,
                  "gradient": self.grad}
        return frozenset(kind for kind, serves in served.items() if serves)

    @property
    def form(self) -> str:
        """'pattern', 'graph' or 'join'."""
        if isinstance(self.input, tuple):
            return "join"
        return "pattern" if isinstance(self.layers, str) else "graph"

    def spec(self, name: str = "case") -> dict:
        """The case's network as a spec dict (pattern form, or graph form for mappings and joins).

        >>> Case("7x5x3", "", batch=7).spec()
        {'name': 'case', 'input': '7x5x3', 'pattern': '[INPUT]'}
        """
        if self.form == "graph":
            return {"name": name, "input": self.input, "nodes": dict(self.layers)}
        if self.form == "join":  # join the input and 1x1 convs of it to the other volumes
            nodes, inputs = {}, ["input"]
            for index, other in enumerate(self.input[1:], 1):
                nodes[f"branch{index}"] = {"op": "conv", "size": 1, "inputs": ["input"],
                                           "filters": int(other.split("x")[2])}
                inputs.append(f"branch{index}")
            nodes["join"] = {"op": self.layers.lower(), "inputs": inputs}
            return {"name": name, "input": self.input[0], "nodes": nodes}
        pattern = f"[INPUT-{self.layers}]" if self.layers else "[INPUT]"
        return {"name": name, "input": self.input, "pattern": pattern}

    def subject(self, graph) -> str:
        """The node of ``graph`` (this case's analysed network) that shape and finite-difference
        checks look at: the one layer of a pattern, else the network's output."""
        if self.form != "pattern":
            return graph.graph["output"]
        layers = [n for n in graph if n != "input" and not graph.nodes[n].get("inserted")]
        if len(layers) > 1:
            raise ValueError(f"case {self.input} {self.layers!r} has {len(layers)} layers; a "
                             f"shape or gradient case has one (or is in graph form, whose output "
                             f"is checked)")
        return layers[0] if layers else "input"


KINDS = {
    "shape": "the shape rule: output volume, parameters and multiply-adds (tests/test_shapes.py)",
    "device": "device kernels, forward and backward, against numpy (tests/test_kernels.py)",
    "gradient": "the numpy backward against finite differences (tests/test_gradients.py)",
}


def kinds_needed(op) -> frozenset[str]:
    """The kinds of case every op must declare: all of them, but no gradient case for a source
    (an op without inputs, such as ``input``: no gradient flows out of it)."""
    if op.max_inputs == 0:
        return frozenset(KINDS) - {"gradient"}
    return frozenset(KINDS)


def cases_of(kind: str, registry=None) -> list[tuple[str, int, Case]]:
    """(op name, index, case) for every case of ``kind`` of every registered op, in registry
    order; ``index`` counts the op's cases of that kind (test ids and seeds use it).

    >>> [(op, index) for op, index, _ in cases_of("device") if op == "input"]
    [('input', 0)]
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind of case '{kind}'; expected one of {sorted(KINDS)}")
    if registry is None:
        from convgraph.ops.base import REGISTRY as registry
    return [(name, index, case) for name, op in registry.items()
            for index, case in enumerate(c for c in op.cases if kind in c.kinds)]
