"""The merge and shape ops of issue 14 (mul, scale, pad, globalmaxpool) in one network: a
squeeze-and-excitation block with a layer-scaled residual (tests/specs/se_block.yaml) compiles,
passes ``run --verify`` and trains; and their shape rules refuse bad joins and settings with a
clear, located error. Their kernels and gradients are checked case by case by the registry
harnesses (the ``cases`` of ops/mul.py, ops/scale.py, ops/pad.py and ops/pool.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import convgraph

SE_BLOCK = Path(__file__).resolve().parent / "specs" / "se_block.yaml"


def _images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 3, 12, 12)).astype(np.uint8), rng.integers(0, 4, count)


def test_the_se_block_compiles_with_its_gate_broadcast(cli):
    status, out, err = cli("compile", SE_BLOCK, "--json")
    assert status == 0, err
    nodes = {node["name"]: node for node in json.loads(out)["nodes"]}
    assert nodes["se/gate"]["output_shape"] == [1, 1, 8]  # the gate...
    assert nodes["se/scaled"]["output_shape"] == [12, 12, 8]  # ... broadcast over its input
    assert nodes["pad"]["output_shape"] == [14, 14, 3]
    assert nodes["layer_scale"]["params"] == 8
    assert nodes["pool"]["output_shape"] == [1, 1, 8]


@pytest.mark.slow  # CI's time: its ops' kernels are in test_kernels' default tier
@pytest.mark.device
def test_the_se_block_passes_verify(cli):
    status, out, err = cli("run", SE_BLOCK, "--verify", "--random-weights", "--json")
    assert status == 0, err
    report = json.loads(out)
    checked = {check["op"] for check in report["checks"]}
    assert {"mul", "scale", "pad", "globalmaxpool"} <= checked
    assert report["failed"] == 0 and report["passed"] == len(report["checks"])


@pytest.mark.device
@pytest.mark.parametrize("init, moved", [
    # ConvNeXt's start: the branch is nearly off, so its fcs' float32 steps round away
    (1e-6, ("layer_scale.weight", "conv.weight", "fc.weight")),
    (1.0, ("layer_scale.weight", "se/expand.weight", "se/reduce.weight", "conv.weight")),
])
def test_the_se_block_trains_a_step(init, moved):
    model = convgraph.compile(str(SE_BLOCK), batch=8, overrides=[f"layer_scale.init={init}"])
    before = model.params
    np.testing.assert_array_equal(before["layer_scale.weight"], np.full(8, init, np.float32))
    x, y = _images(8, seed=1)
    history = model.fit((x, y), epochs=1)
    assert np.isfinite(history.history["train_loss"]).all()
    after = model.params
    for key in moved:
        assert not np.array_equal(before[key], after[key]), key


@pytest.mark.parametrize("gate, expected, fix", [
    ("{op: conv, filters: 3, size: 1, inputs: [squeeze]}", "depth mismatch",  # 1x1x3 vs 4
     "Fix: make 'gate' 4 deep"),
    ("{op: pool, size: 2, inputs: [squeeze]}", "volume mismatch",  # 4x4x4 vs 8x8x4
     "Fix: make one input a 1x1 gate"),
])
def test_mul_refuses_volumes_it_cannot_broadcast(cli, write_spec, gate, expected, fix):
    squeeze = "{op: gap, inputs: [input]}" if "conv" in gate else "{op: relu, inputs: [input]}"
    spec = write_spec(f"""
        name: bad_gate
        input: 8x8x4
        nodes:
          squeeze: {squeeze}
          gate: {gate}
          scaled: {{op: mul, inputs: [input, gate]}}
        """)
    status, out, err = cli("compile", spec)
    assert status == 2, err
    assert expected in err and "'scaled'" in err and fix in err
    assert "Traceback" not in err


def test_mul_takes_exactly_two_inputs(cli, write_spec):
    spec = write_spec("""
        name: three
        input: 8x8x4
        nodes:
          scaled: {op: mul, inputs: [input, input, input]}
        """)
    status, out, err = cli("compile", spec)
    assert status == 2 and "scaled" in err and "Traceback" not in err


@pytest.mark.parametrize("setting", ["pad: -1", "left: 1.5", "pad: 2x-1"])
def test_pad_refuses_settings_that_are_no_whole_numbers(cli, write_spec, setting):
    spec = write_spec(f"""
        name: bad_pad
        input: 8x8x4
        nodes:
          padded: {{op: pad, {setting}, inputs: [input]}}
        """)
    status, out, err = cli("compile", spec)
    assert status == 2 and "padded" in err and "Fix:" in err and "Traceback" not in err


def test_pad_sides_default_to_pad_and_each_may_be_set(cli, write_spec):
    spec = write_spec("""
        name: sides
        input: 8x6x4
        nodes:
          padded: {op: pad, pad: 2x1, left: 0, inputs: [input]}
        """)
    status, out, err = cli("compile", spec, "--json")
    assert status == 0, err
    (node,) = [node for node in json.loads(out)["nodes"] if node["name"] == "padded"]
    assert node["output_shape"] == [10, 8, 4]  # 8 + 0 + 2 wide, 6 + 1 + 1 high


def test_the_scale_starts_at_its_init_and_ones_by_default():
    from convgraph.params import initial_params
    from convgraph.pipeline import analyse

    graph = analyse({"name": "s", "input": "5x5x3", "pattern": "[INPUT-SCALE-SCALE(init=0.25)]"})
    params = initial_params(graph)
    assert sorted(params) == ["scale1.weight", "scale2.weight"]
    np.testing.assert_array_equal(params["scale1.weight"], np.ones(3))
    np.testing.assert_array_equal(params["scale2.weight"], np.full(3, 0.25))


def test_globalmaxpool_passes_a_tie_to_its_first_maximum_as_pytorch():
    from convgraph.ops.base import REGISTRY

    x = np.zeros((1, 1, 2, 3))
    x[0, 0, 0, 2] = x[0, 0, 1, 0] = 5.0  # two maxima: (0, 2) comes first row by row
    (dx,), _ = REGISTRY["globalmaxpool"].reference_backward(None, [x], None,
                                                             np.full((1, 1, 1, 1), 2.0), {}, 0)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 2] = 2.0
    np.testing.assert_array_equal(dx, expected)
