// argmax: greedy sampling on the device, out[i] = the first index of the largest logit of row i
// (NaN never wins; a row of NaNs gives 0).
// Launch: grid (n rows, slices), block (256). Arguments: logits [n, vocab] (f32 if isF32 else bf16),
// out [n] i32, vocab, best [n] u64 and tickets [n] u32 (zero before the launch; left zero after it).
// A row is split into `slices` blocks so the read spreads over the GPU (one block a row read 8 MB of
// batch 32's logits on 32 multiprocessors). Each block folds its best into best[i] as one 64-bit
// atomicMax of a key ordered by value, then by lower index; the row's last block (its ticket) writes
// out[i] and zeroes best[i] and tickets[i] for the next launch and graph replay.
#include "common.cuh"

#define ARGMAX_THREADS 256

// Orders floats as unsigned integers (larger float, larger key); -0 counts as +0 so ties keep the
// lower index as with `>`. Key 0 is below every number's.
__device__ __forceinline__ u64 argmax_key(float v, int index) {
    if (v != v) return 0;
    u32 b = __float_as_uint(v + 0.f);
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((u64)b << 32) | (u64)(0xffffffffu - (u32)index);
}

__device__ __forceinline__ void argmax_fold(u64& key, float v, int index) {
    const u64 k = argmax_key(v, index);
    key = k > key ? k : key;
}

extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS) loom_argmax(
    const void* logits, int isF32, int* out, int vocab, u64* best, u32* tickets)
{
    grid_enter();
    const int row = blockIdx.x, slices = gridDim.y;
    // Slices start on multiples of 8 elements (16-byte loads when the row is aligned).
    const int per = (((vocab + slices - 1) / slices) + 7) & ~7;
    const int begin = blockIdx.y * per, end = min(vocab, begin + per);
    u64 key = 0;
    if (isF32) {
        const float* p = (const float*)logits + (u64)row * vocab;
        if ((((u64)p) & 15) == 0) {
            const int vecEnd = begin + ((max(end - begin, 0)) & ~3);
            for (int j = begin + 4 * threadIdx.x; j < vecEnd; j += 4 * ARGMAX_THREADS) {
                const float4 v = *(const float4*)(p + j);
                argmax_fold(key, v.x, j); argmax_fold(key, v.y, j + 1); argmax_fold(key, v.z, j + 2); argmax_fold(key, v.w, j + 3);
            }
            for (int j = vecEnd + threadIdx.x; j < end; j += ARGMAX_THREADS) argmax_fold(key, p[j], j);
        } else {
            for (int j = begin + threadIdx.x; j < end; j += ARGMAX_THREADS) argmax_fold(key, p[j], j);
        }
    } else {
        const bf16* p = (const bf16*)logits + (u64)row * vocab;
        if ((((u64)p) & 15) == 0) {
            const int vecEnd = begin + ((max(end - begin, 0)) & ~7);
            for (int j = begin + 8 * threadIdx.x; j < vecEnd; j += 8 * ARGMAX_THREADS) {
                float v[8];
                unpack_bf16(*(const uint4*)(p + j), v);
#pragma unroll
                for (int e = 0; e < 8; ++e) argmax_fold(key, v[e], j + e);
            }
            for (int j = vecEnd + threadIdx.x; j < end; j += ARGMAX_THREADS) argmax_fold(key, bf16_to_f32(p[j]), j);
        } else {
            for (int j = begin + threadIdx.x; j < end; j += ARGMAX_THREADS) argmax_fold(key, bf16_to_f32(p[j]), j);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u64 other = __shfl_xor_sync(0xffffffffu, key, o);
        key = other > key ? other : key;
    }
    __shared__ u64 warpKeys[ARGMAX_THREADS / 32];
    __shared__ bool last;
    if ((threadIdx.x & 31) == 0) warpKeys[threadIdx.x >> 5] = key;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < ARGMAX_THREADS / 32; ++w) key = warpKeys[w] > key ? warpKeys[w] : key;
        if (key) atomicMax(best + row, key);
        __threadfence();
        last = atomicAdd(tickets + row, 1u) == (u32)slices - 1;
    }
    __syncthreads();
    if (last && threadIdx.x == 0) {
        __threadfence();
        const u64 k = atomicExch(best + row, 0ull);
        tickets[row] = 0;
        out[row] = k ? (int)(0xffffffffu - (u32)k) : 0;
    }
}
