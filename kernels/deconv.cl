/* deconv.cl -- the bias of a transposed convolution, added after its main kernel.
 *
 * A transposed convolution runs conv.cl's kernels with the roles of input and output swapped
 * (convgraph/ops/deconv.py): CONV_BACKWARD_DATA is its forward pass, CONV_FORWARD the gradient
 * of its input, CONV_BACKWARD_WEIGHTS the gradient of its weights. CONV_BACKWARD_DATA has no
 * bias, so this kernel adds it.
 *
 * Data layout: y (N, Y_ALLOC_H, Y_ALLOC_W, Y_STRIDE_C), NHWC (common.cl); b (Y_STRIDE_C), zero
 * beyond the real channels.
 * DECONV_BIAS: work-item (ct, w, n * HEIGHT + h) adds b to VECTOR_WIDTH channels of pixel (h, w).
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME deconv_bias
#define DECONV_BIAS 1
#define HEIGHT 8
#define WIDTH 8
#define CHANNEL_VECTORS 1
#define Y_ALLOC_H 8
#define Y_ALLOC_W 8
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#define VECTOR_WIDTH 16
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

#if defined(DECONV_BIAS)
__kernel void KERNEL_NAME(__global float *restrict y, __global const float *restrict b)
{
    const int ct = get_global_id(0);
    const int w = get_global_id(1);
    const int row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || w >= WIDTH) return; /* sizes rounded up */
    const int n = row / HEIGHT;
    const int h = row % HEIGHT;
    const int at = AT(Y, n, h, w, ct * VECTOR_WIDTH);
    STOREV(LOADV(0, y + at) + LOADV(0, b + ct * VECTOR_WIDTH), 0, y + at);
}
#endif
