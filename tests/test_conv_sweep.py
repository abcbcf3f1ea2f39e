"""The direct conv forward's row sweep (kernels/conv.cl ROW_SWEEP): each input of a kernel row's
windows broadcast once for every kernel column that uses it. Its settings are in the tuner's
space only where they are legal, the Winograd GEMMs keep the settings without it, and every
forward and stride-1 input-gradient site set to its sweeps computes what float64 numpy does
(odd heights, stride 2, dilation, a 5x3 kernel, a folded max pool, batch 1 and 3)."""

from __future__ import annotations

import pytest

import convgraph
from convgraph.codegen import profile as profiles
from convgraph.codegen.tuning import save_tuning
from convgraph.ops.conv import SWEEP_REGISTERS, _forward_space, _pooled_space
from convgraph.pipeline import analyse
from tests.test_kernels import check_forward, input_batch, poison, random_params
from tests.test_tuning import _sites, assert_step_gradients_match

# 12 wide (whole tiles of 6 and 12 pixels), 5 high (an odd last row tile); 16 and 32 filters (1
# and 2 vectors); stride 2 (6x3), dilation 2, a 5x3 kernel of 32 filters whose pool folds in
# inference (a pooled row of 3 windows). SMALL: a sweep, a pooled sweep and a stride-1 input
# gradient (the forward kernel, gated by the relu before it). Both in the slow tier: the default
# tier checks the default sweep through Conv's harness case 12x5x16 CONV(16, 3, pad=1)
WIDE = {"input": "12x5x16",
        "pattern": "[INPUT-CONV(16, 3, pad=1)-RELU-CONV(32, 3, pad=1)"
                   "-CONV(16, 3, stride=2, pad=same)-CONV(16, 3, dilation=2, pad=2)"
                   "-CONV(32, 5x3, pad=2x1)-RELU-POOL(2, rounding=floor)-FC(4)]"}
SMALL = {"input": "12x5x16",
         "pattern": "[INPUT-CONV(16, 3, pad=1)-RELU-CONV(16, 3, pad=1)-RELU"
                    "-POOL(2, rounding=floor)-FC(4)]"}
NETWORKS = {"small": SMALL, "wide": WIDE}


def _sweep_space(**overrides) -> list[dict]:
    shape = {"width": 16, "channels": 16, "filters": 16, "out_width": 32, "kernel_w": 3}
    shape.update(overrides)
    return _forward_space(profiles.CPU, shape["width"], shape["channels"], shape["filters"],
                          shape["out_width"], kernel_w=shape["kernel_w"])


def test_sweeps_are_offered_only_where_whole_tiles_and_registers_allow():
    space = _sweep_space()
    sweeps = [knobs for knobs in space if knobs["ROW_SWEEP"]]
    assert sweeps and all("ROW_SWEEP" in knobs for knobs in space)
    for knobs in sweeps:
        assert 32 % knobs["TILE_PIXELS"] == 0
        assert knobs["FILTER_VECTORS"] * (knobs["TILE_ROWS"] * knobs["TILE_PIXELS"]
                                          + 3 * knobs["CHANNEL_STEP"]) <= SWEEP_REGISTERS
    # no sweep for a 1x1 kernel (nothing to share), and none across a partial tile (13 wide)
    assert not any(knobs["ROW_SWEEP"] for knobs in _sweep_space(kernel_w=1))
    assert all(13 % knobs["TILE_PIXELS"] == 0
               for knobs in _sweep_space(out_width=13) if knobs["ROW_SWEEP"])
    # pooled: whole windows of the pooled row (a 6-wide pooled row: windows 1, 2, 3 or 6)
    for knobs in _pooled_space(space, 6):
        if knobs["ROW_SWEEP"]:
            assert 6 % (knobs["TILE_PIXELS"] // 4) == 0
    # a GPU's space is not swept (not measured there)
    gpu = _forward_space(profiles.GPU, 4, 16, 16, 32, kernel_w=3)
    assert not any("ROW_SWEEP" in knobs for knobs in gpu)


def test_winograd_sites_keep_their_gemm_settings_without_the_sweep():
    graph = analyse({"input": "16x16x64", "pattern": "[INPUT-CONV(64, 3, pad=1)-FC(4)]"})
    _, sites = _sites(graph, profiles.CPU)
    forward = [site for site in sites.values() if site.selector == "CONV_FORWARD"]
    for site in forward:
        assert any(knobs["ROW_SWEEP"] for knobs in site.space)
        for knobs in site.space:
            assert knobs["ALGORITHM"] == "direct" or not knobs["ROW_SWEEP"]


def _swept_entries(sites, index: int) -> dict:
    """Tuning entries setting every forward site to its ``index``-th sweep (spread over them),
    every other site to its default."""
    entries = {}
    for key, site in sites.items():
        sweeps = [knobs for knobs in site.space if knobs.get("ROW_SWEEP")]
        if site.selector == "CONV_FORWARD" and sweeps:
            entries[key] = {"knobs": sweeps[index * len(sweeps) // 3]}
    return entries


@pytest.mark.device
@pytest.mark.parametrize("name, index", [
    pytest.param("small", 0, marks=pytest.mark.slow),
    pytest.param("wide", 0, marks=pytest.mark.slow),
    pytest.param("wide", 1, marks=pytest.mark.slow),
    pytest.param("wide", 2, marks=pytest.mark.slow)])
def test_swept_sites_compute_what_numpy_does(tmp_path, monkeypatch, name, index):
    monkeypatch.setenv("CONVGRAPH_CACHE", str(tmp_path / "cache"))
    spec = NETWORKS[name]
    graph = analyse(spec)
    info, sites = _sites(graph)
    entries = _swept_entries(sites, index)
    # every conv of the network sweeps: forwards, the folded pool's, the input gradients
    assert len(entries) >= (7 if name == "wide" else 3)
    save_tuning(info, entries)
    batch = 1 + 2 * (index % 2 == 0)
    model = convgraph.compile(spec, batch=batch)  # (sharing buffers folds the pool)
    swept = [spec for spec in model.plan.kernels.values()
             if spec.selector == "CONV_FORWARD" and spec.defines.get("ROW_SWEEP")]
    assert any(spec.defines.get("POOL_MAX") for spec in swept)  # the folded pool's too
    params = random_params(model, index)
    model.set_params(params)
    poison(model)
    check_forward(model, params, input_batch(model, batch, index), what=f"{name} {index}")
    assert_step_gradients_match(graph, params, model, batch, index, name)


# Under Oclgrind (slow tier): every conv forward site of the wide network, inference (the pool
# folded in) and training, set to its sweep with the most pixels, at the CPU's 16-wide vectors
SWEEP_CHILD = """
import dataclasses, json, sys
from convgraph.codegen import profile as profiles
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.training import plan_training
from convgraph.codegen.tuning import Tuning
from convgraph.pipeline import analyse

base = dataclasses.replace(profiles.OCLGRIND, max_vector=16)
entries = {}
for spec in json.loads(sys.argv[1]):
    graph = analyse(spec)
    sites = {**plan_forward(graph, base).sites, **plan_training(graph, base).sites}
    for key, site in sites.items():
        sweeps = [knobs for knobs in site.space if knobs.get("ROW_SWEEP")]
        if site.selector == "CONV_FORWARD" and sweeps:
            entries[key] = {"knobs": max(sweeps, key=lambda k: k["TILE_PIXELS"])}
print("SWEPT", len(entries))
profiles.OCLGRIND = dataclasses.replace(base, tuning=Tuning(entries, "sweeps"))

# inference with buffers shared, so the pool folds into the conv before it (verify_model, below,
# checks each kernel of the unfolded plan on its own)
import convgraph
from convgraph.reference import reference_forward
from convgraph.verify import random_params, relative_error
from tests.test_kernels import input_batch
for spec in json.loads(sys.argv[1]):
    model = convgraph.compile(spec, batch=2)
    assert any(k.defines.get("POOL_MAX") and k.defines.get("ROW_SWEEP")
               for k in model.plan.kernels.values())
    params = random_params(model, 0)
    model.set_params(params)
    x = input_batch(model, 2, 0)
    out = model.forward(x)
    error = relative_error(out, reference_forward(model.graph, params, x).reshape(out.shape))
    print("FOLDED", error)
    assert error < 1e-4, error
"""


@pytest.mark.slow
def test_the_sweeps_are_clean_under_oclgrind(tmp_path):
    from tests.test_oclgrind import CHILD, ICD, assert_checked_and_clean
    if not ICD.exists():
        pytest.skip("oclgrind is not installed (apt-get install oclgrind)")
    out = assert_checked_and_clean(tmp_path, SWEEP_CHILD + CHILD, [WIDE])
    assert int(out.split("SWEPT ", 1)[1].split()[0]) >= 7, out
