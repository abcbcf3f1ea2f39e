"""Strict YAML loading for untrusted specs, keeping the line:column of every value.

PyYAML's loaders are unsafe in ways that matter for a file format users copy around: aliases expand
into shared structures (alias bombs), duplicate keys silently keep the last, YAML 1.1 turns ``no``
into False, ``1:30`` into 90 and ``010`` into 8, and deep nesting raises a bare RecursionError.
So we never construct with PyYAML: we walk its *event* stream (a flat, iterative parse that runs no
code) and build plain dicts, lists and scalars ourselves, with the YAML 1.2 core schema, rejecting
anchors, aliases, tags, merge keys, duplicate and non-string keys with a located SpecError.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import yaml

from convgraph.errors import Location, SpecError

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_INT_DIGITS = 12
# the fix for a spec that is empty or not a mapping: the smallest spec there is
STARTER = ('start from e.g. input: 32x32x3 and pattern: "[INPUT-CONV-RELU-POOL-FC]" (see specs/ '
           "for examples).")

_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_LEADING_ZERO_INT = re.compile(r"[-+]?0[0-9]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_NON_FINITE = re.compile(r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
_SEXAGESIMAL = re.compile(r"[-+]?[0-9]+(:[0-5]?[0-9])+(\.[0-9]*)?")


@dataclass(frozen=True)
class TextLocation(Location):
    """Where a multi-line string value starts, plus where each of its characters stands.

    A folded (``>-``) or wrapped pattern continues on later lines, so ``shifted(n)`` looks up the
    n-th character rather than counting columns along the first line.
    """

    places: tuple = field(default=(), compare=False, repr=False)

    def shifted(self, columns: int) -> Location:
        if 0 <= columns < len(self.places):
            line, column = self.places[columns]
            return Location(self.file, line, column)
        return super().shifted(columns)


class YamlMap(dict):
    """A mapping that remembers where it, each key and each value stood in the file."""

    def __init__(self, location: Location):
        super().__init__()
        self.location = location
        self.key_locations: dict[str, Location] = {}
        self.value_locations: dict[str, Location] = {}

    def where(self, key: str) -> Location:
        """Location of the value under ``key`` (or of the mapping itself if the key is absent)."""
        return self.value_locations.get(key, self.location)

    def where_key(self, key: str) -> Location:
        return self.key_locations.get(key, self.location)


class YamlList(list):
    """A sequence that remembers where it and each item stood in the file."""

    def __init__(self, location: Location):
        super().__init__()
        self.location = location
        self.item_locations: list[Location] = []

    def where(self, index: int) -> Location:
        if 0 <= index < len(self.item_locations):
            return self.item_locations[index]
        return self.location


def _yaml_hint(exc) -> str:
    """A fix for PyYAML's syntax errors, from what it says went wrong."""
    problem = f"{exc.problem or ''} {exc.context or ''}"
    start = exc.context_mark
    since = f" (it starts at line {start.line + 1}, column {start.column + 1})" if start else ""
    if "'\\t'" in problem:
        return "indent with spaces: YAML does not allow tabs."
    if "expected ',' or ']'" in problem:
        return f"close the list with ']'{since}, and separate its items with ','."
    if "expected ',' or '}'" in problem:
        return f"close the mapping with '}}'{since}, and separate its entries with ','."
    if "<block end>" in problem:
        return "indent this line as far as the other keys of its mapping (spaces only)."
    if "mapping values are not allowed" in problem:
        return "quote the value: ': ' inside a plain value starts a mapping."
    if "could not find expected ':'" in problem:
        return "write each entry as 'key: value' (with a space after the ':'), or quote the text."
    if "found character" in problem or "found undefined" in problem:
        return "quote the value: text starting with '@', '`', '%', '*', '&' or '!' needs quotes."
    if "quoted scalar" in problem:
        return "close the quote that starts here."
    return ("check this line and the one above; quote text that holds ': ', ' #', '[' or '{', "
            "and indent with spaces.")


def load_yaml_text(text: str, filename: str = "<spec>"):
    """Parse ``text`` as one YAML document of plain data; raise SpecError on anything else.

    >>> load_yaml_text("a: [1, 2x2]")["a"]
    [1, '2x2']
    """
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise SpecError(
            f"the spec is larger than {MAX_FILE_BYTES // 1024} KiB; a network description never "
            "needs that much, so it is refused rather than parsed.",
            location=Location(filename, 1, 1),
            hint="a spec describes a network only: keep data and weights in their own files.",
        )
    if not text.strip():
        raise SpecError(
            "the spec is empty: expected a mapping with 'input' and one of 'pattern', 'layers' "
            "or 'nodes'.",
            location=Location(filename, 1, 1),
            hint=STARTER,
        )
    try:
        return _build(yaml.parse(text, Loader=yaml.SafeLoader), filename, text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(filename, mark.line + 1, mark.column + 1) if mark else None
        problem = exc.problem or exc.context or "malformed YAML"
        if exc.problem and exc.context and exc.context_mark and exc.problem_mark:
            start = exc.context_mark
            problem += f" ({exc.context} that starts at line {start.line + 1}, column "
            problem += f"{start.column + 1})"
        raise SpecError(f"this is not valid YAML: {problem}.", location=where,
                        hint=_yaml_hint(exc)) from None
    except yaml.reader.ReaderError as exc:  # a control character, anywhere in the text
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise SpecError(
            f"this is not valid YAML: character #x{exc.character:02x} is not allowed "
            f"({exc.reason}).",
            location=Location(filename, line, column),
            hint="remove it, or write it as an escape such as \\t inside double quotes.",
        ) from None
    except yaml.YAMLError as exc:  # unmarked reader errors, e.g. control characters
        raise SpecError(
            f"this is not valid YAML: {exc}", location=Location(filename, 1, 1),
            hint="save the spec as plain UTF-8 text, without control characters."
        ) from None


def load_yaml_file(path) -> object:
    """Read and parse a spec file; missing, unreadable or non-UTF-8 files get a SpecError."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(
            f"cannot read the spec file: {exc.strerror or exc}.", location=Location(name, 1, 1),
            hint="give the path of a .yaml spec you can read."
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(
            f"the spec is larger than {MAX_FILE_BYTES // 1024} KiB; a network description never "
            "needs that much, so it is refused rather than parsed.",
            location=Location(name, 1, 1),
            hint="a spec describes a network only: keep data and weights in their own files.",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        before = raw[raw.rfind(b"\n", 0, exc.start) + 1 : exc.start]  # valid UTF-8 up to here
        raise SpecError(
            f"the spec is not UTF-8 text (byte 0x{raw[exc.start]:02x}).",
            location=Location(name, line, len(before.decode("utf-8")) + 1),
            hint="save the file as UTF-8.",
        ) from None
    return load_yaml_text(text, name)


def _location(filename: str, mark) -> Location:
    return Location(filename, mark.line + 1, mark.column + 1)


def _reject_anchor_and_tag(event, filename: str) -> None:
    anchor = getattr(event, "anchor", None)
    if anchor is not None:
        raise SpecError(
            f"YAML anchors ('&{anchor}') are not allowed in specs: they expand into shared "
            "structures that can explode in size.",
            location=_location(filename, event.start_mark),
            hint="write the values out, or define a reusable block under 'blocks:'.",
        )
    tag = getattr(event, "tag", None)
    if tag is not None:
        raise SpecError(
            f"YAML tags ({tag!r}) are not allowed in specs; values are plain data.",
            location=_location(filename, event.start_mark),
            hint="remove the tag, and quote the value if it must stay a string.",
        )


def _build(events, filename: str, text: str = ""):
    """Turn a PyYAML event stream into YamlMap/YamlList/scalars, iteratively."""
    stack: list = []  # open containers; a YamlMap is paired with its pending key
    pending_key: list = []
    root = None
    documents = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            raise SpecError(
                f"YAML aliases ('*{event.anchor}') are not allowed in specs: they can expand "
                "into exponentially large structures.",
                location=_location(filename, event.start_mark),
                hint="write the values out, or define a reusable block under 'blocks:'.",
            )
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise SpecError(
                    "the spec holds more than one YAML document ('---'); one file describes "
                    "one network.",
                    location=_location(filename, event.start_mark),
                    hint="split the documents into separate files.",
                )
            continue
        if isinstance(event, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent)):
            continue
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            _reject_anchor_and_tag(event, filename)
            if len(stack) >= MAX_DEPTH:
                raise SpecError(
                    f"the spec nests deeper than {MAX_DEPTH} levels.",
                    location=_location(filename, event.start_mark),
                    hint="flatten the structure; a network spec needs only a few levels.",
                )
            loc = _location(filename, event.start_mark)
            container = YamlMap(loc) if isinstance(event, yaml.MappingStartEvent) else YamlList(loc)
            _attach(stack, pending_key, container, loc, filename)
            stack.append(container)
            pending_key.append(None)
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            done = stack.pop()
            pending_key.pop()
            if not stack:
                root = done
            continue
        if isinstance(event, yaml.ScalarEvent):
            _reject_anchor_and_tag(event, filename)
            loc = _location(filename, event.start_mark)
            if event.style in ("'", '"'):  # point at the text, not the quote
                loc = loc.shifted(1)
            value = _scalar(event, loc)
            if isinstance(value, str) and event.start_mark.line != event.end_mark.line:
                loc = TextLocation(loc.file, loc.line, loc.column, _places(text, event, value))
            if not stack:
                root = value
            else:
                _attach(stack, pending_key, value, loc, filename)
    return root


def _places(text: str, event, value: str) -> tuple:
    """(line, column) of each character of a multi-line string value, and of its end.

    Folding and indentation change only white space, so the value's other characters appear in
    the source in order; anything else (escapes in quoted strings) gives () and plain shifting.
    """
    mark = event.start_mark
    pos, line, column = mark.index, mark.line + 1, mark.column + 1
    if event.style in ("|", ">"):  # the content starts on the line after the '>-' header
        newline = text.find("\n", pos, event.end_mark.index)
        if newline < 0:
            return ()
        pos, line, column = newline + 1, line + 1, 1
    elif event.style in ("'", '"'):
        pos, column = pos + 1, column + 1
    places: list = []
    for char in value:
        if char.isspace():
            places.append(places[-1][:1] + (places[-1][1] + 1,) if places else (line, column))
            continue
        while pos < event.end_mark.index and text[pos] != char:
            if not text[pos].isspace():
                return ()
            line, column = (line + 1, 1) if text[pos] == "\n" else (line, column + 1)
            pos += 1
        if pos >= event.end_mark.index:
            return ()
        places.append((line, column))
        pos, column = pos + 1, column + 1
    places.append((line, column))
    return tuple(places)


def _attach(stack, pending_key, value, loc: Location, filename: str) -> None:
    if not stack:
        return
    parent = stack[-1]
    if isinstance(parent, YamlList):
        parent.append(value)
        parent.item_locations.append(loc)
        return
    key = pending_key[-1]
    if key is None:  # this value is a key
        if not isinstance(value, str):
            shown = "a mapping or list" if isinstance(value, (dict, list)) else repr(value)
            raise SpecError(
                f"mapping keys must be plain strings, got {shown}.",
                location=loc,
                hint="quote the key if it is meant as a name.",
            )
        if not value.isprintable():  # a line break would split the one-line error messages
            raise SpecError(
                f"the key {value!r} holds a line break, tab or other invisible character.",
                location=loc,
                hint="write keys as plain text on one line.",
            )
        if value == "<<":
            raise SpecError(
                "YAML merge keys ('<<') are not allowed in specs.",
                location=loc,
                hint="write the keys out, or define a reusable block under 'blocks:'.",
            )
        if value in parent:
            first = parent.key_locations[value]
            raise SpecError(
                f"duplicate key '{value}' (first given at line {first.line}); YAML would "
                "silently keep only the last one.",
                location=loc,
                hint=f"remove one of the two '{value}' entries.",
            )
        parent.key_locations[value] = loc
        pending_key[-1] = (value,)
        return
    (name,) = key
    parent[name] = value
    parent.value_locations[name] = loc
    pending_key[-1] = None


def _scalar(event, loc: Location):
    """Resolve a scalar with the YAML 1.2 core schema, rejecting the 1.1 surprises."""
    text = event.value
    if event.style is not None:  # quoted or block scalars are always strings
        return text
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if text.lower() in ("yes", "no", "on", "off", "y", "n"):
        raise SpecError(
            f"'{text}' is ambiguous: YAML 1.1 reads it as a boolean, YAML 1.2 as a string.",
            location=loc,
            hint="write true or false, or quote it if you mean the text.",
        )
    integer = _INT.fullmatch(text) or _LEADING_ZERO_INT.fullmatch(text)
    if integer and len(text.lstrip("+-")) > MAX_INT_DIGITS:  # int() refuses over 4,300 digits
        raise SpecError(
            f"the integer {text[:20]}... ({len(text)} digits) is too large to be a size "
            "or count.",
            location=loc,
            hint=f"sizes and counts have at most {MAX_INT_DIGITS} digits.",
        )
    if _LEADING_ZERO_INT.fullmatch(text):
        raise SpecError(
            f"'{text}' has a leading zero, which YAML 1.1 reads as octal "
            f"({int(text, 8) if set(text.lstrip('+-')) <= set('01234567') else 'invalid'}).",
            location=loc,
            hint=f"write {int(text)} or quote it.",
        )
    if _SEXAGESIMAL.fullmatch(text):
        raise SpecError(
            f"'{text}' is ambiguous: YAML 1.1 reads it as a base-60 number.",
            location=loc,
            hint="quote it if you mean the text.",
        )
    if _INT.fullmatch(text):
        return int(text)
    if _NON_FINITE.fullmatch(text):
        raise SpecError(
            f"'{text}' is not a finite number; spec values must be finite.", location=loc,
            hint="write a finite number (e.g. 0.5)."
        )
    if _FLOAT.fullmatch(text):
        value = float(text)
        if not math.isfinite(value):
            raise SpecError(
                f"'{text}' overflows a float; spec values must be finite.", location=loc,
                hint="write a finite number (floats reach about 1.8e308)."
            )
        return value
    return text
