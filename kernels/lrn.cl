/* lrn.cl -- local response normalisation across channels (PyTorch's LocalResponseNorm, ONNX's
 * LRN), forward and backward.
 *
 * Data layout: x, y, dy, dx (N, *_ALLOC_H, *_ALLOC_W, *_STRIDE_C) (see common.cl). The window
 * of channel c is c - HALF_WINDOW .. c + HALF_WINDOW, cut at 0 and CHANNELS - 1; its divisor
 * base is s_c = K + ALPHA_OVER_SIZE * sum over the window of x^2 (ALPHA_OVER_SIZE = alpha /
 * size: the cut channels count as zeros, as in PyTorch and ONNX).
 *
 * LRN_FORWARD: work-item (c, w, n * HEIGHT + h): y_c = x_c * s_c^-BETA; padding channels 0.
 * LRN_BACKWARD: work-item (j, w, n * HEIGHT + h), the window being symmetric:
 *   dx_j = dy_j s_j^-BETA - 2 BETA ALPHA_OVER_SIZE x_j sum_{c in window(j)} dy_c x_c s_c^(-BETA-1),
 *   each s_c recomputed (windows are small; nothing is saved); ACCUMULATE adds to dx.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME lrn_forward
#define LRN_FORWARD 1
#define ACCUMULATE 0
#define HALF_WINDOW 2
#define ALPHA_OVER_SIZE 2e-5f
#define BETA 0.75f
#define K 1.0f
#define HEIGHT 4
#define WIDTH 4
#define CHANNELS 12
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

/* the helper reads this kernel's defines: each specialisation gets its own, by name */
#define divisor_base CONCAT(KERNEL_NAME, _divisor_base)

/* s_c of the pixel whose channels start at p */
inline float divisor_base(__global const float *restrict p, const int c)
{
    float squares = 0.0f;
    for (int i = max(0, c - HALF_WINDOW); i <= min(CHANNELS - 1, c + HALF_WINDOW); ++i)
        squares += p[i] * p[i];
    return K + ALPHA_OVER_SIZE * squares;
}

#if defined(LRN_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y)
{
    const int c = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (c >= Y_STRIDE_C || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    __global const float *p = x + AT(X, n, h, w, 0);
    y[AT(Y, n, h, w, c)] = c < CHANNELS ? p[c] * pow(divisor_base(p, c), -BETA) : 0.0f;
}
#endif

#if defined(LRN_BACKWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global float *restrict dx)
{
    const int j = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (j >= X_STRIDE_C || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    __global const float *p = x + AT(X, n, h, w, 0);
    __global const float *g = dy + AT(Y, n, h, w, 0);
    float grad = 0.0f;
    if (j < CHANNELS) {
        float through = 0.0f;
        for (int c = max(0, j - HALF_WINDOW); c <= min(CHANNELS - 1, j + HALF_WINDOW); ++c)
            through += g[c] * p[c] * pow(divisor_base(p, c), -BETA - 1.0f);
        grad = g[j] * pow(divisor_base(p, j), -BETA)
               - 2.0f * BETA * ALPHA_OVER_SIZE * p[j] * through;
    }
#if ACCUMULATE
    grad += dx[AT(X, n, h, w, j)];
#endif
    dx[AT(X, n, h, w, j)] = grad;
}
#endif
