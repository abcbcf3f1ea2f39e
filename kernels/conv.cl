/* conv.cl -- 2-D convolution, forward.
 *
 * Data layout (NHWC, see common.cl):
 *   x  (N, X_ALLOC_H, X_ALLOC_W, X_STRIDE_C), a zero halo of at least the padding around each image
 *   w  (GROUPS, KERNEL_H, KERNEL_W, C_PER_GROUP, K_ALLOC / GROUPS): a run of VECTOR_WIDTH filters
 *      is one contiguous load (the host re-lays PyTorch's (K, C/groups, kh, kw) weights)
 *   b  (K_ALLOC), zero beyond FILTERS
 *   y  (N, Y_ALLOC_H, Y_ALLOC_W, Y_STRIDE_C)
 *
 * An implicit GEMM with register tiles: work-item (kt, pt, n * OUT_H + oh) computes TILE_PIXELS
 * consecutive output pixels of row oh times VECTOR_WIDTH output channels starting at
 * kt * VECTOR_WIDTH, reducing over (r, s, c) in registers. No local memory and no barriers: on a
 * CPU (PoCL) wide vectors and register tiles win; a GPU gets its own tile sizes from the profile.
 * Reads never leave the halo, so the inner loop has no bounds checks; the last pixel tile of a row
 * clamps its reads and skips its stores past OUT_W.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME conv_forward
#define IN_CHANNELS 8
#define FILTERS 16
#define GROUPS 1
#define KERNEL_H 3
#define KERNEL_W 3
#define STRIDE_H 1
#define STRIDE_W 1
#define DILATION_H 1
#define DILATION_W 1
#define PAD_TOP 1
#define PAD_LEFT 1
#define OUT_H 8
#define OUT_W 8
#define X_ALLOC_H 10
#define X_ALLOC_W 10
#define X_HALO_TOP 1
#define X_HALO_LEFT 1
#define X_STRIDE_C 8
#define Y_ALLOC_H 8
#define Y_ALLOC_W 8
#define Y_HALO_TOP 0
#define Y_HALO_LEFT 0
#define Y_STRIDE_C 16
#define K_ALLOC 16
#define VECTOR_WIDTH 16
#define TILE_PIXELS 8
#define HAS_BIAS 1
#define EPILOGUE ACT_RELU
#define EPILOGUE_SLOPE 0.0f
#endif

/* derived values */
#define C_PER_GROUP (IN_CHANNELS / GROUPS)
#define K_PER_GROUP (K_ALLOC / GROUPS)
#define K_TILES (K_ALLOC / VECTOR_WIDTH)
#define PIXEL_TILES ((OUT_W + TILE_PIXELS - 1) / TILE_PIXELS)
#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV CONCAT(vload, VECTOR_WIDTH)
#define STOREV CONCAT(vstore, VECTOR_WIDTH)

__kernel void KERNEL_NAME(__global const float *restrict x, __global const float *restrict w,
                          __global const float *restrict b, __global float *restrict y)
{
    const int kt = get_global_id(0);
    const int pt = get_global_id(1);
    const int row = get_global_id(2);
    if (kt >= K_TILES || pt >= PIXEL_TILES) return; /* global sizes are rounded up */
    const int n = row / OUT_H;
    const int oh = row % OUT_H;
    const int k0 = kt * VECTOR_WIDTH;
    const int group = k0 / K_PER_GROUP; /* VECTOR_WIDTH divides K_PER_GROUP */
    const int first_pixel = pt * TILE_PIXELS;

    /* where each pixel's window starts in x (top-left tap, first channel of the group) */
    int window[TILE_PIXELS];
#pragma unroll
    for (int p = 0; p < TILE_PIXELS; ++p) {
        const int ow = min(first_pixel + p, OUT_W - 1);
        window[p] = AT(X, n, oh * STRIDE_H - PAD_TOP, ow * STRIDE_W - PAD_LEFT, group * C_PER_GROUP);
    }
    __global const float *filters = w + group * (KERNEL_H * KERNEL_W * C_PER_GROUP * K_PER_GROUP)
                                    + (k0 - group * K_PER_GROUP);

    realV acc[TILE_PIXELS];
#pragma unroll
    for (int p = 0; p < TILE_PIXELS; ++p) acc[p] = (realV)(0.0f);

    for (int r = 0; r < KERNEL_H; ++r) {
        for (int s = 0; s < KERNEL_W; ++s) {
            const int tap = (r * DILATION_H * X_ALLOC_W + s * DILATION_W) * X_STRIDE_C;
            __global const float *wrs = filters + (r * KERNEL_W + s) * C_PER_GROUP * K_PER_GROUP;
            for (int c = 0; c < C_PER_GROUP; ++c) {
                const realV wv = LOADV(0, wrs + c * K_PER_GROUP);
#pragma unroll
                for (int p = 0; p < TILE_PIXELS; ++p)
                    acc[p] = fma((realV)(x[window[p] + tap + c]), wv, acc[p]);
            }
        }
    }

#if HAS_BIAS
    const realV bias = LOADV(0, b + k0);
#else
    const realV bias = (realV)(0.0f);
#endif
#pragma unroll
    for (int p = 0; p < TILE_PIXELS; ++p) {
        if (first_pixel + p < OUT_W) {
            const realV v = acc[p] + bias;
            STOREV(ACTIVATE(v, EPILOGUE, EPILOGUE_SLOPE), 0, y + AT(Y, n, oh, first_pixel + p, k0));
        }
    }
}
