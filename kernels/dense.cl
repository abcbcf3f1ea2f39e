/* dense.cl -- fully connected layer (fc), forward.
 *
 * Data layout:
 *   x  the input volume (N, X_ALLOC_H, X_ALLOC_W, X_STRIDE_C), IN_H x IN_W x IN_CHANNELS used;
 *      a volume is flattened implicitly (no copy)
 *   w  (IN_H * IN_W * IN_CHANNELS, U_ALLOC), row (h * IN_W + w) * IN_CHANNELS + c: VECTOR_WIDTH
 *      units are one contiguous load (the host permutes PyTorch's (units, C*H*W) weights)
 *   b  (U_ALLOC), zero beyond UNITS
 *   y  (N, Y_ALLOC_H, Y_ALLOC_W, Y_STRIDE_C), a 1x1xUNITS volume
 *
 * DENSE_FORWARD: a GEMM with register tiles: work-item (ut, bt) computes TILE_ROWS images times
 * UNIT_VECTORS vectors of VECTOR_WIDTH units (each input value loaded serves UNIT_VECTORS vector
 * fmas, each weight vector TILE_ROWS), CHANNEL_STEP inputs per load. The batch size is a
 * run-time argument, so one build serves every batch up to the plan's; rows past it clamp their
 * reads and skip their stores.
 * DENSE_BACKWARD_DATA: dx = dy w^T. Work-item (it, bt) computes INPUT_TILE consecutive inputs (one
 *   pixel's channels) for TILE_ROWS images, with VECTOR_WIDTH-wide partial sums over units
 *   reduced at the end; dx is written in x's own layout (a volume, when the flatten was elided).
 * DENSE_BACKWARD_WEIGHTS: dw = x^T dy. Work-item (ut, it) computes INPUT_TILE rows of w times
 *   VECTOR_WIDTH units, summing over the batch.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME dense_forward
#define DENSE_FORWARD 1
#define INPUT_TILE 4
#define ACCUMULATE 0
#define IN_H 1
#define IN_W 1
#define IN_CHANNELS 64
#define UNITS 10
#define U_ALLOC 16
#define X_ALLOC_H 1
#define X_ALLOC_W 1
#define X_HALO_TOP 0
#define X_HALO_LEFT 0
#define X_STRIDE_C 64
#define Y_ALLOC_H 1
#define Y_ALLOC_W 1
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#define VECTOR_WIDTH 16
#define TILE_ROWS 4
#define UNIT_VECTORS 1
#define CHANNEL_STEP 1
#define HAS_BIAS 1
#define EPILOGUE ACT_NONE
#define EPILOGUE_SLOPE 0.0f
#endif

#define U_TILES (U_ALLOC / VECTOR_WIDTH)
#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)
#define HSUM CONCAT(hsum, VECTOR_WIDTH)
#define IN_TOTAL (IN_H * IN_W * IN_CHANNELS)

#if defined(DENSE_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict w,
                          __global const float *restrict b, __global float *restrict y,
                          const int batch)
{
    const int ut = get_global_id(0);
    const int bt = get_global_id(1);
    if (ut >= U_TILES / UNIT_VECTORS || bt * TILE_ROWS >= batch) return;
    const int u0 = ut * VECTOR_WIDTH * UNIT_VECTORS;

    int image[TILE_ROWS];
    realV acc[TILE_ROWS][UNIT_VECTORS];
#pragma unroll
    for (int r = 0; r < TILE_ROWS; ++r) {
        image[r] = AT(X, min(bt * TILE_ROWS + r, batch - 1), 0, 0, 0);
#pragma unroll
        for (int f = 0; f < UNIT_VECTORS; ++f) acc[r][f] = (realV)(0.0f);
    }
    for (int h = 0; h < IN_H; ++h) {
        for (int v = 0; v < IN_W; ++v) {
            const int pixel = (h * X_ALLOC_W + v) * X_STRIDE_C;
            __global const float *wp = w + (h * IN_W + v) * IN_CHANNELS * U_ALLOC + u0;
            /* CHANNEL_STEP inputs at a time: one vector load per image serves that many fmas */
            for (int c = 0; c < IN_CHANNELS; c += CHANNEL_STEP) {
                realV wv[CHANNEL_STEP][UNIT_VECTORS];
#pragma unroll
                for (int j = 0; j < CHANNEL_STEP; ++j)
#pragma unroll
                    for (int f = 0; f < UNIT_VECTORS; ++f)
                        wv[j][f] = LOADV(0, wp + (c + j) * U_ALLOC + f * VECTOR_WIDTH);
                /* one vector load per image, split into lanes: broadcasting each input from
                 * memory instead (TILE_ROWS x CHANNEL_STEP loads per CHANNEL_STEP x UNIT_VECTORS
                 * weight vectors) measured 0.95-1.00x on VGG-CIFAR fc1 (2026-12-01) */
#pragma unroll
                for (int r = 0; r < TILE_ROWS; ++r) {
                    float xs[CHANNEL_STEP];
                    VSTORE(CHANNEL_STEP)(VLOAD(CHANNEL_STEP)(0, x + image[r] + pixel + c), 0, xs);
#pragma unroll
                    for (int j = 0; j < CHANNEL_STEP; ++j)
#pragma unroll
                        for (int f = 0; f < UNIT_VECTORS; ++f)
                            acc[r][f] = fma((realV)(xs[j]), wv[j][f], acc[r][f]);
                }
            }
        }
    }
#pragma unroll
    for (int f = 0; f < UNIT_VECTORS; ++f) {
#if HAS_BIAS
        const realV bias = LOADV(0, b + u0 + f * VECTOR_WIDTH);
#else
        const realV bias = (realV)(0.0f);
#endif
#pragma unroll
        for (int r = 0; r < TILE_ROWS; ++r) {
            if (bt * TILE_ROWS + r < batch) {
                const realV v = acc[r][f] + bias;
                STOREV(ACTIVATE(v, EPILOGUE, EPILOGUE_SLOPE), 0,
                       y + AT(Y, bt * TILE_ROWS + r, 0, 0, u0 + f * VECTOR_WIDTH));
            }
        }
    }
}
#endif

#if defined(DENSE_BACKWARD_DATA)
__kernel void KERNEL_NAME(__global const float *restrict dy, __global const float *restrict w,
                          __global float *restrict dx, const int batch)
{
    const int it = get_global_id(0);
    const int bt = get_global_id(1);
    if (it >= IN_TOTAL / INPUT_TILE || bt * TILE_ROWS >= batch) return;
    const int i0 = it * INPUT_TILE; /* INPUT_TILE divides IN_CHANNELS: one pixel's channels */
    const int pixel = i0 / IN_CHANNELS;
    const int c0 = i0 % IN_CHANNELS;
    realV acc[TILE_ROWS][INPUT_TILE];
#pragma unroll
    for (int r = 0; r < TILE_ROWS; ++r)
#pragma unroll
        for (int i = 0; i < INPUT_TILE; ++i) acc[r][i] = (realV)(0.0f);
    for (int u = 0; u < U_ALLOC; u += VECTOR_WIDTH) {
        realV g[TILE_ROWS];
#pragma unroll
        for (int r = 0; r < TILE_ROWS; ++r)
            g[r] = LOADV(0, dy + AT(Y, min(bt * TILE_ROWS + r, batch - 1), 0, 0, u));
#pragma unroll
        for (int i = 0; i < INPUT_TILE; ++i) {
            const realV wv = LOADV(0, w + (i0 + i) * U_ALLOC + u);
#pragma unroll
            for (int r = 0; r < TILE_ROWS; ++r) acc[r][i] = fma(g[r], wv, acc[r][i]);
        }
    }
#pragma unroll
    for (int r = 0; r < TILE_ROWS; ++r) {
        if (bt * TILE_ROWS + r >= batch) continue;
        __global float *out = dx + AT(X, bt * TILE_ROWS + r, pixel / IN_W, pixel % IN_W, c0);
#pragma unroll
        for (int i = 0; i < INPUT_TILE; ++i)
            out[i] = (ACCUMULATE ? out[i] : 0.0f) + HSUM(acc[r][i]);
    }
}
#endif

#if defined(DENSE_BACKWARD_WEIGHTS)
/* a register tile of INPUT_TILE inputs x UNIT_VECTORS vectors of units: per image, UNIT_VECTORS
 * gradient loads and one INPUT_TILE-wide input load serve INPUT_TILE x UNIT_VECTORS vector fmas
 * (with 4 x 1, five loads served four fmas: VGG-CIFAR fc1 ran at 12% of the FMA peak) */
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global float *restrict dw, const int batch)
{
    const int ut = get_global_id(0);
    const int it = get_global_id(1);
    if (ut >= U_TILES / UNIT_VECTORS || it >= IN_TOTAL / INPUT_TILE) return;
    const int u0 = ut * VECTOR_WIDTH * UNIT_VECTORS;
    const int i0 = it * INPUT_TILE; /* INPUT_TILE divides IN_CHANNELS: one pixel's channels */
    const int pixel = i0 / IN_CHANNELS;
    const int offset = AT(X, 0, pixel / IN_W, pixel % IN_W, i0 % IN_CHANNELS);
    const int image = X_ALLOC_H * X_ALLOC_W * X_STRIDE_C;
    realV acc[INPUT_TILE][UNIT_VECTORS];
#pragma unroll
    for (int i = 0; i < INPUT_TILE; ++i)
#pragma unroll
        for (int f = 0; f < UNIT_VECTORS; ++f) acc[i][f] = (realV)(0.0f);
    for (int n = 0; n < batch; ++n) {
        realV g[UNIT_VECTORS];
#pragma unroll
        for (int f = 0; f < UNIT_VECTORS; ++f)
            g[f] = LOADV(0, dy + AT(Y, n, 0, 0, u0 + f * VECTOR_WIDTH));
        /* each input broadcast from memory (a load port), not a vector load split into lanes
         * (a shuffle per lane, on the port of the second FMA unit) */
#pragma unroll
        for (int i = 0; i < INPUT_TILE; ++i) {
            const realV xb = (realV)(x[n * image + offset + i]);
#pragma unroll
            for (int f = 0; f < UNIT_VECTORS; ++f)
                acc[i][f] = fma(xb, g[f], acc[i][f]);
        }
    }
#pragma unroll
    for (int i = 0; i < INPUT_TILE; ++i)
#pragma unroll
        for (int f = 0; f < UNIT_VECTORS; ++f)
            STOREV(acc[i][f], 0, dw + (i0 + i) * U_ALLOC + u0 + f * VECTOR_WIDTH);
}
#endif
