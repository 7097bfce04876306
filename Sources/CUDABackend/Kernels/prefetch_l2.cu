// prefetch_l2: asks the memory system to bring bytes [p, p + bytes) of a weight into L2, so the GEMM
// that reads it next finds it there. Queued in a decode step where the kernels before that GEMM
// (RoPE, decode attention, RMSNorm) leave HBM idle: the bytes move while they run instead of
// during the GEMM. Nothing is written and nothing waits for the prefetches; a kernel launched
// after this one sees the same values with or without it.
// Each thread issues one bulk prefetch (sm_90: cp.async.bulk.prefetch.L2, done by the TMA unit) per
// 64 KiB chunk in a grid-stride loop; below sm_90, one prefetch.global.L2 per 128-byte line.
// evictLast = 1 marks the lines evict-last, so the KV rows attention streams meanwhile evict
// other lines first.
// Launch: grid (ceil(chunks / 32)), block (32). Arguments: p (16-byte aligned), bytes (a multiple of
// 16), evictLast (0/1).
#include "common.cuh"

#define PREFETCH_CHUNK 65536ull

extern "C" __global__ void loom_prefetch_l2(const char* p, u64 bytes, int evictLast) {
    grid_enter();
    const u64 thread = (u64)blockIdx.x * blockDim.x + threadIdx.x, threads = (u64)gridDim.x * blockDim.x;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    u64 policy = 0;
    if (evictLast) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
    for (u64 offset = thread * PREFETCH_CHUNK; offset < bytes; offset += threads * PREFETCH_CHUNK) {
        const u32 size = (u32)min(PREFETCH_CHUNK, bytes - offset);
        if (evictLast) {
            asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" :: "l"(p + offset), "r"(size), "l"(policy) : "memory");
        } else {
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" :: "l"(p + offset), "r"(size) : "memory");
        }
    }
#else
    for (u64 offset = thread * 128; offset < bytes; offset += threads * 128) {
        asm volatile("prefetch.global.L2 [%0];" :: "l"(p + offset) : "memory");
    }
#endif
}
