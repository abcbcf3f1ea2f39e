"""The shipped GPU defaults per vendor and architecture class (codegen/profile.py's GPU_VENDORS).

Devices are described by DeviceInfo records (the value object the runtime fills from
pyopencl's queries), written out here for each vendor: each resolves to its row, an unknown
GPU to the generic GPU profile, a CPU to the CPU profile; the device's reported limits still
bound every row; an untuned plan takes the row's shipped settings wherever a site offers them.
The slow tier builds every row's settings on this PoCL device under the GPU profile and checks
them forward and backward against float64 numpy.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from convgraph.codegen import profile as profiles
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.training import plan_training
from convgraph.core import DeviceInfo
from convgraph.ops import conv_gemm
from convgraph.pipeline import analyse


def gpu(vendor: str, name: str, architecture: str = "", local_memory: int = 64 << 10,
        work_group: int = 1024) -> DeviceInfo:
    """A GPU as its driver would describe it."""
    return DeviceInfo(
        index="0:0", platform=f"{vendor} platform", name=name, type="gpu", vendor=vendor,
        driver_version="1.0", opencl_version="OpenCL 3.0", opencl_c_version=(1, 2),
        compute_units=64, global_memory=16 << 30, max_alloc=4 << 30, local_memory=local_memory,
        max_work_group_size=work_group, max_work_item_sizes=(work_group, work_group, 64),
        fp64=True, fp16=False, image_support=True, architecture=architecture)


# (vendor string, device name, architecture, the row it must resolve to), as drivers report them
DEVICES = [
    ("NVIDIA Corporation", "NVIDIA H200", "sm_90", "NVIDIA Hopper"),
    ("NVIDIA Corporation", "NVIDIA H100 80GB HBM3", "", "NVIDIA Hopper"),  # by name alone
    ("NVIDIA Corporation", "NVIDIA GeForce RTX 4090", "sm_89", "NVIDIA"),
    ("NVIDIA Corporation", "Tesla V100-SXM2-16GB", "sm_70", "NVIDIA"),
    ("Advanced Micro Devices, Inc.", "gfx1030", "gfx1030", "AMD RDNA"),
    ("AMD", "AMD Radeon RX 7900 XTX (radeonsi, navi31)", "", "AMD RDNA"),  # Mesa rusticl
    ("Advanced Micro Devices, Inc.", "gfx90a:sramecc+:xnack-", "gfx90a", "AMD GCN/CDNA"),
    ("Advanced Micro Devices, Inc.", "Ellesmere", "", "AMD GCN/CDNA"),
    ("Intel(R) Corporation", "Intel(R) Arc(TM) A770 Graphics", "", "Intel GPU"),
    ("Intel(R) Corporation", "Intel(R) UHD Graphics 630", "", "Intel GPU"),
    ("Apple", "Apple M2 Max", "", "Apple GPU"),
    ("ARM", "Mali-G78", "", "ARM Mali"),
    ("QUALCOMM", "QUALCOMM Adreno(TM) 740", "", "Qualcomm Adreno"),
]


@pytest.mark.parametrize("vendor,name,architecture,label", DEVICES)
def test_each_vendor_resolves_to_its_row(vendor, name, architecture, label):
    info = gpu(vendor, name, architecture)
    row = profiles.vendor_row(info)
    assert row is not None and row.label == label
    profile = profiles.profile_for(info, tuned=False)
    assert profile.family == "gpu" and profile.conv_family == "tiled"
    for field, value in row.overrides.items():
        assert getattr(profile, field) == value, field
    assert profile.tuning.shipped == row.shipped and not profile.tuning.entries
    assert label in profile.tuning.source


@pytest.mark.parametrize("vendor,name", [("Moore Threads", "MTT S80"),
                                         ("Imagination Technologies", "PowerVR B-Series"),
                                         ("ARMADA Graphics", "not an Arm GPU")])
def test_an_unknown_gpu_keeps_the_generic_gpu_profile(vendor, name):
    info = gpu(vendor, name)
    assert profiles.vendor_row(info) is None
    profile = profiles.profile_for(info, tuned=False)
    assert profile == profiles.within_limits(profiles.GPU, info)
    assert profile.tuning.shipped == ()


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD", "NVIDIA Corporation"])
def test_a_cpu_keeps_the_cpu_profile_whatever_its_vendor(vendor):
    info = replace(gpu(vendor, "a processor"), type="cpu")
    assert profiles.vendor_row(info) is None
    assert profiles.profile_for(info, tuned=False) == profiles.CPU


@pytest.mark.parametrize("vendor,name,architecture,label", DEVICES[::2])
def test_the_devices_limits_still_bound_every_row(vendor, name, architecture, label):
    small = gpu(vendor, name, architecture, local_memory=8 << 10, work_group=64)
    profile = profiles.profile_for(small, tuned=False)
    assert profile.local_memory <= 8 << 10 and profile.max_work_group <= 64
    for site in plan_training(NETWORK, profile).sites.values():
        for knobs in site.space:
            if knobs.get("ALGORITHM") in conv_gemm.TILED:
                columns, rows = conv_gemm.group_shape(knobs)
                assert columns * rows <= 64 and conv_gemm.local_bytes(knobs) <= 8 << 10


# partial tiles, a 3-channel first layer, stride 2, 1x1, a grouped conv (direct family only), fc
NETWORK = analyse({"name": "rows", "input": "13x9x3", "pattern":
                   "[INPUT-CONV(32, 3, pad=1)-RELU-CONV(64, 3, stride=2, pad=1)-CONV(64, 1)"
                   "-CONV(32, 3, pad=1, groups=2)-FC(40)]"})


@pytest.mark.parametrize("label", [row.label for row in profiles.GPU_VENDORS])
def test_an_untuned_plan_takes_the_rows_shipped_settings(label):
    """Every site offering a shipped setting's ALGORITHM runs that family with the shipped
    register tile where its space has it (rows first, then vectors); the other sites keep
    the profile's default."""
    row = next(row for row in profiles.GPU_VENDORS if row.label == label)
    info = gpu(*next((v, n, a) for v, n, a, wanted in DEVICES if wanted == label))
    profile = profiles.profile_for(info, tuned=False)
    families = set()
    for plan in (plan_forward(NETWORK, profile), plan_training(NETWORK, profile)):
        for site in plan.sites.values():
            chosen = profile.tuning.choice(site.key, site.space)
            assert chosen in site.space
            first = next((wanted for wanted in row.shipped
                          if any(k.get("ALGORITHM") == wanted["ALGORITHM"] for k in site.space)),
                         None)
            if first is None:
                assert chosen == site.default
                continue
            families.add(first["ALGORITHM"])
            offered = [k for k in site.space if k.get("ALGORITHM") == first["ALGORITHM"]]
            assert chosen["ALGORITHM"] == first["ALGORITHM"]
            for knob in ("TILE_PIXELS", "FILTER_VECTORS"):
                if any(k[knob] == first[knob] for k in offered):
                    assert chosen[knob] == first[knob], (site.node, site.selector, knob)
                    offered = [k for k in offered if k[knob] == first[knob]]
    assert row.shipped[0]["ALGORITHM"] in families


def test_only_the_hopper_rows_direct_tile_is_marked_measured():
    measured = [row.label for row in profiles.GPU_VENDORS if row.measured]
    assert measured == ["NVIDIA Hopper"]
    hopper = profiles.GPU_VENDORS[0]
    # README "Performance": tune chose 2 vectors of 4 filters x 8 pixels, 4x4x4 work-groups
    assert profiles.direct(8, 2, "4,4,4") in hopper.shipped


# ---------------------------------------------------------------------------- on the device

@pytest.mark.device
@pytest.mark.slow  # 5-20 s a row: every row's untuned plan built and checked on PoCL
@pytest.mark.parametrize("label", [row.label for row in profiles.GPU_VENDORS])
def test_every_rows_settings_compute_what_numpy_does(label, monkeypatch):
    """A row's untuned settings (its profile fields and shipped choices), within this device's
    limits and with its build options, forward and every gradient against float64 numpy at
    batch 1 and 3."""
    import numpy as np

    import convgraph
    import convgraph.runtime.target
    from convgraph.runtime.devices import select_device
    from convgraph.train.session import TrainingSession
    from tests.test_kernels import (
        check_forward,
        check_gradients,
        input_batch,
        poison,
        random_params,
    )

    here = select_device()[0]
    info = gpu(*next((v, n, a) for v, n, a, wanted in DEVICES if wanted == label))
    own = profiles.base_profile(here)
    profile = replace(profiles.within_limits(profiles.base_profile(info), here),
                      build_options=own.build_options,
                      tuning=profiles.shipped_tuning(info))
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: profile)
    spec = {"name": "rows", "input": "13x9x3", "pattern":
            "[INPUT-CONV(32, 3, pad=1)-RELU-CONV(64, 3, stride=2, pad=1)-CONV(64, 1)"
            "-CONV(32, 3, pad=1, groups=2)-FC(40)]"}
    for batch in (1, 3):
        model = convgraph.compile(spec, batch=batch, share_buffers=False)
        params = random_params(model, batch)
        model.set_params(params)
        poison(model)
        check_forward(model, params, input_batch(model, batch, 2), what=f"{label} b{batch}")
        session = TrainingSession(NETWORK, batch=batch)
        session.set_params(params)
        x = input_batch(session, batch, 3)
        labels = np.random.default_rng(4).integers(0, session.plan.classes, batch)
        check_gradients(session, params, x, labels, what=f"{label} b{batch}")
