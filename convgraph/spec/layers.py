"""Reading one layer as a spec writes it, shared by the three forms (forms.py, blocks.py).

A layer is a pattern item (``CONV(32, 3x3)``), a layer-list entry (``relu``, ``{conv: {...}}``,
``{op: conv, ...}``) or the input; each becomes a LayerDef through spec/attrs.make_layer.
"""

from __future__ import annotations

from collections import Counter

from convgraph.errors import Location, SpecError
from convgraph.ops.base import REGISTRY, LayerDef
from convgraph.spec.attrs import Defaults, Written, make_layer, resolve_op
from convgraph.spec.pattern import PatternLayer, parse_pattern
from convgraph.spec.yamlload import YamlList, YamlMap


def top_input(data: YamlMap) -> Written | None:
    return Written(data["input"], data.where("input")) if "input" in data else None


class Namer:
    """Names pattern and list layers conv1, relu1, conv2 ... in order of appearance."""

    def __init__(self):
        self.counts: Counter = Counter()

    def __call__(self, op: str) -> str:
        if op == "input":
            return "input"
        self.counts[op] += 1
        return f"{op}{self.counts[op]}"


def input_layer(
    given: Written | None,
    top: Written | None,
    location: Location,
    defaults: Defaults,
    name: str = "input",
) -> LayerDef:
    shape = given or top
    if shape is None:
        raise SpecError(
            "the input volume is not given.",
            location=location,
            hint="add 'input: 32x32x3' (width x height x depth) to the spec.",
        )
    if given is not None and top is not None:
        raise SpecError(
            "the input volume is given twice (top-level 'input' and the input layer).",
            location=given.location,
            hint="keep one of the two.",
        )
    return make_layer(name, "input", location, {"shape": shape}, defaults, [], [])


def pattern_attrs(item: PatternLayer, op: str, where: Location) -> dict[str, Written]:
    """Map a pattern layer's positional and named arguments onto the op's parameters."""
    positional = REGISTRY[op].positional
    if len(item.args) > len(positional):
        value, offset = item.args[len(positional)]
        takes = ", ".join(positional) if positional else "no positional arguments"
        raise SpecError(
            f"({op}) too many arguments: {item.op} takes {takes}.",
            location=where.shifted(offset),
            layer=None,
            hint=f"name the extra value, e.g. {item.op}(..., stride={value}).",
        )
    given = {
        key: Written(value, where.shifted(offset))
        for key, (value, offset) in zip(positional, item.args)
    }
    for key, (value, offset) in item.kwargs.items():
        key_where = where.shifted(item.key_offsets.get(key, offset))
        if key in given:
            raise SpecError(
                f"({op}) '{key}' is given both by position and by name.",
                location=key_where,
                hint=f"give '{key}' once: by position or as {key}=...",
            )
        given[key] = Written(value, where.shifted(offset), key_where)
    return given


def list_entry(entry, location: Location) -> tuple[str, Location, dict[str, Written]]:
    """One layer-list entry -> (written op, where, attributes). Accepts three spellings:
    ``relu`` or ``"CONV(32, 3x3)"``; ``{conv: {filters: 32}}`` / ``{fc: 10}``; ``{op: conv, ...}``.
    """
    if isinstance(entry, str):
        items = parse_pattern(entry, location)
        if len(items) != 1:
            raise SpecError(
                "a layer-list entry holds one layer.",
                location=location,
                hint="put each layer in its own list entry.",
            )
        op = resolve_op(items[0].op, location)
        return items[0].op, location, pattern_attrs(items[0], op, location)
    if not isinstance(entry, YamlMap) or not entry:
        raise SpecError(
            "a layer-list entry must be an op name or a mapping such as "
            "'conv: {filters: 32, size: 3}'.",
            location=location,
            hint="e.g. '- relu', '- conv: {filters: 32, size: 3}' or '- \"CONV(32, 3)\"'.",
        )
    if "op" in entry:
        given = {
            k: Written(val, entry.where(k), entry.where_key(k))
            for k, val in entry.items()
            if k != "op"
        }
        return entry["op"], entry.where("op"), given
    if len(entry) != 1:
        keys = list(entry)
        raise SpecError(
            f"a layer-list entry names one op, but this one has keys {', '.join(keys)}.",
            location=entry.where_key(keys[1]),
            hint="indent the settings under the op, e.g. '- conv: {filters: 32, size: 3}'.",
        )
    ((written_op, settings),) = entry.items()
    where = entry.where_key(written_op)
    if settings is None:
        return written_op, where, {}
    if isinstance(settings, YamlMap):
        return (
            written_op,
            where,
            {
                k: Written(val, settings.where(k), settings.where_key(k))
                for k, val in settings.items()
            },
        )
    op = resolve_op(written_op, where)
    values = list(settings) if isinstance(settings, YamlList) else [settings]
    positional = REGISTRY[op].positional
    if len(values) > len(positional):
        raise SpecError(
            f"({op}) takes at most {len(positional)} positional values "
            f"({', '.join(positional) or 'none'}).",
            location=entry.where(written_op),
            hint=f"give the others by name: {written_op}: {{key: value, ...}}.",
        )
    value_where = entry.where(written_op)
    return (
        written_op,
        where,
        {key: Written(val, value_where) for key, val in zip(positional, values)},
    )
