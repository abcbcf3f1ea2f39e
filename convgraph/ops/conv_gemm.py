"""The GPU kernel family: convolution (and its gradients) as local-memory tiled GEMMs.

Where the device profile asks for it (``profile.conv_family == "tiled"``: the GPU profile), an
ungrouped conv's forward site offers kernels/conv_gemm.cl's implicit GEMM beside the direct
kernel (and Winograd) through its ALGORITHM knob, the tiled one first: "gemm" stages operands in
local memory, "gemm_prefetch" too, with the next stage's loads issued into registers before
this stage's products (double buffering), "gemm_global" is the same register tiling with each
work-item loading its own.
The stride-1 input gradient is such a conv of dy (ops/conv.py), so it follows; the strided input
gradient (CONV_GEMM_DATA) and the weight gradient (CONV_GEMM_WEIGHTS, split over the batch, the
splits summed by SUM_SPLITS as the direct family's are) get sites of their own.

The knobs reuse the direct kernel's names, so the tuner's one-knob-at-a-time search crosses
between families where the other knobs agree: TILE_PIXELS is the register tile's rows (output
pixels per work-item), FILTER_VECTORS its vectors of columns, VECTOR_WIDTH their width,
CHANNEL_STEP the reduction steps per stage (the unrolled block), LOCAL the work-group shape
(columns, rows, 1); the work-group's tile is their product. A setting is offered only if its
work-group and local memory fit the profile's limits (``max_work_group``, ``local_memory``,
from the device's reported limits in ``profile_for``); where none fits, the direct family
stays. Its launches are marked ``exact_local``: a kernel with barriers and local tiles sized at
compile time must run with exactly its work-group, which the executor never shrinks.

Winograd in this family ("winograd2_gemm", "winograd4_gemm": 3x3 stride-1 ungrouped sites, the
forward, so the stride-1 input gradient, and the weight gradient): kernels/winograd.cl's
transforms (ops/winograd.py's ``lower_with_gemm``, ``lower_weight_gradient_with_gemm``) around
this family's local-memory GEMM with a batch dimension, the 16 or 36 positions
(WINOGRAD_GEMM_FORWARD: [tiles x C] x [C x K] per position and group of images;
WINOGRAD_GEMM_WEIGHTS: [C x tiles] x [tiles x K] per position and split of the batch). Its
settings take the same knobs, sized for the GEMM of the transformed tiles; they are offered
after the implicit GEMM's (the untuned default stays "gemm"), never on the CPU profile.

Grouped and depthwise convs stay on the direct family (their per-group GEMMs are thin; the
direct kernel's register tiles serve them).
"""

from __future__ import annotations

from dataclasses import replace

from convgraph.ops import winograd
from convgraph.ops.base import residual_defines
from convgraph.ops.spatial import widest_dividing

# the ALGORITHM knob's values for this family's implicit GEMM: local memory, local memory with
# the next stage prefetched into registers (double buffering), none; and Winograd F(2x2) and
# F(4x4) with the local-memory GEMM (output tile of each)
GEMMS = ("gemm", "gemm_prefetch", "gemm_global")
WINOGRAD = {"winograd2_gemm": 2, "winograd4_gemm": 4}
TILED = (*GEMMS, *WINOGRAD)
STAGED = ("gemm", "gemm_prefetch", *WINOGRAD)
KERNELS = "conv_gemm"  # kernels/conv_gemm.cl
# work-group shapes (columns, rows) searched beside the default
GROUP_SHAPES = ((16, 16), (8, 8), (16, 4), (4, 16), (8, 32))


def offered(profile, shape: dict) -> bool:
    """Whether a conv site of these defines may run as a tiled GEMM on this profile."""
    return (getattr(profile, "conv_family", "direct") == "tiled" and shape["GROUPS"] == 1
            and not shape.get("POOL_MAX"))  # a folded pool is the direct kernel's epilogue


def _pow2_at_least(extent: int) -> int:
    size = 1
    while size < extent:
        size *= 2
    return size


def _local_text(columns: int, rows: int) -> str:
    return f"{columns},{rows},1"


def default_knobs(profile, rows: int, columns: int, depth: int) -> dict:
    """The GPU profile's untuned setting for a GEMM of ``rows`` x ``columns`` over ``depth``:
    8x4 or 4x4 register tiles (DLPrimitives' and CLBlast's order of size), a work-group of up
    to 256 work-items whose tile does not overshoot the matrix far, 16 steps a stage."""
    width = widest_dividing(columns, profile.max_vector)
    vectors = 2 if columns >= 64 and columns % (2 * width) == 0 else 1
    item_rows = 8 if rows >= 1024 else 4
    most = max(1, profile.max_work_group or 256)
    group_columns = 1
    while (group_columns * 2 <= 16 and group_columns * 2 * vectors * width
           <= _pow2_at_least(columns)):
        group_columns *= 2
    group_rows = 1
    while (group_rows * 2 * group_columns <= min(256, most)
           and group_rows * 2 * item_rows <= _pow2_at_least(rows)):
        group_rows *= 2
    knobs = {"ALGORITHM": "gemm", "TILE_PIXELS": item_rows, "FILTER_VECTORS": vectors,
             "CHANNEL_STEP": 16 if depth >= 64 else 8, "VECTOR_WIDTH": width,
             "LOCAL": _local_text(group_columns, group_rows)}
    # a narrow matrix (few columns) gets tall work-groups: fewer rows where the stage would
    # not fit the local memory
    while local_bytes(knobs) > (profile.local_memory or 16384) and group_rows > 1:
        group_rows //= 2
        knobs["LOCAL"] = _local_text(group_columns, group_rows)
    return knobs


def local_bytes(knobs: dict) -> int:
    """Local memory of one work-group: a stage of A rows (each padded by one float) and of B
    columns."""
    if knobs["ALGORITHM"] not in STAGED:
        return 0
    columns, rows = group_shape(knobs)
    tile_rows = rows * knobs["TILE_PIXELS"]
    tile_columns = columns * knobs["FILTER_VECTORS"] * knobs["VECTOR_WIDTH"]
    return 4 * knobs["CHANNEL_STEP"] * (tile_rows + 1 + tile_columns)


def group_shape(knobs: dict) -> tuple[int, int]:
    columns, rows, _ = (int(n) for n in knobs["LOCAL"].split(","))
    return columns, rows


def fits(profile, knobs: dict, rows: int, columns: int, overshoot: bool = False) -> bool:
    """A setting the profile's device can run (work-group size, local memory), whose vectors
    divide the columns and whose tile does not overshoot the matrix by more than 2x a side
    (unless ``overshoot``: such a tile is right, only wasteful)."""
    group_columns, group_rows = group_shape(knobs)
    width = knobs["VECTOR_WIDTH"]
    tile_columns = group_columns * knobs["FILTER_VECTORS"] * width
    tile_rows = group_rows * knobs["TILE_PIXELS"]
    return (columns % width == 0 and width <= profile.max_vector
            and group_columns * group_rows <= (profile.max_work_group or 256)
            and local_bytes(knobs) <= (profile.local_memory or 16384)
            and (overshoot or (tile_columns <= 2 * _pow2_at_least(columns)
                               and tile_rows <= 2 * _pow2_at_least(rows))))


def space(profile, rows: int, columns: int, depth: int) -> list[dict]:
    """Every tiled setting of a GEMM site that fits the profile, its default first (empty when
    even the default does not fit: the caller keeps the direct family)."""
    default = default_knobs(profile, rows, columns, depth)
    if not fits(profile, default, rows, columns):
        return []
    width = default["VECTOR_WIDTH"]
    shapes = [default["LOCAL"]] + [_local_text(*shape) for shape in GROUP_SHAPES]
    candidates = [default] + [
        {"ALGORITHM": algorithm, "TILE_PIXELS": item_rows, "FILTER_VECTORS": vectors,
         "CHANNEL_STEP": step, "VECTOR_WIDTH": vector, "LOCAL": local}
        for algorithm in GEMMS
        for vector in dict.fromkeys((width, 1))
        for item_rows in (4, 8, 2)
        for vectors in (1, 2)
        for step in (8, 16)
        for local in dict.fromkeys(shapes)
        # vectors narrower than the default only with the default tiles (a width-1 check)
        if vector == width or (item_rows, vectors, step, local) == (
            default["TILE_PIXELS"], default["FILTER_VECTORS"], default["CHANNEL_STEP"],
            default["LOCAL"])]
    return [knobs for knobs in dict.fromkeys(tuple(sorted(k.items())) for k in candidates)
            for knobs in [dict(knobs)] if fits(profile, knobs, rows, columns)]


def with_family(profile, direct_space: list[dict], shape: dict) -> list[dict]:
    """A conv forward site's space (``shape``: its defines) with the tiled settings first (the
    profile's family), then, on 3x3 stride-1 sites, the tiled family's Winograd, then the
    direct (and the CPU family's Winograd) ones, each with its ALGORITHM."""
    tiled = space(profile, *forward_matrix(shape))
    # not the CPU family's fused Winograd: a work-item's tiles in a private scratch of up to
    # 160 KiB, which a GPU would keep in global memory
    others = [{"ALGORITHM": "direct", **knobs} for knobs in direct_space
              if knobs.get("ALGORITHM") not in winograd.FUSED]
    gemms = tiled + (winograd_space(profile, shape, tiled[0]) if tiled else [])
    # the direct forward's row tiles, where it has them, as one row in the GEMMs' settings:
    # one set of knobs across the space, so the tuner steps between families
    rows = {"TILE_ROWS": 1} if any("TILE_ROWS" in knobs for knobs in direct_space) else {}
    return [{**knobs, **rows} for knobs in gemms] + others


# Winograd's GEMM rows are tiles of several images where one image has fewer than a
# work-group's tile rows: a setting is sized for this many images' tiles (an 8x8 output has 4
# F(4x4) tiles: 64 rows), and a group holds at most this many
NOMINAL_IMAGES = 16


def winograd_algorithms(shape: dict) -> list[str]:
    """The tiled family's Winograd algorithms a site may take: none unless 3x3 stride 1
    ungrouped; F(4x4) only up to ops/winograd.py's F4_MAX_CHANNELS summed channels."""
    if not winograd.applies(shape):
        return []
    return [name for name, out_tile in WINOGRAD.items()
            if out_tile == 2 or shape["IN_CHANNELS"] <= winograd.F4_MAX_CHANNELS]


def image_tiles(shape: dict, algorithm: str) -> int:
    """Winograd tiles of one image's output."""
    down, across = winograd.tiles(shape, WINOGRAD[algorithm])
    return down * across


def winograd_space(profile, shape: dict, first: dict) -> list[dict]:
    """A forward site's Winograd settings: the local-memory GEMM's settings for [tiles x C] x
    [C x K], once per algorithm, those of the implicit GEMM's default ``first`` first (so the
    tuner's one-knob steps reach Winograd from it)."""
    settings = []
    for algorithm in winograd_algorithms(shape):
        rows = image_tiles(shape, algorithm) * NOMINAL_IMAGES
        settings += _as_winograd(profile, algorithm, first, rows, shape["K_ALLOC"],
                                 shape["IN_CHANNELS"])
    return settings


def _as_winograd(profile, algorithm: str, first: dict, rows: int, columns: int, depth: int
                 ) -> list[dict]:
    """The local-memory settings of a Winograd GEMM of ``rows`` x ``columns`` over ``depth``
    that fit the profile, as ``algorithm``'s: ``first``'s tiles (however they overshoot this
    GEMM: the tuner's step from them), then the GEMM's own space."""
    settings = [{**knobs, "ALGORITHM": algorithm}
                for knobs in [first] if fits(profile, knobs, rows, columns, overshoot=True)]
    settings += [{**knobs, "ALGORITHM": algorithm}
                 for knobs in space(profile, rows, columns, depth)
                 if knobs["ALGORITHM"] == "gemm"]
    return [dict(knobs) for knobs in dict.fromkeys(tuple(sorted(k.items())) for k in settings)]


def group_images(knobs: dict, image_tiles: int) -> int:
    """Images per Winograd GEMM group: a power of two whose tiles fill the work-group's tile
    rows (1 where one image's do)."""
    _, group_rows = group_shape(knobs)
    images = 1
    while images * image_tiles < group_rows * knobs["TILE_PIXELS"] and images < NOMINAL_IMAGES:
        images *= 2
    return images


def _tile_defines(knobs: dict) -> dict:
    group_columns, group_rows = group_shape(knobs)
    return {"VECTOR_WIDTH": knobs["VECTOR_WIDTH"], "ITEM_ROWS": knobs["TILE_PIXELS"],
            "ITEM_VECTORS": knobs["FILTER_VECTORS"], "GROUP_ROWS": group_rows,
            "GROUP_COLUMNS": group_columns, "STAGE_DEPTH": knobs["CHANNEL_STEP"],
            "USE_LOCAL_MEMORY": int(knobs["ALGORITHM"] in STAGED),
            "PREFETCH": int(knobs["ALGORITHM"] == "gemm_prefetch")}


def _grid(knobs: dict, rows: int, columns: int, items: int = 1
          ) -> tuple[tuple[int, int, int], tuple]:
    """Whole work-groups covering the matrix (``items`` of them along axis 2, per image or
    split), and their shape."""
    group_columns, group_rows = group_shape(knobs)
    tile_columns = group_columns * knobs["FILTER_VECTORS"] * knobs["VECTOR_WIDTH"]
    tile_rows = group_rows * knobs["TILE_PIXELS"]
    grid = (-(-columns // tile_columns) * group_columns, -(-rows // tile_rows) * group_rows,
            items)
    return grid, (group_columns, group_rows, 1)


def _launch(ctx, selector: str, defines: dict, knobs: dict, rows: int | None, columns: int,
            args, site: str, batch_axis: int | None = 2, items: int = 1, **extra) -> None:
    """One GEMM launch: ``rows`` None means the rows are the batch's images (fc), whole
    work-groups of TILE_ROWS images each along axis 1; ``items`` GEMMs per image (or group of
    images) along axis 2."""
    if rows is None:
        grid, local = _grid(knobs, 1, columns)
        batch_axis, extra["batch_divisor"] = 1, local[1] * knobs["TILE_PIXELS"]
    else:
        grid, local = _grid(knobs, rows, columns, items)
    ctx.launch(KERNELS, selector, {**defines, **_tile_defines(knobs)}, grid, args,
               batch_axis=batch_axis, local_size=local, exact_local=True, site=site, **extra)


# the defines of a conv site that the GEMM kernels read (the rest would split identical kernels)
_CONV_SHAPE = ("IN_CHANNELS", "FILTERS", "KERNEL_H", "KERNEL_W", "STRIDE_H", "STRIDE_W",
               "DILATION_H", "DILATION_W", "PAD_TOP", "PAD_LEFT", "OUT_H", "OUT_W", "K_ALLOC")


def _conv_shape(shape: dict) -> dict:
    return {key: value for key, value in shape.items()
            if key in _CONV_SHAPE or key.startswith(("X_", "Y_"))}


def lower_forward(ctx, shape: dict, knobs: dict, args: list, site: str, flops: int,
                  moved: int, role: str = "forward") -> None:
    """Launch the implicit-GEMM conv of ``args`` = [x, w, b, y] (conv.cl's CONV_FORWARD
    arguments and defines ``shape``, its epilogue, gate and accumulation included), or its
    Winograd as ``knobs`` choose (``role`` names that one's scratch, as ops/winograd.py's)."""
    if knobs["ALGORITHM"] in WINOGRAD:
        _lower_winograd_forward(ctx, shape, knobs, args, site, flops, role)
        return
    epilogue = {key: shape[key] for key in ("HAS_BIAS", "EPILOGUE", "EPILOGUE_SLOPE", "GATE",
                                            "GATE_SLOPE", "ACCUMULATE") if key in shape}
    epilogue.setdefault("GATE", "ACT_NONE")
    epilogue.setdefault("ACCUMULATE", 0)
    epilogue.update(residual_defines(shape))  # a sum folded in: r after y in ``args``
    _launch(ctx, "CONV_GEMM_FORWARD", {**_conv_shape(shape), **epilogue}, knobs,
            shape["OUT_H"] * shape["OUT_W"], shape["K_ALLOC"], args, site, flops=flops,
            moved=moved)


def _winograd_defines(shape: dict, algorithm: str, images: int) -> dict:
    out_tile = WINOGRAD[algorithm]
    return {"IN_CHANNELS": shape["IN_CHANNELS"], "K_ALLOC": shape["K_ALLOC"],
            "POSITIONS": (out_tile + 2) ** 2, "TILES": image_tiles(shape, algorithm),
            "IMAGES_PER_GROUP": images}


def _lower_winograd_forward(ctx, shape: dict, knobs: dict, args: list, site: str, flops: int,
                            role: str) -> None:
    """Winograd's transforms around WINOGRAD_GEMM_FORWARD: one GEMM per position and group of
    images, rows = the group's tiles."""
    algorithm = knobs["ALGORITHM"]
    tiles = image_tiles(shape, algorithm)
    images = group_images(knobs, tiles)
    defines = _winograd_defines(shape, algorithm, images)

    def gemm(tiles_in, transformed, products):
        _launch(ctx, "WINOGRAD_GEMM_FORWARD", defines, knobs, images * tiles, shape["K_ALLOC"],
                [tiles_in, transformed, products, ctx.BATCH], site, items=defines["POSITIONS"],
                batch_divisor=images, flops=flops)

    winograd.lower_with_gemm(ctx, shape, WINOGRAD[algorithm], args, site, role, gemm)


def forward_matrix(shape: dict) -> tuple[int, int, int]:
    """(rows, columns, depth) of a conv forward site's GEMM."""
    return (shape["OUT_H"] * shape["OUT_W"], shape["K_ALLOC"],
            shape["KERNEL_H"] * shape["KERNEL_W"] * shape["IN_CHANNELS"])


def lower_backward(ctx, defines: dict, transposed_conv) -> bool:
    """A conv's backward pass in this family: the weight gradient, the bias gradient, and the
    input gradient (stride 1: ``transposed_conv(ctx)``, conv.py's conv of dy, whose forward site
    offers this family; strided: CONV_GEMM_DATA). False, with nothing launched, where the profile
    does not ask for the family or no tiled setting fits the device: the direct family then."""
    if not offered(ctx.profile, defines):
        return False
    weights = _weight_gradient_space(ctx.profile, defines)
    strided = ctx.attrs["stride"] != (1, 1)
    data = _data_gradient_space(ctx, defines) if strided else [None]
    if not weights or not data:
        return False
    _lower_weight_gradient(ctx, defines, weights)
    if ctx.attrs["bias"]:
        ctx.channel_sum(ctx.output_grad, ctx.output_layout, "bias")
    if ctx.needs_grad() and not strided:
        transposed_conv(ctx)
    elif ctx.needs_grad():
        _lower_data_gradient(ctx, defines, data)
    return True


def _weight_matrix(defines: dict) -> tuple[int, int, int]:
    """(rows, columns, depth per image) of the weight gradient's GEMM."""
    return (defines["KERNEL_H"] * defines["KERNEL_W"] * defines["IN_CHANNELS"],
            defines["K_ALLOC"], defines["OUT_H"] * defines["OUT_W"])


def _weight_gradient_space(profile, defines: dict) -> list[dict]:
    """The tiled settings with the default images per split, then the default tiles with
    other splits (more splits: more work-groups for a small layer, a longer sum of splits),
    then on 3x3 stride-1 sites Winograd's, the same way."""
    rows, columns, _ = _weight_matrix(defines)
    tiled = space(profile, rows, columns, _weight_matrix(defines)[2])
    if not tiled:
        return []
    return (_with_splits(tiled, rows, columns)
            + _winograd_weight_space(profile, defines, tiled[0]))


def _with_splits(settings: list[dict], rows: int, columns: int, positions: int = 1
                 ) -> list[dict]:
    first = split_images(settings[0], rows, columns, positions)
    return ([{**knobs, "IMAGES_PER_SPLIT": first} for knobs in settings]
            + [{**settings[0], "IMAGES_PER_SPLIT": n} for n in (1, 2, 4, 8, 16) if n != first])


def _winograd_weight_space(profile, defines: dict, first: dict) -> list[dict]:
    """Winograd's weight-gradient settings: the local-memory GEMM's for [C x tiles] x [tiles x
    K] per position (the implicit GEMM's default ``first`` first), with splits as its."""
    settings = []
    channels, columns = defines["IN_CHANNELS"], defines["K_ALLOC"]
    for algorithm in winograd_algorithms(defines):
        depth = image_tiles(defines, algorithm) * NOMINAL_IMAGES
        tiled = _as_winograd(profile, algorithm, first, channels, columns, depth)
        if tiled:
            positions = (WINOGRAD[algorithm] + 2) ** 2
            settings += _with_splits(tiled, channels, columns, positions)
    return settings


def split_images(knobs: dict, rows: int, columns: int, positions: int = 1) -> int:
    """Images per split of a weight gradient: one where a split has few work-groups (a small
    layer needs the batch's splits to fill a GPU), up to 16 where it has many, so the partial
    sums stay few (VGG-16's 512-channel layers at one image a split would hold 64-256 copies of
    their 9.4 MB of weights, and sum them). ``positions``: GEMMs per split (Winograd's)."""
    grid, local = _grid(knobs, rows, columns)
    groups = grid[0] // local[0] * (grid[1] // local[1]) * positions
    images = 1
    while images * 2 <= 16 and images * 2 * 4 <= groups:
        images *= 2
    return images


def _lower_weight_gradient(ctx, defines: dict, settings: list[dict]) -> None:
    """dw as a GEMM over each split's images and output pixels into partial sums per split,
    then summed (reduction.cl's SUM_SPLITS, timed with the site by the tuner)."""
    rows, columns, _ = _weight_matrix(defines)
    shape = _conv_shape(defines)
    site, knobs = ctx.tuned("CONV_GEMM_WEIGHTS", shape, settings)
    partial, per_split = ctx.split_sum("weight", knobs["IMAGES_PER_SPLIT"])
    tiles = {key: value for key, value in knobs.items() if key != "IMAGES_PER_SPLIT"}
    if knobs["ALGORITHM"] in WINOGRAD:
        _lower_winograd_weight_gradient(ctx, defines, tiles, partial, per_split, site)
        ctx.sum_splits("weight", site)
        return
    _launch(ctx, "CONV_GEMM_WEIGHTS", {**shape, "IMAGES_PER_SPLIT": per_split}, tiles, rows,
            columns, [ctx.input_tensor(), ctx.output_grad, partial, ctx.BATCH], site,
            flops=ctx.node.flops, batch_divisor=per_split)
    ctx.sum_splits("weight", site)


def _lower_winograd_weight_gradient(ctx, defines: dict, knobs: dict, partial, images: int,
                                    site: str) -> None:
    """Winograd's transforms around WINOGRAD_GEMM_WEIGHTS: one GEMM per position and split of
    ``images`` images, reducing over the split's tiles, into ``partial``."""
    algorithm = knobs["ALGORITHM"]
    gemm_defines = _winograd_defines(defines, algorithm, images)

    def gemm(tiles_in, tiles_grad, summed):
        _launch(ctx, "WINOGRAD_GEMM_WEIGHTS", gemm_defines, knobs, defines["IN_CHANNELS"],
                defines["K_ALLOC"], [tiles_in, tiles_grad, summed, ctx.BATCH], site,
                items=gemm_defines["POSITIONS"], batch_divisor=images, flops=ctx.node.flops)

    winograd.lower_weight_gradient_with_gemm(ctx, defines, WINOGRAD[algorithm],
                                             ctx.input_tensor(), ctx.output_grad, partial,
                                             images, site, gemm)


def _data_shape(ctx, defines: dict) -> tuple[dict, int, int]:
    """The strided input gradient's defines less ACCUMULATE, its rows and columns."""
    x = ctx.input_layout()
    shape = {**_conv_shape(defines), "IN_H": x.volume.height, "IN_W": x.volume.width,
             "TRANSPOSED_ALLOC": x.stride_c}
    shape.pop("K_ALLOC")
    return shape, x.volume.height * x.volume.width, x.stride_c


def _data_gradient_space(ctx, defines: dict) -> list[dict]:
    shape, rows, columns = _data_shape(ctx, defines)
    return space(ctx.profile, rows, columns,
                 defines["KERNEL_H"] * defines["KERNEL_W"] * defines["FILTERS"])


def _lower_data_gradient(ctx, defines: dict, settings: list[dict]) -> None:
    """dx of a strided conv: conv.cl's CONV_TRANSPOSE_WEIGHTS lays the weights out flipped and
    transposed, (KERNEL_H, KERNEL_W, FILTERS, x's channel stride), then a GEMM gathers dy where
    each tap lands."""
    shape, rows, columns = _data_shape(ctx, defines)
    kh, kw = defines["KERNEL_H"], defines["KERNEL_W"]
    filters, channels = defines["FILTERS"], defines["IN_CHANNELS"]
    transposed = ctx.work_buffer("weight_t", kh * kw * filters * columns)
    ctx.launch("conv", "CONV_TRANSPOSE_WEIGHTS", {**defines, "TRANSPOSED_ALLOC": columns},
               (filters, channels, kh * kw), [ctx.param("weight"), transposed])
    grad, accumulate = ctx.input_grad()
    shape["ACCUMULATE"] = accumulate
    site, knobs = ctx.tuned("CONV_GEMM_DATA", shape, settings)
    _launch(ctx, "CONV_GEMM_DATA", shape, knobs, rows, columns,
            [ctx.output_grad, transposed, grad], site, flops=ctx.node.flops)


# fc: rows (or the depth) are the batch, known only at run time; settings are sized for this many
NOMINAL_BATCH = 64
_DENSE_SHAPE = ("IN_H", "IN_W", "IN_CHANNELS", "UNITS", "U_ALLOC")


def _dense_shape(defines: dict) -> dict:
    return {key: value for key, value in defines.items()
            if key in _DENSE_SHAPE or key.startswith(("X_", "Y_"))}


def lower_dense(ctx, defines: dict, args: list, moved: int) -> bool:
    """fc's forward as the tiled GEMM of ``args`` = [x, w, b, y, batch] (dense.cl's arguments,
    ``defines`` its defines with the epilogue); False (nothing launched) where the profile does
    not ask for this family or no setting fits."""
    if getattr(ctx.profile, "conv_family", "direct") != "tiled":
        return False
    inputs = defines["IN_H"] * defines["IN_W"] * defines["IN_CHANNELS"]
    settings = space(ctx.profile, NOMINAL_BATCH, defines["U_ALLOC"], inputs)
    if not settings:
        return False
    shape = {**_dense_shape(defines), **{key: defines[key] for key in (
        "HAS_BIAS", "EPILOGUE", "EPILOGUE_SLOPE")}}
    site, knobs = ctx.tuned("GEMM_FORWARD", shape, settings)
    _launch(ctx, "GEMM_FORWARD", shape, knobs, None, defines["U_ALLOC"], args, site,
            flops=ctx.node.flops, moved=moved)
    return True


def lower_dense_backward(ctx, defines: dict) -> bool:
    """fc's weight gradient (x^T dy over the batch), bias gradient and input gradient (dy w^T,
    one input per column: w^T is a strided gather) as tiled GEMMs; False where not offered."""
    if getattr(ctx.profile, "conv_family", "direct") != "tiled":
        return False
    shape = _dense_shape(defines)
    inputs = defines["IN_H"] * defines["IN_W"] * defines["IN_CHANNELS"]
    weights = space(ctx.profile, inputs, defines["U_ALLOC"], NOMINAL_BATCH)
    data = [knobs for knobs in space(replace(ctx.profile, max_vector=1), NOMINAL_BATCH, inputs,
                                     defines["UNITS"])]
    if not weights or (ctx.needs_grad() and not data):
        return False
    site, knobs = ctx.tuned("GEMM_BACKWARD_WEIGHTS", shape, weights)
    _launch(ctx, "GEMM_BACKWARD_WEIGHTS", shape, knobs, inputs, defines["U_ALLOC"],
            [ctx.input_tensor(), ctx.output_grad, ctx.param_grad("weight"), ctx.BATCH], site,
            batch_axis=None, flops=ctx.node.flops)
    if ctx.attrs["bias"]:
        ctx.channel_sum(ctx.output_grad, ctx.output_layout, "bias")
    if ctx.needs_grad():
        grad, accumulate = ctx.input_grad()
        data_shape = {**shape, "ACCUMULATE": accumulate}
        site, knobs = ctx.tuned("GEMM_BACKWARD_DATA", data_shape, data)
        _launch(ctx, "GEMM_BACKWARD_DATA", data_shape, knobs, None, inputs,
                [ctx.output_grad, ctx.param("weight"), grad, ctx.BATCH], site,
                flops=ctx.node.flops)
    return True
