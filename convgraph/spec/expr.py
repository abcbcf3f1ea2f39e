"""Integer settings computed from the input volume and block parameters: ``$in.depth // 2``.

A tiny, safe evaluator (no ``eval``): integer literals, ``$in.depth``, ``$in.width``,
``$in.height``, block parameters (``$growth``), ``+ - * //``, unary minus and parentheses.
An expression that names no ``$in`` value is worked out while the spec is read (its block
parameters are known there); one that does becomes an :class:`Expression`, an ops.base.FromInput
that shape inference evaluates once the layer's input volume is known.
"""

from __future__ import annotations

import re

from convgraph.core import Volume
from convgraph.errors import Location, SpecError, suggest
from convgraph.ops.base import FromInput

MAX_TEXT = 200  # an expression is a short formula; a long one is a mistake (or an attack)
MAX_DIGITS = 12  # as the YAML loader's integers
_TOKEN = re.compile(r"\s*(?:(\d+)|\$([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?"
                    r"|(//|[-+*()])|(\S))")
_INPUT = "in"
INPUT_EXTENTS = ("depth", "width", "height")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2}


def is_expression(value) -> bool:
    """Whether a written setting is a formula (``$in.depth``, ``$growth * 4``) rather than a
    bare block parameter (``$growth``, substituted whole, whatever its type)."""
    if not isinstance(value, str) or "$" not in value:
        return False
    bare = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", value.strip())
    return bare is None or bare.group(1) == _INPUT  # '$in' alone: the parser says what is meant


class Expression(FromInput):
    """A parsed formula, its block parameters already replaced by their values.

    Nodes of ``tree``: ``("int", n)``, ``("in", extent)``, ``("neg", a)``, ``("op", sym, a, b)``.
    ``str()`` writes it back (what ``--expand`` shows; it reads back as the same formula).
    """

    def __init__(self, tree, text: str):
        self.tree = tree
        self.text = text

    def value(self, volume: Volume) -> int:
        return _evaluate(self.tree, volume)

    def __str__(self) -> str:
        return _render(self.tree)

    def __repr__(self) -> str:  # as messages quote a written value: 'got '$in.depth''
        return repr(str(self))

    def __eq__(self, other) -> bool:
        return isinstance(other, Expression) and self.tree == other.tree

    def __hash__(self) -> int:
        return hash(self.tree)


def read_expression(text: str, location: Location, params: dict | None, context: str = "",
                    layer: str | None = None):
    """``text`` as an int (no ``$in`` in it) or an Expression; ``params``: the block's
    parameters (name -> Written), None outside a block. Raises a located SpecError."""

    def fail(why: str, hint: str) -> SpecError:
        note = f" ({context})" if context else ""
        return SpecError(f"`{text.strip()}`: {why}{note}", location=location, layer=layer,
                         hint=hint)

    if len(text) > MAX_TEXT:
        raise fail(f"an expression of {len(text)} characters is too long (at most {MAX_TEXT}).",
                   "write a short formula such as $in.depth // 2.")
    try:
        tree = _Parser(text).parse()
        tree = _bind(tree, params)
    except _Problem as problem:
        raise fail(problem.why, problem.hint) from None
    if not _reads_input(tree):
        try:
            return _evaluate(tree, None)
        except ValueError as why:
            raise fail(f"{why}.", "divide by a value that is not 0, or write the number.") \
                from None
    return Expression(tree, text.strip())


class _Problem(Exception):
    def __init__(self, why: str, hint: str = "expressions take whole numbers, $in.depth, "
                 "$in.width, $in.height, block parameters ($name), + - * // and parentheses."):
        super().__init__(why)
        self.why, self.hint = why, hint


class _Parser:
    """Recursive descent over the tokens: sum := product (('+'|'-') product)*,
    product := unary (('*'|'//') unary)*, unary := '-' unary | atom."""

    def __init__(self, text: str):
        self.tokens = self._tokens(text)
        self.at = 0

    @staticmethod
    def _tokens(text: str) -> list[tuple]:
        tokens, position = [], 0
        while text[position:].strip():
            match = _TOKEN.match(text, position)
            number, name, field, symbol, other = match.groups()
            position = match.end()
            if other is not None:
                extra = " (whole-number division is //)" if other == "/" else ""
                raise _Problem(f"'{other}' is not part of an expression{extra}.")
            if number is not None:
                if len(number) > MAX_DIGITS:
                    raise _Problem(f"{number} has more than {MAX_DIGITS} digits.")
                tokens.append(("int", int(number)))
            elif name is not None:
                tokens.append(("name", name, field))
            else:
                tokens.append(("symbol", symbol))
        tokens.append(("end",))
        return tokens

    def parse(self):
        if self.tokens[0] == ("end",):
            raise _Problem("the expression is empty.")
        tree = self._sum()
        if self.tokens[self.at] != ("end",):
            raise _Problem(f"unexpected {self._shown(self.tokens[self.at])}.")
        return tree

    def _sum(self):
        tree = self._product()
        while self._peek() in ("+", "-"):
            symbol = self._take()[1]
            tree = ("op", symbol, tree, self._product())
        return tree

    def _product(self):
        tree = self._unary()
        while self._peek() in ("*", "//"):
            symbol = self._take()[1]
            tree = ("op", symbol, tree, self._unary())
        return tree

    def _unary(self):
        if self._peek() == "-":
            self._take()
            return ("neg", self._unary())
        return self._atom()

    def _atom(self):
        token = self._take()
        if token[0] == "int":
            return token
        if token[0] == "name":
            return self._reference(token[1], token[2])
        if token == ("symbol", "("):
            tree = self._sum()
            if self._take() != ("symbol", ")"):
                raise _Problem("a '(' is not closed.")
            return tree
        raise _Problem(f"expected a number, $in.depth or a $parameter, got "
                       f"{self._shown(token)}.")

    @staticmethod
    def _reference(name: str, field: str | None):
        if name == _INPUT:
            if field not in INPUT_EXTENTS:
                got = f"'$in.{field}'" if field else "'$in' alone"
                raise _Problem(f"{got} is not an extent of the input volume."
                               f"{suggest(field or '', INPUT_EXTENTS)}",
                               "write $in.depth, $in.width or $in.height.")
            return ("in", field)
        if field is not None:
            raise _Problem(f"'${name}.{field}': only $in has extents.",
                           f"write ${name} for the block parameter, or $in.{field}.")
        return ("param", name)

    def _peek(self):
        token = self.tokens[self.at]
        return token[1] if token[0] == "symbol" else None

    def _take(self):
        token = self.tokens[self.at]
        if token[0] != "end":
            self.at += 1
        return token

    @staticmethod
    def _shown(token) -> str:
        if token[0] == "end":
            return "the end of the expression"
        if token[0] == "name":
            return f"'${token[1]}'" + (f".{token[2]}" if token[2] else "")
        return f"'{token[1]}'"


def _bind(tree, params: dict | None):
    """Replace every ``$name`` by its block parameter's value (a whole number)."""
    kind = tree[0]
    if kind == "param":
        name = tree[1]
        if params is None:
            raise _Problem(f"'${name}' refers to a block parameter, but this node is not inside "
                           "a block.", "write the value itself, or move the node into a block "
                           "under 'blocks:'; outside blocks only $in.depth, $in.width and "
                           "$in.height are known.")
        if name not in params:
            raise _Problem(f"'${name}' names no parameter of this block.{suggest(name, params)}",
                           f"the block's parameters are: {', '.join(params) or 'none'}.")
        value = params[name].value
        if isinstance(value, Expression):  # $in in it means the input of the layer using it
            return value.tree
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Problem(f"parameter '{name}' is {value!r}, not a whole number.",
                           f"give '{name}' a whole number where the block is used.")
        return ("int", value)
    if kind == "neg":
        return ("neg", _bind(tree[1], params))
    if kind == "op":
        return ("op", tree[1], _bind(tree[2], params), _bind(tree[3], params))
    return tree


def _reads_input(tree) -> bool:
    if tree[0] == "in":
        return True
    return any(_reads_input(part) for part in tree[1:] if isinstance(part, tuple))


def _evaluate(tree, volume: Volume | None) -> int:
    """The value of ``tree``; ValueError(why) on division by zero."""
    kind = tree[0]
    if kind == "int":
        return tree[1]
    if kind == "in":
        return getattr(volume, tree[1])
    if kind == "neg":
        return -_evaluate(tree[1], volume)
    left, right = _evaluate(tree[2], volume), _evaluate(tree[3], volume)
    if tree[1] == "+":
        return left + right
    if tree[1] == "-":
        return left - right
    if tree[1] == "*":
        return left * right
    if right == 0:
        raise ValueError("division by zero")
    return left // right


def _render(tree, parent: int = 0) -> str:
    kind = tree[0]
    if kind == "int":
        return str(tree[1])
    if kind == "in":
        return f"$in.{tree[1]}"
    if kind == "neg":
        return "-" + _render(tree[1], 3)
    level = _PRECEDENCE[tree[1]]
    # left-associative: the right operand needs brackets at the same level (a - (b - c))
    text = f"{_render(tree[2], level)} {tree[1]} {_render(tree[3], level + 1)}"
    return f"({text})" if level < parent else text
