/* conv_planar.cl -- a first convolution (1-4 input channels, stride 1) that reads the network
 * input planar, as the user's (N, C, H, W) array already is, and its weight gradient.
 *
 * Data layout:
 *   x  (N, IN_CHANNELS, X_ALLOC_H, X_ALLOC_W): planar (codegen/layout.py PlanarLayout), a zero
 *      halo of at least the padding around each channel plane, its right side wide enough that
 *      every whole vector of VECTOR_WIDTH output pixels reads inside the row
 *   w  (KERNEL_H, KERNEL_W, IN_CHANNELS, K_ALLOC): the conv's usual relaid weights (conv.cl)
 *   b  (K_ALLOC), zero beyond FILTERS
 *   y  (N, Y_ALLOC_H, Y_ALLOC_W, Y_STRIDE_C): NHWC, as every other layer (common.cl's AT)
 *
 * CONV_PLANAR_FORWARD: vectors along the output row. Work-item (kt, pt, n * ROW_BLOCKS + rb)
 *   computes TILE_ROWS output rows from rb * TILE_ROWS times TILE_VECTORS vectors of
 *   VECTOR_WIDTH consecutive output pixels from pt * TILE_VECTORS * VECTOR_WIDTH times
 *   FILTERS_PER_ITEM filters from kt * FILTERS_PER_ITEM (all of a first layer's, so each input
 *   vector loaded serves FILTERS_PER_ITEM fmas and no lane is a padding channel or a padding
 *   filter). Each tap loads the input row with one unaligned vload at the tap's offset; each
 *   weight is broadcast straight from memory ((realV)(w[i])), a load-port broadcast or an
 *   fma's {1to16} operand: a register broadcast would take the port of the second 512-bit fma
 *   on an Intel core. The last vector of a row starts at the row's last whole vector (it
 *   computes some pixels twice and stores them once); the last row tile of an odd height
 *   clamps its reads and skips its stores. Lanes are pixels and y is NHWC, so the store is a
 *   transpose: with STORE_TRANSPOSED, blocks of VECTOR_WIDTH filters, biased and activated,
 *   are transposed in registers (4 butterfly stages of two-source permutes) and each pixel's
 *   block is one vector store; else each vector goes through a private tile and every pixel's
 *   filters are written as a run. The padding channels get ACTIVATE(0), as the direct kernel
 *   writes them, from the last filter group. With POOL_MAX (inference: a 2x2 stride-2 max pool
 *   folded in, TILE_ROWS 2), y is the pool's output: the two rows' max is taken in vectors,
 *   the two columns' after the transpose (or in the private tile), then the activation
 *   (POOL_FIRST) or each pixel's activation first.
 * CONV_PLANAR_BACKWARD_WEIGHTS: dw = sum over images and output pixels of x (window) * dy, as
 *   conv.cl's CONV_BACKWARD_WEIGHTS_TAPS, from the planar input: work-item (kt, c * ROW_GROUPS +
 *   rg, split) computes TAP_ROWS kernel rows (all their taps) of input channel c times
 *   FILTER_VECTORS vectors of VECTOR_WIDTH filters over IMAGES_PER_SPLIT images, into that
 *   split's partial weights; each gradient vector serves TAP_ROWS * KERNEL_W fmas, each input
 *   (broadcast from memory; consecutive pixels are consecutive floats here) FILTER_VECTORS.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME conv_planar_forward
#define CONV_PLANAR_FORWARD 1
#define IN_CHANNELS 3
#define FILTERS 12
#define KERNEL_H 3
#define KERNEL_W 3
#define DILATION_H 1
#define DILATION_W 1
#define PAD_TOP 1
#define PAD_LEFT 1
#define OUT_H 32
#define OUT_W 32
#define X_ALLOC_H 34
#define X_ALLOC_W 34
#define X_HALO_TOP 1
#define X_HALO_LEFT 1
#define Y_ALLOC_H 32
#define Y_ALLOC_W 32
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#define K_ALLOC 16
#define VECTOR_WIDTH 16
#define TILE_VECTORS 2
#define TILE_ROWS 1
#define FILTERS_PER_ITEM 12
#define HAS_BIAS 1
#define EPILOGUE ACT_RELU
#define EPILOGUE_SLOPE 0.0f
#define STRIDE_H 1
#define STRIDE_W 1
#define IN_H 32
#define IN_W 32
#define FILTER_VECTORS 1
#define IMAGES_PER_SPLIT 2
#define TAP_ROWS 3
#endif
#ifndef POOL_MAX /* no pool folded in; the pooled sizes of OUT_H x OUT_W if one were */
#define POOL_MAX 0
#define POOL_OUT_H 16
#define POOL_OUT_W 16
#define POOL_FIRST 1
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)
/* element (n, c, h, w) of the planar input, h and w counted from the halo's inside corner */
#define AT_PLANAR(n, c, h, w)                                                                  \
    ((((n) * IN_CHANNELS + (c)) * X_ALLOC_H + (h) + X_HALO_TOP) * X_ALLOC_W + (w) + X_HALO_LEFT)

#if defined(CONV_PLANAR_FORWARD)
#ifndef STORE_TRANSPOSED /* the NHWC store: 1 transposes blocks of VECTOR_WIDTH filters in
                          * registers, 0 goes through a private tile, pixel by pixel */
#define STORE_TRANSPOSED 0
#endif
/* One butterfly stage of a VECTOR_WIDTH x VECTOR_WIDTH transpose in registers: rows i and
 * i + S (i & S == 0) exchange their lanes j & S == S and j & S == 0 (S = 1, 2, 4 ... half the
 * width); after every stage m[p] holds lane p of every input row. Each is one two-source
 * permute (vpermt2ps, or a 128/256-bit lane move for the widest stages). */
#define TRANSPOSE_STAGE(m, S, LO, HI)                                                          \
    for (int i = 0; i < VECTOR_WIDTH; ++i) {                                                   \
        if (i & (S)) continue;                                                                 \
        const realV a = m[i], b = m[i + (S)];                                                  \
        m[i] = shuffle2(a, b, LO);                                                             \
        m[i + (S)] = shuffle2(a, b, HI);                                                       \
    }
#if VECTOR_WIDTH == 16
#define uintV uint16
__attribute__((always_inline)) inline void transpose_block(realV *m)
{
#pragma unroll
    TRANSPOSE_STAGE(m, 1, ((uint16)(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30)),
                    ((uint16)(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31)))
#pragma unroll
    TRANSPOSE_STAGE(m, 2, ((uint16)(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)),
                    ((uint16)(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31)))
#pragma unroll
    TRANSPOSE_STAGE(m, 4, ((uint16)(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27)),
                    ((uint16)(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31)))
#pragma unroll
    TRANSPOSE_STAGE(m, 8, ((uint16)(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)),
                    ((uint16)(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31)))
}
#elif VECTOR_WIDTH == 8
__attribute__((always_inline)) inline void transpose_block(realV *m)
{
#pragma unroll
    TRANSPOSE_STAGE(m, 1, ((uint8)(0, 8, 2, 10, 4, 12, 6, 14)), ((uint8)(1, 9, 3, 11, 5, 13, 7, 15)))
#pragma unroll
    TRANSPOSE_STAGE(m, 2, ((uint8)(0, 1, 8, 9, 4, 5, 12, 13)), ((uint8)(2, 3, 10, 11, 6, 7, 14, 15)))
#pragma unroll
    TRANSPOSE_STAGE(m, 4, ((uint8)(0, 1, 2, 3, 8, 9, 10, 11)), ((uint8)(4, 5, 6, 7, 12, 13, 14, 15)))
}
#elif STORE_TRANSPOSED
#error "the transposed store takes vectors of 8 or 16 pixels"
#endif
#define BLOCKS ((FILTERS_PER_ITEM + VECTOR_WIDTH - 1) / VECTOR_WIDTH) /* transposed blocks */
#define ROW_VECTORS ((OUT_W + VECTOR_WIDTH - 1) / VECTOR_WIDTH) /* vectors of a row */
#define PIXEL_TILES ((ROW_VECTORS + TILE_VECTORS - 1) / TILE_VECTORS)
#define LAST_VECTOR ((ROW_VECTORS - 1) * VECTOR_WIDTH) /* where a row's last vector starts */
#if POOL_MAX
#define Y_ROWS POOL_OUT_H
#if TILE_ROWS != 2
#error "a pooled planar forward computes both rows of its 2x2 windows: TILE_ROWS 2"
#endif
#else
#define Y_ROWS OUT_H
#endif
#define ROW_BLOCKS ((Y_ROWS + (POOL_MAX ? 1 : TILE_ROWS) - 1) / (POOL_MAX ? 1 : TILE_ROWS))
#define FILTER_GROUPS ((FILTERS + FILTERS_PER_ITEM - 1) / FILTERS_PER_ITEM)

__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict w,
                          __global const float *restrict b, __global float *restrict y)
{
    const int kt = get_global_id(0);
    const int pt = get_global_id(1);
    const int row = get_global_id(2);
    if (kt >= FILTER_GROUPS || pt >= PIXEL_TILES) return; /* sizes rounded up */
    const int n = row / ROW_BLOCKS;
    const int first_row = (row % ROW_BLOCKS) * TILE_ROWS; /* pooled: conv rows 2 ph, 2 ph + 1 */
    const int k0 = kt * FILTERS_PER_ITEM; /* the lowering keeps k0 + FILTERS_PER_ITEM <= K_ALLOC */
    const int conv_rows = POOL_MAX ? 2 * POOL_OUT_H : OUT_H;

    /* where each vector's pixels start in x (tap (0, 0), channel 0), in the tile's first row,
     * and each row's offset from it (the last row tile of an odd height re-reads its last row) */
    int start[TILE_VECTORS];
#pragma unroll
    for (int v = 0; v < TILE_VECTORS; ++v)
        start[v] = AT_PLANAR(n, 0, first_row - PAD_TOP,
                             min((pt * TILE_VECTORS + v) * VECTOR_WIDTH, LAST_VECTOR) - PAD_LEFT);
    int row_offset[TILE_ROWS];
#pragma unroll
    for (int t = 0; t < TILE_ROWS; ++t)
        row_offset[t] = (min(first_row + t, conv_rows - 1) - first_row) * X_ALLOC_W;
    __global const float *filters = w + k0;

    realV acc[TILE_ROWS][TILE_VECTORS][FILTERS_PER_ITEM];
#pragma unroll
    for (int t = 0; t < TILE_ROWS; ++t)
#pragma unroll
        for (int v = 0; v < TILE_VECTORS; ++v)
#pragma unroll
            for (int f = 0; f < FILTERS_PER_ITEM; ++f) acc[t][v][f] = (realV)(0.0f);

    for (int c = 0; c < IN_CHANNELS; ++c) {
        for (int r = 0; r < KERNEL_H; ++r) {
#pragma unroll
            for (int s = 0; s < KERNEL_W; ++s) {
                const int tap = (c * X_ALLOC_H + r * DILATION_H) * X_ALLOC_W + s * DILATION_W;
                __global const float *wrs = filters + ((r * KERNEL_W + s) * IN_CHANNELS + c)
                                                      * K_ALLOC;
                realV xv[TILE_ROWS][TILE_VECTORS];
#pragma unroll
                for (int t = 0; t < TILE_ROWS; ++t)
#pragma unroll
                    for (int v = 0; v < TILE_VECTORS; ++v)
                        xv[t][v] = LOADV(0, x + start[v] + row_offset[t] + tap);
                /* each weight broadcast from memory serves TILE_ROWS x TILE_VECTORS fmas */
#pragma unroll
                for (int f = 0; f < FILTERS_PER_ITEM; ++f) {
                    const realV wb = (realV)(wrs[f]);
#pragma unroll
                    for (int t = 0; t < TILE_ROWS; ++t)
#pragma unroll
                        for (int v = 0; v < TILE_VECTORS; ++v)
                            acc[t][v][f] = fma(xv[t][v], wb, acc[t][v][f]);
                }
            }
        }
    }

    /* the padding channels past FILTERS, written by the last filter group as the direct kernel
     * writes them (its zero weights and bias, activated) */
    const float padding = ACTIVATE(0.0f, EPILOGUE, EPILOGUE_SLOPE);
    const int last_group = kt == FILTER_GROUPS - 1;
#if STORE_TRANSPOSED
    /* blocks of VECTOR_WIDTH filters (rows past FILTERS_PER_ITEM zero, as a padding filter's
     * sums are) transposed in registers: then row p is pixel p's filters, one vector store; the
     * lowering offers this where a block never reaches past the group's channels (or the
     * padding, for the last group) */
#if POOL_MAX
    const int rows_out = 1;
#else
    const int rows_out = TILE_ROWS;
#endif
#pragma unroll
    for (int t = 0; t < rows_out; ++t) {
#pragma unroll
        for (int v = 0; v < TILE_VECTORS; ++v) {
            const int first_pixel = (pt * TILE_VECTORS + v) * VECTOR_WIDTH;
#pragma unroll
            for (int block = 0; block < BLOCKS; ++block) {
                realV m[VECTOR_WIDTH];
#pragma unroll
                for (int i = 0; i < VECTOR_WIDTH; ++i) {
                    const int f = block * VECTOR_WIDTH + i;
                    if (f >= FILTERS_PER_ITEM) {
                        m[i] = (realV)(0.0f);
                        continue;
                    }
#if HAS_BIAS
                    const realV bias = (realV)(b[min(k0 + f, K_ALLOC - 1)]);
#else
                    const realV bias = (realV)(0.0f);
#endif
#if POOL_MAX /* the rows' max (the activation first where it may decrease) */
                    const realV top = acc[0][v][f] + bias, bottom = acc[1][v][f] + bias;
                    m[i] = POOL_FIRST ? fmax(top, bottom)
                                      : fmax(ACTIVATE(top, EPILOGUE, EPILOGUE_SLOPE),
                                             ACTIVATE(bottom, EPILOGUE, EPILOGUE_SLOPE));
#else
                    m[i] = ACTIVATE(acc[t][v][f] + bias, EPILOGUE, EPILOGUE_SLOPE);
#endif
                }
#if !POOL_MAX
#pragma unroll
                for (int i = FILTERS_PER_ITEM - block * VECTOR_WIDTH; i < VECTOR_WIDTH; ++i)
                    m[i] = (realV)(padding); /* (past FILTERS_PER_ITEM: none if not positive) */
#endif
                transpose_block(m);
#if POOL_MAX /* pooled column pw from conv columns 2 pw, 2 pw + 1 (first_pixel is even) */
#pragma unroll
                for (int q = 0; q < VECTOR_WIDTH / 2; ++q) {
                    const int pw = first_pixel / 2 + q;
                    if (first_pixel < OUT_W && pw < POOL_OUT_W) {
                        const realV pooled = fmax(m[2 * q], m[2 * q + 1]);
                        STOREV(POOL_FIRST ? ACTIVATE(pooled, EPILOGUE, EPILOGUE_SLOPE) : pooled,
                               0, y + AT(Y, n, first_row / 2, pw, k0 + block * VECTOR_WIDTH));
                    }
                }
#else
                if (first_row + t < OUT_H) {
#pragma unroll
                    for (int p = 0; p < VECTOR_WIDTH; ++p)
                        if (first_pixel + p < OUT_W)
                            STOREV(m[p], 0, y + AT(Y, n, first_row + t, first_pixel + p,
                                                   k0 + block * VECTOR_WIDTH));
                }
#endif
            }
            /* padding channels past the blocks (the last group, where the blocks stop short) */
            if (last_group && k0 + BLOCKS * VECTOR_WIDTH < Y_STRIDE_C && first_pixel < OUT_W
                && (POOL_MAX || first_row + t < OUT_H)) {
                for (int p = 0; p < (POOL_MAX ? VECTOR_WIDTH / 2 : VECTOR_WIDTH); ++p) {
                    const int column = (POOL_MAX ? first_pixel / 2 : first_pixel) + p;
                    if (column >= (POOL_MAX ? POOL_OUT_W : OUT_W)) break;
                    __global float *out = y + AT(Y, n, POOL_MAX ? first_row / 2 : first_row + t,
                                                 column, 0);
                    for (int k = k0 + BLOCKS * VECTOR_WIDTH; k < Y_STRIDE_C; ++k) out[k] = padding;
                }
            }
        }
    }
#else /* through a private tile, pixel by pixel */
    float stage[FILTERS_PER_ITEM][VECTOR_WIDTH]; /* one vector's filters, pixel by pixel */
#if POOL_MAX
#pragma unroll
    for (int v = 0; v < TILE_VECTORS; ++v) {
        const int first_pixel = (pt * TILE_VECTORS + v) * VECTOR_WIDTH;
        const int pixel0 = min(first_pixel, LAST_VECTOR);
#pragma unroll
        for (int f = 0; f < FILTERS_PER_ITEM; ++f) {
#if HAS_BIAS
            const realV bias = (realV)(b[min(k0 + f, K_ALLOC - 1)]);
#else
            const realV bias = (realV)(0.0f);
#endif
            const realV top = acc[0][v][f] + bias, bottom = acc[1][v][f] + bias;
            /* the rows' max (the activation first where it may decrease) */
            STOREV(POOL_FIRST ? fmax(top, bottom)
                              : fmax(ACTIVATE(top, EPILOGUE, EPILOGUE_SLOPE),
                                     ACTIVATE(bottom, EPILOGUE, EPILOGUE_SLOPE)),
                   0, stage[f]);
        }
        /* pooled column pw from conv columns 2 pw, 2 pw + 1 (first_pixel is even) */
        for (int q = 0; q < VECTOR_WIDTH / 2; ++q) {
            const int pw = first_pixel / 2 + q;
            if (first_pixel < OUT_W && pw < POOL_OUT_W) {
                __global float *out = y + AT(Y, n, first_row / 2, pw, k0);
                const int lane = 2 * pw - pixel0;
#pragma unroll
                for (int f = 0; f < FILTERS_PER_ITEM; ++f) {
                    const float m = fmax(stage[f][lane], stage[f][lane + 1]);
                    if (k0 + f < FILTERS)
                        out[f] = POOL_FIRST ? ACTIVATE(m, EPILOGUE, EPILOGUE_SLOPE) : m;
                }
                if (last_group)
                    for (int k = FILTERS - k0; k < Y_STRIDE_C - k0; ++k) out[k] = padding;
            }
        }
    }
#else
#pragma unroll
    for (int t = 0; t < TILE_ROWS; ++t) {
#pragma unroll
        for (int v = 0; v < TILE_VECTORS; ++v) {
            const int first_pixel = (pt * TILE_VECTORS + v) * VECTOR_WIDTH;
            const int pixel0 = min(first_pixel, LAST_VECTOR);
#pragma unroll
            for (int f = 0; f < FILTERS_PER_ITEM; ++f) {
#if HAS_BIAS
                const realV bias = (realV)(b[min(k0 + f, K_ALLOC - 1)]);
#else
                const realV bias = (realV)(0.0f);
#endif
                STOREV(ACTIVATE(acc[t][v][f] + bias, EPILOGUE, EPILOGUE_SLOPE), 0, stage[f]);
            }
            if (first_row + t >= OUT_H || first_pixel >= OUT_W) continue;
            for (int p = first_pixel; p < min(first_pixel + VECTOR_WIDTH, OUT_W); ++p) {
                __global float *out = y + AT(Y, n, first_row + t, p, k0);
#pragma unroll
                for (int f = 0; f < FILTERS_PER_ITEM; ++f)
                    if (k0 + f < FILTERS) out[f] = stage[f][p - pixel0];
                if (last_group)
                    for (int k = FILTERS - k0; k < Y_STRIDE_C - k0; ++k) out[k] = padding;
            }
        }
    }
#endif
#endif /* STORE_TRANSPOSED */
}
#endif

#if defined(CONV_PLANAR_BACKWARD_WEIGHTS)
#define K_TILES (K_ALLOC / VECTOR_WIDTH)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global float *restrict dw, const int batch)
{
    const int kt = get_global_id(0);
    const int c = get_global_id(1) / (KERNEL_H / TAP_ROWS);
    const int r0 = get_global_id(1) % (KERNEL_H / TAP_ROWS) * TAP_ROWS;
    const int split = get_global_id(2);
    if (kt >= K_TILES / FILTER_VECTORS || c >= IN_CHANNELS) return;
    const int k0 = kt * VECTOR_WIDTH * FILTER_VECTORS;
    const int first_image = split * IMAGES_PER_SPLIT;
    const int last_image = min(batch, first_image + IMAGES_PER_SPLIT);
    realV acc[TAP_ROWS * KERNEL_W][FILTER_VECTORS];
#pragma unroll
    for (int t = 0; t < TAP_ROWS * KERNEL_W; ++t)
#pragma unroll
        for (int f = 0; f < FILTER_VECTORS; ++f) acc[t][f] = (realV)(0.0f);
    for (int n = first_image; n < last_image; ++n) {
        for (int oh = 0; oh < OUT_H; ++oh) {
            __global const float *xrow =
                x + AT_PLANAR(n, c, oh * STRIDE_H - PAD_TOP + r0 * DILATION_H, -PAD_LEFT);
            __global const float *grow = dy + AT(Y, n, oh, 0, k0);
            for (int ow = 0; ow < OUT_W; ++ow) {
                realV g[FILTER_VECTORS];
#pragma unroll
                for (int f = 0; f < FILTER_VECTORS; ++f)
                    g[f] = LOADV(0, grow + ow * Y_STRIDE_C + f * VECTOR_WIDTH);
                __global const float *xp = xrow + ow * STRIDE_W;
#pragma unroll
                for (int r = 0; r < TAP_ROWS; ++r)
#pragma unroll
                    for (int s = 0; s < KERNEL_W; ++s) {
                        const realV xv = (realV)(xp[r * DILATION_H * X_ALLOC_W + s * DILATION_W]);
#pragma unroll
                        for (int f = 0; f < FILTER_VECTORS; ++f)
                            acc[r * KERNEL_W + s][f] = fma(xv, g[f], acc[r * KERNEL_W + s][f]);
                    }
            }
        }
    }
    __global float *out = dw + split * (KERNEL_H * KERNEL_W * IN_CHANNELS * K_ALLOC)
                          + (r0 * KERNEL_W * IN_CHANNELS + c) * K_ALLOC + k0;
#pragma unroll
    for (int t = 0; t < TAP_ROWS * KERNEL_W; ++t)
#pragma unroll
        for (int f = 0; f < FILTER_VECTORS; ++f)
            STOREV(acc[t][f], 0, out + t * IN_CHANNELS * K_ALLOC + f * VECTOR_WIDTH);
}
#endif
