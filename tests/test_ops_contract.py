"""The op contract (ops/base.py): every registered op declares what the stages need, consistently.

Pure Python, no device: the registry's declarations against the kernel files they name, the
weights against the parameter re-layouts, and registration and lowering refusing what an op did
not declare. Nothing outside ops/ may know an op by name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from convgraph.codegen import profile as profiles
from convgraph.codegen.fold import folded_layers
from convgraph.codegen.launches import Buffer, Ints, Scalar
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.source import kernel_file, kernels_dir
from convgraph.codegen.training import plan_training
from convgraph.errors import ConvgraphError
from convgraph.graph import ordered
from convgraph.ops.base import (
    _ALIASES,
    INIT_RULES,
    REGISTRY,
    Node,
    Op,
    OpDeclarationError,
    Param,
    declaration_problems,
    register,
)
from convgraph.ops.values import integer
from convgraph.pipeline import analyse
from convgraph.shapes import totals

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
# today's ops in one small network: conv/bn/relu epilogues, pool, gap, concat, add, dropout,
# sigmoid/tanh/leakyrelu, an fc reading a volume (implicit flatten) and a final softmax. (Not
# required to hold every op: a new op declares its own cases, which the kernel harnesses run.)
EVERY_OP = {
    "input": "8x8x3",
    "nodes": {
        "c1": {"op": "conv", "filters": 4, "size": 3, "pad": 1},
        "b1": {"op": "batchnorm"},
        "r1": {"op": "relu"},
        "p1": {"op": "maxpool", "inputs": "r1"},
        "a1": {"op": "avgpool", "inputs": "r1"},
        "j1": {"op": "concat", "inputs": ["p1", "a1"]},
        "s1": {"op": "sigmoid", "inputs": "j1"},
        "t1": {"op": "tanh", "inputs": "j1"},
        "sum": {"op": "add", "inputs": ["s1", "t1"]},
        "l1": {"op": "leakyrelu", "inputs": "sum"},
        "d1": {"op": "dropout", "rate": 0.25},
        "g1": {"op": "gap", "inputs": "d1"},
        "f0": {"op": "fc", "units": 6, "inputs": "d1"},
        "f1": {"op": "flatten", "inputs": "g1"},
        "f2": {"op": "fc", "units": 6, "inputs": "f1"},
        "both": {"op": "add", "inputs": ["f0", "f2"]},
        "out": {"op": "softmax"},
    },
}


def _networks():
    graphs = {path.stem: analyse(str(path)) for path in SPECS}
    graphs["every-op"] = analyse(EVERY_OP)
    return graphs


NETWORKS = _networks()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_declarations_are_complete(name):
    op = REGISTRY[name]
    assert declaration_problems(op) == []
    assert op.summary, f"{name} has no summary line"
    for family in op.kernels:
        assert (kernels_dir() / f"{family}.cl").is_file(), f"{name}: kernels/{family}.cl"
    assert re.fullmatch(r"#[0-9a-f]{6}", op.colour), f"{name}: colour {op.colour!r}"
    if op.implicit_flatten is not None:  # a registered one-input op
        assert REGISTRY[op.implicit_flatten].max_inputs == 1
    derived = op.derived_defaults({key: param.default for key, param in op.params.items()})
    assert set(derived) <= {key for key, param in op.params.items() if param.default is None}


@pytest.mark.parametrize("name", sorted(n for n, op in REGISTRY.items() if op.activation_code))
def test_fusable_activations_have_a_code_common_cl_computes(name):
    """An activation that can run as an epilogue names an ACT_* constant that common.cl
    defines and that both ACTIVATE and ACTIVATE_BACKWARD handle."""
    code = REGISTRY[name].activation_code
    common = kernel_file("common")
    assert re.search(rf"^#define {code} \d+$", common, re.M), code
    for macro in ("ACTIVATE", "ACTIVATE_BACKWARD"):
        body = common[common.index(f"#define {macro}("):]
        body = body[: body.index("\n\n")]
        assert f"(kind) == {code}" in body, (macro, code)
    assert "elementwise" in REGISTRY[name].kernels  # its standalone kernels


@pytest.mark.parametrize("network", sorted(n for n, g in NETWORKS.items()  # vgg16: 10 s, no
                                     if totals(g)["params"] < 20_000_000))  # op the rest lack
def test_weights_match_shapes_and_relayouts(network):
    """Every node's declared weights: known init rules, the summary's shapes, and a device
    re-layout that holds every one and gives it back (device_params / host_params)."""
    graph = NETWORKS[network]
    plan = plan_forward(graph, profiles.CPU)
    for name in ordered(graph):
        node = graph.nodes[name]
        assert isinstance(node, Node) and node.name == name
        op = REGISTRY[node.op]
        for key, weight in node.weights.items():
            assert weight.init in INIT_RULES, (name, key)
            assert all(isinstance(n, int) and n > 0 for n in weight.shape), (name, key)
        assert node.param_shapes == {k: w.shape for k, w in node.weights.items() if w.trainable}
        if not node.weights:
            continue
        host = {key: (np.arange(np.prod(w.shape)) % 251 + 1).astype(np.float32).reshape(w.shape)
                for key, w in node.weights.items()}  # distinct values: a transposition shows
        x = plan.layout_of(node.inputs[0])
        y = plan.layout_of(name)
        device = op.device_params(node, host, x, y)
        assert set(node.weights) <= set(device), name
        back = op.host_params(node, device, x, y)
        assert set(back) == set(node.weights), name
        for key in node.weights:
            np.testing.assert_array_equal(back[key], host[key], err_msg=f"{name}.{key}")


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_plans_follow_the_declarations(network):
    """Every launch comes from a kernel file its node's op declares (or the planner's own:
    loss, optimizer, a fused activation's backward); epilogues are applied by the kernels of
    ops that take one; only trainable weights get optimizer steps."""
    graph = NETWORKS[network]
    own = {"reduction", "optim"} | {f for op in REGISTRY.values() if op.activation_code
                                     for f in op.kernels}
    plans = [plan_forward(graph, profiles.CPU)]
    try:
        plans.append(plan_training(graph, profiles.CPU, "adam"))
    except ConvgraphError:  # no class scores: not trainable
        pass
    for plan in plans:
        table = {**plan.buffer_sizes(4), **plan.fixed_sizes()}  # the ExecutablePlan protocol
        for launches in plan.launch_groups().values():
            for launch in launches:
                family = plan.kernels[launch.kernel].family
                op = REGISTRY[graph.nodes[launch.node]["op"]]
                assert family in op.kernels or family in own, (launch.node, family)
                for arg in launch.args:  # typed; every buffer named is in the buffer table
                    assert isinstance(arg, Buffer | Scalar | Ints), arg
                    name = plan.buffer_name(arg)
                    assert (name is None) == isinstance(arg, Scalar | Ints), arg
                    assert name is None or name in table, (launch.kernel, name)
    forward = plans[0]
    doer = folded_layers(forward)  # a folded batchnorm's activation: its producer applies it
    for name in ordered(graph):
        node = graph.nodes[name]
        if node.epilogue:
            assert REGISTRY[node.op].takes_epilogue
            code = REGISTRY[graph.nodes[node.epilogue]["op"]].activation_code
            epilogues = {forward.kernels[launch.kernel].defines.get("EPILOGUE")
                         for launch in forward.launches if launch.node == doer.get(name, name)}
            assert code in epilogues, (name, epilogues)
    if len(plans) == 2:
        trainable = {(n, k) for n in graph for k, w in graph.nodes[n].weights.items()
                     if w.trainable}
        assert set(plans[1].trainable) == trainable
        stepped = {(launch.args[0].node, launch.args[0].key)
                   for launch in plans[1].groups["step"]}
        assert stepped == trainable


def test_lowering_refuses_an_undeclared_kernel_file(monkeypatch):
    graph = analyse({"input": "8x8x3", "pattern": "[INPUT-CONV(4, 3)-POOL-FC(2)]"})
    monkeypatch.setattr(type(REGISTRY["pool"]), "kernels", ("conv",))
    with pytest.raises(OpDeclarationError, match=r"op 'pool' .* kernels/pool\.cl.*add 'pool'"):
        plan_forward(graph, profiles.CPU, fold=False)  # folded, the conv would write the pool


def test_planning_refuses_an_epilogue_the_kernels_drop(monkeypatch):
    graph = analyse({"input": "8x8x3", "pattern": "[INPUT-CONV(4, 3)-RELU-FC(2)]"})
    conv = type(REGISTRY["conv"])
    monkeypatch.setattr(conv, "lower", lambda self, ctx: None)
    with pytest.raises(OpDeclarationError, match="did not apply the fused activation 'relu1'"):
        plan_forward(graph, profiles.CPU)


def _op_class(**body):
    class Example(Op):
        name = "example_op"
        summary = "an example"
        kernels = ("elementwise",)
        params = {"units": Param(integer(1))}

        def infer(self, node):
            return node.input_volumes[0], {}

        def lower(self, ctx):
            pass

        def lower_backward(self, ctx):
            pass

        def reference(self, node, inputs, params):
            return inputs[0]

        def reference_backward(self, node, inputs, output, grad, params, seed):
            return [grad], {}

    for key, value in body.items():
        setattr(Example, key, value)
    return Example


@pytest.mark.parametrize("change, complaint", [
    ({"kernels": ()}, "declares no 'kernels'"),
    ({"kernels": "elementwise"}, "must be a tuple"),
    ({"lower_backward": Op.lower_backward}, "does not define 'lower_backward'"),
    ({"reference": Op.reference}, "does not define 'reference'"),
    ({"name": "relu"}, "already op 'relu'"),
    ({"aliases": ("dense",)}, "already op 'fc'"),
    ({"positional": ("size",)}, "unknown params"),
    ({"activation_code": "RELU"}, "ACT_"),
    ({"weights": lambda self, node: {}}, "does not define 'device_params'"),
])
def test_register_refuses_incomplete_declarations(change, complaint):
    before = (dict(REGISTRY), dict(_ALIASES))
    with pytest.raises(OpDeclarationError, match=re.escape(complaint)):
        register(_op_class(**change))
    assert (REGISTRY, _ALIASES) == before


def test_a_complete_op_registers():
    try:
        register(_op_class())
        assert "example_op" in REGISTRY
    finally:
        REGISTRY.pop("example_op", None)
        _ALIASES.pop("example_op", None)


def test_no_op_is_named_outside_ops():
    """What is known about an op lives on its class: no module outside ops/ names one (only
    the graph's source, 'input', which the spec language itself names)."""
    names = set(_ALIASES) - {"input"}
    found = []
    for path in sorted((ROOT / "convgraph").rglob("*.py")):
        if "ops" in path.relative_to(ROOT / "convgraph").parts[:1]:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                      for word in re.findall(r"""["']([a-z_0-9]+)["']""", line) if word in names]
    assert not found, "\n".join(found)
