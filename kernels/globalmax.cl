/* globalmax.cl -- global max pooling: each channel's slice reduced to its maximum; forward and
 * backward.
 *
 * Data layout: x (N, X_ALLOC_H, X_ALLOC_W, X_STRIDE_C) with its halo (see common.cl), y
 * (N, 1, 1, Y_STRIDE_C) likewise; channels are independent, VECTOR_WIDTH at a time.
 *
 * GLOBAL_MAX_FORWARD: work-item (ct, n) takes the maximum of an IN_H x IN_W slice.
 * GLOBAL_MAX_BACKWARD: work-item (ct, n) writes the whole slice of dx: dy at the first maximum
 *   in scan order (row by row, as the forward pass and PyTorch take it), zero elsewhere, so no
 *   two work-items write one place and ties pass the gradient once. ACCUMULATE adds to dx.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME global_max_forward
#define GLOBAL_MAX_FORWARD 1
#define ACCUMULATE 0
#define IN_H 4
#define IN_W 4
#define CHANNEL_VECTORS 1
#define VECTOR_WIDTH 16
#define X_ALLOC_H 4
#define X_ALLOC_W 4
#define X_HALO_TOP 0
#define X_HALO_LEFT 0
#define X_STRIDE_C 16
#define Y_ALLOC_H 1
#define Y_ALLOC_W 1
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

/* best = the maximum of channels c0.. of image n's slice (a macro, not a function: every kernel
 * of a plan is built in one program, where a helper would be defined once per specialisation) */
#define SLICE_MAX(best, x, n, c0)                                                               \
    for (int h = 0; h < IN_H; ++h)                                                              \
        for (int w = 0; w < IN_W; ++w) best = fmax(best, LOADV(0, x + AT(X, n, h, w, c0)))

#if defined(GLOBAL_MAX_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y)
{
    const int ct = get_global_id(0), n = get_global_id(1);
    if (ct >= CHANNEL_VECTORS) return;
    const int c0 = ct * VECTOR_WIDTH;
    realV best = (realV)(-INFINITY);
    SLICE_MAX(best, x, n, c0);
    STOREV(best, 0, y + AT(Y, n, 0, 0, c0));
}
#endif

#if defined(GLOBAL_MAX_BACKWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global float *restrict dx)
{
    const int ct = get_global_id(0), n = get_global_id(1);
    if (ct >= CHANNEL_VECTORS) return;
    const int c0 = ct * VECTOR_WIDTH;
    realV best = (realV)(-INFINITY);
    SLICE_MAX(best, x, n, c0);
    const realV g = LOADV(0, dy + AT(Y, n, 0, 0, c0));
    realV taken = (realV)(0.0f); /* 1 in the lanes whose first maximum is already passed */
    for (int h = 0; h < IN_H; ++h) {
        for (int w = 0; w < IN_W; ++w) {
            const int at = AT(X, n, h, w, c0);
            /* 1 where x == best (best - x >= 0, sign 0 only on equality) and not yet taken */
            const realV mine = (1.0f - sign(best - LOADV(0, x + at))) * (1.0f - taken);
            taken += mine;
            realV total = g * mine;
#if ACCUMULATE
            total += LOADV(0, dx + at);
#endif
            STOREV(total, 0, dx + at);
        }
    }
}
#endif
