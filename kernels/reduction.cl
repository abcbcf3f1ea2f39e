/* reduction.cl -- reductions: softmax along depth, the loss, sums over the batch.
 *
 * Data layout: x, y (N, *_ALLOC_H, *_ALLOC_W, *_STRIDE_C).
 * SOFTMAX_FORWARD: work-item (w, n * HEIGHT + h) computes the softmax of the CHANNELS values of one
 *   pixel, subtracting their maximum first so that exp never overflows, and writes zeros to the
 *   padding channels. SOFTMAX_BACKWARD: dx = y (dy - sum(dy y)) per pixel.
 * SOFTMAX_CROSS_ENTROPY: work-item n takes image n's CHANNELS logits and its label, and writes
 *   its loss (with label smoothing SMOOTHING), whether its top class is the label, and the
 *   gradient of the batch-mean loss, (softmax - target) / batch, into dlogits (zero padding).
 * Per-pixel (segmentation) loss, three kernels; labels (N, HEIGHT, WIDTH) int, IGNORE_LABEL
 *   marks a pixel that adds no loss, no gradient and no count:
 *   PIXEL_COUNT: work-item n counts image n's counted pixels into counted[n].
 *   PIXEL_CROSS_ENTROPY: work-item (w, n * HEIGHT + h) takes the CHANNELS logits of one pixel and
 *   writes its loss (label smoothing SMOOTHING) and top class into pixel_losses and predicted
 *   (N, HEIGHT, WIDTH), and the gradient of the loss averaged over the batch's counted pixels
 *   (sum of counted[], at least 1) into dlogits: zero for an ignored pixel and the padding.
 *   PIXEL_TOTALS: work-item n sums image n's pixel losses and correct pixels into losses[n]
 *   and correct[n].
 * CHANNEL_SUM: work-item (ct, split) sums dy over the pixels of IMAGES_PER_SPLIT images for
 *   VECTOR_WIDTH channels into its split's partial sums, ELEMENTS apart (bias gradients; then
 *   SUM_SPLITS).
 * SUM_SPLITS: work-item i adds up element i of the ceil(batch / IMAGES_PER_SPLIT) partial results
 *   that a kernel split over the batch wrote, ELEMENTS apart.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME softmax_forward
#define SOFTMAX_FORWARD 1
#define SMOOTHING 0.0f
#define ACCUMULATE 0
#define VECTOR_WIDTH 16
#define CHANNEL_VECTORS 1
#define ELEMENTS 16
#define IMAGES_PER_SPLIT 2
#define HEIGHT 1
#define WIDTH 1
#define CHANNELS 10
#define IGNORE_LABEL 255
#define X_ALLOC_H 1
#define X_ALLOC_W 1
#define X_HALO_TOP 0
#define X_HALO_LEFT 0
#define X_STRIDE_C 16
#define Y_ALLOC_H 1
#define Y_ALLOC_W 1
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#endif

#if defined(SOFTMAX_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y)
{
    const int w = get_global_id(0), row = get_global_id(1);
    if (w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    __global const float *in = x + AT(X, n, h, w, 0);
    __global float *out = y + AT(Y, n, h, w, 0);
    float top = in[0];
    for (int c = 1; c < CHANNELS; ++c) top = fmax(top, in[c]);
    float total = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) total += exp(in[c] - top);
    const float inverse = 1.0f / total;
    for (int c = 0; c < CHANNELS; ++c) out[c] = exp(in[c] - top) * inverse;
    for (int c = CHANNELS; c < Y_STRIDE_C; ++c) out[c] = 0.0f;
}
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

#if defined(SOFTMAX_BACKWARD)
/* y: softmax output, g: dL/dy (layout Y); dx: layout X */
__kernel void KERNEL_NAME(__global const float *restrict y, __global const float *restrict g,
                          __global float *restrict dx)
{
    const int w = get_global_id(0), row = get_global_id(1);
    if (w >= WIDTH) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    __global const float *out = y + AT(Y, n, h, w, 0);
    __global const float *grad = g + AT(Y, n, h, w, 0);
    __global float *result = dx + AT(X, n, h, w, 0);
    float dot_product = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) dot_product += grad[c] * out[c];
    for (int c = 0; c < CHANNELS; ++c)
        result[c] = (ACCUMULATE ? result[c] : 0.0f) + out[c] * (grad[c] - dot_product);
}
#endif

#if defined(SOFTMAX_CROSS_ENTROPY)
__kernel void KERNEL_NAME(__global const float *restrict logits, __global const int *restrict labels,
                          __global float *restrict dlogits, __global float *restrict losses,
                          __global float *restrict correct, const int batch)
{
    const int n = get_global_id(0);
    if (n >= batch) return;
    __global const float *z = logits + AT(X, n, 0, 0, 0);
    __global float *grad = dlogits + AT(X, n, 0, 0, 0);
    const int label = labels[n];
    float top = z[0];
    int best = 0;
    for (int c = 1; c < CHANNELS; ++c)
        if (z[c] > top) { top = z[c]; best = c; }
    float total = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) total += exp(z[c] - top);
    const float log_total = log(total);
    const float off = SMOOTHING / (float)CHANNELS;
    float loss = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) {
        const float target = (c == label ? 1.0f - SMOOTHING : 0.0f) + off;
        const float log_p = z[c] - top - log_total;
        loss -= target * log_p;
        grad[c] = (exp(log_p) - target) / (float)batch;
    }
    for (int c = CHANNELS; c < X_STRIDE_C; ++c) grad[c] = 0.0f;
    losses[n] = loss;
    correct[n] = best == label ? 1.0f : 0.0f;
}
#endif

#define PIXELS (HEIGHT * WIDTH)

#if defined(PIXEL_COUNT)
__kernel void KERNEL_NAME(__global const int *restrict labels, __global float *restrict counted,
                          const int batch)
{
    const int n = get_global_id(0);
    if (n >= batch) return;
    __global const int *mask = labels + n * PIXELS;
    int count = 0;
    for (int p = 0; p < PIXELS; ++p) count += mask[p] != IGNORE_LABEL;
    counted[n] = (float)count;
}
#endif

#if defined(PIXEL_CROSS_ENTROPY)
__kernel void KERNEL_NAME(__global const float *restrict logits, __global const int *restrict labels,
                          __global const float *restrict counted, __global float *restrict dlogits,
                          __global float *restrict pixel_losses, __global int *restrict predicted,
                          const int batch)
{
    const int w = get_global_id(0), row = get_global_id(1);
    if (w >= WIDTH || row >= batch * HEIGHT) return;
    const int n = row / HEIGHT, h = row % HEIGHT;
    const int pixel = n * PIXELS + h * WIDTH + w;
    __global const float *z = logits + AT(X, n, h, w, 0);
    __global float *grad = dlogits + AT(X, n, h, w, 0);
    float total_counted = 0.0f;  /* the batch's counted pixels: what the mean divides by */
    for (int i = 0; i < batch; ++i) total_counted += counted[i];
    const float scale = 1.0f / fmax(total_counted, 1.0f);
    const int label = labels[pixel];
    float top = z[0];
    int best = 0;
    for (int c = 1; c < CHANNELS; ++c)
        if (z[c] > top) { top = z[c]; best = c; }
    predicted[pixel] = best;
    for (int c = CHANNELS; c < X_STRIDE_C; ++c) grad[c] = 0.0f;
    if (label == IGNORE_LABEL) {
        for (int c = 0; c < CHANNELS; ++c) grad[c] = 0.0f;
        pixel_losses[pixel] = 0.0f;
        return;
    }
    float total = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) total += exp(z[c] - top);
    const float log_total = log(total);
    const float off = SMOOTHING / (float)CHANNELS;
    float loss = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) {
        const float target = (c == label ? 1.0f - SMOOTHING : 0.0f) + off;
        const float log_p = z[c] - top - log_total;
        loss -= target * log_p;
        grad[c] = (exp(log_p) - target) * scale;
    }
    pixel_losses[pixel] = loss;
}
#endif

#if defined(PIXEL_TOTALS)
__kernel void KERNEL_NAME(__global const float *restrict pixel_losses,
                          __global const int *restrict predicted,
                          __global const int *restrict labels, __global float *restrict losses,
                          __global float *restrict correct, const int batch)
{
    const int n = get_global_id(0);
    if (n >= batch) return;
    float loss = 0.0f;
    int right = 0;
    for (int p = n * PIXELS; p < (n + 1) * PIXELS; ++p) {
        loss += pixel_losses[p];
        right += labels[p] != IGNORE_LABEL && predicted[p] == labels[p];
    }
    losses[n] = loss;
    correct[n] = (float)right;
}
#endif

#if defined(CHANNEL_SUM)
__kernel void KERNEL_NAME(__global const float *restrict dy, __global float *restrict partial,
                          const int batch)
{
    const int ct = get_global_id(0);
    const int split = get_global_id(1);
    if (ct >= CHANNEL_VECTORS) return;
    const int c0 = ct * VECTOR_WIDTH;
    const int last = min(batch, (split + 1) * IMAGES_PER_SPLIT);
    realV total = (realV)(0.0f);
    for (int n = split * IMAGES_PER_SPLIT; n < last; ++n)
        for (int h = 0; h < HEIGHT; ++h)
            for (int w = 0; w < WIDTH; ++w) total += LOADV(0, dy + AT(Y, n, h, w, c0));
    STOREV(total, 0, partial + split * ELEMENTS + c0);
}
#endif

#if defined(SUM_SPLITS)
__kernel void KERNEL_NAME(__global const float *restrict partial, __global float *restrict total,
                          const int batch)
{
    const int i = get_global_id(0);
    if (i >= ELEMENTS) return;
    const int splits = (batch + IMAGES_PER_SPLIT - 1) / IMAGES_PER_SPLIT;
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += partial[s * ELEMENTS + i];
    total[i] = sum;
}
#endif
