"""The GPU kernel family (ops/conv_gemm.py, kernels/conv_gemm.cl) against float64 numpy on PoCL
and under Oclgrind's race checks.

The GPU profile's tiled settings are forced onto every site that offers them (conv forward, and
so the stride-1 input gradient, the strided input gradient, the weight gradient, fc's three),
in several knob settings: the default, no local memory, the next stage prefetched into
registers, small and large register tiles and work-groups, width-1 vectors. Each runs small
networks with partial tiles (odd heights, widths and channel counts), stride 2 and 3, padding,
dilation, 1x1, 5x5, a gated and an accumulated input gradient, fc, at batch 1 and 3, forward
and backward, with the kernel tests' tolerance.
The tiled family's Winograd (WINOGRAD_GEMM_FORWARD and WINOGRAD_GEMM_WEIGHTS between
winograd.cl's transforms) is forced the same way onto every 3x3 stride-1 site, F(2x2) and
F(4x4), in four settings, on networks with partial tiles of both.
The numpy backward they are compared with is itself checked against finite differences
(tests/test_gradients.py). The default tier runs the rules (plans, limits, the direct
fallback, the exact work-group refusal, where Winograd is offered: about 8 s); ``-m slow``
runs every setting and case, ResNet-8 and VGG-CIFAR whole on the GPU profile (and with each
Winograd forced), the tuner, and Oclgrind (every setting clean, and a planted missing barrier
caught as a local-memory race, in the Winograd GEMMs too).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import convgraph
import convgraph.runtime.target
from convgraph.codegen import profile as profiles
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.training import plan_training
from convgraph.codegen.tuning import Tuning
from convgraph.errors import DeviceError
from convgraph.ops import conv_gemm
from convgraph.pipeline import analyse
from convgraph.runtime.devices import select_device
from convgraph.train.session import TrainingSession
from convgraph.verify import verify_model, verify_training
from tests.test_kernels import check_forward, check_gradients, input_batch, poison, random_params

ROOT = Path(__file__).resolve().parent.parent
GEMM_SELECTORS = {"CONV_GEMM_FORWARD", "CONV_GEMM_DATA", "CONV_GEMM_WEIGHTS", "GEMM_FORWARD",
                  "GEMM_BACKWARD_DATA", "GEMM_BACKWARD_WEIGHTS"}
WINOGRAD_SELECTORS = {"WINOGRAD_GEMM_FORWARD", "WINOGRAD_GEMM_WEIGHTS"}

# (input, pattern or nodes, batch)
CASES = {
    # partial tiles everywhere, stride 2 (the strided input gradient), fc with a hidden layer
    "strided": ("13x9x3", "[INPUT-CONV(12, 3, pad=1)-RELU-CONV(20, 3, stride=2, pad=1)-FC(33)"
                          "-RELU-FC(3)]", 3),
    # dilation, a gated stride-1 input gradient (RELU before a conv), 17 filters, 1x1
    "dilated": ("11x11x4", "[INPUT-CONV(8, 3, pad=2, dilation=2)-RELU-CONV(17, 3, pad=1)"
                           "-SIGMOID-CONV(12, 1)-FC(3)]", 1),
    # 5x5 over 17 channels, stride 3 valid, a non-square kernel with WxH stride and padding
    "odd": ("15x12x17", "[INPUT-CONV(20, 5, pad=2)-TANH-CONV(6, 3, stride=3, pad=valid)"
                        "-CONV(9, 3x2, stride=1x2, pad=1x0, rounding=floor)-FC(2)]", 3),
    # an input two convs read: their input gradients add up (ACCUMULATE), one of them strided
    "residual": ("9x7x5", {"a": {"op": "conv", "filters": 6, "size": 1, "inputs": ["input"]},
                           "b": {"op": "conv", "filters": 8, "size": 3, "pad": 1,
                                 "inputs": ["a"]},
                           "c": {"op": "conv", "filters": 8, "size": 3, "pad": 1,
                                 "inputs": ["a"]},
                           "s": {"op": "add", "inputs": ["b", "c"]},
                           "d": {"op": "conv", "filters": 4, "size": 3, "stride": 2, "pad": 1,
                                 "inputs": ["s"]},
                           "g": "gap", "o": {"op": "fc", "units": 3}}, 1),
}

# knob settings by name: overrides of each tiled site's default
VARIANTS = {
    "default": {},
    "no-local-memory": {"ALGORITHM": "gemm_global"},
    "prefetch": {"ALGORITHM": "gemm_prefetch"},
    "prefetch-small": {"ALGORITHM": "gemm_prefetch", "TILE_PIXELS": 2, "CHANNEL_STEP": 16,
                       "LOCAL": "8,8,1"},
    "small": {"TILE_PIXELS": 2, "FILTER_VECTORS": 1, "CHANNEL_STEP": 8, "LOCAL": "8,8,1"},
    "large": {"TILE_PIXELS": 8, "FILTER_VECTORS": 2, "CHANNEL_STEP": 16, "LOCAL": "16,4,1"},
    "tall": {"TILE_PIXELS": 4, "CHANNEL_STEP": 8, "LOCAL": "4,16,1"},
    "vector-1": {"VECTOR_WIDTH": 1},
}
# the tiled family's Winograd on every 3x3 stride-1 site (the others keep their default)
WINOGRAD_VARIANTS = {
    "winograd2": {"ALGORITHM": "winograd2_gemm"},
    "winograd4": {"ALGORITHM": "winograd4_gemm"},
    "winograd4-small": {"ALGORITHM": "winograd4_gemm", "TILE_PIXELS": 2, "CHANNEL_STEP": 8,
                        "LOCAL": "8,8,1"},
    "winograd2-large": {"ALGORITHM": "winograd2_gemm", "TILE_PIXELS": 8, "FILTER_VECTORS": 2,
                        "CHANNEL_STEP": 16, "LOCAL": "16,4,1"},
}
# 3x3 stride-1 sites for them: partial F(2x2) and F(4x4) tiles (11x7, then 9x5 valid), 5 and 9
# channels (vectors of 1 and the padded 12), a gated input gradient (RELU before a conv), a
# valid one (the input gradient padded by 2); CASES' "residual" adds an accumulated one
WINOGRAD_CASES = {
    "winograd": ("11x7x5", "[INPUT-CONV(6, 3, pad=1)-RELU-CONV(9, 3, pad=1)-TANH"
                           "-CONV(7, 3, pad=valid)-FC(3)]", 3),
    "residual": CASES["residual"],
}
# the default setting alone (every setting runs CASES): sizes and channel counts unlike CASES'
# (7x5 pixels; 3 -> 5 -> 7 -> 6 channels; 5 and 2 units), so partial tiles fall elsewhere, a
# gated stride-1 input gradient (RELU before conv2) and a strided one (conv3), at batch 1: one
# image's rows in a work-group's tile, a weight gradient of one split
DEFAULT_CASES = {
    "prime": ("7x5x3", "[INPUT-CONV(5, 3, pad=1)-RELU-CONV(7, 3, pad=1)"
                       "-CONV(6, 3, stride=2, pad=1)-FC(5)-RELU-FC(2)]", 1),
}


def case_of(name: str) -> tuple:
    """(input, pattern or nodes, batch) of a case of CASES, WINOGRAD_CASES or DEFAULT_CASES."""
    return {**CASES, **WINOGRAD_CASES, **DEFAULT_CASES}[name]


def spec_of(name: str) -> dict:
    volume, body, _ = case_of(name)
    key = "pattern" if isinstance(body, str) else "nodes"
    return {"name": f"gemm-{name}", "input": volume, key: body}


def gpu_profile(info=None, build_options=None):
    """The GPU profile within ``info``'s device limits (this device's by default), with this
    device's build options (Oclgrind needs unoptimised code)."""
    info = info or select_device()[0]
    own = profiles.base_profile(info)
    return replace(profiles.within_limits(profiles.GPU, info),
                   build_options=build_options or own.build_options)


def _tiled(site) -> list[dict]:
    return [knobs for knobs in site.space if knobs.get("ALGORITHM") in conv_gemm.TILED]


def _pick(site, overrides: dict) -> dict:
    """The tiled setting of ``site`` nearest to its tiled default with ``overrides``: of the
    ALGORITHM they name (the default's where they name none, or one the site does not offer),
    the one agreeing on most of the overridden knobs (ties: the earliest, i.e. nearest the
    default)."""
    tiled = _tiled(site)
    algorithm = overrides.get("ALGORITHM", tiled[0]["ALGORITHM"])
    if not any(k["ALGORITHM"] == algorithm for k in tiled):  # e.g. Winograd on a 1x1 site
        algorithm = tiled[0]["ALGORITHM"]
    candidates = [k for k in tiled if k["ALGORITHM"] == algorithm]
    overrides = {**overrides, "ALGORITHM": algorithm}
    wanted = {**tiled[0], **overrides}
    if wanted in candidates:
        return wanted
    return max(candidates,
               key=lambda k: sum(k.get(key) == value for key, value in overrides.items()))


def forced(graph, variant: str, base=None):
    """``base`` (the GPU profile) tuned so that every site offering the tiled family takes the
    setting ``variant`` names, as a tuning table would set it."""
    base = base or gpu_profile()
    sites = dict(plan_forward(graph, base).sites)
    sites.update(plan_forward(graph, base, share_buffers=False).sites)  # unfolded: --verify's
    sites.update(plan_training(graph, base).sites)
    overrides = {**VARIANTS, **WINOGRAD_VARIANTS}[variant]
    entries = {key: {"knobs": _pick(site, overrides)}
               for key, site in sites.items() if _tiled(site)}
    assert entries, "no site offers the tiled family"
    return replace(base, tuning=Tuning(entries, "tuned on this device"))


def check_case(monkeypatch, name: str, variant: str, batch: int | None = None,
               weights=("CONV_GEMM_WEIGHTS", "GEMM_BACKWARD_WEIGHTS")) -> set[str]:
    """Forward and every gradient of case ``name`` with ``variant`` forced, against numpy;
    the kernels' selectors of both plans (``weights``: some that the training plan must use)."""
    spec = spec_of(name)
    batch = batch or case_of(name)[2]
    graph = analyse(spec)
    profile = forced(graph, variant)
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: profile)
    model = convgraph.compile(spec, batch=batch, share_buffers=False)
    assert {k.selector for k in model.plan.kernels.values()} & GEMM_SELECTORS
    params = random_params(model, 1)
    model.set_params(params)
    poison(model)
    check_forward(model, params, input_batch(model, batch, 2),
                  what=f"{name} {variant} batch {batch}")
    session = TrainingSession(graph, batch=batch)
    selectors = {k.selector for k in session.plan.kernels.values()}
    assert set(weights) <= selectors, selectors
    session.set_params(params)
    x = input_batch(session, batch, 3)
    labels = np.random.default_rng(4).integers(0, session.plan.classes, batch)
    check_gradients(session, params, x, labels, what=f"{name} {variant} batch {batch}")
    return selectors | {k.selector for k in model.plan.kernels.values()}


pytestmark = pytest.mark.device


@pytest.mark.slow  # 50 s with cold PoCL caches: the default tier's cover is below
def test_the_default_setting_computes_what_numpy_does(monkeypatch):
    """On a shape of its own (CASES' run in every setting below, the default's included).
    (In the default tier the GPU profile's tiled kernels run forward in tests/test_kernels.py's
    other-profile cases and forward and backward in tests/test_tuning.py's other-family
    spread.)"""
    check_case(monkeypatch, "prime", "default")


@pytest.mark.slow  # 10-40 s each on a loaded 2-core machine
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_setting_computes_what_numpy_does(monkeypatch, name, variant):
    check_case(monkeypatch, name, variant)
    check_case(monkeypatch, name, variant, batch=1 if CASES[name][2] > 1 else 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet8", "vgg_cifar"])
def test_whole_models_on_the_gpu_profile(monkeypatch, name):
    """Every layer's forward and backward kernels of the example network on the GPU profile
    (tiled family by default) against numpy, on the device's own activations (--verify)."""
    profile = gpu_profile()
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: profile)
    model = convgraph.compile(str(ROOT / "specs" / f"{name}.yaml"), batch=2,
                              share_buffers=False)
    assert {k.selector for k in model.plan.kernels.values()} & GEMM_SELECTORS
    checks = verify_model(model) + verify_training(model.graph, batch=2)
    failed = [(c.node, c.op, c.error) for c in checks if not c.passed]
    assert not failed, failed
    assert any(set(c.kernels) & {k for k, s in model.plan.kernels.items()
                                 if s.selector == "CONV_GEMM_FORWARD"} for c in checks)


@pytest.mark.slow
def test_the_tuner_searches_the_tiled_space(monkeypatch, tmp_path):
    """`convgraph tune` on the GPU profile times the tiled sites (the conv forward, whose space
    holds both families, first) and keeps settings of their spaces."""
    import convgraph.runtime.tune as tune_module

    monkeypatch.setenv("CONVGRAPH_CACHE", str(tmp_path / "cache"))
    profile = gpu_profile()
    monkeypatch.setattr(tune_module, "profile_for", lambda info, tuned=True: profile)
    graph = analyse({"name": "gemm-tune", "input": "12x12x8", "pattern":
                     "[INPUT-CONV(16, 3, pad=1)-RELU-CONV(32, 3, stride=2, pad=same)-FC(10)]"})
    report = tune_module.tune(graph, batch=4, budget=40.0, modes=("train",), repeats=2)
    assert report.results, report.skipped
    for result in report.results:
        assert result.best in result.site.space
    forward = [r for r in report.results if r.site.selector == "CONV_FORWARD"]
    assert forward and forward[0].site.default["ALGORITHM"] == "gemm"


@pytest.mark.slow  # 40-200 s each on a loaded 2-core machine (load 12)
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("variant", sorted(WINOGRAD_VARIANTS))
@pytest.mark.parametrize("name", sorted(WINOGRAD_CASES))
def test_the_tiled_winograd_computes_what_numpy_does(monkeypatch, name, variant):
    """The forward pass, the stride-1 input gradient and the weight gradient by the tiled
    family's Winograd (its two GEMMs), at the case's batch and at 1 or 3."""
    for batch in (WINOGRAD_CASES[name][2], 1 if WINOGRAD_CASES[name][2] > 1 else 3):
        used = check_case(monkeypatch, name, variant, batch, weights=WINOGRAD_SELECTORS)
        assert WINOGRAD_SELECTORS <= used


@pytest.mark.slow  # 2-5 minutes each at load 12: past the default 300 s timeout
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("variant", ["winograd2", "winograd4"])
@pytest.mark.parametrize("name", ["resnet8", "vgg_cifar"])
def test_whole_models_with_the_tiled_winograd_forced(monkeypatch, name, variant):
    """Every layer of the example network on the GPU profile with every 3x3 stride-1 site (the
    forward, input and weight gradients) on the tiled Winograd, against numpy (--verify)."""
    path = str(ROOT / "specs" / f"{name}.yaml")
    profile = forced(analyse(path), variant)
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: profile)
    model = convgraph.compile(path, batch=2, share_buffers=False)
    checks = verify_model(model) + verify_training(model.graph, batch=2)
    failed = [(c.node, c.op, c.error) for c in checks if not c.passed]
    assert not failed, failed
    winograd = {k for k, s in model.plan.kernels.items() if s.selector in WINOGRAD_SELECTORS}
    assert winograd and any(set(c.kernels) & winograd for c in checks)
    session = TrainingSession(model.graph, batch=2)
    assert WINOGRAD_SELECTORS <= {k.selector for k in session.plan.kernels.values()}


@pytest.mark.slow
def test_the_tuner_reaches_the_tiled_winograd(monkeypatch, tmp_path):
    """The tuner's one-knob search (`convgraph tune --search descent`, 60 s a site) on the GPU
    profile steps from the implicit GEMM's default to both tiled Winograd algorithms on the forward
    and weight-gradient sites (one knob, ALGORITHM) and times them."""
    import convgraph.runtime.tune as tune_module

    monkeypatch.setenv("CONVGRAPH_CACHE", str(tmp_path / "cache"))
    profile = gpu_profile()
    monkeypatch.setattr(tune_module, "profile_for", lambda info, tuned=True: profile)
    timed = []
    real = tune_module._Tuner.runner

    def runner(self, site, knobs):  # the real runner, recording what it times
        timed.append((site.selector, knobs["ALGORITHM"]))
        return real(self, site, knobs)

    monkeypatch.setattr(tune_module._Tuner, "runner", runner)
    graph = analyse({"name": "gemm-wino-tune", "input": "8x8x8",
                     "pattern": "[INPUT-CONV(16, 3, pad=1)-FC(4)]"})
    tuner = tune_module._Tuner(graph, None, 4, 1)
    for site in tuner.sites(("train",)):
        if site.selector in ("CONV_FORWARD", "CONV_GEMM_WEIGHTS"):
            result = tuner.descend(site, time.perf_counter() + 60)
            assert result.best in site.space and result.tried > 1
            assert {(site.selector, name) for name in conv_gemm.WINOGRAD} <= set(timed), timed


# ---------------------------------------------------------------- the family's rules, no device

NETWORK = analyse(spec_of("strided"))


def test_the_cpu_profile_stays_on_todays_kernels():
    plan = plan_forward(NETWORK, profiles.CPU)
    training = plan_training(NETWORK, profiles.CPU)
    used = {k.selector for k in plan.kernels.values()} | {
        k.selector for k in training.kernels.values()}
    assert not used & GEMM_SELECTORS
    assert all(knobs.get("ALGORITHM") not in conv_gemm.TILED
               for site in plan.sites.values() for knobs in site.space)


def test_the_gpu_profile_defaults_to_the_tiled_family_with_the_others_searchable():
    plan = plan_training(NETWORK, profiles.GPU)
    selectors = {k.selector for k in plan.kernels.values()}
    assert GEMM_SELECTORS <= selectors
    forward = [s for s in plan.sites.values() if s.selector == "CONV_FORWARD"]
    assert forward and all(s.default["ALGORITHM"] == "gemm" for s in forward)
    for site in forward:  # the direct family is in the same space, the tuner may pick it
        algorithms = {k["ALGORITHM"] for k in site.space}
        assert {"gemm", "gemm_global", "direct"} <= algorithms
        assert len({tuple(sorted(k)) for k in site.space}) == 1  # one set of knobs: searchable
    launches = [launch for launch in plan.launch_groups()["train"]
                if plan.kernels[launch.kernel].selector in GEMM_SELECTORS]
    assert launches and all(launch.exact_local for launch in launches)
    for launch in launches:  # whole work-groups: the kernels have no early return
        assert all(g % w == 0 for g, w in zip(launch.global_size, launch.local_size))


def test_the_gpu_spaces_leave_out_the_cpu_familys_fused_winograd():
    """The fused Winograd keeps a work-item's tiles in a private scratch of up to 160 KiB (a
    GPU would spill it to global memory): offered on the CPU profile's 3x3 stride-1 sites, not
    in the GPU family's spaces, which keep the three-kernel forms."""
    from convgraph.ops import winograd

    graph = analyse({"name": "fused", "input": "16x16x32",
                     "pattern": "[INPUT-CONV(32, 3, pad=1)-RELU-FC(4)]"})

    def algorithms(profile) -> set:
        sites = plan_forward(graph, profile).sites.values()
        return {knobs.get("ALGORITHM") for site in sites if site.selector == "CONV_FORWARD"
                for knobs in site.space}

    assert set(winograd.FUSED) <= algorithms(profiles.CPU)
    on_gpu = algorithms(profiles.GPU)
    assert not on_gpu & set(winograd.FUSED) and {"winograd4", "gemm"} <= on_gpu


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_ungrouped_conv_and_fc_gets_the_tiled_family_by_default(name):
    graph = analyse(spec_of(name))
    plan = plan_training(graph, profiles.GPU)
    tiled = {layer for spec in plan.kernels.values() if spec.selector in GEMM_SELECTORS
             for layer in spec.layers}
    wanted = {node for node in graph if graph.nodes[node]["op"] in ("conv", "fc")}
    assert wanted <= tiled
    direct = {"CONV_FORWARD", "CONV_BACKWARD_WEIGHTS", "CONV_BACKWARD_WEIGHTS_TAPS",
              "CONV_BACKWARD_DATA", "DENSE_FORWARD", "DENSE_BACKWARD_WEIGHTS",
              "DENSE_BACKWARD_DATA"}
    assert not direct & {spec.selector for spec in plan.kernels.values()}


WINOGRAD_NETWORK = analyse(spec_of("winograd"))


def test_the_gpu_profile_offers_the_tiled_winograd_on_3x3_stride_1_sites():
    """Forward (so the stride-1 input gradient) and weight-gradient sites of 3x3 stride-1
    convs offer both tiled Winograd algorithms one ALGORITHM step from the implicit GEMM's
    default, which stays the default; other sites do not offer them. No setting twice."""
    for site in plan_training(WINOGRAD_NETWORK, profiles.GPU).sites.values():
        assert len({json.dumps(k, sort_keys=True) for k in site.space}) == len(site.space)
        if site.selector not in ("CONV_FORWARD", "CONV_GEMM_WEIGHTS"):
            assert not {k["ALGORITHM"] for k in site.space} & set(conv_gemm.WINOGRAD)
            continue
        assert site.default["ALGORITHM"] == "gemm"
        for algorithm in conv_gemm.WINOGRAD:
            assert {**site.default, "ALGORITHM": algorithm} in site.space
    stride_2 = [site for site in plan_training(NETWORK, profiles.GPU).sites.values()
                if site.node == "conv2"]
    assert stride_2 and not {k["ALGORITHM"] for site in stride_2 for k in site.space} & set(
        conv_gemm.WINOGRAD)


def test_the_cpu_profile_never_offers_the_tiled_winograd():
    for plan in (plan_forward(WINOGRAD_NETWORK, profiles.CPU),
                 plan_training(WINOGRAD_NETWORK, profiles.CPU)):
        assert not {k.selector for k in plan.kernels.values()} & WINOGRAD_SELECTORS
        assert all(knobs.get("ALGORITHM") not in conv_gemm.TILED
                   for site in plan.sites.values() for knobs in site.space)


def test_f4_in_the_tiled_family_keeps_the_numerical_guard():
    shape = {"KERNEL_H": 3, "KERNEL_W": 3, "STRIDE_H": 1, "STRIDE_W": 1, "DILATION_H": 1,
             "DILATION_W": 1, "GROUPS": 1, "IN_CHANNELS": 513}
    assert conv_gemm.winograd_algorithms(shape) == ["winograd2_gemm"]
    assert conv_gemm.winograd_algorithms({**shape, "IN_CHANNELS": 512}) == list(
        conv_gemm.WINOGRAD)
    assert conv_gemm.winograd_algorithms({**shape, "STRIDE_H": 2}) == []


@pytest.mark.parametrize("variant", ["winograd2", "winograd4-small"])
def test_forced_tiled_winograd_plans_launch_whole_exact_work_groups(variant):
    """Every forward and weight-gradient GEMM of the forced plans is a tiled Winograd GEMM,
    launched with exact, whole work-groups, one row of groups per position (and group of
    images or split of the batch), within the device's limits."""
    profile = forced(WINOGRAD_NETWORK, variant)
    plan = plan_training(WINOGRAD_NETWORK, profile)
    launches = plan.launch_groups()["train"]
    selectors = [plan.kernels[launch.kernel].selector for launch in launches]
    assert selectors.count("WINOGRAD_GEMM_FORWARD") == 5  # 3 forward, 2 input gradients
    assert selectors.count("WINOGRAD_GEMM_WEIGHTS") == 3
    assert not {"CONV_GEMM_FORWARD", "CONV_GEMM_WEIGHTS"} & set(selectors)
    positions = 16 if variant.startswith("winograd2") else 36
    for launch, selector in zip(launches, selectors):
        if selector in WINOGRAD_SELECTORS:
            assert launch.exact_local and launch.batch_axis == 2
            assert launch.global_size[2] == positions and launch.local_size[2] == 1
            assert all(g % w == 0 for g, w in zip(launch.global_size, launch.local_size))
            assert launch.local_size[0] * launch.local_size[1] <= profile.max_work_group


def test_weight_gradient_splits_follow_the_layers_work_groups():
    """Small layers split the batch finely (their splits fill the device), large ones into
    splits of up to 16 images (fewer partial sums to hold and add)."""
    knobs = conv_gemm.default_knobs(profiles.GPU, 4608, 512, 196)  # VGG-16 conv5 at 14x14
    assert conv_gemm.split_images(knobs, 4608, 512) == 16
    knobs = conv_gemm.default_knobs(profiles.GPU, 27, 16, 1024)  # a 3-channel first layer
    assert conv_gemm.split_images(knobs, 27, 16) == 1


def test_every_offered_setting_fits_the_profiles_limits():
    small = replace(profiles.GPU, local_memory=4096, max_work_group=64)
    for profile in (profiles.GPU, small):
        for site in plan_training(NETWORK, profile).sites.values():
            for knobs in _tiled(site):
                columns, rows = conv_gemm.group_shape(knobs)
                assert columns * rows <= profile.max_work_group
                assert conv_gemm.local_bytes(knobs) <= profile.local_memory


def test_a_device_too_small_for_any_setting_keeps_the_direct_family():
    tiny = replace(profiles.GPU, local_memory=64, max_work_group=2)
    plan = plan_training(NETWORK, tiny)
    assert not {k.selector for k in plan.kernels.values()} & GEMM_SELECTORS


def test_the_profile_takes_the_devices_limits():
    info = replace(select_device()[0], type="gpu", local_memory=16384, max_work_group_size=128,
                   max_work_item_sizes=(128, 64, 64))
    profile = profiles.profile_for(info, tuned=False)
    assert profile.conv_family == "tiled"
    assert (profile.local_memory, profile.max_work_group) == (16384, 64)


def test_a_plan_for_a_larger_device_is_refused_not_shrunk(monkeypatch):
    """An exact_local launch whose work-group the device cannot hold is a DeviceError with a
    hint (a plan made for another device), never a halved work-group."""
    spec = {"name": "gemm-one", "input": "8x8x4", "pattern": "[INPUT-CONV(32, 3, pad=1)-FC(2)]"}
    profile = gpu_profile()
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: profile)
    model = convgraph.compile(spec, batch=1)
    launch = next(launch for launch in model.plan.launches if launch.exact_local)
    executor = model.executor
    largest = max(launch.local_size[0] * launch.local_size[1] // 2, 1)
    executor.info = replace(executor.info, max_work_group_size=largest)
    executor.local_sizes.clear()
    with pytest.raises(DeviceError) as caught:
        model.predict(np.zeros((1, 4, 8, 8), np.float32))
    assert "exactly" in str(caught.value) and caught.value.hint


# ---------------------------------------------------------------- Oclgrind

OCLGRIND_CHILD = """
import json, sys
import convgraph
import convgraph.runtime.target as target
from convgraph.codegen import source
from convgraph.pipeline import analyse
from convgraph.runtime.devices import select_device
from convgraph.verify import verify_model, verify_training
from tests.test_conv_gemm import forced, gpu_profile
specs, variants, mode = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
plant = mode.startswith("plant")  # "plant": forward checks only; "plant-training": both
if plant:  # the barrier that keeps the next stage's loads from overwriting this one's operands
    real = source.kernel_file
    source.kernel_file = lambda family: real(family).replace(
        "barrier(CLK_LOCAL_MEM_FENCE); /* stage consumed", "/* (planted: no barrier) */ /*", 1)
info = select_device()[0]
base = gpu_profile(info, build_options=("-cl-opt-disable",))
print("limits", base.max_work_group, base.local_memory, flush=True)
failed = 0
for spec in specs:
    for variant in variants:
        profile = forced(analyse(spec), variant, base)
        target.profile_for = lambda info, profile=profile: profile
        model = convgraph.compile(spec, batch=2, share_buffers=False)
        assert "Oclgrind" in model.info.platform, model.info.label
        for launch in model.plan.launches:  # what the plan chose fits the device
            if launch.exact_local:
                assert launch.local_size[0] * launch.local_size[1] <= base.max_work_group
        checks = verify_model(model)
        if mode != "plant":
            checks += verify_training(model.graph, batch=2)
        failed += sum(not check.passed for check in checks)
        print(variant, len(checks), "kernel checks", flush=True)
sys.exit(1 if failed and not plant else 0)
"""
# tiny shapes (Oclgrind is ~1000x slower than PoCL): partial tiles, stride 2, a gated input
# gradient, an accumulated one (two readers), fc
OCLGRIND_NETWORKS = [
    {"input": "5x7x3", "pattern": "[INPUT-CONV(5, 3, pad=1)-RELU-CONV(6, 3, stride=2, pad=1)"
                                  "-FC(3)]"},
    {"input": "6x5x2", "nodes": {
        "a": {"op": "conv", "filters": 5, "size": 1, "inputs": ["input"]},
        "b": {"op": "conv", "filters": 3, "size": 3, "pad": 1, "inputs": ["a"]},
        "c": {"op": "conv", "filters": 3, "size": 3, "pad": 1, "inputs": ["a"]},
        "s": {"op": "add", "inputs": ["b", "c"]}, "g": "gap", "o": {"op": "fc", "units": 2}}},
]
needs_oclgrind = pytest.mark.skipif(
    not Path("/usr/lib/oclgrind/liboclgrind-rt-icd.so").exists(),
    reason="oclgrind is not installed (apt-get install oclgrind)")


def assert_clean_under_oclgrind(tmp_path, networks: list, variants: list[str],
                                extra_env: dict | None = None) -> str:
    """Each of ``variants`` forced on each of ``networks``, forward and backward kernels
    against numpy under Oclgrind's data-race, uninitialised-value and bounds checks: every
    pair checked, every check passed, nothing reported. Returns the child's output."""
    from tests.test_oclgrind import run_under_oclgrind

    done, reports = run_under_oclgrind(
        tmp_path, [sys.executable, "-c", OCLGRIND_CHILD, json.dumps(networks),
                   json.dumps(variants), "clean"], extra_env=extra_env, timeout=3600)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert done.stdout.count("kernel checks") == len(variants) * len(networks), done.stdout
    assert reports == [], done.stderr[:4000]
    return done.stdout


@pytest.mark.slow
@needs_oclgrind
def test_the_tiled_kernels_are_clean_under_oclgrind(tmp_path):
    """Every forced setting's forward and backward kernels: nothing reported."""
    assert_clean_under_oclgrind(tmp_path, OCLGRIND_NETWORKS, [
        "default", "no-local-memory", "prefetch", "prefetch-small", "small", "vector-1"])


@pytest.mark.slow
@needs_oclgrind
def test_a_small_device_gets_settings_it_holds(tmp_path):
    """Oclgrind simulating a device of 64 work-items and 8 KiB of local memory a work-group:
    the profile takes its limits, every tiled setting the plans choose fits them, and the
    kernels are clean and right there."""
    output = assert_clean_under_oclgrind(
        tmp_path, OCLGRIND_NETWORKS[:1], ["default", "large"],
        extra_env={"OCLGRIND_MAX_WGSIZE": "64", "OCLGRIND_LOCAL_MEM_SIZE": "8192"})
    assert "limits 64 8192" in output, output


@pytest.mark.slow
@needs_oclgrind
def test_oclgrind_catches_a_missing_barrier(tmp_path):
    """The hazard the checks above guard against: without the barrier after a stage's
    products, the next stage's loads overwrite operands other work-items still read, a
    local-memory race that Oclgrind reports (on PoCL it may silently pass)."""
    from tests.test_oclgrind import run_under_oclgrind

    network = {"input": "6x6x8", "pattern": "[INPUT-CONV(8, 3, pad=1)-FC(2)]"}  # 72 deep: stages
    done, reports = run_under_oclgrind(
        tmp_path, [sys.executable, "-c", OCLGRIND_CHILD, json.dumps([network]),
                   json.dumps(["default"]), "plant"], timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    races = [r for r in reports if "race" in r["kind"].lower()]
    assert races, done.stderr[:4000]
    # the plant removes the barrier from every kernel of conv_gemm.cl (the conv's and fc's)
    assert any(r["kernel"].endswith("conv_gemm_forward") for r in races), races[:3]
    assert all("gemm" in r["kernel"] for r in reports), reports[:3]


# 3x3 stride-1 sites for the tiled Winograd: partial tiles of both algorithms, a gated input
# gradient, then OCLGRIND_NETWORKS' accumulated one
OCLGRIND_WINOGRAD_NETWORKS = [
    {"input": "5x7x3", "pattern": "[INPUT-CONV(5, 3, pad=1)-RELU-CONV(6, 3, pad=1)-FC(3)]"},
    OCLGRIND_NETWORKS[1],
]


@pytest.mark.slow
@needs_oclgrind
def test_the_tiled_winograd_is_clean_under_oclgrind(tmp_path):
    """Both Winograd GEMMs (forward, so the input gradients, and the weight gradient's), with
    winograd.cl's transforms around them: nothing reported."""
    assert_clean_under_oclgrind(tmp_path, OCLGRIND_WINOGRAD_NETWORKS, ["winograd2", "winograd4"])


@pytest.mark.slow
@needs_oclgrind
def test_oclgrind_catches_a_missing_barrier_in_the_winograd_gemms(tmp_path):
    """The planted missing barrier (see above) in both Winograd GEMMs: 20 channels (stages of
    16) and a split's 9 tiles or more (stages of 8) make more than one stage in each, so the
    next stage overwrites operands other work-items still read; Oclgrind reports both races."""
    from tests.test_oclgrind import run_under_oclgrind

    network = {"input": "6x6x20", "pattern": "[INPUT-CONV(8, 3, pad=1)-FC(2)]"}
    done, reports = run_under_oclgrind(
        tmp_path, [sys.executable, "-c", OCLGRIND_CHILD, json.dumps([network]),
                   json.dumps(["winograd2"]), "plant-training"], timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    races = {r["kernel"] for r in reports if "race" in r["kind"].lower()}
    for kernel in ("winograd_gemm_forward", "winograd_gemm_weights"):
        assert any(name.endswith(kernel) for name in races), (kernel, sorted(races))

