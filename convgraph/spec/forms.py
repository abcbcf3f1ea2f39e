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

from convgraph.errors import ErrorCollector, Location, SpecError, suggest
from convgraph.ops import values as v
from convgraph.ops.base import LayerDef, Param, canonical_op_name
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
    ``--set NAME.KEY=VALUE`` settings (layer name -> key -> Written).

    Independent errors (top-level keys, defaults, each layer, train) are gathered and raised
    together (errors.SpecErrors), up to errors.MAX_REPORTED."""
    errors = ErrorCollector()
    try:
        spec = _read_spec(data, source, per_layer or {}, errors)
    except SpecError as error:
        if errors.is_final(error):
            raise
        errors.add(error)
    errors.raise_if_any()
    return spec


def _read_spec(data, source: str, per_layer: dict, errors: ErrorCollector) -> Spec:
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
            errors.add(SpecError(
                f"unknown top-level key '{key}'.{suggest(key, TOP_KEYS)}",
                location=data.where_key(key),
                hint="a spec takes: " + ", ".join(TOP_KEYS) + ".",
            ))
    forms = [f for f in FORMS if f in data]
    if len(forms) != 1:
        raise SpecError(
            "a spec needs exactly one of 'pattern', 'layers' or 'nodes'"
            + (f", but has {' and '.join(forms)}." if forms else ", but has none."),
            location=data.where_key(forms[1]) if len(forms) > 1 else data.location,
            hint='pattern: "[INPUT-CONV-RELU-POOL-FC]", layers: [...] or nodes: {...}.',
        )
    form = forms[0]
    defaults = _read_defaults(data, errors)
    defaults.per_layer = dict(per_layer)
    fallback = source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    name = data.get("name", fallback)
    if not isinstance(name, str) or not name:
        errors.add(SpecError("'name' must be a non-empty string.", location=data.where("name"),
                             hint="e.g. name: my_net (or leave it out: the file's name is "
                                  "used)."))
    description = data.get("description", "")
    if not isinstance(description, str):
        errors.add(SpecError("'description' must be a string.",
                             location=data.where("description"),
                             hint="quote it: description: \"...\"."))
    if "blocks" in data and form != "nodes":
        errors.add(SpecError(
            "'blocks' are used by graph-form specs ('nodes:') only.",
            location=data.where_key("blocks"),
            hint="write the network under 'nodes:' to instantiate blocks.",
        ))
    output = None
    if "output" in data:
        with errors.attempt():
            if form != "nodes":
                raise SpecError(
                    "'output' is for graph-form specs; in a pattern or layer list the "
                    "last layer is the output.",
                    location=data.where_key("output"),
                    hint="remove 'output', or write the network under 'nodes:'.",
                )
            output = check_name(data["output"], data.where("output"))
    train = None
    with errors.attempt():
        train = read_train(data.get("train"), data.where("train"))
    if form == "nodes":
        layers, output = read_graph(data, defaults, output, errors)
    else:
        read = _read_pattern if form == "pattern" else _read_layer_list
        layers = read(data, defaults, errors)
    errors.raise_if_any()  # a layer that failed would make the checks below misleading
    check_overrides_used(defaults, [layer.name for layer in layers])
    return Spec(name, source, form, layers, output, train, defaults.rounding, description)


def _read_defaults(data: YamlMap, errors: ErrorCollector) -> Defaults:
    defaults = Defaults()
    if "rounding" in data:
        with errors.attempt():
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
        with errors.attempt():
            _read_op_defaults(defaults, section, written_op, settings, errors)
    return defaults


def _read_op_defaults(defaults: Defaults, section: YamlMap, written_op: str, settings,
                      errors: ErrorCollector) -> None:
    op = resolve_op(written_op, section.where_key(written_op))
    if not isinstance(settings, YamlMap):
        raise SpecError(
            f"defaults for '{written_op}' must be a mapping of its settings.",
            location=section.where(written_op),
            hint="write its settings as a mapping, e.g. defaults: {conv: {size: 3, pad: 1}}.",
        )
    chosen = defaults.per_op.setdefault(op, {})
    for key, value in settings.items():
        try:
            check_keys(op, [key], settings.where_key, None)
            written = Written(value, settings.where(key))
            # kept even when it does not read, so that its layers fail at this default's
            # place (reported once) rather than each as a missing setting
            chosen[key] = written
            read_setting(op, key, written, None, "in defaults")  # fail early, at the default
        except SpecError as error:
            defaults.failed.setdefault(op, error)
            errors.add(error)


def _read_pattern(data: YamlMap, defaults: Defaults, errors: ErrorCollector) -> list[LayerDef]:
    text, where = data["pattern"], data.where("pattern")
    if not isinstance(text, str):
        raise SpecError(
            "'pattern' must be a string such as \"[INPUT-CONV-RELU-POOL-FC]\".",
            location=where,
            hint="quote the pattern so YAML reads it as text.",
        )
    items = parse_pattern(text, where)
    if resolve_op(items[0].op, where.shifted(items[0].offset)) != "input":
        raise SpecError(  # nothing after it reads as meant: stop here
            "the pattern must start with INPUT, and only there.",
            location=where.shifted(items[0].offset),
            hint="write [INPUT-CONV-...]; the volume comes from "
            "'input: WxHxD' or INPUT(32x32x3).",
        )
    name_of = Namer()
    layers: list[LayerDef] = []
    for index, item in enumerate(items):
        with errors.attempt():  # a layer that fails is left out; the next reads the one before
            _read_pattern_item(data, defaults, item, index, where, name_of, layers)
    return layers


def _read_pattern_item(data: YamlMap, defaults: Defaults, item, index: int, where, name_of,
                       layers: list[LayerDef]) -> None:
    location = where.shifted(item.offset)
    op = resolve_op(item.op, location)
    name = name_of(op)  # named before anything can fail, so later names stay as written
    given = pattern_attrs(item, op, where)
    if op == "input" and index:
        raise SpecError(
            "INPUT may appear only at the start of the pattern.",
            location=location,
            hint="write [INPUT-CONV-...]; the volume comes from "
            "'input: WxHxD' or INPUT(32x32x3).",
        )
    if op == "input":
        layers.append(input_layer(given.get("shape"), top_input(data), location, defaults))
        return
    previous = layers[-1].name if layers else "input"
    layers.append(make_layer(name, item.op, location, given, defaults, [previous], [location]))


def _read_layer_list(data: YamlMap, defaults: Defaults,
                     errors: ErrorCollector) -> list[LayerDef]:
    entries, where = data["layers"], data.where("layers")
    if not isinstance(entries, YamlList) or not entries:
        raise SpecError("'layers' must be a non-empty list of layers.", location=where,
                        hint="e.g. layers: [{conv: {filters: 16, size: 3}}, relu, {fc: 10}].")
    name_of = Namer()
    names: dict[str, Location] = {}
    layers: list[LayerDef] = []
    if not _starts_with_input(entries):
        with errors.attempt():
            layers.append(input_layer(None, top_input(data), data.location, defaults))
        names["input"] = data.location
    for index, entry in enumerate(entries):
        with errors.attempt():  # a layer that fails is left out; the next reads the one before
            _read_list_entry(data, defaults, entries, index, entry, name_of, names, layers)
    return layers


def _starts_with_input(entries: YamlList) -> bool:
    try:
        written_op = list_entry(entries[0], entries.where(0))[0]
    except SpecError:
        return False  # reported where the entry is read
    return isinstance(written_op, str) and canonical_op_name(written_op) == "input"


def _read_list_entry(data: YamlMap, defaults: Defaults, entries: YamlList, index: int, entry,
                     name_of, names: dict, layers: list[LayerDef]) -> None:
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
        layers.append(input_layer(given.get("shape"), top_input(data), location, defaults, name))
        return
    previous = layers[-1].name if layers else "input"
    layers.append(make_layer(name, written_op, location, given, defaults, [previous], [location]))
