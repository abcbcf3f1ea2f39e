"""Turning what a spec wrote for one layer into a LayerDef with checked, normalised attributes.

All three spec forms end here, so one function decides what a layer's hyperparameters mean:
op defaults < the spec's ``defaults:`` for that op < what an alias implies (``avgpool``) < what the
layer itself says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from convgraph.errors import ErrorCollector, Location, SpecError
from convgraph.ops.base import (
    REGISTRY,
    LayerDef,
    Param,
    alias_preset,
    canonical_op_name,
    suggest,
)
from convgraph.spec.expr import Expression, is_expression, read_expression

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z0-9_]+)*")  # dense/3/conv1: a repeat copy


@dataclass
class Written:
    """A value as the spec wrote it, with where it stands (and where its key stands, if named)."""

    value: object
    location: Location
    key_location: Location | None = None


@dataclass
class Defaults:
    """The spec-wide settings every layer starts from."""

    rounding: str = "exact"
    per_op: dict[str, dict[str, Written]] = field(default_factory=dict)
    # --set NAME.KEY=VALUE: layer name -> its settings, over what the spec wrote
    per_layer: dict[str, dict[str, Written]] = field(default_factory=dict)
    # op -> the error its defaults gave: a layer missing a setting the defaults misspelt
    # reports that error again (kept once), not a missing setting of its own
    failed: dict[str, SpecError] = field(default_factory=dict)


def shown(value: object) -> str:
    """``value`` as a message quotes it, with line breaks and other invisible characters escaped
    so that an error stays one line: ``'re\\nlu'``."""
    text = str(value)
    return text if text.isprintable() else repr(text)[1:-1]


def resolve_op(written: object, location: Location, layer: str | None = None) -> str:
    """The registered op name for a written one, or a SpecError with a suggestion."""
    op = canonical_op_name(written) if isinstance(written, str) else None
    if op is None:
        from convgraph.ops.base import known_op_names

        raise SpecError(
            f"unknown op '{shown(written)}'.{suggest(str(written), known_op_names())}",
            location=location,
            layer=layer,
            hint="known ops: " + ", ".join(sorted(REGISTRY)) + ".",
        )
    return op


def read_attr(op: str, key: str, written: Written, layer: str | None, context: str = ""):
    """Parse one attribute value with its Param reader, or raise a located SpecError."""
    return read_value(REGISTRY[op].params[key], key, written, layer, context, f"({op}) ")


def read_value(param: Param, key: str, written: Written, layer: str | None = None,
               context: str = "", owner: str = ""):
    """Parse ``written`` with ``param``'s reader, or raise a located SpecError saying what
    ``key`` expects (``owner``: what the key belongs to, e.g. '(conv) ')."""
    try:
        return param.parse(written.value)
    except ValueError as why:
        shown = "nothing" if written.value is None else repr(written.value)
        note = f" ({context})" if context else ""
        raise SpecError(
            f"{owner}'{key}' expects {why}, got {shown}.{note}",
            location=written.location,
            layer=layer,
            hint=default_hint(param, key) or f"give '{key}' {why}: it is required.",
        ) from None


def read_setting(op: str, key: str, written: Written, layer: str | None, context: str = ""):
    """``read_attr``, where the value may be a formula (``$in.depth // 2``): one without
    ``$in`` is worked out and read now; one with it stays an Expression until shapes."""
    value = written.value
    if is_expression(value):
        value = read_expression(value, written.location, None, context, layer)
    if isinstance(value, Expression):
        return value
    if value is not written.value:
        written = Written(value, written.location, written.key_location)
    return read_attr(op, key, written, layer, context)


def default_hint(param: Param, key: str) -> str | None:
    """'e.g. stride: 1 (its default)' for a setting that has a default, as a spec writes it;
    None for a required one (whose hint says what to give)."""
    default = param.default
    if param.required or default is None:
        return None
    if isinstance(default, tuple) and len(set(default)) == 1:
        default = default[0]  # a square pair (1, 1) is written 1
    if isinstance(default, bool):
        text = "true" if default else "false"
    elif isinstance(default, tuple):
        text = "[" + ", ".join(map(str, default)) + "]"
    else:
        text = str(default)
    return f"e.g. {key}: {text} (its default), or leave '{key}' out."


def check_keys(op: str, given, location_of, layer: str | None, extra=()) -> None:
    """Reject keys the op does not know, suggesting the nearest one."""
    known = set(REGISTRY[op].params) | set(extra)
    for key in given:
        if key not in known:
            choices = ", ".join(sorted(known)) or "none"
            raise SpecError(
                f"({op}) unknown key '{key}'.{suggest(key, known)}",
                location=location_of(key),
                layer=layer,
                hint=f"{op} takes: {choices}.",
            )


def make_layer(
    name: str,
    written_op: str,
    op_location: Location,
    given: dict[str, Written],
    defaults: Defaults,
    inputs: list[str],
    input_locations: list[Location],
    context: str = "",
) -> LayerDef:
    """Build a LayerDef for ``name`` from its written attributes; raises SpecError (its
    independent mistakes together: each unknown key, each value that does not read)."""
    op = resolve_op(written_op, op_location, name)
    errors = ErrorCollector()
    for key in given:
        with errors.attempt():
            check_keys(op, [key], lambda k: given[k].key_location or given[k].location, name)
    chosen: dict[str, Written] = dict(defaults.per_op.get(op, {}))
    chosen.update({k: Written(v, op_location) for k, v in alias_preset(written_op).items()})
    chosen.update({key: written for key, written in given.items() if key in REGISTRY[op].params})
    with errors.attempt():
        chosen.update(_overrides_of(name, op, defaults))
    attrs, locations = {}, {}
    for key in REGISTRY[op].params:
        if key in chosen:
            with errors.attempt():
                attrs[key] = read_setting(op, key, chosen[key], name, context)
                locations[key] = chosen[key].location
    errors.raise_if_any()  # a setting missing now may only be misspelt: not reported as missing
    _fill_defaults(op, attrs, defaults, name, op_location)
    return LayerDef(
        name, op, attrs, list(inputs), op_location, locations, list(input_locations), context
    )


def _fill_defaults(op: str, attrs: dict, defaults: Defaults, name: str,
                   op_location: Location) -> None:
    """Complete ``attrs`` (in the op's schema order): the op's defaults, the spec's rounding,
    the derived defaults (pool: stride = size; a depthwise conv: filters = the input depth,
    known at shapes); a required setting still missing is an error."""
    spec = REGISTRY[op]
    for key, param in spec.params.items():
        if key not in attrs and not param.required:
            attrs[key] = param.default
    if "rounding" in attrs and attrs["rounding"] is None:
        attrs["rounding"] = defaults.rounding
    for key, value in spec.derived_defaults(attrs).items():
        if attrs.get(key) is None:
            attrs[key] = value
    for key in spec.params:
        if key in attrs:
            continue
        if op in defaults.failed:  # the default that would have given it did not read
            raise defaults.failed[op]
        raise SpecError(
            f"({op}) missing required '{key}' ({spec.params[key].doc}).",
            location=op_location,
            layer=name,
            hint=f"add '{key}: ...' to this layer, or set it for every {op} under "
            f"'defaults: {{{op}: {{{key}: ...}}}}'.",
        )
    ordered = {key: attrs[key] for key in spec.params}  # schema order, as the summary shows
    attrs.clear()
    attrs.update(ordered)


def _overrides_of(name: str, op: str, defaults: Defaults) -> dict[str, Written]:
    """The ``--set NAME.KEY=VALUE`` settings of layer ``name``, each key checked."""
    settings = defaults.per_layer.get(name, {})
    known = REGISTRY[op].params
    for key, written in settings.items():
        if key not in known:
            raise SpecError(
                f"--set {name}.{key}: layer '{name}' ({op}) has no setting '{key}'."
                f"{suggest(key, known)}",
                location=written.location,
                hint=f"{op} takes: {', '.join(sorted(known)) or 'no settings'}.",
            )
    return settings


def check_overrides_used(defaults: Defaults, names: list[str]) -> None:
    """Every ``--set NAME.KEY`` names a layer of the network (``names``, in spec order)."""
    for name, settings in defaults.per_layer.items():
        if name not in names:
            key, written = next(iter(settings.items()))
            listed = ", ".join(names[:24]) + (", ..." if len(names) > 24 else "")
            raise SpecError(
                f"--set {name}.{key}: there is no layer '{name}'.{suggest(name, names)}",
                location=written.location,
                hint=f"the layers are: {listed} (train settings: --set lr=0.05 or "
                     "--set train.KEY=VALUE).",
            )


def check_name(name: object, location: Location) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise SpecError(
            f"'{shown(name)}' is not a valid layer name.",
            location=location,
            hint="use letters, digits and '_', starting with a letter (e.g. conv1).",
        )
    return name
