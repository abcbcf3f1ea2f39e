"""The spec language where users had to work around it: repeat counts, derived values ($in),
--set on any layer, the output softmax note, and every independent error reported at once."""

from __future__ import annotations

import pytest

from convgraph.cli import main
from convgraph.errors import SpecError
from convgraph.graph import signature
from convgraph.pipeline import analyse
from convgraph.spec.expand import expanded_yaml

# DenseNet-BC for 32x32 inputs, three dense blocks of six layers: each dense layer concatenates
# its input with 12 new feature maps (its own wiring), each transition halves the depth ($in)
# and the size.
DENSENET = """
name: densenet_bc
input: 32x32x3
blocks:
  dense_layer:
    params: {growth: 12}
    nodes:
      bn1: {op: batchnorm, inputs: in}
      relu1: relu
      conv1: {op: conv, filters: $growth * 4, size: 1, bias: false}
      bn2: batchnorm
      relu2: relu
      conv2: {op: conv, filters: $growth, size: 3, pad: 1, bias: false}
      join: {op: concat, inputs: [in, conv2]}
  transition:
    nodes:
      bn: batchnorm
      relu: relu
      conv: {op: conv, filters: $in.depth // 2, size: 1, bias: false}
      pool: {op: avgpool, size: 2}
nodes:
  conv0: {op: conv, filters: 24, size: 3, pad: 1, bias: false}
  dense1: {block: dense_layer, repeat: 6}
  trans1: {block: transition}
  dense2: {block: dense_layer, repeat: 6}
  trans2: {block: transition}
  dense3: {block: dense_layer, repeat: 6}
  bn: batchnorm
  relu: relu
  pool: gap
  fc: {op: fc, units: 10}
"""


# ------------------------------------------------------------------------------ repeat


def test_repeat_chains_copies_named_instance_k_node(write_spec):
    graph = analyse(write_spec(DENSENET))
    assert graph.nodes["dense1/1/bn1"].inputs == ["conv0"]
    assert graph.nodes["dense1/1/join"].inputs == ["conv0", "dense1/1/conv2"]
    # copy k reads copy k-1's output (the block's output: its last node, the concat)
    assert graph.nodes["dense1/2/bn1"].inputs == ["dense1/1/join"]
    assert graph.nodes["dense1/6/join"].inputs == ["dense1/5/join", "dense1/6/conv2"]
    assert graph.nodes["trans1/bn"].inputs == ["dense1/6/join"]  # the instance = its last copy
    assert "dense1/7/join" not in graph
    depths = [graph.nodes[f"dense1/{k}/join"].output.depth for k in range(1, 7)]
    assert depths == [24 + 12 * k for k in range(1, 7)]


def test_repeat_is_the_same_graph_as_the_instances_written_out(write_spec):
    block = """
    input: 8x8x4
    blocks:
      unit:
        params: {filters: 4}
        nodes:
          conv: {op: conv, filters: $filters, size: 3, pad: 1}
          relu: relu
    nodes:
      %s
      pool: gap
    """
    repeated = analyse(write_spec(block % "stack: {block: unit, repeat: 3}", "r.yaml"))
    written = analyse(write_spec(block % """stack/1: {block: unit}
      stack/2: {block: unit}
      stack/3: {block: unit}""", "w.yaml"))
    assert signature(repeated) == signature(written)


def test_repeat_expands_and_round_trips(write_spec):
    original = analyse(write_spec(DENSENET))
    text = expanded_yaml(original.graph["spec"])
    assert "dense3/6/conv2: {op: conv, filters: 12," in text
    assert "repeat:" not in text
    again = analyse(write_spec(text, "expanded.yaml"))
    assert signature(again) == signature(original)


@pytest.mark.parametrize(("value", "shown"), [("0", "0"), ("2.5", "2.5"), ("true", "True"),
                                              ("'six'", "'six'")])
def test_repeat_must_be_a_whole_number_from_1(write_spec, value, shown):
    path = write_spec(f"""
    input: 8x8x4
    blocks:
      unit: {{nodes: {{relu: relu}}}}
    nodes:
      stack: {{block: unit, repeat: {value}}}
    """)
    with pytest.raises(SpecError) as caught:
        analyse(path)
    assert caught.value.location.line == 5
    assert "'repeat' expects a whole number from 1" in str(caught.value)
    assert f"got {shown}." in str(caught.value)
    assert caught.value.layer == "stack"


def test_repeat_needs_a_block_of_one_input(write_spec):
    path = write_spec("""
    input: 8x8x4
    blocks:
      join: {inputs: [a, b], nodes: {add: {op: add, inputs: [a, b]}}}
    nodes:
      relu: relu
      both: {block: join, inputs: [input, relu], repeat: 2}
    """)
    with pytest.raises(SpecError, match="cannot be chained by 'repeat'") as caught:
        analyse(path)
    assert caught.value.location.line == 6


def test_repeat_on_a_layer_is_refused(write_spec):
    path = write_spec("""
    input: 8x8x4
    nodes:
      relu: {op: relu, repeat: 2}
    """)
    with pytest.raises(SpecError, match="'repeat' is for block instances") as caught:
        analyse(path)
    assert (caught.value.location.line, caught.value.location.column) == (3, 20)


def test_repeat_count_from_a_block_parameter(write_spec):
    path = write_spec("""
    input: 8x8x4
    blocks:
      unit: {nodes: {relu: relu}}
      stage:
        params: {depth: 2}
        nodes:
          units: {block: unit, repeat: $depth}
    nodes:
      s: {block: stage, depth: 4}
    """)
    graph = analyse(path)
    assert [n for n in graph if n != "input"] == [f"s/units/{k}/relu" for k in range(1, 5)]


# ------------------------------------------------------------------------------ $in formulas


def test_transition_depth_follows_the_input(write_spec):
    graph = analyse(write_spec(DENSENET))
    # dense1 ends at 24 + 6*12 = 96 maps; the transition halves it; dense2 adds 72 more
    assert graph.nodes["trans1/conv"].output.depth == 48
    assert graph.nodes["trans2/conv"].output.depth == (48 + 72) // 2
    assert graph.nodes["trans1/conv"].attrs["filters"] == 48  # a number once shapes know
    assert graph.nodes["dense2/3/conv1"].attrs["filters"] == 48  # $growth * 4, at read time
    # the spec keeps the formula, which --expand writes
    layer = next(x for x in graph.graph["spec"].layers if x.name == "trans1/conv")
    assert str(layer.attrs["filters"]) == "$in.depth // 2"


@pytest.mark.parametrize("form", ["layers", "nodes"])
def test_formulas_outside_blocks(write_spec, form):
    entries = ["{op: conv, filters: 8, size: 1}",
               "{op: conv, filters: $in.depth * 2 + 1, size: 1}",
               "{op: pool, size: $in.width // 4, mode: avg}"]
    body = ("layers:\n" + "".join(f"  - {e}\n" for e in entries) if form == "layers"
            else "nodes:\n" + "".join(f"  n{i}: {e}\n" for i, e in enumerate(entries)))
    graph = analyse(write_spec("input: 16x8x3\n" + body))
    last = [n for n in graph][-1]
    assert graph.nodes[last].attrs["size"] == (4, 4)
    assert graph.nodes[last].attrs["stride"] == (4, 4)  # pool's stride follows its size
    assert tuple(graph.nodes[last].output) == (4, 2, 17)


def test_formula_in_defaults_reads_each_layers_input(write_spec):
    graph = analyse(write_spec("""
    input: 8x8x3
    defaults: {conv: {filters: $in.depth * 2, size: 1}}
    pattern: "[INPUT-CONV-CONV-CONV(5)]"
    """))
    assert [graph.nodes[f"conv{k}"].output.depth for k in (1, 2, 3)] == [6, 12, 5]


def test_formulas_expand_and_round_trip(write_spec):
    original = analyse(write_spec(DENSENET))
    text = expanded_yaml(original.graph["spec"])
    assert "trans1/conv: {op: conv, filters: $in.depth // 2, size: 1," in text
    again = analyse(write_spec(text, "expanded.yaml"))
    assert signature(again) == signature(original)


def test_the_summary_shows_numbers(write_spec, capsys):
    path = write_spec("""
    input: 8x8x6
    layers:
      - conv: {filters: $in.depth // 2, size: 1}
    """)
    assert main(["compile", str(path), "--no-kernels"]) == 0
    out = capsys.readouterr().out
    assert "filters=3" in out and "$in" not in out


def _error(write_spec, text):
    with pytest.raises(SpecError) as caught:
        analyse(write_spec(text))
    return caught.value


@pytest.mark.parametrize(("formula", "line", "phrase"), [
    ("$in.depth // 0", 3, "`$in.depth // 0`: division by zero (input 8x8x6)."),
    ("$in.depth - 6", 3, "'filters' expects a whole number from 1"),
    ("$in.depth / 2", 3, "'/' is not part of an expression (whole-number division is //)"),
    ("$in.size", 3, "'$in.size' is not an extent of the input volume"),
    ("$in", 3, "'$in' alone is not an extent of the input volume"),
    ("($in.depth + 1", 3, "a '(' is not closed"),
    ("$in.depth +", 3, "expected a number, $in.depth or a $parameter, got the end"),
    ("$in.depth * $growth", 3, "'$growth' refers to a block parameter, but this node is not "
                               "inside a block"),
])
def test_formula_errors_name_file_line_layer_and_formula(write_spec, formula, line, phrase):
    error = _error(write_spec, f"""
    input: 8x8x6
    layers:
      - conv: {{filters: {formula}, size: 1}}
    """)
    assert (error.location.file.endswith("spec.yaml"), error.location.line) == (True, line)
    assert error.layer == "conv1"
    assert phrase in str(error), str(error)
    assert error.hint


def test_formula_error_inside_a_block_names_the_block(write_spec):
    error = _error(write_spec, """
    input: 8x8x6
    blocks:
      unit:
        params: {groups: 2}
        nodes:
          conv: {op: conv, filters: $in.depth // $grups, size: 1}
    nodes:
      u: {block: unit}
    """)
    assert error.location.line == 6 and error.layer == "u/conv"
    assert "'$grups' names no parameter of this block. Did you mean 'groups'?" in str(error)
    assert "in block 'unit' used as 'u'" in str(error)


def test_depthwise_conv_filters_default_to_the_input_depth(write_spec):
    graph = analyse(write_spec("""
    input: 9x9x7
    pattern: "[INPUT-CONV(5, 1)-CONV(size=3, pad=1, groups=depthwise)]"
    """))
    assert tuple(graph.nodes["conv2"].output) == (9, 9, 5)
    assert graph.nodes["conv2"].param_shapes["weight"] == (5, 1, 3, 3)
    error = _error(write_spec, """
    input: 9x9x7
    pattern: "[INPUT-CONV(size=3, groups=7)]"
    """)
    assert "missing required 'filters'" in str(error)


# ------------------------------------------------------------------------------ --set NAME.KEY

PATTERN_WITH_DROPOUT = """
input: 16x16x3
pattern: "[INPUT-CONV(8, 3, pad=1)-RELU-DROPOUT(0.5)-POOL(2)-FC(10)]"
"""


def test_set_reaches_a_pattern_layers_inline_setting(write_spec):
    path = write_spec(PATTERN_WITH_DROPOUT)
    assert analyse(path).nodes["dropout1"].attrs["rate"] == 0.5
    graph = analyse(path, ["dropout1.rate=0", "conv1.stride=2", "conv1.pad=same", "lr=0.05"])
    assert graph.nodes["dropout1"].attrs["rate"] == 0.0
    assert tuple(graph.nodes["conv1"].output) == (8, 8, 8)
    assert graph.graph["train"]["lr"] == 0.05  # bare keys are still train: settings
    # a pool's stride follows its size when only the size is overridden
    assert analyse(path, ["pool1.size=4"]).nodes["pool1"].attrs["stride"] == (4, 4)


def test_set_reaches_list_graph_and_block_layers(write_spec):
    listed = write_spec("""
    input: 8x8x3
    layers:
      - conv: {filters: 4, size: 3, pad: 1}
      - {op: dropout, rate: 0.3, name: drop}
    """, "l.yaml")
    assert analyse(listed, ["drop.rate=0.1"]).nodes["drop"].attrs["rate"] == 0.1
    assert analyse(listed, ["conv1.filters=$in.depth * 2"]).nodes["conv1"].output.depth == 6
    blocks = write_spec("""
    input: 8x8x3
    blocks:
      unit: {nodes: {conv: {op: conv, filters: 4, size: 1}}}
    nodes:
      a: {block: unit}
      b: {block: unit, repeat: 2}
    """, "b.yaml")
    graph = analyse(blocks, ["a/conv.filters=5", "b/2/conv.filters=7", "input.shape=4x4x2"])
    assert [graph.nodes[n].output.depth for n in ("a/conv", "b/1/conv", "b/2/conv")] == [5, 4, 7]
    assert graph.nodes["a/conv"].param_shapes["weight"] == (5, 2, 1, 1)


def test_set_on_an_unknown_layer_names_the_layers(write_spec):
    with pytest.raises(SpecError) as caught:
        analyse(write_spec(PATTERN_WITH_DROPOUT), ["dropuot1.rate=0"])
    text = str(caught.value)
    assert text.startswith("<command line>:1:1: --set dropuot1.rate: there is no layer "
                           "'dropuot1'. Did you mean 'dropout1'?"), text
    assert "the layers are: input, conv1, relu1, dropout1, pool1, fc1" in text


def test_set_of_an_unknown_key_names_the_valid_settings(write_spec):
    with pytest.raises(SpecError) as caught:
        analyse(write_spec(PATTERN_WITH_DROPOUT), ["conv1.strides=2"])
    text = str(caught.value)
    assert ("--set conv1.strides: layer 'conv1' (conv) has no setting 'strides'. Did you mean "
            "'stride'?") in text
    assert "conv takes: bias, dilation, filters, groups, pad, rounding, size, stride." in text


def test_set_with_a_bad_value_exits_2_through_the_cli(write_spec, capsys):
    path = write_spec(PATTERN_WITH_DROPOUT)
    assert main(["check", str(path), "--set", "dropout1.rate=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("FAIL <command line>:1:1: layer 'dropout1': (dropout) 'rate' expects")
    assert err.count("\n") == 1


# ------------------------------------------------------------------------------ output softmax

ENDS_IN_SOFTMAX = """
input: 8x8x3
pattern: "[INPUT-CONV(4, 3, pad=1)-RELU-FC(10)-SOFTMAX]"
"""


def test_an_output_softmax_is_folded_and_said_once(write_spec):
    graph = analyse(write_spec(ENDS_IN_SOFTMAX))
    (warning,) = graph.graph["warnings"]
    assert warning.startswith("the output layer 'softmax1' (softmax) is folded into the "
                              "cross_entropy loss"), warning
    assert "training reads 'fc1'" in warning
    # a softmax that is not the output, or no softmax, says nothing
    assert analyse(write_spec(ENDS_IN_SOFTMAX.replace("FC(10)-SOFTMAX", "SOFTMAX-FC(10)"),
                              "mid.yaml")).graph["warnings"] == []


@pytest.mark.parametrize("command", [["check"], ["compile", "--no-kernels"], ["run", "--verify"]])
def test_check_compile_and_run_print_the_warning(write_spec, capsys, command):
    path = write_spec(ENDS_IN_SOFTMAX)
    assert main([command[0], str(path), *command[1:]]) == 0
    err = capsys.readouterr().err
    assert err.count("convgraph: warning: the output layer 'softmax1' (softmax) is folded") == 1


# ------------------------------------------------------------------------------ every error


def test_independent_errors_are_reported_together(write_spec, capsys):
    path = write_spec("""
    input: 16x16x3
    epochs: 3
    layers:
      - conv: {filters: 8, sise: 3}
      - relu
      - pool: {size: two}
      - {op: fc, units: 10, name: relu1}
      - dropuot
    """)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one paragraph
    assert err.startswith(f"FAIL {path}:2:1: 5 errors: unknown top-level key 'epochs'."), err
    places = [part.split(": ", 1)[0] for part in err.split("; line ")[1:]]
    assert places == ["4:24", "6:18", "7:10", "8:5"], err
    for phrase in ("(conv) unknown key 'sise'", "(pool) 'size' expects", "layer name 'relu1' is "
                   "used twice (first at line 5)", "unknown op 'dropuot'"):
        assert phrase in err, phrase


def test_graph_form_reports_every_node_and_unknown_input(write_spec):
    with pytest.raises(SpecError) as caught:
        analyse(write_spec("""
        input: 8x8x3
        blocks:
          unit:
            nodes:
              conv: {op: conv, filters: 4, size: 1, bais: false}
        nodes:
          a: {block: unit, repeat: 3}
          b: {op: add, inputs: [a, c]}
          d: {op: relu, inputs: bb}
        """))
    error = caught.value
    assert [(e.location.line, e.layer) for e in error.errors] == [
        (5, "a/1/conv"), (8, "b"), (9, "d")]  # the block's error once, not once per copy
    assert "unknown input 'bb'. Did you mean 'b'?" in str(error)


def test_errors_stop_at_the_limit(write_spec):
    layers = "".join("  - conv: {filters: 0, size: 1}\n" for _ in range(14))
    with pytest.raises(SpecError) as caught:
        analyse(write_spec("input: 8x8x3\nlayers:\n" + layers))
    assert len(caught.value.errors) == 10
    assert str(caught.value).startswith(f"{caught.value.location}: the first 10 errors: ")


def test_one_error_is_reported_as_before(write_spec):
    with pytest.raises(SpecError) as caught:
        analyse(write_spec("input: 8x8x3\nlayers:\n  - conv: {filters: 0, size: 1}\n"))
    assert not hasattr(caught.value, "errors")
    assert str(caught.value).startswith(f"{caught.value.location.file}:3:")


def test_a_misspelt_default_is_one_error_not_one_per_layer(write_spec):
    with pytest.raises(SpecError) as caught:
        analyse(write_spec("""
        input: 8x8x3
        defaults: {conv: {filters: 4, sise: 3}}
        pattern: "[INPUT-CONV-RELU-CONV-CONV]"
        """))
    assert "(conv) unknown key 'sise'" in str(caught.value)
    assert not hasattr(caught.value, "errors")


def test_shape_errors_stay_first_only(write_spec):
    with pytest.raises(SpecError) as caught:
        analyse(write_spec("""
        input: 8x8x3
        layers:
          - conv: {filters: 4, size: 3, stride: 2}
          - conv: {filters: 4, size: 9}
        """))
    assert not hasattr(caught.value, "errors") and caught.value.layer == "conv1"


def test_a_dense_stack_with_formulas_verifies_on_the_device(write_spec, capsys):
    """Repeat copies (dense1/2/conv2) and resolved formulas reach code generation: every
    kernel of the small DenseNet agrees with the numpy reference on the real device."""
    small = DENSENET.replace("32x32x3", "8x8x3").replace("repeat: 6", "repeat: 2")
    small = small.replace("  dense2: {block: dense_layer, repeat: 2}\n  trans2: {block: "
                          "transition}\n  dense3: {block: dense_layer, repeat: 2}\n", "")
    assert "dense2" not in small
    assert main(["run", str(write_spec(small)), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "dense1/2/conv2" in out and "trans1/conv" in out and " 0 failed" in out


def test_every_mistake_of_one_layer_but_no_missing_setting_it_misspelt(write_spec):
    with pytest.raises(SpecError) as caught:
        analyse(write_spec("""
        input: 8x8x3
        layers:
          - conv: {filters: many, sise: 3, stride: 0}
        """))
    messages = [e.message for e in caught.value.errors]
    assert [m.split(" ", 2)[1] for m in messages] == ["unknown", "'filters'", "'stride'"]
    assert "missing" not in str(caught.value)  # 'size' is missing because 'sise' is misspelt


def test_train_and_command_line_mistakes_are_each_reported(write_spec):
    path = write_spec("""
    input: 8x8x3
    pattern: "[INPUT-RELU]"
    train: {lr: -1, epoch: 3}
    """)
    with pytest.raises(SpecError) as caught:
        analyse(path, ["batch=0", "optimizer=sgdd", "relu1.slope=1"])
    text = str(caught.value)
    assert text.startswith(f"{path}:3:17: 5 errors: (train) unknown key 'epoch'."), text
    for phrase in ("line 3:13: (train) 'lr' expects", "on the command line: (train) 'optimizer'",
                   "on the command line: (train) 'batch'", "on the command line: --set "
                   "relu1.slope: layer 'relu1' (relu) has no setting 'slope'"):
        assert phrase in text, phrase
