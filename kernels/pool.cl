/* pool.cl -- max and average pooling over windows, and global average pooling; forward.
 *
 * Data layout: x (N, X_ALLOC_H, X_ALLOC_W, X_STRIDE_C), y likewise with Y_*; channels are pooled
 * independently, VECTOR_WIDTH at a time (VECTOR_WIDTH divides both channel strides).
 *
 * POOL_FORWARD: work-item (ct, ow, n * OUT_H + oh) pools one output pixel for VECTOR_WIDTH
 * channels. Taps outside the input (padding, or past the end under ceil rounding) are skipped:
 * max ignores them, avg divides by the taps inside unless COUNT_PAD (then by the window inside the
 * declared padding, as PyTorch's count_include_pad does).
 * GLOBAL_AVG_FORWARD: work-item (ct, n) averages a whole IN_H x IN_W slice.
 * POOL_BACKWARD: a gather, so no two work-items write one place: work-item (ct, iw, n * IN_H + ih)
 *   visits every window that holds input pixel (ih, iw); max pooling re-finds each window's
 *   maximum (the first one, in scan order, as the forward pass and PyTorch take it) and passes
 *   the window's gradient to it; avg pooling passes gradient / window count.
 * POOL_BACKWARD_WINDOWS: the same for windows that tile the input exactly (stride = window, no
 *   padding, OUT * STRIDE = IN, as 2x2 pooling of even sizes): work-item (ct, ow, n * OUT_H + oh)
 *   writes its whole window, so each window is searched once, not once per pixel (4x less work
 *   for 2x2: this pooling's backward was a fifth of the seed network's training step).
 *   With GATE (an activation fused into the layer before, x its output) dx leaves already
 *   differentiated through it, dL/dz = f'(x) dL/dx: one pass over the tensor fewer.
 * GLOBAL_AVG_BACKWARD: work-item (ct, w, n * IN_H + h) spreads dy / (IN_H * IN_W).
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME pool_forward
#define POOL_FORWARD 1
#define ACCUMULATE 0
#define IS_MAX 1
#define COUNT_PAD 0
#define IN_H 8
#define IN_W 8
#define OUT_H 4
#define OUT_W 4
#define CHANNEL_VECTORS 1
#define WINDOW_H 2
#define WINDOW_W 2
#define STRIDE_H 2
#define STRIDE_W 2
#define PAD_TOP 0
#define PAD_LEFT 0
#define PAD_BOTTOM 0
#define PAD_RIGHT 0
#define X_ALLOC_H 8
#define X_ALLOC_W 8
#define X_HALO_TOP 0
#define X_HALO_LEFT 0
#define X_STRIDE_C 16
#define Y_ALLOC_H 4
#define Y_ALLOC_W 4
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#define VECTOR_WIDTH 16
#define GATE ACT_NONE
#define GATE_SLOPE 0.0f
#endif

#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

#if defined(POOL_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y)
{
    const int ct = get_global_id(0);
    const int ow = get_global_id(1);
    const int row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || ow >= OUT_W) return;
    const int n = row / OUT_H;
    const int oh = row % OUT_H;
    const int c0 = ct * VECTOR_WIDTH;
    const int top = oh * STRIDE_H - PAD_TOP;
    const int left = ow * STRIDE_W - PAD_LEFT;
    realV result = (realV)(IS_MAX ? -INFINITY : 0.0f);
    int taps = 0;
    for (int r = 0; r < WINDOW_H; ++r) {
        const int ih = top + r;
        if (ih < 0 || ih >= IN_H) continue;
        for (int s = 0; s < WINDOW_W; ++s) {
            const int iw = left + s;
            if (iw < 0 || iw >= IN_W) continue;
            const realV v = LOADV(0, x + AT(X, n, ih, iw, c0));
            result = IS_MAX ? fmax(result, v) : result + v;
            ++taps;
        }
    }
#if !IS_MAX
#if COUNT_PAD
    /* the window clipped to the declared padding (not to the ceil-rounding overhang) */
    const int h_end = min(top + WINDOW_H, IN_H + PAD_BOTTOM), w_end = min(left + WINDOW_W, IN_W + PAD_RIGHT);
    taps = (h_end - top) * (w_end - left);
#endif
    result = result / (float)taps;
#endif
    STOREV(result, 0, y + AT(Y, n, oh, ow, c0));
}
#endif

#if defined(GLOBAL_AVG_FORWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global float *restrict y)
{
    const int ct = get_global_id(0);
    const int n = get_global_id(1);
    if (ct >= CHANNEL_VECTORS) return;
    const int c0 = ct * VECTOR_WIDTH;
    realV sum = (realV)(0.0f);
    for (int h = 0; h < IN_H; ++h)
        for (int v = 0; v < IN_W; ++v) sum += LOADV(0, x + AT(X, n, h, v, c0));
    STOREV(sum * (1.0f / (float)(IN_H * IN_W)), 0, y + AT(Y, n, 0, 0, c0));
}
#endif

#if defined(POOL_BACKWARD)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global float *restrict dx)
{
    const int ct = get_global_id(0);
    const int iw = get_global_id(1);
    const int row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || iw >= IN_W) return;
    const int n = row / IN_H;
    const int ih = row % IN_H;
    const int c0 = ct * VECTOR_WIDTH;
    /* the windows holding (ih, iw): oh * STRIDE_H - PAD_TOP <= ih < that + WINDOW_H */
    const int oh_first = max(0, (ih + PAD_TOP - WINDOW_H + STRIDE_H) / STRIDE_H);
    const int oh_last = min(OUT_H - 1, (ih + PAD_TOP) / STRIDE_H);
    const int ow_first = max(0, (iw + PAD_LEFT - WINDOW_W + STRIDE_W) / STRIDE_W);
    const int ow_last = min(OUT_W - 1, (iw + PAD_LEFT) / STRIDE_W);
    realV total = (realV)(0.0f);
    for (int oh = oh_first; oh <= oh_last; ++oh) {
        for (int ow = ow_first; ow <= ow_last; ++ow) {
            const int top = oh * STRIDE_H - PAD_TOP, left = ow * STRIDE_W - PAD_LEFT;
            if (ih < top || ih >= top + WINDOW_H || iw < left || iw >= left + WINDOW_W) continue;
            const realV g = LOADV(0, dy + AT(Y, n, oh, ow, c0));
#if IS_MAX
            realV best = (realV)(-INFINITY);
            realV mine = (realV)(0.0f); /* 1 in the lanes where (ih, iw) is the first maximum */
            for (int r = 0; r < WINDOW_H; ++r) {
                const int h = top + r;
                if (h < 0 || h >= IN_H) continue;
                for (int s = 0; s < WINDOW_W; ++s) {
                    const int w = left + s;
                    if (w < 0 || w >= IN_W) continue;
                    const realV v = LOADV(0, x + AT(X, n, h, w, c0));
                    const realV is_new = sign(fmax(v - best, 0.0f)); /* 1 where v > best */
                    best = fmax(best, v);
                    mine = (h == ih && w == iw) ? is_new : mine * (1.0f - is_new);
                }
            }
            total += g * mine;
#else
            /* divide by the taps the forward pass counted for this window */
#if COUNT_PAD
            const int taps = (min(top + WINDOW_H, IN_H + PAD_BOTTOM) - top)
                             * (min(left + WINDOW_W, IN_W + PAD_RIGHT) - left);
#else
            const int taps = (min(top + WINDOW_H, IN_H) - max(top, 0))
                             * (min(left + WINDOW_W, IN_W) - max(left, 0));
#endif
            total += g / (float)taps;
#endif
        }
    }
    __global float *out = dx + AT(X, n, ih, iw, c0); /* dx has x's layout */
#if ACCUMULATE
    total += LOADV(0, out);
#endif
    STOREV(total, 0, out);
}
#endif

#if defined(POOL_BACKWARD_WINDOWS)
__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict dy,
                          __global float *restrict dx)
{
    const int ct = get_global_id(0);
    const int ow = get_global_id(1);
    const int row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || ow >= OUT_W) return;
    const int n = row / OUT_H;
    const int oh = row % OUT_H;
    const int c0 = ct * VECTOR_WIDTH;
    const realV g = LOADV(0, dy + AT(Y, n, oh, ow, c0));
#if IS_MAX
    realV v[WINDOW_H * WINDOW_W];
    realV best = (realV)(-INFINITY);
#pragma unroll
    for (int t = 0; t < WINDOW_H * WINDOW_W; ++t) {
        v[t] = LOADV(0, x + AT(X, n, oh * STRIDE_H + t / WINDOW_W, ow * STRIDE_W + t % WINDOW_W, c0));
        best = fmax(best, v[t]);
    }
    realV taken = (realV)(0.0f); /* 1 in the lanes whose first maximum is already passed */
#endif
#pragma unroll
    for (int t = 0; t < WINDOW_H * WINDOW_W; ++t) {
#if IS_MAX
        const realV mine = (1.0f - sign(best - v[t])) * (1.0f - taken); /* v == best, first */
        taken += mine;
        realV total = g * mine;
#else
        realV total = g * (1.0f / (float)(WINDOW_H * WINDOW_W));
#endif
        const int at = AT(X, n, oh * STRIDE_H + t / WINDOW_W, ow * STRIDE_W + t % WINDOW_W, c0);
#if defined(GATE) && GATE != ACT_NONE
#if IS_MAX
        total = ACTIVATE_BACKWARD(v[t], total, GATE, GATE_SLOPE);
#else
        total = ACTIVATE_BACKWARD(LOADV(0, x + at), total, GATE, GATE_SLOPE);
#endif
#endif
#if ACCUMULATE
        total += LOADV(0, dx + at);
#endif
        STOREV(total, 0, dx + at);
    }
}
#endif

#if defined(GLOBAL_AVG_BACKWARD)
__kernel void KERNEL_NAME(__global const float *restrict dy, __global float *restrict dx)
{
    const int ct = get_global_id(0), w = get_global_id(1), row = get_global_id(2);
    if (ct >= CHANNEL_VECTORS || w >= IN_W) return;
    const int n = row / IN_H, h = row % IN_H, c0 = ct * VECTOR_WIDTH;
    realV g = LOADV(0, dy + AT(Y, n, 0, 0, c0)) * (1.0f / (float)(IN_H * IN_W));
    __global float *out = dx + AT(X, n, h, w, c0);
#if ACCUMULATE
    g += LOADV(0, out);
#endif
    STOREV(g, 0, out);
}
#endif
