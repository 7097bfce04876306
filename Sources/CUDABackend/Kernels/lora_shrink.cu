// lora_shrink: for plan position p of a segment with slot s of rank r > 0 and stacked module m,
//   out[p][m*R + j] = A[s][m*R + j] . x[permutation[p]] for j < r (fp32 accumulation); rank-0 positions
//   are left untouched.
// A straightforward version (the fast segmented kernels are issue 6): one warp per output j, lanes over K.
// Launch: grid (n plan positions, stack), block (128). Arguments: x [n, K] bf16, A [slots, stack*R, K] bf16,
// out [n, stack*R] in plan order (f32 if outIsF32 else bf16), permutation [n], segmentStarts [segs + 1], segmentSlots [segs],
// slotRanks [slots] i32, numSegments, K, R (max rank), stack.
#include "common.cuh"

extern "C" __global__ void loom_lora_shrink(const bf16* x, const bf16* a, void* out, int outIsF32, const int* permutation,
                                            const int* segmentStarts, const int* segmentSlots, const int* slotRanks,
                                            int numSegments, int K, int R, int stack) {
    const int p = blockIdx.x, m = blockIdx.y;
    const int g = segment_of(segmentStarts, numSegments, p);
    if (g < 0) return;
    const int slot = segmentSlots[g], rank = slotRanks[slot];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bf16* xr = x + (u64)permutation[p] * K;
    for (int j = warp; j < rank; j += blockDim.x >> 5) {
        const bf16* ar = a + ((u64)slot * stack * R + (u64)m * R + j) * K;
        float s = 0.f;
        for (int k = lane; k < K; k += 32) s += bf16_to_f32(ar[k]) * bf16_to_f32(xr[k]);
        s = warp_sum(s);
        if (lane == 0) {
            const u64 o = (u64)p * stack * R + (u64)m * R + j;
            if (outIsF32) ((float*)out)[o] = s; else ((bf16*)out)[o] = f32_to_bf16(s);
        }
    }
}

