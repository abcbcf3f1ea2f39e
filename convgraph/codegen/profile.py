"""Per-device code-generation parameters: tile sizes and work-group shapes.

The kernels are the same on every device; these numbers specialise them. A CPU (PoCL) wants few,
fat work-items with wide vectors and register tiles; a GPU wants many work-items grouped for
coalesced loads. These are the defaults; `convgraph tune` times the alternatives each kernel site
allows and keeps the fastest per device (codegen/tuning.py), which ``profile_for`` attaches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from convgraph.codegen.tuning import Tuning, load_tuning
from convgraph.core import DeviceInfo


@dataclass(frozen=True)
class DeviceProfile:
    family: str
    conv_tile_pixels: int  # output pixels per work-item in conv
    dense_tile_rows: int  # images per work-item in fc
    max_vector: int  # widest vector the kernels may use
    conv_local: tuple[int, int, int] | None  # work-group shape of conv launches (None: driver's)
    pixel_local: tuple[int, int, int] | None  # of the pixel-wise kernels
    build_options: tuple[str, ...] = ("-cl-mad-enable",)
    images_per_split: int = 2  # batch split of gradient sums (each split: partial sums)
    # weight gradients: images per split as many as fit this many bytes (inputs + gradients;
    # None: images_per_split), and vectors of filters per work-item
    split_cache_bytes: int | None = None
    grad_filter_vectors: int = 1
    # 3x3 weight gradients: a kernel row's taps per work-item (conv.cl's TAP_COLUMNS)
    grad_tap_columns: bool = False
    dense_unit_vectors: int = 1  # vectors of units per work-item in fc (at most)
    dense_channel_step: int = 1  # inputs per load in fc (at most)
    # fc weight gradient: inputs x vectors of units per work-item (at most)
    dense_grad_inputs: int = 4
    dense_grad_unit_vectors: int = 1
    dense_grad_rows: int = 16  # images per work-item of the fc input gradient (at most)
    # input pixels per work-item of the strided conv input-gradient gather: its private
    # tile is 4 x this many vectors, and PoCL replicates private arrays across a work-group (8
    # segfaulted ResNet-8 at batch 64)
    grad_tile_pixels: int = 4
    # launches with no work-group shape of their own get one that does not depend on the batch
    # (see plan._batch_free_local): PoCL recompiles a kernel for every new shape
    batch_free_local: bool = False
    # the algorithm of an untuned 3x3 stride-1 ungrouped conv (ops/winograd.py): the first rule
    # (least input and output channels, output width and height from, to, algorithm) that
    # fits it, else direct
    winograd_rules: tuple[tuple[int, int, int, str], ...] = ()
    # the conv kernel family of untuned sites (ops/conv_gemm.py): "direct" (conv.cl's register
    # tiles, no local memory: what wins on PoCL) or "tiled" (conv_gemm.cl's local-memory tiled
    # GEMMs, offered beside direct and Winograd, first); the tiled family's limits per work-group
    # (profile_for lowers them to the device's reported CL_DEVICE_LOCAL_MEM_SIZE and work-group
    # limits, so a setting a device cannot hold is never offered)
    conv_family: str = "direct"
    local_memory: int = 0  # bytes
    max_work_group: int = 0  # work-items
    # the same for the weight gradients of those convs (their own site and rules)
    winograd_weight_rules: tuple[tuple[int, int, int, str], ...] = ()
    tuning: Tuning = field(default_factory=Tuning)  # per-site choices measured on the device


# conv tiles of 8 pixels: `convgraph tune` chose 8 for most VGG-CIFAR layers, and a 16-pixel
# tile (x 8 channels per load) took PoCL 0.47 s to compile against 0.30 s
# fc forward: 8 inputs per load (VGG-CIFAR fc1 at batch 64, alternating: 3.0 -> 1.9 ms);
# fc gradients (VGG-CIFAR fc1 at batch 64, alternating): weights 4 inputs x 4 vectors of units
# per work-item (0.74-0.91 -> 0.45-0.51 ms), inputs 8 images x 4 inputs (1.21 -> 0.88 ms)
# weight gradients: 8 channels x 2 vectors of filters, splits of ~1 MiB (alternating timings
# on VGG-CIFAR, batch 64: conv2 7.9 -> 6.4 ms, conv4 8.7 -> 6.5, conv6 13.7 -> 8.6-9.7); for
# 3x3 kernels a row of 3 taps x 4 channels x 2 vectors per work-item (each gradient vector
# serves 12 fmas instead of 8: VGG-CIFAR and ResNet-8 3x3 layers 1.03-1.37x, alternating in
# one process, 2026-12-01 21:1x, Xeon family 6 model 167, load 9-12)
# Winograd by default where benchmarks/winograd.py measured it ahead of direct at batch 64 in
# both of two runs (2026-12-01, README "Winograd"): F(4x4) with >= 64 channels on both sides and
# 8x8 to 16x16 outputs (VGG-CIFAR conv4-conv6, ResNet-8 res3, ResNet-18 layer3: 1.3-3.9x), F(2x2)
# below 8x8 (ResNet-18 layer4, 7x7: F(4x4) has 4 tiles an image there, too few GEMM rows).
# Direct below 64 channels (32->64 at 16x16 won in one run, lost in the other) and on larger
# outputs (ResNet-18 layer1, 56x56: even; layer2, 28x28 x 128, F(4x4) 1.6x, but every wide
# layer's transformed tiles would cost training its scratch: left to `convgraph tune`)
CPU_WINOGRAD = ((64, 8, 16, "winograd4"), (64, 1, 7, "winograd2"))
# Weight gradients by F(4x4) only where benchmarks/winograd.py measured it ahead in both of two
# runs (2026-12-01 18:23 and 18:39, batch 64, loaded machine): 8x8 outputs of 128 channels
# (VGG-CIFAR conv6: 1.3x and 1.7x). ResNet-8 res3 (8x8, 64 -> 64) won too (1.3x, 1.4x), but
# VGG-CIFAR conv5 (8x8, 64 -> 128), which a rule reaching 64 channels would take, lost in both
# (0.89x, 0.94x); 16x16 64 -> 64 won once and lost once; below 64 channels direct won
CPU_WINOGRAD_WEIGHTS = ((128, 8, 8, "winograd4"),)
CPU = DeviceProfile("cpu", conv_tile_pixels=8, dense_tile_rows=16, max_vector=16,
                    conv_local=None, pixel_local=None, batch_free_local=True,
                    split_cache_bytes=1024 * 1024, grad_filter_vectors=2, grad_tap_columns=True,
                    dense_channel_step=8, dense_grad_unit_vectors=4, dense_grad_rows=8,
                    winograd_rules=CPU_WINOGRAD, winograd_weight_rules=CPU_WINOGRAD_WEIGHTS)
# the tiled family within 32 KiB and 256 work-items a work-group: what every OpenCL GPU of the
# last decade holds (NVIDIA 48 KiB, AMD 64 KiB, Intel 64 KiB, Apple 32 KiB)
GPU = DeviceProfile("gpu", conv_tile_pixels=4, dense_tile_rows=4, max_vector=4,
                    conv_local=(4, 4, 4), pixel_local=(4, 8, 4), images_per_split=1,
                    conv_family="tiled", local_memory=32768, max_work_group=256)


# Oclgrind simulates a device to find bugs: its uninitialised-value checker cannot follow the
# LLVM 'freeze' instructions the optimiser emits, so it gets unoptimised code.
OCLGRIND = DeviceProfile("oclgrind", conv_tile_pixels=4, dense_tile_rows=4, max_vector=4,
                         conv_local=None, pixel_local=None, images_per_split=1,
                         build_options=("-cl-opt-disable",))


def base_profile(info: DeviceInfo) -> DeviceProfile:
    """The device family's defaults, without tuning."""
    if "oclgrind" in info.platform.lower():
        return OCLGRIND
    return GPU if info.type == "gpu" else CPU


def profile_for(info: DeviceInfo, tuned: bool = True) -> DeviceProfile:
    """The defaults with this device's tuning table (or the closest tuned device's) attached.
    Oclgrind checks the default kernels: a simulator's timings mean nothing."""
    profile = within_limits(base_profile(info), info)
    if not tuned or profile is OCLGRIND:
        return profile
    return replace(profile, tuning=load_tuning(info))


def within_limits(profile: DeviceProfile, info: DeviceInfo) -> DeviceProfile:
    """The tiled family's limits lowered to what ``info``'s device reports (a device with less
    local memory or smaller work-groups is offered only the settings it holds)."""
    if profile.conv_family != "tiled":
        return profile
    largest = min(info.max_work_group_size, *info.max_work_item_sizes[:2])
    return replace(profile, local_memory=min(profile.local_memory, info.local_memory),
                   max_work_group=min(profile.max_work_group, largest))
