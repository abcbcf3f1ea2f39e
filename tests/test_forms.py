"""The three spec forms describe the same graph; --expand round-trips; blocks and overrides."""

from __future__ import annotations

import pytest

from convgraph.errors import SpecError
from convgraph.graph import signature
from convgraph.pipeline import analyse
from convgraph.spec import load_spec
from convgraph.spec.expand import expanded_yaml
from convgraph.spec.pattern import parse_pattern

from .conftest import SPECS

SEED_PATTERN = """
name: seed
input: 32x32x3
defaults:
  conv: {filters: 12, size: 3, pad: 1}
  pool: {size: 2}
  fc: {units: 10}
pattern: "[INPUT-CONV-RELU-POOL-FC]"
"""

SEED_INLINE_PATTERN = """
name: seed
input: 32x32x3
pattern: "INPUT -> CONV(12, 3x3, pad=1) -> RELU -> MAXPOOL(2) -> FC(10)"
"""

SEED_LAYERS = """
name: seed
layers:
  - input: 32x32x3
  - conv: {filters: 12, size: 3, pad: 1}
  - relu
  - {op: pool, size: 2x2, stride: [2, 2]}
  - fc: 10
"""

SEED_GRAPH = """
name: seed
input: 32x32x3
nodes:
  conv1: {op: conv, filters: 12, size: 3, pad: 1}
  relu1: relu
  pool1: "POOL(2)"
  fc1: {op: dense, units: 10, inputs: [pool1]}
"""


@pytest.mark.parametrize("text", [SEED_INLINE_PATTERN, SEED_LAYERS, SEED_GRAPH],
                         ids=["inline-pattern", "layer-list", "graph"])
def test_seed_forms_are_one_graph(write_spec, text):
    reference = signature(analyse(write_spec(SEED_PATTERN, "a.yaml")))
    assert signature(analyse(write_spec(text, "b.yaml"))) == reference
    assert [entry[0] for entry in reference] == ["input", "conv1", "relu1", "pool1",
                                                 "fc1_flatten", "fc1"]


VGG_PATTERN = """
input: 32x32x3
defaults: {conv: {size: 3, pad: 1}}
pattern: "[INPUT-[CONV(32)-RELU]*2-POOL-[CONV(64)-RELU]*2-POOL-FC(256)-RELU-FC(10)]"
"""

VGG_LAYERS = """
input: 32x32x3
defaults: {conv: {size: 3, pad: 1}}
layers:
  - conv: 32
  - relu
  - "CONV(32)"
  - relu
  - pool
  - conv: {filters: 64}
  - relu
  - conv: [64, 3]
  - relu
  - maxpool: {size: 2}
  - fc: {units: 256}
  - relu
  - fc: {units: 10}
"""

VGG_GRAPH = """
input: 32x32x3
blocks:
  pair:
    params: {filters: null}
    nodes:
      a: {op: conv, filters: $filters, size: 3, pad: 1, inputs: [in]}
      b: relu
      c: {op: conv, filters: $filters, size: 3, pad: 1}
      d: relu
nodes:
  s1: {block: pair, filters: 32}
  p1: pool
  s2: {block: pair, filters: 64}
  p2: pool
  f1: {op: fc, units: 256}
  r: relu
  f2: {op: fc, units: 10}
"""


def test_vgg_forms_are_one_network(write_spec):
    """Pattern and list name layers alike; the graph form has other names but the same structure."""
    pattern = analyse(write_spec(VGG_PATTERN, "p.yaml"))
    layers = analyse(write_spec(VGG_LAYERS, "l.yaml"))
    graph = analyse(write_spec(VGG_GRAPH, "g.yaml"))
    assert signature(pattern) == signature(layers)

    def structure(g):
        return [entry[1:3] + (entry[4],) for entry in signature(g)]

    assert structure(graph) == structure(pattern)
    assert [g.graph["form"] for g in (pattern, layers, graph)] == ["pattern", "layers", "nodes"]


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
def test_expand_round_trips(write_spec, path):
    original = analyse(path)
    text = expanded_yaml(original.graph["spec"])
    assert "nodes:" in text and "pattern:" not in text and "blocks:" not in text
    again = analyse(write_spec(text, "expanded.yaml"))
    assert signature(again) == signature(original)
    assert again.graph["spec"].train == original.graph["spec"].train
    # expanding the expanded form changes nothing but the header line
    assert expanded_yaml(again.graph["spec"]).split("\n", 1)[1] == text.split("\n", 1)[1]


def test_pattern_repeats_follow_the_notes():
    layers = parse_pattern("[INPUT-[[CONV-RELU]*2-POOL]*3-[FC-RELU]*2-FC]", _where())
    ops = [layer.op for layer in layers]
    assert ops == ["INPUT"] + (["CONV", "RELU"] * 2 + ["POOL"]) * 3 + ["FC", "RELU"] * 2 + ["FC"]
    assert [layer.op for layer in parse_pattern("[INPUT-[CONV]*0-FC]", _where())] == ["INPUT",
                                                                                       "FC"]


def test_pattern_token_offsets():
    layers = parse_pattern("[INPUT-CONV(32, 5x5, pad=same)-FC]", _where())
    assert [(layer.op, layer.offset) for layer in layers] == [("INPUT", 1), ("CONV", 7),
                                                              ("FC", 31)]
    assert layers[1].args == [(32, 12), ("5x5", 16)]
    assert layers[1].kwargs == {"pad": ("same", 25)}


def test_a_negative_argument_points_at_its_sign():
    layers = parse_pattern("[INPUT-CLIP(-0.5, max=-1)-CONV(-4)-FC]", _where())
    assert layers[1].args == [(-0.5, 12)] and layers[1].kwargs == {"max": (-1, 22)}
    assert layers[2].args == [(-4, 31)]
    with pytest.raises(SpecError, match="expected a value"):
        parse_pattern("[INPUT-CLIP(--1, 1)]", _where())
    with pytest.raises(SpecError, match="expected a layer name"):
        parse_pattern("[INPUT-CONV--1]", _where())


def test_defaults_then_alias_then_layer(write_spec):
    graph = analyse(write_spec("""
        input: 16x16x4
        defaults: {pool: {mode: max, size: 4}, conv: {filters: 8, size: 3}}
        pattern: "[INPUT-CONV(pad=1)-AVGPOOL-POOL(2)-CONV(16, 1)]"
    """))
    assert graph.nodes["pool1"]["attrs"]["mode"] == "avg"  # the alias beats the default
    assert graph.nodes["pool1"]["attrs"]["size"] == (4, 4)  # the default beats the op's
    assert graph.nodes["pool1"]["attrs"]["stride"] == (4, 4)  # stride follows the size
    assert graph.nodes["pool2"]["attrs"]["size"] == (2, 2)  # the layer beats the default
    assert graph.nodes["conv2"]["attrs"]["size"] == (1, 1)
    assert str(graph.nodes["conv2"]["output"]) == "2x2x16"


def test_block_switched_off_node_passes_its_input_through():
    graph = analyse(SPECS / "resnet8.yaml")
    assert graph.nodes["res1/add"]["inputs"] == ["res1/bn2", "relu1"]  # identity shortcut
    assert graph.nodes["res2/add"]["inputs"] == ["res2/bn2", "res2/proj_bn"]
    assert graph.nodes["res2/proj"]["inputs"] == ["res1/relu2"]
    assert graph.nodes["res2/proj"]["attrs"]["stride"] == (2, 2)
    assert "res1/proj" not in graph and "res1/proj_bn" not in graph
    assert graph.nodes["pool"]["inputs"] == ["res3/relu2"]  # a block instance names its output


def test_nested_blocks_and_multi_input_blocks(write_spec):
    graph = analyse(write_spec("""
        input: 8x8x3
        blocks:
          merge:
            inputs: [left, right]
            params: {width: 4}
            nodes:
              a: {op: conv, filters: $width, size: 1, inputs: [left]}
              b: {op: conv, filters: $width, size: 1, inputs: [right]}
              out: {op: concat, inputs: [a, b]}
          twice:
            params: {width: null}
            nodes:
              first: {block: merge, width: $width, inputs: [in, in]}
              second: {block: merge, inputs: [first, in]}
        nodes:
          t: {block: twice, width: 5}
          head: {op: fc, units: 2}
    """))
    assert str(graph.nodes["t/first/out"]["output"]) == "8x8x10"
    assert graph.nodes["t/second/a"]["inputs"] == ["t/first/out"]
    assert graph.nodes["t/second/b"]["inputs"] == ["input"]
    assert str(graph.nodes["t/second/out"]["output"]) == "8x8x8"
    assert graph.nodes["head_flatten"]["inputs"] == ["t/second/out"]


def test_graph_form_residual_and_explicit_output(write_spec):
    graph = analyse(write_spec("""
        input: 8x8x4
        nodes:
          conv: {op: conv, filters: 4, size: 3, pad: same}
          skip: {op: add, inputs: [conv, input]}
          twice: {op: add, inputs: [skip, skip]}
          out: {op: gap}
        output: out
    """))
    assert graph.graph["output"] == "out"
    assert graph.nodes["twice"]["inputs"] == ["skip", "skip"]  # add(x, x) keeps both slots


def test_overrides_reach_the_train_section(write_spec):
    path = write_spec(SEED_PATTERN)
    spec = load_spec(path, ["lr=0.5", "train.epochs=3", "optimizer=adam", "flip=true"])
    assert (spec.train["lr"], spec.train["epochs"], spec.train["optimizer"]) == (0.5, 3, "adam")
    assert spec.train["flip"] is True
    assert load_spec(path).train["lr"] == 0.01  # the default stays where nothing overrides it
    with pytest.raises(SpecError, match="'epochs' expects a whole number"):
        load_spec(path, ["epochs=many"])
    with pytest.raises(SpecError, match="unknown key 'learning_rate'"):
        load_spec(path, ["learning_rate=0.1"])


def test_override_of_top_level_rounding(write_spec):
    path = write_spec("""
        input: 7x7x1
        pattern: "[INPUT-POOL(2)]"
    """)
    with pytest.raises(SpecError, match="not a whole number"):
        analyse(path)
    assert analyse(path, ["rounding=ceil"]).nodes["pool1"]["output"].width == 4


def test_dict_specs_through_the_api():
    graph = analyse({"input": [8, 8, 1], "layers": [{"conv": {"filters": 2, "size": 3}}]})
    assert str(graph.nodes["conv1"]["output"]) == "6x6x2"


def _where():
    from convgraph.errors import Location

    return Location("test", 1, 1)
