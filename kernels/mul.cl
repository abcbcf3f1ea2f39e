/* mul.cl -- the elementwise product of two volumes, one of them optionally a 1x1xD gate
 * broadcast over width and height (squeeze-and-excitation); forward and backward.
 *
 * Data layout: every tensor (N, *_ALLOC_H, *_ALLOC_W, *_STRIDE_C) with its own halo (see
 * common.cl); a broadcast (1x1xD) tensor is read at pixel (0, 0) for every pixel. VECTOR_WIDTH
 * divides every channel stride, so padding channels are multiplied too (they stay zero).
 *
 * MUL_FORWARD: work-item (ct, w, n * HEIGHT + h) writes y = a * b for VECTOR_WIDTH channels of
 *   one pixel; A_BROADCAST / B_BROADCAST say which input is a gate.
 * MUL_BACKWARD: work-item (ct, w, n * HEIGHT + h) writes dx = dy * b for the full-size input x,
 *   b being the other input (OTHER_BROADCAST: the gate); ACCUMULATE adds to dx.
 * MUL_BACKWARD_GATE: work-item (ct, n) writes the gate's gradient, the sum over the pixels of
 *   dy * b (b the full-size other input): a broadcast's gradient is the sum of its copies'.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME mul_forward
#define MUL_FORWARD 1
#define ACCUMULATE 0
#define A_BROADCAST 0
#define B_BROADCAST 1
#define OTHER_BROADCAST 0
#define HEIGHT 4
#define WIDTH 4
#define CHANNEL_VECTORS 1
#define VECTOR_WIDTH 16
#define A_ALLOC_H 4
#define A_ALLOC_W 4
#define A_HALO_TOP 0
#define A_HALO_LEFT 0
#define A_STRIDE_C 16
#define B_ALLOC_H 1
#define B_ALLOC_W 1
#define B_HALO_TOP 0
#define B_HALO_LEFT 0
#define B_STRIDE_C 16
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

#if defined(MUL_FORWARD)
/* a and b may be one tensor (x * x), so no restrict on them */
__kernel void KERNEL_NAME(__global const float *a, __global const float *b,
                          __global float *restrict y)
{
    const int ct = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT, c0 = ct * VECTOR_WIDTH;
    const realV va = LOADV(0, a + (A_BROADCAST ? AT(A, n, 0, 0, c0) : AT(A, n, h, w, c0)));
    const realV vb = LOADV(0, b + (B_BROADCAST ? AT(B, n, 0, 0, c0) : AT(B, n, h, w, c0)));
    STOREV(va * vb, 0, y + AT(Y, n, h, w, c0));
}
#endif

#if defined(MUL_BACKWARD)
/* dy: dL/dy; b: the other input; dx: dL/dx of this input */
__kernel void KERNEL_NAME(__global const float *dy, __global const float *b, __global float *dx)
{
    const int ct = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT, c0 = ct * VECTOR_WIDTH;
    const realV other = LOADV(0, b + (OTHER_BROADCAST ? AT(B, n, 0, 0, c0) : AT(B, n, h, w, c0)));
    realV grad = LOADV(0, dy + AT(Y, n, h, w, c0)) * other;
#if ACCUMULATE
    grad += LOADV(0, dx + AT(X, n, h, w, c0));
#endif
    STOREV(grad, 0, dx + AT(X, n, h, w, c0));
}
#endif

#if defined(MUL_BACKWARD_GATE)
__kernel void KERNEL_NAME(__global const float *dy, __global const float *b, __global float *dx)
{
    const int ct = get_global_id(0), n = get_global_id(1);
    if (ct >= CHANNEL_VECTORS) return;
    const int c0 = ct * VECTOR_WIDTH;
    realV total = (realV)(0.0f);
    for (int h = 0; h < HEIGHT; ++h)
        for (int w = 0; w < WIDTH; ++w)
            total += LOADV(0, dy + AT(Y, n, h, w, c0)) * LOADV(0, b + AT(B, n, h, w, c0));
#if ACCUMULATE
    total += LOADV(0, dx + AT(X, n, 0, 0, c0));
#endif
    STOREV(total, 0, dx + AT(X, n, 0, 0, c0));
}
#endif
