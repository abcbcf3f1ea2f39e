/* norm.cl -- batch normalisation; forward in inference mode (running statistics).
 *
 * Data layout: x, y (N, *_ALLOC_H, *_ALLOC_W, *_STRIDE_C); gamma, beta, mean, variance
 * (STRIDE_C), zero-padded past CHANNELS. Work-item (ct, w, n * HEIGHT + h) normalises
 * VECTOR_WIDTH channels of one pixel: y = (x - mean) / sqrt(variance + EPSILON) * gamma + beta.
 */

#ifndef KERNEL_NAME
#define KERNEL_NAME batchnorm_forward
#define BATCHNORM_INFERENCE 1
#define EPSILON 1e-5f
#define HEIGHT 4
#define WIDTH 4
#define CHANNEL_VECTORS 1
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
#define EPILOGUE ACT_NONE
#define EPILOGUE_SLOPE 0.0f
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV CONCAT(vload, VECTOR_WIDTH)
#define STOREV CONCAT(vstore, VECTOR_WIDTH)

#if defined(BATCHNORM_INFERENCE)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict gamma,
                          __global const float *restrict beta, __global const float *restrict mean,
                          __global const float *restrict variance, __global float *restrict y)
{
    const int ct = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT, c0 = ct * VECTOR_WIDTH;
    const realV scale = LOADV(0, gamma + c0) * rsqrt(LOADV(0, variance + c0) + EPSILON);
    const realV v = (LOADV(0, x + AT(X, n, h, w, c0)) - LOADV(0, mean + c0)) * scale
                    + LOADV(0, beta + c0);
    STOREV(ACTIVATE(v, EPILOGUE, EPILOGUE_SLOPE), 0, y + AT(Y, n, h, w, c0));
}
#endif
