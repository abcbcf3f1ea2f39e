/* peak.cl -- what the device can do at best, to judge the generated kernels against.
 *
 * PEAK_FMA: every work-item runs ROUNDS of 8 independent float16 fma chains in registers
 *   (16 * 8 * 2 * ROUNDS flops) and stores one value so nothing is optimised away.
 * PEAK_COPY: y[i] = x[i] as float4, for the memory bandwidth.
 */

#ifndef KERNEL_NAME
#define KERNEL_NAME peak_fma
#define PEAK_FMA 1
#define ROUNDS 256
#endif

#if defined(PEAK_FMA)
__kernel void KERNEL_NAME(__global float *out, const float seed)
{
    /* lanes and chains all start apart, and every lane reaches the output, so no compiler can
     * fold the chains together or drop lanes */
    const float16 lanes = (float16)(0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f,
                                    10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f) * 1e-3f
                          + (float)get_global_id(0) * 1e-7f + seed;
    float16 a = lanes, d = lanes + 0.1f, e = lanes + 0.2f, f = lanes + 0.3f, g = lanes + 0.4f;
    float16 h = lanes + 0.5f, i = lanes + 0.6f, j = lanes + 0.7f;
    const float16 b = lanes * 0.5f, c = (float16)(0.9999f);
    for (int round = 0; round < ROUNDS; ++round) {
        a = fma(a, c, b); d = fma(d, c, b); e = fma(e, c, b); f = fma(f, c, b);
        g = fma(g, c, b); h = fma(h, c, b); i = fma(i, c, b); j = fma(j, c, b);
    }
    out[get_global_id(0)] = hsum16(a + d + e + f + g + h + i + j);
}
#endif

#if defined(PEAK_COPY)
__kernel void KERNEL_NAME(__global const float4 *restrict x, __global float4 *restrict y)
{
    y[get_global_id(0)] = x[get_global_id(0)];
}
#endif
