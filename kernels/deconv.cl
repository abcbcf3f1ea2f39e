/* deconv.cl -- the bias and fused activation of a transposed convolution, after its main kernel.
 *
 * A transposed convolution runs conv.cl's kernels with the roles of input and output swapped
 * (convgraph/ops/deconv.py): CONV_BACKWARD_DATA is its forward pass, CONV_FORWARD the gradient
 * of its input, CONV_BACKWARD_WEIGHTS the gradient of its weights. CONV_BACKWARD_DATA has no
 * bias, so this kernel adds it.
 *
 * Data layout: y (N, Y_ALLOC_H, Y_ALLOC_W, Y_STRIDE_C), NHWC (common.cl); b (Y_STRIDE_C), zero
 * beyond the real channels.
 * DECONV_EPILOGUE: work-item (ct, w, n * HEIGHT + h) adds b (HAS_BIAS) to VECTOR_WIDTH channels
 *   of pixel (h, w) and applies EPILOGUE.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME deconv_epilogue
#define DECONV_EPILOGUE 1
#define HAS_BIAS 1
#define EPILOGUE ACT_RELU
#define EPILOGUE_SLOPE 0.0f
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

#if defined(DECONV_EPILOGUE)
__kernel void KERNEL_NAME(__global float *restrict y, __global const float *restrict b)
{
    const int ct = get_global_id(0);
    const int w = get_global_id(1);
    const int row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || w >= WIDTH) return; /* sizes rounded up */
    const int n = row / HEIGHT;
    const int h = row % HEIGHT;
    const int at = AT(Y, n, h, w, ct * VECTOR_WIDTH);
#if HAS_BIAS
    const realV v = LOADV(0, y + at) + LOADV(0, b + ct * VECTOR_WIDTH);
#else
    const realV v = LOADV(0, y + at);
#endif
    STOREV(ACTIVATE(v, EPILOGUE, EPILOGUE_SLOPE), 0, y + at);
}
#endif
