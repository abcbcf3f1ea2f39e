"""YAML hazards: each is refused with a located error (exit 2), never a crash or a surprise value.

The strict loader (convgraph.spec.yamlload) builds plain data from PyYAML's event stream with the
YAML 1.2 core schema. Everything YAML 1.1 or PyYAML would silently reinterpret, expand or execute
is an error that points at the offending node, as ``FILE:LINE:COLUMN`` (1-based).
"""

from __future__ import annotations

import textwrap
import time

import pytest

from convgraph.cli import main
from convgraph.errors import Location, SpecError
from convgraph.spec.yamlload import MAX_DEPTH, MAX_FILE_BYTES, load_yaml_text

VALID_TAIL = 'pattern: "[INPUT-RELU]"\n'


def run_check(tmp_path, capsys, content):
    """Write ``content`` (dedented text, or raw bytes) to spec.yaml and run ``convgraph check``."""
    path = tmp_path / "spec.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    status = main(["check", str(path)])
    out, err = capsys.readouterr()
    return path, status, out, err


def assert_located(path, status, out, err, line, column, *phrases):
    assert status == 2, err
    assert out == ""
    assert "Traceback" not in err and "internal error" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one paragraph: {err!r}"
    assert err.startswith(f"FAIL {path}:{line}:{column}: "), err
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in {err!r}"


def bomb(levels: int = 9) -> str:
    """The billion laughs: each level holds nine aliases of the one before (9**levels leaves)."""
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        name, previous = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HAZARDS = [
    # -------------------------------------------------------- anchors, aliases, merge keys
    pytest.param(
        "input: &v 8x8x3\n" + VALID_TAIL,
        1, 8, ("YAML anchors ('&v') are not allowed", "define a reusable block under 'blocks:'"),
        id="anchor-on-scalar",
    ),
    pytest.param(
        """
        input: 8x8x3
        pattern: "[INPUT-CONV]"
        defaults:
          conv: &c {filters: 4, size: 1}
        """,
        4, 9, ("YAML anchors ('&c') are not allowed",),
        id="anchor-on-mapping",
    ),
    pytest.param(
        "input: 8x8x3\npattern: *p\n",
        2, 10, ("YAML aliases ('*p') are not allowed", "exponentially large"),
        id="alias",
    ),
    pytest.param(
        """
        input: 8x8x3
        pattern: "[INPUT-CONV]"
        defaults:
          conv: {filters: 4, <<: {size: 1}}
        """,
        4, 22, ("YAML merge keys ('<<') are not allowed", "write the keys out"),
        id="merge-key-flow",
    ),
    pytest.param(
        """
        input: 8x8x3
        defaults:
          conv:
            <<: *base
            size: 1
        pattern: "[INPUT-CONV(4)]"
        """,
        4, 5, ("YAML merge keys ('<<') are not allowed",),
        id="merge-key-with-alias",
    ),
    # -------------------------------------------------------- tags
    pytest.param(
        "input: !!python/object:os.system 8x8x3\n" + VALID_TAIL,
        1, 8, ("YAML tags ('tag:yaml.org,2002:python/object:os.system') are not allowed",
               "values are plain data"),
        id="tag-python-object",
    ),
    pytest.param(
        'input: 8x8x3\npattern: !!str "[INPUT-RELU]"\n',
        2, 10, ("YAML tags ('tag:yaml.org,2002:str') are not allowed",
                "quote the value if it must stay a string"),
        id="tag-str",
    ),
    pytest.param(
        "input: 8x8x3\nlayers: !!seq\n  - relu\n",
        2, 9, ("YAML tags ('tag:yaml.org,2002:seq')",),
        id="tag-on-sequence",
    ),
    pytest.param(
        "input: !vol 8x8x3\n" + VALID_TAIL,
        1, 8, ("YAML tags ('!vol') are not allowed",),
        id="local-tag",
    ),
    # -------------------------------------------------------- keys
    pytest.param(
        "input: 8x8x3\n" + VALID_TAIL + "input: 4x4x3\n",
        3, 1, ("duplicate key 'input' (first given at line 1)",
               "remove one of the two 'input' entries"),
        id="duplicate-top-level-key",
    ),
    pytest.param(
        """
        input: 8x8x3
        layers:
          - conv:
              filters: 4
              size: 1
              filters: 8
        """,
        6, 7, ("duplicate key 'filters' (first given at line 4)", "silently keep only the last"),
        id="duplicate-nested-key",
    ),
    pytest.param(
        "input: 8x8x3\n" + VALID_TAIL + "1: x\n",
        3, 1, ("mapping keys must be plain strings, got 1", "quote the key"),
        id="int-key",
    ),
    pytest.param(
        "input: 8x8x3\ntrue: x\n" + VALID_TAIL,
        2, 1, ("mapping keys must be plain strings, got True",),
        id="bool-key",
    ),
    pytest.param(
        "input: 8x8x3\n~: x\n" + VALID_TAIL,
        2, 1, ("mapping keys must be plain strings, got None",),
        id="null-key",
    ),
    pytest.param(
        "input: 8x8x3\n? [a]\n: x\n" + VALID_TAIL,
        2, 3, ("mapping keys must be plain strings, got a mapping or list",),
        id="list-key",
    ),
    # -------------------------------------------------------- size limits
    pytest.param(
        "input: 8x8x3\npattern: " + "[" * 1000 + "\n",
        2, 41, ("the spec nests deeper than 32 levels", "flatten the structure"),
        id="1000-nested-brackets",
    ),
    pytest.param(
        "input: 8x8x3\nx: " + "[" * 1000 + "]" * 1000 + "\n",
        2, 35, ("nests deeper than 32 levels",),
        id="1000-nested-closed-brackets",
    ),
    pytest.param(
        "input: 8x8x3\nx: " + "{a: " * 1000 + "}" * 1000 + "\n",
        2, 128, ("nests deeper than 32 levels",),  # the 32nd '{' is at 4 + 31 * 4
        id="1000-nested-mappings",
    ),
    pytest.param(
        "input: 8x8x3\nlayers:\n  - fc: " + "7" * 5000 + "\n",
        3, 9, ("the integer 77777777777777777777... (5000 digits) is too large",),
        id="5000-digit-integer",
    ),
    # -------------------------------------------------------- numbers YAML 1.1 reads differently
    pytest.param(
        "input: 8x8x3\nlayers:\n  - dropout: 1e999\n",
        3, 14, ("'1e999' overflows a float; spec values must be finite",),
        id="float-overflow",
    ),
    pytest.param(
        "input: 8x8x3\n" + VALID_TAIL + "train: {epochs: 1:30}\n",
        3, 17, ("'1:30' is ambiguous: YAML 1.1 reads it as a base-60 number", "quote it"),
        id="sexagesimal",
    ),
    pytest.param(
        "input: 8x8x3\n" + VALID_TAIL + "train: {epochs: 190:20:30}\n",
        3, 17, ("'190:20:30' is ambiguous",),
        id="sexagesimal-three-parts",
    ),
    pytest.param(
        "input: 8x8x3\n" + VALID_TAIL + "train: {epochs: 010}\n",
        3, 17, ("'010' has a leading zero, which YAML 1.1 reads as octal (8)",
                "write 10 or quote it"),
        id="leading-zero-octal",
    ),
    pytest.param(
        "input: 8x8x3\n" + VALID_TAIL + "train: {epochs: 09}\n",
        3, 17, ("'09' has a leading zero", "octal (invalid)", "write 9 or quote it"),
        id="leading-zero-not-octal",
    ),
    # -------------------------------------------------------- documents
    pytest.param(
        "input: 8x8x3\n" + VALID_TAIL + "---\ninput: 4x4x3\n",
        3, 1, ("more than one YAML document ('---')", "split the documents into separate files"),
        id="two-documents",
    ),
    pytest.param(
        "---\ninput: 8x8x3\n" + VALID_TAIL + "...\n---\n",
        5, 1, ("more than one YAML document",),
        id="explicit-documents",
    ),
    pytest.param("", 1, 1, ("the spec is empty",), id="empty-file"),
    pytest.param("  \n\t\n\n   \n", 1, 1, ("the spec is empty",), id="whitespace-only"),
    pytest.param("# a network, some day\n", 1, 1, ("the spec is empty",), id="comments-only"),
    # -------------------------------------------------------- encoding and characters
    pytest.param(
        b"input: 8x8x3\n" + VALID_TAIL.encode() + b"name: caf\xe9 net\n",
        3, 10, ("the spec is not UTF-8 text (byte 0xe9)", "save the file as UTF-8"),
        id="latin-1-byte",
    ),
    pytest.param(
        "input: 8x8x3\n".encode("utf-16"),
        1, 1, ("not UTF-8 text (byte 0xff)",),
        id="utf-16-file",
    ),
    pytest.param(
        'input: 8x8x3\npattern: "[INPUT-\x01RELU]"\n',
        2, 18, ("not valid YAML: character #x01 is not allowed",),
        id="control-character",
    ),
    # -------------------------------------------------------- broken YAML
    pytest.param(
        "input: 8x8x3\nlayers: [relu, relu\n",
        3, 1, ("not valid YAML: expected ',' or ']', but got '<stream end>'",
               "flow sequence that starts at line 2, column 9"),
        id="unclosed-bracket",
    ),
    pytest.param(
        """
        input: 8x8x3
        layers:
          - conv: {filters: 4, size: 1
          - relu
        """,
        5, 1, ("expected ',' or '}'", "flow mapping that starts at line 3, column 11"),
        id="unclosed-brace",
    ),
    pytest.param(
        "input: 8x8x3\n" + VALID_TAIL + "train:\n\tlr: 0.1\n",
        4, 1, ("not valid YAML: found character '\\t' that cannot start any token",),
        id="tab-indent",
    ),
    pytest.param(
        "input: 8x8x3\n" + VALID_TAIL + "  train: {}\n",
        3, 3, ("not valid YAML: expected <block end>",),
        id="bad-indent",
    ),
]


@pytest.mark.parametrize(("content", "line", "column", "phrases"), HAZARDS)
def test_yaml_hazard_is_refused_with_its_location(tmp_path, capsys, content, line, column,
                                                  phrases):
    path, status, out, err = run_check(tmp_path, capsys, content)
    assert_located(path, status, out, err, line, column, *phrases)


@pytest.mark.parametrize("word", ["no", "yes", "on", "off", "Yes", "NO", "Off", "y", "n"])
def test_yaml_1_1_booleans_are_ambiguous(tmp_path, capsys, word):
    path, status, out, err = run_check(
        tmp_path, capsys, "input: 8x8x3\n" + VALID_TAIL + f"train: {{flip: {word}}}\n"
    )
    assert_located(path, status, out, err, 3, 15,
                   f"'{word}' is ambiguous: YAML 1.1 reads it as a boolean",
                   "write true or false, or quote it")


@pytest.mark.parametrize("word", [".nan", ".NaN", ".inf", "-.inf", "+.Inf", ".INF"])
def test_non_finite_numbers_are_refused(tmp_path, capsys, word):
    path, status, out, err = run_check(
        tmp_path, capsys, f"input: 8x8x3\nlayers:\n  - dropout: {word}\n"
    )
    assert_located(path, status, out, err, 3, 14,
                   f"'{word}' is not a finite number; spec values must be finite")


def test_alias_bomb_is_refused_fast(tmp_path, capsys):
    text = bomb(9)  # 9**9 = 387 million leaves if it were expanded
    started = time.perf_counter()
    path, status, out, err = run_check(tmp_path, capsys, text)
    assert time.perf_counter() - started < 1.0
    assert_located(path, status, out, err, 1, 4, "YAML anchors ('&a') are not allowed")
    started = time.perf_counter()
    with pytest.raises(SpecError, match="anchors"):
        load_yaml_text(text)
    assert time.perf_counter() - started < 1.0


def test_aliases_alone_are_refused_fast():
    text = "x: [" + ", ".join(["*a"] * 10_000) + "]\n"  # no anchor at all: the first alias fails
    started = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        load_yaml_text(text, "s.yaml")
    assert time.perf_counter() - started < 1.0
    assert str(caught.value.location) == "s.yaml:1:5" and "aliases ('*a')" in str(caught.value)


def test_file_over_one_mib_is_refused_unparsed(tmp_path, capsys):
    content = ("input: 8x8x3\n" + VALID_TAIL).encode()
    content += b"#" * (MAX_FILE_BYTES + 1 - len(content))  # one byte over
    started = time.perf_counter()
    path, status, out, err = run_check(tmp_path, capsys, content)
    assert time.perf_counter() - started < 1.0
    assert_located(path, status, out, err, 1, 1, "the spec is larger than 1024 KiB",
                   "refused rather than parsed")
    with pytest.raises(SpecError, match="larger than 1024 KiB"):
        load_yaml_text(content.decode())


def test_deep_nesting_never_reaches_recursion(tmp_path):
    text = "x: " + "[" * 100_000 + "]" * 100_000 + "\n"
    with pytest.raises(SpecError) as caught:
        load_yaml_text(text, "deep.yaml")
    assert caught.value.location == Location("deep.yaml", 1, 35)  # the 32nd '[' of the list


def test_nesting_up_to_the_limit_loads():
    depth = MAX_DEPTH - 1  # the top-level mapping is the first level
    value = load_yaml_text("x: " + "[" * depth + "1" + "]" * depth)["x"]
    for _ in range(depth - 1):
        (value,) = value
    assert value == [1]
    with pytest.raises(SpecError, match="deeper than"):
        load_yaml_text("x: " + "[" * (depth + 1) + "1" + "]" * (depth + 1))


# ------------------------------------------------------------------ values that must load


def test_exponent_without_a_dot_is_a_float():
    data = load_yaml_text("lr: 1e-3\nbig: 1.5E3\nhalf: .5\nscaled: +2e0\n")
    assert data == {"lr": 0.001, "big": 1500.0, "half": 0.5, "scaled": 2.0}
    assert all(type(value) is float for value in data.values())


def test_quoted_values_stay_strings():
    data = load_yaml_text("a: '010'\nb: \"1:30\"\nc: 'no'\nd: \"on\"\ne: '.nan'\n")
    assert data == {"a": "010", "b": "1:30", "c": "no", "d": "on", "e": ".nan"}
    assert all(type(value) is str for value in data.values())


def test_core_schema_scalars():
    data = load_yaml_text("a: 0\nb: -7\nc: true\nd: False\ne: ~\nf: null\ng:\nh: 3x3\n"
                          "i: 123456789012\n")
    assert data == {"a": 0, "b": -7, "c": True, "d": False, "e": None, "f": None, "g": None,
                    "h": "3x3", "i": 123456789012}
    assert type(data["a"]) is int and type(data["c"]) is bool


def test_locations_are_one_based_and_point_inside_quotes():
    data = load_yaml_text('name: net\nlayers:\n  - conv: {filters: 4, size: "3x3"}\n', "f.yaml")
    settings = data["layers"][0]["conv"]
    assert str(data.where("name")) == "f.yaml:1:7"
    assert str(data.where_key("layers")) == "f.yaml:2:1"
    assert str(data["layers"].where(0)) == "f.yaml:3:5"
    assert str(settings.where("filters")) == "f.yaml:3:21"
    assert str(settings.where_key("size")) == "f.yaml:3:24"
    assert str(settings.where("size")) == "f.yaml:3:31"  # the 3 after the opening quote


def test_folded_string_maps_each_character_to_its_line():
    text = "pattern: >-\n  [INPUT-CONV\n    -RELU]\n"
    data = load_yaml_text(text, "f.yaml")
    assert data["pattern"] == "[INPUT-CONV\n  -RELU]"  # the more-indented line keeps its break
    where = data.where("pattern")
    assert where.shifted(0) == Location("f.yaml", 2, 3)  # '['
    assert where.shifted(7) == Location("f.yaml", 2, 10)  # 'CONV'
    assert where.shifted(data["pattern"].index("RELU")) == Location("f.yaml", 3, 6)
