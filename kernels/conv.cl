/* conv.cl -- 2-D convolution: forward, and the gradients of its input and of its weights.
 *
 * Data layout (NHWC, see common.cl):
 *   x  (N, X_ALLOC_H, X_ALLOC_W, X_STRIDE_C), a zero halo of at least the padding around each image
 *   w  (GROUPS, KERNEL_H, KERNEL_W, C_PER_GROUP, K_ALLOC / GROUPS): a run of VECTOR_WIDTH filters
 *      is one contiguous load (the host re-lays PyTorch's (K, C/groups, kh, kw) weights)
 *   b  (K_ALLOC), zero beyond FILTERS
 *   y  (N, Y_ALLOC_H, Y_ALLOC_W, Y_STRIDE_C)
 *
 * An implicit GEMM with register tiles: work-item (kt, pt, n * ROW_BLOCKS + rb) computes
 * TILE_PIXELS consecutive output pixels of each of TILE_ROWS rows from rb * TILE_ROWS (each
 * weight vector loaded serves TILE_ROWS x TILE_PIXELS fmas; the last row tile of an odd OUT_H
 * clamps its reads and skips its stores) times FILTER_VECTORS vectors of VECTOR_WIDTH output
 * channels starting at kt * VECTOR_WIDTH * FILTER_VECTORS, reducing over (r, s, c) in registers,
 * CHANNEL_STEP input channels per step. Each input value is broadcast straight from memory
 * ((realV)(x[i]): a load-port broadcast, or an fma's {1to16} operand) and serves FILTER_VECTORS
 * fmas: a vector load of CHANNEL_STEP inputs broadcast lane by lane became one register shuffle
 * per input (vpermps, vbroadcastss from a register) on the port that also runs the second
 * 512-bit fma of an Intel core, plus spills. No local memory and no barriers: on a CPU (PoCL) wide
 * vectors and register tiles win; a GPU gets its own tile sizes. The tile sizes are chosen per
 * layer and device by `convgraph tune` (codegen/tuning.py), else from the device profile.
 * Reads never leave the halo, so the inner loop has no bounds checks; the last pixel tile of a row
 * clamps its reads and skips its stores past OUT_W.
 * With POOL_MAX (inference: a 2x2 stride-2 max pool after the layer, folded into it), y is the
 *   pool's output (N, POOL_OUT_H, POOL_OUT_W): work-item (kt, pt, n * POOL_OUT_H + ph) computes
 *   TILE_PIXELS / 4 whole 2x2 windows of pooled row ph (conv rows 2 ph and 2 ph + 1; pixel p is
 *   window p / 4, its row (p % 4) / 2 and column p % 2) and stores only their maxima: with
 *   POOL_FIRST (an activation that never decreases) max first then one activation, else each
 *   pixel activated first. The pixels differ only in where their windows start, so the
 *   reduction is the same code.
 * With RESIDUAL (inference: a sum after the layer folded into it, the add of a residual block)
 *   the kernel takes r (N, R_ALLOC_H, R_ALLOC_W, R_STRIDE_C), the sum's other input (its own
 *   halo), and adds it at each output pixel before the activation (then the one after the
 *   sum): y = f(conv + b + r).
 *
 * For stride 1, dx is itself a convolution of dy (zero halo as wide as the kernel less the
 *   padding) with the weights flipped in space and filters and channels swapped: CONV_FORWARD
 *   computes it from weights that CONV_TRANSPOSE_WEIGHTS lays out, work-item (filter, channel,
 *   group * taps + tap) each. It has no bias, so with GATE (an activation fused into the layer
 *   before) b is that activation's output and dx leaves already differentiated through it,
 *   dL/dz = f'(y) dL/dy, one pass over the tensor fewer.
 * CONV_BACKWARD_DATA: dx = the transposed convolution of dy. Work-item (ct, pt, n * IN_H + ih)
 *   computes dx for TILE_PIXELS input pixels of row ih, STRIDE_W apart (one stride phase), times
 *   CHANNEL_TILE input channels, keeping
 *   VECTOR_WIDTH-wide partial sums over filters (contiguous in both dy and w, so the forward
 *   weight layout serves) and reducing them at the end. Taps that fall between strides or outside
 *   dy are masked. ACCUMULATE adds to dx (a tensor read by several layers) instead of writing it.
 * CONV_BACKWARD_WEIGHTS: dw = sum over images and output pixels of x (window) * dy. Work-item
 *   (kt, ct, split * TAP_GROUPS + (r * KERNEL_W + s) / TAP_COLUMNS) computes CHANNEL_TILE input
 *   channels times FILTER_VECTORS vectors of VECTOR_WIDTH filters of TAP_COLUMNS taps of row r
 *   (from column s) over IMAGES_PER_SPLIT images (each input loaded serves FILTER_VECTORS vector
 *   fmas, each gradient vector TAP_COLUMNS x CHANNEL_TILE), into that split's partial weights
 *   (the work-items of one split share images, which stay in cache); x reads stay inside the
 *   halo, as in the forward pass. The batch is an argument.
 * CONV_BACKWARD_WEIGHTS_TAPS: the same for layers with few input channels (the first layer):
 *   work-item (kt, c * ROW_GROUPS + rg, split) computes TAP_ROWS kernel rows (all their taps) of
 *   one input channel times FILTER_VECTORS vectors of filters, so each gradient vector it loads
 *   serves TAP_ROWS * KERNEL_W fmas and each input FILTER_VECTORS.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME conv_forward
#define CONV_FORWARD 1
#define IN_H 8
#define IN_W 8
#define CHANNEL_TILE 4
#define CHANNEL_STEP 4
#define FILTER_VECTORS 1
#define IMAGES_PER_SPLIT 2
#define TAP_ROWS 1
#define ACCUMULATE 0
#define IN_CHANNELS 8
#define FILTERS 16
#define GROUPS 1
#define KERNEL_H 3
#define KERNEL_W 3
#define STRIDE_H 1
#define STRIDE_W 1
#define DILATION_H 1
#define DILATION_W 1
#define PAD_TOP 1
#define PAD_LEFT 1
#define OUT_H 8
#define OUT_W 8
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
#define K_ALLOC 16
#define VECTOR_WIDTH 16
#define TILE_PIXELS 8
#define HAS_BIAS 1
#define EPILOGUE ACT_RELU
#define EPILOGUE_SLOPE 0.0f
#define GATE ACT_NONE
#define GATE_SLOPE 0.0f
#endif
#ifndef RESIDUAL /* no sum folded in (else r, laid out by R_ALLOC_H ... R_STRIDE_C, is added) */
#define RESIDUAL 0
#endif
#ifndef POOL_MAX /* no pool folded in; the pooled sizes of OUT_H x OUT_W if one were */
#define POOL_MAX 0
#define POOL_OUT_H 4
#define POOL_OUT_W 4
#define POOL_FIRST 1
#endif

/* derived values */
#define C_PER_GROUP (IN_CHANNELS / GROUPS)
#define K_PER_GROUP (K_ALLOC / GROUPS)
#define K_TILES (K_ALLOC / VECTOR_WIDTH)
#define PIXEL_TILES ((OUT_W + TILE_PIXELS - 1) / TILE_PIXELS)
#if POOL_MAX /* rows of y per image, work-items per row, and pixel p's conv row and column */
#define POOL_WINDOWS (TILE_PIXELS / 4)
#define Y_ROWS POOL_OUT_H
#define ROW_TILES ((POOL_OUT_W + POOL_WINDOWS - 1) / POOL_WINDOWS)
#define PIXEL_ROW(oh, p) (2 * (oh) + ((p) % 4) / 2)
#define PIXEL_COLUMN(pt, p) (2 * min((pt) * POOL_WINDOWS + (p) / 4, POOL_OUT_W - 1) + (p) % 2)
#else
#define Y_ROWS OUT_H
#define ROW_TILES PIXEL_TILES
#define PIXEL_ROW(oh, p) (oh)
#define PIXEL_COLUMN(pt, p) min((pt) * TILE_PIXELS + (p), OUT_W - 1)
#endif
#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)
#define HSUM CONCAT(hsum, VECTOR_WIDTH)
#ifndef TILE_ROWS /* output rows per work-item (forward) */
#define TILE_ROWS 1
#endif
#define ROW_BLOCKS ((Y_ROWS + TILE_ROWS - 1) / TILE_ROWS)

#if defined(CONV_FORWARD)
/* FILTER_VECTORS vectors of filters per work-item: TILE_ROWS x TILE_PIXELS x FILTER_VECTORS
 * accumulators, each input value loaded once serves FILTER_VECTORS vector fmas */
#define FILTERS_PER_ITEM (VECTOR_WIDTH * FILTER_VECTORS)
#if POOL_MAX && TILE_ROWS != 1
#error "a pooled forward computes one row of 2x2 windows per work-item: TILE_ROWS 1"
#endif
#if POOL_MAX && RESIDUAL
#error "a sum and a pool are never folded into one conv"
#endif
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict w,
                          __global const float *restrict b, __global float *restrict y
#if RESIDUAL
                          , __global const float *restrict r
#endif
                          )
{
    const int kt = get_global_id(0);
    const int pt = get_global_id(1);
    const int row = get_global_id(2);
    if (kt >= K_ALLOC / FILTERS_PER_ITEM || pt >= ROW_TILES) return; /* sizes rounded up */
    const int n = row / ROW_BLOCKS;
    const int first_row = (row % ROW_BLOCKS) * TILE_ROWS;
    const int k0 = kt * FILTERS_PER_ITEM;
    const int group = k0 / K_PER_GROUP; /* FILTERS_PER_ITEM divides K_PER_GROUP */
    const int first_pixel = pt * TILE_PIXELS;

    /* where each pixel's window starts in x (top-left tap, first channel of the group), in the
     * tile's first row; row t's are row_offset[t] further (one offset a row: a window per pixel
     * and row became TILE_ROWS x TILE_PIXELS pointers, spilled). The last row tile of an odd
     * OUT_H clamps its reads to the last row and skips its stores. */
    int window[TILE_PIXELS];
#pragma unroll
    for (int p = 0; p < TILE_PIXELS; ++p) {
        window[p] = AT(X, n, PIXEL_ROW(first_row, p) * STRIDE_H - PAD_TOP,
                       PIXEL_COLUMN(pt, p) * STRIDE_W - PAD_LEFT, group * C_PER_GROUP);
    }
    int row_offset[TILE_ROWS];
#pragma unroll
    for (int t = 0; t < TILE_ROWS; ++t)
        row_offset[t] = (min(first_row + t, Y_ROWS - 1) - first_row) * STRIDE_H * X_ALLOC_W
                        * X_STRIDE_C;
    __global const float *filters = w + group * (KERNEL_H * KERNEL_W * C_PER_GROUP * K_PER_GROUP)
                                    + (k0 - group * K_PER_GROUP);

    realV acc[TILE_ROWS][TILE_PIXELS][FILTER_VECTORS];
#pragma unroll
    for (int t = 0; t < TILE_ROWS; ++t)
#pragma unroll
        for (int p = 0; p < TILE_PIXELS; ++p)
#pragma unroll
            for (int f = 0; f < FILTER_VECTORS; ++f) acc[t][p][f] = (realV)(0.0f);

    for (int r = 0; r < KERNEL_H; ++r) {
        for (int s = 0; s < KERNEL_W; ++s) {
            const int tap = (r * DILATION_H * X_ALLOC_W + s * DILATION_W) * X_STRIDE_C;
            __global const float *wrs = filters + (r * KERNEL_W + s) * C_PER_GROUP * K_PER_GROUP;
            /* CHANNEL_STEP channels at a time: one vector load per pixel serves that many fmas */
            for (int c = 0; c < C_PER_GROUP; c += CHANNEL_STEP) {
                realV wv[CHANNEL_STEP][FILTER_VECTORS];
#pragma unroll
                for (int j = 0; j < CHANNEL_STEP; ++j)
#pragma unroll
                    for (int f = 0; f < FILTER_VECTORS; ++f)
                        wv[j][f] = LOADV(0, wrs + (c + j) * K_PER_GROUP + f * VECTOR_WIDTH);
                /* each weight vector loaded serves TILE_ROWS x TILE_PIXELS fmas */
#pragma unroll
                for (int t = 0; t < TILE_ROWS; ++t) {
#pragma unroll
                    for (int p = 0; p < TILE_PIXELS; ++p) {
                        __global const float *xp = x + window[p] + row_offset[t] + tap + c;
#pragma unroll
                        for (int j = 0; j < CHANNEL_STEP; ++j) {
                            const realV xb = (realV)(xp[j]); /* a broadcast load (see the top) */
#pragma unroll
                            for (int f = 0; f < FILTER_VECTORS; ++f)
                                acc[t][p][f] = fma(xb, wv[j][f], acc[t][p][f]);
                        }
                    }
                }
            }
        }
    }

#if POOL_MAX /* y: the pool's output; window q is pixels 4q .. 4q + 3 */
#pragma unroll
    for (int f = 0; f < FILTER_VECTORS; ++f) {
#if HAS_BIAS
        const realV bias = LOADV(0, b + k0 + f * VECTOR_WIDTH);
#else
        const realV bias = (realV)(0.0f);
#endif
#pragma unroll
        for (int q = 0; q < POOL_WINDOWS; ++q) {
            const int pw = pt * POOL_WINDOWS + q;
            if (pw < POOL_OUT_W) {
                const realV v = POOLED_MAX(acc[0][4 * q][f] + bias, acc[0][4 * q + 1][f] + bias,
                                           acc[0][4 * q + 2][f] + bias,
                                           acc[0][4 * q + 3][f] + bias, EPILOGUE,
                                           EPILOGUE_SLOPE, POOL_FIRST);
                STOREV(v, 0, y + AT(Y, n, first_row, pw, k0 + f * VECTOR_WIDTH));
            }
        }
    }
#else
#pragma unroll
    for (int f = 0; f < FILTER_VECTORS; ++f) {
#if HAS_BIAS
        const realV bias = LOADV(0, b + k0 + f * VECTOR_WIDTH);
#else
        const realV bias = (realV)(0.0f);
#endif
#pragma unroll
        for (int t = 0; t < TILE_ROWS; ++t)
#pragma unroll
        for (int p = 0; p < TILE_PIXELS; ++p) {
            if (first_row + t < OUT_H && first_pixel + p < OUT_W) {
                const int at = AT(Y, n, first_row + t, first_pixel + p, k0 + f * VECTOR_WIDTH);
#if RESIDUAL /* the sum's other input, at the same pixel */
                realV v = ACTIVATE(acc[t][p][f] + bias + LOADV(0, r + AT(R, n, first_row + t,
                                   first_pixel + p, k0 + f * VECTOR_WIDTH)),
                                   EPILOGUE, EPILOGUE_SLOPE);
#else
                realV v = ACTIVATE(acc[t][p][f] + bias, EPILOGUE, EPILOGUE_SLOPE);
#endif
#if defined(GATE) && GATE != ACT_NONE /* b: the layer before's activation output */
                v = ACTIVATE_BACKWARD(LOADV(0, b + at), v, GATE, GATE_SLOPE);
#endif
#if ACCUMULATE /* as the gradient of a stride-1 conv's input: dx += ... */
                v += LOADV(0, y + at);
#endif
                STOREV(v, 0, y + at);
            }
        }
    }
#endif
}
#endif

#if defined(CONV_BACKWARD_DATA)
/* Pixels by stride phase: a work-item's TILE_PIXELS input pixels of row ih are STRIDE_W apart
 * (iw = phase, phase + STRIDE_W, ...), so the same kernel columns reach all of them and the
 * others are skipped whole, not masked: a 3x3 stride-2 layer did 2x, a 1x1 stride-2 projection
 * 4x, the useful work when neighbouring pixels were tiled together. */
#define PHASE_PIXELS ((IN_W + STRIDE_W - 1) / STRIDE_W)
#define PHASE_TILES ((PHASE_PIXELS + TILE_PIXELS - 1) / TILE_PIXELS)
#define PIXEL(p) (first + (p) * STRIDE_W)
__kernel void KERNEL_NAME(__global const float *restrict dy, __global const float *restrict w,
                          __global float *restrict dx)
{
    const int ct = get_global_id(0);
    const int pt = get_global_id(1);
    const int row = get_global_id(2);
    if (ct >= IN_CHANNELS / CHANNEL_TILE || pt >= STRIDE_W * PHASE_TILES) return;
    const int n = row / IN_H;
    const int ih = row % IN_H;
    const int c0 = ct * CHANNEL_TILE;
    const int group = c0 / C_PER_GROUP; /* CHANNEL_TILE divides C_PER_GROUP */
    const int phase = pt % STRIDE_W;
    const int first = phase + STRIDE_W * (pt / STRIDE_W) * TILE_PIXELS;
    __global const float *filters = w + group * (KERNEL_H * KERNEL_W * C_PER_GROUP * K_PER_GROUP);
    const int k_base = group * K_PER_GROUP;

    realV acc[TILE_PIXELS][CHANNEL_TILE];
#pragma unroll
    for (int p = 0; p < TILE_PIXELS; ++p)
#pragma unroll
        for (int i = 0; i < CHANNEL_TILE; ++i) acc[p][i] = (realV)(0.0f);

    for (int r = 0; r < KERNEL_H; ++r) {
        const int oh_scaled = ih + PAD_TOP - r * DILATION_H;
        if (oh_scaled < 0 || oh_scaled % STRIDE_H != 0 || oh_scaled / STRIDE_H >= OUT_H) continue;
        const int oh = oh_scaled / STRIDE_H;
        for (int s = 0; s < KERNEL_W; ++s) {
            const int shift = phase + PAD_LEFT - s * DILATION_W;
            if ((shift % STRIDE_W + STRIDE_W) % STRIDE_W != 0) continue; /* misses this phase */
            int at[TILE_PIXELS];
            float keep[TILE_PIXELS];
#pragma unroll
            for (int p = 0; p < TILE_PIXELS; ++p) {
                const int ow_scaled = PIXEL(p) + PAD_LEFT - s * DILATION_W; /* STRIDE_W divides */
                const int ok = ow_scaled >= 0 && ow_scaled / STRIDE_W < OUT_W && PIXEL(p) < IN_W;
                at[p] = ok ? AT(Y, n, oh, ow_scaled / STRIDE_W, k_base) : AT(Y, n, oh, 0, k_base);
                keep[p] = ok ? 1.0f : 0.0f;
            }
            __global const float *wrs = filters + (r * KERNEL_W + s) * C_PER_GROUP * K_PER_GROUP
                                        + (c0 - group * C_PER_GROUP) * K_PER_GROUP;
            for (int k = 0; k < K_PER_GROUP; k += VECTOR_WIDTH) {
                realV g[TILE_PIXELS];
#pragma unroll
                for (int p = 0; p < TILE_PIXELS; ++p) g[p] = LOADV(0, dy + at[p] + k) * keep[p];
#pragma unroll
                for (int i = 0; i < CHANNEL_TILE; ++i) {
                    const realV wv = LOADV(0, wrs + i * K_PER_GROUP + k);
#pragma unroll
                    for (int p = 0; p < TILE_PIXELS; ++p) acc[p][i] = fma(g[p], wv, acc[p][i]);
                }
            }
        }
    }
#pragma unroll
    for (int p = 0; p < TILE_PIXELS; ++p) {
        if (PIXEL(p) >= IN_W) continue;
        __global float *out = dx + AT(X, n, ih, PIXEL(p), c0);
#pragma unroll
        for (int i = 0; i < CHANNEL_TILE; ++i)
            out[i] = (ACCUMULATE ? out[i] : 0.0f) + HSUM(acc[p][i]);
    }
}
#undef PIXEL
#endif

#if defined(CONV_BACKWARD_DATA_CHANNELS)
/* The same stride phases with the forward kernel's inner loop: work-item (ct, pt, n * IN_H + ih)
 * computes TILE_PIXELS input pixels of one phase (STRIDE_W apart) times FILTER_VECTORS vectors of
 * VECTOR_WIDTH input channels from c0 = ct * VECTOR_WIDTH * FILTER_VECTORS. Each dy value is
 * broadcast against a vector of channels of wt (GROUPS = 1, KERNEL_H, KERNEL_W, FILTERS,
 * TRANSPOSED_ALLOC), the weights as CONV_TRANSPOSE_WEIGHTS lays them out (flipped in space), so
 * there is no horizontal sum at the end; each gradient is broadcast from memory, as in the
 * forward kernel (a tile at a row's edge masks its gradients, a slower body of its own). The
 * filter-vector body above spent 4-8 loads per 16 fmas and reduced every accumulator across
 * its lanes (a 1x1 stride-2 projection ran at 2% of the FMA peak). Padding channels of dx get
 * the zero rows of wt. */
#define CHANNELS_PER_ITEM (VECTOR_WIDTH * FILTER_VECTORS)
#define PHASE_PIXELS ((IN_W + STRIDE_W - 1) / STRIDE_W)
#define PHASE_TILES ((PHASE_PIXELS + TILE_PIXELS - 1) / TILE_PIXELS)
#define PIXEL(p) (first + (p) * STRIDE_W)
/* one tap: acc[p][f] += dy(pixel p's gradient, k + j) wt(k + j, vector f) for every k, the
 * gradient GRADIENT (gp[j], the value at dy + at[p] + k + j, or it masked) broadcast */
#define GRADIENT_TAP(GRADIENT)                                                                 \
    for (int k = 0; k < FILTERS; k += CHANNEL_STEP) {                                          \
        realV wv[CHANNEL_STEP][FILTER_VECTORS];                                                \
        _Pragma("unroll") for (int j = 0; j < CHANNEL_STEP; ++j)                               \
        _Pragma("unroll") for (int f = 0; f < FILTER_VECTORS; ++f)                             \
            wv[j][f] = LOADV(0, wrs + (k + j) * TRANSPOSED_ALLOC + f * VECTOR_WIDTH);          \
        _Pragma("unroll") for (int p = 0; p < TILE_PIXELS; ++p) {                              \
            __global const float *gp = dy + at[p] + k;                                         \
            _Pragma("unroll") for (int j = 0; j < CHANNEL_STEP; ++j) {                         \
                const realV gb = (realV)(GRADIENT);                                            \
                _Pragma("unroll") for (int f = 0; f < FILTER_VECTORS; ++f)                     \
                    acc[p][f] = fma(gb, wv[j][f], acc[p][f]);                                  \
            }                                                                                  \
        }                                                                                      \
    }
__kernel void KERNEL_NAME(__global const float *restrict dy, __global const float *restrict wt,
                          __global float *restrict dx)
{
    const int ct = get_global_id(0);
    const int pt = get_global_id(1);
    const int row = get_global_id(2);
    if (ct >= TRANSPOSED_ALLOC / CHANNELS_PER_ITEM || pt >= STRIDE_W * PHASE_TILES) return;
    const int n = row / IN_H;
    const int ih = row % IN_H;
    const int c0 = ct * CHANNELS_PER_ITEM;
    const int phase = pt % STRIDE_W;
    const int first = phase + STRIDE_W * (pt / STRIDE_W) * TILE_PIXELS;

    realV acc[TILE_PIXELS][FILTER_VECTORS];
#pragma unroll
    for (int p = 0; p < TILE_PIXELS; ++p)
#pragma unroll
        for (int f = 0; f < FILTER_VECTORS; ++f) acc[p][f] = (realV)(0.0f);

    for (int r = 0; r < KERNEL_H; ++r) {
        const int oh_scaled = ih + PAD_TOP - r * DILATION_H;
        if (oh_scaled < 0 || oh_scaled % STRIDE_H != 0 || oh_scaled / STRIDE_H >= OUT_H) continue;
        const int oh = oh_scaled / STRIDE_H;
        for (int s = 0; s < KERNEL_W; ++s) {
            const int shift = phase + PAD_LEFT - s * DILATION_W;
            if ((shift % STRIDE_W + STRIDE_W) % STRIDE_W != 0) continue; /* misses this phase */
            int at[TILE_PIXELS];
            float keep[TILE_PIXELS];
            int whole = 1; /* every pixel of the tile reaches dy through this tap */
#pragma unroll
            for (int p = 0; p < TILE_PIXELS; ++p) {
                const int ow_scaled = PIXEL(p) + PAD_LEFT - s * DILATION_W; /* STRIDE_W divides */
                const int ok = ow_scaled >= 0 && ow_scaled / STRIDE_W < OUT_W && PIXEL(p) < IN_W;
                at[p] = ok ? AT(Y, n, oh, ow_scaled / STRIDE_W, 0) : AT(Y, n, oh, 0, 0);
                keep[p] = ok ? 1.0f : 0.0f;
                whole &= ok;
            }
            const int flipped = (KERNEL_H - 1 - r) * KERNEL_W + (KERNEL_W - 1 - s);
            __global const float *wrs = wt + flipped * FILTERS * TRANSPOSED_ALLOC + c0;
            /* the masked body multiplies each gradient by keep, and a broadcast of that
             * product is a register shuffle (port 5, the fmas' second port): only the tiles at
             * a row's edges take it */
            if (whole) {
                GRADIENT_TAP(gp[j])
            } else {
                GRADIENT_TAP(gp[j] * keep[p])
            }
        }
    }
#pragma unroll
    for (int p = 0; p < TILE_PIXELS; ++p) {
        if (PIXEL(p) >= IN_W) continue;
#pragma unroll
        for (int f = 0; f < FILTER_VECTORS; ++f) {
            __global float *out = dx + AT(X, n, ih, PIXEL(p), c0 + f * VECTOR_WIDTH);
            realV v = acc[p][f];
#if ACCUMULATE
            v += LOADV(0, out);
#endif
            STOREV(v, 0, out);
        }
    }
}
#undef PIXEL
#undef GRADIENT_TAP
#endif

#if defined(CONV_BACKWARD_WEIGHTS)
#ifndef TAP_COLUMNS /* taps of one kernel row per work-item: 1, or KERNEL_W (a deconv's default) */
#define TAP_COLUMNS 1
#endif
#define TAP_GROUPS (KERNEL_H * KERNEL_W / TAP_COLUMNS)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global float *restrict dw, const int batch)
{
    const int kt = get_global_id(0);
    const int ct = get_global_id(1);
    const int tap = get_global_id(2) % TAP_GROUPS * TAP_COLUMNS; /* the first of its taps */
    const int split = get_global_id(2) / TAP_GROUPS;
    if (kt >= K_TILES / FILTER_VECTORS || ct >= IN_CHANNELS / CHANNEL_TILE) return;
    const int first_image = split * IMAGES_PER_SPLIT;
    const int last_image = min(batch, first_image + IMAGES_PER_SPLIT);
    const int r = tap / KERNEL_W;
    const int s = tap % KERNEL_W;
    const int k0 = kt * VECTOR_WIDTH * FILTER_VECTORS; /* FILTER_VECTORS divides a group's */
    const int group = k0 / K_PER_GROUP;
    const int c0 = ct * CHANNEL_TILE;
#if GROUPS > 1
    if (c0 / C_PER_GROUP != group) return; /* no weight joins filters and channels of two groups */
#endif
    /* a GEMM over output pixels: each step loads FILTER_VECTORS vectors of gradients, which
     * serve TAP_COLUMNS x CHANNEL_TILE inputs, each broadcast straight from memory (a load port;
     * a vector load split into lanes took a shuffle per lane, on the FMA's port 5), for
     * TAP_COLUMNS x CHANNEL_TILE x FILTER_VECTORS vector fmas; the taps of a row re-read the
     * same inputs one pixel apart, from cache */
    realV acc[TAP_COLUMNS][CHANNEL_TILE][FILTER_VECTORS];
#pragma unroll
    for (int t = 0; t < TAP_COLUMNS; ++t)
#pragma unroll
        for (int i = 0; i < CHANNEL_TILE; ++i)
#pragma unroll
            for (int f = 0; f < FILTER_VECTORS; ++f) acc[t][i][f] = (realV)(0.0f);
    for (int n = first_image; n < last_image; ++n) {
        for (int oh = 0; oh < OUT_H; ++oh) {
            const int ih = oh * STRIDE_H - PAD_TOP + r * DILATION_H;
            __global const float *xrow = x + AT(X, n, ih, s * DILATION_W - PAD_LEFT, c0);
            __global const float *grow = dy + AT(Y, n, oh, 0, k0);
            for (int ow = 0; ow < OUT_W; ++ow) {
                realV g[FILTER_VECTORS];
#pragma unroll
                for (int f = 0; f < FILTER_VECTORS; ++f)
                    g[f] = LOADV(0, grow + ow * Y_STRIDE_C + f * VECTOR_WIDTH);
                __global const float *xp = xrow + ow * STRIDE_W * X_STRIDE_C;
#pragma unroll
                for (int t = 0; t < TAP_COLUMNS; ++t)
#pragma unroll
                    for (int i = 0; i < CHANNEL_TILE; ++i) {
                        const realV xb = (realV)(xp[t * DILATION_W * X_STRIDE_C + i]);
#pragma unroll
                        for (int f = 0; f < FILTER_VECTORS; ++f)
                            acc[t][i][f] = fma(xb, g[f], acc[t][i][f]);
                    }
            }
        }
    }
    /* each split of the batch writes its own partial sums; SUM_SPLITS adds them up */
    __global float *out = dw + split * (GROUPS * KERNEL_H * KERNEL_W * C_PER_GROUP * K_PER_GROUP)
                          + group * (KERNEL_H * KERNEL_W * C_PER_GROUP * K_PER_GROUP)
                          + (tap * C_PER_GROUP + (c0 - group * C_PER_GROUP)) * K_PER_GROUP
                          + (k0 - group * K_PER_GROUP);
#pragma unroll
    for (int t = 0; t < TAP_COLUMNS; ++t)
#pragma unroll
        for (int i = 0; i < CHANNEL_TILE; ++i)
#pragma unroll
            for (int f = 0; f < FILTER_VECTORS; ++f)
                STOREV(acc[t][i][f], 0, out + (t * C_PER_GROUP + i) * K_PER_GROUP
                                            + f * VECTOR_WIDTH);
}
#endif

#if defined(CONV_BACKWARD_WEIGHTS_TAPS)
/* FILTER_VECTORS vectors of filters per work-item: each input value loaded serves that many
 * vector fmas (with one, a first layer's weight gradient did one load per fma) */
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global float *restrict dw, const int batch)
{
    const int kt = get_global_id(0);
    const int c = get_global_id(1) / (KERNEL_H / TAP_ROWS);
    const int r0 = get_global_id(1) % (KERNEL_H / TAP_ROWS) * TAP_ROWS;
    const int split = get_global_id(2);
    if (kt >= K_TILES / FILTER_VECTORS || c >= IN_CHANNELS) return;
    const int k0 = kt * VECTOR_WIDTH * FILTER_VECTORS; /* FILTER_VECTORS divides a group's */
    const int group = k0 / K_PER_GROUP;
#if GROUPS > 1
    if (c / C_PER_GROUP != group) return;
#endif
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
                x + AT(X, n, oh * STRIDE_H - PAD_TOP + r0 * DILATION_H, -PAD_LEFT, c);
            __global const float *grow = dy + AT(Y, n, oh, 0, k0);
            for (int ow = 0; ow < OUT_W; ++ow) {
                realV g[FILTER_VECTORS];
#pragma unroll
                for (int f = 0; f < FILTER_VECTORS; ++f)
                    g[f] = LOADV(0, grow + ow * Y_STRIDE_C + f * VECTOR_WIDTH);
                __global const float *xp = xrow + ow * STRIDE_W * X_STRIDE_C;
#pragma unroll
                for (int r = 0; r < TAP_ROWS; ++r)
#pragma unroll
                    for (int s = 0; s < KERNEL_W; ++s) {
                        const realV xv = (realV)(
                            xp[(r * DILATION_H * X_ALLOC_W + s * DILATION_W) * X_STRIDE_C]);
#pragma unroll
                        for (int f = 0; f < FILTER_VECTORS; ++f)
                            acc[r * KERNEL_W + s][f] = fma(xv, g[f], acc[r * KERNEL_W + s][f]);
                    }
            }
        }
    }
    __global float *out = dw + split * (GROUPS * KERNEL_H * KERNEL_W * C_PER_GROUP * K_PER_GROUP)
                          + group * (KERNEL_H * KERNEL_W * C_PER_GROUP * K_PER_GROUP)
                          + (r0 * KERNEL_W * C_PER_GROUP + c - group * C_PER_GROUP) * K_PER_GROUP
                          + (k0 - group * K_PER_GROUP);
#pragma unroll
    for (int t = 0; t < TAP_ROWS * KERNEL_W; ++t)
#pragma unroll
        for (int f = 0; f < FILTER_VECTORS; ++f)
            STOREV(acc[t][f], 0, out + t * C_PER_GROUP * K_PER_GROUP + f * VECTOR_WIDTH);
}
#endif

#if defined(CONV_TRANSPOSE_WEIGHTS)
/* w (GROUPS, KERNEL_H, KERNEL_W, C_PER_GROUP, K_PER_GROUP) -> wt (GROUPS, KERNEL_H, KERNEL_W,
 * FILTERS / GROUPS, TRANSPOSED_ALLOC / GROUPS), flipped in space; padding entries stay zero */
__kernel void KERNEL_NAME(__global const float *restrict w, __global float *restrict wt)
{
    const int kk = get_global_id(0);
    const int c = get_global_id(1);
    const int g = get_global_id(2) / (KERNEL_H * KERNEL_W);
    const int tap = get_global_id(2) % (KERNEL_H * KERNEL_W);
    if (kk >= FILTERS / GROUPS || c >= C_PER_GROUP) return;
    const int flipped = (KERNEL_H - 1 - tap / KERNEL_W) * KERNEL_W + (KERNEL_W - 1 - tap % KERNEL_W);
    wt[((g * KERNEL_H * KERNEL_W + flipped) * (FILTERS / GROUPS) + kk) * (TRANSPOSED_ALLOC / GROUPS) + c] =
        w[((g * KERNEL_H * KERNEL_W + tap) * C_PER_GROUP + c) * K_PER_GROUP + kk];
}
#endif
