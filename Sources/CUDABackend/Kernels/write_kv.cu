// write_kv: copies the k and v parts of each stacked qkv row into the paged caches at slot
// slotMapping[i] (= block * blockSize + offset); a negative slot skips the row.
// Launch: grid (n rows), block (128). Arguments: qkv [n, stride] bf16, kCache/vCache [slots, kvSize] bf16,
// slotMapping [n] i32, stride, qSize (heads * d, where k starts), kvSize (kvHeads * d).
#include "common.cuh"

extern "C" __global__ void loom_write_kv(const bf16* qkv, bf16* kCache, bf16* vCache, const int* slotMapping, int stride, int qSize, int kvSize) {
    grid_enter();
    const int row = blockIdx.x;
    const int slot = slotMapping[row];
    if (slot < 0) return;
    const bf16* src = qkv + (u64)row * stride + qSize;
    copy_row(kCache + (u64)slot * kvSize, src, kvSize);
    copy_row(vCache + (u64)slot * kvSize, src + kvSize, kvSize);
}
