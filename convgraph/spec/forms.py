"""Reading a spec in any of its three forms into one ordered list of LayerDefs.

- pattern form: ``pattern: "[INPUT-[CONV-RELU]*2-POOL-FC]"`` with per-op ``defaults:``;
- layer list:   ``layers: [{conv: {filters: 32, size: 3}}, relu, ...]``;
- graph form:   ``nodes: {name: {op: ..., inputs: [...]}}`` with reusable ``blocks:``
  (spec/blocks.py).

One layer of any form is read by spec/layers.py.

Pattern and list layers are named ``<op><n>`` (conv1, relu1, conv2, ...) and the input ``input``, so
a graph-form spec using those names describes the identical graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from convgraph.errors import Location, SpecError, suggest
from convgraph.ops import values as v
from convgraph.ops.base import LayerDef, Param
from convgraph.spec.attrs import (
    Defaults,
    Written,
    check_keys,
    check_name,
    check_overrides_used,
    make_layer,
    read_setting,
    read_value,
    resolve_op,
)
from convgraph.spec.blocks import read_graph
from convgraph.spec.layers import Namer, input_layer, list_entry, pattern_attrs, top_input
from convgraph.spec.pattern import parse_pattern
from convgraph.spec.train import read_train
from convgraph.spec.yamlload import STARTER, YamlList, YamlMap

# the spec-wide rounding every layer with a 'rounding' attribute starts from
SPEC_ROUNDING = Param(v.ROUNDING, default="exact", doc="exact, floor or ceil, for every layer")

TOP_KEYS = (
    "name",
    "description",
    "input",
    "rounding",
    "defaults",
    "pattern",
    "layers",
    "nodes",
    "blocks",
    "output",
    "train",
)
FORMS = ("pattern", "layers", "nodes")


@dataclass
class Spec:
    """A parsed spec: its layers in definition order (input first) and its training settings."""

    name: str
    source: str
    form: str
    layers: list[LayerDef]
    output: str | None
    train: dict
    rounding: str = "exact"
    description: str = ""


def read_spec(data, source: str, per_layer: dict | None = None) -> Spec:
    """Check the top level of a loaded spec and dispatch on its form; ``per_layer``: the
    ``--set NAME.KEY=VALUE`` settings (layer name -> key -> Written)."""
    if data is None:  # only comments
        raise SpecError(
            "the spec is empty: expected a mapping with 'input' and one of 'pattern', 'layers' "
            "or 'nodes'.",
            location=Location(source, 1, 1),
            hint=STARTER,
        )
    if not isinstance(data, YamlMap):
        raise SpecError(
            "a spec must be a YAML mapping with 'input' and one of 'pattern', 'layers' or 'nodes'.",
            location=getattr(data, "location", Location(source, 1, 1)),
            hint=STARTER,
        )
    for key in data:
        if key not in TOP_KEYS:
            raise SpecError(
                f"unknown top-level key '{key}'.{suggest(key, TOP_KEYS)}",
                location=data.where_key(key),
                hint="a spec takes: " + ", ".join(TOP_KEYS) + ".",
            )
    forms = [f for f in FORMS if f in data]
    if len(forms) != 1:
        raise SpecError(
            "a spec needs exactly one of 'pattern', 'layers' or 'nodes'"
            + (f", but has {' and '.join(forms)}." if forms else ", but has none."),
            location=data.where_key(forms[1]) if len(forms) > 1 else data.location,
            hint='pattern: "[INPUT-CONV-RELU-POOL-FC]", layers: [...] or nodes: {...}.',
        )
    form = forms[0]
    defaults = _read_defaults(data)
    defaults.per_layer = dict(per_layer or {})
    name = data.get("name", source.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    if not isinstance(name, str) or not name:
        raise SpecError("'name' must be a non-empty string.", location=data.where("name"),
                        hint="e.g. name: my_net (or leave it out: the file's name is used).")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpecError("'description' must be a string.", location=data.where("description"),
                        hint="quote it: description: \"...\".")
    if "blocks" in data and form != "nodes":
        raise SpecError(
            "'blocks' are used by graph-form specs ('nodes:') only.",
            location=data.where_key("blocks"),
            hint="write the network under 'nodes:' to instantiate blocks.",
        )
    output = None
    if "output" in data:
        if form != "nodes":
            raise SpecError(
                "'output' is for graph-form specs; in a pattern or layer list the "
                "last layer is the output.",
                location=data.where_key("output"),
                hint="remove 'output', or write the network under 'nodes:'.",
            )
        output = check_name(data["output"], data.where("output"))
    if form == "nodes":
        layers, output = read_graph(data, defaults, output)
    else:
        layers = (_read_pattern if form == "pattern" else _read_layer_list)(data, defaults)
    check_overrides_used(defaults, [layer.name for layer in layers])
    return Spec(
        name,
        source,
        form,
        layers,
        output,
        read_train(data.get("train"), data.where("train")),
        defaults.rounding,
        description,
    )


def _read_defaults(data: YamlMap) -> Defaults:
    defaults = Defaults()
    if "rounding" in data:
        defaults.rounding = read_value(
            SPEC_ROUNDING, "rounding", Written(data["rounding"], data.where("rounding"))
        )
    section = data.get("defaults")
    if section is None:
        return defaults
    if not isinstance(section, YamlMap):
        raise SpecError(
            "'defaults' must map op names to their default settings.",
            location=data.where("defaults"),
            hint="e.g. defaults: {conv: {size: 3, pad: 1}, pool: {size: 2}}.",
        )
    for written_op, settings in section.items():
        op = resolve_op(written_op, section.where_key(written_op))
        if not isinstance(settings, YamlMap):
            raise SpecError(
                f"defaults for '{written_op}' must be a mapping of its settings.",
                location=section.where(written_op),
                hint="write its settings as a mapping, e.g. defaults: {conv: {size: 3, pad: 1}}.",
            )
        check_keys(op, settings, settings.where_key, None)
        chosen = defaults.per_op.setdefault(op, {})
        for key, value in settings.items():
            written = Written(value, settings.where(key))
            read_setting(op, key, written, None, "in defaults")  # fail early, at the default
            chosen[key] = written
    return defaults


def _read_pattern(data: YamlMap, defaults: Defaults) -> list[LayerDef]:
    text, where = data["pattern"], data.where("pattern")
    if not isinstance(text, str):
        raise SpecError(
            "'pattern' must be a string such as \"[INPUT-CONV-RELU-POOL-FC]\".",
            location=where,
            hint="quote the pattern so YAML reads it as text.",
        )
    items = parse_pattern(text, where)
    name_of = Namer()
    layers: list[LayerDef] = []
    for index, item in enumerate(items):
        location = where.shifted(item.offset)
        op = resolve_op(item.op, location)
        given = pattern_attrs(item, op, where)
        if (op == "input") != (index == 0):
            raise SpecError(
                "the pattern must start with INPUT, and only there."
                if index == 0
                else "INPUT may appear only at the start of the pattern.",
                location=location,
                hint="write [INPUT-CONV-...]; the volume comes from "
                "'input: WxHxD' or INPUT(32x32x3).",
            )
        if op == "input":
            layers.append(input_layer(given.get("shape"), top_input(data), location, defaults))
            continue
        previous = layers[-1].name
        layers.append(
            make_layer(name_of(op), item.op, location, given, defaults, [previous], [location])
        )
    return layers


def _read_layer_list(data: YamlMap, defaults: Defaults) -> list[LayerDef]:
    entries, where = data["layers"], data.where("layers")
    if not isinstance(entries, YamlList) or not entries:
        raise SpecError("'layers' must be a non-empty list of layers.", location=where,
                        hint="e.g. layers: [{conv: {filters: 16, size: 3}}, relu, {fc: 10}].")
    name_of = Namer()
    names: dict[str, Location] = {}
    layers: list[LayerDef] = []
    for index, entry in enumerate(entries):
        written_op, location, given = list_entry(entry, entries.where(index))
        op = resolve_op(written_op, location)
        if op == "input" and index:
            raise SpecError(
                "the input layer must be the first entry.",
                location=location,
                hint="move it to the top of 'layers:', or give the volume as 'input: WxHxD'.",
            )
        name = name_of(op)
        if "name" in given:
            name = check_name(given.pop("name").value, location)
        if name in names:
            raise SpecError(
                f"layer name '{name}' is used twice (first at line {names[name].line}).",
                location=location,
                layer=name,
                hint="give each layer its own name.",
            )
        names[name] = location
        if op == "input":
            layers.append(
                input_layer(given.get("shape"), top_input(data), location, defaults, name)
            )
            continue
        if index == 0:
            layers.append(input_layer(None, top_input(data), data.location, defaults))
            names["input"] = data.location
        layers.append(
            make_layer(name, written_op, location, given, defaults, [layers[-1].name], [location])
        )
    return layers
