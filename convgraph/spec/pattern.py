"""The compact pattern form of the ConvNet notes: ``[INPUT-[[CONV-RELU]*2-POOL]*3-FC]``.

Grammar (``-`` or ``->`` separates layers, ``[...]*N`` repeats, arguments are optional)::

    sequence := item (('-' | '->') item)*
    item     := ('[' sequence ']' | layer) ('*' COUNT)?
    layer    := NAME ('(' argument (',' argument)* ')')?
    argument := value | NAME '=' value          value := 32 | -0.5 | 3x3 | same | true

Every layer keeps the column of its token, so errors point inside the pattern string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from convgraph.errors import Location, SpecError
from convgraph.spec.yamlload import MAX_INT_DIGITS

MAX_REPEAT = 1000
MAX_LAYERS = 10_000
MAX_NESTING = 16

_TOKEN = re.compile(
    r"\s*(?:(?P<arrow>->)|(?P<punct>[\[\]\-*(),=?])"
    r"|(?P<number>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?(?:[xX][0-9]+)*)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>\S))"
)


@dataclass
class Token:
    kind: str
    text: str
    offset: int


@dataclass
class PatternLayer:
    """One layer token with its arguments: ``CONV(32, 3x3, pad=same)``."""

    op: str
    offset: int
    args: list = field(default_factory=list)  # [(value, offset)]
    kwargs: dict = field(default_factory=dict)  # name -> (value, offset)
    key_offsets: dict = field(default_factory=dict)  # name -> offset of the name itself


def tokenize(text: str, where: Location) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # only trailing white space is left
            break
        kind = match.lastgroup
        start = match.start(kind)
        if kind == "bad":
            raise SpecError(
                f"unexpected character '{match.group(kind)}' in the pattern.",
                location=where.shifted(start),
                hint="layers are NAME or NAME(args), joined by '-', repeated with [ ... ]*N.",
            )
        tokens.append(Token("punct" if kind == "arrow" else kind, match.group(kind), start))
        pos = match.end()
    return tokens


def parse_pattern(text: str, where: Location) -> list[PatternLayer]:
    """Expand a pattern string into its flat list of layers (repeats unrolled).

    >>> [layer.op for layer in parse_pattern("[INPUT-[CONV-RELU]*2-FC]", Location("s", 1, 1))]
    ['INPUT', 'CONV', 'RELU', 'CONV', 'RELU', 'FC']
    """
    tokens = tokenize(text, where)
    if not tokens:
        raise SpecError(
            "the pattern is empty.",
            location=where,
            hint="write layers such as [INPUT-CONV-RELU-POOL-FC].",
        )
    parser = _Parser(tokens, where, len(text))
    layers = parser.sequence(depth=0)
    if parser.pos < len(parser.tokens):
        token = parser.tokens[parser.pos]
        raise parser.fail(
            token.offset,
            f"unexpected '{token.text}'",
            "check the brackets: every '[' needs a matching ']'.",
        )
    if not layers:
        raise SpecError(
            "the pattern is empty.",
            location=where,
            hint="write layers such as [INPUT-CONV-RELU-POOL-FC].",
        )
    return layers


class _Parser:
    def __init__(self, tokens: list[Token], where: Location, end: int):
        self.tokens, self.where, self.end, self.pos = tokens, where, end, 0

    def fail(self, offset: int, message: str, hint: str | None = None) -> SpecError:
        return SpecError(
            f"in the pattern: {message}.", location=self.where.shifted(offset), hint=hint
        )

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, text: str | None = None, kind: str | None = None) -> Token:
        token = self.peek()
        if token is None:
            wanted = f"'{text}'" if text else (kind or "more")
            raise self.fail(self.end, f"it ends where {wanted} was expected",
                            f"add {wanted} at the end of the pattern.")
        if (text and token.text != text) or (kind and token.kind != kind):
            wanted = f"'{text}'" if text else f"a {kind}"
            raise self.fail(token.offset, f"expected {wanted}, found '{token.text}'",
                            f"write {wanted} here (layers are NAME or NAME(args), joined by "
                            "'-').")
        self.pos += 1
        return token

    def at(self, *texts: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "punct" and token.text in texts

    def sequence(self, depth: int) -> list[PatternLayer]:
        layers = self.item(depth)
        while self.at("-", "->"):
            self.pos += 1
            layers += self.item(depth)
            if len(layers) > MAX_LAYERS:
                raise self.fail(0, f"it expands to more than {MAX_LAYERS} layers",
                                f"describe at most {MAX_LAYERS:,} layers (smaller repeat "
                                "counts).")
        return layers

    def item(self, depth: int) -> list[PatternLayer]:
        token = self.peek()
        if token is None:
            raise self.fail(
                self.end, "it ends where a layer was expected", "remove the trailing '-'."
            )
        if token.text == "[":
            if depth >= MAX_NESTING:
                raise self.fail(token.offset, f"brackets nest deeper than {MAX_NESTING}",
                                f"nest '[ ... ]' groups at most {MAX_NESTING} deep.")
            self.pos += 1
            layers = self.sequence(depth + 1)
            if not self.at("]"):
                found = self.peek()
                if found is not None and found.text not in ("-", "->"):
                    # a token that cannot follow a layer here: say what it is, not that the
                    # bracket is open (CONV?? is one '?' too many, not a missing ']')
                    after = self.tokens[self.pos - 1].text
                    if after == "?" and self.pos >= 2:  # the layer it marks: 'CONV?'
                        after = self.tokens[self.pos - 2].text + "?"
                    raise self.fail(
                        found.offset,
                        f"unexpected '{found.text}' after '{after}'",
                        "after a layer comes '-' and the next layer, ']' (or ']*N') closing "
                        "a group, or one '?' marking it optional (POOL?).",
                    )
                raise self.fail(
                    found.offset if found else self.end,
                    f"'[' at column {token.offset + 1} of the pattern is not closed",
                    "add the matching ']'.",
                )
            self.pos += 1
        elif token.kind == "word":
            layers = [self.layer()]
        else:
            before = self.tokens[self.pos - 1].text if self.pos else ""
            raise self.fail(
                token.offset,
                f"expected a layer name or '[', found '{token.text}'",
                f"remove the trailing '{before}'." if before in ("-", "->") else None,
            )
        if self.at("?"):  # the notes' optional marker: POOL? means the layer is present
            self.pos += 1
        if self.at("*"):
            star = self.take("*")
            count = self.take(kind="number")
            digits = count.text.lstrip("0")  # int() of thousands of digits raises ValueError
            if (
                not count.text.isdigit()
                or len(digits) > len(str(MAX_REPEAT))
                or not 0 <= int(count.text) <= MAX_REPEAT
            ):
                raise self.fail(
                    count.offset,
                    f"a repeat count must be a whole number from 0 to "
                    f"{MAX_REPEAT}, got '{count.text}'",
                    f"write ]*N with N from 0 to {MAX_REPEAT} (e.g. [CONV-RELU]*2).",
                )
            if len(layers) * int(count.text) > MAX_LAYERS:
                raise self.fail(star.offset, f"it expands to more than {MAX_LAYERS} layers",
                                f"describe at most {MAX_LAYERS:,} layers (a smaller repeat "
                                "count).")
            layers = [_copy(layer) for _ in range(int(count.text)) for layer in layers]
        return layers

    def layer(self) -> PatternLayer:
        name = self.take(kind="word")
        layer = PatternLayer(name.text, name.offset)
        if not self.at("("):
            return layer
        self.pos += 1
        while not self.at(")"):
            token = self.peek()
            following = self.tokens[self.pos + 1] if self.pos + 1 < len(self.tokens) else None
            if token is not None and token.kind == "word" and following and following.text == "=":
                self.pos += 2
                if token.text in layer.kwargs:
                    raise self.fail(token.offset, f"'{token.text}' is given twice",
                                    f"give '{token.text}=' once.")
                layer.kwargs[token.text] = self.value()
                layer.key_offsets[token.text] = token.offset
            else:
                if layer.kwargs:
                    raise self.fail(
                        token.offset if token else self.end,
                        "a positional argument follows a named one",
                        "put positional arguments first.",
                    )
                layer.args.append(self.value())
            if not self.at(")"):
                self.take(",")
        self.pos += 1
        return layer

    def value(self):
        if self._at_negative_number():  # CLIP(-0.5, 1): inside an argument '-' is a sign
            self.pos += 1
            value, _ = self.value()
            sign = self.tokens[self.pos - 2]
            return (f"-{value}" if isinstance(value, str) else -value), sign.offset
        token = self.peek()
        if token is None or token.kind not in ("number", "word"):
            raise self.fail(token.offset if token else self.end, "expected a value",
                            "write a number (3, 0.5, 3x3) or a word (same, true) here.")
        if token.text.isdigit() and len(token.text.lstrip("0")) > MAX_INT_DIGITS:
            raise self.fail(
                token.offset,
                f"the number {token.text[:20]}... ({len(token.text)} digits) is too large to be "
                "a size or count",
                f"sizes and counts have at most {MAX_INT_DIGITS} digits.",
            )
        self.pos += 1
        return _literal(token), token.offset


    def _at_negative_number(self) -> bool:
        following = self.tokens[self.pos + 1] if self.pos + 1 < len(self.tokens) else None
        return self.at("-") and following is not None and following.kind == "number"


def _literal(token: Token):
    text = token.text
    if token.kind == "word":
        return {"true": True, "false": False}.get(text.lower(), text)
    if "x" in text.lower():
        return text  # a size such as 3x3, read by the parameter's own reader
    if re.fullmatch(r"[0-9]+", text):
        return int(text)
    return float(text)


def _copy(layer: PatternLayer) -> PatternLayer:
    return PatternLayer(
        layer.op, layer.offset, list(layer.args), dict(layer.kwargs), dict(layer.key_offsets)
    )
