"""The network drawing (`compile --graph`): clusters per block, volumes on the edges, settings and
defaults, fused layers inside their host's box, and deep networks wrapped to a page's shape."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from convgraph.draw import draw, plan_drawing, render_svg, settings_of, to_dot
from convgraph.pipeline import analyse

from .conftest import SPECS

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is missing")


def _clusters(dot_text: str) -> list[str]:
    """The bold titles of the DOT text's clusters, in order."""
    return re.findall(r"subgraph cluster_\d+ \{\n\s*label=<<B>([^<]+)", dot_text)


def test_every_block_instance_is_a_cluster_nested_as_the_names_are():
    text = to_dot(analyse(SPECS / "resnet18.yaml"))
    titles = _clusters(text)
    # four stages, each of two basic blocks (its instance's own name, then the block it uses)
    assert [t for t in titles if t.startswith("layer")] == ["layer1", "layer2", "layer3",
                                                             "layer4"]
    assert len(re.findall(r"<B>block\d  <FONT COLOR=\"#7a7a7a\">basic</FONT></B>", text)) == 8
    stage = text.index("label=<<B>layer2</B>")
    inner = text.index('"layer2/block1/conv1" [label=')
    assert stage < inner < text.index("label=<<B>layer3</B>")


def test_a_network_without_blocks_has_no_cluster():
    assert "subgraph cluster" not in to_dot(analyse(SPECS / "seed.yaml"))


def test_edges_carry_the_volume_and_a_merge_shows_its_input_order():
    graph = analyse(SPECS / "resnet8.yaml")
    text = to_dot(graph)
    assert '"res2/conv2" -> "res2/bn2" [label=<<FONT COLOR="#333333">16x16x32</FONT>>];' in text
    inputs = graph.nodes["res2/add"]["inputs"]  # bn2 then the projection's batchnorm
    assert inputs == ["res2/bn2", "res2/proj_bn"]
    assert '"res2/bn2" -> "res2/add" [label=<<FONT COLOR="#333333">1: 16x16x32' in text
    assert '"res2/proj_bn" -> "res2/add" [label=<<FONT COLOR="#333333">2: 16x16x32' in text


def test_concat_inputs_are_numbered_in_the_order_written(write_spec):
    spec = write_spec("""
        name: branches
        input: 8x8x3
        nodes:
          a: {op: conv, filters: 4, size: 1, inputs: [input]}
          b: {op: conv, filters: 6, size: 1, inputs: [input]}
          joined: {op: concat, inputs: [b, a]}
          fc: {op: fc, units: 2}
        """)
    text = to_dot(analyse(spec))
    assert '"b" -> "joined" [label=<<FONT COLOR="#333333">1: 8x8x6' in text
    assert '"a" -> "joined" [label=<<FONT COLOR="#333333">2: 8x8x4' in text


def test_a_box_shows_changed_settings_and_the_defaults_lighter():
    graph = analyse(SPECS / "resnet8.yaml")
    changed, defaults = settings_of("conv", graph.nodes["res2/conv1"]["attrs"],
                                    graph.graph["rounding"])
    assert "filters=32" in changed and "stride=2" in changed and "bias=false" in changed
    assert "dilation=1" in defaults and "groups=1" in defaults and "stride=2" not in defaults
    text = to_dot(graph)
    box = re.search(r'"res2/conv1" \[label=(.*)\];', text).group(1)
    assert "filters=32 size=3 stride=2 pad=1" in box
    assert re.search(r'COLOR="#7a7a7a">dilation=1 groups=1', box)
    assert "4,608 params" in box


def test_a_fused_activation_is_drawn_inside_its_host_and_edges_leave_the_host():
    graph = analyse(SPECS / "resnet8.yaml")
    assert graph.nodes["res1/relu1"]["fused_into"] == "res1/bn1"
    drawing = plan_drawing(graph)
    assert "res1/relu1" not in drawing.boxes and drawing.fused["res1/bn1"] == ["res1/relu1"]
    text = to_dot(graph)
    box = re.search(r'"res1/bn1" \[label=(.*)\];', text).group(1)
    assert '"res1/relu1" [' not in text and "+ relu (fused: relu1)" in box
    assert '"res1/bn1" -> "res1/conv2" [' in text
    # an implicit flatten fused into the fc after it: the edge comes from the layer before
    lenet = to_dot(analyse(SPECS / "lenet5.yaml"))
    assert "(fused: fc1_flatten)" in lenet and '"pool2" -> "fc1" [' in lenet


def test_labels_from_the_spec_are_escaped_for_dot(write_spec, tmp_path):
    spec = write_spec('name: "a \\"<b>\\" & \'c\' \\\\ end"\ninput: 8x8x1\n'
                      'pattern: "[INPUT-CONV(2, 3)-FC(2)]"\n')
    text = to_dot(analyse(spec))
    assert text.startswith('digraph "a \\"<b>\\" & \'c\' \\\\ end" {')
    if shutil.which("dot"):
        done = subprocess.run(["dot", "-Tsvg"], input=text, text=True, capture_output=True,
                              timeout=60)
        assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr


def test_small_networks_stay_one_column():
    for name in ("seed", "lenet5", "fashion_convnet"):
        drawing = plan_drawing(analyse(SPECS / f"{name}.yaml"))
        assert set(drawing.column.values()) == {0}, name
    text = to_dot(analyse(SPECS / "seed.yaml"))
    assert "rank=same" not in text and "constraint=false" not in text


def test_deep_networks_are_laid_in_columns_that_never_cut_a_block():
    graph = analyse(SPECS / "resnet18.yaml")
    drawing = plan_drawing(graph)
    columns = set(drawing.column.values())
    assert len(columns) >= 3
    for box in drawing.boxes:  # a top-level block instance lies in one column
        if "/" in box:
            first = next(b for b in drawing.boxes if b.split("/")[0] == box.split("/")[0])
            assert drawing.column[box] == drawing.column[first]
    text = to_dot(graph)
    assert "newrank=true" in text and "{ rank=same; " in text
    assert "constraint=false" in text


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


@needs_dot
@pytest.mark.parametrize("spec, tallest", [("resnet18", 3000), ("vgg16", 2000)])
def test_deep_networks_render_near_a_page_shape(tmp_path, spec, tallest):
    """Measured: ResNet-18 was one column of 791x6431 px and VGG-16 236x4069 px; wrapped into
    columns they render near a page's shape (2157x2070 and 880x1032 px when this was written)."""
    png = tmp_path / f"{spec}.png"
    draw(analyse(SPECS / f"{spec}.yaml"), str(png))
    width, height = _png_size(png)
    assert height <= tallest, (width, height)
    assert 0.5 <= height / width <= 2.0, (width, height)


@needs_dot
def test_render_svg_draws_one_node_per_box():
    graph = analyse(SPECS / "resnet8.yaml")
    svg = render_svg(graph)
    titles = re.findall(r'<g id="node\d+" class="node">\s*<title>([^<]+)</title>', svg)
    assert titles and sorted(titles) == sorted(plan_drawing(graph).boxes)


def test_render_svg_is_none_without_graphviz(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert render_svg(analyse(SPECS / "seed.yaml")) is None
