"""Tuning: every setting a kernel site offers the tuner is a correct kernel, the tuning file
round-trips, borrows from the closest tuned device and ignores stale or corrupt entries, and
`convgraph tune` measures, saves and is then used by compile.

Each variant of a case sets every site of the network at once to one entry of its space (the
i-th, spread over the space), so one compile checks many sites. CI runs a spread of variants;
the slow tier (``-m slow``) runs every entry of every space."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import convgraph
import convgraph.runtime.target
from convgraph.codegen import profile as profiles
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.profile import profile_for
from convgraph.codegen.training import plan_training
from convgraph.codegen.tuning import (
    Tuning,
    closeness,
    device_key,
    load_tuning,
    save_tuning,
    tuning_file,
)
from convgraph.pipeline import analyse
from convgraph.reference import reference_gradients
from convgraph.runtime.devices import select_device
from convgraph.train.session import TrainingSession
from convgraph.verify import relative_error
from tests.test_kernels import check_forward, input_batch, poison, random_params

CASES = {
    # odd widths (partial pixel tiles), stride 2, 1x1, a 5x5 with groups, a first layer (of 32
    # filters: 2 vectors of them per work-item), an fc of 4 vectors of units
    "plain": {"input": "13x7x3", "pattern": "[INPUT-CONV(32, 3, pad=1)-RELU-CONV(32, 3, pad=1)"
                                            "-CONV(16, 3, stride=2, pad=1)-RELU-FC(64)]"},
    "mixed": {"input": "9x6x8", "pattern": "[INPUT-CONV(32, 1)-RELU-CONV(16, 5, pad=2, groups=2)"
                                           "-CONV(24, 3, dilation=2, pad=2)-FC(4)]"},
}
SPREAD = 4  # variants per case
# the default tier checks the spread's last variant (the far end of each space: plain and mixed
# settings on the other family), the slow tier the three before it: CI's time
SPREAD_INDICES = [index if index == SPREAD - 1 else pytest.param(index, marks=pytest.mark.slow)
                  for index in range(SPREAD)]

pytestmark = pytest.mark.device


@pytest.fixture
def tuning_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVGRAPH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _sites(graph, base=None):
    info = select_device()[0]
    base = base or profile_for(info, tuned=False)
    sites = dict(plan_forward(graph, base).sites)
    sites.update(plan_training(graph, base).sites)
    return info, sites


def _variant(sites, index: int, count: int) -> dict:
    """Tuning entries that give every site entry ``index`` of ``count`` spread over its space."""
    return {key: {"knobs": site.space[index * len(site.space) // count]}
            for key, site in sites.items()}


def _check_variant(name: str, index: int, count: int, family=None, monkeypatch=None) -> None:
    """Compile case ``name`` with variant ``index`` of ``count`` as this device's tuning (or,
    with ``family``, another device family's profile tuned so, run on this device) and compare
    its forward pass and gradients with numpy."""
    graph = analyse(CASES[name])
    info, sites = _sites(graph, family)
    entries = _variant(sites, index, count)
    if family is None:
        save_tuning(info, entries)
    else:
        tuned = replace(family, tuning=Tuning(entries, "tuned on this device"))
        monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: tuned)
    for batch in (1 + 2 * (index % 2),):  # batch 1 and 3 by turns
        model = convgraph.compile(CASES[name], batch=batch, share_buffers=False)
        assert model.profile.tuning.source == "tuned on this device"
        params = random_params(model, index)
        model.set_params(params)
        poison(model)
        check_forward(model, params, input_batch(model, batch, index),
                      what=f"{name} variant {index}/{count} batch {batch}")

        assert_step_gradients_match(graph, params, model, batch, index, name)


def _largest_space(name: str, profile=None) -> int:
    return max(len(site.space) for site in _sites(analyse(CASES[name]), profile)[1].values())


def assert_step_gradients_match(graph, params, model, batch: int, index: int, name: str):
    """A training session's gradients (every tensor and parameter) of a batch drawn from
    ``index`` within 1e-4 of the float64 reference's."""
    session = TrainingSession(graph, batch=batch)
    session.set_params(params)
    rng = np.random.default_rng(index)
    x = input_batch(model, batch, 50 + index)
    y = rng.integers(0, session.plan.classes, batch)
    grads, param_grads = session.gradients(x, y)
    *_, expected, expected_params = reference_gradients(
        graph, params, x, y, session.dropout_seed(), graph.graph["train"]["label_smoothing"])
    for node, grad in grads.items():
        assert relative_error(grad, expected[node]) < 1e-4, (name, index, node)
    for key, grad in param_grads.items():
        assert relative_error(grad, expected_params[key]) < 1e-4, (name, index, key)


@pytest.mark.parametrize("index", SPREAD_INDICES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_tuning_choices_compute_what_numpy_does(tuning_cache, name, index):
    _check_variant(name, index, SPREAD)


@pytest.mark.parametrize("index", SPREAD_INDICES)
def test_the_other_familys_tuning_choices_compute_what_numpy_does(tuning_cache, index,
                                                                  monkeypatch):
    """A CPU checks the settings a GPU may be tuned to (work-group shapes included), and the
    other way round."""
    own = profile_for(select_device()[0], tuned=False)
    other = profiles.CPU if own.family == "gpu" else profiles.GPU
    _check_variant("mixed" if index % 2 else "plain", index, SPREAD, other, monkeypatch)


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)  # 120 settings, each built and checked: past the default 300 s
@pytest.mark.parametrize("family", ["own", "other"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_tuning_choice_computes_what_numpy_does(tuning_cache, name, family, monkeypatch):
    own = profile_for(select_device()[0], tuned=False)
    profile = None
    if family == "other":
        profile = profiles.CPU if own.family == "gpu" else profiles.GPU
    count = _largest_space(name, profile)
    for index in range(count):
        _check_variant(name, index, count, profile, monkeypatch)


def test_spaces_start_with_the_default_and_hold_only_legal_settings():
    graph = analyse(CASES["plain"])
    _, sites = _sites(graph)
    assert {site.selector for site in sites.values()} >= {
        "CONV_FORWARD", "CONV_BACKWARD_WEIGHTS", "CONV_BACKWARD_DATA",
        "CONV_BACKWARD_WEIGHTS_TAPS", "DENSE_BACKWARD_WEIGHTS", "DENSE_BACKWARD_DATA"}
    for site in sites.values():
        assert len({json.dumps(k, sort_keys=True) for k in site.space}) == len(site.space)
        if site.selector == "CONV_FORWARD":
            for knobs in site.space:
                assert knobs["TILE_PIXELS"] * knobs["FILTER_VECTORS"] * knobs["VECTOR_WIDTH"] <= 256


# ---------------------------------------------------------------------------- the tuning file

def test_the_tuning_file_round_trips_and_ignores_what_no_longer_applies(tuning_cache):
    graph = analyse(CASES["plain"])
    info, sites = _sites(graph)
    key, site = next((k, s) for k, s in sites.items() if len(s.space) > 1)
    assert load_tuning(info).source == "defaults"
    save_tuning(info, {key: {"knobs": site.space[1]}})
    tuning = load_tuning(info)
    assert tuning.source == "tuned on this device"
    assert tuning.choice(key, site.space) == site.space[1]
    # a setting the kernel no longer offers (kernels changed since tuning) falls back
    stale = Tuning({key: {"knobs": {"TILE_PIXELS": 999}}})
    assert stale.choice(key, site.space) == site.default
    # a corrupt file is ignored, never fatal
    tuning_file(info).write_text("{not json")
    assert load_tuning(info).source == "defaults"


def test_an_untuned_device_borrows_the_closest_tuned_one(tuning_cache):
    info = select_device()[0]
    other_driver = replace(info, driver_version=info.driver_version + "-other")
    other_vendor = replace(info, name="another cpu", vendor="elsewhere", platform="elsewhere")
    gpu = replace(info, type="gpu", name="a gpu")
    save_tuning(other_vendor, {"k": {"knobs": {"A": 1}}})
    save_tuning(gpu, {"k": {"knobs": {"A": 2}}})
    assert load_tuning(info).entries["k"]["knobs"] == {"A": 1}  # same type beats another type
    save_tuning(other_driver, {"k": {"knobs": {"A": 3}}})
    borrowed = load_tuning(info)
    assert borrowed.entries["k"]["knobs"] == {"A": 3}  # the same device under another driver
    assert borrowed.source.startswith("borrowed from")
    assert closeness(device_key(info), device_key(gpu)) == 0


# ---------------------------------------------------------------------------- the command

def test_tune_measures_saves_and_compile_uses_it(tuning_cache, cli, write_spec):
    spec = write_spec("""
        input: 12x12x8
        pattern: "[INPUT-CONV(16, 3, pad=1)-RELU-POOL-FC(4)]"
        train: {batch: 8}
    """)
    # a budget the tuner does not use up: it stops when every site is done (under a load of
    # 10-14 it needed 55 s for this network before its fc gradients became sites)
    status, out, err = cli("tune", spec, "--budget", "150", "--samples", "2", "--json")
    assert status == 0, err
    report = json.loads(out)["models"][0]
    assert report["sites"] and report["not_reached"] == 0
    for site in report["sites"]:
        assert site["tuned_ms"] <= site["default_ms"] and site["tried"] >= 1
    saved = json.loads(open(report["file"]).read())["entries"]
    assert {site["key"] for site in report["sites"]} == set(saved)
    model = convgraph.compile(str(spec), batch=8)
    assert model.profile.tuning.source == "tuned on this device"
    conv = next(s for s in report["sites"] if s["kernel"] == "CONV_FORWARD"
                and s["key"] in model.plan.sites)
    # a Winograd choice runs its GEMM with the tiles (TILE_PIXELS: tiles per work-item; a
    # fused form's GEMMs are in its one kernel)
    algorithm = conv["knobs"].get("ALGORITHM", "direct")
    winograd = algorithm != "direct"
    selector = ("CONV_FORWARD" if not winograd else
                "WINOGRAD_FUSED" if algorithm.endswith("_fused") else "WINOGRAD_GEMM")
    kernel = next(k for k in model.plan.kernels.values() if k.selector == selector)
    for knob, value in conv["knobs"].items():
        if knob not in ("LOCAL", "ALGORITHM"):
            if not (winograd and knob == "TILE_PIXELS"):  # as TILE_ROWS: near it
                assert kernel.defines[knob] == value


def test_tune_with_no_time_keeps_defaults_and_says_so(tuning_cache, cli, write_spec):
    spec = write_spec("""
        input: 8x8x4
        pattern: "[INPUT-CONV(8, 3, pad=1)-FC(2)]"
    """)
    status, out, err = cli("tune", spec, "--budget", "0.001")  # 0 is refused (exit 2)
    assert status == 0, err
    assert "not reached in the budget keep their defaults" in out


def test_an_unwritable_tuning_file_is_a_clear_error(tmp_path, monkeypatch, cli, write_spec):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("CONVGRAPH_CACHE", str(blocker / "cache"))
    spec = write_spec("""
        input: 8x8x4
        pattern: "[INPUT-CONV(8, 3, pad=1)-FC(2)]"
    """)
    status, out, err = cli("tune", spec, "--budget", "20", "--mode", "infer")
    assert status == 7  # an output error, checked before the first timing
    assert "the tuning folder" in err and "CONVGRAPH_CACHE" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- the search

def test_the_fixed_set_holds_the_defaults_then_the_most_frequent_winners(tuning_cache):
    """The first stage: what runs untuned, the profile's default, then the settings of this
    site nearest to those that won most often at the same kernel (the tuning table's and this
    run's), each once."""
    from convgraph.runtime.tune import _Tuner, _winners

    graph = analyse(CASES["plain"])
    tuner = _Tuner(graph, None, 4, 1)
    site = next(s for s in tuner.sites(("infer",)) if s.selector == "CONV_FORWARD")
    often, once = site.space[3], site.space[5]
    save_tuning(tuner.info, {f"CONV_FORWARD:{n}": {"knobs": often} for n in range(3)}
                | {"CONV_FORWARD:x": {"knobs": once}, "DENSE_FORWARD:y": {"knobs": {"A": 1}}})
    won = _winners(load_tuning(tuner.info))
    assert set(won) == {"CONV_FORWARD", "DENSE_FORWARD"}
    assert tuner.fixed_set(site, won["CONV_FORWARD"]) == [site.default, often, once]
    # a winner of another layer's site (not in this space) brings the nearest setting of it
    elsewhere = {**often, "TILE_PIXELS": 999}
    from collections import Counter

    assert tuner.fixed_set(site, Counter({tuple(sorted(elsewhere.items())): 1}))[1] in site.space


def test_the_budget_goes_to_the_heavy_sites_that_can_use_it():
    from convgraph.runtime.tune import MIN_CANDIDATES, _share

    assert _share(30.0, [300, 100, 100, 100], 0.0) == pytest.approx(15.0)  # by FLOPs
    # at 3 s a probe, 30 s hold five sites' two probes: the lightest go, their time to the rest
    heavy = _share(30.0, [100] * 4 + [1] * 20, 3.0)
    assert heavy == pytest.approx(7.5) and heavy >= MIN_CANDIDATES * 3.0
    assert _share(1.0, [5, 5], 3.0) == pytest.approx(1.0)  # the heaviest keeps what is left


@pytest.mark.parametrize("option", [("--samples", "-1"), ("--search", "grid"),
                                    ("--seed", "one")])
def test_tune_refuses_bad_search_options(capsys, write_spec, option):
    from tests.test_hostile_cli import assert_refused, run_cli

    spec = write_spec("""
        input: 8x8x4
        pattern: "[INPUT-CONV(8, 3, pad=1)-FC(2)]"
    """)
    status, _, err = run_cli(capsys, "tune", spec, *option)
    assert_refused(status, err, 2, option[0])


def test_a_seed_repeats_the_samples_and_another_draws_others():
    from convgraph.codegen.tuning import Site
    from convgraph.runtime.tune import two_stage_order

    site = Site("CONV_FORWARD:k", "c", "CONV_FORWARD", tuple({"A": n} for n in range(20)))
    first = two_stage_order(site, [site.default, site.space[9]], 5, seed=7)
    assert first[:2] == [site.default, site.space[9]]
    assert first == two_stage_order(site, [site.default, site.space[9]], 5, seed=7)
    assert first != two_stage_order(site, [site.default, site.space[9]], 5, seed=8)
    assert len({json.dumps(k) for k in first}) == 7 and all(k in site.space for k in first)


def test_the_api_refuses_an_unknown_search():
    from convgraph.errors import UsageError
    from convgraph.runtime.tune import tune

    with pytest.raises(UsageError) as caught:
        tune(analyse(CASES["plain"]), search="grid")
    assert "two-stage or descent" in str(caught.value) and caught.value.hint


@pytest.mark.slow  # 20-60 s on a loaded 2-core machine (cold PoCL builds of every candidate)
def test_each_search_tunes_within_the_space(tuning_cache):
    from convgraph.runtime.tune import tune

    graph = analyse({"name": "tiny", "input": "6x6x4", "pattern": "[INPUT-CONV(8, 3, pad=1)]"})
    for search in ("two-stage", "descent"):
        report = tune(graph, batch=2, budget=60.0, modes=("infer",), repeats=1, samples=2,
                      search=search, seed=7)
        assert report.results and not report.skipped, search
        for result in report.results:
            assert result.best in result.site.space and result.tried >= 1
