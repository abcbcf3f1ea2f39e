/* layout.cl -- moving values between layouts: concat along depth, and flatten; forward.
 *
 * Data layout: x, y (N, *_ALLOC_H, *_ALLOC_W, *_STRIDE_C).
 * CONCAT_COPY: work-item (c, w, n * HEIGHT + h) copies channel c of x to channel
 *   CHANNEL_OFFSET + c of y; one launch per concatenated input.
 * FLATTEN_FORWARD: work-item (c, w, n * HEIGHT + h) writes x[n, h, w, c] to channel
 *   (c * HEIGHT + h) * WIDTH + w of the 1x1 output: PyTorch's (depth, height, width) order.
 * CONCAT_BACKWARD and FLATTEN_BACKWARD move gradients the opposite way (y is dL/dy, x is dL/dx),
 *   adding to x with ACCUMULATE.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME concat_copy
#define CONCAT_COPY 1
#define ACCUMULATE 0
#define HEIGHT 4
#define WIDTH 4
#define CHANNELS 3
#define CHANNEL_OFFSET 0
#define X_ALLOC_H 4
#define X_ALLOC_W 4
#define X_HALO_TOP 0
#define X_HALO_LEFT 0
#define X_STRIDE_C 4
#define Y_ALLOC_H 4
#define Y_ALLOC_W 4
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 8
#endif

#if defined(CONCAT_COPY)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y)
{
    const int c = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (c >= CHANNELS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    y[AT(Y, n, h, w, CHANNEL_OFFSET + c)] = x[AT(X, n, h, w, c)];
}
#endif

#if defined(FLATTEN_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y)
{
    const int c = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (c >= CHANNELS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    y[AT(Y, n, 0, 0, (c * HEIGHT + h) * WIDTH + w)] = x[AT(X, n, h, w, c)];
}
#endif

#if defined(CONCAT_BACKWARD)
__kernel void KERNEL_NAME(__global const float *restrict y, __global float *restrict x)
{
    const int c = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (c >= CHANNELS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    const int at = AT(X, n, h, w, c);
    x[at] = (ACCUMULATE ? x[at] : 0.0f) + y[AT(Y, n, h, w, CHANNEL_OFFSET + c)];
}
#endif

#if defined(FLATTEN_BACKWARD)
__kernel void KERNEL_NAME(__global const float *restrict y, __global float *restrict x)
{
    const int c = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (c >= CHANNELS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    const int at = AT(X, n, h, w, c);
    x[at] = (ACCUMULATE ? x[at] : 0.0f) + y[AT(Y, n, 0, 0, (c * HEIGHT + h) * WIDTH + w)];
}
#endif
