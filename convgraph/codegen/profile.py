"""Per-device code-generation parameters: tile sizes and work-group shapes.

The kernels are the same on every device; these numbers specialise them. A CPU (PoCL) wants few,
fat work-items with wide vectors and register tiles; a GPU wants many work-items grouped for
coalesced loads. These are the defaults (a GPU's refined by its vendor and architecture class's
row of GPU_VENDORS); `convgraph tune` times the alternatives each kernel site allows and keeps
the fastest per device (codegen/tuning.py), which ``profile_for`` attaches.
"""

from __future__ import annotations

import re
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
    # direct conv forward (and stride-1 input gradient): vectors of filters per work-item where
    # the filters allow it, and input channels per step of the inner loop (at most)
    conv_filter_vectors: int = 1
    conv_channel_step: int = 4
    # output rows per work-item of a first layer (under 4 channels) whose filters fit one or two
    # vectors, its pixels conv_tile_pixels / vectors of filters (kernels/conv.cl TILE_ROWS)
    conv_first_tile_rows: int = 1
    # pixels x vectors of filters per work-item of the direct forward's row sweep
    # (kernels/conv.cl ROW_SWEEP: each input broadcast once for a kernel row's columns), the
    # default of stride-1 inner layers; 0: the sweep is the tuner's alone
    conv_sweep_pixels: int = 0
    # a first conv (1-4 channels, stride 1), the network input's only reader, reads it planar
    # (kernels/conv_planar.cl: vectors along the output row, every filter per work-item), so
    # packing a batch is a copy, not a transpose to NHWC
    conv_planar_input: bool = False
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
# Since the fused F(4x4) (one kernel, no batch-sized tiles in memory; 2026-12-02 00:29, batch
# 64, load 9, alternating: 1.1-2.4x the three kernels on every layer it is offered to, and ahead
# of direct from 32 channels: VGG-CIFAR conv2 1.2x forward, 2.4x input gradient, conv3 1.9x /
# 3.5x, ResNet-8 res2 1.5x / 1.4x), it comes first from 32 channels up to 32x32 outputs where
# it is offered (ops/winograd.py: where the transformed filters fit the L2); the three-kernel
# F(4x4) keeps the wider layers of 8x8 to 16x16 (VGG-CIFAR conv6, ResNet-18 layer3)
CPU_WINOGRAD = ((32, 8, 32, "winograd4_fused"), (64, 8, 16, "winograd4"), (64, 1, 7, "winograd2"))
# Weight gradients by F(4x4) where benchmarks/winograd.py measured it ahead in both of two runs
# (2026-12-01 21:31 and 21:40, batch 64, load 12-13, after the GEMMs' memory broadcasts and
# position-major groups): every 8x8 and 16x16 layer of at least 32 channels, VGG-CIFAR
# conv3-conv6 (16x16 32->64 2.1x, 1.5x; 64->64 1.1x, 4.2x; 8x8 64->128 3.4x, 1.4x;
# 128->128 1.8x, 1.6x) and ResNet-8 res2, res3 (16x16 32->32 1.2x, 1.1x; 8x8 64->64 1.5x,
# 1.7x). Not the sizes between (ResNet-18's 14x14 256->256 lost in the run before) nor 32x32
# (VGG-CIFAR conv2 won once and lost once; 16-channel ResNet-8 res1 lost both)
CPU_WINOGRAD_WEIGHTS = ((32, 8, 8, "winograd4"), (32, 16, 16, "winograd4"))
# direct conv forward: 8 pixels x 2 vectors of filters x 4 channels a step (16 accumulators, 8
# weight vectors, one broadcast: 25 of the 32 zmm registers), each input broadcast straight
# from memory (kernels/conv.cl). benchmarks/conv_tiles.py, batch 64, alternating, against
# 8 x 1 x 8 with the same kernel: VGG-CIFAR conv2 1.2x, conv3 1.2x, ResNet-8 res2/conv2 1.6x;
# 4 channels a step also where one vector of filters is all there is (README "Weak spots").
# Row sweeps on stride-1 inner layers (each input broadcast serves the 3 columns of a 3x3
# kernel): 16 pixels x 1 vector x 4 channels, ResNet-8 res1/conv1 1.15-1.3x forward and
# 1.11-1.14x input gradient; 8 x 2 x 2 channels (4 spilled), ResNet-8 res2/conv2 0.91-1.12x
# (median 1.04x), VGG-CIFAR conv2 0.93-1.38x (1.03x), conv3 0.94-1.5x, VGG-16 conv3_2 1.5x;
# benchmarks/conv_tiles.py, batch 16 and 64, alternating, load 2-10
CPU = DeviceProfile("cpu", conv_tile_pixels=8, dense_tile_rows=16, max_vector=16,
                    conv_filter_vectors=2, conv_channel_step=4, conv_first_tile_rows=2,
                    conv_sweep_pixels=16,
                    conv_planar_input=True,
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


# ---------------------------------------------------------------------------- GPU vendor rows
# An untuned GPU starts from its vendor and architecture class's row: profile fields (the
# direct family's pixel tile and work-groups, the tiled family's limits) and shipped settings
# (partial settings of the tiled and direct families, see Tuning.shipped_choice; a site takes
# the setting of its space nearest to them, so every shipped choice is a setting the site
# offers, within the device's reported limits). Rows are derived from published facts (the
# source is named on each); none is measured but the NVIDIA Hopper row's direct-family tile,
# which `convgraph tune` chose on an H100 (README "Performance": 8 pixels x 2 vectors of 4
# filters, 4x4x4 work-groups). `convgraph tune` starts from them and measures the rest.

@dataclass(frozen=True)
class VendorRow:
    """The shipped defaults of one vendor and architecture class of GPU."""

    label: str
    vendors: str  # a regular expression CL_DEVICE_VENDOR matches (from its start, any case)
    names: str = ""  # a regular expression on the device name or architecture; "" any
    overrides: dict = field(default_factory=dict)  # DeviceProfile fields
    shipped: tuple[dict, ...] = ()  # partial settings, each for the sites of its ALGORITHM
    measured: str = ""  # where these settings were measured; "" derived, unmeasured

    def matches(self, info: DeviceInfo) -> bool:
        if info.type != "gpu" or not re.match(self.vendors, info.vendor, re.IGNORECASE):
            return False
        text = f"{info.name} {info.architecture}"
        return not self.names or re.search(self.names, text, re.IGNORECASE) is not None


def tiled(rows: int, vectors: int, group: str, step: int = 16, algorithm: str = "gemm",
          width: int = 4) -> dict:
    """A tiled-family setting (ops/conv_gemm.py's knobs): a register tile of ``rows`` output
    rows x ``vectors`` vectors of ``width`` columns, work-groups of ``group`` = "columns,rows,1",
    ``step`` reduction steps a stage, staged in local memory (gemm) or not (gemm_global)."""
    return {"ALGORITHM": algorithm, "TILE_PIXELS": rows, "FILTER_VECTORS": vectors,
            "VECTOR_WIDTH": width, "LOCAL": group, "CHANNEL_STEP": step}


def direct(pixels: int, vectors: int, group: str) -> dict:
    """A direct-family setting of a GPU's conv forward site (ops/conv.py's knobs)."""
    return {"ALGORITHM": "direct", "TILE_PIXELS": pixels, "FILTER_VECTORS": vectors,
            "VECTOR_WIDTH": 4, "LOCAL": group}


GPU_VENDORS = (
    # NVIDIA Hopper (H100, H200; compute capability 9.0). CUDA C Programming Guide, "Compute
    # Capabilities": warps of 32, 48 KiB of shared (local) memory per block without opt-in, 255
    # registers per thread, 1024 threads per block; NVIDIA's OpenCL reports a preferred float
    # vector width of 1 but 128-bit loads (float4) are its widest. Tiled: 8 x 2 vectors of 4
    # (64 accumulators, within 255 registers), 16x16 work-groups (8 warps): DLPrimitives'
    # 8x8 blocks and 128-wide tiles (unmeasured). Direct: measured on an H100 (above).
    VendorRow("NVIDIA Hopper", "nvidia", r"\b(G?H100|H200|H800)\b|sm_90",
              {"conv_tile_pixels": 8, "local_memory": 48 << 10},
              (tiled(8, 2, "16,16,1"), direct(8, 2, "4,4,4")),
              measured="direct tile: convgraph tune on an H100 (README Performance)"),
    # other NVIDIA GPUs (Maxwell to Blackwell): the same per-thread and per-block limits
    # (CUDA C Programming Guide, "Compute Capabilities"), so the same tiles; unmeasured
    VendorRow("NVIDIA", "nvidia", "",
              {"conv_tile_pixels": 8, "local_memory": 48 << 10},
              (tiled(8, 2, "16,16,1"), direct(8, 2, "4,4,4"))),
    # AMD RDNA (gfx10xx-gfx12xx, Radeon RX 5000 and later). AMD RDNA ISA guides: wave32
    # natively, 64 KiB of LDS per work-group (128 KiB per WGP), up to 256 VGPRs a lane;
    # AMD's OpenCL caps work-groups at 256 by default. 8 x 2 vectors of 4 in 16x16
    # work-groups (8 waves of 32); 32 KiB of local memory keeps two work-groups per WGP
    VendorRow("AMD RDNA", r"(advanced micro devices|amd\b)", r"gfx1[0-2]\d|radeon rx",
              {"local_memory": 32 << 10, "max_work_group": 256},
              (tiled(8, 2, "16,16,1"), direct(4, 2, "8,8,1"))),
    # AMD GCN and CDNA (gfx8xx, gfx9xx: Polaris, Vega, Instinct MI). AMD GCN/CDNA ISA guides:
    # wavefronts of 64, 64 KiB of LDS per CU (a work-group at 32 KiB leaves room for two), 256
    # VGPRs a lane (an 8x8 tile's ~100 keep 2 waves per SIMD), work-groups up to 256 (four
    # wavefronts); direct work-groups of 64 (one wavefront)
    VendorRow("AMD GCN/CDNA", r"(advanced micro devices|amd\b)", "",
              {"local_memory": 32 << 10, "max_work_group": 256},
              (tiled(8, 2, "16,16,1"), direct(4, 2, "8,8,1"))),
    # Intel GPUs (Gen9 to Xe). oneAPI GPU Optimization Guide: SIMD8/16/32 sub-groups, 64 KiB
    # of shared local memory per work-group, 128 32-byte registers per hardware thread (4 KiB:
    # 64 floats a work-item at SIMD16), work-groups up to 256 on Gen9 (512-1024 on Xe): a 4 x 1
    # vector of 4 tile (16 accumulators) in 16x16 work-groups, so the compiler keeps SIMD16
    VendorRow("Intel GPU", "intel", "",
              {"conv_tile_pixels": 4, "local_memory": 32 << 10, "max_work_group": 256},
              (tiled(4, 1, "16,16,1"), direct(4, 1, "4,4,4"))),
    # Apple GPUs (M1 and later). Apple's Metal feature set tables: SIMD-groups of 32, 32 KiB of
    # threadgroup (local) memory; Apple's OpenCL reports work-groups of up to 256; register use
    # beyond ~64 floats a thread lowers occupancy (Apple's "Optimize Metal Performance" notes):
    # 4 x 2 vectors of 4 (32 accumulators), 16x16 work-groups
    VendorRow("Apple GPU", "apple", "",
              {"local_memory": 32 << 10, "max_work_group": 256},
              (tiled(4, 2, "16,16,1"), direct(4, 1, "4,4,4"))),
    # ARM Mali (Bifrost, Valhall). Arm Mali GPU OpenCL Developer Guide / Best Practices: local
    # memory is ordinary cached memory (staging through it buys nothing: gemm_global), 64
    # registers a thread keep full occupancy (a 4 x 1 vector of 4 tile: 16 accumulators),
    # 128-bit vector loads, work-groups of 64-128: 8x8
    VendorRow("ARM Mali", r"arm\b", r"mali",
              {"conv_tile_pixels": 4, "max_work_group": 256},
              (tiled(4, 1, "8,8,1", 8, "gemm_global"), direct(4, 1, "8,8,1"))),
    # Qualcomm Adreno (6xx, 7xx). Snapdragon OpenCL General Programming and Optimization guide:
    # waves of 64 or 128 fibers, 32 KiB of on-chip local memory, vload4 (128-bit) loads
    # preferred, registers shared by the waves in flight (small private tiles): 4 x 1 vector of
    # 4 in 8x8 work-groups, stages of 8
    VendorRow("Qualcomm Adreno", "qualcomm", r"adreno",
              {"conv_tile_pixels": 4, "local_memory": 32 << 10, "max_work_group": 256},
              (tiled(4, 1, "8,8,1", 8), direct(4, 1, "8,8,1"))),
)


def vendor_row(info: DeviceInfo) -> VendorRow | None:
    """The first row of GPU_VENDORS that ``info``'s device matches (None: a CPU, or a GPU of
    no listed vendor, which keeps the generic GPU profile)."""
    return next((row for row in GPU_VENDORS if row.matches(info)), None)


def base_profile(info: DeviceInfo) -> DeviceProfile:
    """The device family's defaults, without tuning (a GPU's with its vendor row's fields)."""
    if "oclgrind" in info.platform.lower():
        return OCLGRIND
    if info.type != "gpu":
        return CPU
    row = vendor_row(info)
    return replace(GPU, **row.overrides) if row else GPU


def shipped_tuning(info: DeviceInfo) -> Tuning:
    """No measured choices, the shipped defaults of the device's vendor row (if any)."""
    row = vendor_row(info)
    if row is None:
        return Tuning()
    return Tuning(source=f"shipped defaults for {row.label}", shipped=row.shipped)


def profile_for(info: DeviceInfo, tuned: bool = True) -> DeviceProfile:
    """The defaults with this device's tuning table (or the closest tuned device's) attached;
    a GPU of a listed vendor starts from its row's shipped defaults (``tuned=False``: those
    alone). Oclgrind checks the default kernels: a simulator's timings mean nothing."""
    profile = within_limits(base_profile(info), info)
    if profile is OCLGRIND:
        return profile
    shipped = shipped_tuning(info)
    if not tuned:
        return replace(profile, tuning=shipped) if shipped.shipped else profile
    measured = load_tuning(info)
    if not measured.entries:
        return replace(profile, tuning=shipped) if shipped.shipped else profile
    return replace(profile, tuning=replace(measured, shipped=shipped.shipped))


def within_limits(profile: DeviceProfile, info: DeviceInfo) -> DeviceProfile:
    """The tiled family's limits lowered to what ``info``'s device reports (a device with less
    local memory or smaller work-groups is offered only the settings it holds)."""
    if profile.conv_family != "tiled":
        return profile
    largest = min(info.max_work_group_size, *info.max_work_item_sizes[:2])
    return replace(profile, local_memory=min(profile.local_memory, info.local_memory),
                   max_work_group=min(profile.max_work_group, largest))
