"""The activations of issue 14 beyond what every op's cases check (test_kernels, test_gradients,
test_shapes, test_oclgrind run those): where a training step fuses them, their kinks far from
zero on the device, their settings' errors, and a network using them all trained a step.

An activation whose derivative needs its input (``derivative_from = "input"``: hardswish, silu,
gelu) runs fused in inference but on its own in training; the others stay fused in both. Both
kinds, fused after a conv and unfused after an add, must give the float64 reference's gradients
on inputs spread to reach every kink (relu6's 6, clip's bounds, hardsigmoid's and hardswish's
±3), which the cases' standard-normal batches rarely reach.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convgraph
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.profile import CPU
from convgraph.codegen.training import plan_training
from convgraph.errors import SpecError
from convgraph.ops.base import REGISTRY, canonical_op_name
from convgraph.pipeline import analyse
from convgraph.train.session import TrainingSession
from convgraph.verify import random_params
from tests.test_kernels import check_forward, check_gradients, least_likely, on_devices, prepared

EXAMPLE = Path(__file__).resolve().parent / "specs" / "activations.yaml"

# (written as a node, how far the inputs must spread to reach its kinks)
ACTIVATIONS = [
    ({"op": "relu6"}, 8.0),
    ({"op": "clip", "min": -0.5, "max": 0.75}, 1.0),
    ({"op": "hardsigmoid"}, 4.0),
    ({"op": "hardsigmoid", "alpha": 0.2, "beta": 0.4}, 4.0),
    ({"op": "hardswish"}, 4.0),
    ({"op": "silu"}, 4.0),
    ({"op": "gelu"}, 3.0),
    ({"op": "gelu", "approximate": "tanh"}, 3.0),
    ({"op": "elu", "alpha": 0.5}, 3.0),
]
IDS = ["-".join(str(value) for value in node.values()) for node, _ in ACTIVATIONS]


def network(activation: dict, fused: bool) -> dict:
    """conv -> activation -> conv -> fc, the activation fused into the first conv (and, from its
    output, differentiated by the second conv's input-gradient kernel: its gate), or after an
    add (which takes no epilogue) so that it runs on its own."""
    nodes = {"conv": {"op": "conv", "filters": 6, "size": 3, "pad": 1, "inputs": ["input"]}}
    before = "conv"
    if not fused:
        nodes["join"] = {"op": "add", "inputs": ["conv", "conv"]}
        before = "join"
    nodes["act"] = {**activation, "inputs": [before]}
    nodes["after"] = {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["act"]}
    nodes["head"] = {"op": "fc", "units": 5, "inputs": ["after"]}
    return {"name": "act", "input": "7x5x3", "nodes": nodes, "output": "head"}


def kernels_of(plan) -> list[tuple[str, dict]]:
    return [(spec.selector, spec.defines) for spec in plan.kernels.values()]


def standalone(plan, code: str) -> set[str]:
    """The activation kernels of ``plan`` computing ``code`` on their own (not as an epilogue)."""
    return {selector for selector, defines in kernels_of(plan)
            if selector.startswith("ACTIVATION_") and defines.get("ACTIVATION") == code}


@pytest.mark.parametrize(("activation", "spread"), ACTIVATIONS, ids=IDS)
def test_training_fuses_an_activation_only_where_its_derivative_allows(activation, spread):
    graph = analyse(network(activation, fused=True))
    op = REGISTRY[activation["op"]]
    code, _ = op.epilogue_args(graph.nodes["act"])
    assert graph.nodes["conv"].epilogue == "act"
    assert not standalone(plan_forward(graph, CPU), code)  # inference: in the conv's epilogue
    training = standalone(plan_training(graph, CPU, "sgd"), code)
    if op.derivative_from == "input":  # its own forward, and a backward reading its input
        assert training == {"ACTIVATION_FORWARD", "ACTIVATION_BACKWARD"}
        backward = [d for s, d in kernels_of(plan_training(graph, CPU, "sgd"))
                    if s == "ACTIVATION_BACKWARD" and d.get("ACTIVATION") == code]
        assert all(d.get("FROM_INPUT") == 1 for d in backward)
    else:  # differentiated from the conv's stored output, never run on its own
        assert not training
        gates = [d for s, d in kernels_of(plan_training(graph, CPU, "sgd")) if "GATE" in d]
        assert [d["GATE"] for d in gates if d["GATE"] != "ACT_NONE"] == [code]


def _kink_params() -> list:
    """Every activation fused and alone at batches 1 and 3; the default tier runs one of
    fused-b3 and alone-b1 per activation, by turns (so both modes and batches), the slow tier
    all four."""
    modes = [(True, 3, "fused-b3"), (False, 1, "alone-b1"), (True, 1, "fused-b1"),
             (False, 3, "alone-b3")]
    return [pytest.param(activation, spread, fused, batch, id=f"{name}-{label}",
                         marks=() if mode == index % 2 else (pytest.mark.slow,))
            for index, ((activation, spread), name) in enumerate(zip(ACTIVATIONS, IDS))
            for mode, (fused, batch, label) in enumerate(modes)]


@on_devices
@pytest.mark.parametrize(("activation", "spread", "fused", "batch"), _kink_params())
def test_gradients_reach_every_kink(cl_device, activation, spread, fused, batch):
    """Forward and one backward pass, fused and not, against the float64 reference on inputs
    spread past the kinks; batch 1 and an odd batch."""
    spec = network(activation, fused)
    model, params = prepared(spec, cl_device, batch, seed=batch)
    x = (np.random.default_rng(batch).normal(size=(batch, 3, 5, 7)) * spread).astype(
        np.float32)
    check_forward(model, params, x, what=f"{activation} forward batch {batch}")
    graph = analyse(spec)
    session = TrainingSession(graph, device=cl_device, batch=batch)
    session.set_params(params)
    errors = check_gradients(session, params, x, least_likely(graph, params, x),
                             what=f"{activation} fused={fused} batch {batch}")
    assert "d conv" in errors and "d conv.weight" in errors


def test_swish_is_silu():
    assert canonical_op_name("swish") == "silu"
    graph = analyse({"input": "4x4x2", "pattern": "[INPUT-SWISH-HARD_SWISH-HARD_SIGMOID]"})
    ops = [graph.nodes[name].op for name in graph if name != "input"]
    assert sorted(ops) == ["hardsigmoid", "hardswish", "silu"]


def test_hardtanh_is_clip_from_minus_one_to_one():
    graph = analyse({"input": "4x4x2", "pattern": "[INPUT-HARDTANH-CLIP(0.5, 2)]"})
    clips = [graph.nodes[name] for name in graph if name != "input"]
    assert [(node.op, node.attrs["min"], node.attrs["max"]) for node in clips] == [
        ("clip", -1.0, 1.0), ("clip", 0.5, 2.0)]


def test_the_pattern_form_writes_negative_arguments():
    """Inside a layer's parentheses '-' before a number is its sign, not the layer separator."""
    graph = analyse({"input": "4x4x2",
                     "pattern": "[INPUT-CLIP(-0.5, 1)-CLIP(min=-2e-1, max=-1e-2)-ELU]"})
    clips = [graph.nodes[name] for name in graph if graph.nodes[name].op == "clip"]
    assert [(node.attrs["min"], node.attrs["max"]) for node in clips] == [(-0.5, 1.0),
                                                                        (-0.2, -0.01)]


@pytest.mark.parametrize(("node", "complaint"), [
    ({"op": "clip", "min": 1, "max": 1}, "min below max"),
    ({"op": "clip", "min": 0}, "max"),
    ({"op": "elu", "alpha": 0}, "alpha"),
    ({"op": "hardsigmoid", "alpha": -0.2}, "alpha"),
    ({"op": "gelu", "approximate": "sigmoid"}, "none, tanh"),
])
def test_bad_settings_are_refused_with_a_fix(node, complaint):
    spec = {"input": "4x4x2", "nodes": {"act": {**node, "inputs": ["input"]}}}
    with pytest.raises(SpecError) as caught:
        analyse(spec)
    assert complaint in str(caught.value)
    assert type(caught.value).__name__ != "ConvgraphError"


def test_a_bad_clip_exits_2_from_the_command_line(tmp_path):
    path = tmp_path / "clip.yaml"
    path.write_text("input: 4x4x2\nnodes:\n  act: {op: clip, min: 2, max: -2}\n")
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "check", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "min below max" in done.stderr and "Traceback" not in done.stderr


@on_devices
def test_the_example_network_trains_a_step(cl_device):
    """tests/specs/activations.yaml: gradients against numpy, then one Adam step that changes
    the weights and leaves a finite loss."""
    graph = analyse(str(EXAMPLE))
    ops = {data["op"] for _, data in graph.nodes(data=True)}
    assert ops >= {"relu6", "clip", "hardsigmoid", "hardswish", "silu", "gelu", "elu"}
    session = TrainingSession(graph, device=cl_device, batch=2)
    params = random_params(session, seed=3)
    session.set_params(params)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32) * 3
    check_gradients(session, params, x, least_likely(graph, params, x), what="activations.yaml")

    model = convgraph.compile(str(EXAMPLE), device=cl_device, batch=8)
    data = model.dataset("train")
    before = model.params
    history = model.fit((data.x[:8], data.y[:8]), epochs=1, verbose=0)
    assert np.isfinite(history[-1].train_loss)
    after = model.params
    assert any(not np.array_equal(before[key], after[key]) for key in before)
