// kv_prefetch: asks L2 for the K and V cache pages of each sequence's context, so that the decode
// attention that follows reads them from L2 rather than HBM. Queued on the side stream beside the
// q/k/v GEMM, which at decode batches runs fewer blocks than the GPU has multiprocessors (96 of 132
// at 32 rows of Llama-3.1-8B) and leaves HBM time free; the attention does not wait for it.
// One bulk prefetch (cp.async.bulk.prefetch.L2) a cache page of K and one of V, a page being
// blockSize rows of rowElems bf16 (all KV heads), with an evict-last policy when evictLast is set
// so that the GEMM's weight stream does not push the pages out first.
// Launch: grid (numSeqs), block 32. Arguments: kCache, vCache [slots, rowElems] bf16, contextLengths
// [numSeqs] i32, blockTables [numSeqs, tableWidth] i32, tableWidth, blockSize, rowElems, evictLast.
#include "common.cuh"

extern "C" __global__ void loom_kv_prefetch_l2(const bf16* __restrict__ kCache, const bf16* __restrict__ vCache,
                                               const int* __restrict__ contextLengths, const int* __restrict__ blockTables,
                                               int tableWidth, int blockSize, int rowElems, int evictLast) {
    grid_enter();
    const int row = blockIdx.x;
    const int pages = min(tableWidth, (contextLengths[row] + blockSize - 1) / blockSize);
    const u32 bytes = (u32)blockSize * rowElems * 2;
    u64 policy;
    if (evictLast) {
        asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
    } else {
        asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(policy));
    }
    const int* table = blockTables + (u64)row * tableWidth;
    for (int p = threadIdx.x; p < pages; p += blockDim.x) {
        const u64 offset = (u64)table[p] * blockSize * rowElems;
        asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(kCache + offset), "r"(bytes), "l"(policy) : "memory");
        asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(vCache + offset), "r"(bytes), "l"(policy) : "memory");
    }
}
