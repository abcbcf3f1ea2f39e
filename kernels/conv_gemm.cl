/* conv_gemm.cl -- the GPU kernel family: convolution and fc as tiled GEMMs through local memory.
 *
 * Data layout (NHWC, see common.cl and conv.cl): x (N, X_ALLOC_H, X_ALLOC_W, X_STRIDE_C) with its
 * zero halo, w (KERNEL_H, KERNEL_W, IN_CHANNELS, K_ALLOC) as conv.cl holds it (ungrouped), y
 * (N, Y_ALLOC_H, Y_ALLOC_W, Y_STRIDE_C). Every kernel here is one GEMM C = A B, C (ROWS x COLUMNS),
 * reducing over DEPTH, with A and B read "implicitly" from the tensors (nothing is unfolded):
 *
 *   CONV_GEMM_FORWARD  rows = the OUT_H * OUT_W output pixels of image n, columns = K_ALLOC filters,
 *                      depth = KERNEL_H * KERNEL_W * IN_CHANNELS (tap-major, channel-minor, as w's
 *                      rows are). The fused epilogue is conv.cl's: bias, activation, and as a
 *                      stride-1 input gradient (a conv of dy with transposed weights) the gate
 *                      (b holds the layer before's activation output) and ACCUMULATE; with
 *                      RESIDUAL (inference: a sum folded in) r, the sum's other input (layout
 *                      R_ALLOC_H ... R_STRIDE_C), added before the activation.
 *   CONV_GEMM_DATA     dx of a strided conv: rows = the IN_H * IN_W input pixels of image n,
 *                      columns = TRANSPOSED_ALLOC channels, depth = KERNEL_H * KERNEL_W * FILTERS;
 *                      A is dy at the output pixel a tap lands on (zero where it falls between
 *                      strides or outside dy), B the transposed, flipped weights (conv.cl's
 *                      CONV_TRANSPOSE_WEIGHTS). ACCUMULATE adds to dx.
 *   CONV_GEMM_WEIGHTS  dw of one split of the batch: rows = the depth of the forward GEMM
 *                      (taps x channels), columns = K_ALLOC, depth = IMAGES_PER_SPLIT x the output
 *                      pixels (images past the batch read as zeros); each split writes its own
 *                      partial weights, which reduction.cl's SUM_SPLITS adds up.
 *   WINOGRAD_GEMM_FORWARD  Winograd's POSITIONS independent GEMMs (winograd.cl's layouts: v (N,
 *                      POSITIONS, TILES, IN_CHANNELS) transformed input tiles, u (POSITIONS,
 *                      IN_CHANNELS, K_ALLOC) transformed filters, m (N, POSITIONS, TILES,
 *                      K_ALLOC) their products): item = group * POSITIONS + position; rows =
 *                      the tiles of the group's IMAGES_PER_GROUP images (rows of images past
 *                      the batch read zeros and store nothing), columns = K_ALLOC, depth =
 *                      IN_CHANNELS. Its inputs and outputs are winograd.cl's transforms'.
 *   WINOGRAD_GEMM_WEIGHTS  the weight gradient's: item = split * POSITIONS + position; du[item]
 *                      (IN_CHANNELS x K_ALLOC, du (SPLITS, POSITIONS, IN_CHANNELS, K_ALLOC))
 *                      = v^T dm over the split's IMAGES_PER_GROUP images' tiles (dm: the
 *                      transformed output-gradient tiles, laid out as m; images past the batch
 *                      read as zeros).
 *   GEMM_FORWARD       fc (dense.cl's layouts): rows = the batch's images, columns = U_ALLOC
 *                      units, depth = the IN_H * IN_W * IN_CHANNELS inputs in (h, w, c) order, as
 *                      w's rows are (the host permutes PyTorch's weights); A is the input volume
 *                      itself (a flatten read by the fc is elided). Bias and fused activation.
 *   GEMM_BACKWARD_DATA    fc's dx = dy w^T: rows = images, columns = inputs (a vector of columns
 *                      stays inside one pixel's channels), depth = UNITS. ACCUMULATE adds to dx.
 *   GEMM_BACKWARD_WEIGHTS fc's dw = x^T dy: rows = inputs, columns = U_ALLOC, depth = the batch.
 * (The batch is a run-time argument of the fc kernels: rows or depth past it are masked.)
 *
 * Two levels of tiles. A work-group of (GROUP_COLUMNS, GROUP_ROWS) work-items computes a tile of
 * TILE_ROWS x TILE_COLUMNS outputs; work-item (tx, ty) computes ITEM_ROWS rows (ty, ty +
 * GROUP_ROWS, ...) times ITEM_VECTORS vectors of VECTOR_WIDTH columns ((tx + f * GROUP_COLUMNS) *
 * VECTOR_WIDTH), in registers. With USE_LOCAL_MEMORY the work-group stages STAGE_DEPTH steps of
 * the reduction of its A rows and B columns in local memory (each element loaded once from global
 * memory serves GROUP_COLUMNS or GROUP_ROWS work-items), between two barriers; with PREFETCH as
 * well, the next stage's loads are issued into registers before this stage's products (double
 * buffering through registers: the loads' latency hides behind the fmas); without local memory,
 * each work-item loads its own operands (no barriers). The grid is exactly whole work-groups: the
 * kernel must run with exactly (GROUP_COLUMNS, GROUP_ROWS, 1) (the plan marks its launches so,
 * and the executor never shrinks them). Every work-item runs every stage, so both barriers are
 * in uniform control flow; rows, columns and depth past the matrix are masked loads (zeros) and
 * skipped stores, never early returns. Work-item (tx, ty, n) of group (gc, gr): image (or split) n
 * (Winograd's: group or split of images n / POSITIONS, position n % POSITIONS).
 */

#ifndef KERNEL_NAME /* defaults, so that this file compiles on its own */
#define KERNEL_NAME conv_gemm_forward
#define CONV_GEMM_FORWARD 1
#define IN_CHANNELS 8
#define FILTERS 16
#define KERNEL_H 3
#define KERNEL_W 3
#define STRIDE_H 1
#define STRIDE_W 1
#define DILATION_H 1
#define DILATION_W 1
#define PAD_TOP 1
#define PAD_LEFT 1
#define IN_H 8
#define IN_W 8
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
#define TRANSPOSED_ALLOC 8
#define IMAGES_PER_SPLIT 2
#define POSITIONS 16
#define TILES 16
#define IMAGES_PER_GROUP 1
#define UNITS 10
#define U_ALLOC 16
#define HAS_BIAS 1
#define EPILOGUE ACT_RELU
#define EPILOGUE_SLOPE 0.0f
#define GATE ACT_NONE
#define GATE_SLOPE 0.0f
#define ACCUMULATE 0
#define VECTOR_WIDTH 4
#define ITEM_ROWS 4
#define ITEM_VECTORS 1
#define GROUP_ROWS 8
#define GROUP_COLUMNS 4
#define STAGE_DEPTH 8
#define USE_LOCAL_MEMORY 1
#define PREFETCH 0
#endif

/* derived values */
#define TILE_ROWS (GROUP_ROWS * ITEM_ROWS)
#define TILE_VECTORS (GROUP_COLUMNS * ITEM_VECTORS) /* vectors of columns in a work-group's tile */
#define TILE_COLUMNS (TILE_VECTORS * VECTOR_WIDTH)
#define GROUP_SIZE (GROUP_ROWS * GROUP_COLUMNS)
/* a_stage's lines are one float longer than the tile's rows: consecutive work-items store
 * consecutive k, a line apart, which with lines a multiple of the bank count would all fall in
 * one local-memory bank (with A_ROWS_CONTIGUOUS they store along a line) */
#define A_STRIDE (TILE_ROWS + 1)
#define realV CONCAT(float, VECTOR_WIDTH)
#define LOADV VLOAD(VECTOR_WIDTH)
#define STOREV VSTORE(VECTOR_WIDTH)

/* Element i of the stage starting at reduction step k0, as the work-group lays it out: of A,
 * step k0 + A_STEP(i) of row first_row + A_ROW(i) (below the kernels' matrices); of B, the
 * vector of columns first_column + i % TILE_VECTORS * VECTOR_WIDTH of step k0 + i /
 * TILE_VECTORS (zero past the matrix). PREFETCH_STAGE loads a work-item's share of a stage
 * into a_next and b_next. */
#define STAGE_A(k0, i)                                                                          \
    ((k0) + A_STEP(i) < DEPTH && first_row + A_ROW(i) < ROWS                                    \
         ? A_ELEMENT(first_row + A_ROW(i), (k0) + A_STEP(i)) : 0.0f)
#define STAGE_B(k0, i)                                                                          \
    ((k0) + (i) / TILE_VECTORS < DEPTH && first_column + (i) % TILE_VECTORS * VECTOR_WIDTH < COLUMNS \
         ? B_VECTOR((k0) + (i) / TILE_VECTORS, first_column + (i) % TILE_VECTORS * VECTOR_WIDTH) \
         : (realV)(0.0f))
#define A_LOADS ((STAGE_DEPTH * TILE_ROWS + GROUP_SIZE - 1) / GROUP_SIZE)
#define B_LOADS ((STAGE_DEPTH * TILE_VECTORS + GROUP_SIZE - 1) / GROUP_SIZE)
#define PREFETCH_STAGE(k0)                                                                      \
    do {                                                                                        \
        for (int j = 0; j < A_LOADS; ++j) {                                                     \
            const int i = local_id + j * GROUP_SIZE;                                            \
            a_next[j] = i < STAGE_DEPTH * TILE_ROWS ? STAGE_A(k0, i) : 0.0f;                    \
        }                                                                                       \
        for (int j = 0; j < B_LOADS; ++j) {                                                     \
            const int i = local_id + j * GROUP_SIZE;                                            \
            b_next[j] = i < STAGE_DEPTH * TILE_VECTORS ? STAGE_B(k0, i) : (realV)(0.0f);        \
        }                                                                                       \
    } while (0)

/* Each kernel names its matrices: ROWS, COLUMNS, DEPTH; A_ELEMENT(row, k) (a float, called only
 * for row < ROWS and k < DEPTH) and B_VECTOR(k, column) (VECTOR_WIDTH columns from ``column``,
 * called only for k < DEPTH and column < COLUMNS); ``item`` is the image (or split). */
#if defined(CONV_GEMM_FORWARD)
#define ROWS (OUT_H * OUT_W)
#define COLUMNS K_ALLOC
#define DEPTH (KERNEL_H * KERNEL_W * IN_CHANNELS)
#ifndef RESIDUAL /* no sum folded in */
#define RESIDUAL 0
#endif
#if RESIDUAL
#define RESIDUAL_ARGUMENT , __global const float *restrict r
#else
#define RESIDUAL_ARGUMENT
#endif
#define KERNEL_ARGUMENTS __global const float *restrict x, __global const float *restrict w, \
                         __global const float *restrict b, __global float *restrict y       \
                         RESIDUAL_ARGUMENT
/* the input under tap (k / IN_CHANNELS) of output pixel ``row``, channel k % IN_CHANNELS: reads
 * stay inside the halo */
#define TAP_R(k) ((k) / IN_CHANNELS / KERNEL_W)
#define TAP_S(k) ((k) / IN_CHANNELS % KERNEL_W)
#define A_ELEMENT(row, k)                                                                      \
    x[AT(X, item, (row) / OUT_W * STRIDE_H - PAD_TOP + TAP_R(k) * DILATION_H,                 \
         (row) % OUT_W * STRIDE_W - PAD_LEFT + TAP_S(k) * DILATION_W, (k) % IN_CHANNELS)]
#define B_VECTOR(k, column) LOADV(0, w + (k) * K_ALLOC + (column))

#elif defined(CONV_GEMM_DATA)
#define ROWS (IN_H * IN_W)
#define COLUMNS TRANSPOSED_ALLOC
#define DEPTH (KERNEL_H * KERNEL_W * FILTERS)
#define KERNEL_ARGUMENTS __global const float *restrict dy, __global const float *restrict wt, \
                         __global float *restrict dx
/* dy (layout Y) at the output pixel that tap (r, s) of input pixel ``row`` comes from, filter
 * k % FILTERS; zero where the tap falls between strides or outside dy */
inline float CONCAT(landing_gradient_, KERNEL_NAME)(__global const float *restrict dy, int item,
                                                   int row, int k)
{
    const int tap = k / FILTERS;
    const int oh_scaled = row / IN_W + PAD_TOP - tap / KERNEL_W * DILATION_H;
    const int ow_scaled = row % IN_W + PAD_LEFT - tap % KERNEL_W * DILATION_W;
    const int oh = oh_scaled / STRIDE_H, ow = ow_scaled / STRIDE_W;
    const int lands = oh_scaled >= 0 && ow_scaled >= 0 && oh_scaled % STRIDE_H == 0
                      && ow_scaled % STRIDE_W == 0 && oh < OUT_H && ow < OUT_W;
    return lands ? dy[AT(Y, item, oh, ow, k % FILTERS)] : 0.0f;
}
#define A_ELEMENT(row, k) CONCAT(landing_gradient_, KERNEL_NAME)(dy, item, (row), (k))
/* wt (KERNEL_H, KERNEL_W, FILTERS, TRANSPOSED_ALLOC) is flipped in space: tap t of dx's gather
 * is flipped tap KERNEL_H * KERNEL_W - 1 - t */
#define B_VECTOR(k, column)                                                                    \
    LOADV(0, wt + ((KERNEL_H * KERNEL_W - 1 - (k) / FILTERS) * FILTERS + (k) % FILTERS)        \
                   * TRANSPOSED_ALLOC + (column))

#elif defined(CONV_GEMM_WEIGHTS)
#define PIXELS (OUT_H * OUT_W)
#define ROWS (KERNEL_H * KERNEL_W * IN_CHANNELS)
#define COLUMNS K_ALLOC
#define DEPTH (IMAGES_PER_SPLIT * PIXELS)
#define KERNEL_ARGUMENTS __global const float *restrict x, __global const float *restrict dy, \
                         __global float *restrict dw, const int batch
/* reduction step k: image item * IMAGES_PER_SPLIT + k / PIXELS, output pixel k % PIXELS */
#define IMAGE(k) (item * IMAGES_PER_SPLIT + (k) / PIXELS)
#define TAP_R(row) ((row) / IN_CHANNELS / KERNEL_W)
#define TAP_S(row) ((row) / IN_CHANNELS % KERNEL_W)
#define A_ELEMENT(row, k)                                                                      \
    (IMAGE(k) < batch                                                                          \
         ? x[AT(X, IMAGE(k), (k) % PIXELS / OUT_W * STRIDE_H - PAD_TOP + TAP_R(row) * DILATION_H, \
                (k) % PIXELS % OUT_W * STRIDE_W - PAD_LEFT + TAP_S(row) * DILATION_W,          \
                (row) % IN_CHANNELS)]                                                          \
         : 0.0f)
#define B_VECTOR(k, column)                                                                    \
    (IMAGE(k) < batch                                                                          \
         ? LOADV(0, dy + AT(Y, IMAGE(k), (k) % PIXELS / OUT_W, (k) % PIXELS % OUT_W, (column))) \
         : (realV)(0.0f))

#elif defined(WINOGRAD_GEMM_FORWARD) || defined(WINOGRAD_GEMM_WEIGHTS)
/* the image of a group's (or split's) tile ``index`` (a row, or a reduction step), and where
 * that tile sits in v, m and dm (in tiles: times IN_CHANNELS or K_ALLOC for floats) */
#define POSITION (item % POSITIONS)
#define TILE_IMAGE(index) (item / POSITIONS * IMAGES_PER_GROUP + (index) / TILES)
#define TILE_AT(index) ((TILE_IMAGE(index) * POSITIONS + POSITION) * TILES + (index) % TILES)
#define COLUMNS K_ALLOC
#if defined(WINOGRAD_GEMM_FORWARD)
#define ROWS (IMAGES_PER_GROUP * TILES)
#define DEPTH IN_CHANNELS
#define KERNEL_ARGUMENTS __global const float *restrict v, __global const float *restrict u, \
                         __global float *restrict m, const int batch
#define A_ELEMENT(row, k) (TILE_IMAGE(row) < batch ? v[TILE_AT(row) * IN_CHANNELS + (k)] : 0.0f)
#define B_VECTOR(k, column) LOADV(0, u + (POSITION * IN_CHANNELS + (k)) * K_ALLOC + (column))
#else
#define ROWS IN_CHANNELS
#define DEPTH (IMAGES_PER_GROUP * TILES)
#define KERNEL_ARGUMENTS __global const float *restrict v, __global const float *restrict dm, \
                         __global float *restrict du, const int batch
#define A_ROWS_CONTIGUOUS 1 /* A's rows are v's channels */
#define A_ELEMENT(row, k) (TILE_IMAGE(k) < batch ? v[TILE_AT(k) * IN_CHANNELS + (row)] : 0.0f)
#define B_VECTOR(k, column)                                                                    \
    (TILE_IMAGE(k) < batch ? LOADV(0, dm + TILE_AT(k) * K_ALLOC + (column)) : (realV)(0.0f))
#endif

#elif defined(GEMM_FORWARD) || defined(GEMM_BACKWARD_DATA) || defined(GEMM_BACKWARD_WEIGHTS)
#define INPUTS (IN_H * IN_W * IN_CHANNELS)
/* input ``i`` (in w's (h, w, c) row order) of image n */
#define INPUT_AT(n, i) AT(X, (n), (i) / (IN_W * IN_CHANNELS), (i) / IN_CHANNELS % IN_W, (i) % IN_CHANNELS)
#if defined(GEMM_FORWARD)
#define ROWS batch
#define COLUMNS U_ALLOC
#define DEPTH INPUTS
#define KERNEL_ARGUMENTS __global const float *restrict x, __global const float *restrict w, \
                         __global const float *restrict b, __global float *restrict y,       \
                         const int batch
#define A_ELEMENT(row, k) x[INPUT_AT(row, k)]
#define B_VECTOR(k, column) LOADV(0, w + (k) * U_ALLOC + (column))
#elif defined(GEMM_BACKWARD_DATA) /* VECTOR_WIDTH 1: B is w transposed, a strided gather */
#define ROWS batch
#define COLUMNS INPUTS
#define DEPTH UNITS
#define KERNEL_ARGUMENTS __global const float *restrict dy, __global const float *restrict w, \
                         __global float *restrict dx, const int batch
#define A_ELEMENT(row, k) dy[AT(Y, (row), 0, 0, (k))]
#define B_VECTOR(k, column) w[(column) * U_ALLOC + (k)]
#else
#define ROWS INPUTS
#define COLUMNS U_ALLOC
#define DEPTH batch
#define KERNEL_ARGUMENTS __global const float *restrict x, __global const float *restrict dy, \
                         __global float *restrict dw, const int batch
#define A_ELEMENT(row, k) x[INPUT_AT(k, row)]
#define B_VECTOR(k, column) LOADV(0, dy + AT(Y, (k), 0, 0, (column)))
#endif
#endif

/* Which element of A's stage work-item i loads: consecutive work-items take consecutive steps
 * (where those are contiguous in memory: x's channels), or with A_ROWS_CONTIGUOUS consecutive
 * rows (the Winograd weight gradient's channels), so that their global loads coalesce */
#if defined(A_ROWS_CONTIGUOUS) && A_ROWS_CONTIGUOUS
#define A_ROW(i) ((i) % TILE_ROWS)
#define A_STEP(i) ((i) / TILE_ROWS)
#else
#define A_ROW(i) ((i) / STAGE_DEPTH)
#define A_STEP(i) ((i) % STAGE_DEPTH)
#endif

__kernel void KERNEL_NAME(KERNEL_ARGUMENTS)
{
    const int tx = get_local_id(0);
    const int ty = get_local_id(1);
    const int first_column = get_group_id(0) * TILE_COLUMNS;
    const int first_row = get_group_id(1) * TILE_ROWS;
#if defined(GEMM_FORWARD) || defined(GEMM_BACKWARD_DATA) || defined(GEMM_BACKWARD_WEIGHTS)
    const int item = 0; /* the batch is the rows (or the depth) */
#else
    const int item = get_global_id(2); /* the image, or the split of the batch */
#endif

    realV acc[ITEM_ROWS][ITEM_VECTORS];
#pragma unroll
    for (int i = 0; i < ITEM_ROWS; ++i)
#pragma unroll
        for (int f = 0; f < ITEM_VECTORS; ++f) acc[i][f] = (realV)(0.0f);

#if USE_LOCAL_MEMORY
    /* a_stage[k][row]: a work-item's rows of one step are GROUP_ROWS apart; b_stage[k][column] */
    __local float a_stage[STAGE_DEPTH * A_STRIDE];
    __local float b_stage[STAGE_DEPTH * TILE_COLUMNS];
    const int local_id = ty * GROUP_COLUMNS + tx;
#if PREFETCH
    /* the next stage's operands wait in registers while this stage's products are computed:
     * element i of a stage is loaded by work-item i % GROUP_SIZE */
    float a_next[A_LOADS];
    realV b_next[B_LOADS];
    PREFETCH_STAGE(0);
#endif
    for (int k0 = 0; k0 < DEPTH; k0 += STAGE_DEPTH) {
#if PREFETCH
#pragma unroll
        for (int j = 0; j < A_LOADS; ++j) {
            const int i = local_id + j * GROUP_SIZE;
            if (i < STAGE_DEPTH * TILE_ROWS) a_stage[A_STEP(i) * A_STRIDE + A_ROW(i)] = a_next[j];
        }
#pragma unroll
        for (int j = 0; j < B_LOADS; ++j) {
            const int i = local_id + j * GROUP_SIZE;
            if (i < STAGE_DEPTH * TILE_VECTORS)
                STOREV(b_next[j], 0, b_stage + i / TILE_VECTORS * TILE_COLUMNS + i % TILE_VECTORS * VECTOR_WIDTH);
        }
#else
        /* consecutive work-items load consecutive k (channels: contiguous in x) or rows */
        for (int i = local_id; i < STAGE_DEPTH * TILE_ROWS; i += GROUP_SIZE)
            a_stage[A_STEP(i) * A_STRIDE + A_ROW(i)] = STAGE_A(k0, i);
        /* consecutive work-items load consecutive vectors of columns (contiguous in w, dy) */
        for (int i = local_id; i < STAGE_DEPTH * TILE_VECTORS; i += GROUP_SIZE)
            STOREV(STAGE_B(k0, i), 0,
                   b_stage + i / TILE_VECTORS * TILE_COLUMNS + i % TILE_VECTORS * VECTOR_WIDTH);
#endif
        barrier(CLK_LOCAL_MEM_FENCE); /* stage loaded */
#if PREFETCH
        if (k0 + STAGE_DEPTH < DEPTH) PREFETCH_STAGE(k0 + STAGE_DEPTH); /* uniform: no barrier */
#endif
#pragma unroll
        for (int kk = 0; kk < STAGE_DEPTH; ++kk) {
            float a[ITEM_ROWS];
            realV bv[ITEM_VECTORS];
#pragma unroll
            for (int i = 0; i < ITEM_ROWS; ++i) a[i] = a_stage[kk * A_STRIDE + i * GROUP_ROWS + ty];
#pragma unroll
            for (int f = 0; f < ITEM_VECTORS; ++f)
                bv[f] = LOADV(0, b_stage + kk * TILE_COLUMNS + (f * GROUP_COLUMNS + tx) * VECTOR_WIDTH);
#pragma unroll
            for (int i = 0; i < ITEM_ROWS; ++i)
#pragma unroll
                for (int f = 0; f < ITEM_VECTORS; ++f) acc[i][f] = fma((realV)(a[i]), bv[f], acc[i][f]);
        }
        barrier(CLK_LOCAL_MEM_FENCE); /* stage consumed: the next may overwrite it */
    }
#else
    /* each work-item loads its own operands, STAGE_DEPTH steps per unrolled block */
    for (int k0 = 0; k0 < DEPTH; k0 += STAGE_DEPTH) {
#pragma unroll
        for (int kk = 0; kk < STAGE_DEPTH; ++kk) {
            const int k = k0 + kk;
            float a[ITEM_ROWS];
            realV bv[ITEM_VECTORS];
#pragma unroll
            for (int i = 0; i < ITEM_ROWS; ++i) {
                const int row = first_row + i * GROUP_ROWS + ty;
                a[i] = k < DEPTH && row < ROWS ? A_ELEMENT(row, k) : 0.0f;
            }
#pragma unroll
            for (int f = 0; f < ITEM_VECTORS; ++f) {
                const int column = first_column + (f * GROUP_COLUMNS + tx) * VECTOR_WIDTH;
                bv[f] = k < DEPTH && column < COLUMNS ? B_VECTOR(k, column) : (realV)(0.0f);
            }
#pragma unroll
            for (int i = 0; i < ITEM_ROWS; ++i)
#pragma unroll
                for (int f = 0; f < ITEM_VECTORS; ++f) acc[i][f] = fma((realV)(a[i]), bv[f], acc[i][f]);
        }
    }
#endif

    /* the epilogue: masked stores of the work-item's rows and vectors of columns */
#pragma unroll
    for (int f = 0; f < ITEM_VECTORS; ++f) {
        const int column = first_column + (f * GROUP_COLUMNS + tx) * VECTOR_WIDTH;
        if (column >= COLUMNS) continue;
#if (defined(CONV_GEMM_FORWARD) || defined(GEMM_FORWARD)) && HAS_BIAS
        const realV bias = LOADV(0, b + column);
#else
        const realV bias = (realV)(0.0f);
#endif
#pragma unroll
        for (int i = 0; i < ITEM_ROWS; ++i) {
            const int row = first_row + i * GROUP_ROWS + ty;
            if (row >= ROWS) continue;
#if defined(CONV_GEMM_FORWARD)
            const int at = AT(Y, item, row / OUT_W, row % OUT_W, column);
#if RESIDUAL /* the sum's other input, at the same pixel */
            realV v = ACTIVATE(acc[i][f] + bias
                               + LOADV(0, r + AT(R, item, row / OUT_W, row % OUT_W, column)),
                               EPILOGUE, EPILOGUE_SLOPE);
#else
            realV v = ACTIVATE(acc[i][f] + bias, EPILOGUE, EPILOGUE_SLOPE);
#endif
#if GATE != ACT_NONE /* b: the layer before's activation output */
            v = ACTIVATE_BACKWARD(LOADV(0, b + at), v, GATE, GATE_SLOPE);
#endif
#if ACCUMULATE
            v += LOADV(0, y + at);
#endif
            STOREV(v, 0, y + at);
#elif defined(CONV_GEMM_DATA)
            const int at = AT(X, item, row / IN_W, row % IN_W, column);
            STOREV(acc[i][f] + (ACCUMULATE ? LOADV(0, dx + at) : (realV)(0.0f)), 0, dx + at);
#elif defined(CONV_GEMM_WEIGHTS)
            STOREV(acc[i][f], 0, dw + (item * ROWS + row) * K_ALLOC + column);
#elif defined(WINOGRAD_GEMM_FORWARD)
            if (TILE_IMAGE(row) < batch) STOREV(acc[i][f], 0, m + TILE_AT(row) * K_ALLOC + column);
#elif defined(WINOGRAD_GEMM_WEIGHTS)
            STOREV(acc[i][f], 0, du + (item * ROWS + row) * K_ALLOC + column);
#elif defined(GEMM_FORWARD)
            STOREV(ACTIVATE(acc[i][f] + bias, EPILOGUE, EPILOGUE_SLOPE), 0,
                   y + AT(Y, row, 0, 0, column));
#elif defined(GEMM_BACKWARD_DATA)
            const int at = INPUT_AT(row, column);
            STOREV(acc[i][f] + (ACCUMULATE ? LOADV(0, dx + at) : (realV)(0.0f)), 0, dx + at);
#elif defined(GEMM_BACKWARD_WEIGHTS)
            STOREV(acc[i][f], 0, dw + row * U_ALLOC + column);
#endif
        }
    }
}
