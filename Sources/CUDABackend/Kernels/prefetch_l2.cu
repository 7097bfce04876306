// prefetch_l2: asks the memory system to bring bytes [p, p + bytes) of a weight into L2, so the GEMM
// that reads it next finds it there. Queued in a decode step where the kernels before that GEMM
// (RoPE, decode attention, RMSNorm) leave HBM idle: the bytes move while they run instead of
// during the GEMM. Nothing is written and nothing waits for the prefetches; a kernel launched
// after this one sees the same values with or without it.
// One prefetch.global.L2 per 128-byte line, the lines spread over a grid of every multiprocessor,
// so no unit of one SM queues much: a first version issued 64 KiB cp.async.bulk.prefetch.L2 from 16
// blocks, and the TMA units it clogged are those cuBLASLt's GEMMs load through (batch 32 on the
// H200: 6,262 → 5,871 tok/s prefetching o, 3,377 prefetching q/k/v as well).
// evictLast = 1 marks the lines evict-last, so the KV rows attention streams meanwhile evict
// other lines first.
// Launch: grid (any; ~2 blocks per SM), block (256). Arguments: p (128-byte aligned), bytes, evictLast (0/1).
#include "common.cuh"

extern "C" __global__ void loom_prefetch_l2(const char* p, u64 bytes, int evictLast) {
    grid_enter();
    const u64 stride = (u64)gridDim.x * blockDim.x * 128;
    u64 offset = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 128;
    if (evictLast) {
        for (; offset < bytes; offset += stride) asm volatile("prefetch.global.L2::evict_last [%0];" :: "l"(p + offset) : "memory");
    } else {
        for (; offset < bytes; offset += stride) asm volatile("prefetch.global.L2 [%0];" :: "l"(p + offset) : "memory");
    }
}
