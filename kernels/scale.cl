/* scale.cl -- layer scale: each channel times a learned factor; forward and backward.
 *
 * Data layout: x and y (N, alloc height, alloc width, channel stride) with their own halos (see
 * common.cl); the factors (channel stride), zero in the padding channels. The shapes arrive at
 * run time, after the other arguments (common.cl's PIXEL_OF and AT_RUN: the grid, then the
 * layouts of x and y), so one compiled kernel serves every layer.
 *
 * SCALE_FORWARD: work-item (ct, w, n * height + h) writes y = x * factor for VECTOR_WIDTH
 *   channels of one pixel.
 * SCALE_BACKWARD_DATA: the same work-items write dx = dy * factor (ACCUMULATE adds to dx).
 * SCALE_BACKWARD_WEIGHT: work-item (ct, split) sums dy * x over the pixels of IMAGES_PER_SPLIT
 *   images into its split's partial sums, y's channel stride apart (then reduction.cl's
 *   SUM_SPLITS).
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME scale_forward
#define SCALE_FORWARD 1
#define ACCUMULATE 0
#define VECTOR_WIDTH 16
#define IMAGES_PER_SPLIT 2
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

#if defined(SCALE_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict factor,
                          __global float *restrict y, const int4 grid, const int4 x_at,
                          const int4 y_at)
{
    PIXEL_OF(grid);
    STOREV(LOADV(0, x + AT_RUN(x_at, n, h, w, c0)) * LOADV(0, factor + c0), 0,
           y + AT_RUN(y_at, n, h, w, c0));
}
#endif

#if defined(SCALE_BACKWARD_DATA)
/* dy: dL/dy (the output's layout, y_at); dx: dL/dx (the input's, x_at) */
__kernel void KERNEL_NAME(__global const float *dy, __global const float *factor,
                          __global float *dx, const int4 grid, const int4 x_at, const int4 y_at)
{
    PIXEL_OF(grid);
    realV grad = LOADV(0, dy + AT_RUN(y_at, n, h, w, c0)) * LOADV(0, factor + c0);
#if ACCUMULATE
    grad += LOADV(0, dx + AT_RUN(x_at, n, h, w, c0));
#endif
    STOREV(grad, 0, dx + AT_RUN(x_at, n, h, w, c0));
}
#endif

#if defined(SCALE_BACKWARD_WEIGHT)
/* partial: per split, one sum per channel of y's stride (the factors' elements) */
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global float *restrict partial, const int batch, const int4 grid,
                          const int4 x_at, const int4 y_at)
{
    const int ct = get_global_id(0), split = get_global_id(1);
    if (ct >= grid.s0) return;
    const int c0 = ct * VECTOR_WIDTH, height = grid.s2, width = grid.s1;
    const int last = min(batch, (split + 1) * IMAGES_PER_SPLIT);
    realV total = (realV)(0.0f);
    for (int n = split * IMAGES_PER_SPLIT; n < last; ++n)
        for (int h = 0; h < height; ++h)
            for (int w = 0; w < width; ++w)
                total += LOADV(0, dy + AT_RUN(y_at, n, h, w, c0))
                         * LOADV(0, x + AT_RUN(x_at, n, h, w, c0));
    STOREV(total, 0, partial + split * y_at.s3 + c0);
}
#endif
