"""Every op's shape rule, parameter count and FLOPs against hand-computed values (the shape cases
each op declares, convgraph/ops/cases.py), and the published totals of well-known networks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from convgraph.core import Volume
from convgraph.ops.base import REGISTRY
from convgraph.ops.cases import Case, cases_of, kinds_needed
from convgraph.pipeline import analyse
from convgraph.shapes import totals

from .conftest import SPECS


def single(input_volume: str, layer: str, rounding: str = "exact"):
    """Analyse INPUT -> layer and return the layer's node data."""
    graph = analyse({"input": input_volume, "rounding": rounding, "pattern": f"[INPUT-{layer}]"})
    (name,) = [n for n in graph if n != "input" and not graph.nodes[n].get("inserted")]
    return graph.nodes[name]


def case_id(op: str, case) -> str:
    """'volume-layers' (as these ids always were), joins' volumes joined by '+'."""
    volume = "+".join(case.input) if case.form == "join" else case.input
    layers = case.layers if isinstance(case.layers, str) else "graph-" + "-".join(case.layers)
    return f"{volume}-{layers}" if layers else f"{volume}-{op}"


# Every op's shape cases (``Case(..., output=, params=, macs=)`` in its class, convgraph/ops/):
# each worked out by hand from (W - F + 2P)/S + 1 and the parameter-sharing formula
# K * (C/groups * F_h * F_w) + K.
SHAPE_CASES = cases_of("shape")


@pytest.mark.parametrize(("op", "case"), [(op, case) for op, _, case in SHAPE_CASES],
                         ids=[case_id(op, case) for op, _, case in SHAPE_CASES])
def test_shape_rule(op, case):
    graph = analyse({**case.spec(), "rounding": "exact"})
    node = graph.nodes[case.subject(graph)]
    assert node["op"] == op
    assert str(node["output"]) == case.output
    assert node["params"] == case.params
    assert node["macs"] == case.macs
    if case.macs:  # conv and fc: a multiply-add counts as 2
        assert node["flops"] == 2 * case.macs
    assert node["activation_bytes"] == 4 * node["output"].elements


def test_every_registered_op_has_a_shape_case():
    """A new op cannot go without: declare a ``Case(..., output=..., params=..., macs=...)``."""
    covered = {op for op, _, _ in SHAPE_CASES}
    missing = sorted(name for name, op in REGISTRY.items()
                     if "shape" in kinds_needed(op) and name not in covered)
    assert not missing, f"ops with no shape case (Case(..., output=...) in their class): {missing}"
    assert len(SHAPE_CASES) >= 37  # as many as when the cases moved onto the ops, or more


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "checks nothing"),
    ({"output": "8x6x5"}, "output, params and macs together"),
    ({"params": 0, "macs": 0}, "output, params and macs together"),
    ({"batch": 0}, "batch is a number of images"),
    ({"other_profile": True}, "give the case a batch"),
    ({"batch": 1, "kinks": True}, "set grad=True"),
])
def test_a_case_that_would_check_less_than_it_says_is_refused(fields, message):
    """A case declares what every harness checks; a half-declared one fails where it is
    written, not by quietly dropping out of a harness."""
    with pytest.raises(ValueError, match=message):
        Case("8x6x5", "RELU", **fields)


def test_importing_convgraph_registers_every_op_in_ops():
    """An op class in a module of convgraph/ops/ that the package does not import is missing
    from the registry, and so from the parser and every harness, silently: a fresh process
    that imports convgraph knows every op that importing each module of convgraph/ops/ adds."""
    code = ("import importlib, json, pkgutil\n"
            "import convgraph, convgraph.ops\n"
            "from convgraph.ops.base import REGISTRY\n"
            "before = set(REGISTRY)\n"
            "for module in pkgutil.iter_modules(convgraph.ops.__path__):\n"
            "    importlib.import_module('convgraph.ops.' + module.name)\n"
            "print(json.dumps(sorted(set(REGISTRY) - before)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    unregistered = json.loads(done.stdout)
    assert not unregistered, (f"ops {unregistered} register only when their module is imported "
                              f"by hand: import it in convgraph/ops/__init__.py")


@pytest.mark.parametrize(("rounding", "expected"), [("floor", 3), ("ceil", 4)])
def test_rounding_pool(rounding, expected):
    assert single("7x7x1", "POOL(2)", rounding)["output"] == Volume(expected, expected, 1)


def test_rounding_ceil_never_starts_a_window_in_the_padding():
    # PyTorch's ceil_mode rule: (5 + 2*1 - 2)/2 + 1 = 3.5 -> 4, but the 4th window would start at
    # 6 = W + pad, wholly in the padding, so the output is 3
    assert single("5x5x1", "POOL(2, 2, pad=1)", "ceil")["output"].width == 3
    # (6 + 2 - 3)/2 + 1 = 3.5 -> 4: the 4th window starts at 6 < 6 + 1, inside, so it stays
    assert single("6x6x1", "POOL(3, 2, pad=1)", "ceil")["output"].width == 4


def test_rounding_per_layer_overrides_global():
    graph = analyse({"input": "7x7x1", "rounding": "floor",
                     "pattern": "[INPUT-POOL(2)-POOL(2, rounding=ceil)]"})
    assert graph.nodes["pool1"]["output"].width == 3
    assert graph.nodes["pool2"]["output"].width == 2


def test_same_padding_is_asymmetric_bottom_right():
    node = single("28x28x1", "CONV(2, 5, stride=2, pad=same)")
    # total (14 - 1)*2 + 5 - 28 = 3: 1 before, 2 after
    assert (node["derived"]["pad_left"], node["derived"]["pad_right"]) == (1, 2)
    assert (node["derived"]["pad_top"], node["derived"]["pad_bottom"]) == (1, 2)


def test_add_and_concat():
    graph = analyse({
        "input": "8x8x4",
        "nodes": {
            "a": {"op": "conv", "filters": 6, "size": 3, "pad": 1, "inputs": ["input"]},
            "b": {"op": "conv", "filters": 6, "size": 1, "inputs": ["input"]},
            "sum": {"op": "add", "inputs": ["a", "b"]},
            "cat": {"op": "concat", "inputs": ["sum", "input", "a"]},
        },
    })
    assert graph.nodes["sum"]["output"] == Volume(8, 8, 6)
    assert graph.nodes["sum"]["flops"] == 8 * 8 * 6
    assert graph.nodes["cat"]["output"] == Volume(8, 8, 16)


def test_conv_weight_shapes_follow_pytorch():
    node = single("16x12x8", "CONV(6, 5x3, groups=2)")
    assert node["param_shapes"] == {"weight": (6, 4, 3, 5), "bias": (6,)}  # (K, C/g, kh, kw)
    fc = single("4x3x2", "FC(5)")
    assert fc["param_shapes"] == {"weight": (5, 24), "bias": (5,)}
    bn = single("4x3x2", "BN")
    assert bn["param_shapes"] == {"weight": (2,), "bias": (2,)}
    assert bn["buffer_shapes"] == {"running_mean": (2,), "running_var": (2,)}


def spec_totals(name: str) -> dict:
    return totals(analyse(SPECS / f"{name}.yaml"))


def test_vgg16_matches_published_counts():
    sums = spec_totals("vgg16")
    assert sums["params"] == 138_357_544  # torchvision vgg16
    assert round(sums["macs"] / 1e9, 2) == 15.47  # torchvision: 15.47 GFLOPS (multiply-adds)


def test_resnet18_matches_published_counts():
    sums = spec_totals("resnet18")
    assert sums["params"] == 11_689_512  # torchvision resnet18
    assert round(sums["macs"] / 1e9, 2) == 1.81  # torchvision: 1.81 GFLOPS (multiply-adds)
    # running mean and variance of 20 batchnorms: stem, 4 per stage, +1 projection in 2-4
    assert sums["buffers"] == 2 * (64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512)


def test_resnet18_volumes():
    graph = analyse(SPECS / "resnet18.yaml")
    expected = {"conv1": "112x112x64", "maxpool": "56x56x64", "layer1/block2/relu2": "56x56x64",
                "layer2/block1/downsample": "28x28x128", "layer3/block2/relu2": "14x14x256",
                "layer4/block2/relu2": "7x7x512", "avgpool": "1x1x512", "fc": "1x1x1000"}
    assert {n: str(graph.nodes[n]["output"]) for n in expected} == expected
    assert "layer1/block1/downsample" not in graph  # switched off: identity shortcut


def test_small_published_networks():
    assert spec_totals("lenet5")["params"] == 156 + 2416 + 48120 + 10164 + 850
    assert spec_totals("fashion_convnet")["params"] == 832 + 51264 + 3136 * 1024 + 1024 + 10250
    # conv1 432 + bn 32, blocks 4,672 / 14,528 / 57,728, fc 650
    assert spec_totals("resnet8")["params"] == 78_042


def test_seed_network_volumes_are_the_notes():
    graph = analyse(SPECS / "seed.yaml")
    volumes = [str(graph.nodes[n]["output"]) for n in ("input", "conv1", "relu1", "pool1", "fc1")]
    assert volumes == ["32x32x3", "32x32x12", "32x32x12", "16x16x12", "1x1x10"]
