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


def launch_counts(spec) -> tuple[int, int, dict]:
    """(launches unfolded, launches folded, folded layers) of ``spec``'s CPU inference plan."""
    graph = analyse(spec)
    folded = plan_forward(graph, CPU)
    return len(plan_forward(graph, CPU, fold=False).launches), len(folded.launches), \
        folded_layers(folded)


@pytest.mark.parametrize("spec, folds", [(MIXED, MIXED_FOLDS), (RESIDUAL, RESIDUAL_FOLDS)],
                         ids=["mixed", "residual"])
def test_one_launch_fewer_per_folded_layer(spec, folds):
    unfolded, folded, layers = launch_counts(spec)
    assert layers == folds
    assert folded == unfolded - len(folds)


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
        assert all(knobs["TILE_PIXELS"] % 4 == 0 for knobs in site.space)
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


@on_devices
def test_folded_residual_block_matches_float64(cl_device):
    model, params = prepared(RESIDUAL, cl_device, 2, share_buffers=True)
    assert folded_layers(model.plan) == RESIDUAL_FOLDS
    check_forward(model, params, input_batch(model, 2, seed=2), what="residual")


def test_compile_names_the_folded_layers(cli, write_spec):
    """The summary still lists every layer; the line about the plan says how many folded."""
    path = write_spec(json.dumps(MIXED))
    status, out, err = cli("compile", path)
    assert status == 0, err
    assert all(name in out for name in ("batchnorm1", "pool1", "batchnorm3", "pool2"))
    assert "5 layers folded into the kernel before them" in out


CHILD = """
import sys, json
import numpy as np
import convgraph
from convgraph.codegen.fold import folded_layers
from convgraph.verify import random_params, relative_error
from convgraph.reference import reference_forward
from tests.test_kernels import poison, input_batch, expected_shape
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
    print(spec["name"], error)
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
