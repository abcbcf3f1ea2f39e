/* elementwise.cl -- activations and the elementwise add of residual connections; forward.
 *
 * Data layout: every tensor (N, alloc height, alloc width, channel stride) with its own halo (see
 * common.cl). Work-item (ct, w, n * height + h) handles VECTOR_WIDTH channels of one pixel;
 * VECTOR_WIDTH divides the channel stride, so the padding channels are processed too (they stay
 * finite and are never read as data). The shapes arrive at run time (common.cl's PIXEL_OF and
 * AT_RUN: the grid, then each tensor's layout, in the order of the kernel's tensors), so one
 * compiled kernel serves every layer; only the dropout kernels take them as defines.
 *
 * ACTIVATION_BACKWARD: dx = f'(y) dy, from the activation's output y (in place when dx is dy);
 *   with FROM_INPUT (hardswish, silu, gelu: an op declaring derivative_from = "input"), from its
 *   input x instead, read through the X layout.
 * GRADIENT_COPY: y = x, or y += x with ACCUMULATE (the backward of add, and eval-mode dropout).
 * DROPOUT_FORWARD / DROPOUT_BACKWARD: keep each value with probability 1 - RATE, scaled by
 *   1 / (1 - RATE); the mask is a hash of (seed, the value's logical index in the global
 *   batch: sample_offset images precede this shard's), recomputed backward.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME activation_forward
#define ACTIVATION_FORWARD 1
#define ACCUMULATE 0
#define RATE 0.5f
#define SALT 0
#define CHANNELS 16
#define ACTIVATION ACT_RELU
#define SLOPE 0.0f
#define HEIGHT 4
#define WIDTH 4
#define VECTOR_WIDTH 16
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

#if defined(ACTIVATION_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y,
                          const int4 grid, const int4 x_at, const int4 y_at)
{
    PIXEL_OF(grid);
    const realV v = LOADV(0, x + AT_RUN(x_at, n, h, w, c0));
    STOREV(ACTIVATE(v, ACTIVATION, SLOPE), 0, y + AT_RUN(y_at, n, h, w, c0));
}
#endif

#if defined(ADD_FORWARD)
/* y = a + b; a sum of more inputs is a chain of these, y = y + next (so no restrict here) */
__kernel void KERNEL_NAME(__global const float *a, __global const float *b, __global float *y,
                          const int4 grid, const int4 a_at, const int4 b_at, const int4 y_at)
{
    PIXEL_OF(grid);
    const realV sum = LOADV(0, a + AT_RUN(a_at, n, h, w, c0))
                      + LOADV(0, b + AT_RUN(b_at, n, h, w, c0));
    STOREV(sum, 0, y + AT_RUN(y_at, n, h, w, c0));
}
#endif

#if defined(ACTIVATION_BACKWARD)
/* y: the activation's output (its input with FROM_INPUT); g: dL/dy; dx: dL/dx (may be g itself,
 * so no restrict) */
__kernel void KERNEL_NAME(__global const float *y, __global const float *g, __global float *dx,
                          const int4 grid, const int4 y_at, const int4 x_at)
{
    PIXEL_OF(grid);
#if defined(FROM_INPUT)
    const realV out = LOADV(0, y + AT_RUN(x_at, n, h, w, c0));
#else
    const realV out = LOADV(0, y + AT_RUN(y_at, n, h, w, c0));
#endif
    realV grad = ACTIVATE_BACKWARD(out, LOADV(0, g + AT_RUN(y_at, n, h, w, c0)), ACTIVATION,
                                   SLOPE);
#if ACCUMULATE
    grad += LOADV(0, dx + AT_RUN(x_at, n, h, w, c0));
#endif
    STOREV(grad, 0, dx + AT_RUN(x_at, n, h, w, c0));
}
#endif

#if defined(GRADIENT_COPY)
__kernel void KERNEL_NAME(__global const float *x, __global float *y,
                          const int4 grid, const int4 x_at, const int4 y_at)
{
    PIXEL_OF(grid);
    realV v = LOADV(0, x + AT_RUN(x_at, n, h, w, c0));
#if ACCUMULATE
    v += LOADV(0, y + AT_RUN(y_at, n, h, w, c0));
#endif
    STOREV(v, 0, y + AT_RUN(y_at, n, h, w, c0));
}
#endif

#if defined(DROPOUT_FORWARD) || defined(DROPOUT_BACKWARD)
/* x is the input (forward) or dL/dy (backward); y the output or dL/dx */
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y,
                          const uint seed, const uint sample_offset)
{
    const int c = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (c >= CHANNELS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    /* the image's index in the global batch: a data-parallel shard starts at sample_offset */
    const uint image = (uint)n + sample_offset;
    const uint index = ((image * HEIGHT + (uint)h) * WIDTH + (uint)w) * CHANNELS + (uint)c;
    const float keep = uniform_hash(seed + SALT, index) >= RATE ? 1.0f / (1.0f - RATE) : 0.0f;
    float v = x[AT(X, n, h, w, c)] * keep;
#if ACCUMULATE
    v += y[AT(Y, n, h, w, c)];
#endif
    y[AT(Y, n, h, w, c)] = v;
}
#endif
