/* norm.cl -- batch normalisation: inference (running statistics), training, and its gradients.
 *
 * Data layout: x, y (N, alloc height, alloc width, channel stride); gamma, beta, mean, variance
 * (channel stride), zero-padded past the channels. Work-item (ct, w, n * height + h) normalises
 * VECTOR_WIDTH channels of one pixel: y = (x - mean) / sqrt(variance + EPSILON) * gamma + beta.
 * The shapes arrive at run time, after the other arguments (common.cl's PIXEL_OF and AT_RUN:
 * the grid, then the layouts of x and y), so one compiled kernel serves every layer.
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

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME batchnorm_forward
#define BATCHNORM_INFERENCE 1
#define MOMENTUM 0.1f
#define IMAGES_PER_SPLIT 2
#define ACCUMULATE 0
#define EPSILON 1e-5f
#define VECTOR_WIDTH 16
#define EPILOGUE ACT_NONE
#define EPILOGUE_SLOPE 0.0f
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)
/* Row by row: the sums over a split's pixels (statistics, dgamma, dbeta) add up each image row
 * on its own, then the rows: n = images x height x width terms then round like width terms
 * plus images x height ones. One running sum of n terms of one sign -- dbeta's dy where a
 * global average pool spreads a gradient evenly -- drifts by about n/4 roundings: 8e-5 of
 * dbeta at 2 x 56 x 56 pixels, near the kernel tests' 1e-4 (DenseNet-121's dense block 1). */

#if defined(BATCHNORM_INFERENCE)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict gamma,
                          __global const float *restrict beta, __global const float *restrict mean,
                          __global const float *restrict variance, __global float *restrict y,
                          const int4 grid, const int4 x_at, const int4 y_at)
{
    PIXEL_OF(grid);
    const realV scale = LOADV(0, gamma + c0) * rsqrt(LOADV(0, variance + c0) + EPSILON);
    const realV v = (LOADV(0, x + AT_RUN(x_at, n, h, w, c0)) - LOADV(0, mean + c0)) * scale
                    + LOADV(0, beta + c0);
    STOREV(ACTIVATE(v, EPILOGUE, EPILOGUE_SLOPE), 0, y + AT_RUN(y_at, n, h, w, c0));
}
#endif

#if defined(BATCHNORM_SPLIT_STATS)
/* partial: per split, its mean (channel stride values) then its sum of squared deviations */
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict partial,
                          const int batch, const int4 grid, const int4 x_at, const int4 y_at)
{
    const int ct = get_global_id(0);
    const int split = get_global_id(1);
    if (ct >= grid.s0) return;
    const int c0 = ct * VECTOR_WIDTH, stride_c = x_at.s3, height = grid.s2, width = grid.s1;
    const int first = split * IMAGES_PER_SPLIT;
    const int last = min(batch, first + IMAGES_PER_SPLIT);
    const float count = (float)((last - first) * height * width);
    realV sum = (realV)(0.0f);
    for (int n = first; n < last; ++n)
        for (int h = 0; h < height; ++h) { /* row by row (see above) */
            realV row = (realV)(0.0f);
            for (int w = 0; w < width; ++w) row += LOADV(0, x + AT_RUN(x_at, n, h, w, c0));
            sum += row;
        }
    const realV mu = sum / count;
    realV squares = (realV)(0.0f);
    for (int n = first; n < last; ++n)
        for (int h = 0; h < height; ++h) {
            realV row = (realV)(0.0f);
            for (int w = 0; w < width; ++w) {
                const realV d = LOADV(0, x + AT_RUN(x_at, n, h, w, c0)) - mu;
                row += d * d;
            }
            squares += row;
        }
    STOREV(mu, 0, partial + split * 2 * stride_c + c0);
    STOREV(squares, 0, partial + split * 2 * stride_c + stride_c + c0);
}
#endif

#if defined(BATCHNORM_STATS)
/* saved: mean (channel stride values) then 1/std (channel stride values) */
__kernel void KERNEL_NAME(__global const float *restrict partial, __global float *restrict saved,
                          __global float *restrict mean, __global float *restrict variance,
                          const int batch, const int4 grid, const int4 x_at, const int4 y_at)
{
    const int ct = get_global_id(0);
    if (ct >= grid.s0) return;
    const int c0 = ct * VECTOR_WIDTH, stride_c = x_at.s3, pixels = grid.s1 * grid.s2;
    const int splits = (batch + IMAGES_PER_SPLIT - 1) / IMAGES_PER_SPLIT;
    const float count = (float)(batch * pixels);
    realV sum = (realV)(0.0f);
    for (int s = 0; s < splits; ++s) {
        const float images = (float)(min(batch, (s + 1) * IMAGES_PER_SPLIT) - s * IMAGES_PER_SPLIT);
        sum += images * LOADV(0, partial + s * 2 * stride_c + c0);
    }
    const realV mu = sum / (float)batch;
    realV squares = (realV)(0.0f);
    for (int s = 0; s < splits; ++s) {
        const float split_pixels
            = (float)((min(batch, (s + 1) * IMAGES_PER_SPLIT) - s * IMAGES_PER_SPLIT) * pixels);
        const realV d = LOADV(0, partial + s * 2 * stride_c + c0) - mu;
        squares += LOADV(0, partial + s * 2 * stride_c + stride_c + c0) + split_pixels * d * d;
    }
    const realV var = squares / count;
    STOREV(mu, 0, saved + c0);
    STOREV(rsqrt(var + EPSILON), 0, saved + stride_c + c0);
    const realV unbiased = count > 1.0f ? squares / (count - 1.0f) : var;
    STOREV((1.0f - MOMENTUM) * LOADV(0, mean + c0) + MOMENTUM * mu, 0, mean + c0);
    STOREV((1.0f - MOMENTUM) * LOADV(0, variance + c0) + MOMENTUM * unbiased, 0, variance + c0);
}
#endif

#if defined(BATCHNORM_TRAIN)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict gamma,
                          __global const float *restrict beta, __global const float *restrict saved,
                          __global float *restrict y, const int4 grid, const int4 x_at,
                          const int4 y_at)
{
    PIXEL_OF(grid);
    const realV scale = LOADV(0, gamma + c0) * LOADV(0, saved + x_at.s3 + c0);
    const realV v = (LOADV(0, x + AT_RUN(x_at, n, h, w, c0)) - LOADV(0, saved + c0)) * scale
                    + LOADV(0, beta + c0);
    STOREV(ACTIVATE(v, EPILOGUE, EPILOGUE_SLOPE), 0, y + AT_RUN(y_at, n, h, w, c0));
}
#endif

#if defined(BATCHNORM_BACKWARD_REDUCE)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global const float *restrict saved, __global float *restrict dgamma,
                          __global float *restrict dbeta, const int batch, const int4 grid,
                          const int4 x_at, const int4 y_at)
{
    const int ct = get_global_id(0);
    const int split = get_global_id(1);
    if (ct >= grid.s0) return;
    const int c0 = ct * VECTOR_WIDTH, stride_c = x_at.s3, height = grid.s2, width = grid.s1;
    const int last = min(batch, (split + 1) * IMAGES_PER_SPLIT);
    dgamma += split * stride_c; /* this split's partial sums */
    dbeta += split * stride_c;
    const realV mu = LOADV(0, saved + c0), inverse = LOADV(0, saved + stride_c + c0);
    realV sum_dy = (realV)(0.0f), sum_dy_xhat = (realV)(0.0f);
    for (int n = split * IMAGES_PER_SPLIT; n < last; ++n)
        for (int h = 0; h < height; ++h) { /* row by row (see above) */
            realV row_dy = (realV)(0.0f), row_dy_xhat = (realV)(0.0f);
            for (int w = 0; w < width; ++w) {
                const realV g = LOADV(0, dy + AT_RUN(y_at, n, h, w, c0));
                row_dy += g;
                row_dy_xhat += g * (LOADV(0, x + AT_RUN(x_at, n, h, w, c0)) - mu) * inverse;
            }
            sum_dy += row_dy;
            sum_dy_xhat += row_dy_xhat;
        }
    STOREV(sum_dy_xhat, 0, dgamma + c0);
    STOREV(sum_dy, 0, dbeta + c0);
}
#endif

#if defined(BATCHNORM_BACKWARD_DATA)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global const float *restrict gamma, __global const float *restrict saved,
                          __global const float *restrict dgamma, __global const float *restrict dbeta,
                          __global float *restrict dx, const int batch, const int4 grid,
                          const int4 x_at, const int4 y_at)
{
    PIXEL_OF(grid);
    if (n >= batch) return;
    const float count = (float)(batch * grid.s1 * grid.s2);
    const realV inverse = LOADV(0, saved + x_at.s3 + c0);
    const realV xhat = (LOADV(0, x + AT_RUN(x_at, n, h, w, c0)) - LOADV(0, saved + c0)) * inverse;
    realV grad = LOADV(0, gamma + c0) * inverse / count
                 * (count * LOADV(0, dy + AT_RUN(y_at, n, h, w, c0)) - LOADV(0, dbeta + c0)
                    - xhat * LOADV(0, dgamma + c0));
#if ACCUMULATE
    grad += LOADV(0, dx + AT_RUN(x_at, n, h, w, c0));
#endif
    STOREV(grad, 0, dx + AT_RUN(x_at, n, h, w, c0));
}
#endif
