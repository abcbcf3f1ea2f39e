/* norm.cl -- batch normalisation: inference (running statistics), training, and its gradients.
 *
 * Data layout: x, y (N, *_ALLOC_H, *_ALLOC_W, *_STRIDE_C); gamma, beta, mean, variance
 * (STRIDE_C), zero-padded past CHANNELS. Work-item (ct, w, n * HEIGHT + h) normalises
 * VECTOR_WIDTH channels of one pixel: y = (x - mean) / sqrt(variance + EPSILON) * gamma + beta.
 *
 * Training: BATCHNORM_SPLIT_STATS, work-item (ct, split) per VECTOR_WIDTH channels and
 *   IMAGES_PER_SPLIT images, computes its images' mean and sum of squared deviations (two
 *   passes over data in cache); BATCHNORM_STATS, work-item ct, merges the splits (Chan et al.'s
 *   parallel variance: no sum-of-squares cancellation) into the batch mean and
 *   1 / sqrt(biased variance + EPSILON) over (batch, height, width) in `saved`, and moves the
 *   running statistics by MOMENTUM (with the unbiased variance, as PyTorch does); then
 *   BATCHNORM_TRAIN normalises with the batch statistics, like BATCHNORM_INFERENCE.
 * BATCHNORM_BACKWARD_REDUCE: per channel, dbeta = sum dy and dgamma = sum dy * xhat, as partial
 *   sums per split of the batch (work-item (ct, split)), added up by SUM_SPLITS.
 * BATCHNORM_BACKWARD_DATA: dx = gamma / sqrt(var + eps) / M * (M dy - dbeta - xhat dgamma),
 *   M = batch * height * width, xhat recomputed from x and the saved statistics.
 */

#ifndef KERNEL_NAME
#define KERNEL_NAME batchnorm_forward
#define BATCHNORM_INFERENCE 1
#define MOMENTUM 0.1f
#define IMAGES_PER_SPLIT 2
#define ACCUMULATE 0
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
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

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

#if defined(BATCHNORM_SPLIT_STATS)
/* partial: per split, its mean (X_STRIDE_C values) then its sum of squared deviations */
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict partial,
                          const int batch)
{
    const int ct = get_global_id(0);
    const int split = get_global_id(1);
    if (ct >= CHANNEL_VECTORS) return;
    const int c0 = ct * VECTOR_WIDTH;
    const int first = split * IMAGES_PER_SPLIT;
    const int last = min(batch, first + IMAGES_PER_SPLIT);
    const float count = (float)((last - first) * HEIGHT * WIDTH);
    realV sum = (realV)(0.0f);
    for (int n = first; n < last; ++n)
        for (int h = 0; h < HEIGHT; ++h)
            for (int w = 0; w < WIDTH; ++w) sum += LOADV(0, x + AT(X, n, h, w, c0));
    const realV mu = sum / count;
    realV squares = (realV)(0.0f);
    for (int n = first; n < last; ++n)
        for (int h = 0; h < HEIGHT; ++h)
            for (int w = 0; w < WIDTH; ++w) {
                const realV d = LOADV(0, x + AT(X, n, h, w, c0)) - mu;
                squares += d * d;
            }
    STOREV(mu, 0, partial + split * 2 * X_STRIDE_C + c0);
    STOREV(squares, 0, partial + split * 2 * X_STRIDE_C + X_STRIDE_C + c0);
}
#endif

#if defined(BATCHNORM_STATS)
/* saved: mean (STRIDE_C values) then 1/std (STRIDE_C values) */
__kernel void KERNEL_NAME(__global const float *restrict partial, __global float *restrict saved,
                          __global float *restrict mean, __global float *restrict variance,
                          const int batch)
{
    const int ct = get_global_id(0);
    if (ct >= CHANNEL_VECTORS) return;
    const int c0 = ct * VECTOR_WIDTH;
    const int splits = (batch + IMAGES_PER_SPLIT - 1) / IMAGES_PER_SPLIT;
    const float count = (float)(batch * HEIGHT * WIDTH);
    realV sum = (realV)(0.0f);
    for (int s = 0; s < splits; ++s) {
        const float images = (float)(min(batch, (s + 1) * IMAGES_PER_SPLIT) - s * IMAGES_PER_SPLIT);
        sum += images * LOADV(0, partial + s * 2 * X_STRIDE_C + c0);
    }
    const realV mu = sum / (float)batch;
    realV squares = (realV)(0.0f);
    for (int s = 0; s < splits; ++s) {
        const float pixels = (float)((min(batch, (s + 1) * IMAGES_PER_SPLIT) - s * IMAGES_PER_SPLIT)
                                     * HEIGHT * WIDTH);
        const realV d = LOADV(0, partial + s * 2 * X_STRIDE_C + c0) - mu;
        squares += LOADV(0, partial + s * 2 * X_STRIDE_C + X_STRIDE_C + c0) + pixels * d * d;
    }
    const realV var = squares / count;
    STOREV(mu, 0, saved + c0);
    STOREV(rsqrt(var + EPSILON), 0, saved + X_STRIDE_C + c0);
    const realV unbiased = count > 1.0f ? squares / (count - 1.0f) : var;
    STOREV((1.0f - MOMENTUM) * LOADV(0, mean + c0) + MOMENTUM * mu, 0, mean + c0);
    STOREV((1.0f - MOMENTUM) * LOADV(0, variance + c0) + MOMENTUM * unbiased, 0, variance + c0);
}
#endif

#if defined(BATCHNORM_TRAIN)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict gamma,
                          __global const float *restrict beta, __global const float *restrict saved,
                          __global float *restrict y)
{
    const int ct = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT, c0 = ct * VECTOR_WIDTH;
    const realV scale = LOADV(0, gamma + c0) * LOADV(0, saved + X_STRIDE_C + c0);
    const realV v = (LOADV(0, x + AT(X, n, h, w, c0)) - LOADV(0, saved + c0)) * scale
                    + LOADV(0, beta + c0);
    STOREV(ACTIVATE(v, EPILOGUE, EPILOGUE_SLOPE), 0, y + AT(Y, n, h, w, c0));
}
#endif

#if defined(BATCHNORM_BACKWARD_REDUCE)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global const float *restrict saved, __global float *restrict dgamma,
                          __global float *restrict dbeta, const int batch)
{
    const int ct = get_global_id(0);
    const int split = get_global_id(1);
    if (ct >= CHANNEL_VECTORS) return;
    const int c0 = ct * VECTOR_WIDTH;
    const int last = min(batch, (split + 1) * IMAGES_PER_SPLIT);
    dgamma += split * X_STRIDE_C; /* this split's partial sums */
    dbeta += split * X_STRIDE_C;
    const realV mu = LOADV(0, saved + c0), inverse = LOADV(0, saved + X_STRIDE_C + c0);
    realV sum_dy = (realV)(0.0f), sum_dy_xhat = (realV)(0.0f);
    for (int n = split * IMAGES_PER_SPLIT; n < last; ++n)
        for (int h = 0; h < HEIGHT; ++h)
            for (int w = 0; w < WIDTH; ++w) {
                const realV g = LOADV(0, dy + AT(Y, n, h, w, c0));
                sum_dy += g;
                sum_dy_xhat += g * (LOADV(0, x + AT(X, n, h, w, c0)) - mu) * inverse;
            }
    STOREV(sum_dy_xhat, 0, dgamma + c0);
    STOREV(sum_dy, 0, dbeta + c0);
}
#endif

#if defined(BATCHNORM_BACKWARD_DATA)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global const float *restrict gamma, __global const float *restrict saved,
                          __global const float *restrict dgamma, __global const float *restrict dbeta,
                          __global float *restrict dx, const int batch)
{
    const int ct = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT, c0 = ct * VECTOR_WIDTH;
    if (n >= batch) return;
    const float count = (float)(batch * HEIGHT * WIDTH);
    const realV inverse = LOADV(0, saved + X_STRIDE_C + c0);
    const realV xhat = (LOADV(0, x + AT(X, n, h, w, c0)) - LOADV(0, saved + c0)) * inverse;
    realV grad = LOADV(0, gamma + c0) * inverse / count
                 * (count * LOADV(0, dy + AT(Y, n, h, w, c0)) - LOADV(0, dbeta + c0)
                    - xhat * LOADV(0, dgamma + c0));
#if ACCUMULATE
    grad += LOADV(0, dx + AT(X, n, h, w, c0));
#endif
    STOREV(grad, 0, dx + AT(X, n, h, w, c0));
}
#endif
