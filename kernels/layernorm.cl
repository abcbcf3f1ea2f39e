/* layernorm.cl -- layer normalisation over the channels of each pixel, and its gradients.
 *
 * Data layout: x, y, dy, dx (N, *_ALLOC_H, *_ALLOC_W, *_STRIDE_C), so the CHANNELS values of a
 * pixel are contiguous; weight and bias (STRIDE_C), zero past CHANNELS; stats (N, HEIGHT,
 * WIDTH, 2): each pixel's mean and 1 / sqrt(variance + EPSILON), written in training.
 *
 * LAYERNORM_FORWARD, LAYERNORM_TRAIN: work-item (w, n * HEIGHT + h) normalises one pixel:
 *   y = (x - mean) / sqrt(variance + EPSILON) * weight + bias over its CHANNELS, the mean and
 *   the biased variance taken in two passes over the pixel's channels (in cache), so there is
 *   no sum-of-squares cancellation; padding channels are written 0. LAYERNORM_TRAIN also saves
 *   the pixel's statistics.
 * LAYERNORM_BACKWARD_REDUCE: work-item (ct, split) sums, for VECTOR_WIDTH channels over the
 *   IMAGES_PER_SPLIT images of its split, dbias = sum dy and dweight = sum dy * xhat, as partial
 *   sums per split (X_STRIDE_C apart), added up by reduction.cl's SUM_SPLITS.
 * LAYERNORM_BACKWARD_DATA: work-item (w, n * HEIGHT + h), with g = dy * weight:
 *   dx = 1/std * (g - mean_c g - xhat * mean_c (g * xhat)); ACCUMULATE adds it to dx.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME layernorm_forward
#define LAYERNORM_FORWARD 1
#define ACCUMULATE 0
#define EPSILON 1e-6f
#define IMAGES_PER_SPLIT 2
#define HEIGHT 4
#define WIDTH 4
#define CHANNELS 12
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
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

/* the helpers read this kernel's defines: each specialisation gets its own, by name */
#define pixel_statistics CONCAT(KERNEL_NAME, _pixel_statistics)
#define normalise_pixel CONCAT(KERNEL_NAME, _normalise_pixel)

/* where pixel (n, h, w)'s mean and 1/std are in stats */
#define STATS_AT(n, h, w) ((((n) * HEIGHT + (h)) * WIDTH + (w)) * 2)

#if defined(LAYERNORM_FORWARD) || defined(LAYERNORM_TRAIN)
/* (mean, 1/std) of the CHANNELS values at p: two passes, the second over deviations */
inline float2 pixel_statistics(__global const float *restrict p)
{
    float sum = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) sum += p[c];
    const float mean = sum / (float)CHANNELS;
    float squares = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) {
        const float d = p[c] - mean;
        squares += d * d;
    }
    return (float2)(mean, rsqrt(squares / (float)CHANNELS + EPSILON));
}

/* y = xhat * weight + bias at one pixel, 0 in the padding channels */
inline void normalise_pixel(__global const float *restrict p, const float2 stats,
                            __global const float *restrict weight,
                            __global const float *restrict bias, __global float *restrict q)
{
    for (int c = 0; c < CHANNELS; ++c)
        q[c] = (p[c] - stats.x) * stats.y * weight[c] + bias[c];
    for (int c = CHANNELS; c < Y_STRIDE_C; ++c) q[c] = 0.0f;
}
#endif

#if defined(LAYERNORM_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict weight,
                          __global const float *restrict bias, __global float *restrict y)
{
    const int w = get_global_id(0), row = get_global_id(1);
    if (w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    __global const float *p = x + AT(X, n, h, w, 0);
    normalise_pixel(p, pixel_statistics(p), weight, bias, y + AT(Y, n, h, w, 0));
}
#endif

#if defined(LAYERNORM_TRAIN)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict weight,
                          __global const float *restrict bias, __global float *restrict y,
                          __global float *restrict stats)
{
    const int w = get_global_id(0), row = get_global_id(1);
    if (w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    __global const float *p = x + AT(X, n, h, w, 0);
    const float2 s = pixel_statistics(p);
    normalise_pixel(p, s, weight, bias, y + AT(Y, n, h, w, 0));
    vstore2(s, 0, stats + STATS_AT(n, h, w));
}
#endif

#if defined(LAYERNORM_BACKWARD_REDUCE)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global const float *restrict stats, __global float *restrict dweight,
                          __global float *restrict dbias, const int batch)
{
    const int ct = get_global_id(0);
    const int split = get_global_id(1);
    if (ct >= CHANNEL_VECTORS) return;
    const int c0 = ct * VECTOR_WIDTH;
    const int last = min(batch, (split + 1) * IMAGES_PER_SPLIT);
    dweight += split * X_STRIDE_C; /* this split's partial sums */
    dbias += split * X_STRIDE_C;
    realV sum_dy = (realV)(0.0f), sum_dy_xhat = (realV)(0.0f);
    for (int n = split * IMAGES_PER_SPLIT; n < last; ++n)
        for (int h = 0; h < HEIGHT; ++h)
            for (int w = 0; w < WIDTH; ++w) {
                const float2 s = vload2(0, stats + STATS_AT(n, h, w));
                const realV g = LOADV(0, dy + AT(Y, n, h, w, c0));
                sum_dy += g;
                sum_dy_xhat += g * (LOADV(0, x + AT(X, n, h, w, c0)) - s.x) * s.y;
            }
    /* the padding channels' sums are never read: the forward kernels stop at CHANNELS */
    STOREV(sum_dy_xhat, 0, dweight + c0);
    STOREV(sum_dy, 0, dbias + c0);
}
#endif

#if defined(LAYERNORM_BACKWARD_DATA)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global const float *restrict weight,
                          __global const float *restrict stats, __global float *restrict dx)
{
    const int w = get_global_id(0), row = get_global_id(1);
    if (w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    __global const float *p = x + AT(X, n, h, w, 0);
    __global const float *g = dy + AT(Y, n, h, w, 0);
    __global float *q = dx + AT(X, n, h, w, 0);
    const float2 s = vload2(0, stats + STATS_AT(n, h, w));
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) {
        const float scaled = g[c] * weight[c];
        sum_g += scaled;
        sum_g_xhat += scaled * (p[c] - s.x) * s.y;
    }
    const float mean_g = sum_g / (float)CHANNELS, mean_g_xhat = sum_g_xhat / (float)CHANNELS;
    for (int c = 0; c < CHANNELS; ++c) {
#if CHANNELS == 1
        /* y = bias whatever x is: dx is exactly 0, not the rounding residue of g - mean g */
        float grad = 0.0f;
#else
        float grad = s.y * (g[c] * weight[c] - mean_g - (p[c] - s.x) * s.y * mean_g_xhat);
#endif
#if ACCUMULATE
        grad += q[c];
#endif
        q[c] = grad;
    }
#if !ACCUMULATE
    for (int c = CHANNELS; c < X_STRIDE_C; ++c) q[c] = 0.0f;
#endif
}
#endif
