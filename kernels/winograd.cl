/* winograd.cl -- Winograd convolution F(OUT_TILE x OUT_TILE, 3x3) for 3x3, stride-1, dilation-1,
 * ungrouped layers (Lavin & Gray 2015): y = A^T [ (G g G^T) . (B^T d B) ] A per tile, so a tile of
 * OUT_TILE^2 outputs costs IN_TILE^2 multiplies per (channel, filter) pair instead of
 * 9 OUT_TILE^2: 2.25x fewer for F(2x2), 4x for F(4x4) (which loses precision: its transforms hold
 * 1/24 .. 8, so rounding grows with the channel count; see README "Winograd").
 *
 * Data layout:
 *   x  (N, X_ALLOC_H, X_ALLOC_W, X_STRIDE_C), NHWC with a zero halo (see common.cl)
 *   w  (KERNEL_H = 3, KERNEL_W = 3, IN_CHANNELS, K_ALLOC): the conv's device weights
 *   u  (POSITIONS, IN_CHANNELS, K_ALLOC): transformed filters, G g G^T per (channel, filter)
 *   v  (N, POSITIONS, TILES, IN_CHANNELS): transformed input tiles, B^T d B per (tile, channel)
 *   m  (N, POSITIONS, TILES, K_ALLOC): the element-wise products summed over channels
 *   b  (K_ALLOC) bias; with GATE instead the layer before's activation output, laid out as y
 *   y  (N, Y_ALLOC_H, Y_ALLOC_W, Y_STRIDE_C)
 * where POSITIONS = IN_TILE^2 and TILES = TILES_H x TILES_W tiles of OUT_TILE^2 output pixels.
 *
 * WINOGRAD_FILTER: work-item (kv, c) transforms the 3x3 filters of channel c for VECTOR_WIDTH
 *   filters from kv * VECTOR_WIDTH.
 * WINOGRAD_INPUT: work-item (cv, tw, n * TILES_H + th) transforms tile (th, tw) of image n for
 *   VECTOR_WIDTH channels from cv * VECTOR_WIDTH. Tiles past the bottom/right edge read zeros
 *   outside the allocated halo (only outputs that are never stored depend on them).
 * WINOGRAD_GEMM: POSITIONS independent GEMMs per group of IMAGES_PER_GROUP images, m[t] = v[t]
 *   (IMAGES_PER_GROUP TILES x C) u[t] (C x K): small outputs (an 8x8 output has 4 tiles of 4x4)
 *   get GEMM rows from several images. Work-item (kt, rg, t * GROUPS + group), GROUPS the
 *   batch's image groups, keeps TILE_ROWS tiles x FILTER_VECTORS vectors of VECTOR_WIDTH
 *   filters in registers, CHANNEL_STEP channels of u per load and each tile's channel
 *   broadcast from memory (no local memory: on PoCL register tiles win). Position-major, so
 *   that consecutive work-groups share one position's u[t] in cache. Rows past the group's
 *   tiles or the batch (the batch is an argument) clamp their reads and skip their stores.
 * WINOGRAD_OUTPUT: work-item (kv, tw, n * TILES_H + th) transforms tile (th, tw) back for
 *   VECTOR_WIDTH filters, adds the bias, applies EPILOGUE (or GATE: dL/dz = f'(b) dL/dy, as
 *   conv.cl does for a stride-1 input gradient), adds to y with ACCUMULATE, and stores the pixels
 *   inside OUT_H x OUT_W. With RESIDUAL (inference: a sum folded into the conv, conv.cl's) it
 *   takes r, the sum's other input (layout R_ALLOC_H ... R_STRIDE_C), and adds it at each pixel
 *   before the activation.
 * WINOGRAD_FUSED: the input transform, the GEMMs and the output transform (with its epilogue)
 *   in one kernel, with no v or m in global memory. Work-item (kt, rg, g) takes ITEM_TILES
 *   tiles from rg * ITEM_TILES of each of ITEM_IMAGES images from g * ITEM_IMAGES (ITEM_IMAGES
 *   > 1 only where ITEM_TILES is all of an image's tiles; the batch is an argument) and
 *   FILTER_VECTORS vectors of VECTOR_WIDTH filters from kt * that: it transforms its tiles'
 *   channels (INPUT_WIDTH at a time) into a private scratch (POSITIONS, its tiles,
 *   SCRATCH_ROW), multiplies them per position with u[t] in register tiles of ROW_TILES tiles
 *   (its products replace that position's channels in the scratch), then transforms them back
 *   and stores y as WINOGRAD_OUTPUT does (the same epilogue, RESIDUAL's r included: r after y,
 *   then the batch). The scratch (FUSED_SCRATCH_BYTES at most, chosen by
 *   ops/winograd.py) stays in L1/L2; every work-item reads u[t] of all positions for its
 *   filters, so the fused form is offered where u fits the L2 (ops/winograd.py).
 *
 * The weight gradient (Winograd's transpose: dL/dg = sum over images and tiles of
 * G^T [ (B^T d B) . (A dY A^T) ] G), with WINOGRAD_INPUT's v and
 *   dm (N, POSITIONS, TILES, K_ALLOC): transformed output-gradient tiles, A dY A^T per tile
 *   du (SPLITS, POSITIONS, IN_CHANNELS, K_ALLOC): per batch split, sum of v x dm over its tiles
 *   dw (SPLITS, 3, 3, IN_CHANNELS, K_ALLOC): per split, partial weight gradients (conv.cl's
 *     CONV_BACKWARD_WEIGHTS layout, which reduction.cl's SUM_SPLITS adds up)
 * WINOGRAD_OUTPUT_GRAD: work-item (kv, tw, n * TILES_H + th) transforms tile (th, tw) of dy for
 *   VECTOR_WIDTH filters; pixels past OUT_H x OUT_W read as zeros (a partial tile's missing
 *   outputs have no gradient, so the input pixels only they would read contribute nothing).
 * WINOGRAD_WEIGHT_GEMM: POSITIONS independent GEMMs per batch split, du[t] = v[t]^T dm[t]
 *   (C x tiles of the split's images) (tiles x K). Work-item (kt, ct, split * POSITIONS + t) keeps
 *   CHANNEL_TILE channels x FILTER_VECTORS vectors of VECTOR_WIDTH filters in registers, as
 *   conv.cl's CONV_BACKWARD_WEIGHTS does (its knobs); the batch is an argument.
 * WINOGRAD_FILTER_GRAD: work-item (kv, c, split) transforms du back, G^T du G (IN_TILE^2 -> 3x3),
 *   for VECTOR_WIDTH filters of channel c.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME winograd_gemm
#define WINOGRAD_GEMM 1
#define OUT_TILE 2
#define IN_CHANNELS 8
#define K_ALLOC 16
#define OUT_H 8
#define OUT_W 8
#define PAD_TOP 1
#define PAD_LEFT 1
#define X_ALLOC_H 10
#define X_ALLOC_W 10
#define X_HALO_TOP 1
#define X_HALO_LEFT 1
#define X_STRIDE_C 8
#define Y_ALLOC_H 8
#define Y_ALLOC_W 8
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#define VECTOR_WIDTH 16
#define TILE_ROWS 8
#define FILTER_VECTORS 1
#define CHANNEL_STEP 4
#define HAS_BIAS 1
#define EPILOGUE ACT_RELU
#define EPILOGUE_SLOPE 0.0f
#define GATE ACT_NONE
#define GATE_SLOPE 0.0f
#define ACCUMULATE 0
#define CHANNEL_TILE 4
#define IMAGES_PER_SPLIT 2
#define IMAGES_PER_GROUP 1
#define INPUT_WIDTH 8
#define ROW_TILES 4
#define ITEM_TILES 16
#define ITEM_IMAGES 1
#endif

/* derived values */
#define IN_TILE (OUT_TILE + 2)
#define POSITIONS (IN_TILE * IN_TILE)
#define TILES_H ((OUT_H + OUT_TILE - 1) / OUT_TILE)
#define TILES_W ((OUT_W + OUT_TILE - 1) / OUT_TILE)
#define TILES (TILES_H * TILES_W)
#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)
#define APPLY(macro, ...) macro(__VA_ARGS__) /* expands the argument lists below first */

/* The 1-D transforms, written out so that no multiply by 0 or 1 is left to the compiler.
 * FILTER_1D: G g (3 -> IN_TILE), INPUT_1D: B^T d (IN_TILE -> IN_TILE),
 * OUTPUT_1D: A^T m (IN_TILE -> OUT_TILE). */
#if OUT_TILE == 2
#define ROW(a, i) a[i][0], a[i][1], a[i][2], a[i][3]
#define COLUMN(a, j) a[0][j], a[1][j], a[2][j], a[3][j]
#define ROW_OUT(a, i) a[i][0], a[i][1]
#define COLUMN_OUT(a, j) a[0][j], a[1][j]
#define FILTER_1D(g0, g1, g2, o0, o1, o2, o3)                                                  \
    do {                                                                                       \
        o0 = g0;                                                                               \
        o1 = 0.5f * (g0 + g1 + g2);                                                            \
        o2 = 0.5f * (g0 - g1 + g2);                                                            \
        o3 = g2;                                                                               \
    } while (0)
#define INPUT_1D(d0, d1, d2, d3, o0, o1, o2, o3)                                               \
    do {                                                                                       \
        o0 = d0 - d2;                                                                          \
        o1 = d1 + d2;                                                                          \
        o2 = d2 - d1;                                                                          \
        o3 = d1 - d3;                                                                          \
    } while (0)
#define OUTPUT_1D(m0, m1, m2, m3, o0, o1)                                                      \
    do {                                                                                       \
        o0 = m0 + m1 + m2;                                                                     \
        o1 = m1 - m2 - m3;                                                                     \
    } while (0)
/* the transposes, for the weight gradient: OUTPUT_1D_T = A g (OUT_TILE -> IN_TILE),
 * FILTER_1D_T = G^T u (IN_TILE -> 3) */
#define OUTPUT_1D_T(g0, g1, o0, o1, o2, o3)                                                    \
    do {                                                                                       \
        o0 = g0;                                                                               \
        o1 = g0 + g1;                                                                          \
        o2 = g0 - g1;                                                                          \
        o3 = -g1;                                                                              \
    } while (0)
#define FILTER_1D_T(u0, u1, u2, u3, o0, o1, o2)                                                \
    do {                                                                                       \
        o0 = u0 + 0.5f * (u1 + u2);                                                            \
        o1 = 0.5f * (u1 - u2);                                                                 \
        o2 = 0.5f * (u1 + u2) + u3;                                                            \
    } while (0)
#elif OUT_TILE == 4
#define ROW(a, i) a[i][0], a[i][1], a[i][2], a[i][3], a[i][4], a[i][5]
#define COLUMN(a, j) a[0][j], a[1][j], a[2][j], a[3][j], a[4][j], a[5][j]
#define ROW_OUT(a, i) a[i][0], a[i][1], a[i][2], a[i][3]
#define COLUMN_OUT(a, j) a[0][j], a[1][j], a[2][j], a[3][j]
#define FILTER_1D(g0, g1, g2, o0, o1, o2, o3, o4, o5)                                          \
    do {                                                                                       \
        o0 = 0.25f * g0;                                                                       \
        o1 = (-1.0f / 6.0f) * (g0 + g1 + g2);                                                  \
        o2 = (-1.0f / 6.0f) * (g0 - g1 + g2);                                                  \
        o3 = (1.0f / 24.0f) * g0 + (1.0f / 12.0f) * g1 + (1.0f / 6.0f) * g2;                   \
        o4 = (1.0f / 24.0f) * g0 - (1.0f / 12.0f) * g1 + (1.0f / 6.0f) * g2;                   \
        o5 = g2;                                                                               \
    } while (0)
#define INPUT_1D(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5)                               \
    do {                                                                                       \
        o0 = 4.0f * d0 - 5.0f * d2 + d4;                                                       \
        o1 = d3 + d4 - 4.0f * (d1 + d2);                                                       \
        o2 = d4 - d3 + 4.0f * (d1 - d2);                                                       \
        o3 = d4 - d2 + 2.0f * (d3 - d1);                                                       \
        o4 = d4 - d2 + 2.0f * (d1 - d3);                                                       \
        o5 = 4.0f * d1 - 5.0f * d3 + d5;                                                       \
    } while (0)
#define OUTPUT_1D(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3)                                      \
    do {                                                                                       \
        o0 = m0 + (m1 + m2) + (m3 + m4);                                                       \
        o1 = (m1 - m2) + 2.0f * (m3 - m4);                                                     \
        o2 = (m1 + m2) + 4.0f * (m3 + m4);                                                     \
        o3 = (m1 - m2) + 8.0f * (m3 - m4) + m5;                                                \
    } while (0)
#define OUTPUT_1D_T(g0, g1, g2, g3, o0, o1, o2, o3, o4, o5)                                    \
    do {                                                                                       \
        o0 = g0;                                                                               \
        o1 = (g0 + g2) + (g1 + g3);                                                            \
        o2 = (g0 + g2) - (g1 + g3);                                                            \
        o3 = (g0 + 4.0f * g2) + 2.0f * (g1 + 4.0f * g3);                                       \
        o4 = (g0 + 4.0f * g2) - 2.0f * (g1 + 4.0f * g3);                                       \
        o5 = g3;                                                                               \
    } while (0)
#define FILTER_1D_T(u0, u1, u2, u3, u4, u5, o0, o1, o2)                                        \
    do {                                                                                       \
        o0 = 0.25f * u0 - (1.0f / 6.0f) * (u1 + u2) + (1.0f / 24.0f) * (u3 + u4);              \
        o1 = (1.0f / 6.0f) * (u2 - u1) + (1.0f / 12.0f) * (u3 - u4);                           \
        o2 = (1.0f / 6.0f) * ((u3 + u4) - (u1 + u2)) + u5;                                     \
    } while (0)
#else
#error "OUT_TILE must be 2 or 4"
#endif
/* VECTOR_ITEMS(a), OUT_ITEMS(a): the IN_TILE or OUT_TILE items of a 1-D array, as a
 * transform's arguments;
 * UNROLL_PASSES: whether the input and output-gradient transforms' passes are unrolled (F(2x2))
 * or loops (F(4x4): its 6x6 tile of vectors unrolled took PoCL 3x as long to build, for 0-13%
 * of the speed) */
#if OUT_TILE == 2
#define VECTOR_ITEMS(a) a[0], a[1], a[2], a[3]
#define OUT_ITEMS(a) a[0], a[1]
#define UNROLL_PASSES _Pragma("unroll")
#else
#define VECTOR_ITEMS(a) a[0], a[1], a[2], a[3], a[4], a[5]
#define OUT_ITEMS(a) a[0], a[1], a[2], a[3]
#define UNROLL_PASSES
#endif
#define FILTER_ROW(a, i) a[i][0], a[i][1], a[i][2]
#define FILTER_COLUMN(a, j) a[0][j], a[1][j], a[2][j]

#if defined(WINOGRAD_FILTER)
__kernel void KERNEL_NAME(__global const float *restrict w, __global float *restrict u)
{
    const int kv = get_global_id(0);
    const int c = get_global_id(1);
    if (kv >= K_ALLOC / VECTOR_WIDTH || c >= IN_CHANNELS) return;
    const int k = kv * VECTOR_WIDTH;
    realV g[3][3], part[IN_TILE][3], out[IN_TILE][IN_TILE];
#pragma unroll
    for (int r = 0; r < 3; ++r)
#pragma unroll
        for (int s = 0; s < 3; ++s) g[r][s] = LOADV(0, w + ((r * 3 + s) * IN_CHANNELS + c) * K_ALLOC + k);
#pragma unroll
    for (int s = 0; s < 3; ++s) APPLY(FILTER_1D, FILTER_COLUMN(g, s), COLUMN(part, s));
#pragma unroll
    for (int i = 0; i < IN_TILE; ++i) APPLY(FILTER_1D, FILTER_ROW(part, i), ROW(out, i));
#pragma unroll
    for (int i = 0; i < IN_TILE; ++i)
#pragma unroll
        for (int j = 0; j < IN_TILE; ++j)
            STOREV(out[i][j], 0, u + ((i * IN_TILE + j) * IN_CHANNELS + c) * K_ALLOC + k);
}
#endif

#if defined(WINOGRAD_INPUT)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict v)
{
    const int cv = get_global_id(0);
    const int tw = get_global_id(1);
    const int row = get_global_id(2);
    if (cv >= IN_CHANNELS / VECTOR_WIDTH || tw >= TILES_W) return;
    const int n = row / TILES_H;
    const int th = row % TILES_H;
    const int c = cv * VECTOR_WIDTH;
    const int top = th * OUT_TILE - PAD_TOP;
    const int left = tw * OUT_TILE - PAD_LEFT;
    /* two passes of 1-D transforms as loops (PoCL compiles a fully unrolled IN_TILE^2 tile
     * of vectors slowly): down each column of the tile, then along each row, storing */
    realV part[IN_TILE][IN_TILE];
    UNROLL_PASSES
    for (int j = 0; j < IN_TILE; ++j) {
        const int wc = left + j + X_HALO_LEFT;
        realV d[IN_TILE];
#pragma unroll
        for (int i = 0; i < IN_TILE; ++i) {
            const int h = top + i + X_HALO_TOP; /* row inside the allocated image */
            const int inside = h >= 0 && h < X_ALLOC_H && wc >= 0 && wc < X_ALLOC_W;
            d[i] = inside ? LOADV(0, x + AT(X, n, top + i, left + j, c)) : (realV)(0.0f);
        }
        realV o[IN_TILE];
        APPLY(INPUT_1D, VECTOR_ITEMS(d), VECTOR_ITEMS(o));
#pragma unroll
        for (int i = 0; i < IN_TILE; ++i) part[i][j] = o[i];
    }
    __global float *tile = v + ((n * POSITIONS) * TILES + th * TILES_W + tw) * IN_CHANNELS + c;
    UNROLL_PASSES
    for (int i = 0; i < IN_TILE; ++i) {
        realV o[IN_TILE];
        APPLY(INPUT_1D, ROW(part, i), VECTOR_ITEMS(o));
#pragma unroll
        for (int j = 0; j < IN_TILE; ++j)
            STOREV(o[j], 0, tile + (i * IN_TILE + j) * TILES * IN_CHANNELS);
    }
}
#endif

#if defined(WINOGRAD_GEMM)
#define GROUP_ROWS (IMAGES_PER_GROUP * TILES) /* GEMM rows: the tiles of a group of images */
#define ROW_GROUPS ((GROUP_ROWS + TILE_ROWS - 1) / TILE_ROWS)
#define FILTERS_PER_ITEM (VECTOR_WIDTH * FILTER_VECTORS)
/* rows aligned with images: no partial row group, and a work-item's rows inside one image's
 * tiles or spanning whole images (what ops/winograd.py plans wherever a divisor allows) */
#define ALIGNED_ROWS \
    (GROUP_ROWS % TILE_ROWS == 0 && (TILES % TILE_ROWS == 0 || TILE_ROWS % TILES == 0))
#define ROW_IMAGES (TILE_ROWS % TILES == 0 ? TILE_ROWS / TILES : 1)
#define ROW_IMAGE(p) (TILE_ROWS % TILES == 0 ? (p) / TILES : 0)
#define ROW_TILE(p) (TILE_ROWS % TILES == 0 ? (p) % TILES : (p))
__kernel void KERNEL_NAME(__global const float *restrict v, __global const float *restrict u,
                          __global float *restrict m, const int batch)
{
    const int kt = get_global_id(0);
    const int rg = get_global_id(1);
    const int row = get_global_id(2);
    if (kt >= K_ALLOC / FILTERS_PER_ITEM || rg >= ROW_GROUPS) return;
    /* position-major: consecutive groups share one position's filters u[t], which stay in
     * cache across the batch (image-major groups cycled through all POSITIONS x C x K of u,
     * more than the L2 from 128 channels) */
    const int groups = (batch + IMAGES_PER_GROUP - 1) / IMAGES_PER_GROUP;
    const int t = row / groups;
    const int first_image = row % groups * IMAGES_PER_GROUP;
    const int first = rg * TILE_ROWS;
    const int k0 = kt * FILTERS_PER_ITEM;
    __global const float *ut = u + t * IN_CHANNELS * K_ALLOC + k0;

#if ALIGNED_ROWS
    /* a work-item's rows lie in one image, or span whole images: each row's tile is one of
     * ROW_IMAGES image pointers plus a compile-time offset, so the inner loop addresses memory
     * with constants (an array of row indices became SIMD integer vectors there, whose lane
     * extracts are shuffles on the FMA port); images past the batch read its last and store
     * nothing */
    __global const float *v_image[ROW_IMAGES];
    __global float *m_image[ROW_IMAGES];
    bool stored_image[ROW_IMAGES];
    const int lead = first % TILES; /* 0 where the rows span whole images */
#pragma unroll
    for (int i = 0; i < ROW_IMAGES; ++i) {
        const int image = first_image + first / TILES + i;
        const int at = (min(image, batch - 1) * POSITIONS + t) * TILES + lead;
        v_image[i] = v + at * IN_CHANNELS;
        m_image[i] = m + at * K_ALLOC + k0;
        stored_image[i] = image < batch;
    }
#define ROW_V(p) (v_image[ROW_IMAGE(p)] + ROW_TILE(p) * IN_CHANNELS)
#define ROW_M(p) (m_image[ROW_IMAGE(p)] + ROW_TILE(p) * K_ALLOC)
#define ROW_STORED(p) stored_image[ROW_IMAGE(p)]
#else
    /* where each row's tile starts in v[n][t] and m[n][t]: rows past the group or the batch
     * read the group's last tile and store nothing */
    int at[TILE_ROWS];
    bool stored[TILE_ROWS];
#pragma unroll
    for (int p = 0; p < TILE_ROWS; ++p) {
        const int r = min(first + p, GROUP_ROWS - 1);
        const int n = min(first_image + r / TILES, batch - 1);
        at[p] = (n * POSITIONS + t) * TILES + r % TILES;
        stored[p] = first + p < GROUP_ROWS && first_image + r / TILES < batch;
    }
#define ROW_V(p) (v + at[p] * IN_CHANNELS)
#define ROW_M(p) (m + at[p] * K_ALLOC + k0)
#define ROW_STORED(p) stored[p]
#endif

    realV acc[TILE_ROWS][FILTER_VECTORS];
#pragma unroll
    for (int p = 0; p < TILE_ROWS; ++p)
#pragma unroll
        for (int f = 0; f < FILTER_VECTORS; ++f) acc[p][f] = (realV)(0.0f);

    for (int c = 0; c < IN_CHANNELS; c += CHANNEL_STEP) {
        realV uv[CHANNEL_STEP][FILTER_VECTORS];
#pragma unroll
        for (int j = 0; j < CHANNEL_STEP; ++j)
#pragma unroll
            for (int f = 0; f < FILTER_VECTORS; ++f)
                uv[j][f] = LOADV(0, ut + (c + j) * K_ALLOC + f * VECTOR_WIDTH);
#pragma unroll
        for (int p = 0; p < TILE_ROWS; ++p) {
#pragma unroll
            for (int j = 0; j < CHANNEL_STEP; ++j) {
                /* each scalar broadcast straight from memory (a load-port vbroadcastss): a
                 * vector load split into lanes costs a shuffle per lane on the FMA port */
                const realV vb = (realV)(ROW_V(p)[c + j]);
#pragma unroll
                for (int f = 0; f < FILTER_VECTORS; ++f) acc[p][f] = fma(vb, uv[j][f], acc[p][f]);
            }
        }
    }

#pragma unroll
    for (int p = 0; p < TILE_ROWS; ++p) {
        if (ROW_STORED(p)) {
#pragma unroll
            for (int f = 0; f < FILTER_VECTORS; ++f) STOREV(acc[p][f], 0, ROW_M(p) + f * VECTOR_WIDTH);
        }
    }
}
#undef ROW_V
#undef ROW_M
#undef ROW_STORED
#undef GROUP_ROWS
#undef ROW_GROUPS
#undef FILTERS_PER_ITEM
#undef ALIGNED_ROWS
#undef ROW_IMAGES
#undef ROW_IMAGE
#undef ROW_TILE
#endif

#if defined(WINOGRAD_OUTPUT) || defined(WINOGRAD_FUSED)
/* The output transform's second pass and epilogue, WINOGRAD_OUTPUT's and WINOGRAD_FUSED's: a
 * macro, not a function, so that both kernels compile to what WINOGRAD_OUTPUT's own text did
 * (PoCL left a function a call, its tile passed through memory; always inlined, it scheduled
 * the kernel differently) */
#ifndef RESIDUAL /* no sum folded in */
#define RESIDUAL 0
#endif
#if RESIDUAL /* r, the sum's other input (layout R_ALLOC_H ... R_STRIDE_C), after y */
#define RESIDUAL_ARGUMENT , __global const float *restrict r
#define PLUS_RESIDUAL(n, oh, ow, k) +LOADV(0, r + AT(R, n, oh, ow, k))
#else
#define RESIDUAL_ARGUMENT
#define PLUS_RESIDUAL(n, oh, ow, k)
#endif
#if defined(GATE) && GATE != ACT_NONE /* b holds the layer before's activation output, as y */
#define GATED(value, at) ACTIVATE_BACKWARD(LOADV(0, b + (at)), value, GATE, GATE_SLOPE)
#else
#define GATED(value, at) (value)
#endif
#if ACCUMULATE
#define ACCUMULATED(value, at) ((value) + LOADV(0, y + (at)))
#else
#define ACCUMULATED(value, at) (value)
#endif
/* A^T along each row of ``part`` (realV [OUT_TILE][IN_TILE]: the tile's columns transformed)
 * for VECTOR_WIDTH filters from k of tile (th, tw) of image n, then at each pixel inside
 * OUT_H x OUT_W: the bias (b, with HAS_BIAS), the sum's other input r at the same pixel
 * (RESIDUAL), the activation or GATE, the sum with y (ACCUMULATE), stored into y */
#if HAS_BIAS
#define OUTPUT_BIAS(k) LOADV(0, b + (k))
#else
#define OUTPUT_BIAS(k) ((realV)(0.0f))
#endif
#define STORE_TILE(part, n, th, tw, k)                                                         \
    do {                                                                                       \
        const realV bias = OUTPUT_BIAS(k);                                                     \
        _Pragma("unroll") for (int i = 0; i < OUT_TILE; ++i) {                                 \
            realV out[OUT_TILE];                                                               \
            APPLY(OUTPUT_1D, ROW(part, i), OUT_ITEMS(out));                                    \
            const int oh = th * OUT_TILE + i;                                                  \
            _Pragma("unroll") for (int j = 0; j < OUT_TILE; ++j) {                             \
                const int ow = tw * OUT_TILE + j;                                              \
                if (oh < OUT_H && ow < OUT_W) {                                                \
                    const int at = AT(Y, n, oh, ow, k);                                        \
                    realV value = ACTIVATE(out[j] + bias PLUS_RESIDUAL(n, oh, ow, k),          \
                                           EPILOGUE, EPILOGUE_SLOPE);                          \
                    value = GATED(value, at);                                                  \
                    value = ACCUMULATED(value, at);                                            \
                    STOREV(value, 0, y + at);                                                  \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    } while (0)
#endif

#if defined(WINOGRAD_OUTPUT)
__kernel void KERNEL_NAME(__global const float *restrict m, __global const float *restrict b,
                          __global float *restrict y RESIDUAL_ARGUMENT)
{
    const int kv = get_global_id(0);
    const int tw = get_global_id(1);
    const int row = get_global_id(2);
    if (kv >= K_ALLOC / VECTOR_WIDTH || tw >= TILES_W) return;
    const int n = row / TILES_H;
    const int th = row % TILES_H;
    const int k = kv * VECTOR_WIDTH;
    __global const float *tile = m + ((n * POSITIONS) * TILES + th * TILES_W + tw) * K_ALLOC + k;
    /* down each column of the products, then along each row of that, storing; unrolled for
     * F(4x4) too (as loops it ran 1.5x slower: OUT_TILE^2 results need no large tile) */
    realV part[OUT_TILE][IN_TILE];
#pragma unroll
    for (int j = 0; j < IN_TILE; ++j) {
        realV s[IN_TILE], o[OUT_TILE];
#pragma unroll
        for (int i = 0; i < IN_TILE; ++i) s[i] = LOADV(0, tile + (i * IN_TILE + j) * TILES * K_ALLOC);
        APPLY(OUTPUT_1D, VECTOR_ITEMS(s), OUT_ITEMS(o));
#pragma unroll
        for (int i = 0; i < OUT_TILE; ++i) part[i][j] = o[i];
    }
    STORE_TILE(part, n, th, tw, k);
}
#endif

#if defined(WINOGRAD_FUSED)
/* The three per-pass steps in one kernel, through a private scratch: the work-item's stack,
 * which stays in L1/L2 and is never written back to memory as v and m are */
#define ITEM_ROWS (ITEM_IMAGES * ITEM_TILES) /* tiles a work-item transforms */
#define FILTERS_PER_ITEM (VECTOR_WIDTH * FILTER_VECTORS)
/* one row of the scratch: a tile's channels at one position, then its products there (the
 * products of position t overwrite its channels once the GEMM of t has read them all) */
#define SCRATCH_ROW (IN_CHANNELS > FILTERS_PER_ITEM ? IN_CHANNELS : FILTERS_PER_ITEM)
#define SCRATCH_AT(t, q) (((t) * ITEM_ROWS + (q)) * SCRATCH_ROW)
#define realI CONCAT(float, INPUT_WIDTH)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict u,
                          __global const float *restrict b, __global float *restrict y
                          RESIDUAL_ARGUMENT, const int batch)
{
    const int kt = get_global_id(0);
    const int rg = get_global_id(1);
    const int first_image = get_global_id(2) * ITEM_IMAGES;
    if (kt >= K_ALLOC / FILTERS_PER_ITEM || rg >= (TILES + ITEM_TILES - 1) / ITEM_TILES) return;
    const int k0 = kt * FILTERS_PER_ITEM;
    float scratch[POSITIONS * ITEM_ROWS * SCRATCH_ROW] __attribute__((aligned(64)));

    /* the input transform of the work-item's tiles, B^T d B, INPUT_WIDTH channels at a time;
     * rows past the image's tiles or the batch transform the last one and store nothing */
    for (int q = 0; q < ITEM_ROWS; ++q) {
        const int n = min(first_image + q / ITEM_TILES, batch - 1);
        const int tile = min(rg * ITEM_TILES + q % ITEM_TILES, TILES - 1);
        const int top = tile / TILES_W * OUT_TILE - PAD_TOP;
        const int left = tile % TILES_W * OUT_TILE - PAD_LEFT;
        for (int c = 0; c < IN_CHANNELS; c += INPUT_WIDTH) {
            realI part[IN_TILE][IN_TILE];
            UNROLL_PASSES
            for (int j = 0; j < IN_TILE; ++j) {
                const int wc = left + j + X_HALO_LEFT;
                realI d[IN_TILE];
#pragma unroll
                for (int i = 0; i < IN_TILE; ++i) {
                    const int h = top + i + X_HALO_TOP; /* row inside the allocated image */
                    const int inside = h >= 0 && h < X_ALLOC_H && wc >= 0 && wc < X_ALLOC_W;
                    d[i] = inside ? VLOAD(INPUT_WIDTH)(0, x + AT(X, n, top + i, left + j, c))
                                  : (realI)(0.0f);
                }
                realI o[IN_TILE];
                APPLY(INPUT_1D, VECTOR_ITEMS(d), VECTOR_ITEMS(o));
#pragma unroll
                for (int i = 0; i < IN_TILE; ++i) part[i][j] = o[i];
            }
            UNROLL_PASSES
            for (int i = 0; i < IN_TILE; ++i) {
                realI o[IN_TILE];
                APPLY(INPUT_1D, ROW(part, i), VECTOR_ITEMS(o));
#pragma unroll
                for (int j = 0; j < IN_TILE; ++j)
                    VSTORE(INPUT_WIDTH)(o[j], 0, scratch + SCRATCH_AT(i * IN_TILE + j, q) + c);
            }
        }
    }

    /* per position, the GEMM of the tiles' channels with the transformed filters u[t] in
     * register tiles of ROW_TILES tiles (u[t] stays in L1 across them), each channel broadcast
     * from the scratch (see WINOGRAD_GEMM), the products kept in place */
    for (int t = 0; t < POSITIONS; ++t) {
        __global const float *ut = u + t * IN_CHANNELS * K_ALLOC + k0;
        for (int q0 = 0; q0 < ITEM_ROWS; q0 += ROW_TILES) {
            float *vt = scratch + SCRATCH_AT(t, q0);
            realV acc[ROW_TILES][FILTER_VECTORS];
#pragma unroll
            for (int p = 0; p < ROW_TILES; ++p)
#pragma unroll
                for (int f = 0; f < FILTER_VECTORS; ++f) acc[p][f] = (realV)(0.0f);
            for (int c = 0; c < IN_CHANNELS; c += CHANNEL_STEP) {
                realV uv[CHANNEL_STEP][FILTER_VECTORS];
#pragma unroll
                for (int j = 0; j < CHANNEL_STEP; ++j)
#pragma unroll
                    for (int f = 0; f < FILTER_VECTORS; ++f)
                        uv[j][f] = LOADV(0, ut + (c + j) * K_ALLOC + f * VECTOR_WIDTH);
#pragma unroll
                for (int p = 0; p < ROW_TILES; ++p) {
#pragma unroll
                    for (int j = 0; j < CHANNEL_STEP; ++j) {
                        const realV vb = (realV)(vt[p * SCRATCH_ROW + c + j]);
#pragma unroll
                        for (int f = 0; f < FILTER_VECTORS; ++f)
                            acc[p][f] = fma(vb, uv[j][f], acc[p][f]);
                    }
                }
            }
#pragma unroll
            for (int p = 0; p < ROW_TILES; ++p)
#pragma unroll
                for (int f = 0; f < FILTER_VECTORS; ++f)
                    STOREV(acc[p][f], 0, vt + p * SCRATCH_ROW + f * VECTOR_WIDTH);
        }
    }

    /* the output transform A^T m A of each tile's products, with WINOGRAD_OUTPUT's epilogue:
     * bias, activation or gate, accumulation */
    for (int q = 0; q < ITEM_ROWS; ++q) {
        const int n = first_image + q / ITEM_TILES;
        const int tile = rg * ITEM_TILES + q % ITEM_TILES;
        if (n >= batch || tile >= TILES) continue;
        const int th = tile / TILES_W, tw = tile % TILES_W;
        /* a loop, not unrolled: FILTER_VECTORS copies of the transform and its epilogue took
         * PoCL longer to build than the rest of the kernel (VGG-CIFAR's cold build 12.9-13.3 ->
         * 8.9 s of CPU) for 0-10% of the speed */
#pragma unroll 1
        for (int f = 0; f < FILTER_VECTORS; ++f) {
            const int k = k0 + f * VECTOR_WIDTH;
            realV part[OUT_TILE][IN_TILE];
#pragma unroll
            for (int j = 0; j < IN_TILE; ++j) {
                realV s[IN_TILE], o[OUT_TILE];
#pragma unroll
                for (int i = 0; i < IN_TILE; ++i)
                    s[i] = LOADV(0, scratch + SCRATCH_AT(i * IN_TILE + j, q) + f * VECTOR_WIDTH);
                APPLY(OUTPUT_1D, VECTOR_ITEMS(s), OUT_ITEMS(o));
#pragma unroll
                for (int i = 0; i < OUT_TILE; ++i) part[i][j] = o[i];
            }
            STORE_TILE(part, n, th, tw, k);
        }
    }
}
#undef ITEM_ROWS
#undef FILTERS_PER_ITEM
#undef SCRATCH_ROW
#undef SCRATCH_AT
#undef realI
#endif

#if defined(WINOGRAD_OUTPUT_GRAD)
__kernel void KERNEL_NAME(__global const float *restrict dy, __global float *restrict dm)
{
    const int kv = get_global_id(0);
    const int tw = get_global_id(1);
    const int row = get_global_id(2);
    if (kv >= K_ALLOC / VECTOR_WIDTH || tw >= TILES_W) return;
    const int n = row / TILES_H;
    const int th = row % TILES_H;
    const int k = kv * VECTOR_WIDTH;
    /* down each column of the gradient tile, then along each row of that, storing */
    realV part[IN_TILE][OUT_TILE];
    UNROLL_PASSES
    for (int j = 0; j < OUT_TILE; ++j) {
        const int ow = tw * OUT_TILE + j;
        realV g[OUT_TILE], o[IN_TILE];
#pragma unroll
        for (int i = 0; i < OUT_TILE; ++i) {
            const int oh = th * OUT_TILE + i;
            g[i] = oh < OUT_H && ow < OUT_W ? LOADV(0, dy + AT(Y, n, oh, ow, k)) : (realV)(0.0f);
        }
        APPLY(OUTPUT_1D_T, OUT_ITEMS(g), VECTOR_ITEMS(o));
#pragma unroll
        for (int i = 0; i < IN_TILE; ++i) part[i][j] = o[i];
    }
    __global float *tile = dm + ((n * POSITIONS) * TILES + th * TILES_W + tw) * K_ALLOC + k;
    UNROLL_PASSES
    for (int i = 0; i < IN_TILE; ++i) {
        realV o[IN_TILE];
        APPLY(OUTPUT_1D_T, ROW_OUT(part, i), VECTOR_ITEMS(o));
#pragma unroll
        for (int j = 0; j < IN_TILE; ++j)
            STOREV(o[j], 0, tile + (i * IN_TILE + j) * TILES * K_ALLOC);
    }
}
#endif

#if defined(WINOGRAD_WEIGHT_GEMM)
#define FILTERS_PER_ITEM (VECTOR_WIDTH * FILTER_VECTORS)
__kernel void KERNEL_NAME(__global const float *restrict v, __global const float *restrict dm,
                          __global float *restrict du, const int batch)
{
    const int kt = get_global_id(0);
    const int ct = get_global_id(1);
    const int split = get_global_id(2) / POSITIONS;
    const int t = get_global_id(2) % POSITIONS;
    if (kt >= K_ALLOC / FILTERS_PER_ITEM || ct >= IN_CHANNELS / CHANNEL_TILE) return;
    const int c0 = ct * CHANNEL_TILE;
    const int k0 = kt * FILTERS_PER_ITEM;
    const int first_image = split * IMAGES_PER_SPLIT;
    const int last_image = min(batch, first_image + IMAGES_PER_SPLIT);
    realV acc[CHANNEL_TILE][FILTER_VECTORS];
#pragma unroll
    for (int i = 0; i < CHANNEL_TILE; ++i)
#pragma unroll
        for (int f = 0; f < FILTER_VECTORS; ++f) acc[i][f] = (realV)(0.0f);
    for (int n = first_image; n < last_image; ++n) {
        __global const float *vt = v + (n * POSITIONS + t) * TILES * IN_CHANNELS + c0;
        __global const float *gt = dm + (n * POSITIONS + t) * TILES * K_ALLOC + k0;
        for (int p = 0; p < TILES; ++p) {
            realV g[FILTER_VECTORS];
#pragma unroll
            for (int f = 0; f < FILTER_VECTORS; ++f)
                g[f] = LOADV(0, gt + p * K_ALLOC + f * VECTOR_WIDTH);
#pragma unroll
            for (int i = 0; i < CHANNEL_TILE; ++i) {
                /* broadcast from memory, not from a vector load's lanes (see WINOGRAD_GEMM) */
                const realV vb = (realV)(vt[p * IN_CHANNELS + i]);
#pragma unroll
                for (int f = 0; f < FILTER_VECTORS; ++f) acc[i][f] = fma(vb, g[f], acc[i][f]);
            }
        }
    }
    __global float *out = du + ((split * POSITIONS + t) * IN_CHANNELS + c0) * K_ALLOC + k0;
#pragma unroll
    for (int i = 0; i < CHANNEL_TILE; ++i)
#pragma unroll
        for (int f = 0; f < FILTER_VECTORS; ++f)
            STOREV(acc[i][f], 0, out + i * K_ALLOC + f * VECTOR_WIDTH);
}
#undef FILTERS_PER_ITEM
#endif

#if defined(WINOGRAD_FILTER_GRAD)
__kernel void KERNEL_NAME(__global const float *restrict du, __global float *restrict dw)
{
    const int kv = get_global_id(0);
    const int c = get_global_id(1);
    const int split = get_global_id(2);
    if (kv >= K_ALLOC / VECTOR_WIDTH || c >= IN_CHANNELS) return;
    const int k = kv * VECTOR_WIDTH;
    __global const float *from = du + (split * POSITIONS * IN_CHANNELS + c) * K_ALLOC + k;
    realV u[IN_TILE][IN_TILE], part[3][IN_TILE], g[3][3];
#pragma unroll
    for (int i = 0; i < IN_TILE; ++i)
#pragma unroll
        for (int j = 0; j < IN_TILE; ++j)
            u[i][j] = LOADV(0, from + (i * IN_TILE + j) * IN_CHANNELS * K_ALLOC);
#pragma unroll
    for (int j = 0; j < IN_TILE; ++j) APPLY(FILTER_1D_T, COLUMN(u, j), FILTER_COLUMN(part, j));
#pragma unroll
    for (int r = 0; r < 3; ++r) APPLY(FILTER_1D_T, ROW(part, r), FILTER_ROW(g, r));
    __global float *to = dw + (split * 9 * IN_CHANNELS + c) * K_ALLOC + k;
#pragma unroll
    for (int r = 0; r < 3; ++r)
#pragma unroll
        for (int s = 0; s < 3; ++s) STOREV(g[r][s], 0, to + (r * 3 + s) * IN_CHANNELS * K_ALLOC);
}
#endif
