// skinny_gemm: out = x · Wᵀ for a few rows of x (decode: n ≤ 32 tokens), x [n, k] bf16, W [m, k]
// bf16, out [n, m] bf16 or f32, fp32 accumulation on tensor cores. Reading W is all that matters
// at these sizes, so every lane streams 16-byte pieces of W straight into its MMA fragments, no
// shared-memory staging: within each 32-wide step of k, lane (g, t) loads k 8t ..< 8t+8 of W rows
// g and g+8 of a 16-row group and of token g. An m16n8k16 MMA sums over its 16 k in any order, as
// long as A and B agree, so the first 8 bytes feed one MMA (as its k 2t, 2t+1, 2t+8, 2t+9) and the
// last 8 the next.
//
// Launch: grid (ceil(m / 64), splits), block (128), 4·8J·68 floats of dynamic shared memory.
// A block computes 64 features × 8J tokens over its split of the k steps (its 4 warps taking every
// 4th step), sums its warps in shared memory, then either stores (splits == 1) or writes an f32
// partial; the last block of a tile to arrive (a counter per tile, reset by that block) sums the
// partials in split order, so the result does not depend on arrival order.
// Arguments: x, W, out, outIsF32, n, m, k, stepsPerSplit, partials [tiles, splits, 8J, 64] f32,
// counters [tiles] i32 (zero between launches).
#include "common.cuh"

#define SKINNY_STRIDE 68  // floats per token row of the reduction tile (64 + 4: conflict-free stores)

__device__ __forceinline__ uint4 load_stream(const uint4* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

template <int J>
__device__ __forceinline__ void skinny_step(float (&acc)[4][J][4], const uint4 (&a)[4][2], const uint4 (&b)[J]) {
#pragma unroll
    for (int f = 0; f < 4; f++) {
#pragma unroll
        for (int j = 0; j < J; j++) {
            mma_bf16_16816(acc[f][j], a[f][0].x, a[f][1].x, a[f][0].y, a[f][1].y, b[j].x, b[j].y);
            mma_bf16_16816(acc[f][j], a[f][0].z, a[f][1].z, a[f][0].w, a[f][1].w, b[j].z, b[j].w);
        }
    }
}

template <int J>
__device__ __forceinline__ void skinny_gemm(const bf16* __restrict__ x, const bf16* __restrict__ w, void* out, int outIsF32,
                                            int n, int m, int k, int stepsPerSplit, float* partials, int* counters) {
    extern __shared__ float red[];  // [4 warps][8J tokens][SKINNY_STRIDE]
    __shared__ int isLast;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int tile = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
    const int f0 = tile * 64;
    const int steps = k >> 5;
    const int s0 = split * stepsPerSplit, s1 = min(steps, s0 + stepsPerSplit);

    const uint4* wr[4][2];
#pragma unroll
    for (int f = 0; f < 4; f++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int row = min(f0 + 16 * f + 8 * h + g, m - 1);  // rows past m are computed, never stored
            wr[f][h] = (const uint4*)(w + (u64)row * k) + t;
        }
    const uint4* xr[J];
    bool xv[J];
#pragma unroll
    for (int j = 0; j < J; j++) {
        const int token = 8 * j + g;
        xv[j] = token < n;
        xr[j] = (const uint4*)(x + (u64)min(token, n - 1) * k) + t;
    }
    float acc[4][J][4];
#pragma unroll
    for (int f = 0; f < 4; f++)
#pragma unroll
        for (int j = 0; j < J; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[f][j][e] = 0.f;

    const uint4 zero = make_uint4(0, 0, 0, 0);
    int s = s0 + warp;
    // Two steps a round: 16 loads of W in flight per lane.
    for (; s + 4 < s1; s += 8) {
        uint4 a0[4][2], a1[4][2], b0[J], b1[J];
#pragma unroll
        for (int f = 0; f < 4; f++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                a0[f][h] = load_stream(wr[f][h] + 4 * s);
                a1[f][h] = load_stream(wr[f][h] + 4 * (s + 4));
            }
#pragma unroll
        for (int j = 0; j < J; j++) {
            b0[j] = xv[j] ? __ldg(xr[j] + 4 * s) : zero;
            b1[j] = xv[j] ? __ldg(xr[j] + 4 * (s + 4)) : zero;
        }
        skinny_step<J>(acc, a0, b0);
        skinny_step<J>(acc, a1, b1);
    }
    if (s < s1) {
        uint4 a0[4][2], b0[J];
#pragma unroll
        for (int f = 0; f < 4; f++)
#pragma unroll
            for (int h = 0; h < 2; h++) a0[f][h] = load_stream(wr[f][h] + 4 * s);
#pragma unroll
        for (int j = 0; j < J; j++) b0[j] = xv[j] ? __ldg(xr[j] + 4 * s) : zero;
        skinny_step<J>(acc, a0, b0);
    }

    // d0, d1: feature 16f + g, tokens 8j + 2t, +1; d2, d3: feature 16f + g + 8.
    float* mine = red + warp * (8 * J * SKINNY_STRIDE);
#pragma unroll
    for (int f = 0; f < 4; f++)
#pragma unroll
        for (int j = 0; j < J; j++) {
            const int token = 8 * j + 2 * t, feature = 16 * f + g;
            mine[token * SKINNY_STRIDE + feature] = acc[f][j][0];
            mine[(token + 1) * SKINNY_STRIDE + feature] = acc[f][j][1];
            mine[token * SKINNY_STRIDE + feature + 8] = acc[f][j][2];
            mine[(token + 1) * SKINNY_STRIDE + feature + 8] = acc[f][j][3];
        }
    __syncthreads();

    constexpr int elements = 8 * J * 64;
    float* partial = partials + ((u64)tile * splits + split) * elements;
    for (int e = threadIdx.x; e < elements; e += blockDim.x) {
        const int token = e >> 6, feature = e & 63;
        float v = 0.f;
#pragma unroll
        for (int q = 0; q < 4; q++) v += red[(q * 8 * J + token) * SKINNY_STRIDE + feature];
        if (splits == 1) {
            if (token < n && f0 + feature < m) {
                const u64 o = (u64)token * m + f0 + feature;
                if (outIsF32) ((float*)out)[o] = v; else ((bf16*)out)[o] = f32_to_bf16(v);
            }
        } else {
            partial[e] = v;
        }
    }
    if (splits == 1) return;

    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) isLast = atomicAdd(counters + tile, 1) == splits - 1;
    __syncthreads();
    if (!isLast) return;
    __threadfence();
    const float* first = partials + (u64)tile * splits * elements;
    for (int e = threadIdx.x; e < elements; e += blockDim.x) {
        const int token = e >> 6, feature = e & 63;
        if (token >= n || f0 + feature >= m) continue;
        float v = 0.f;
        for (int q = 0; q < splits; q++) v += __ldcg(first + (u64)q * elements + e);
        const u64 o = (u64)token * m + f0 + feature;
        if (outIsF32) ((float*)out)[o] = v; else ((bf16*)out)[o] = f32_to_bf16(v);
    }
    if (threadIdx.x == 0) counters[tile] = 0;
}

#define SKINNY_GEMM(J)                                                                                                        \
    extern "C" __global__ void __launch_bounds__(128) loom_skinny_gemm_j##J(                                                \
        const bf16* x, const bf16* w, void* out, int outIsF32, int n, int m, int k, int stepsPerSplit, float* partials,     \
        int* counters) {                                                                                                      \
        skinny_gemm<J>(x, w, out, outIsF32, n, m, k, stepsPerSplit, partials, counters);                                     \
    }

SKINNY_GEMM(1)
SKINNY_GEMM(2)
SKINNY_GEMM(3)
SKINNY_GEMM(4)
