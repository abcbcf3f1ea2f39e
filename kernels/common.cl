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

/* floatN, vloadN and vstoreN for N = 1, 2, 4, 8, 16, so one kernel serves every vector width */
typedef float float1;
#define vload1(offset, pointer) ((pointer)[offset])
#define vstore1(value, offset, pointer) ((pointer)[offset] = (value))

/* Epilogues fused into conv/fc, and the standalone activations, by number. */
#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_LEAKY_RELU 2
#define ACT_SIGMOID 3
#define ACT_TANH 4

/* ACTIVATE(v, kind, slope): kind and slope are compile-time constants, so this folds away. */
#define ACTIVATE(v, kind, slope)                                                               \
    ((kind) == ACT_RELU ? fmax((v), 0.0f)                                                      \
     : (kind) == ACT_LEAKY_RELU ? ((v) > 0.0f ? (v) : (v) * (slope))                          \
     : (kind) == ACT_SIGMOID ? 1.0f / (1.0f + exp(-(v)))                                      \
     : (kind) == ACT_TANH ? tanh(v)                                                           \
     : (v))

/* Index of element (n, h, w, c) of a tensor whose layout macros start with PREFIX. */
#define AT(PREFIX, n, h, w, c)                                                                 \
    ((((n) * PREFIX##_ALLOC_H + (h) + PREFIX##_HALO_TOP) * PREFIX##_ALLOC_W + (w)               \
      + PREFIX##_HALO_LEFT) * PREFIX##_STRIDE_C + (c))
