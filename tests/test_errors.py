"""Malformed specs: every one exits with status 2 and one located, actionable paragraph.

Each case is written to a real file and run through ``convgraph check`` (or ``compile``) in-process.
The expected FILE:LINE:COLUMN is the offending YAML node as an editor numbers it (1-based); inside
a pattern string it is the column of the offending token.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from convgraph.cli import main
from convgraph.pipeline import analyse

ROOT = Path(__file__).resolve().parent.parent


def run_spec(tmp_path, capsys, text: str, command: str = "check"):
    """Write the dedented ``text`` to spec.yaml and run ``convgraph COMMAND spec.yaml``."""
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    status = main([command, str(path)])
    out, err = capsys.readouterr()
    return path, status, out, err


def assert_spec_error(path, status, err, line, column, phrases=(), layer=None, command="check"):
    """Exit 2, one line on stderr, starting with the exact location, naming layer and fix."""
    assert status == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one paragraph: {err!r}"
    prefix = "FAIL " if command == "check" else "convgraph: error: "
    assert err.startswith(f"{prefix}{path}:{line}:{column}: "), err
    if layer is not None:
        assert f": layer '{layer}': " in err, err
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in {err!r}"


@dataclass
class Case:
    id: str
    text: str
    line: int
    column: int
    phrases: tuple = ()
    layer: str | None = None
    command: str = "check"
    absent: tuple = ()


BLOCK_BASIC = """
input: 8x8x3
blocks:
  basic:
    params: {filters: null}
    nodes:
      c: {op: conv, filters: %s, size: 1}
nodes:
  a: {op: conv, filters: 4, size: 1}
  b: %s
"""

CASES = [
    # ------------------------------------------------------------------ shapes
    Case(
        "conv-not-whole-suggests-pad-stride-rounding",
        """
        input: 32x32x3
        layers:
          - conv: {filters: 8, size: 3, stride: 3}
        """,
        3, 41,
        ("output width (32 - 3 + 2*0)/3 + 1 = 10.6667 is not a whole number",
         "pad 2 would make it 12", "stride 1 would make it 30",
         "'rounding: floor' (10)", "'rounding: ceil'"),
        layer="conv1",
    ),
    Case(
        "conv-not-whole-in-pattern-compile",
        """
        input: 32x32x3
        pattern: "[INPUT-CONV(12, 3, stride=2)-RELU-FC(10)]"
        """,
        2, 37,
        ("(32 - 3 + 2*0)/2 + 1 = 15.5 is not a whole number", "stride 1 would make it 30",
         "'rounding: floor' (15)"),
        layer="conv1",
        command="compile",
    ),
    Case(
        "pool-not-whole-at-stride",
        """
        input: 8x8x3
        layers:
          - pool: {size: 3, stride: 3}
        """,
        3, 29,
        ("(pool) output width (8 - 3 + 2*0)/3 + 1 = 2.66667 is not a whole number",
         "stride 1 would make it 6", "'rounding: floor' (2)"),
        layer="pool1",
        absent=("pad 2",),  # more than half the window: pool would reject it
    ),
    Case(
        "pool-not-whole-at-layer",
        """
        input: 7x7x3
        layers:
          - conv: {filters: 4, size: 1}
          - pool: {size: 2}
        """,
        4, 5,
        ("(7 - 2 + 2*0)/2 + 1 = 3.5 is not a whole number", "stride 1 would make it 6",
         "'rounding: floor' (3)"),
        layer="pool1",
    ),
    Case(
        "kernel-larger-than-padded-input",
        """
        input: 4x4x3
        layers:
          - conv: {filters: 8, size: 7, pad: 1}
        """,
        3, 30,
        ("kernel width 7 is larger than its padded input width 4 + 2*1 = 6",
         "use a kernel of at most 6", "pad 2 or more"),
        layer="conv1",
    ),
    Case(
        "filters-zero",
        """
        input: 32x32x3
        layers:
          - conv: {filters: 0, size: 3}
        """,
        3, 21,
        ("'filters' expects a whole number from 1 to", "got 0"),
        layer="conv1",
    ),
    Case(
        "size-negative",
        """
        input: 32x32x3
        layers:
          - conv: {filters: 4, size: -1}
        """,
        3, 30,
        ("'size' expects a whole number >= 1", "got -1"),
        layer="conv1",
    ),
    Case(
        "add-depth-mismatch",
        """
        input: 8x8x3
        nodes:
          a: {op: conv, filters: 4, size: 1}
          b: {op: conv, filters: 8, size: 1, inputs: [input]}
          sum: {op: add, inputs: [a, b]}
        """,
        5, 3,
        ("depth mismatch: input 'b' is 8x8x8 but input 'a' is 8x8x4",
         "1x1 conv to depth 8"),
        layer="sum",
    ),
    Case(
        "add-volume-mismatch",
        """
        input: 8x8x3
        nodes:
          a: {op: conv, filters: 4, size: 1}
          b: {op: conv, filters: 4, size: 2, stride: 2, inputs: [input]}
          sum: {op: add, inputs: [a, b]}
        """,
        5, 3,
        ("volume mismatch: input 'b' is 4x4x4 but input 'a' is 8x8x4",
         "same stride as the main branch"),
        layer="sum",
    ),
    Case(
        "concat-spatial-mismatch",
        """
        input: 8x8x3
        nodes:
          a: {op: conv, filters: 4, size: 1}
          b: {op: pool, size: 2, inputs: [input]}
          cat: {op: concat, inputs: [a, b]}
        """,
        5, 3,
        ("spatial mismatch: input 'b' is 4x4 but input 'a' is 8x8",
         "pool or stride the larger branch"),
        layer="cat",
    ),
    Case(
        "groups-not-dividing-depth",
        """
        input: 8x8x6
        layers:
          - conv: {filters: 8, size: 1, groups: 4}
        """,
        3, 41,
        ("input depth 6 is not divisible by groups 4", "groups that divide the input depth"),
        layer="conv1",
    ),
    Case(
        "groups-not-dividing-filters",
        """
        input: 8x8x6
        layers:
          - conv: {filters: 8, size: 1, groups: 3}
        """,
        3, 21,
        ("filters 8 is not divisible by groups 3", "e.g. 6"),
        layer="conv1",
    ),
    Case(
        "pool-pad-more-than-half-window",
        """
        input: 8x8x3
        layers:
          - pool: {size: 2, pad: 2}
        """,
        3, 26,
        ("padding 2 is more than half the window width 2", "use pad 1 or less"),
        layer="pool1",
    ),
    # ------------------------------------------------------------------ names: ops, keys
    Case(
        "unknown-op-in-pattern",
        """
        input: 8x8x3
        pattern: "[INPUT-COVN(12, 3)-RELU]"
        """,
        2, 18,
        ("unknown op 'COVN'", "Did you mean 'conv'", "known ops: add"),
        command="compile",
    ),
    Case(
        "unknown-op-in-folded-pattern",
        """
        input: 8x8x3
        pattern: >-
          [INPUT-CONV(4,1)-RELU
          -COVN(4,1)]
        """,
        4, 4,
        ("unknown op 'COVN'", "Did you mean 'conv'"),
    ),
    Case(
        "unknown-op-in-layer-list",
        """
        input: 8x8x3
        layers:
          - relu
          - maxpol: {size: 2}
        """,
        4, 5,
        ("unknown op 'maxpol'", "Did you mean 'maxpool'"),
    ),
    Case(
        "unknown-op-in-graph",
        """
        input: 8x8x3
        nodes:
          a: {op: covn, filters: 4}
        """,
        3, 11,
        ("unknown op 'covn'", "Did you mean 'conv'"),
        layer="a",
    ),
    Case(
        "misspelt-key-in-layer-list",
        """
        input: 8x8x3
        layers:
          - conv: {filtres: 4, size: 1}
        """,
        3, 12,
        ("(conv) unknown key 'filtres'", "Did you mean 'filters'?", "conv takes: bias"),
        layer="conv1",
    ),
    Case(
        "misspelt-key-in-pattern",
        """
        input: 8x8x3
        pattern: "[INPUT-CONV(4, 1, strde=2)]"
        """,
        2, 29,
        ("(conv) unknown key 'strde'", "Did you mean 'stride'?"),
        layer="conv1",
    ),
    Case(
        "misspelt-key-in-graph",
        """
        input: 8x8x3
        nodes:
          c: {op: conv, filtres: 4, size: 1}
        """,
        3, 17,
        ("(conv) unknown key 'filtres'", "Did you mean 'filters'?"),
        layer="c",
    ),
    Case(
        "misspelt-key-in-defaults",
        """
        input: 8x8x3
        defaults:
          conv: {sise: 3}
        pattern: "[INPUT-CONV(4)]"
        """,
        3, 10,
        ("(conv) unknown key 'sise'", "Did you mean 'size'"),
    ),
    Case(
        "unknown-top-level-key",
        """
        input: 8x8x3
        pattern: "[INPUT-RELU]"
        outptu: relu1
        """,
        3, 1,
        ("unknown top-level key 'outptu'", "Did you mean 'output'?", "a spec takes: name"),
    ),
    Case(
        "unknown-train-key",
        """
        input: 8x8x3
        pattern: "[INPUT-RELU]"
        train: {lrr: 0.1}
        """,
        3, 9,
        ("(train) unknown key 'lrr'", "Did you mean 'lr'?"),
    ),
    # ------------------------------------------------------------------ value types
    Case(
        "string-for-int",
        """
        input: 8x8x3
        layers:
          - conv: {filters: four, size: 1}
        """,
        3, 21,
        ("'filters' expects a whole number from 1 to 1048576, got 'four'",),
        layer="conv1",
    ),
    Case(
        "list-for-bool",
        """
        input: 8x8x3
        layers:
          - conv: {filters: 4, size: 1, bias: [true]}
        """,
        3, 39,
        ("'bias' expects true or false",),
        layer="conv1",
    ),
    Case(
        "float-for-int",
        """
        input: 8x8x3
        layers:
          - fc: {units: 10.5}
        """,
        3, 17,
        ("'units' expects a whole number", "got 10.5"),
        layer="fc1",
    ),
    Case(
        "string-for-number-in-train",
        """
        input: 8x8x3
        pattern: "[INPUT-RELU]"
        train: {lr: fast}
        """,
        3, 13,
        ("(train) 'lr' expects a number > 0", "got 'fast'"),
    ),
    Case(
        "rounding-not-a-mode",
        """
        input: 8x8x3
        rounding: round
        pattern: "[INPUT-RELU]"
        """,
        2, 11,
        ("'rounding' expects one of exact, floor, ceil", "got 'round'"),
    ),
    Case(
        "missing-required-param",
        """
        input: 8x8x3
        layers:
          - conv: {size: 1}
        """,
        3, 5,
        ("missing required 'filters'", "add 'filters: ...' to this layer"),
        layer="conv1",
    ),
    Case(
        "missing-required-param-in-pattern",
        """
        input: 8x8x3
        pattern: "[INPUT-CONV-RELU]"
        """,
        2, 18,
        ("missing required 'filters'", "'defaults: {conv: {filters: ...}}'"),
        layer="conv1",
    ),
    # ------------------------------------------------------------------ graph structure
    Case(
        "cycle",
        """
        input: 8x8x3
        nodes:
          a: {op: conv, filters: 4, size: 1, inputs: [b]}
          b: {op: relu, inputs: [a]}
        """,
        3, 3,
        ("the graph has a cycle: a -> b -> a", "a CNN is acyclic"),
        layer="a",
        command="compile",
    ),
    Case(
        "cycle-of-one",
        """
        input: 8x8x3
        nodes:
          a: {op: relu, inputs: [a]}
        """,
        3, 3,
        ("the graph has a cycle: a -> a",),
        layer="a",
    ),
    Case(
        "unused-node",
        """
        input: 8x8x3
        nodes:
          a: {op: conv, filters: 4, size: 1}
          side: {op: relu, inputs: [input]}
          b: {op: relu, inputs: [a]}
        output: b
        """,
        4, 3,
        ("node 'side' is unused: nothing leads from it to the output 'b'",
         "use it as an input of a later node, or remove it"),
        layer="side",
    ),
    Case(
        "no-single-output",
        """
        input: 8x8x3
        nodes:
          a: {op: conv, filters: 4, size: 1}
          side: {op: relu, inputs: [input]}
          b: {op: relu, inputs: [a]}
        """,
        4, 3,
        ("the graph has no single output: 'side', 'b' all feed nothing",
         "name the output with 'output: NAME'"),
        layer="side",
    ),
    Case(
        "unknown-input-name",
        """
        input: 8x8x3
        nodes:
          conv1: {op: conv, filters: 4, size: 1, inputs: [input]}
          relu1: {op: relu, inputs: [conv]}
        """,
        4, 30,
        ("unknown input 'conv'.", "Did you mean 'conv1'?"),
        layer="relu1",
    ),
    Case(
        "unknown-output-name",
        """
        input: 8x8x3
        nodes:
          conv1: {op: conv, filters: 4, size: 1}
        output: conv
        """,
        4, 9,
        ("the output 'conv' is not a node.", "Did you mean 'conv1'?"),
    ),
    Case(
        "duplicate-layer-name",
        """
        input: 8x8x3
        layers:
          - conv: {filters: 4, size: 1, name: a}
          - relu: {name: a}
        """,
        4, 5,
        ("layer name 'a' is used twice (first at line 3)", "give each layer its own name"),
        layer="a",
    ),
    Case(
        "duplicate-node-name-through-block",
        """
        input: 8x8x3
        blocks:
          b:
            nodes:
              conv1: {op: conv, filters: 3, size: 1}
        nodes:
          res: {block: b}
          res/conv1: {op: relu}
        """,
        8, 3,
        ("two layers are named 'res/conv1' (the other is at line 5)",),
        layer="res/conv1",
    ),
    Case(
        "relu-with-two-inputs",
        """
        input: 8x8x3
        nodes:
          a: {op: conv, filters: 4, size: 1}
          b: {op: relu, inputs: [a, input]}
        """,
        4, 3,
        ("(relu) takes exactly 1 input(s), but 2 are given", "give it one input"),
        layer="b",
    ),
    Case(
        "two-input-nodes",
        """
        nodes:
          left: {op: input, shape: 8x8x3}
          right: {op: input, shape: 8x8x3}
          sum: {op: add, inputs: [left, right]}
        """,
        3, 3,
        ("exactly one input layer, but 'left' and 'right' are inputs", "keep one input node"),
        layer="right",
    ),
    Case(
        "node-neither-op-nor-block",
        """
        input: 8x8x3
        nodes:
          a: {filters: 4}
        """,
        3, 3,
        ("a node needs exactly one of 'op' (a layer) or 'block'",),
        layer="a",
    ),
    Case(
        "names-only-standing-for-each-other",
        """
        input: 8x8x3
        nodes:
          a: {op: relu, inputs: [b], when: false}
          b: {op: relu, inputs: [a], when: false}
          c: {op: relu, inputs: [a]}
        """,
        3, 3,
        ("these names only stand for each other: a -> b -> a",),
    ),
    # ------------------------------------------------------------------ blocks
    Case(
        "unknown-block",
        BLOCK_BASIC % ("$filters", "{block: basc, filters: 4}"),
        9, 14,
        ("unknown block 'basc'.", "Did you mean 'basic'?", "blocks defined: basic"),
        layer="b",
    ),
    Case(
        "missing-block-param",
        BLOCK_BASIC % ("$filters", "{block: basic}"),
        9, 6,
        ("block 'basic' needs parameter 'filters'", "add 'filters: ...' to this node"),
        layer="b",
    ),
    Case(
        "unknown-dollar-param",
        BLOCK_BASIC % ("$filter", "{block: basic, filters: 4}"),
        6, 30,
        ("'$filter' names no parameter of this block.", "Did you mean 'filters'?",
         "in block 'basic' used as 'b'"),
        layer="b/c",
    ),
    Case(
        "unknown-block-argument",
        BLOCK_BASIC % ("$filters", "{block: basic, filtres: 4}"),
        9, 21,
        ("block 'basic' has no parameter 'filtres'.", "Did you mean 'filters'?"),
        layer="b",
    ),
    Case(
        "block-name-not-a-string",
        BLOCK_BASIC % ("$filters", "{block: [basic]}"),
        9, 14,
        ("unknown block '['basic']'", "blocks defined: basic"),
        layer="b",
    ),
    Case(
        "dollar-outside-block",
        """
        input: 8x8x3
        nodes:
          a: {op: conv, filters: $filters, size: 1}
        """,
        3, 26,
        ("'$filters' refers to a block parameter, but this node is not inside a block",),
        layer="a",
    ),
    Case(
        "block-uses-itself",
        """
        input: 8x8x3
        blocks:
          loop:
            nodes:
              x: {block: loop}
        nodes:
          a: {block: loop}
        """,
        5, 18,
        ("block 'loop' uses itself (through loop)",),
        layer="a/x",
    ),
    Case(
        "block-input-count",
        """
        input: 8x8x3
        blocks:
          pair:
            inputs: [left, right]
            nodes:
              c: {op: add, inputs: [left, right]}
        nodes:
          a: {block: pair}
        """,
        8, 6,
        ("block 'pair' takes 2 input(s) (left, right), but 1 are given",),
        layer="a",
    ),
    Case(
        "block-output-not-a-node",
        """
        input: 8x8x3
        blocks:
          x:
            output: [c]
            nodes:
              c: {op: relu}
        nodes:
          a: {block: x}
        """,
        4, 13,
        ("block output '['c']' is not one of its nodes",),
    ),
    Case(
        "when-not-bool",
        """
        input: 8x8x3
        nodes:
          a: {op: conv, filters: 4, size: 1}
          b: {op: relu, when: maybe}
        """,
        4, 23,
        ("'when' expects true or false, got 'maybe'",),
        layer="b",
    ),
    Case(
        "when-not-bool-from-block-param",
        """
        input: 8x8x3
        blocks:
          basic:
            params: {filters: null, project: 1}
            nodes:
              c: {op: conv, filters: $filters, size: 1, when: $project}
        nodes:
          a: {op: conv, filters: 4, size: 1}
          b: {block: basic, filters: 4}
        """,
        4, 38,
        ("'when' expects true or false, got 1",),
        layer="b/c",
    ),
    # ------------------------------------------------------------------ pattern syntax
    Case(
        "pattern-unclosed-bracket",
        """
        input: 8x8x3
        pattern: "[INPUT-CONV(4,1)-RELU"
        """,
        2, 32,
        ("'[' at column 1 of the pattern is not closed", "add the matching ']'"),
    ),
    Case(
        "pattern-trailing-dash-before-bracket",
        """
        input: 8x8x3
        pattern: "[INPUT-CONV(4,1)-]"
        """,
        2, 28,
        ("expected a layer name or '[', found ']'", "remove the trailing '-'"),
    ),
    Case(
        "pattern-trailing-dash-at-end",
        """
        input: 8x8x3
        pattern: "INPUT-CONV(4,1)-"
        """,
        2, 27,
        ("it ends where a layer was expected", "remove the trailing '-'"),
    ),
    Case(
        "pattern-repeat-count-not-whole",
        """
        input: 8x8x3
        pattern: "[INPUT-[CONV(4,1)-RELU]*2.5-FC(2)]"
        """,
        2, 35,
        ("a repeat count must be a whole number from 0 to 1000, got '2.5'",),
    ),
    Case(
        "pattern-repeat-count-too-large",
        """
        input: 8x8x3
        pattern: "[INPUT-[CONV(4,1)-RELU]*5000-FC(2)]"
        """,
        2, 35,
        ("got '5000'",),
    ),
    Case(
        "pattern-repeat-count-missing",
        """
        input: 8x8x3
        pattern: "[INPUT-[CONV(4,1)-RELU]*x-FC(2)]"
        """,
        2, 35,
        ("expected a number, found 'x'",),
    ),
    Case(
        "pattern-unexpected-character",
        """
        input: 8x8x3
        pattern: "[INPUT-CONV(4;1)]"
        """,
        2, 24,
        ("unexpected character ';' in the pattern", "joined by '-'"),
    ),
    Case(
        "pattern-positional-after-named",
        """
        input: 8x8x3
        pattern: "[INPUT-CONV(4,stride=1,1)]"
        """,
        2, 34,
        ("a positional argument follows a named one", "put positional arguments first"),
    ),
    Case(
        "pattern-too-many-arguments",
        """
        input: 8x8x3
        pattern: "[INPUT-CONV(4,1,1,0,9)]"
        """,
        2, 31,
        ("too many arguments: CONV takes filters, size, stride, pad", "stride=9"),
    ),
    Case(
        "pattern-empty",
        """
        input: 8x8x3
        pattern: ""
        """,
        2, 11,
        ("the pattern is empty",),
        absent=("trailing",),
    ),
    Case(
        "pattern-not-a-string",
        """
        input: 8x8x3
        pattern: 5
        """,
        2, 10,
        ("'pattern' must be a string", "quote the pattern"),
    ),
    # ------------------------------------------------------------------ input
    Case(
        "input-not-first-in-pattern",
        """
        input: 8x8x3
        pattern: "[CONV(4,1)-INPUT-FC(2)]"
        """,
        2, 12,
        ("the pattern must start with INPUT",),
    ),
    Case(
        "input-twice-in-pattern",
        """
        input: 8x8x3
        pattern: "[INPUT-CONV(4,1)-INPUT-FC(2)]"
        """,
        2, 28,
        ("INPUT may appear only at the start of the pattern",),
    ),
    Case(
        "input-not-first-in-layer-list",
        """
        input: 8x8x3
        layers:
          - relu
          - input
        """,
        4, 5,
        ("the input layer must be the first entry",),
        absent=("used twice",),
    ),
    Case(
        "missing-input-volume",
        """
        name: net
        pattern: "[INPUT-CONV(4,1)-FC(2)]"
        """,
        2, 12,
        ("the input volume is not given", "add 'input: 32x32x3'"),
    ),
    Case(
        "missing-input-volume-in-layer-list",
        """
        layers:
          - conv: {filters: 4, size: 1}
        """,
        1, 1,
        ("the input volume is not given",),
    ),
    Case(
        "input-volume-given-twice",
        """
        input: 8x8x3
        pattern: "[INPUT(8x8x3)-RELU]"
        """,
        2, 18,
        ("the input volume is given twice", "keep one of the two"),
    ),
    Case(
        "bad-volume-string",
        """
        input: 8x8
        pattern: "[INPUT-CONV(4,1)-FC(2)]"
        """,
        1, 8,
        ("'shape' expects a volume 'WxHxD' such as 32x32x3", "got '8x8'"),
        layer="input",
    ),
    Case(
        "zero-extent-volume-in-pattern",
        """
        pattern: "[INPUT(8x8x0)-CONV(4,1)-FC(2)]"
        """,
        1, 18,
        ("each extent from 1 to", "got '8x8x0'"),
        layer="input",
    ),
    # ------------------------------------------------------------------ spec forms
    Case(
        "both-pattern-and-layers",
        """
        input: 8x8x3
        pattern: "[INPUT-CONV(4,1)-FC(2)]"
        layers:
          - relu
        """,
        3, 1,
        ("needs exactly one of 'pattern', 'layers' or 'nodes', but has pattern and layers",),
    ),
    Case(
        "none-of-the-forms",
        """
        name: net
        input: 8x8x3
        """,
        1, 1,
        ("needs exactly one of 'pattern', 'layers' or 'nodes', but has none",),
    ),
    Case(
        "top-level-list",
        """
        - relu
        - conv
        """,
        1, 1,
        ("a spec must be a YAML mapping",),
    ),
    Case(
        "empty-file",
        "",
        1, 1,
        ("the spec is empty",),
        command="compile",
    ),
    Case(
        "blocks-outside-graph-form",
        """
        input: 8x8x3
        pattern: "[INPUT-RELU]"
        blocks: {}
        """,
        3, 1,
        ("'blocks' are used by graph-form specs ('nodes:') only",),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_malformed_spec_is_located(tmp_path, capsys, case):
    path, status, out, err = run_spec(tmp_path, capsys, case.text, case.command)
    assert_spec_error(path, status, err, case.line, case.column, case.phrases, case.layer,
                      case.command)
    for phrase in case.absent:
        assert phrase not in err
    if case.command == "check":
        assert out == ""


ROUNDED = """
input: 32x32x3
rounding: {rounding}
layers:
  - conv: {{filters: 8, size: 3, stride: 2}}   # (32 - 3)/2 + 1 = 15.5
  - pool: {{size: 2}}
"""


@pytest.mark.parametrize(
    ("rounding", "conv", "pool"),
    [("floor", 15, 7), ("ceil", 16, 8)],  # pool: floor (15 - 2)/2 + 1 = 7.5 -> 7; ceil 16 -> 8
)
def test_rounding_makes_the_same_spec_pass(tmp_path, capsys, rounding, conv, pool):
    exact, status, _, err = run_spec(tmp_path, capsys, ROUNDED.format(rounding="exact"))
    assert_spec_error(exact, status, err, 4, 41, ("15.5 is not a whole number",), "conv1")

    path, status, out, err = run_spec(tmp_path, capsys, ROUNDED.format(rounding=rounding))
    assert (status, err) == (0, "") and out.startswith("ok ")
    graph = analyse(path)
    assert graph.graph["rounding"] == rounding
    assert tuple(graph.nodes["conv1"]["output"]) == (conv, conv, 8)
    assert tuple(graph.nodes["pool1"]["output"]) == (pool, pool, 8)


def test_layer_rounding_overrides_the_spec(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "input: 7x7x3\n"
        "rounding: floor\n"
        "layers:\n"
        "  - pool: {size: 2, rounding: ceil}\n"
        "  - pool: {size: 2}\n"
    )
    graph = analyse(path)
    assert tuple(graph.nodes["pool1"]["output"]) == (4, 4, 3)  # ceil((7 - 2)/2) + 1
    assert tuple(graph.nodes["pool2"]["output"]) == (2, 2, 3)  # floor((4 - 2)/2) + 1


@pytest.mark.parametrize("command", ["check", "compile"])
def test_missing_spec_file(tmp_path, capsys, command):
    missing = tmp_path / "nowhere" / "net.yaml"
    status = main([command, str(missing)])
    out, err = capsys.readouterr()
    assert_spec_error(missing, status, err, 1, 1, ("no such spec file",
                                                   "give the path of a .yaml spec"),
                      command=command)


def test_directory_is_not_a_spec(tmp_path, capsys):
    status = main(["check", str(tmp_path)])
    _, err = capsys.readouterr()
    assert_spec_error(tmp_path, status, err, 1, 1, ("this is not a file",))


def test_check_reports_every_bad_spec_and_keeps_going(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text('input: 8x8x3\npattern: "[INPUT-COVN]"\n')
    good = tmp_path / "good.yaml"
    good.write_text('input: 8x8x3\npattern: "[INPUT-RELU]"\n')
    status = main(["check", str(bad), str(good), str(tmp_path / "gone.yaml")])
    out, err = capsys.readouterr()
    assert status == 2
    assert out.startswith(f"ok   {good}: ")
    assert err.splitlines() == [
        err.splitlines()[0],
        f"FAIL {tmp_path / 'gone.yaml'}:1:1: no such spec file. Fix: give the path of a .yaml "
        "spec (see specs/ for examples).",
    ]
    assert err.startswith(f"FAIL {bad}:2:18: unknown op 'COVN'.")


def test_console_entry_point_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: 8x8x3\nlayers:\n  - conv: {filters: 0, size: 3}\n")
    done = subprocess.run(
        [sys.executable, "-m", "convgraph.cli", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"FAIL {bad}:3:21: layer 'conv1': (conv) 'filters' expects")


def test_no_error_is_raised_without_its_exit_status():
    """Every raise names a ConvgraphError subclass, which says the exit status: the base's own
    status (70) is a bug's, so a bare ``raise ConvgraphError(...)`` is one waiting to happen."""
    import ast

    package = Path(__file__).resolve().parent.parent / "convgraph"
    bare = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                    and getattr(node.exc.func, "id", None) == "ConvgraphError"):
                bare.append(f"{path.relative_to(package.parent)}:{node.lineno}")
    assert not bare, "raise a subclass (UsageError, DataError, OutputError...): " + ", ".join(bare)


def _bad_spec_messages():
    """(id, message) of every SpecError the malformed-spec cases here and the YAML hazards of
    test_yaml.py provoke, each analysed from a real file."""
    import tempfile

    from convgraph.errors import ConvgraphError

    from .test_yaml import HAZARDS

    texts = [(case.id, textwrap.dedent(case.text).lstrip("\n")) for case in CASES]
    for param in HAZARDS:
        content = param.values[0]
        texts.append((param.id, content if isinstance(content, bytes)
                      else textwrap.dedent(content).lstrip("\n")))
    messages = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        for case_id, text in texts:
            if isinstance(text, bytes):
                path.write_bytes(text)
            else:
                path.write_text(text, encoding="utf-8")
            with pytest.raises(ConvgraphError) as caught:
                analyse(path)
            messages.append((case_id, str(caught.value)))
    return messages


# what a message without a "Fix:" must say instead: what is valid, not only what is wrong
STATES_WHAT_IS_VALID = re.compile(r"' expects (a|one of|true or false) ")


def test_every_bad_spec_message_has_a_fix_or_says_what_is_valid():
    """The README promises a fix: each message carries "Fix: ..." or, for a value of the wrong
    kind, the exact kind expected (234 of 403 hostile-corpus messages had neither)."""
    messages = _bad_spec_messages()
    assert len(messages) > 100
    lacking = [f"{case_id}: {message}" for case_id, message in messages
               if "Fix: " not in message and not STATES_WHAT_IS_VALID.search(message)]
    assert not lacking, "\n".join(lacking)


def test_nesting_too_deep_is_not_called_recursion(tmp_path, capsys):
    """Nine levels of distinct blocks were reported as "block uses itself"."""
    lines = ["input: 8x8x1", "blocks:"]
    for level in range(10):
        inner = f"{{block: b{level + 1}}}" if level < 9 else "relu"
        lines += [f"  b{level}:", "    nodes:", f"      inner: {inner}"]
    lines += ["nodes:", "  top: {block: b0}", "  fc: {op: fc, units: 2}"]
    path, status, out, err = run_spec(tmp_path, capsys, "\n".join(lines) + "\n")
    assert status == 2 and "uses itself" not in err, err
    assert "blocks nest more than 8 deep here (b0 -> b1 -> " in err
    assert "Fix: nest blocks at most 8 deep" in err


@pytest.mark.parametrize(("pattern", "column", "fragment"), [
    ("[INPUT-CONV??]", 13, "unexpected '?' after 'CONV?'"),
    ("[INPUT-CONV(4) RELU]", 16, "unexpected 'RELU' after ')'"),
    ("[INPUT-CONV,RELU]", 12, "unexpected ',' after 'CONV'"),
])
def test_an_unexpected_token_is_not_an_unclosed_bracket(tmp_path, capsys, pattern, column,
                                                        fragment):
    path, status, out, err = run_spec(tmp_path, capsys,
                                      f'input: 8x8x1\npattern: "{pattern}"\n')
    assert_spec_error(path, status, err, 2, 10 + column, (fragment, "Fix: after a layer comes"))
    assert "is not closed" not in err


def test_rounding_fix_offers_what_pytorch_does_first(tmp_path, capsys):
    """A ported stride-2 layer: PyTorch floors, so 'rounding: floor' and pad: same lead the Fix,
    and the exact alternatives follow."""
    path, status, _, err = run_spec(tmp_path, capsys, """
        input: 32x32x3
        pattern: "[INPUT-CONV(12, 3, stride=2)]"
        """)
    assert_spec_error(path, status, err, 2, 37, ("15.5 is not a whole number",), "conv1")
    fix = err.split("Fix: ", 1)[1]
    assert fix.startswith("set 'rounding: floor' (15) as PyTorch computes it"), fix
    order = [fix.index(p) for p in ("'rounding: floor'", "pad: same (16)", "'rounding: ceil' (16)",
                                    "to keep it exact", "stride 1 would make it 30")]
    assert order == sorted(order), fix
