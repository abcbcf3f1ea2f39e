"""Spec fuzzing: every spec, well-formed or not, compiles or is refused with one located error.

Hypothesis writes specs in all three forms to real files and checks each one:

- either ``convgraph.pipeline.analyse(path)`` succeeds, and then ``convgraph check path`` exits 0
  with nothing on stderr;
- or it raises a :class:`convgraph.errors.SpecError` whose text starts with ``PATH:LINE:COLUMN:``
  inside the file (1 <= LINE <= lines + 1, COLUMN >= 1), and ``convgraph check path`` exits 2
  printing exactly that error on one line of stderr;
- and nothing else: another exception type, exit status 70 ("internal error"), a traceback, or an
  example slower than the deadline (a hang) fails the test.

The generators (see ``GENERATORS``):

- ``pattern``: shape-checked pattern networks (``[INPUT-[CONV-RELU]*2-POOL-FC]``) with every op and
  alias, positional and named arguments, ``defaults:``, repeats, ``?``, ``->``, folded strings;
  then 0-3 random edits of the YAML tree (values out of range or of the wrong type, dropped,
  duplicated or unknown keys, tags and anchors, names from elsewhere in the spec).
- ``grammar``: random strings from the pattern grammar (any op name, junk words, unicode, huge
  numbers, deep brackets, repeat counts in and out of range) with random character corruptions
  (unbalanced brackets, stray characters, bad repeat counts).
- ``layers``: shape-checked layer lists in all their spellings, then random edits.
- ``graph``: graph-form specs with residual adds, concats, ``when:`` switches, input nodes, an
  explicit output and (nested) blocks with ``$param`` arguments, then random edits that also
  produce cycles, unknown inputs and blocks, missing or extra block parameters.
- ``structure``: random YAML trees: unknown and unicode keys, every YAML hazard (YAML 1.1 words,
  octal, base 60, non-finite numbers, tags, anchors, aliases, merge keys, non-string and duplicate
  keys, directives, several documents), nesting around the depth limit, files over 1 MiB.
- ``bytes``: random byte flips, insertions, deletions, splices and truncations of valid specs
  (the repository's ``specs/`` and generated ones), including invalid UTF-8 and control bytes.
- ``bombs``: YAML alias bombs, block-instantiation bombs (blocks instantiating blocks), long
  chains of switched-off nodes and repeat bombs (``[[[RELU]*1000]*1000]``): refused, or
  compiled, within the deadline.
- ``extremes``: sizes, strides, paddings, dilations and counts at and beyond the limits (2**20,
  12-digit and 5000-digit numbers), so the shape arithmetic and its error messages see them.

Runs::

    python -m pytest tests/test_fuzz.py            # default tier: a few hundred examples, < 60 s
    CONVGRAPH_FUZZ_EXAMPLES=10000 python -m pytest -m slow tests/test_fuzz.py  # the long run
    CONVGRAPH_FUZZ_REPORT=out/fuzz-report.json python -m pytest ...   # also write the counts

The long run (marked ``slow``) spreads CONVGRAPH_FUZZ_EXAMPLES (default 10,000) over the
generators by weight. At the end of the module a summary line gives how many specs compiled, how
many were rejected with a located error and how many tracebacks there were (there must be none);
with CONVGRAPH_FUZZ_REPORT set, the same counts (per generator, the commonest errors and the
slowest example) go to that JSON file. It also counts, without failing, located errors whose
column lies past the end of their line as YAML numbers lines (NEL, LS, PS and a lone CR break
lines for PyYAML's marks, but not for most editors, nor for convgraph's own column arithmetic).

Each generator also replays, as ``@example`` cases, the specs that once broke convgraph (the last
field of its ``GENERATORS`` entry).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from convgraph.cli import main
from convgraph.display import shown
from convgraph.errors import SpecError
from convgraph.ops.base import REGISTRY, canonical_op_name, known_op_names
from convgraph.ops.values import MAX_SIZE
from convgraph.pipeline import analyse

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_MS = 2000  # one example (analyse + the CLI) must finish within this: no hangs
# ... except for bombs, whose largest accepted networks (10,000 layers, the pattern limit) take
# about a second for each of the two passes on a loaded two-core machine
BOMB_DEADLINE_MS = 5000
FILE_NAMES = ("spec.yaml", "ünï cödé.yaml", "net.v2.yml", "noext")

# ============================================================================ the YAML tree


@dataclass(frozen=True)
class Raw:
    """A scalar (or key) written into the YAML text exactly as given: ``no``, ``010``, ``*a``."""

    text: str


@dataclass(frozen=True)
class Map:
    """A YAML mapping as written: ordered (key, value) pairs, duplicate keys allowed."""

    pairs: tuple


@dataclass(frozen=True)
class Tagged:
    """A value with a prefix such as an anchor (``&a``) or a tag (``!!str``)."""

    prefix: str
    value: object


@dataclass(frozen=True)
class Folded:
    """A string written as a block scalar (``>-``, ``|``) or a multi-line plain scalar."""

    text: str
    style: str  # '>-', '|', '|-', '>' or 'plain'


def tree(**pairs) -> Map:
    return Map(tuple(pairs.items()))


AMBIGUOUS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:[xX][0-9]+)+|\$[A-Za-z_][A-Za-z0-9_]*")


def _string(value: str, rnd) -> str:
    if _PLAIN.fullmatch(value) and value.lower() not in AMBIGUOUS and rnd.random() < 0.7:
        return value
    if value.isprintable() and rnd.random() < 0.3:
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value, ensure_ascii=rnd.random() < 0.3)


def _scalar(value, rnd) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Folded):
        return _string(value.text, rnd)
    if value is None:
        return rnd.choice(("null", "~", "NULL"))
    if isinstance(value, bool):
        return rnd.choice(("true", "True")) if value else rnd.choice(("false", "FALSE"))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):  # a size pair
        return f"{value[0]}x{value[1]}"
    return _string(str(value), rnd)


def _key(key, rnd) -> str:
    return key.text if isinstance(key, Raw) else _string(str(key), rnd)


def _nonempty_container(value) -> bool:
    if isinstance(value, Map):
        return bool(value.pairs)
    return isinstance(value, list) and bool(value)


def _flow(value, rnd) -> str:
    if isinstance(value, Map):
        return "{" + ", ".join(f"{_key(k, rnd)}: {_flow(v, rnd)}" for k, v in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v, rnd) for v in value) + "]"
    if isinstance(value, Tagged):
        return f"{value.prefix} {_flow(value.value, rnd)}"
    return _scalar(value, rnd)


def _folded(text: str, style: str, indent: int) -> str:
    """``text`` as a block scalar body, broken after its '-' separators."""
    pad = " " * indent
    parts = re.split(r"(?<=-)(?=[A-Za-z\[])", text)  # between layers, not inside '->' or 1e-3
    if style == "plain":
        return " " + f"\n{pad}".join(part for part in parts if part) + "\n"
    return f" {style}\n" + "".join(f"{pad}{part}\n" for part in parts if part)


def _block(value, indent: int, rnd, flow_bias: float) -> str:
    pad = " " * indent
    out = []
    if isinstance(value, Map):
        for key, item in value.pairs:
            head = f"{pad}{_key(key, rnd)}:"
            if isinstance(item, Folded):
                out.append(head + _folded(item.text, item.style, indent + 2))
            elif _nonempty_container(item) and rnd.random() >= flow_bias:
                same_column = isinstance(item, list) and rnd.random() < 0.5
                out.append(head + "\n" + _block(item, indent + (0 if same_column else 2), rnd,
                                                flow_bias))
            else:
                out.append(f"{head} {_flow(item, rnd)}\n")
    else:
        for item in value:
            if _nonempty_container(item) and rnd.random() >= flow_bias:
                body = _block(item, indent + 2, rnd, flow_bias)
                out.append(pad + "- " + body[indent + 2:])
            else:
                out.append(f"{pad}- {_flow(item, rnd)}\n")
    return "".join(out)


def emit(value, rnd) -> str:
    """The YAML text of a tree: block style, flow style or a mix, chosen by ``rnd``."""
    flow_bias = rnd.choice((0.0, 0.0, 0.3, 1.0))
    if _nonempty_container(value) and flow_bias < 1.0:
        text = _block(value, 0, rnd, flow_bias)
    else:
        text = _flow(value, rnd) + "\n"
    if rnd.random() < 0.1:
        text = "# a comment: ünïcödé ✓\n" + text
    return text


# ============================================================================ values

ALIASES: dict[str, list[str]] = {op: [] for op in REGISTRY}  # op -> every name it may go by
for _written in known_op_names():
    ALIASES[canonical_op_name(_written)].append(_written)
PARAM_NAMES = sorted({key for op in REGISTRY.values() for key in op.params})
HAZARD_SCALARS = (
    "no", "Yes", "ON", "off", "y", "N", "010", "-007", "0o17", "0x1F", "1:30", "-1:30:00",
    "190:20:30.15", ".inf", "-.Inf", ".NaN", "1e400", "-1e999", "~", "1_000", "+12", "0.", ".5",
    "1e-3", "-0", "3x3", "5 x 3", "1x1x1", "0x0x0", "99999999999x3", "3X3X3", "x3", "3x",
    "!!int 3", "!!str 3", "!!python/object:os.system ls", "!custom 3",
    "!<tag:yaml.org,2002:int> 3", "&a 3", "*a", "*undefined", "'unterminated", '"unterminated',
    "[1, 2", "{a: 1", "a: b: c", "- x", "|", ">", "@x", "`x`", "%x", "? x", "x #comment",
    "'it''s'", '"\\x41"', '"\\uD800"', '"\\U0001F600"', '"\\z"', '"a\\nb"', '"\\u2028"',
    '"tab\\there"', "<<", "=", "!", "&", "*", "{}", "[]", "[[]]", "{a: [b, {c: d}]}",
    "same", "valid", "depthwise", "avg", "max", "floor", "ceil", "exact", "$filters", "$nope",
)
HAZARD_KEYS = (
    "<<", "? [a, b]", "? {a: 1}", "1", "-1", "3.5", "null", "~", "true", "no", "[a]", "{a: 1}",
    "&k key", "!t key", "*k", "''", '""', '"a\\nb"', '"\\u2028"', '"\\t"', "'名前'", '"Ｉnput"',
)
UNICODE_WORDS = ("conv_é", "层1", "Δ", "relu\u200b", "\u202erelu", "e\u0301", "🙂", "ｃｏｎｖ",
                 "İnput", "ß", "\u2028", "\x85", "a\u2029b", "\ufeff", "\U0010ffff")


def huge_digits(signed: bool = True):
    """Runs of digits from 12 to 5,000 long (Python refuses int() of more than 4,300)."""
    leads = ("", "0", "-", "+") if signed else ("", "0")
    return st.builds(lambda count, lead: lead + "1" + "7" * (count - 1),
                     st.sampled_from((12, 13, 20, 4299, 4300, 4301, 5000)), st.sampled_from(leads))


@st.composite
def bad_value(draw):
    """A hyperparameter value that is out of range, of the wrong type, or a YAML hazard."""
    kind = draw(st.integers(0, 11))
    if kind == 0:
        return draw(st.integers(-10, 0))
    if kind == 1:
        return draw(st.sampled_from((MAX_SIZE - 1, MAX_SIZE, MAX_SIZE + 1, 10**11, 999999999999,
                                     -(10**12) + 1, 2**31, 2**32 + 1)))
    if kind == 2:
        return Raw(draw(huge_digits()))
    if kind == 3:
        return draw(st.floats(allow_nan=False, allow_infinity=False))
    if kind == 4:
        return draw(st.booleans())
    if kind == 5:
        return None
    if kind == 6:
        return draw(st.text(max_size=12))
    if kind == 7:
        return draw(st.lists(st.integers(-2, 9), max_size=4))
    if kind == 8:
        return Raw(draw(st.sampled_from(HAZARD_SCALARS)))
    if kind == 9:
        return draw(st.sampled_from(UNICODE_WORDS))
    if kind == 10:
        return tree(filters=draw(st.integers(1, 4)))
    return draw(st.sampled_from(("3x3x3", "2x", "axb", "1x0", "0", "same ", " valid", "DEPTHWISE",
                                 "x" * 300, "1" * 13 + "x3", "[3, 3]")))


def written_op(draw, op: str, hyphens: bool = False) -> str:
    """One of the names the op may be written as, in some letter case (``leaky-relu`` too,
    with ``hyphens``: not inside a pattern, where '-' joins layers)."""
    name = draw(st.sampled_from(ALIASES[op]))
    case = draw(st.sampled_from(("lower", "lower", "upper", "title")))
    name = getattr(name, case)()
    if hyphens and "_" in name and draw(st.booleans()):
        name = name.replace("_", "-")
    return name


# ============================================================================ valid networks


@dataclass
class Layer:
    op: str
    attrs: dict
    repeatable: bool = False  # output volume equals input volume and no depth-dependent settings


def _maybe(draw, attrs: dict, key: str, strategy, p: float = 0.3) -> None:
    if draw(st.floats(0, 1)) < p:
        attrs[key] = draw(strategy)


def step_layer(draw, volume, flat: bool):
    """One layer that fits ``volume`` (w, h, d), and the volume it gives."""
    w, h, d = volume
    ops = ["relu", "sigmoid", "tanh", "softmax", "leakyrelu", "batchnorm", "dropout", "fc",
           "flatten", "gap"]
    if not flat:
        ops += ["conv", "conv", "conv", "pool", "pool"]
    op = draw(st.sampled_from(ops))
    attrs: dict = {}
    if op == "leakyrelu":
        _maybe(draw, attrs, "slope", st.floats(0, 1), 0.5)
    elif op == "dropout":
        _maybe(draw, attrs, "rate", st.floats(0, 0.9), 0.5)
    elif op == "batchnorm":
        _maybe(draw, attrs, "eps", st.floats(1e-8, 0.1))
        _maybe(draw, attrs, "momentum", st.floats(0, 1))
    elif op == "fc":
        attrs["units"] = draw(st.integers(1, 16))
        _maybe(draw, attrs, "bias", st.booleans())
        return Layer(op, attrs), (1, 1, attrs["units"])
    elif op == "flatten":
        return Layer(op, attrs), (1, 1, w * h * d)
    elif op == "gap":
        return Layer(op, attrs), (1, 1, d)
    elif op == "conv":
        return _conv_layer(draw, w, h, d)
    elif op == "pool":
        return _pool_layer(draw, w, h, d)
    return Layer(op, attrs, repeatable=True), volume


def _conv_layer(draw, w, h, d):
    kw, kh = draw(st.integers(1, min(5, w))), draw(st.integers(1, min(5, h)))
    if draw(st.booleans()):
        kh = kw = min(kw, kh)
    groups = draw(st.sampled_from((1, 1, 1, "depthwise") + tuple(g for g in (2, 3) if d % g == 0)))
    per_group = d if groups == "depthwise" else groups
    filters = per_group * draw(st.integers(1, 4)) if groups != 1 else draw(st.integers(1, 12))
    attrs = {"filters": filters, "size": (kw, kh)}
    mode = draw(st.sampled_from(("same", "half", "valid", "stride2")))
    if mode == "half" and kw % 2 and kh % 2:
        attrs["pad"] = (kw // 2, kh // 2)
        out = (w, h)
    elif mode == "valid":
        if draw(st.booleans()):
            attrs["pad"] = draw(st.sampled_from((0, "valid", "VALID", (0, 0))))
        out = (w - kw + 1, h - kh + 1)
    elif mode == "stride2":
        attrs["stride"], attrs["pad"] = 2, "same"
        out = (-(-w // 2), -(-h // 2))
    else:
        attrs["pad"] = draw(st.sampled_from(("same", "SAME")))
        _maybe(draw, attrs, "dilation", st.integers(1, 3))
        out = (w, h)
    if groups != 1 or draw(st.floats(0, 1)) < 0.2:
        attrs["groups"] = groups
    _maybe(draw, attrs, "bias", st.booleans())
    _maybe(draw, attrs, "rounding", st.sampled_from(("exact", "floor", "ceil")), 0.1)
    if "stride" not in attrs:
        _maybe(draw, attrs, "stride", st.just(1), 0.1)
    repeatable = out == (w, h) and groups == 1 and attrs.get("stride", 1) == 1
    return Layer("conv", attrs, repeatable), (*out, filters)


def _pool_layer(draw, w, h, d):
    attrs: dict = {}
    _maybe(draw, attrs, "mode", st.sampled_from(("max", "avg", "AVG")), 0.4)
    size = draw(st.sampled_from((1, 2, 2, 3)))
    if size == 1 or (w % size == 0 and h % size == 0 and w >= size and h >= size):
        if size != 2 or draw(st.booleans()):
            attrs["size"] = size
        out = (w // size, h // size)
    else:  # 'same' padding always gives ceil(W / S)
        attrs.update(size=size, stride=size, pad="same")
        out = (-(-w // size), -(-h // size))
    _maybe(draw, attrs, "count_pad", st.booleans(), 0.2)
    return Layer("pool", attrs, size == 1), (*out, d)


@st.composite
def valid_chain(draw, min_layers: int = 0, max_layers: int = 8):
    """(input volume, layers) of a sequential network whose every layer fits."""
    w = draw(st.sampled_from((1, 2, 4, 6, 8, 16, 32)))
    h = w if draw(st.booleans()) else draw(st.sampled_from((1, 3, 4, 8, 12)))
    volume = (w, h, draw(st.integers(1, 4)))
    start, layers, flat = volume, [], False
    for _ in range(draw(st.integers(min_layers, max_layers))):
        layer, volume = step_layer(draw, volume, flat)
        layers.append(layer)
        flat = flat or volume[:2] == (1, 1) and layer.op in ("fc", "gap", "flatten")
    return start, layers


def volume_value(draw, volume):
    w, h, d = volume
    return draw(st.sampled_from((f"{w}x{h}x{d}", [w, h, d], f"{w} x {h} X {d}")))


def pair_value(draw, value):
    """A normalised attribute as a spec may write it (pairs as 3, '3x5' or [3, 5])."""
    if isinstance(value, tuple):
        w, h = value
        forms = [f"{w}x{h}", [w, h]] + ([w] if w == h else [])
        return draw(st.sampled_from(forms))
    return value


def move_to_defaults(draw, layers: list[Layer]) -> tuple[Map | None, list[Layer]]:
    """Move settings that every layer of an op shares into ``defaults:`` (sometimes)."""
    if not layers or draw(st.booleans()):
        return None, layers
    section = []
    for op in sorted({layer.op for layer in layers}):
        mine = [layer for layer in layers if layer.op == op]
        shared = {k: v for k, v in mine[0].attrs.items()
                  if all(k in m.attrs and m.attrs[k] == v for m in mine)}
        keys = [k for k in shared if draw(st.booleans())]
        if not keys:
            continue
        section.append((written_op(draw, op) if draw(st.booleans()) else op,
                        Map(tuple((k, pair_value(draw, shared[k])) for k in keys))))
        for layer in mine:
            layer.attrs = {k: v for k, v in layer.attrs.items() if k not in keys}
    return (Map(tuple(section)) if section else None), layers


# ----------------------------------------------------------------------------- pattern text


def pattern_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"
    return str(value)


def layer_token(draw, layer: Layer, written: str | None = None) -> str:
    """``CONV(8, 3x3, pad=same)``: a prefix of the positional settings, the rest by name."""
    written = written or written_op(draw, layer.op)
    positional = REGISTRY[layer.op].positional
    prefix = 0
    while prefix < len(positional) and positional[prefix] in layer.attrs:
        prefix += 1
    used = draw(st.integers(0, prefix))
    args = [pattern_value(layer.attrs[k]) for k in positional[:used]]
    named = [k for k in layer.attrs if k not in positional[:used]]
    args += [f"{k}={pattern_value(layer.attrs[k])}" for k in draw(st.permutations(named))]
    if not args and draw(st.booleans()):
        return written
    space = draw(st.sampled_from(("", " ")))
    return f"{written}({(',' + space).join(args)})"


def pattern_text(draw, layers: list[Layer], first: str) -> str:
    """The layers as a pattern string, grouping runs of repeatable layers as ``[...]*N``."""
    parts, i = [], 0
    while i < len(layers):
        run = 0
        while i + run < len(layers) and layers[i + run].repeatable and run < 3:
            run += 1
        if run and draw(st.floats(0, 1)) < 0.3:
            size = draw(st.integers(1, run))
            body = "-".join(layer_token(draw, layer) for layer in layers[i:i + size])
            if draw(st.floats(0, 1)) < 0.3:
                body = f"[{body}]*1"
            parts.append(f"[{body}]*{draw(st.integers(1, 3))}")
            i += size
            continue
        token = layer_token(draw, layers[i])
        parts.append(token + ("?" if draw(st.floats(0, 1)) < 0.1 else ""))
        i += 1
    separator = draw(st.sampled_from(("-", "-", "->", " - ", " -> ")))
    text = separator.join([first] + parts)
    return f"[{text}]" if draw(st.floats(0, 1)) < 0.8 else text


def string_value(draw, text: str):
    """A string as plain/quoted text, or (sometimes) a block scalar or multi-line plain one."""
    if draw(st.floats(0, 1)) < 0.15:
        style = draw(st.sampled_from((">-", "|", "|-", ">", "plain")))
        if style != "plain" or text[:1].isalpha():
            return Folded(text, style)
    return text


def extras(draw) -> list:
    """Optional top-level keys every form may carry."""
    pairs = []
    if draw(st.floats(0, 1)) < 0.2:
        pairs.append(("name", draw(st.sampled_from(("net", "ünï", "a b", "x" * 80)))))
    if draw(st.floats(0, 1)) < 0.1:
        text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)
        pairs.append(("description", draw(text)))
    if draw(st.floats(0, 1)) < 0.15:
        train = {}
        _maybe(draw, train, "optimizer", st.sampled_from(("sgd", "adam", "adamw")), 0.5)
        _maybe(draw, train, "lr", st.floats(1e-4, 1), 0.5)
        _maybe(draw, train, "batch", st.integers(1, 256), 0.5)
        _maybe(draw, train, "betas", st.tuples(st.floats(0, 0.99), st.floats(0, 0.99)).map(list))
        _maybe(draw, train, "schedule", st.sampled_from(("constant", "step", "cosine")))
        pairs.append(("train", Map(tuple(train.items()))))
    return pairs


def shuffled(draw, pairs: list) -> Map:
    return Map(tuple(draw(st.permutations(pairs))))


# ============================================================================ random edits


def names_in(value, found: set) -> set:
    """Every key and string value of a tree: candidates for inputs, blocks and outputs."""
    if isinstance(value, Map):
        for key, item in value.pairs:
            if isinstance(key, str):
                found.add(key)
            names_in(item, found)
    elif isinstance(value, list):
        for item in value:
            names_in(item, found)
    elif isinstance(value, str) and len(value) < 40:
        found.add(value)
    return found


@st.composite
def any_value(draw, pool: tuple):
    kind = draw(st.integers(0, 5))
    if kind == 0 and pool:
        return draw(st.sampled_from(pool))
    if kind == 1 and pool:
        return draw(st.lists(st.sampled_from(pool), max_size=3))
    if kind == 2:
        return draw(st.integers(-2, 64))
    if kind == 3:
        return draw(st.sampled_from(("$filters", "$project", "$nope", "input", "in", "relu",
                                     "CONV(4, 3)", "[INPUT-RELU]", "x/y", "res1/c1")))
    return draw(bad_value())


@st.composite
def any_key(draw, pool: tuple):
    kind = draw(st.integers(0, 4))
    if kind == 0 and pool:
        return draw(st.sampled_from(pool))
    if kind == 1:
        return draw(st.sampled_from(PARAM_NAMES + ["op", "block", "inputs", "when", "name",
                                                   "params", "nodes", "output", "input"]))
    if kind == 2:
        return Raw(draw(st.sampled_from(HAZARD_KEYS)))
    if kind == 3:
        return draw(st.sampled_from(UNICODE_WORDS + ("filter", "kernel_size", "Filters")))
    return draw(st.text(min_size=1, max_size=8))


def mutate(draw, value, pool: tuple, depth: int = 0):
    """One random edit somewhere in the tree (descending with probability 0.7 per level)."""
    descend = depth < 12 and _nonempty_container(value) and draw(st.floats(0, 1)) < 0.7
    if isinstance(value, Map) and descend:
        pairs = list(value.pairs)
        i = draw(st.integers(0, len(pairs) - 1))
        key, item = pairs[i]
        action = draw(st.sampled_from(("into", "into", "into", "drop", "duplicate", "rekey",
                                       "insert", "swap")))
        if action == "into":
            pairs[i] = (key, mutate(draw, item, pool, depth + 1))
        elif action == "drop":
            del pairs[i]
        elif action == "duplicate":
            pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(any_value(pool))))
        elif action == "rekey":
            pairs[i] = (draw(any_key(pool)), item)
        elif action == "insert":
            pairs.insert(draw(st.integers(0, len(pairs))),
                         (draw(any_key(pool)), draw(any_value(pool))))
        else:
            j = draw(st.integers(0, len(pairs) - 1))
            pairs[i], pairs[j] = pairs[j], pairs[i]
        return Map(tuple(pairs))
    if isinstance(value, list) and descend:
        items = list(value)
        i = draw(st.integers(0, len(items) - 1))
        action = draw(st.sampled_from(("into", "into", "drop", "duplicate", "insert", "swap")))
        if action == "into":
            items[i] = mutate(draw, items[i], pool, depth + 1)
        elif action == "drop":
            del items[i]
        elif action == "duplicate":
            items.insert(i, items[i])
        elif action == "insert":
            items.insert(i, draw(any_value(pool)))
        else:
            j = draw(st.integers(0, len(items) - 1))
            items[i], items[j] = items[j], items[i]
        return items
    action = draw(st.integers(0, 5))
    if action == 0:
        prefix = draw(st.sampled_from(("&a", "&b", "!tag", "!!str", "!!map", "!!seq", "!<x>",
                                       "!!python/object/apply:os.system", "!!binary")))
        return Tagged(prefix, value)
    if action == 1:
        return Raw("*" + draw(st.sampled_from(("a", "b", "c"))))
    if action == 2 and isinstance(value, str) and value:
        return corrupt_text(draw, value)
    return draw(any_value(pool))


def mutated(draw, spec: Map, most: int = 3):
    pool = tuple(sorted(names_in(spec, set()), key=str))
    for _ in range(draw(st.integers(0, most))):
        spec = mutate(draw, spec, pool)
    return spec


PATTERN_NOISE = ("[", "]", "(", ")", "*", "-", "->", ",", "=", "?", ">", " ", "\t", "\n", "x",
                 "0", "1", "9", ".", "e", "_", "a", "Z", "[[", "]]", "*0", "*-1", "*1001", "*2.5",
                 "*3x3", "*", "**", "*" + "9" * 20, "()", "(,)", "(=)", "é", "→", "—", "\u2028",
                 "\\", "'", '"', "#", ":", ": ", "{", "}", "!", "&", "%", "@", "`")


def corrupt_text(draw, text: str) -> str:
    """1-3 character-level edits: insertions of grammar noise, deletions, duplications."""
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.integers(0, 3))
        if action == 0:
            text = text[:pos] + draw(st.sampled_from(PATTERN_NOISE)) + text[pos:]
        elif action == 1:
            text = text[:pos] + text[pos + draw(st.integers(1, 4)):]
        elif action == 2:
            end = draw(st.integers(pos, len(text)))
            text = text[:pos] + text[pos:end] * 2 + text[end:]
        else:
            text = text[:pos]
    return text


# ============================================================================ the generators


@st.composite
def pattern_specs(draw):
    volume, layers = draw(valid_chain())
    defaults, layers = move_to_defaults(draw, layers)
    pairs = extras(draw)
    if draw(st.floats(0, 1)) < 0.25:
        first = f"{written_op(draw, 'input')}({volume[0]}x{volume[1]}x{volume[2]})"
    else:
        first = written_op(draw, "input")
        pairs.append(("input", volume_value(draw, volume)))
    text = pattern_text(draw, layers, first)
    if draw(st.floats(0, 1)) < 0.15:
        text = corrupt_text(draw, text)
    pairs.append(("pattern", string_value(draw, text)))
    if defaults is not None:
        pairs.append(("defaults", defaults))
    if draw(st.floats(0, 1)) < 0.1:
        pairs.append(("rounding", draw(st.sampled_from(("exact", "floor", "ceil")))))
    return emit(mutated(draw, shuffled(draw, pairs)), draw(st.randoms(use_true_random=False)))


@st.composite
def grammar_item(draw, depth: int):
    if depth < 20 and draw(st.floats(0, 1)) < 0.25:
        inner = draw(st.lists(grammar_item(depth + 1), min_size=1, max_size=3))
        text = "[" + draw(st.sampled_from(("-", "->"))).join(inner) + "]"
    else:
        text = draw(grammar_layer())
    if draw(st.floats(0, 1)) < 0.1:
        text += "?"
    if draw(st.floats(0, 1)) < 0.3:
        count = draw(st.one_of(st.integers(0, 4).map(str), st.sampled_from(
            ("1000", "1001", "0", "-1", "2.5", "3x3", "1e3", "", "a", "99999999999999"))))
        text += "*" + count
    return text


@st.composite
def grammar_layer(draw):
    name = draw(st.one_of(
        st.sampled_from(known_op_names()).map(lambda n: n.upper() if len(n) % 2 else n),
        st.sampled_from(("foo", "CONVV", "Relu2", "_", "x", "INPUT", "input")),
        st.sampled_from(UNICODE_WORDS),
    ))
    if draw(st.booleans()):
        return name
    args = draw(st.lists(grammar_argument(), max_size=5))
    return f"{name}({', '.join(args)})"


@st.composite
def grammar_argument(draw):
    value = draw(st.one_of(
        st.integers(0, 40).map(str),
        st.sampled_from(("3x3", "5x3", "32x32x3", "0.5", "1e-3", "1e400", "1.", "2x0", "same",
                         "valid", "avg", "max", "true", "false", "depthwise", "floor", "ceil",
                         "foo", "-1", "x")),
        huge_digits(signed=False),
    ))
    if draw(st.booleans()):
        key = draw(st.sampled_from(PARAM_NAMES + ["foo", "name", "Filters"]))
        return f"{key}={value}"
    return value


@st.composite
def grammar_specs(draw):
    items = draw(st.lists(grammar_item(0), min_size=0, max_size=6))
    if draw(st.floats(0, 1)) < 0.7:
        items.insert(0, "INPUT")
    text = draw(st.sampled_from(("-", "->", " - "))).join(items)
    if draw(st.floats(0, 1)) < 0.7:
        text = f"[{text}]"
    if draw(st.floats(0, 1)) < 0.6:
        text = corrupt_text(draw, text)
    if draw(st.floats(0, 1)) < 0.1:
        depth = draw(st.integers(10, 30))
        text = "[" * depth + "INPUT-RELU" + "]" * draw(st.integers(depth - 2, depth + 2))
    pairs = [("input", draw(st.sampled_from(("8x8x3", "32x32x3", "1x1x1")))),
             ("pattern", string_value(draw, text) if text else text)]
    if draw(st.booleans()):
        pairs.append(("defaults", tree(conv=tree(filters=4, size=3, pad="same"),
                                       fc=tree(units=10), pool=tree(size=2))))
    if draw(st.booleans()):
        pairs.append(("rounding", "floor"))
    return emit(shuffled(draw, pairs), draw(st.randoms(use_true_random=False)))


def list_entry(draw, layer: Layer, index: int):
    """One layer-list entry in one of its spellings."""
    written = written_op(draw, layer.op, hyphens=True)
    attrs = {k: pair_value(draw, v) for k, v in layer.attrs.items()}
    positional = REGISTRY[layer.op].positional
    spellings = ["pattern", "op", "nested"]
    if not attrs:
        spellings += ["bare", "null"]
    if attrs and list(attrs) == list(positional[:len(attrs)]):
        spellings.append("positional")
    spelling = draw(st.sampled_from(spellings))
    named = draw(st.floats(0, 1)) < 0.2
    if spelling == "bare":  # parsed as a pattern: no hyphens
        return written_op(draw, layer.op)
    if spelling == "pattern":
        return layer_token(draw, layer)
    if spelling == "null":
        return Map(((written, None),))
    if spelling == "positional":
        values = [attrs[k] for k in attrs]
        return Map(((written, values[0] if len(values) == 1 and draw(st.booleans()) else values),))
    pairs = list(attrs.items()) + ([("name", f"layer_{index}")] if named else [])
    if spelling == "op":
        return Map((("op", written), *draw(st.permutations(pairs))))
    return Map(((written, Map(tuple(pairs))),))


@st.composite
def layer_specs(draw):
    volume, layers = draw(valid_chain(min_layers=1))
    defaults, layers = move_to_defaults(draw, layers)
    entries = [list_entry(draw, layer, i) for i, layer in enumerate(layers)]
    pairs = extras(draw)
    if entries and draw(st.floats(0, 1)) < 0.25:
        shape = volume_value(draw, volume)  # '- input: [w, h, d]' would be 3 positional values
        entries.insert(0, draw(st.sampled_from((
            Map(((written_op(draw, "input"), shape if isinstance(shape, str) else [shape]),)),
            Map((("op", "input"), ("shape", shape))),
        ))))
    else:
        pairs.append(("input", volume_value(draw, volume)))
    pairs.append(("layers", entries))
    if defaults is not None:
        pairs.append(("defaults", defaults))
    return emit(mutated(draw, shuffled(draw, pairs)), draw(st.randoms(use_true_random=False)))


def unit_block(draw) -> Map:
    """A ResNet-style block: two 'same' convs and a shortcut projected when $project."""
    formal = draw(st.sampled_from(("in", "x", "src")))
    nodes = [
        ("c1", tree(op="conv", filters="$filters", size=3, pad="same", inputs=[formal])),
        ("r1", "relu"),
        ("c2", tree(op="conv", filters="$filters", size=3, pad=1, bias=False)),
    ]
    if draw(st.booleans()):
        nodes.append(("bn", tree(op="batchnorm")))
    nodes += [
        ("proj", tree(op="conv", filters="$filters", size=1, inputs=[formal], when="$project")),
        ("sum", tree(op="add", inputs=[nodes[-1][0], "proj"])),
        ("out", draw(st.sampled_from(("relu", "RELU", tree(op="relu"))))),
    ]
    pairs = [("params", tree(filters=None, project=False)), ("nodes", Map(tuple(nodes)))]
    if formal != "in" or draw(st.booleans()):
        pairs.insert(1, ("inputs", draw(st.sampled_from(([formal], formal)))))
    if draw(st.booleans()):
        pairs.append(("output", "out"))
    return Map(tuple(pairs))


STAGE_BLOCK = tree(
    params=tree(filters=None),
    nodes=tree(u1=tree(block="unit", filters="$filters", project=True),
               u2=tree(block="unit", filters="$filters")),
)


def graph_node(draw, layer: Layer, inputs) -> object:
    """A graph node for ``layer`` reading ``inputs`` (None: the node above)."""
    written = written_op(draw, layer.op, hyphens=True)
    attrs = {k: pair_value(draw, v) for k, v in layer.attrs.items()}
    if inputs is None and draw(st.floats(0, 1)) < 0.3:
        return layer_token(draw, layer)
    pairs = [("op", written), *attrs.items()]
    if inputs is not None:
        pairs.append(("inputs", inputs if len(inputs) > 1 or draw(st.booleans()) else inputs[0]))
    return Map(tuple(draw(st.permutations(pairs))))


@st.composite
def graph_specs(draw):
    w = draw(st.sampled_from((1, 4, 8)))
    volume = (w, w, draw(st.integers(1, 4)))
    nodes, counter, blocks = [], iter(range(1000)), {}
    current = "input"
    pairs = extras(draw)
    if draw(st.floats(0, 1)) < 0.2:
        current = draw(st.sampled_from(("data", "image", "in0")))  # 'input' is refused
        nodes.append((current, tree(op="input", shape=volume_value(draw, volume))))
    else:
        pairs.append(("input", volume_value(draw, volume)))

    def add(name, node, out):
        nonlocal current, volume
        nodes.append((name, node))
        current, volume = name, out

    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(("chain", "chain", "residual", "concat", "block", "off")))
        if kind == "chain" or (kind in ("residual", "concat") and volume[:2] == (1, 1)):
            layer, out = step_layer(draw, volume, volume[:2] == (1, 1))
            explicit = [current] if draw(st.floats(0, 1)) < 0.3 else None
            add(f"{layer.op}{next(counter)}", graph_node(draw, layer, explicit), out)
        elif kind == "residual":
            source, (vw, vh, vd) = current, volume
            for _ in range(draw(st.integers(1, 2))):
                layer = draw(st.sampled_from((
                    Layer("conv", {"filters": vd, "size": (3, 3), "pad": "same"}),
                    Layer("relu", {}), Layer("batchnorm", {}))))
                add(f"b{next(counter)}", graph_node(draw, layer, None), volume)
            order = draw(st.permutations([current, source]))
            add(f"add{next(counter)}", tree(op=written_op(draw, "add"), inputs=order), volume)
        elif kind == "concat":
            source, (vw, vh, vd), ends, depth = current, volume, [], 0
            for _ in range(draw(st.integers(2, 3))):
                filters = draw(st.integers(1, 6))
                layer = Layer("conv", {"filters": filters, "size": (1, 1)})
                name = f"br{next(counter)}"
                nodes.append((name, graph_node(draw, layer, [source])))
                ends.append(name)
                depth += filters
            add(f"cat{next(counter)}", tree(op=written_op(draw, "concat"), inputs=ends),
                (vw, vh, depth))
        elif kind == "block":
            filters = draw(st.integers(1, 8))
            project = filters != volume[2] or draw(st.booleans())
            blocks["unit"] = blocks.get("unit") or unit_block(draw)
            if draw(st.booleans()):
                blocks["stage"] = STAGE_BLOCK
                add(f"stage{next(counter)}", tree(block="stage", filters=filters),
                    (*volume[:2], filters))
            else:
                node = [("block", "unit"), ("filters", filters)]
                if project or draw(st.booleans()):
                    node.append(("project", project))
                add(f"res{next(counter)}", Map(tuple(node)), (*volume[:2], filters))
        else:  # a node switched off passes its input through
            layer, _ = step_layer(draw, volume, volume[:2] == (1, 1))
            node = graph_node(draw, layer, [current] if draw(st.booleans()) else None)
            if isinstance(node, str):
                node = Map((("op", node.split("(")[0]),))
            add(f"off{next(counter)}", Map(node.pairs + (("when", False),)), volume)
    pairs.append(("nodes", Map(tuple(nodes))))
    if blocks:
        pairs.append(("blocks", Map(tuple(blocks.items()))))
    if draw(st.floats(0, 1)) < 0.2:
        pairs.append(("output", current))
    if draw(st.floats(0, 1)) < 0.1:
        pairs.append(("rounding", "floor"))
    return emit(mutated(draw, shuffled(draw, pairs)), draw(st.randoms(use_true_random=False)))


def garbage(max_leaves: int = 12):
    """Random YAML trees: any scalar or hazard, lists, mappings (duplicate keys too), tags."""
    leaves = st.one_of(
        bad_value(),
        st.integers(-(10**12) + 1, 10**12 - 1),
        st.text(max_size=20),
        st.sampled_from(("8x8x3", "[INPUT-RELU]", "relu", "conv", "input", "same")),
    )
    keys = st.one_of(st.sampled_from(("input", "pattern", "layers", "nodes", "blocks", "op",
                                      "defaults", "train", "conv", "filters", "inputs")),
                     st.text(min_size=1, max_size=10),
                     st.sampled_from(HAZARD_KEYS).map(Raw))

    def extend(children):
        return st.one_of(
            st.lists(children, max_size=4),
            st.lists(st.tuples(keys, children), max_size=4).map(lambda p: Map(tuple(p))),
            st.builds(Tagged, st.sampled_from(("!t", "&a", "!!seq", "!!map")), children),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def nested(depth: int, kind: str):
    value = "x"
    for _ in range(depth):
        value = [value] if kind == "list" else tree(k=value)
    return value


@st.composite
def structure_specs(draw):
    top = ("name", "description", "input", "rounding", "defaults", "pattern", "layers", "nodes",
           "blocks", "output", "train")
    pairs = []
    for _ in range(draw(st.integers(0, 6))):
        key = draw(st.one_of(st.sampled_from(top), st.sampled_from(HAZARD_KEYS).map(Raw),
                             st.sampled_from(UNICODE_WORDS), st.text(min_size=1, max_size=6)))
        pairs.append((key, draw(garbage())))
    if draw(st.booleans()):  # a valid core keeps the checks going past the first key
        pairs += [("input", "8x8x3"), ("pattern", "[INPUT-RELU]")]
    kind = draw(st.integers(0, 9))
    if kind == 0:  # nesting around the limit (32 levels)
        depth = draw(st.integers(28, 40))
        pairs.append((draw(st.sampled_from(top)), nested(depth, draw(st.sampled_from(
            ("list", "map"))))))
    elif kind == 1:
        depth = draw(st.integers(25, 200))
        pairs.append(("train", Raw("[" * depth + "]" * draw(st.integers(0, depth)))))
    elif kind == 2:
        top_value = draw(st.one_of(garbage(), st.text(max_size=20)))
        return emit(top_value, draw(st.randoms(use_true_random=False)))
    elif kind == 3:  # a huge file, or a huge string that still fits
        size = draw(st.sampled_from((100_000, (1 << 20) - 40, (1 << 20) + 1)))
        pairs.append(("description", Raw("x" * size)))
    spec = shuffled(draw, pairs)
    text = emit(spec, draw(st.randoms(use_true_random=False)))
    wrap = draw(st.integers(0, 9))
    if wrap == 0:
        text = "---\n" + text + "---\n" + draw(st.sampled_from(("a: 1\n", "", "...\n")))
    elif wrap == 1:
        text = draw(st.sampled_from(("%YAML 1.1\n---\n", "%YAML 1.2\n---\n", "%TAG ! tag:x,1:\n"
                                     "---\n", "%FOO bar\n---\n", "--- \n"))) + text
    elif wrap == 2:
        text += "...\n" + draw(st.sampled_from(("", "# end\n", "x\n")))
    elif wrap == 3:
        text = text.replace("\n", draw(st.sampled_from(("\r\n", "\r", "\u2028", "\x85"))))
    elif wrap == 4:
        text = "\ufeff" + text
    elif wrap == 5:
        text = text.replace("  ", "\t", 1)
    return text


def _seed_texts() -> list[str]:
    texts = [path.read_text(encoding="utf-8") for path in sorted((ROOT / "specs").glob("*.yaml"))]
    texts += [
        'input: 8x8x3\npattern: "[INPUT-[CONV(4, 3, pad=same)-RELU]*2-POOL-FC(10)]"\n',
        "input: 8x8x3\nlayers:\n  - conv: {filters: 4, size: 3}\n  - relu\n  - fc: 10\n",
        "nodes:\n  in: {op: input, shape: 8x8x3}\n  a: {op: conv, filters: 3, size: 1}\n"
        "  b: {op: add, inputs: [a, in]}\n",
        "input: 4x4x2\npattern: >-\n  [INPUT-CONV(2, 3x3, pad=1)-\n  RELU-GAP]\n",
    ]
    return texts


SEED_TEXTS = _seed_texts()
BYTE_NOISE = (b"[", b"]", b"{", b"}", b":", b",", b"-", b"&", b"*", b"!", b"|", b">", b"'", b'"',
              b"#", b"%", b"@", b"`", b"\t", b"\r", b"\n", b"\x00", b"\x1b", b"\x7f", b"\xff",
              b"\xfe", b"\xef\xbb\xbf", b"\xc3", b"\xc3\x28", b"\xe2\x80\xa8", b"\xc2\x85",
              b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b" ", b"  ", b"? ", b"- ", b"<<: ", b"---\n",
              b"..", b"0", b"9" * 13, b"x")


@st.composite
def byte_specs(draw):
    source = draw(st.one_of(st.sampled_from(SEED_TEXTS), pattern_specs(), layer_specs(),
                            graph_specs()))
    data = bytearray(source.encode("utf-8"))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.integers(0, 5))
        if action == 0:
            data[pos:pos] = draw(st.sampled_from(BYTE_NOISE))
        elif action == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif action == 2:
            del data[pos:pos + draw(st.integers(1, 16))]
        elif action == 3 and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == 4:
            end = draw(st.integers(pos, min(len(data), pos + 40)))
            data[pos:pos] = data[pos:end]
        else:
            del data[pos:]
    return bytes(data)


def yaml_bomb(levels: int, width: int) -> str:
    lines = ["a: &a [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        name, previous = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * width) + "]")
    return "\n".join(lines) + "\n"


def block_bomb(levels: int, width: int, switched_off: bool) -> str:
    """Blocks instantiating blocks: width ** levels layers from a few lines."""
    leaf = "{op: relu, when: false}" if switched_off else "relu"
    lines = ["input: 4x4x2", "blocks:", "  b0:", "    nodes:", f"      r: {leaf}"]
    for i in range(1, levels + 1):
        lines += [f"  b{i}:", "    nodes:"]
        lines += [f"      n{j}: {{block: b{i - 1}}}" for j in range(width)]
    lines += ["nodes:", f"  top: {{block: b{levels}}}", "  last: relu"]
    return "\n".join(lines) + "\n"


@st.composite
def bomb_specs(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        text = yaml_bomb(draw(st.integers(1, 9)), draw(st.integers(1, 9)))
        return text + draw(st.sampled_from(("", 'input: 8x8x3\npattern: "[INPUT-RELU]"\n')))
    if kind == 1:
        levels, width = draw(st.sampled_from(((1, 2), (2, 3), (3, 4), (4, 10), (6, 10), (8, 10),
                                              (9, 2), (3, 30), (5, 6), (7, 4))))
        return block_bomb(levels, width, draw(st.booleans()))
    if kind == 2:
        counts = draw(st.lists(st.sampled_from((0, 1, 2, 10, 100, 999, 1000)), min_size=1,
                               max_size=6))
        text = "RELU"
        for count in counts:
            text = f"[{text}]*{count}"
        return f'input: 4x4x2\npattern: "[INPUT-{text}]"\n'
    return alias_chain(draw(st.integers(1, 1500)), draw(st.sampled_from((0, 1, 3, 300, 700))))


def alias_chain(length: int, readers: int) -> str:
    """A chain of switched-off nodes (each stands for the one above), read by ``readers`` nodes."""
    lines = ["input: 4x4x2", "nodes:"]
    lines += [f"  n{i}: {{op: relu, when: false}}" for i in range(length)]
    lines += [f"  m{i}: {{op: relu, inputs: n{length - 1}}}" for i in range(readers)]
    return "\n".join(lines) + "\n"


EXTREME_INTS = (0, 1, 2, 3, 999983, MAX_SIZE // 2, MAX_SIZE - 1, MAX_SIZE, MAX_SIZE + 1,
                10**11, 10**12 - 1)


@st.composite
def extreme_specs(draw):
    ints = st.sampled_from(EXTREME_INTS)
    big = st.one_of(ints, huge_digits().map(Raw))
    volume = [draw(st.sampled_from((1, 2, 999983, MAX_SIZE - 1, MAX_SIZE))) for _ in range(3)]
    conv = {"filters": draw(big), "size": [draw(ints), draw(ints)],
            "stride": [draw(ints), draw(ints)], "pad": [draw(ints), draw(ints)]}
    if draw(st.booleans()):
        conv["dilation"] = [draw(ints), draw(ints)]
    pool = {"size": draw(ints), "stride": draw(ints), "pad": draw(ints)}
    layers = [tree(conv=Map(tuple(conv.items()))), tree(pool=Map(tuple(pool.items()))),
              tree(fc=draw(big)), tree(concat=None), "flatten", Map((("dropout", draw(big)),))]
    layers = draw(st.lists(st.sampled_from(layers), min_size=1, max_size=4))
    spec = tree(input=volume, layers=layers)
    if draw(st.booleans()):
        spec = Map(spec.pairs + (("rounding", draw(st.sampled_from(("floor", "ceil")))),))
    if draw(st.floats(0, 1)) < 0.3:
        digits = draw(huge_digits())
        pattern = draw(st.sampled_from((f"[INPUT-CONV({digits}, 3)]", f"[INPUT-[RELU]*{digits}]",
                                        f"[INPUT-FC({digits})]", f"[INPUT-DROPOUT({digits}.5)]",
                                        f"[INPUT-CONV(4, {digits}x3)]")))
        spec = tree(input="8x8x3", pattern=pattern)
    return emit(spec, draw(st.randoms(use_true_random=False)))


# ============================================================================ checking

STATS: dict = {
    "examples": 0, "compiled": 0, "rejected": 0, "tracebacks": 0, "badly_located": 0,
    "column_past_line_end": 0,  # informational: a located error whose column is past its line
    "seconds": 0.0, "slowest": {"seconds": 0.0, "generator": None},
    "by_generator": {}, "errors": Counter(),
}
LOCATED = re.compile(r"(\d+):(\d+): ")
YAML_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def error_family(message: str) -> str:
    """A message with its location, names and numbers taken out, to count kinds of error."""
    text = LOCATED.sub("", message.split(": ", 1)[-1], count=1)
    text = re.sub(r"^layer '[^']*': ", "", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    return re.sub(r"[0-9]+", "N", text)[:60]


def run_check(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["check", str(path)])
    return status, out.getvalue(), err.getvalue()


def record(generator: str, outcome: str, seconds: float, message: str = "") -> None:
    STATS["examples"] += 1
    STATS[outcome] += 1
    STATS["seconds"] += seconds
    STATS["by_generator"].setdefault(generator, Counter())[outcome] += 1
    if message:
        STATS["errors"][error_family(message)] += 1
    if seconds > STATS["slowest"]["seconds"]:
        STATS["slowest"] = {"seconds": round(seconds, 3), "generator": generator}


def check_spec(content: str | bytes, directory: Path, generator: str) -> None:
    """The property: compiles (and check exits 0), or one located SpecError (and exit 2)."""
    raw = content if isinstance(content, bytes) else content.encode("utf-8")
    path = directory / FILE_NAMES[len(raw) % len(FILE_NAMES)]
    path.write_bytes(raw)
    text = raw.decode("utf-8", errors="replace")
    start = time.perf_counter()
    try:
        analyse(path)
        message = None
    except SpecError as exc:
        message = str(exc)
    except Exception:
        record(generator, "tracebacks", time.perf_counter() - start)
        raise
    status, out, err = run_check(path)
    seconds = time.perf_counter() - start
    if status == 70 or "Traceback (most recent call last)" in err:
        record(generator, "tracebacks", seconds)
        pytest.fail(f"convgraph check crashed (exit {status}): {err}")
    if message is None:
        record(generator, "compiled", seconds)
        assert status == 0, err
        assert out.startswith(f"ok   {path}: "), (out, err)
        assert all(line.startswith("convgraph: warning: ") for line in err.splitlines()), err
        return
    problem = location_problem(message, path, text)
    # check prints the message with control characters escaped (convgraph.display.shown)
    if problem is None and not (status == 2 and err == f"FAIL {shown(message)}\n"
                                and out == ""):
        problem = f"check exited {status} printing {err!r} (stdout {out!r})"
    if problem is None and len(err.splitlines()) != 1:
        problem = f"the error is not one line: {err!r}"
    if problem is not None:
        record(generator, "badly_located", seconds, message)
        pytest.fail(f"{problem}\nspec: {content[:2000]!r}")
    record(generator, "rejected", seconds, message)


def location_problem(message: str, path: Path, text: str) -> str | None:
    """Why ``message`` does not start with ``PATH:LINE:COLUMN:`` inside the file, or None."""
    prefix = f"{path}:"
    if not message.startswith(prefix):
        return f"the error does not start with {prefix!r}: {message!r}"
    match = LOCATED.match(message, len(prefix))
    if match is None:
        return f"the error has no LINE:COLUMN: {message!r}"
    line, column = int(match.group(1)), int(match.group(2))
    lines = len(text.splitlines())
    if not (1 <= line <= lines + 1 and column >= 1):
        return f"line {line}, column {column} is outside the file ({lines} lines): {message!r}"
    yaml_lines = YAML_LINE_BREAK.split(text)  # as PyYAML numbers them
    if line > len(yaml_lines) or column > len(yaml_lines[line - 1]) + 1:
        STATS["column_past_line_end"] += 1
        if len(STATS.setdefault("column_samples", [])) < 10:
            STATS["column_samples"].append(message[:200])
    return None


# ============================================================================ the tests

# name -> (strategy, weight in the long run, examples in the default run, regressions): each
# regression is a spec that once broke convgraph (exit 70, a hang, or an error on two lines).
GENERATORS = {
    "pattern": (pattern_specs(), 16, 60, [
        # 5,000-digit numbers in a pattern: int() raised ValueError (exit 70)
        'input: 8x8x3\npattern: "[INPUT-CONV(' + "9" * 5000 + ', 3)]"\n',
        'input: 8x8x3\npattern: "[INPUT-[RELU]*' + "1" * 5000 + ']"\n',
    ]),
    "grammar": (grammar_specs(), 14, 60, []),
    "layers": (layer_specs(), 14, 60, [
        # a leading-zero integer of 5,000 digits: the hint's int() raised ValueError (exit 70)
        "input: 8x8x3\nlayers:\n  - fc: 0" + "7" * 5000 + "\n",
    ]),
    "graph": (graph_specs(), 18, 70, [
        # a block with 'nodes: {}': IndexError when choosing its output (exit 70)
        "input: 8x8x3\nblocks:\n  b:\n    nodes: {}\nnodes:\n  x: {block: b}\n",
        # the input node switched off by 'when: false': IndexError, no input at all (exit 70)
        "nodes:\n  i: {op: input, shape: 8x8x3, when: false}\n",
        # an op written with a line break: the error took two lines of stderr
        'input: 8x8x3\nnodes:\n  a: {op: "re\\nlu"}\n',
    ]),
    "structure": (structure_specs(), 12, 60, [
        # a key holding a Unicode line separator: the error took two lines of stderr
        'input: 8x8x3\npattern: "[INPUT-RELU]"\n"\\u2028": 1\n',
    ]),
    "bytes": (byte_specs(), 14, 60, []),
    "bombs": (bomb_specs(), 4, 20, [
        # 10**7 layers from 80 lines of nested blocks: never finished
        block_bomb(7, 10, False),
        block_bomb(7, 10, True),
        # every reader walked the whole chain of aliases, remembering it in a list: cubic
        # (1,000 + 1,000 nodes took 7.5 s, 4,000 + 4,000 did not finish in minutes)
        alias_chain(700, 700),
    ]),
    "extremes": (extreme_specs(), 8, 30, [
        # the 'not a whole number' hint tried 5 million paddings and strides (0.5 s a message)
        "input: 1048576x1x1\nlayers:\n  - conv: {filters: 1, size: [4, 1], "
        "dilation: [1048575, 1], pad: [1048576, 0], stride: [1048576, 1]}\n",
    ]),
}
LONG_RUN = int(os.environ.get("CONVGRAPH_FUZZ_EXAMPLES") or 10_000)


def fuzz(generator: str, examples: int, directory: Path) -> None:
    """Run the property over ``examples`` specs of one generator (plus its regressions)."""
    strategy, _, _, regressions = GENERATORS[generator]

    def spec_compiles_or_fails_located(content):
        check_spec(content, directory, generator)

    spec_compiles_or_fails_located.__name__ = f"fuzz_{generator.replace('-', '_')}"
    test = given(strategy)(spec_compiles_or_fails_located)
    for case in regressions:
        test = example(case)(test)
    settings(
        max_examples=examples,
        deadline=BOMB_DEADLINE_MS if generator == "bombs" else DEADLINE_MS,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.large_base_example],
        print_blob=True,
    )(test)()


@pytest.mark.parametrize("generator", list(GENERATORS))
def test_specs_compile_or_fail_with_a_location(generator, tmp_path):
    fuzz(generator, GENERATORS[generator][2], tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(max(600, LONG_RUN // 4))
@pytest.mark.parametrize("generator", list(GENERATORS))
def test_specs_compile_or_fail_with_a_location_long(generator, tmp_path):
    weights = sum(weight for _, weight, _, _ in GENERATORS.values())
    share = -(-LONG_RUN * GENERATORS[generator][1] // weights)
    fuzz(generator, share, tmp_path)


@pytest.fixture(scope="module", autouse=True)
def fuzz_report(request):
    """After the module: print the counts, and write them as JSON to $CONVGRAPH_FUZZ_REPORT."""
    yield
    if not STATS["examples"]:
        return
    summary = (
        f"spec fuzzing: {STATS['examples']} specs, {STATS['compiled']} compiled, "
        f"{STATS['rejected']} rejected with a located error, {STATS['tracebacks']} tracebacks, "
        f"{STATS['badly_located']} badly located errors, {STATS['seconds']:.1f} s checking"
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(summary)
    target = os.environ.get("CONVGRAPH_FUZZ_REPORT")
    if target:
        report = {key: STATS[key] for key in ("examples", "compiled", "rejected", "tracebacks",
                                              "badly_located", "column_past_line_end", "slowest")}
        report["column_past_line_end_samples"] = STATS.get("column_samples", [])
        report["seconds"] = round(STATS["seconds"], 2)
        report["by_generator"] = {k: dict(v) for k, v in STATS["by_generator"].items()}
        report["errors"] = dict(STATS["errors"].most_common(40))
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(report, indent=2) + "\n")
