"""The canonical long form of any spec: graph form with every node and attribute written out.

``convgraph compile --expand`` prints it; compiling it gives the identical graph (tested).
"""

from __future__ import annotations

import yaml

from convgraph.core import Volume
from convgraph.display import shown
from convgraph.ops import values as v
from convgraph.ops.base import FromInput
from convgraph.spec.forms import Spec


def _yaml_value(key: str, value, layer: bool = False):
    if isinstance(value, FromInput):  # known once the input is: written as the formula
        return str(value)
    if isinstance(value, Volume):
        return str(value)
    if layer and isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(x, int) for x in value):  # a layer's only such tuples: values.pair
        return v.pair_to_yaml(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def expanded(spec: Spec) -> dict:
    """The spec as an explicit graph-form dict."""
    out: dict = {"name": spec.name}
    if spec.description:
        out["description"] = spec.description
    nodes: dict = {}
    for layer in spec.layers:
        if layer.op == "input" and layer.name == "input":
            out["input"] = str(layer.attrs["shape"])
            continue
        node = {"op": layer.op}
        node.update({k: _yaml_value(k, val, layer=True) for k, val in layer.attrs.items()})
        if layer.op != "input":
            node["inputs"] = list(layer.inputs)
        nodes[layer.name] = _OneLine(node)
    out["nodes"] = nodes
    if spec.output:
        out["output"] = spec.output
    out["train"] = {k: _yaml_value(k, val) for k, val in spec.train.items() if val is not None}
    return out


class _OneLine(dict):
    """A node's settings, written on one line."""


class _Dumper(yaml.SafeDumper):
    pass


def _one_line(dumper, data):
    return dumper.represent_mapping("tag:yaml.org,2002:map", dict(data), flow_style=True)


def _flow_lists(dumper, data):
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_Dumper.add_representer(list, _flow_lists)
_Dumper.add_representer(_OneLine, _one_line)


def expanded_yaml(spec: Spec) -> str:
    # the header is a comment line: a name or path holding a line break or a control character
    # would end it or reach the terminal, so they are escaped (the YAML below quotes its own)
    header = (f"# {shown(spec.name)}: canonical graph form of {shown(spec.source)} (convgraph "
              "compile --expand)\n")
    return header + yaml.dump(expanded(spec), Dumper=_Dumper, sort_keys=False, width=200)
