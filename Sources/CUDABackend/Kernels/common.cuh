// Shared helpers of Loom's kernels, included by every .cu file (NVRTC gets it as a named header).
// bf16 is handled as raw 16-bit words so no toolkit header is needed; conversions round to nearest
// even like PyTorch. Accumulation is always in fp32.
#pragma once

typedef unsigned short bf16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float bf16_to_f32(bf16 x) { return __uint_as_float(((u32)x) << 16); }

__device__ __forceinline__ bf16 f32_to_bf16(float f) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

// Rounds through bf16, as a PyTorch bf16 op does with its result.
__device__ __forceinline__ float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int warps = blockDim.x >> 5;
    float t = lane < warps ? partial[lane] : 0.f;
    return warp_sum(t);
}

// Copies `count` bf16 with 16-byte accesses when both rows allow it; threads of the block share the work.
__device__ __forceinline__ void copy_row(bf16* dst, const bf16* src, int count) {
    if ((((u64)dst | (u64)src) & 15) == 0 && (count & 7) == 0) {
        const uint4* s = (const uint4*)src;
        uint4* d = (uint4*)dst;
        for (int i = threadIdx.x; i < (count >> 3); i += blockDim.x) d[i] = s[i];
    } else {
        for (int i = threadIdx.x; i < count; i += blockDim.x) dst[i] = src[i];
    }
}

// The LoRA segment of token row `row` (segments cover starts[g] ..< starts[g+1]), or -1.
__device__ __forceinline__ int segment_of(const int* starts, int numSegments, int row) {
    if (numSegments <= 0 || row < starts[0] || row >= starts[numSegments]) return -1;
    int lo = 0, hi = numSegments - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (starts[mid] <= row) lo = mid; else hi = mid - 1;
    }
    return lo;
}

__device__ __forceinline__ float load_any(const void* p, u64 i, int isF32) {
    return isF32 ? ((const float*)p)[i] : bf16_to_f32(((const bf16*)p)[i]);
}
