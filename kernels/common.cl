/* common.cl -- definitions shared by every generated kernel; included once, first, per program.
 *
 * Activations are stored NHWC: (batch, height, width, channels), each image padded with a zero
 * halo that the convolutions reading it need (so their inner loops have no bounds checks) and
 * channels padded to CHANNEL_STRIDE (a multiple of the vector width). Kernels take the layout of
 * every tensor as compile-time constants (see convgraph/codegen/layout.py).
 * OpenCL C 1.2: no double, every float literal suffixed with f.
 */

#define CONCAT_(a, b) a##b
#define CONCAT(a, b) CONCAT_(a, b)

/* floatN, vloadN and vstoreN for N = 1, 2, 4, 8, 16, so one kernel serves every vector width:
 * VLOAD(N) and VSTORE(N) name vloadN and vstoreN. They paste N onto names that are no macros:
 * pasting onto vload itself breaks where the compiler defines vload as a macro (PoCL renames it to
 * _cl_vload, so CONCAT(vload, 1) would become the undefined _cl_vload1). */
typedef float float1;
#define VLOAD_1(offset, pointer) ((pointer)[offset])
#define VLOAD_2 vload2
#define VLOAD_4 vload4
#define VLOAD_8 vload8
#define VLOAD_16 vload16
#define VSTORE_1(value, offset, pointer) ((pointer)[offset] = (value))
#define VSTORE_2 vstore2
#define VSTORE_4 vstore4
#define VSTORE_8 vstore8
#define VSTORE_16 vstore16
#define VLOAD(n) CONCAT(VLOAD_, n)
#define VSTORE(n) CONCAT(VSTORE_, n)

/* Epilogues fused into conv/fc, and the standalone activations, by number. */
#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_LEAKY_RELU 2
#define ACT_SIGMOID 3
#define ACT_TANH 4
#define ACT_CLIP 5
#define ACT_HARDSIGMOID 6
#define ACT_HARDSWISH 7
#define ACT_SILU 8
#define ACT_GELU 9
#define ACT_GELU_TANH 10
#define ACT_ELU 11

/* An activation's settings arrive as one compile-time constant, slope: a float, or
 * (float2)(a, b) for the two of clip (min, max) and hardsigmoid (alpha, beta). SETTING_A and
 * SETTING_B read either (a float cast to float2 is both), so every branch of the macros below
 * type-checks whatever the activation. */
#define SETTING_A(s) (((float2)(s)).s0)
#define SETTING_B(s) (((float2)(s)).s1)

/* The smooth activations' pieces (v may be a vector). GELU's tanh form is PyTorch's
 * approximate='tanh': 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))). */
#define SILU_SIGMOID(v) (1.0f / (1.0f + exp(-(v))))
#define GELU_CDF(v) (0.5f * (1.0f + erf((v) * 0.70710678118654752f)))
#define GELU_PDF(v) (0.39894228040143268f * exp(-0.5f * (v) * (v)))
#define GELU_TANH_OF(v) tanh(0.79788456080286536f * ((v) + 0.044715f * (v) * (v) * (v)))

/* ACTIVATE(v, kind, slope): kind and slope are compile-time constants, so this folds away. */
#define ACTIVATE(v, kind, slope)                                                               \
    ((kind) == ACT_RELU ? fmax((v), 0.0f)                                                      \
     : (kind) == ACT_LEAKY_RELU ? fmax((v), 0.0f) + SETTING_A(slope) * fmin((v), 0.0f)        \
     : (kind) == ACT_SIGMOID ? 1.0f / (1.0f + exp(-(v)))                                      \
     : (kind) == ACT_TANH ? tanh(v)                                                           \
     : (kind) == ACT_CLIP ? clamp((v), SETTING_A(slope), SETTING_B(slope))                    \
     : (kind) == ACT_HARDSIGMOID                                                              \
         ? clamp(SETTING_A(slope) * (v) + SETTING_B(slope), 0.0f, 1.0f)                       \
     : (kind) == ACT_HARDSWISH ? (v) * clamp((v) * (1.0f / 6.0f) + 0.5f, 0.0f, 1.0f)          \
     : (kind) == ACT_SILU ? (v) * SILU_SIGMOID(v)                                             \
     : (kind) == ACT_GELU ? (v) * GELU_CDF(v)                                                 \
     : (kind) == ACT_GELU_TANH ? 0.5f * (v) * (1.0f + GELU_TANH_OF(v))                        \
     : (kind) == ACT_ELU ? fmax((v), 0.0f) + SETTING_A(slope) * expm1(fmin((v), 0.0f))        \
     : (v))

/* POOLED_MAX(a, b, c, d, kind, slope, first): a 2x2 max pool of the activations of four values,
 * as a pool folded into a layer's epilogue computes it. first (a compile-time 0 or 1): the
 * activation never decreases (the op declares commutes_with_max), so max(f(a), ...) = f(max(a,
 * ...)): the maximum first and one activation; else (silu, gelu, hardswish) f of each first. */
#define POOLED_MAX(a, b, c, d, kind, slope, first)                                             \
    ((first) ? ACTIVATE(fmax(fmax((a), (b)), fmax((c), (d))), kind, slope)                     \
             : fmax(fmax(ACTIVATE((a), kind, slope), ACTIVATE((b), kind, slope)),              \
                    fmax(ACTIVATE((c), kind, slope), ACTIVATE((d), kind, slope))))

/* Index of element (n, h, w, c) of a tensor whose layout macros start with PREFIX. */
#define AT(PREFIX, n, h, w, c)                                                                 \
    ((((n) * PREFIX##_ALLOC_H + (h) + PREFIX##_HALO_TOP) * PREFIX##_ALLOC_W + (w)               \
      + PREFIX##_HALO_LEFT) * PREFIX##_STRIDE_C + (c))

/* The pixel-wise kernels (elementwise.cl, norm.cl) take their shapes at run time, so that one
 * compiled kernel serves every layer of a kind: an int4 GRID (channel vectors, width, height, 0)
 * and per tensor an int4 LAYOUT (element (0, 0, 0, 0)'s index past the halo, then elements per
 * image, per row, per pixel), indexed by AT_RUN. */
#define AT_RUN(LAYOUT, n, h, w, c)                                                             \
    ((LAYOUT).s0 + (n) * (LAYOUT).s1 + (h) * (LAYOUT).s2 + (w) * (LAYOUT).s3 + (c))

/* The work-item (ct, w, n * height + h) of such a GRID: its channel vector ct (channels from
 * c0), pixel (h, w) of image n; past the grid's channel vectors or width (a global size rounded
 * up to whole work-groups), it returns. */
#define PIXEL_OF(GRID)                                                                         \
    const int ct = get_global_id(0), w = get_global_id(1), row = get_global_id(2);             \
    if (ct >= (GRID).s0 || w >= (GRID).s1) return;                                             \
    const int n = row / (GRID).s2, h = row % (GRID).s2, c0 = ct * VECTOR_WIDTH

/* Horizontal sums of the vector types: reducing a vector of partial sums to one float. */
inline float hsum1(float v) { return v; }
inline float hsum2(float2 v) { return v.s0 + v.s1; }
inline float hsum4(float4 v) { return dot(v, (float4)(1.0f)); }
inline float hsum8(float8 v) { return hsum4(v.lo + v.hi); }
inline float hsum16(float16 v) { return hsum8(v.lo + v.hi); }

/* The derivative of an activation times the incoming gradient g, from y: the activation's
 * OUTPUT for most (the op declares derivative_from = "output": relu ... elu, where the output
 * determines the slope), its INPUT for hardswish, silu and gelu (derivative_from = "input"),
 * whose output does not (training keeps their input: they are never fused there). */
#define ACTIVATE_BACKWARD(y, g, kind, slope)                                                   \
    ((kind) == ACT_RELU ? (g) * sign(fmax((y), 0.0f))                                          \
     : (kind) == ACT_LEAKY_RELU                                                               \
         ? (g) * (SETTING_A(slope) + (1.0f - SETTING_A(slope)) * sign(fmax((y), 0.0f)))       \
     : (kind) == ACT_SIGMOID ? (g) * (y) * (1.0f - (y))                                       \
     : (kind) == ACT_TANH ? (g) * (1.0f - (y) * (y))                                          \
     : (kind) == ACT_CLIP                                                                     \
         ? (g) * sign(fmax((y) - SETTING_A(slope), 0.0f)) * sign(fmax(SETTING_B(slope) - (y), 0.0f)) \
     : (kind) == ACT_HARDSIGMOID                                                              \
         ? (g) * SETTING_A(slope) * sign(fmax((y), 0.0f)) * sign(fmax(1.0f - (y), 0.0f))      \
     : (kind) == ACT_HARDSWISH                                                                \
         ? (g) * (step(-3.0f, (y)) * (1.0f - step(3.0f, (y))) * ((y) * (1.0f / 3.0f) + 0.5f)  \
                  + step(3.0f, (y)))                                                          \
     : (kind) == ACT_SILU                                                                     \
         ? (g) * SILU_SIGMOID(y) * (1.0f + (y) * (1.0f - SILU_SIGMOID(y)))                    \
     : (kind) == ACT_GELU ? (g) * (GELU_CDF(y) + (y) * GELU_PDF(y))                           \
     : (kind) == ACT_GELU_TANH                                                                \
         ? (g) * (0.5f * (1.0f + GELU_TANH_OF(y))                                             \
                  + 0.5f * (y) * (1.0f - GELU_TANH_OF(y) * GELU_TANH_OF(y))                   \
                    * 0.79788456080286536f * (1.0f + 3.0f * 0.044715f * (y) * (y)))           \
     : (kind) == ACT_ELU                                                                      \
         ? (g) * (sign(fmax((y), 0.0f))                                                       \
                  + (1.0f - sign(fmax((y), 0.0f))) * ((y) + SETTING_A(slope)))                \
     : (g))

/* A counter-based random number in [0, 1): the same (seed, index) always gives the same number,
 * so dropout's backward pass recomputes the forward mask instead of storing it. */
inline float uniform_hash(uint seed, uint index)
{
    uint h = index * 0x9E3779B9u ^ seed;
    h ^= h >> 16; h *= 0x7FEB352Du; h ^= h >> 15; h *= 0x846CA68Bu; h ^= h >> 16;
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}
