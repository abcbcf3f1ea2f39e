/* mul.cl -- the elementwise product of two volumes, one of them optionally a 1x1xD gate
 * broadcast over width and height (squeeze-and-excitation); forward and backward.
 *
 * Data layout: every tensor (N, alloc height, alloc width, channel stride) with its own halo
 * (see common.cl); a broadcast (1x1xD) tensor is read at pixel (0, 0) for every pixel.
 * VECTOR_WIDTH divides every channel stride, so padding channels are multiplied too (they stay
 * zero). The shapes arrive at run time, after the other arguments (common.cl's PIXEL_OF and
 * AT_RUN: the grid over y, then the layouts in the order of each kernel's int4 arguments), so
 * one compiled kernel serves every layer.
 *
 * MUL_FORWARD: work-item (ct, w, n * height + h) writes y = a * b for VECTOR_WIDTH channels of
 *   one pixel; A_BROADCAST / B_BROADCAST say which input is a gate.
 * MUL_BACKWARD: work-item (ct, w, n * height + h) writes dx = dy * b for the full-size input x,
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
#define VECTOR_WIDTH 16
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

#if defined(MUL_FORWARD)
/* a and b may be one tensor (x * x), so no restrict on them */
__kernel void KERNEL_NAME(__global const float *a, __global const float *b,
                          __global float *restrict y, const int4 grid, const int4 y_at,
                          const int4 a_at, const int4 b_at)
{
    PIXEL_OF(grid);
    const realV va = LOADV(0, a + (A_BROADCAST ? AT_RUN(a_at, n, 0, 0, c0)
                                               : AT_RUN(a_at, n, h, w, c0)));
    const realV vb = LOADV(0, b + (B_BROADCAST ? AT_RUN(b_at, n, 0, 0, c0)
                                               : AT_RUN(b_at, n, h, w, c0)));
    STOREV(va * vb, 0, y + AT_RUN(y_at, n, h, w, c0));
}
#endif

#if defined(MUL_BACKWARD)
/* dy: dL/dy; b: the other input; dx: dL/dx of this input */
__kernel void KERNEL_NAME(__global const float *dy, __global const float *b, __global float *dx,
                          const int4 grid, const int4 y_at, const int4 b_at, const int4 x_at)
{
    PIXEL_OF(grid);
    const realV other = LOADV(0, b + (OTHER_BROADCAST ? AT_RUN(b_at, n, 0, 0, c0)
                                                      : AT_RUN(b_at, n, h, w, c0)));
    realV grad = LOADV(0, dy + AT_RUN(y_at, n, h, w, c0)) * other;
#if ACCUMULATE
    grad += LOADV(0, dx + AT_RUN(x_at, n, h, w, c0));
#endif
    STOREV(grad, 0, dx + AT_RUN(x_at, n, h, w, c0));
}
#endif

#if defined(MUL_BACKWARD_GATE)
__kernel void KERNEL_NAME(__global const float *dy, __global const float *b, __global float *dx,
                          const int4 grid, const int4 y_at, const int4 b_at, const int4 x_at)
{
    const int ct = get_global_id(0), n = get_global_id(1);
    if (ct >= grid.s0) return;
    const int c0 = ct * VECTOR_WIDTH, height = grid.s2, width = grid.s1;
    realV total = (realV)(0.0f);
    for (int h = 0; h < height; ++h)
        for (int w = 0; w < width; ++w)
            total += LOADV(0, dy + AT_RUN(y_at, n, h, w, c0))
                     * LOADV(0, b + AT_RUN(b_at, n, h, w, c0));
#if ACCUMULATE
    total += LOADV(0, dx + AT_RUN(x_at, n, 0, 0, c0));
#endif
    STOREV(total, 0, dx + AT_RUN(x_at, n, 0, 0, c0));
}
#endif
