"""Winograd convolution F(2x2, 3x3) and F(4x4, 3x3) for the conv op's 3x3 stride-1 kernels.

A choice of the conv forward site's ALGORITHM knob (ops/conv.py): "winograd2" or "winograd4"
instead of "direct" lowers one conv (or the stride-1 input gradient, itself such a conv) into
kernels/winograd.cl's four kernels: the filter transform (into a work buffer, once per pass:
per training step, or per inference pass), the input-tile transform, POSITIONS batched
register-tiled GEMMs over channels, and the output transform with the bias, the fused epilogue
and (as an input gradient) the gate and accumulation. The GEMM reuses the direct kernel's
tile knobs: TILE_PIXELS is (near) its tiles per work-item. "winograd2_fused" and
"winograd4_fused" run the last three as one kernel (WINOGRAD_FUSED), each work-item's tiles
and products in a private scratch rather than in batch-sized buffers.

Grouped and depthwise layers stay direct: their per-group GEMMs are too thin to pay for the
transforms (a depthwise layer has one channel per group).
"""

from __future__ import annotations

from convgraph.ops.base import residual_defines
from convgraph.ops.spatial import choose_tile, widest_dividing

ALGORITHMS = ("direct", "winograd2", "winograd4", "winograd2_fused", "winograd4_fused")
OUT_TILE = {"winograd2": 2, "winograd4": 4, "winograd2_fused": 2, "winograd4_fused": 4}
# the fused algorithms (WINOGRAD_FUSED): one kernel from x to y per pass, the tiles and their
# products in each work-item's private scratch instead of the batch-sized v and m, which the
# three-kernel form writes and reads back from memory (2.25x the activations each for F(4x4))
FUSED = ("winograd2_fused", "winograd4_fused")
# a weight gradient's (no fused form: its GEMMs sum over the batch, not over channels)
WEIGHT_ALGORITHMS = ("direct", "winograd2", "winograd4")


def applies(shape: dict) -> bool:
    """Whether a conv kernel site of these defines can run as Winograd: 3x3, stride 1,
    dilation 1, ungrouped."""
    return (shape["KERNEL_H"], shape["KERNEL_W"], shape["STRIDE_H"], shape["STRIDE_W"],
            shape["DILATION_H"], shape["DILATION_W"], shape["GROUPS"]) == (3, 3, 1, 1, 1, 1, 1)


def default_algorithm(profile, channels: int, filters: int, out_width: int, out_height: int,
                      rules: str = "winograd_rules") -> str:
    """The device profile's algorithm for an untuned 3x3 stride-1 site: that of the first of
    its ``rules`` (``profile.winograd_rules`` for forward sites, ``winograd_weight_rules`` for
    weight gradients: least channels, least and most output size, algorithm) that the site
    fits and that is offered there (a fused algorithm only where its filters fit the cache:
    ``offered``), else direct."""
    for least, smallest, largest, algorithm in getattr(profile, rules, ()):
        if (offered(algorithm, channels, filters) and min(channels, filters) >= least
                and smallest <= min(out_width, out_height)
                and max(out_width, out_height) <= largest):
            return algorithm
    return "direct"


# The numerical guard: F(4x4)'s transforms (entries 1/24 .. 8) lose precision as the channels
# summed grow. Against float64 numpy its worst relative error was 1.2e-5 at 512 channels
# (F(2x2) 7.7e-7, direct 2.0e-6; README "Winograd"), 8x inside the kernel tests' 1e-4, so it is
# offered up to 512 input channels and no further: every setting in a space must hold 1e-4.
F4_MAX_CHANNELS = 512


# The GEMMs' own default register tile (the direct kernel's default rows, 2 vectors of filters,
# 4 channels of u per load), where the direct space holds it: with each tile's channel broadcast
# from memory, 2 vectors per broadcast beat 1 on every F(4x4) layer timed (benchmarks/winograd.py
# --gemm, README "Winograd"): 8x8 64->64 1.30x, 8x8 128->128 1.38x, 16x16 64->64 1.3x
GEMM_TILE = {"FILTER_VECTORS": 2, "CHANNEL_STEP": 4}


# The fused kernel's (benchmarks/winograd.py, README "Winograd"): 4 tiles x 4 vectors of filters,
# 2 channels a load (16 accumulators, 8 filter vectors), then the GEMMs' own where the filters
# are fewer than 4 vectors. Each vector of u, streamed from L2 there, serves the 4 tiles, and
# 4 vectors of filters a work-item transform each tile once for 64 filters (VGG-CIFAR conv4,
# ResNet-8 res3, VGG-CIFAR conv5, forward and input gradient, batch 64, alternating under load
# 9-10: 0.99-1.7x the fused kernel at the GEMMs' tile, 8 tiles x 2 vectors x 4 channels)
FUSED_TILES = ({"FILTER_VECTORS": 4, "CHANNEL_STEP": 2, "TILE_PIXELS": 4},
               {"FILTER_VECTORS": 4, "CHANNEL_STEP": 2}, GEMM_TILE)


def gemm_first(space: list[dict], preferred: tuple = (GEMM_TILE,)) -> list[dict]:
    """``space`` with the first setting of the first of the ``preferred`` tiles it holds (the
    knobs they leave out as the default's: rows, vector width, work-group) moved to the
    front: a Winograd algorithm's default tile."""
    head = space[0]
    for tile in preferred:
        same = [key for key in ("TILE_PIXELS", "VECTOR_WIDTH", "LOCAL") if key not in tile]
        for index, knobs in enumerate(space):
            if all(knobs.get(key) == value for key, value in tile.items()) and all(
                    knobs.get(key) == head.get(key) for key in same):
                return [knobs] + space[:index] + space[index + 1:]
    return space


# Each fused work-item reads every position's transformed filters for its block of filters
# (the three-kernel GEMM keeps one position's in L1 across the batch), so the fused algorithms
# are offered where all of them, POSITIONS x channels x filters floats, fit the L2 (F(4x4): 1.2
# MiB at 64 -> 128 channels); at 128 -> 128 (2.4 MiB) they streamed from L3 and the fused
# form ran 0.3-0.6x the three kernels' speed (VGG-CIFAR conv6, batch 64, with 160-640 KiB
# scratches and with the filter blocks outermost)
FUSED_MAX_FILTER_BYTES = 5 * 1024 * 1024 // 4
# its scratch's bytes at most (tiles a work-item, by the channels), and images a work-item
FUSED_SCRATCH_BYTES = 160 * 1024
FUSED_MAX_IMAGES = 8


def offered(algorithm: str, channels: int, filters: int) -> bool:
    """Whether ``algorithm`` is offered to a site of ``channels`` summed per output and
    ``filters``."""
    if algorithm in FUSED and (OUT_TILE[algorithm] + 2) ** 2 * channels * filters * 4 > (
            FUSED_MAX_FILTER_BYTES):
        return False
    return OUT_TILE.get(algorithm) != 4 or channels <= F4_MAX_CHANNELS


def unfused(algorithm: str) -> str:
    """The three-kernel form of a fused algorithm (itself for the others)."""
    return algorithm.removesuffix("_fused")


def with_algorithms(space: list[dict], default: str, channels: int, filters: int
                    ) -> list[dict]:
    """The direct space once per algorithm, ``default``'s first: every one-row tile setting of
    the direct kernel is also a GEMM tile setting, so the tuner reaches each algorithm from
    any of those (a Winograd algorithm's first, its default, is the GEMMs' own: GEMM_TILE).
    ``channels``: summed per output (F(4x4) only up to F4_MAX_CHANNELS); ``filters``: with
    them, where the fused forms are offered (a fused default not offered falls back to its
    three-kernel form)."""
    allowed = [a for a in ALGORITHMS if offered(a, channels, filters)]
    default = default if default in allowed else unfused(default)
    default = default if default in allowed else "direct"
    order = [default] + [a for a in allowed if a != default]
    one_row = [knobs for knobs in space if knobs.get("TILE_ROWS", 1) == 1]  # GEMMs have no rows
    return [{**knobs, "ALGORITHM": algorithm} for algorithm in order
            for knobs in (space if algorithm == "direct" else
                          gemm_first(one_row, FUSED_TILES if algorithm in FUSED else
                                     (GEMM_TILE,)))]


def first_of(space: list[dict], algorithm: str) -> dict:
    """The first (default) setting of ``algorithm`` in a site's space."""
    return next(knobs for knobs in space if knobs.get("ALGORITHM") == algorithm)


# GEMM rows across images (benchmarks/winograd.py, README "Winograd"): an image whose output has
# fewer tiles than a work-item's rows shares its GEMM with the next images'
CROSS_IMAGE_ROWS = True


def gemm_images(image_tiles: int, rows: int) -> int:
    """Images per Winograd GEMM: enough that their tiles fill ``rows`` GEMM rows a work-item,
    a power of two (1 when one image's tiles do)."""
    images = 1
    while CROSS_IMAGE_ROWS and images * image_tiles < rows:
        images *= 2
    return images


# Vector widths over channels, by OUT_TILE. The tile transforms (input, output, output
# gradient) stream memory: 4-wide vectors left three quarters of each AVX-512 register idle
# (kernels alone, batch 64, alternating with a copy of the same bytes under load: F(4x4) input
# 16x16x64 2.27 ms at 4 wide, 1.39 at 8 as loops; output 1.04 -> 0.58 ms; F(2x2) input 8 ->
# 16 wide 1.76 -> 1.09 ms). The filter transforms hold a whole tile of vectors in registers
# and run once per weights (per step in training): as they were.
TRANSFORM_WIDTH = {2: 16, 4: 8}
FILTER_WIDTH = {2: 8, 4: 4}
CPU_WIDTHS = (TRANSFORM_WIDTH, FILTER_WIDTH)  # (tile transforms, filter transforms)
# The GPU profile's: the widest vector a transform work-item holds IN_TILE^2 of in registers
# (36 x float16 would spill a GPU thread's registers); unmeasured on a GPU
GPU_WIDTHS = ({2: 8, 4: 4}, {2: 8, 4: 4})


def tiles(shape: dict, out_tile: int) -> tuple[int, int]:
    """Output tiles of one image (down, across)."""
    return -(-shape["OUT_H"] // out_tile), -(-shape["OUT_W"] // out_tile)


def lower(ctx, shape: dict, knobs: dict, args: list, site: str, flops: int, role: str) -> None:
    """Launch the Winograd convolution of ``args`` = [x, w, b, y] (conv.cl's CONV_FORWARD
    arguments, with ``shape`` its defines less the tile knobs; then r, the other input of a
    sum folded in: RESIDUAL in ``shape``) as ``knobs`` choose.
    ``role`` names this node's scratch (a node has a forward and an input-gradient conv)."""
    out_tile = OUT_TILE[knobs["ALGORITHM"]]
    if knobs["ALGORITHM"] in FUSED:
        lower_fused(ctx, shape, out_tile, knobs, args, site, flops, role)
        return
    positions = (out_tile + 2) ** 2
    down, across = tiles(shape, out_tile)
    channels, filters = shape["IN_CHANNELS"], shape["K_ALLOC"]

    def gemm(tiles_in, transformed, products):
        # GEMM rows from as many images as fill the knob's tiles per work-item (an 8x8 output
        # has 4 tiles of 4x4: alone, 4 rows a work-item), then tiles per work-item near the
        # knob, dividing the group's tiles where one does
        images = gemm_images(down * across, knobs["TILE_PIXELS"])
        rows = choose_tile(images * down * across, knobs["TILE_PIXELS"])
        per_item = knobs["VECTOR_WIDTH"] * knobs["FILTER_VECTORS"]
        ctx.launch("winograd", "WINOGRAD_GEMM",
                   {**_transform_size(shape, out_tile), "IN_CHANNELS": channels,
                    "K_ALLOC": filters, "VECTOR_WIDTH": knobs["VECTOR_WIDTH"],
                    "TILE_ROWS": rows, "FILTER_VECTORS": knobs["FILTER_VECTORS"],
                    "CHANNEL_STEP": knobs["CHANNEL_STEP"], "IMAGES_PER_GROUP": images},
                   (filters // per_item, -(-images * down * across // rows), positions),
                   [tiles_in, transformed, products, ctx.BATCH], batch_axis=2,
                   batch_divisor=images, flops=flops, site=site)

    lower_with_gemm(ctx, shape, out_tile, args, site, role, gemm, CPU_WIDTHS)


def _largest_divisor(extent: int, most: int) -> int:
    return max(d for d in range(1, max(1, min(extent, most)) + 1) if extent % d == 0)


def fused_rows(shape: dict, out_tile: int, knobs: dict) -> dict:
    """A fused work-item's tiles: ITEM_TILES of one image's tiles (all of them, and then
    ITEM_IMAGES images, where they fit) as many as FUSED_SCRATCH_BYTES holds, multiplied in
    register tiles of ROW_TILES tiles (a divisor of them near the knob's pixels)."""
    down, across = tiles(shape, out_tile)
    image_tiles = down * across
    row_floats = max(shape["IN_CHANNELS"], knobs["VECTOR_WIDTH"] * knobs["FILTER_VECTORS"])
    most = max(1, FUSED_SCRATCH_BYTES // (4 * (out_tile + 2) ** 2 * row_floats))
    if image_tiles <= most:
        images = 1
        while 2 * images * image_tiles <= most and 2 * images <= FUSED_MAX_IMAGES:
            images *= 2
        item_tiles = image_tiles
    else:
        images, item_tiles = 1, _largest_divisor(image_tiles, most)
    rows = _largest_divisor(images * item_tiles, knobs["TILE_PIXELS"])
    return {"ITEM_TILES": item_tiles, "ITEM_IMAGES": images, "ROW_TILES": rows}


def lower_fused(ctx, shape: dict, out_tile: int, knobs: dict, args: list, site: str,
                flops: int, role: str) -> None:
    """The fused Winograd convolution of ``args`` = [x, w, b, y] (then r, a sum folded in):
    the filter transform (once per weights in inference) and WINOGRAD_FUSED, whose work-item
    (filter block, tile group, image group) transforms its tiles, runs every position's GEMM
    and transforms the products back through a private scratch, with the output transform's
    epilogue (WINOGRAD_OUTPUT's, RESIDUAL included)."""
    x, weight, bias, y, *residual = args
    channels, filters = shape["IN_CHANNELS"], shape["K_ALLOC"]
    down, across = tiles(shape, out_tile)
    transformed = _launch_filter_transform(ctx, out_tile, channels, filters, weight, site, role,
                                           CPU_WIDTHS[1][out_tile])
    item = fused_rows(shape, out_tile, knobs)
    per_item = knobs["VECTOR_WIDTH"] * knobs["FILTER_VECTORS"]
    layout = {k: v for k, v in shape.items() if k.startswith(("X_", "Y_"))}
    epilogue = {k: shape[k] for k in ("HAS_BIAS", "EPILOGUE", "EPILOGUE_SLOPE", "GATE",
                                      "GATE_SLOPE", "ACCUMULATE") if k in shape}
    pixels_in = shape["X_ALLOC_H"] * shape["X_ALLOC_W"] * channels
    # work-groups of one work-item: PoCL gives each work-item of a group its own copy of the
    # scratch (a group of 4 took 4 x 74 KiB of stack and ran 2x slower)
    ctx.launch("winograd", "WINOGRAD_FUSED",
               {**_transform_size(shape, out_tile), "IN_CHANNELS": channels, "K_ALLOC": filters,
                "PAD_TOP": shape["PAD_TOP"], "PAD_LEFT": shape["PAD_LEFT"], **layout,
                **epilogue, **residual_defines(shape), "VECTOR_WIDTH": knobs["VECTOR_WIDTH"],
                "INPUT_WIDTH": widest_dividing(channels, TRANSFORM_WIDTH[2]), **item,
                "FILTER_VECTORS": knobs["FILTER_VECTORS"],
                "CHANNEL_STEP": knobs["CHANNEL_STEP"]},
               (filters // per_item, -(-down * across // item["ITEM_TILES"]), 1),
               [x, transformed, bias, y, *residual, ctx.BATCH], batch_axis=2,
               batch_divisor=item["ITEM_IMAGES"], local_size=(1, 1, 1), flops=flops,
               moved=4 * (pixels_in + (1 + len(residual)) * shape["OUT_H"] * shape["OUT_W"]
                          * filters), site=site)


def with_weight_algorithms(space: list[dict], default: str) -> list[dict]:
    """A weight-gradient site's direct space once per algorithm, ``default``'s first: the
    Winograd GEMM (channels x filters over the tiles of a batch split) takes the same knobs,
    CHANNEL_TILE x FILTER_VECTORS registers and IMAGES_PER_SPLIT."""
    order = [default] + [a for a in WEIGHT_ALGORITHMS if a != default]
    return [{**knobs, "ALGORITHM": algorithm} for algorithm in order for knobs in space]


def lower_weight_gradient(ctx, shape: dict, knobs: dict, x, dy, partial, images: int,
                          site: str) -> None:
    """The weight gradient of a 3x3 stride-1 conv by Winograd, into ``partial`` (per split of
    ``images`` images, conv.cl's CONV_BACKWARD_WEIGHTS layout, for SUM_SPLITS): transform the
    input tiles (B^T d B) and the output-gradient tiles (A dY A^T), sum their products over
    each split's tiles per position (POSITIONS GEMMs C x K), transform that back (G^T . G).
    ``shape``: the conv's defines (conv.py's _conv_defines)."""
    out_tile = OUT_TILE[knobs["ALGORITHM"]]
    channels, filters = shape["IN_CHANNELS"], shape["K_ALLOC"]

    def gemm(tiles_in, tiles_grad, summed):
        width = shape["VECTOR_WIDTH"]
        per_item = width * knobs["FILTER_VECTORS"]
        ctx.launch("winograd", "WINOGRAD_WEIGHT_GEMM",
                   {**_transform_size(shape, out_tile), "IN_CHANNELS": channels,
                    "K_ALLOC": filters, "VECTOR_WIDTH": width,
                    "FILTER_VECTORS": knobs["FILTER_VECTORS"],
                    "CHANNEL_TILE": knobs["CHANNEL_TILE"], "IMAGES_PER_SPLIT": images},
                   (filters // per_item, channels // knobs["CHANNEL_TILE"],
                    (out_tile + 2) ** 2),
                   [tiles_in, tiles_grad, summed, ctx.BATCH], batch_axis=2,
                   batch_divisor=images, flops=ctx.node.flops, site=site)

    lower_weight_gradient_with_gemm(ctx, shape, out_tile, x, dy, partial, images, site, gemm,
                                    CPU_WIDTHS)


# ---------------------------------------------------------------- transforms around a GEMM
# ``lower`` and ``lower_weight_gradient`` above (the CPU family's GEMMs) and the tiled GPU
# family (ops/conv_gemm.py: its local-memory GEMM, batched over the positions) run the same
# transforms around their own GEMM: these take that GEMM as ``gemm``, a function that launches
# it, and the transforms' vector widths (CPU_WIDTHS or GPU_WIDTHS).

def _transform_size(shape: dict, out_tile: int) -> dict:
    return {"OUT_TILE": out_tile, "OUT_H": shape["OUT_H"], "OUT_W": shape["OUT_W"]}


def _launch_filter_transform(ctx, out_tile: int, channels: int, filters: int, weight,
                             site: str, role: str, widest: int):
    """G g G^T of every filter into a work buffer (POSITIONS, IN_CHANNELS, K_ALLOC), once per
    upload of the parameters in inference; returns it."""
    positions = (out_tile + 2) ** 2
    transformed = ctx.work_buffer(f"winograd_{role}_filters", positions * channels * filters)
    filter_width = widest_dividing(filters, widest)
    ctx.launch("winograd", "WINOGRAD_FILTER",
               {"OUT_TILE": out_tile, "IN_CHANNELS": channels, "K_ALLOC": filters,
                "VECTOR_WIDTH": filter_width},
               (filters // filter_width, channels), [weight, transformed], site=site,
               per_params=True)
    return transformed


def _launch_input_transform(ctx, shape: dict, out_tile: int, x, tiles_in, site: str,
                            widest: int) -> None:
    """B^T d B of every tile of x into ``tiles_in`` (N, POSITIONS, TILES, IN_CHANNELS)."""
    channels, positions = shape["IN_CHANNELS"], (out_tile + 2) ** 2
    down, across = tiles(shape, out_tile)
    width = widest_dividing(channels, widest)
    layout_x = {k: v for k, v in shape.items() if k.startswith("X_")}
    ctx.launch("winograd", "WINOGRAD_INPUT",
               {**_transform_size(shape, out_tile), "IN_CHANNELS": channels,
                "PAD_TOP": shape["PAD_TOP"], "PAD_LEFT": shape["PAD_LEFT"], **layout_x,
                "VECTOR_WIDTH": width},
               (channels // width, across, down), [x, tiles_in], batch_axis=2,
               moved=4 * positions * down * across * channels, site=site)


def lower_with_gemm(ctx, shape: dict, out_tile: int, args: list, site: str, role: str,
                    gemm, widths: tuple = GPU_WIDTHS) -> None:
    """``lower``'s Winograd convolution of ``args`` = [x, w, b, y] with the POSITIONS GEMMs
    launched by ``gemm(tiles_in, transformed, products)`` (v, u and m of winograd.cl); a sum
    folded into the conv (RESIDUAL, its tensor r after y in ``args``) is the output
    transform's."""
    x, weight, bias, y, *residual = args
    positions = (out_tile + 2) ** 2
    down, across = tiles(shape, out_tile)
    channels, filters = shape["IN_CHANNELS"], shape["K_ALLOC"]
    tile_width, widest = widths[0][out_tile], widths[1][out_tile]
    transformed = _launch_filter_transform(ctx, out_tile, channels, filters, weight, site, role,
                                           widest)
    tiles_in = ctx.batch_scratch(f"winograd_{role}_tiles", positions * down * across * channels)
    products = ctx.batch_scratch(f"winograd_{role}_products",
                                 positions * down * across * filters)
    _launch_input_transform(ctx, shape, out_tile, x, tiles_in, site, tile_width)
    gemm(tiles_in, transformed, products)
    output_width = widest_dividing(filters, tile_width)
    epilogue = {k: shape[k] for k in ("HAS_BIAS", "EPILOGUE", "EPILOGUE_SLOPE", "GATE",
                                      "GATE_SLOPE", "ACCUMULATE") if k in shape}
    layout_y = {k: v for k, v in shape.items() if k.startswith("Y_")}
    ctx.launch("winograd", "WINOGRAD_OUTPUT",
               {**_transform_size(shape, out_tile), "K_ALLOC": filters, **layout_y, **epilogue,
                **residual_defines(shape), "VECTOR_WIDTH": output_width},
               (filters // output_width, across, down), [products, bias, y, *residual],
               batch_axis=2,
               moved=4 * positions * down * across * filters, site=site)


def lower_weight_gradient_with_gemm(ctx, shape: dict, out_tile: int, x, dy, partial,
                                    images: int, site: str, gemm,
                                    widths: tuple = GPU_WIDTHS) -> None:
    """``lower_weight_gradient``'s Winograd weight gradient into ``partial`` (per split of
    ``images`` images) with the POSITIONS GEMMs per split launched by ``gemm(tiles_in,
    tiles_grad, summed)`` (v, dm and du of winograd.cl)."""
    positions = (out_tile + 2) ** 2
    down, across = tiles(shape, out_tile)
    channels, filters = shape["IN_CHANNELS"], shape["K_ALLOC"]
    tile_width, widest = widths[0][out_tile], widths[1][out_tile]
    tiles_in = ctx.batch_scratch("winograd_weight_grad_tiles",
                                 positions * down * across * channels)
    tiles_grad = ctx.batch_scratch("winograd_weight_grad_dy",
                                   positions * down * across * filters)
    summed, _ = ctx.split_scratch("winograd_weight_grad_sums", positions * channels * filters,
                                  images)
    _launch_input_transform(ctx, shape, out_tile, x, tiles_in, site, tile_width)
    grad_width = widest_dividing(filters, tile_width)
    layout_y = {k: v for k, v in shape.items() if k.startswith("Y_")}
    ctx.launch("winograd", "WINOGRAD_OUTPUT_GRAD",
               {**_transform_size(shape, out_tile), "K_ALLOC": filters, **layout_y,
                "VECTOR_WIDTH": grad_width},
               (filters // grad_width, across, down), [dy, tiles_grad], batch_axis=2,
               moved=4 * positions * down * across * filters, site=site)
    gemm(tiles_in, tiles_grad, summed)
    filter_width = widest_dividing(filters, widest)
    ctx.launch("winograd", "WINOGRAD_FILTER_GRAD",
               {"OUT_TILE": out_tile, "IN_CHANNELS": channels, "K_ALLOC": filters,
                "VECTOR_WIDTH": filter_width},
               (filters // filter_width, channels, 1), [summed, partial], batch_axis=2,
               batch_divisor=images, site=site)
