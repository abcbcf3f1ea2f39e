/* upsample.cl -- nearest and bilinear upsampling by integer factors; forward and backward.
 *
 * Data layout: x (N, X_ALLOC_H, X_ALLOC_W, X_STRIDE_C), y (N, Y_ALLOC_H, Y_ALLOC_W, Y_STRIDE_C)
 * (NHWC, see common.cl); channels are interpolated independently, VECTOR_WIDTH at a time.
 *
 * Along each axis, output coordinate o reads inputs i0 and i1 = min(i0 + 1, IN - 1), i1 with
 * weight frac, as PyTorch's F.interpolate and ONNX Resize define it:
 *   nearest:                        i0 = i1 = floor(o / FACTOR)
 *   bilinear, align_corners false:  src = (o + 0.5) / FACTOR - 0.5, clamped at 0
 *   bilinear, align_corners true:   src = o * (IN - 1) / (OUT - 1)
 * and i0 = floor(src), frac = src - i0. src is a ratio of whole numbers, so it is computed in
 * integers: i0 and frac are exact.
 *
 * UPSAMPLE_FORWARD: work-item (ct, ow, n * OUT_H + oh) computes one output pixel for
 *   VECTOR_WIDTH channels from its (up to) four source pixels.
 * UPSAMPLE_BACKWARD: the adjoint, as a gather (no two work-items write one place): work-item
 *   (ct, iw, n * IN_H + ih) adds up dy over the outputs whose taps reach input pixel (ih, iw),
 *   each times its interpolation weight. The outputs that can reach input i along an axis lie
 *   in WINDOW_H (WINDOW_W) positions from (i + WINDOW_START) * FACTOR - WINDOW_BEFORE: the
 *   host chooses a window that holds them all for the mode (nearest: the FACTOR outputs of i;
 *   bilinear: 4 FACTOR + 2 from (i - 1) FACTOR - 1). ACCUMULATE adds to dx.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME upsample_forward
#define UPSAMPLE_FORWARD 1
#define BILINEAR 1
#define ALIGN_CORNERS 0
#define FACTOR_H 2
#define FACTOR_W 2
#define IN_H 5
#define IN_W 7
#define OUT_H 10
#define OUT_W 14
#define WINDOW_START -1
#define WINDOW_BEFORE 1
#define WINDOW_H 10
#define WINDOW_W 10
#define CHANNEL_VECTORS 1
#define ACCUMULATE 0
#define X_ALLOC_H 5
#define X_ALLOC_W 7
#define X_HALO_TOP 0
#define X_HALO_LEFT 0
#define X_STRIDE_C 16
#define Y_ALLOC_H 10
#define Y_ALLOC_W 14
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#define VECTOR_WIDTH 16
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

/* Each kernel instance is this file with its own defines, so its helpers carry its name. */
#define source_tap CONCAT(KERNEL_NAME, _source_tap)
#define tap_weight CONCAT(KERNEL_NAME, _tap_weight)

/* The inputs output coordinate o reads along one axis (in: its input size, out: its output
 * size), and the weight of the second, *frac; nearest: both the same, frac 0. */
inline int source_tap(int o, int in, int out, int factor, int *second, float *frac)
{
#if BILINEAR
#if ALIGN_CORNERS
    const int num = o * (in - 1), den = max(out - 1, 1);
#else
    const int num = max(2 * o + 1 - factor, 0), den = 2 * factor;
#endif
    const int first = num / den;
    *second = min(first + 1, in - 1);
    *frac = (float)(num - first * den) / (float)den;
    return first;
#else
    *second = o / factor;
    *frac = 0.0f;
    return o / factor;
#endif
}

/* The weight with which output o reads input i along one axis (0 when it does not). */
inline float tap_weight(int o, int i, int in, int out, int factor)
{
    int second;
    float frac;
    const int first = source_tap(o, in, out, factor, &second, &frac);
    return (first == i ? 1.0f - frac : 0.0f) + (second == i ? frac : 0.0f);
}

#if defined(UPSAMPLE_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y)
{
    const int ct = get_global_id(0);
    const int ow = get_global_id(1);
    const int row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || ow >= OUT_W) return; /* sizes rounded up */
    const int n = row / OUT_H;
    const int oh = row % OUT_H;
    const int c0 = ct * VECTOR_WIDTH;
    int h1, w1;
    float fh, fw;
    const int h0 = source_tap(oh, IN_H, OUT_H, FACTOR_H, &h1, &fh);
    const int w0 = source_tap(ow, IN_W, OUT_W, FACTOR_W, &w1, &fw);
    const realV top = LOADV(0, x + AT(X, n, h0, w0, c0)) * (1.0f - fw)
                      + LOADV(0, x + AT(X, n, h0, w1, c0)) * fw;
    const realV bottom = LOADV(0, x + AT(X, n, h1, w0, c0)) * (1.0f - fw)
                         + LOADV(0, x + AT(X, n, h1, w1, c0)) * fw;
    STOREV(top * (1.0f - fh) + bottom * fh, 0, y + AT(Y, n, oh, ow, c0));
}
#endif

#if defined(UPSAMPLE_BACKWARD)
__kernel void KERNEL_NAME(__global const float *restrict dy, __global float *restrict dx)
{
    const int ct = get_global_id(0);
    const int iw = get_global_id(1);
    const int row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || iw >= IN_W) return;
    const int n = row / IN_H;
    const int ih = row % IN_H;
    const int c0 = ct * VECTOR_WIDTH;
    const int first_h = (ih + WINDOW_START) * FACTOR_H - WINDOW_BEFORE;
    const int first_w = (iw + WINDOW_START) * FACTOR_W - WINDOW_BEFORE;
    realV sum = (realV)(0.0f);
    for (int r = 0; r < WINDOW_H; ++r) {
        const int oh = first_h + r;
        if (oh < 0 || oh >= OUT_H) continue;
        const float weight_h = tap_weight(oh, ih, IN_H, OUT_H, FACTOR_H);
        if (weight_h == 0.0f) continue;
        for (int s = 0; s < WINDOW_W; ++s) {
            const int ow = first_w + s;
            if (ow < 0 || ow >= OUT_W) continue;
            const float weight = weight_h * tap_weight(ow, iw, IN_W, OUT_W, FACTOR_W);
            if (weight != 0.0f) sum += LOADV(0, dy + AT(Y, n, oh, ow, c0)) * weight;
        }
    }
    __global float *out = dx + AT(X, n, ih, iw, c0);
#if ACCUMULATE /* dx is read by several layers: add to it */
    sum += LOADV(0, out);
#endif
    STOREV(sum, 0, out);
}
#endif

#undef source_tap
#undef tap_weight
