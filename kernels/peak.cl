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
    float16 a = (float16)(seed), b = (float16)(seed * 0.5f), c = (float16)(1.0001f);
    float16 d = a + 1.0f, e = b + 1.0f, f = a - 1.0f, g = b - 1.0f, h = a * 0.5f;
    float16 i = b * 0.5f, j = a * 0.25f;
    for (int round = 0; round < ROUNDS; ++round) {
        a = fma(a, c, b); d = fma(d, c, b); e = fma(e, c, b); f = fma(f, c, b);
        g = fma(g, c, b); h = fma(h, c, b); i = fma(i, c, b); j = fma(j, c, b);
    }
    const float16 total = a + d + e + f + g + h + i + j;
    out[get_global_id(0)] = total.s0 + total.s7 + total.sf;
}
#endif

#if defined(PEAK_COPY)
__kernel void KERNEL_NAME(__global const float4 *restrict x, __global float4 *restrict y)
{
    y[get_global_id(0)] = x[get_global_id(0)];
}
#endif
