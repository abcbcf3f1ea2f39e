/* reduction.cl -- softmax along depth; forward.
 *
 * Data layout: x, y (N, *_ALLOC_H, *_ALLOC_W, *_STRIDE_C). Work-item (w, n * HEIGHT + h) computes
 * the softmax of the CHANNELS values of one pixel, subtracting their maximum first so that exp
 * never overflows, and writes zeros to the padding channels.
 */

#ifndef KERNEL_NAME
#define KERNEL_NAME softmax_forward
#define SOFTMAX_FORWARD 1
#define HEIGHT 1
#define WIDTH 1
#define CHANNELS 10
#define X_ALLOC_H 1
#define X_ALLOC_W 1
#define X_HALO_TOP 0
#define X_HALO_LEFT 0
#define X_STRIDE_C 16
#define Y_ALLOC_H 1
#define Y_ALLOC_W 1
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#endif

#if defined(SOFTMAX_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y)
{
    const int w = get_global_id(0), row = get_global_id(1);
    if (w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    __global const float *in = x + AT(X, n, h, w, 0);
    __global float *out = y + AT(Y, n, h, w, 0);
    float top = in[0];
    for (int c = 1; c < CHANNELS; ++c) top = fmax(top, in[c]);
    float total = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) total += exp(in[c] - top);
    const float inverse = 1.0f / total;
    for (int c = 0; c < CHANNELS; ++c) out[c] = exp(in[c] - top) * inverse;
    for (int c = CHANNELS; c < Y_STRIDE_C; ++c) out[c] = 0.0f;
}
#endif
