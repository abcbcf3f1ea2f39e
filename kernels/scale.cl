/* scale.cl -- layer scale: each channel times a learned factor; forward and backward.
 *
 * Data layout: x and y (N, *_ALLOC_H, *_ALLOC_W, *_STRIDE_C) with their own halos (see
 * common.cl); the factors (X_STRIDE_C), zero in the padding channels.
 *
 * SCALE_FORWARD: work-item (ct, w, n * HEIGHT + h) writes y = x * factor for VECTOR_WIDTH
 *   channels of one pixel.
 * SCALE_BACKWARD_DATA: the same work-items write dx = dy * factor (ACCUMULATE adds to dx).
 * SCALE_BACKWARD_WEIGHT: work-item (ct, split) sums dy * x over the pixels of IMAGES_PER_SPLIT
 *   images into its split's partial sums, ELEMENTS apart (then reduction.cl's SUM_SPLITS).
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME scale_forward
#define SCALE_FORWARD 1
#define ACCUMULATE 0
#define HEIGHT 4
#define WIDTH 4
#define CHANNEL_VECTORS 1
#define VECTOR_WIDTH 16
#define ELEMENTS 16
#define IMAGES_PER_SPLIT 2
#define X_ALLOC_H 4
#define X_ALLOC_W 4
#define X_HALO_TOP 0
#define X_HALO_LEFT 0
#define X_STRIDE_C 16
#define Y_ALLOC_H 4
#define Y_ALLOC_W 4
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

#if defined(SCALE_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict factor,
                          __global float *restrict y)
{
    const int ct = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT, c0 = ct * VECTOR_WIDTH;
    STOREV(LOADV(0, x + AT(X, n, h, w, c0)) * LOADV(0, factor + c0), 0, y + AT(Y, n, h, w, c0));
}
#endif

#if defined(SCALE_BACKWARD_DATA)
/* dy: dL/dy (the output's layout, Y); dx: dL/dx (the input's, X) */
__kernel void KERNEL_NAME(__global const float *dy, __global const float *factor,
                          __global float *dx)
{
    const int ct = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT, c0 = ct * VECTOR_WIDTH;
    realV grad = LOADV(0, dy + AT(Y, n, h, w, c0)) * LOADV(0, factor + c0);
#if ACCUMULATE
    grad += LOADV(0, dx + AT(X, n, h, w, c0));
#endif
    STOREV(grad, 0, dx + AT(X, n, h, w, c0));
}
#endif

#if defined(SCALE_BACKWARD_WEIGHT)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global float *restrict partial, const int batch)
{
    const int ct = get_global_id(0), split = get_global_id(1);
    if (ct >= CHANNEL_VECTORS) return;
    const int c0 = ct * VECTOR_WIDTH;
    const int last = min(batch, (split + 1) * IMAGES_PER_SPLIT);
    realV total = (realV)(0.0f);
    for (int n = split * IMAGES_PER_SPLIT; n < last; ++n)
        for (int h = 0; h < HEIGHT; ++h)
            for (int w = 0; w < WIDTH; ++w)
                total += LOADV(0, dy + AT(Y, n, h, w, c0)) * LOADV(0, x + AT(X, n, h, w, c0));
    STOREV(total, 0, partial + split * ELEMENTS + c0);
}
#endif
