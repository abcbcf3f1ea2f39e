"""Folding in inference (convgraph/codegen/fold.py, README "Folding in inference").

An inference plan folds a batchnorm into the conv, depthwise conv or fc before it (weights and
bias take gamma / sqrt(var + eps) and the shift, in float64 on the host at each upload) and a
2x2 stride-2 max pool into the epilogue of the conv before it; nothing folds where the
producer's output has another reader, or the pool is not a whole-window 2x2/2 max. The device
checks compile with shared buffers (the plan ``predict`` runs) on NaN-poisoned activations and
compare with the float64 numpy reference of the unfolded graph, at the kernel tests' tolerance;
the plan checks need no device. Oclgrind runs of the folded kernels are in the slow tier.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest

from convgraph.codegen.fold import fold_params, folded_layers
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.profile import CPU, GPU, OCLGRIND
from convgraph.ops import winograd
from convgraph.ops.base import REGISTRY
from convgraph.pipeline import analyse
from convgraph.reference import node_params, reference_forward
from convgraph.verify import random_params, relative_error

from .test_kernels import check_forward, input_batch, on_devices, prepared
from .test_oclgrind import ICD, run_under_oclgrind

# the GPU profile's direct family: the tiled one (its default) keeps every pool a pass of its own
GPU_DIRECT = replace(GPU, conv_family="direct")

# every fold at once: conv (no bias) + bn + relu + pool that floors an odd size; depthwise +
# bn + relu6; conv + silu + pool (silu is not monotone: activated before the max); fc + bn
MIXED = {"name": "mixed", "input": "13x11x3", "pattern": (
    "[INPUT-CONV(12, 3, pad=1, bias=false)-BN-RELU-POOL(2, rounding=floor)"
    "-CONV(12, 3, pad=1, groups=depthwise)-BN-RELU6-CONV(8, 3, pad=1)-SILU"
    "-POOL(2, rounding=floor)-FC(20)-BN-RELU-FC(5)]")}
MIXED_FOLDS = {"batchnorm1": "conv1", "pool1": "conv1", "batchnorm2": "conv2", "pool2": "conv3",
               "batchnorm3": "fc1"}

# a residual block (ResNet's basic block), then a conv read twice: its bn cannot fold
RESIDUAL = {"name": "residual", "input": "9x7x8", "nodes": {
    "a": {"op": "conv", "filters": 8, "size": 3, "pad": 1, "bias": False, "inputs": ["input"]},
    "a_bn": "batchnorm", "a_relu": "relu",
    "b": {"op": "conv", "filters": 8, "size": 3, "pad": 1, "bias": False},
    "b_bn": "batchnorm",
    "sum": {"op": "add", "inputs": ["b_bn", "input"]}, "sum_relu": "relu",
    "c": {"op": "conv", "filters": 8, "size": 1},
    "c_bn": {"op": "batchnorm", "inputs": ["c"]},
    "join": {"op": "add", "inputs": ["c_bn", "c"]},
    "d": {"op": "conv", "filters": 6, "size": 3, "pad": 1}, "d_relu": "relu",
    "d_pool": {"op": "pool", "size": 2, "rounding": "floor"}}}
RESIDUAL_FOLDS = {"a_bn": "a", "b_bn": "b", "sum": "b", "sum_relu": "b", "d_pool": "d"}


# ResNet's basic blocks at odd sizes, every residual fold: an identity shortcut (r, the block's
# input, has a halo of 1; the sum none); a projection shortcut with stride 2, its 1x1 conv
# launched after the block's second conv, so it takes the sum (its tensor gets a halo of 1
# from the conv after it, r none) and the silu after it; two convs summed without batchnorms,
# the sum read twice: it folds, its relu stays a kernel, and the second add (of a relu and a
# sum) folds into nothing
BLOCKS = {"name": "blocks", "input": "9x7x8", "nodes": {
    "a1": {"op": "conv", "filters": 8, "size": 3, "pad": 1, "bias": False, "inputs": ["input"]},
    "a1_bn": "batchnorm", "a1_relu": "relu",
    "a2": {"op": "conv", "filters": 8, "size": 3, "pad": 1, "bias": False}, "a2_bn": "batchnorm",
    "a_sum": {"op": "add", "inputs": ["a2_bn", "input"]}, "a_relu": "relu",
    "b1": {"op": "conv", "filters": 16, "size": 3, "stride": 2, "pad": 1, "bias": False},
    "b1_bn": "batchnorm", "b1_relu": "relu",
    "b2": {"op": "conv", "filters": 16, "size": 3, "pad": 1, "bias": False}, "b2_bn": "batchnorm",
    "b_proj": {"op": "conv", "filters": 16, "size": 1, "stride": 2, "bias": False,
               "inputs": ["a_relu"]},
    "b_proj_bn": "batchnorm",
    "b_sum": {"op": "add", "inputs": ["b2_bn", "b_proj_bn"]}, "b_silu": "silu",
    "c1": {"op": "conv", "filters": 12, "size": 3, "pad": 1, "inputs": ["b_silu"]},
    "c2": {"op": "conv", "filters": 12, "size": 1, "inputs": ["b_silu"]},
    "c_sum": {"op": "add", "inputs": ["c1", "c2"]}, "c_relu": {"op": "relu", "inputs": ["c_sum"]},
    "c_twice": {"op": "add", "inputs": ["c_relu", "c_sum"]},
    "d": {"op": "conv", "filters": 6, "size": 3, "pad": 1}}}
BLOCKS_FOLDS = {"a1_bn": "a1", "a2_bn": "a2", "b1_bn": "b1", "b2_bn": "b2",
                "b_proj_bn": "b_proj", "a_sum": "a2", "a_relu": "a2", "b_sum": "b_proj",
                "b_silu": "b_proj", "c_sum": "c2"}


def launch_counts(spec) -> tuple[int, int, dict]:
    """(launches unfolded, launches folded, folded layers) of ``spec``'s CPU inference plan."""
    graph = analyse(spec)
    folded = plan_forward(graph, CPU)
    return len(plan_forward(graph, CPU, fold=False).launches), len(folded.launches), \
        folded_layers(folded)


@pytest.mark.parametrize("spec, folds", [(MIXED, MIXED_FOLDS), (RESIDUAL, RESIDUAL_FOLDS),
                                         (BLOCKS, BLOCKS_FOLDS)],
                         ids=["mixed", "residual", "blocks"])
def test_one_launch_fewer_per_folded_layer(spec, folds):
    unfolded, folded, layers = launch_counts(spec)
    assert layers == folds
    assert folded == unfolded - len(folds)


def _residual_launches(plan) -> list[tuple[int, object]]:
    """(index, launch) of every launch whose kernel adds a folded sum (RESIDUAL)."""
    return [(index, launch) for index, launch in enumerate(plan.launches)
            if plan.kernels[launch.kernel].defines.get("RESIDUAL")]


@pytest.mark.parametrize("profile", [CPU, GPU, OCLGRIND], ids=lambda p: p.family)
@pytest.mark.parametrize("spec", [BLOCKS, "specs/resnet8.yaml", "specs/resnet18.yaml"],
                         ids=["blocks", "resnet8", "resnet18"])
def test_a_folded_sum_reads_a_tensor_written_before_it(spec, profile):
    """The conv that takes a sum reads its other input as its last argument, written by an
    earlier launch (or the network's input), through that tensor's own layout (prefix R);
    every ResNet block's add and relu launch nothing."""
    graph = analyse(spec)
    plan = plan_forward(graph, profile)
    residual = _residual_launches(plan)
    assert residual
    for index, launch in residual:
        r = plan.buffer_name(launch.args[-1])
        storage = launch.args[-1].node
        written = {plan.buffer_name(arg) for earlier in plan.launches[:index]
                   for arg in earlier.args}
        assert r in written or storage == plan.input, (launch.node, r)
        defines = plan.kernels[launch.kernel].defines
        assert {k[2:]: v for k, v in defines.items() if k.startswith("R_")} == {
            k[2:]: v for k, v in plan.layouts[storage].defines("R").items()}
    launched = {launch.node for launch in plan.launches}
    sums = [name for name in graph if graph.nodes[name].op == "add"]
    assert sums and launched & set(sums) == ({"c_twice"} if spec == BLOCKS else set())
    if spec != BLOCKS:  # ResNet: one per block, into the block's last conv in the plan
        assert len(residual) == len(sums)
        for name in sums:
            (after,) = graph.successors(name)
            assert after not in launched and folded_layers(plan)[after] in {
                launch.node for _, launch in residual}


def test_of_two_convs_the_one_launched_last_takes_the_sum():
    """Whichever of a block's second conv and its projection the spec writes first, the
    other takes the sum: its input is then written before it."""
    block = {"name": "t", "input": "8x8x4", "nodes": {
        "main": {"op": "conv", "filters": 8, "size": 3, "pad": 1, "inputs": ["input"]},
        "proj": {"op": "conv", "filters": 8, "size": 1, "inputs": ["input"]},
        "sum": {"op": "add", "inputs": ["main", "proj"]}, "out": "relu"}}
    assert launch_counts(block)[2] == {"sum": "proj", "out": "proj"}
    nodes = dict(block["nodes"])
    reordered = {"proj": nodes.pop("proj"), **nodes}
    assert launch_counts({**block, "nodes": reordered})[2] == {"sum": "main", "out": "main"}


@pytest.mark.parametrize("nodes", [
    {"c": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},  # 3 inputs
     "s": {"op": "add", "inputs": ["c", "input", "input"]}},
    {"c": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},  # c + c
     "s": {"op": "add", "inputs": ["c", "c"]}},
    {"c": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},  # read twice
     "s": {"op": "add", "inputs": ["c", "input"]}, "t": {"op": "add", "inputs": ["s", "c"]}},
    {"c": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},  # an activation
     "r": "relu", "s": {"op": "add", "inputs": ["r", "input"]}},
    {"c": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},  # a pool
     "r": "relu", "p": {"op": "pool", "size": 2}, "q": {"op": "pool", "size": 2,
                                                      "inputs": ["input"]},
     "s": {"op": "add", "inputs": ["p", "q"]}},
    {"c": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},  # bn read twice
     "b": "batchnorm", "d": {"op": "conv", "filters": 4, "size": 1},
     "s": {"op": "add", "inputs": ["b", "input"]}, "j": {"op": "concat", "inputs": ["s", "d"]}},
    {"c": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},  # a sum of sums
     "s0": {"op": "add", "inputs": ["c", "input"]}, "s": {"op": "add", "inputs": ["s0", "input"]}},
], ids=["three-inputs", "same-twice", "read-twice", "activation-between", "pooled",
        "bn-read-twice", "sum-of-sums"])
def test_no_sum_folds_where_it_cannot(nodes):
    """Sums of three, of one conv twice, of a conv (or its folded batchnorm) that something
    else reads too, of an activated or pooled conv, of another sum: the add keeps its launch
    (an earlier sum may fold)."""
    layers = launch_counts({"name": "t", "input": "8x8x4", "nodes": nodes})[2]
    assert "s" not in layers, layers


def test_the_switch_and_training_plans_do_not_fold(monkeypatch):
    """CONVGRAPH_FOLD=0 (the debugging aid) and share_buffers=False (--verify reads every
    layer's own tensor) plan every layer; so do training plans (batch statistics)."""
    from convgraph.codegen.training import plan_training

    graph = analyse(MIXED)
    assert folded_layers(plan_forward(graph, CPU, share_buffers=False)) == {}
    monkeypatch.setenv("CONVGRAPH_FOLD", "0")
    assert folded_layers(plan_forward(graph, CPU)) == {}
    assert folded_layers(plan_forward(graph, CPU, fold=True)) == MIXED_FOLDS
    monkeypatch.delenv("CONVGRAPH_FOLD")
    train = graph.graph["train"]
    groups = plan_training(graph, CPU, train["optimizer"], train).launch_groups()
    for name in ("train", "evaluate"):
        assert {"batchnorm1", "pool1"} <= {launch.node for launch in groups[name]}, name
    blocks = analyse(BLOCKS)
    assert folded_layers(plan_forward(blocks, CPU, share_buffers=False)) == {}
    groups = plan_training(blocks, CPU, "sgd", {}).launch_groups()
    for name in ("train", "evaluate"):
        assert {"a_sum", "b_sum", "c_sum"} <= {launch.node for launch in groups[name]}, name


def test_the_switch_names_kinds_of_fold(monkeypatch, cli, write_spec):
    """CONVGRAPH_FOLD=affine,pool_window makes the batchnorm and pool folds alone (the benchmark's
    reference for the sums' own gain); a kind it does not know is a usage error (status 2)."""
    graph = analyse(BLOCKS)
    batchnorms = {name: conv for name, conv in BLOCKS_FOLDS.items() if name.endswith("_bn")}
    monkeypatch.setenv("CONVGRAPH_FOLD", "affine,pool_window")
    assert folded_layers(plan_forward(graph, CPU)) == batchnorms
    monkeypatch.setenv("CONVGRAPH_FOLD", "residual_sum")  # no batchnorm folds: c1 + c2 alone
    assert folded_layers(plan_forward(graph, CPU)) == {"c_sum": "c2"}
    monkeypatch.setenv("CONVGRAPH_FOLD", "affine,sums")
    status, _, err = cli("compile", write_spec(json.dumps(BLOCKS)))
    assert status == 2 and "names sums, which is no kind of fold" in err, err


@pytest.mark.parametrize("input_, pattern", [
    ("9x9x3", "BN-CONV(4, 3, pad=1)"),  # batchnorm before the conv
    ("9x9x3", "CONV(4, 3, pad=1)-RELU-BN"),  # an activation between
    ("9x9x3", "CONV(4, 3, pad=1)-POOL(3, 2)"),  # not 2x2
    ("9x9x3", "CONV(4, 3, pad=1)-AVGPOOL(2, rounding=floor)"),  # not max
    ("9x9x3", "CONV(4, 3, pad=1)-POOL(2, pad=same)"),  # padded
    ("9x9x3", "CONV(4, 3, pad=1)-POOL(2, rounding=ceil)"),  # a partial last window
    ("8x8x3", "CONV(4, 3, pad=1)-POOL(2, 1)"),  # stride 1
])
def test_nothing_folds_where_it_cannot(input_, pattern):
    spec = {"name": "t", "input": input_, "pattern": f"[INPUT-{pattern}]"}
    unfolded, folded, layers = launch_counts(spec)
    assert (layers, folded) == ({}, unfolded)


def test_a_conv_read_twice_keeps_its_output():
    spec = {"name": "t", "input": "8x8x4", "nodes": {
        "c": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},
        "r": {"op": "relu", "inputs": ["c"]}, "p": {"op": "pool", "inputs": ["r"]},
        "q": {"op": "pool", "inputs": ["c"]}, "s": {"op": "add", "inputs": ["p", "q"]}}}
    unfolded, folded, layers = launch_counts(spec)
    assert (layers, folded) == ({}, unfolded)


def test_a_winograd_conv_keeps_its_pool():
    """Where the profile runs the conv as Winograd (the CPU's, from 64 channels at 8x8-16x16),
    the pool stays a pass of its own; so it does where the GPU profile may run the conv as a
    tiled GEMM (ops/conv_gemm.py); with the GPU's direct family it folds."""
    graph = analyse({"name": "t", "input": "16x16x64",
                     "pattern": "[INPUT-CONV(64, 3, pad=1)-RELU-POOL(2)]"})
    assert folded_layers(plan_forward(graph, CPU)) == {}
    assert folded_layers(plan_forward(graph, GPU)) == {}
    assert folded_layers(plan_forward(graph, GPU_DIRECT)) == {"pool1": "conv1"}


@pytest.mark.parametrize("profile", [CPU, GPU_DIRECT, OCLGRIND], ids=lambda p: p.family)
def test_pooled_tiles_cover_whole_windows(profile):
    """Every setting a pooled conv site offers the tuner has whole 2x2 windows per work-item
    and no Winograd (whose tiles the pool would cut)."""
    plan = plan_forward(analyse(MIXED), profile)
    pooled = [plan.sites[launch.site] for launch in plan.launches
              if plan.kernels[launch.kernel].defines.get("POOL_MAX")]
    assert {site.node for site in pooled} == {"conv1", "conv3"}
    for site in pooled:
        # (a planar first layer's row-vector body, kernels/conv_planar.cl: both rows of its
        # windows per work-item, vectors of an even number of pixels)
        assert all(knobs["TILE_PIXELS"] % 4 == 0 if knobs.get("BODY") != "pixels" else
                   knobs["TILE_ROWS"] == 2 and knobs["VECTOR_WIDTH"] % 2 == 0
                   for knobs in site.space)
        assert all(knobs.get("ALGORITHM", "direct") == "direct" for knobs in site.space)


def test_folded_parameters_are_the_float64_composition():
    """fold_params: the conv with w * s and (b - mean) * s + beta computes conv-then-bn."""
    graph = analyse({"name": "t", "input": "6x5x3", "pattern": "[INPUT-CONV(4, 3, pad=1)-BN]"})
    plan = plan_forward(graph, CPU)
    params = {key: value.astype(np.float64) for key, value in random_params(
        _HostModel(graph), 3).items()}
    folded = fold_params(plan, params)
    assert not any(key.startswith("bn1.") for key in folded)
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 6))
    conv = graph.nodes["conv1"]
    composed = REGISTRY[conv.op].reference(conv, [x], node_params(folded, "conv1"))
    assert relative_error(composed, reference_forward(graph, params, x)) < 1e-12


class _HostModel:
    """What random_params reads of a model: its initial parameters."""

    def __init__(self, graph):
        from convgraph.params import initial_params

        self.params = initial_params(graph, "he", 0)


@on_devices
def test_folded_predict_matches_float64(cl_device):
    """Every fold of MIXED at batch 3 and 1 against float64 numpy, and again after new weights
    (folding follows set_params)."""
    model, params = prepared(MIXED, cl_device, 3, share_buffers=True)
    assert folded_layers(model.plan) == MIXED_FOLDS
    pooled = [k for k in model.plan.kernels.values() if k.defines.get("POOL_MAX")]
    assert {k.defines["POOL_FIRST"] for k in pooled} == {0, 1}  # relu max-first, silu not
    x = input_batch(model, 3, seed=5)
    check_forward(model, params, x, what="mixed, batch 3")
    check_forward(model, params, x[:1], what="mixed, batch 1")
    other = random_params(model, seed=9)
    model.set_params(other)
    check_forward(model, other, x, what="mixed, new weights")


@pytest.mark.slow
@on_devices
def test_folded_predict_with_the_other_profile(cl_device, monkeypatch):
    """The other device family's tiles and work-groups (GPU's 4-wide vectors, 4x4x4 groups over
    pooled rows on a CPU), as tests/test_kernels.py's other_profile cases run."""
    import convgraph.runtime.target
    from convgraph.runtime.devices import select_device

    own = convgraph.runtime.target.profile_for(select_device(cl_device)[0])
    other = replace(CPU if own.family == "gpu" else GPU_DIRECT, build_options=own.build_options)
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: other)
    for spec in (MIXED, RESIDUAL):
        model, params = prepared(spec, cl_device, 3, share_buffers=True)
        assert folded_layers(model.plan) and model.profile == other
        x = input_batch(model, 3, seed=4)
        check_forward(model, params, x, what=f"{spec['name']}, {other.family} profile")
        check_forward(model, params, x[:1], what=f"{spec['name']}, batch 1")


def _with_pooled_settings(cl_device, monkeypatch, index: int, count: int) -> dict:
    """Make setting ``index`` of ``count`` spread over each pooled conv site's space (MIXED's
    conv1 and conv3) this device's tuning; returns the chosen knobs by site key.
    (tests/test_tuning.py's harness plans unfolded, with share_buffers=False.)"""
    import convgraph.runtime.target
    from convgraph.codegen.tuning import Tuning
    from convgraph.runtime.devices import select_device

    own = convgraph.runtime.target.profile_for(select_device(cl_device)[0])
    plan = plan_forward(analyse(MIXED), own)
    sites = {launch.site: plan.sites[launch.site] for launch in plan.launches
             if plan.kernels[launch.kernel].defines.get("POOL_MAX")}
    chosen = {key: site.space[index * len(site.space) // count] for key, site in sites.items()}
    tuned = replace(own, tuning=Tuning({key: {"knobs": knobs} for key, knobs in chosen.items()},
                                       "tuned on this device"))
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: tuned)
    return chosen


def _check_pooled_settings(cl_device, monkeypatch, index: int, count: int) -> None:
    chosen = _with_pooled_settings(cl_device, monkeypatch, index, count)
    model, params = prepared(MIXED, cl_device, 3, share_buffers=True, seed=index)
    for key, knobs in chosen.items():
        assert model.profile.tuning.choice(key, model.plan.sites[key].space) == knobs
    x = input_batch(model, 3, seed=20 + index)
    check_forward(model, params, x, what=f"pooled settings {index}/{count}: {chosen}")
    check_forward(model, params, x[:1], what=f"pooled settings {index}/{count}, batch 1")


@on_devices
def test_a_pooled_site_s_last_setting_matches_float64(cl_device, monkeypatch):
    """The far end of each pooled site's tuning space (the default is checked above)."""
    _check_pooled_settings(cl_device, monkeypatch, 7, 8)


@pytest.mark.slow
@on_devices
@pytest.mark.parametrize("index", range(1, 7))
def test_pooled_site_settings_match_float64(cl_device, monkeypatch, index):
    _check_pooled_settings(cl_device, monkeypatch, index, 8)


@pytest.mark.slow  # (BLOCKS, in the default tier, covers its identity shortcut)
@on_devices
def test_folded_residual_block_matches_float64(cl_device):
    model, params = prepared(RESIDUAL, cl_device, 2, share_buffers=True)
    assert folded_layers(model.plan) == RESIDUAL_FOLDS
    check_forward(model, params, input_batch(model, 2, seed=2), what="residual")


# a sum as the network's output, its conv's input read again after the conv (3x3 stride 1:
# Winograd where forced)
SUM_OUT = {"name": "sum_out", "input": "11x9x8", "nodes": {
    "a": {"op": "conv", "filters": 8, "size": 3, "pad": 1, "inputs": ["input"]},
    "a_relu": "relu", "b": {"op": "conv", "filters": 8, "size": 3, "pad": 1},
    "sum": {"op": "add", "inputs": ["a_relu", "b"]}}}


def _with_profile(cl_device, monkeypatch, change) -> object:
    """Compile with this device's profile as ``change(profile)`` makes it."""
    import convgraph.runtime.target
    from convgraph.runtime.devices import select_device

    own = convgraph.runtime.target.profile_for(select_device(cl_device)[0])
    changed = change(own)
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: changed)
    return changed


def _check_folded_sums(cl_device, specs, expected_selectors: set, what: str) -> None:
    """Each spec folded (its sums in the kernels of ``expected_selectors``) against float64 on
    poisoned activations, at batch 3 and 1."""
    selectors = set()
    for spec in specs:
        model, params = prepared(spec, cl_device, 3, share_buffers=True)
        selectors |= {kernel.selector for kernel in model.plan.kernels.values()
                      if kernel.defines.get("RESIDUAL")}
        x = input_batch(model, 3, seed=7)
        check_forward(model, params, x, what=f"{spec['name']}, {what}")
        check_forward(model, params, x[:1], what=f"{spec['name']}, {what}, batch 1")
    assert selectors == expected_selectors


@on_devices
def test_folded_residual_blocks_match_float64(cl_device):
    """Identity and projection shortcuts, two convs summed, a sum read twice (BLOCKS)."""
    model, _ = prepared(BLOCKS, cl_device, 1, share_buffers=True)
    assert folded_layers(model.plan) == BLOCKS_FOLDS
    _check_folded_sums(cl_device, [BLOCKS], {"CONV_FORWARD"}, "direct")


def _all_winograd(algorithm: str):
    """Every 3x3 stride-1 conv as ``algorithm`` by the profile's own rule (none by tuning)."""
    return lambda profile: replace(profile, winograd_rules=((1, 1, 10 ** 6, algorithm),),
                                   conv_family="direct")


@on_devices
def test_a_sum_folded_into_winograd_matches_float64(cl_device, monkeypatch):
    """F(2x2)'s output transform adds the sum, here the network's output (BLOCKS' in the slow
    tier)."""
    _with_profile(cl_device, monkeypatch, _all_winograd("winograd2"))
    _check_folded_sums(cl_device, [SUM_OUT], {"WINOGRAD_OUTPUT"}, "Winograd F(2x2)")


@pytest.mark.slow
@on_devices
@pytest.mark.parametrize("algorithm", ["winograd2", "winograd4"])
def test_sums_folded_into_winograd_match_float64(cl_device, monkeypatch, algorithm):
    """BLOCKS' a2, b2 and c1 as Winograd (b_proj and c2 direct), and SUM_OUT."""
    _with_profile(cl_device, monkeypatch, _all_winograd(algorithm))
    _check_folded_sums(cl_device, [BLOCKS, SUM_OUT], {"WINOGRAD_OUTPUT", "CONV_FORWARD"},
                       algorithm)


# BLOCKS' first block alone: a basic block with an identity shortcut
IDENTITY_BLOCK = {"name": "identity_block", "input": "9x7x8", "nodes": {
    name: BLOCKS["nodes"][name]
    for name in ("a1", "a1_bn", "a1_relu", "a2", "a2_bn", "a_sum", "a_relu")}}


@on_devices
def test_a_residual_block_s_sum_folded_into_fused_winograd_matches_float64(cl_device,
                                                                          monkeypatch):
    """The block's second conv adds its sum (r with a halo of 1) in the fused kernel's
    epilogue, F(4x4) at 9x7: partial tiles, a work-item's 8 images past a batch of 3 or 1
    (F(2x2), BLOCKS and SUM_OUT in the slow tier)."""
    _with_profile(cl_device, monkeypatch, _all_winograd("winograd4_fused"))
    _check_folded_sums(cl_device, [IDENTITY_BLOCK], {"WINOGRAD_FUSED"}, "fused Winograd F(4x4)")


@pytest.mark.slow
@on_devices
@pytest.mark.parametrize("algorithm", list(winograd.FUSED))
def test_sums_folded_into_fused_winograd_match_float64(cl_device, monkeypatch, algorithm):
    """BLOCKS' a2, b2 and c1 and SUM_OUT's b as the fused kernel, each sum in its epilogue."""
    _with_profile(cl_device, monkeypatch, _all_winograd(algorithm))
    _check_folded_sums(cl_device, [BLOCKS, SUM_OUT], {"WINOGRAD_FUSED", "CONV_FORWARD"},
                       algorithm)


@pytest.mark.slow
@on_devices
@pytest.mark.parametrize("algorithm, selectors", [
    ("gemm", {"CONV_GEMM_FORWARD"}),
    ("winograd2_gemm", {"WINOGRAD_OUTPUT", "CONV_GEMM_FORWARD"}),  # (b_proj, c2: 1x1)
])
def test_a_sum_folded_with_the_gpu_family_matches_float64(cl_device, monkeypatch, algorithm,
                                                          selectors):
    """The GPU profile's tiled family (its 4-wide vectors and work-groups, on this device):
    the implicit GEMM's epilogue and the tiled Winograd's output transform add the sum."""
    from convgraph.codegen.tuning import Tuning

    def gpu(own):
        plan = plan_forward(analyse(BLOCKS), GPU)
        chosen = {}
        for key, site in plan.sites.items():
            if site.selector == "CONV_FORWARD":
                offered = [k for k in site.space if k.get("ALGORITHM") == algorithm]
                chosen[key] = {"knobs": (offered or [site.space[0]])[0]}
        return replace(GPU, build_options=own.build_options,
                       tuning=Tuning(chosen, "tuned on this device"))

    _with_profile(cl_device, monkeypatch, gpu)
    _check_folded_sums(cl_device, [BLOCKS], selectors, f"GPU profile, {algorithm}")


def test_compile_names_the_folded_layers(cli, write_spec):
    """The summary still lists every layer; the line about the plan says how many folded."""
    path = write_spec(json.dumps(MIXED))
    status, out, err = cli("compile", path)
    assert status == 0, err
    assert all(name in out for name in ("batchnorm1", "pool1", "batchnorm3", "pool2"))
    assert "5 layers folded into the kernel before them" in out


def test_compile_counts_the_folded_sums(cli, write_spec):
    """BLOCKS: 10 launches a pass, against 20 unfolded."""
    unfolded, folded, layers = launch_counts(BLOCKS)
    assert (unfolded, folded, len(layers)) == (20, 10, 10)
    status, out, err = cli("compile", write_spec(json.dumps(BLOCKS)))
    assert status == 0, err
    assert "10 launches per pass (10 layers folded into the kernel before them)" in out


CHILD = """
import sys, json
from dataclasses import replace
import numpy as np
import convgraph
import convgraph.runtime.target as target
from convgraph.codegen.fold import folded_layers
from convgraph.verify import random_params, relative_error
from convgraph.reference import reference_forward
from tests.test_kernels import poison, input_batch, expected_shape
own = target.profile_for
if len(sys.argv) > 2 and sys.argv[2] == "gpu":  # the GPU profile's tiled family
    from convgraph.codegen.profile import GPU
    target.profile_for = lambda info: replace(GPU, build_options=own(info).build_options)
elif len(sys.argv) > 2:  # every 3x3 stride-1 conv as this algorithm, by the profile's rule
    target.profile_for = lambda info: replace(own(info), winograd_rules=((1, 1, 10 ** 6,
                                                                          sys.argv[2]),))
for spec in json.loads(sys.argv[1]):
    model = convgraph.compile(spec, batch=2)
    assert "Oclgrind" in model.info.platform and folded_layers(model.plan), model.info.label
    params = random_params(model, 0)
    model.set_params(params)
    poison(model)
    x = input_batch(model, 2, 1)
    out = model.forward(x)
    error = relative_error(out, reference_forward(model.graph, params, x).reshape(
        expected_shape(model, 2)))
    summed = sorted({k.selector for k in model.plan.kernels.values() if k.defines.get("RESIDUAL")})
    print(spec["name"], error, *summed)
    assert error <= 1e-4
"""


@pytest.mark.slow
@pytest.mark.skipif(not ICD.exists(), reason="oclgrind is not installed")
def test_folded_kernels_under_oclgrind(tmp_path):
    """The folded kernels (pooled epilogues with partial tiles, biases from folded
    batchnorms) on Oclgrind's small simulated device: right, and nothing reported."""
    done, reports = run_under_oclgrind(
        tmp_path, [sys.executable, "-c", CHILD, json.dumps([MIXED, RESIDUAL])],
        {"OCLGRIND_MAX_WGSIZE": "64"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert not reports, [report["text"] for report in reports][:3]


@pytest.mark.slow
@pytest.mark.skipif(not ICD.exists(), reason="oclgrind is not installed")
@pytest.mark.parametrize("algorithm", [None, "winograd2", "winograd4_fused", "gpu"],
                         ids=["direct", "winograd2", "winograd4_fused", "gpu-family"])
def test_folded_sums_under_oclgrind(tmp_path, algorithm):
    """Convs adding a folded sum (direct: partial pixel tiles, r and y with different halos;
    Winograd F(2x2)'s output transform, a sum as the network's output; the fused kernel's
    epilogue, a work-item's images past the batch; the GPU profile's implicit GEMM, whose
    epilogue follows its local-memory stages) on Oclgrind's small device: right, and nothing
    reported."""
    argv = [sys.executable, "-c", CHILD, json.dumps([BLOCKS, SUM_OUT])]
    done, reports = run_under_oclgrind(tmp_path, argv + ([algorithm] if algorithm else []),
                                       {"OCLGRIND_MAX_WGSIZE": "64"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert not reports, [report["text"] for report in reports][:3]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    expected = {None: "CONV_FORWARD", "winograd2": "CONV_FORWARD WINOGRAD_OUTPUT",
                "winograd4_fused": "CONV_FORWARD WINOGRAD_FUSED",
                "gpu": "CONV_GEMM_FORWARD"}[algorithm]
    assert lines["blocks"].endswith(expected), lines
