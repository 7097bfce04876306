// embed: out[i] = table[tokens[i]] (bf16 rows of `dim`).
// Launch: grid (n), block (128). Arguments: tokens [n] i32, table [vocab, dim] bf16, out [n, dim] bf16,
// dim, vocab. A token id outside 0 ..< vocab writes a zero row (the host checks ids before the step).
#include "common.cuh"

extern "C" __global__ void loom_embed(const int* tokens, const bf16* table, bf16* out, int dim, int vocab) {
    grid_enter();
    const int row = blockIdx.x;
    const int id = tokens[row];
    bf16* dst = out + (u64)row * dim;
    if (id < 0 || id >= vocab) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = 0;
        return;
    }
    copy_row(dst, table + (u64)id * dim, dim);
}
