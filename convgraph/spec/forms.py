"""Reading a spec in any of its three forms into one ordered list of LayerDefs.

- pattern form: ``pattern: "[INPUT-[CONV-RELU]*2-POOL-FC]"`` with per-op ``defaults:``;
- layer list:   ``layers: [{conv: {filters: 32, size: 3}}, relu, ...]``;
- graph form:   ``nodes: {name: {op: ..., inputs: [...]}}`` with reusable ``blocks:``.

Pattern and list layers are named ``<op><n>`` (conv1, relu1, conv2, ...) and the input ``input``, so
a graph-form spec using those names describes the identical graph.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from convgraph.errors import Location, SpecError
from convgraph.ops import values as v
from convgraph.ops.base import REGISTRY, LayerDef, Param, canonical_op_name, suggest
from convgraph.spec.attrs import (
    Defaults,
    Written,
    check_keys,
    check_name,
    make_layer,
    read_attr,
    read_value,
    resolve_op,
    shown,
)
from convgraph.spec.pattern import MAX_LAYERS, PatternLayer, parse_pattern
from convgraph.spec.train import read_train
from convgraph.spec.yamlload import YamlList, YamlMap

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
NODE_KEYS = ("op", "block", "inputs", "when")
MAX_BLOCK_DEPTH = 8


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


def read_spec(data, source: str) -> Spec:
    """Check the top level of a loaded spec and dispatch on its form."""
    if data is None:  # only comments
        raise SpecError(
            "the spec is empty: expected a mapping with 'input' and one of 'pattern', 'layers' "
            "or 'nodes'.",
            location=Location(source, 1, 1),
        )
    if not isinstance(data, YamlMap):
        raise SpecError(
            "a spec must be a YAML mapping with 'input' and one of 'pattern', 'layers' or 'nodes'.",
            location=getattr(data, "location", Location(source, 1, 1)),
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
    name = data.get("name", source.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    if not isinstance(name, str) or not name:
        raise SpecError("'name' must be a non-empty string.", location=data.where("name"))
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpecError("'description' must be a string.", location=data.where("description"))
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
            )
        output = check_name(data["output"], data.where("output"))
    if form == "nodes":
        layers, output = _read_graph(data, defaults, output)
    else:
        layers = (_read_pattern if form == "pattern" else _read_layer_list)(data, defaults)
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
            )
        check_keys(op, settings, settings.where_key, None)
        chosen = defaults.per_op.setdefault(op, {})
        for key, value in settings.items():
            written = Written(value, settings.where(key))
            read_attr(op, key, written, None, "in defaults")  # fail early, at the default
            chosen[key] = written
    return defaults


def _top_input(data: YamlMap) -> Written | None:
    return Written(data["input"], data.where("input")) if "input" in data else None


class _Namer:
    """Names pattern and list layers conv1, relu1, conv2 ... in order of appearance."""

    def __init__(self):
        self.counts: Counter = Counter()

    def __call__(self, op: str) -> str:
        if op == "input":
            return "input"
        self.counts[op] += 1
        return f"{op}{self.counts[op]}"


def _input_layer(
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


def _pattern_attrs(item: PatternLayer, op: str, where: Location) -> dict[str, Written]:
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
            )
        given[key] = Written(value, where.shifted(offset), key_where)
    return given


def _read_pattern(data: YamlMap, defaults: Defaults) -> list[LayerDef]:
    text, where = data["pattern"], data.where("pattern")
    if not isinstance(text, str):
        raise SpecError(
            "'pattern' must be a string such as \"[INPUT-CONV-RELU-POOL-FC]\".",
            location=where,
            hint="quote the pattern so YAML reads it as text.",
        )
    items = parse_pattern(text, where)
    name_of = _Namer()
    layers: list[LayerDef] = []
    for index, item in enumerate(items):
        location = where.shifted(item.offset)
        op = resolve_op(item.op, location)
        given = _pattern_attrs(item, op, where)
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
            layers.append(_input_layer(given.get("shape"), _top_input(data), location, defaults))
            continue
        previous = layers[-1].name
        layers.append(
            make_layer(name_of(op), item.op, location, given, defaults, [previous], [location])
        )
    return layers


def _list_entry(entry, location: Location) -> tuple[str, Location, dict[str, Written]]:
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
        return items[0].op, location, _pattern_attrs(items[0], op, location)
    if not isinstance(entry, YamlMap) or not entry:
        raise SpecError(
            "a layer-list entry must be an op name or a mapping such as "
            "'conv: {filters: 32, size: 3}'.",
            location=location,
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
        )
    value_where = entry.where(written_op)
    return (
        written_op,
        where,
        {key: Written(val, value_where) for key, val in zip(positional, values)},
    )


def _read_layer_list(data: YamlMap, defaults: Defaults) -> list[LayerDef]:
    entries, where = data["layers"], data.where("layers")
    if not isinstance(entries, YamlList) or not entries:
        raise SpecError("'layers' must be a non-empty list of layers.", location=where)
    name_of = _Namer()
    names: dict[str, Location] = {}
    layers: list[LayerDef] = []
    for index, entry in enumerate(entries):
        written_op, location, given = _list_entry(entry, entries.where(index))
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
                _input_layer(given.get("shape"), _top_input(data), location, defaults, name)
            )
            continue
        if index == 0:
            layers.append(_input_layer(None, _top_input(data), data.location, defaults))
            names["input"] = data.location
        layers.append(
            make_layer(name, written_op, location, given, defaults, [layers[-1].name], [location])
        )
    return layers


# ----------------------------------------------------------------------------- graph form


@dataclass
class _Expansion:
    """What expanding a graph body produces: layers, and names that stand for other names."""

    layers: list[LayerDef] = field(default_factory=list)
    aliases: dict[str, tuple[str, Location]] = field(default_factory=dict)


def _read_graph(
    data: YamlMap, defaults: Defaults, output: str | None
) -> tuple[list[LayerDef], str | None]:
    nodes = data["nodes"]
    if not isinstance(nodes, YamlMap) or not nodes:
        raise SpecError(
            "'nodes' must be a mapping of node names to their settings.",
            location=data.where("nodes"),
            hint="e.g. nodes: {conv1: {op: conv, filters: 16, size: 3}}.",
        )
    blocks = data.get("blocks") or YamlMap(data.location)
    if not isinstance(blocks, YamlMap):
        raise SpecError(
            "'blocks' must map block names to their definitions.", location=data.where("blocks")
        )
    result = _Expansion()
    has_input_node = any(isinstance(n, YamlMap) and n.get("op") == "input" for n in nodes.values())
    if not has_input_node:
        result.layers.append(_input_layer(None, _top_input(data), data.location, defaults))
    elif "input" in data:
        raise SpecError(
            "the input volume is given twice (top-level 'input' and an input node).",
            location=data.where_key("input"),
            hint="keep one of the two.",
        )
    _expand_body(nodes, "", ["input"], {}, blocks, defaults, result, stack=())
    layers, resolved = _resolve_aliases(result, output)
    names = [layer.name for layer in layers]
    if resolved is not None and resolved not in names:
        raise SpecError(
            f"the output '{output}' is not a node.{suggest(output, names)}",
            location=data.where("output"),
            hint="name one of the nodes under 'nodes:' (or a block instance).",
        )
    return layers, resolved


def _substitute(
    value, params: dict[str, Written], location: Location, context: str, layer: str | None = None
):
    """Replace a whole-value ``$name`` by the block argument ``name``."""
    if isinstance(value, str) and value.startswith("$"):
        key = value[1:]
        if not context:
            raise SpecError(
                f"'{shown(value)}' refers to a block parameter, but this node is not inside a "
                "block.",
                location=location,
                layer=layer,
                hint="write the value itself, or move the node into a block under 'blocks:'.",
            )
        if key not in params:
            raise SpecError(
                f"'{shown(value)}' names no parameter of this block.{suggest(key, params)}",
                location=location,
                layer=layer,
                hint=f"the block's parameters are: {', '.join(params) or 'none'} ({context}).",
            )
        return params[key].value, params[key].location if params[key].location else location
    return value, location


def _node_inputs(node: YamlMap, default: str, prefix: str) -> tuple[list[str], list[Location]]:
    if "inputs" not in node:
        return [default], [node.location]
    raw, where = node["inputs"], node.where("inputs")
    if isinstance(raw, str):
        return [prefix + check_name(raw, where)], [where]
    if not isinstance(raw, YamlList) or not raw:
        raise SpecError(
            "'inputs' must be a node name or a non-empty list of names.", location=where
        )
    return (
        [prefix + check_name(name, raw.where(i)) for i, name in enumerate(raw)],
        [raw.where(i) for i in range(len(raw))],
    )


def _expand_body(
    nodes: YamlMap,
    prefix: str,
    formal_inputs: list[str],
    params: dict[str, Written],
    blocks: YamlMap,
    defaults: Defaults,
    result: _Expansion,
    stack: tuple,
    context: str = "",
) -> None:
    """Expand one graph body (the top-level nodes, or one block instance) into ``result``.

    Names are scoped by ``prefix`` (``res2/``); formal inputs and node names resolve later.
    """
    local = set(formal_inputs) | set(nodes)
    previous = prefix + formal_inputs[0]
    for name, node in nodes.items():
        where = nodes.where_key(name)
        check_name(name, where)
        if len(result.layers) + len(result.aliases) > MAX_LAYERS:  # blocks of blocks multiply
            raise SpecError(
                f"the network expands to more than {MAX_LAYERS} nodes"
                + (f" ({context})." if context else "."),
                location=where,
                layer=prefix + name,
                hint="a network needs far fewer; check blocks that instantiate other blocks.",
            )
        if name in formal_inputs or (
            not prefix
            and name == "input"
            and not (isinstance(node, YamlMap) and node.get("op") == "input")
        ):
            raise SpecError(
                f"'{name}' is the name of the input; choose another node name.",
                location=where,
                layer=name,
            )
        scoped = prefix + name
        if isinstance(node, str):
            written_op, op_where, given = _list_entry(node, nodes.where(name))
            op_value_where = op_where
            node = YamlMap(nodes.where(name))
        elif isinstance(node, YamlMap):
            if ("op" in node) == ("block" in node):
                raise SpecError(
                    "a node needs exactly one of 'op' (a layer) or 'block' (a block instance).",
                    location=where,
                    layer=scoped,
                    hint="e.g. conv1: {op: conv, filters: 16, size: 3}.",
                )
            written_op, op_where, given = None, where, {}
            op_value_where = node.where("op")
            for key, value in node.items():
                if key in NODE_KEYS:
                    continue
                value, value_where = _substitute(value, params, node.where(key), context, scoped)
                given[key] = Written(value, value_where, node.where_key(key))
            if "op" in node:
                written_op, op_value_where = _substitute(
                    node["op"], params, node.where("op"), context, scoped
                )
        else:
            raise SpecError(
                "a node must be a mapping (op: ..., inputs: [...]) or a layer "
                'string such as "CONV(16, 3x3, pad=1)".',
                location=where,
                layer=scoped,
            )
        inputs, input_where = _node_inputs(node, previous, prefix)
        for local_name, place in zip(inputs, input_where):
            bare = local_name[len(prefix) :]
            if bare not in local:
                hint_names = sorted(local)
                raise SpecError(
                    f"unknown input '{bare}'.{suggest(bare, hint_names)}",
                    location=place,
                    layer=scoped,
                    hint="inputs name nodes of the same graph or block: "
                    + ", ".join(hint_names)
                    + ".",
                )
        previous = scoped
        if "when" in node:
            keep, when_where = _substitute(
                node["when"], params, node.where("when"), context, scoped
            )
            if not isinstance(keep, bool):
                raise SpecError(
                    f"'when' expects true or false, got {keep!r}.",
                    location=when_where,
                    layer=scoped,
                )
            if not keep:
                if isinstance(written_op, str) and canonical_op_name(written_op) == "input":
                    raise SpecError(
                        "the input node cannot be switched off by 'when'.",
                        location=when_where,
                        layer=scoped,
                        hint="remove 'when' from the input node.",
                    )
                if len(inputs) != 1:
                    raise SpecError(
                        "a node switched off by 'when' passes its input through, so "
                        "it must have exactly one input.",
                        location=when_where,
                        layer=scoped,
                    )
                result.aliases[scoped] = (inputs[0], where)
                continue
        if "block" in node:
            _instantiate(
                node, scoped, inputs, input_where, blocks, defaults, result, stack, params, context
            )
            continue
        if written_op == "input" or (
            written_op is not None and resolve_op(written_op, op_value_where, scoped) == "input"
        ):
            if prefix:
                raise SpecError("a block cannot hold an input node.", location=where, layer=scoped)
            if "inputs" in node:
                raise SpecError(
                    "the input node takes no 'inputs'.",
                    location=node.where_key("inputs"),
                    layer=scoped,
                )
            first = sum(layer.op == "input" for layer in result.layers)  # keep spec order
            result.layers.insert(
                first, _input_layer(given.get("shape"), None, where, defaults, scoped)
            )
            if scoped != "input":
                result.aliases["input"] = (scoped, where)
            continue
        result.layers.append(
            make_layer(scoped, written_op, op_where, given, defaults, inputs, input_where, context)
        )


def _instantiate(
    node: YamlMap,
    scoped: str,
    inputs: list[str],
    input_where: list[Location],
    blocks: YamlMap,
    defaults: Defaults,
    result: _Expansion,
    stack: tuple,
    outer_params: dict[str, Written],
    outer_context: str,
) -> None:
    """Expand ``node`` (``block: basic, filters: 32, ...``) under the prefix ``scoped/``."""
    block_name, where = _substitute(
        node["block"], outer_params, node.where("block"), outer_context, scoped
    )
    if not isinstance(block_name, str) or block_name not in blocks:
        raise SpecError(
            f"unknown block '{shown(block_name)}'.{suggest(str(block_name), blocks)}",
            location=where,
            layer=scoped,
            hint="blocks defined: " + (", ".join(blocks) or "none") + ".",
        )
    if block_name in stack or len(stack) >= MAX_BLOCK_DEPTH:
        raise SpecError(
            f"block '{block_name}' uses itself (through {' -> '.join(stack)}), "
            "which would never end.",
            location=where,
            layer=scoped,
        )
    block = blocks[block_name]
    definition = blocks.where(block_name)
    if not isinstance(block, YamlMap) or not isinstance(block.get("nodes"), YamlMap):
        raise SpecError(
            f"block '{block_name}' must be a mapping with 'nodes:' (and optional "
            "'params:', 'inputs:', 'output:').",
            location=definition,
        )
    if not block["nodes"]:
        raise SpecError(
            f"block '{block_name}' has no nodes.",
            location=block.where("nodes"),
            hint="add at least one node under its 'nodes:'.",
        )
    for key in block:
        if key not in ("params", "inputs", "nodes", "output", "description"):
            raise SpecError(
                f"unknown key '{key}' in block '{block_name}'."
                f"{suggest(key, ('params', 'inputs', 'nodes', 'output'))}",
                location=block.where_key(key),
            )
    declared = block.get("params") or YamlMap(definition)
    if not isinstance(declared, YamlMap):
        raise SpecError(
            "a block's 'params' must map names to defaults (null = required).",
            location=block.where("params"),
        )
    args = {k: val for k, val in node.items() if k not in NODE_KEYS}
    params: dict[str, Written] = {}
    for key in args:
        if key not in declared:
            raise SpecError(
                f"block '{block_name}' has no parameter '{key}'.{suggest(key, declared)}",
                location=node.where_key(key),
                layer=scoped,
                hint="its parameters: " + (", ".join(declared) or "none") + ".",
            )
    for key, default in declared.items():
        if key in args:
            value, value_where = _substitute(
                args[key], outer_params, node.where(key), outer_context, scoped
            )
            params[key] = Written(value, value_where)
        elif default is None:
            raise SpecError(
                f"block '{block_name}' needs parameter '{key}'.",
                location=node.location,
                layer=scoped,
                hint=f"add '{key}: ...' to this node.",
            )
        else:
            params[key] = Written(default, declared.where(key))
    formal = block.get("inputs", ["in"])
    if isinstance(formal, str):
        formal = [formal]
    if not isinstance(formal, list) or not formal or not all(isinstance(f, str) for f in formal):
        raise SpecError(
            "a block's 'inputs' must be a list of names.", location=block.where("inputs")
        )
    for name in formal:
        check_name(name, block.where("inputs"))
    if len(formal) != len(inputs):
        raise SpecError(
            f"block '{block_name}' takes {len(formal)} input(s) "
            f"({', '.join(formal)}), but {len(inputs)} are given.",
            location=node.where("inputs") if "inputs" in node else node.location,
            layer=scoped,
        )
    for name, actual, place in zip(formal, inputs, input_where):
        result.aliases[f"{scoped}/{name}"] = (actual, place)
    context = f"in block '{block_name}' used as '{scoped}'"
    _expand_body(
        block["nodes"],
        scoped + "/",
        formal,
        params,
        blocks,
        defaults,
        result,
        stack + (block_name,),
        context,
    )
    output = block.get("output", list(block["nodes"])[-1])
    if not isinstance(output, str) or output not in block["nodes"]:
        raise SpecError(
            f"block output '{shown(output)}' is not one of its nodes."
            f"{suggest(str(output), block['nodes'])}",
            location=block.where("output"),
        )
    result.aliases[scoped] = (f"{scoped}/{output}", node.location)


def _resolve_aliases(result: _Expansion, output: str | None) -> tuple[list[LayerDef], str | None]:
    """Point every input (and the output) at a real layer: through block outputs, formal inputs
    and switched-off nodes."""

    resolved: dict[str, str] = {}  # so that long chains of aliases are walked once

    def resolve(name: str) -> str:
        seen: dict[str, None] = {}
        while name in result.aliases and name not in resolved:
            if name in seen:
                raise SpecError(
                    "these names only stand for each other: "
                    + " -> ".join([*seen, name])
                    + ".",
                    location=result.aliases[name][1],
                )
            seen[name] = None
            name = result.aliases[name][0]
        name = resolved.get(name, name)
        resolved.update(dict.fromkeys(seen, name))
        return name

    for layer in result.layers:
        layer.inputs = [resolve(name) for name in layer.inputs]
    return result.layers, (resolve(output) if output else None)
