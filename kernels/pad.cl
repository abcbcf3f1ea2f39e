/* pad.cl -- explicit zero padding around width and height; forward and backward (a crop).
 *
 * Data layout: x (N, X_ALLOC_H, X_ALLOC_W, X_STRIDE_C), y likewise with Y_*, each with its own
 * halo (see common.cl); channels are copied VECTOR_WIDTH at a time (VECTOR_WIDTH divides both
 * channel strides). Input pixel (ih, iw) is output pixel (ih + PAD_TOP, iw + PAD_LEFT).
 *
 * PAD_FORWARD: work-item (ct, ow, n * OUT_H + oh) writes one output pixel: the input pixel it
 *   shows, or zero in the padding.
 * PAD_BACKWARD: work-item (ct, iw, n * IN_H + ih) writes dx at one input pixel, dy where that
 *   pixel went (the padding's gradient is dropped); ACCUMULATE adds to dx.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME pad_forward
#define PAD_FORWARD 1
#define ACCUMULATE 0
#define IN_H 4
#define IN_W 4
#define OUT_H 6
#define OUT_W 7
#define PAD_TOP 1
#define PAD_LEFT 2
#define CHANNEL_VECTORS 1
#define VECTOR_WIDTH 16
#define X_ALLOC_H 4
#define X_ALLOC_W 4
#define X_HALO_TOP 0
#define X_HALO_LEFT 0
#define X_STRIDE_C 16
#define Y_ALLOC_H 6
#define Y_ALLOC_W 7
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

#if defined(PAD_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y)
{
    const int ct = get_global_id(0), ow = get_global_id(1), row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || ow >= OUT_W) return;
    const int n = row / OUT_H, oh = row % OUT_H, c0 = ct * VECTOR_WIDTH;
    const int ih = oh - PAD_TOP, iw = ow - PAD_LEFT;
    const bool inside = ih >= 0 && ih < IN_H && iw >= 0 && iw < IN_W;
    const realV v = inside ? LOADV(0, x + AT(X, n, ih, iw, c0)) : (realV)(0.0f);
    STOREV(v, 0, y + AT(Y, n, oh, ow, c0));
}
#endif

#if defined(PAD_BACKWARD)
/* dy: dL/dy (the output's layout, Y); dx: dL/dx (the input's, X) */
__kernel void KERNEL_NAME(__global const float *restrict dy, __global float *restrict dx)
{
    const int ct = get_global_id(0), iw = get_global_id(1), row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || iw >= IN_W) return;
    const int n = row / IN_H, ih = row % IN_H, c0 = ct * VECTOR_WIDTH;
    realV grad = LOADV(0, dy + AT(Y, n, ih + PAD_TOP, iw + PAD_LEFT, c0));
#if ACCUMULATE
    grad += LOADV(0, dx + AT(X, n, ih, iw, c0));
#endif
    STOREV(grad, 0, dx + AT(X, n, ih, iw, c0));
}
#endif
