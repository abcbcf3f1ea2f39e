/* optim.cl -- optimizer steps, one work-item per parameter value, in place.
 *
 * Parameters, gradients and optimizer state share one flat layout (the kernels' own, padding
 * included: padding values have zero gradients, so they stay zero). The learning rate, the
 * step count and the number of values (count) are run-time arguments, so schedules need no
 * rebuild and one compiled kernel serves every parameter.
 * SGD_STEP:  g += WEIGHT_DECAY w; v = MOMENTUM v + g; w -= lr (NESTEROV ? g + MOMENTUM v : v)
 *            (PyTorch's SGD, dampening 0).
 * ADAM_STEP: Adam, or AdamW when DECOUPLED (w -= lr WEIGHT_DECAY w instead of an L2 gradient);
 *            the bias corrections 1 - beta^t come from the host as arguments.
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME sgd_step
#define SGD_STEP 1
#define MOMENTUM 0.9f
#define NESTEROV 0
#define WEIGHT_DECAY 0.0f
#define BETA1 0.9f
#define BETA2 0.999f
#define ADAM_EPSILON 1e-8f
#define DECOUPLED 0
#endif

#if defined(SGD_STEP)
__kernel void KERNEL_NAME(__global float *restrict w, __global const float *restrict g,
                          __global float *restrict velocity, const float lr, const int count)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    const float grad = g[i] + WEIGHT_DECAY * w[i];
    const float v = MOMENTUM * velocity[i] + grad;
    velocity[i] = v;
    w[i] -= lr * (NESTEROV ? grad + MOMENTUM * v : v);
}
#endif

#if defined(ADAM_STEP)
__kernel void KERNEL_NAME(__global float *restrict w, __global const float *restrict g,
                          __global float *restrict m, __global float *restrict v, const float lr,
                          const float correction1, const float correction2, const int count)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    float weight = w[i];
    float grad = g[i];
    if (DECOUPLED) weight -= lr * WEIGHT_DECAY * weight;
    else grad += WEIGHT_DECAY * weight;
    const float first = BETA1 * m[i] + (1.0f - BETA1) * grad;
    const float second = BETA2 * v[i] + (1.0f - BETA2) * grad * grad;
    m[i] = first;
    v[i] = second;
    w[i] = weight - lr * (first / correction1) / (sqrt(second / correction2) + ADAM_EPSILON);
}
#endif
