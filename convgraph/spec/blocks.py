"""The graph form and its blocks: named nodes with explicit inputs, reusable sub-graphs.

``nodes: {name: {op: ..., inputs: [...]}}``; ``blocks: {NAME: {params, inputs, nodes, output}}``
instantiated by ``{block: NAME, ...}`` nodes, whose nodes are named ``<instance>/<node>``,
``$param`` replaced by the instance's value, ``when:`` switching a node off. Blocks may use
other blocks, up to MAX_BLOCK_DEPTH deep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from convgraph.errors import ErrorCollector, Location, SpecError, suggest
from convgraph.ops.base import LayerDef, canonical_op_name
from convgraph.spec.attrs import Defaults, Written, check_name, make_layer, resolve_op, shown
from convgraph.spec.expr import is_expression, read_expression
from convgraph.spec.layers import input_layer, list_entry, top_input
from convgraph.spec.pattern import MAX_LAYERS
from convgraph.spec.yamlload import YamlList, YamlMap

NODE_KEYS = ("op", "block", "inputs", "when", "repeat")
MAX_BLOCK_DEPTH = 8


@dataclass
class _Expansion:
    """What expanding a graph body produces: layers, names that stand for other names, and
    the errors of the nodes that failed (each node is independent; see ErrorCollector)."""

    layers: list[LayerDef] = field(default_factory=list)
    aliases: dict[str, tuple[str, Location]] = field(default_factory=dict)
    errors: ErrorCollector = field(default_factory=ErrorCollector)


def read_graph(
    data: YamlMap, defaults: Defaults, output: str | None, errors: ErrorCollector | None = None
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
            "'blocks' must map block names to their definitions.", location=data.where("blocks"),
            hint="e.g. blocks: {basic: {nodes: {conv1: {op: conv, filters: 16, size: 3}}}}."
        )
    result = _Expansion(errors=errors or ErrorCollector())
    has_input_node = any(isinstance(n, YamlMap) and n.get("op") == "input" for n in nodes.values())
    if not has_input_node:
        result.layers.append(input_layer(None, top_input(data), data.location, defaults))
    elif "input" in data:
        raise SpecError(
            "the input volume is given twice (top-level 'input' and an input node).",
            location=data.where_key("input"),
            hint="keep one of the two.",
        )
    _expand_body(nodes, "", ["input"], {}, blocks, defaults, result, stack=())
    result.errors.raise_if_any()  # a node that failed would make the checks below misleading
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
    """Replace a whole-value ``$name`` by the block argument ``name``, and work out a formula
    (``$growth * 4``; one reading ``$in`` stays an Expression until shapes)."""
    if is_expression(value):
        return read_expression(value, location, params if context else None, context,
                               layer), location
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
            "'inputs' must be a node name or a non-empty list of names.", location=where,
            hint="e.g. inputs: conv1, or inputs: [conv1, conv2]."
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
    scope = _Scope(nodes, prefix, formal_inputs, params, blocks, defaults, result, stack,
                   context)
    previous = prefix + formal_inputs[0]
    for name, node in nodes.items():
        where = nodes.where_key(name)
        if len(result.layers) + len(result.aliases) > MAX_LAYERS:  # blocks of blocks multiply
            too_many = SpecError(
                f"the network expands to more than {MAX_LAYERS} nodes"
                + (f" ({context})." if context else "."),
                location=where,
                layer=prefix + name,
                hint="a network needs far fewer; check blocks that instantiate other blocks.",
            )
            too_many.stops = True  # every node after it would say the same
            raise too_many
        with result.errors.attempt():  # a node that fails is left out; the others are read
            _expand_node(scope, name, node, previous)
        previous = prefix + name


@dataclass
class _Scope:
    """One graph body being expanded (the top-level nodes, or one block instance's) and what
    its nodes are read with."""

    nodes: YamlMap
    prefix: str  # '' or 'res2/'
    formal_inputs: list[str]
    params: dict[str, Written]
    blocks: YamlMap
    defaults: Defaults
    result: _Expansion
    stack: tuple  # the blocks being instantiated, outermost first
    context: str

    @cached_property
    def local(self) -> set:
        """The names a node of this body may read (once per body: bodies can be long)."""
        return set(self.formal_inputs) | set(self.nodes)


def _expand_node(scope: _Scope, name: str, node, previous: str) -> None:
    """Expand one node of a graph body (a layer, a block instance, or a switched-off node);
    ``previous``: what it reads without 'inputs'."""
    nodes, prefix, formal_inputs, params = (scope.nodes, scope.prefix, scope.formal_inputs,
                                            scope.params)
    blocks, defaults, result, stack, context = (scope.blocks, scope.defaults, scope.result,
                                                scope.stack, scope.context)
    local = scope.local
    where = nodes.where_key(name)
    check_name(name, where)
    if name in formal_inputs or (
        not prefix
        and name == "input"
        and not (isinstance(node, YamlMap) and node.get("op") == "input")
    ):
        raise SpecError(
            f"'{name}' is the name of the input; choose another node name.",
            location=where,
            layer=name,
            hint=f"rename the node, e.g. '{name}_1'.",
        )
    scoped = prefix + name
    if isinstance(node, str):
        written_op, op_where, given = list_entry(node, nodes.where(name))
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
            hint="e.g. conv1: {op: conv, filters: 16, size: 3}, or relu1: relu.",
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
    if "when" in node:
        keep, when_where = _substitute(
            node["when"], params, node.where("when"), context, scoped
        )
        if not isinstance(keep, bool):
            raise SpecError(
                f"'when' expects true or false, got {keep!r}.",
                location=when_where,
                layer=scoped,
                hint="write when: true, when: false, or when: $param with a true or "
                     "false parameter.",
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
                    hint="give it a single input (inputs: NAME), or remove 'when'.",
                )
            result.aliases[scoped] = (inputs[0], where)
            return
    if "block" in node:
        copies = _repeat_count(node, params, context, scoped)
        if copies is None:
            _instantiate(node, scoped, inputs, input_where, blocks, defaults, result, stack,
                         params, context)
            return
        for k in range(1, copies + 1):  # each copy reads the one before it
            copy_inputs = inputs if k == 1 else [f"{scoped}/{k - 1}"]
            copy_where = input_where if k == 1 else [node.where("repeat")]
            _instantiate(node, f"{scoped}/{k}", copy_inputs, copy_where, blocks, defaults,
                         result, stack, params, context, repeated=True)
        result.aliases[scoped] = (f"{scoped}/{copies}", node.location)
        return
    if "repeat" in node:
        raise SpecError(
            "'repeat' is for block instances: it chains copies of a block.",
            location=node.where_key("repeat"),
            layer=scoped,
            hint="put the layers to repeat in a block under 'blocks:' and write "
                 "{block: NAME, repeat: N}, or write the layers out.",
        )
    if written_op == "input" or (
        written_op is not None and resolve_op(written_op, op_value_where, scoped) == "input"
    ):
        if prefix:
            raise SpecError("a block cannot hold an input node.", location=where, layer=scoped,
                            hint="remove the input node from the block: a block reads "
                                 "its 'inputs:' (default [in]).")
        if "inputs" in node:
            raise SpecError(
                "the input node takes no 'inputs'.",
                location=node.where_key("inputs"),
                layer=scoped,
                hint="remove 'inputs' from the input node.",
            )
        first = sum(layer.op == "input" for layer in result.layers)  # keep spec order
        result.layers.insert(
            first, input_layer(given.get("shape"), None, where, defaults, scoped)
        )
        if scoped != "input":
            result.aliases["input"] = (scoped, where)
        return
    result.layers.append(
        make_layer(scoped, written_op, op_where, given, defaults, inputs, input_where, context)
    )


def _repeat_count(node: YamlMap, params: dict[str, Written], context: str,
                  scoped: str) -> int | None:
    """A block instance's ``repeat: N`` (a whole number from 1, or a block parameter), or None
    when it has none."""
    if "repeat" not in node:
        return None
    count, where = _substitute(node["repeat"], params, node.where("repeat"), context, scoped)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_LAYERS:
        raise SpecError(
            f"'repeat' expects a whole number from 1 to {MAX_LAYERS}, got {shown(repr(count))}.",
            location=where,
            layer=scoped,
            hint="e.g. repeat: 6 (six chained copies of the block), or leave 'repeat' out "
                 "for one.",
        )
    return count


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
    repeated: bool = False,
) -> None:
    """Expand ``node`` (``block: basic, filters: 32, ...``) under the prefix ``scoped/``
    (``repeated``: ``scoped`` is one copy of a ``repeat:``, ``dense/3``)."""
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
    if block_name in stack:
        raise SpecError(
            f"block '{block_name}' uses itself (through {' -> '.join(stack)}), "
            "which would never end.",
            location=where,
            layer=scoped,
            hint=f"instantiate another block here, or none: a block may not contain "
                 f"'{block_name}' at any depth.",
        )
    if len(stack) >= MAX_BLOCK_DEPTH:
        raise SpecError(
            f"blocks nest more than {MAX_BLOCK_DEPTH} deep here "
            f"({' -> '.join((*stack, block_name))}).",
            location=where,
            layer=scoped,
            hint=f"nest blocks at most {MAX_BLOCK_DEPTH} deep: merge some of them into one "
                 "block's nodes.",
        )
    block = blocks[block_name]
    definition = blocks.where(block_name)
    if not isinstance(block, YamlMap) or not isinstance(block.get("nodes"), YamlMap):
        raise SpecError(
            f"block '{block_name}' must be a mapping with 'nodes:' (and optional "
            "'params:', 'inputs:', 'output:').",
            location=definition,
            hint="e.g. basic: {params: {filters: null}, nodes: {conv1: {op: conv, "
                 "filters: $filters, size: 3}}}.",
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
                hint="a block takes: params, inputs, nodes, output, description.",
            )
    declared = block.get("params") or YamlMap(definition)
    if not isinstance(declared, YamlMap):
        raise SpecError(
            "a block's 'params' must map names to defaults (null = required).",
            location=block.where("params"),
            hint="e.g. params: {filters: null, stride: 1}.",
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
            "a block's 'inputs' must be a list of names.", location=block.where("inputs"),
            hint="e.g. inputs: [in] (the default) or inputs: [left, right]."
        )
    for name in formal:
        check_name(name, block.where("inputs"))
    if repeated and len(formal) != 1:
        raise SpecError(
            f"block '{block_name}' takes {len(formal)} inputs ({', '.join(formal)}), so its "
            "copies cannot be chained by 'repeat': each copy reads one output, the one "
            "before it.",
            location=node.where_key("repeat"),
            layer=scoped,
            hint="repeat a block with one input (concatenate inside it, as a dense layer "
                 "does), or write the instances out.",
        )
    if len(formal) != len(inputs):
        raise SpecError(
            f"block '{block_name}' takes {len(formal)} input(s) "
            f"({', '.join(formal)}), but {len(inputs)} are given.",
            location=node.where("inputs") if "inputs" in node else node.location,
            layer=scoped,
            hint=f"list {len(formal)} node name(s) under 'inputs:', one for each of "
                 f"{', '.join(formal)}.",
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
            hint="set 'output:' to one of its nodes: " + ", ".join(block["nodes"]) + ".",
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
                    hint="point one of them at a real layer (a block's output at one of its "
                         "nodes, an input at a node that exists).",
                )
            seen[name] = None
            name = result.aliases[name][0]
        name = resolved.get(name, name)
        resolved.update(dict.fromkeys(seen, name))
        return name

    for layer in result.layers:
        layer.inputs = [resolve(name) for name in layer.inputs]
    return result.layers, (resolve(output) if output else None)
