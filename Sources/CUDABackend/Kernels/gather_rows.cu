// gather_rows: out[j] = x[rows[j]] (bf16 rows of `width`).
// Launch: grid (m), block (128). Arguments: x [?, width] bf16, rows [m] i32, out [m, width] bf16, width.
#include "common.cuh"

extern "C" __global__ void loom_gather_rows(const bf16* x, const int* rows, bf16* out, int width) {
    grid_enter();
    const int j = blockIdx.x;
    copy_row(out + (u64)j * width, x + (u64)rows[j] * width, width);
}
