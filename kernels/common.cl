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

/* ACTIVATE(v, kind, slope): kind and slope are compile-time constants, so this folds away. */
#define ACTIVATE(v, kind, slope)                                                               \
    ((kind) == ACT_RELU ? fmax((v), 0.0f)                                                      \
     : (kind) == ACT_LEAKY_RELU ? fmax((v), 0.0f) + (slope) * fmin((v), 0.0f)                 \
     : (kind) == ACT_SIGMOID ? 1.0f / (1.0f + exp(-(v)))                                      \
     : (kind) == ACT_TANH ? tanh(v)                                                           \
     : (v))

/* Index of element (n, h, w, c) of a tensor whose layout macros start with PREFIX. */
#define AT(PREFIX, n, h, w, c)                                                                 \
    ((((n) * PREFIX##_ALLOC_H + (h) + PREFIX##_HALO_TOP) * PREFIX##_ALLOC_W + (w)               \
      + PREFIX##_HALO_LEFT) * PREFIX##_STRIDE_C + (c))

/* Horizontal sums of the vector types: reducing a vector of partial sums to one float. */
inline float hsum1(float v) { return v; }
inline float hsum2(float2 v) { return v.s0 + v.s1; }
inline float hsum4(float4 v) { return dot(v, (float4)(1.0f)); }
inline float hsum8(float8 v) { return hsum4(v.lo + v.hi); }
inline float hsum16(float16 v) { return hsum8(v.lo + v.hi); }

/* The derivative of an activation, from its OUTPUT y (all of them can be written so), times the
 * incoming gradient g: backward passes never need the pre-activation values. */
#define ACTIVATE_BACKWARD(y, g, kind, slope)                                                   \
    ((kind) == ACT_RELU ? (g) * sign(fmax((y), 0.0f))                                          \
     : (kind) == ACT_LEAKY_RELU ? (g) * ((slope) + (1.0f - (slope)) * sign(fmax((y), 0.0f))) \
     : (kind) == ACT_SIGMOID ? (g) * (y) * (1.0f - (y))                                       \
     : (kind) == ACT_TANH ? (g) * (1.0f - (y) * (y))                                          \
     : (g))

/* A counter-based random number in [0, 1): the same (seed, index) always gives the same number,
 * so dropout's backward pass recomputes the forward mask instead of storing it. */
inline float uniform_hash(uint seed, uint index)
{
    uint h = index * 0x9E3779B9u ^ seed;
    h ^= h >> 16; h *= 0x7FEB352Du; h ^= h >> 15; h *= 0x846CA68Bu; h ^= h >> 16;
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}
