// Shared helpers of Loom's kernels, included by every .cu file (NVRTC gets it as a named header).
// bf16 is handled as raw 16-bit words so no toolkit header is needed; conversions round to nearest
// even like PyTorch. Accumulation is always in fp32.
#pragma once

typedef unsigned short bf16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define NEG_INF __int_as_float(0xff800000)

// Programmatic dependent launch (sm_90+). Loom launches its kernels with programmatic stream
// serialization, so a kernel's blocks may be scheduled while the kernel before it in the stream
// is still running. Every kernel therefore calls grid_wait() before it reads anything another
// kernel writes or writes anything another kernel reads (it returns once the kernels before it
// have finished and their writes are visible), then grid_release() to let the next kernel's blocks
// be scheduled and wait in turn (a kernel may release first where its dependent's early blocks
// help, as RoPE does for the decode attention: the dependent's own grid_wait() still waits for this
// whole grid). Work on constant inputs (weights) may go before grid_wait().
// Both are no-ops for a launch without the attribute and below sm_90.
__device__ __forceinline__ void grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void grid_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// The start of a kernel with nothing to do before its inputs are ready.
__device__ __forceinline__ void grid_enter() {
    grid_wait();
    grid_release();
}

__device__ __forceinline__ float bf16_to_f32(bf16 x) { return __uint_as_float(((u32)x) << 16); }

__device__ __forceinline__ bf16 f32_to_bf16(float f) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

// bf16 pairs packed in 32-bit words (the lower half first) → floats: 2, 4 or 8 values.
__device__ __forceinline__ void unpack_bf16(u32 v, float* f) {
    f[0] = __uint_as_float(v << 16);
    f[1] = __uint_as_float(v & 0xffff0000u);
}
__device__ __forceinline__ void unpack_bf16(uint2 v, float* f) {
    unpack_bf16(v.x, f);
    unpack_bf16(v.y, f + 2);
}
__device__ __forceinline__ void unpack_bf16(uint4 v, float* f) {
    unpack_bf16(v.x, f);
    unpack_bf16(v.y, f + 2);
    unpack_bf16(v.z, f + 4);
    unpack_bf16(v.w, f + 6);
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

// The end of a decode attention block (loom_attention_decode*): merges its WARPS warps' online-softmax
// states for the group's heads (max in natural-log units and sum per [warp][head], accumulators
// acc[(warp·G + head)·headDim + d]) and writes the block's rows of out (one split) or its partials
// for loom_attention_combine. The caller has synchronized the block after writing the states.
template <int WARPS, int G>
__device__ __forceinline__ void attention_decode_merge(
    const float (*warpMax)[G], const float (*warpSum)[G], const float* acc, int group, int headDim, int row, int kvh,
    int split, int numSplits, int numHeads, bf16* __restrict__ out, int outStride, float* __restrict__ partialAcc,
    float* __restrict__ partialMax, float* __restrict__ partialSum)
{
    for (int e = threadIdx.x; e < group * headDim; e += blockDim.x) {
        const int g = e / headDim, d = e - g * headDim;
        float m = NEG_INF;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) m = fmaxf(m, warpMax[w][g]);
        float o = 0.f, l = 0.f;
        if (m != NEG_INF) {
#pragma unroll
            for (int w = 0; w < WARPS; ++w) {
                const float f = __expf(warpMax[w][g] - m);
                o += acc[(w * G + g) * headDim + d] * f;
                l += warpSum[w][g] * f;
            }
        }
        const int h = kvh * group + g;
        if (numSplits == 1) {
            out[(u64)row * outStride + h * headDim + d] = f32_to_bf16(l > 0.f ? o / l : 0.f);
        } else {
            const u64 idx = ((u64)row * numHeads + h) * numSplits + split;
            partialAcc[idx * headDim + d] = o;
            if (d == 0) { partialMax[idx] = m; partialSum[idx] = l; }
        }
    }
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

// d += a · b on tensor cores: one m16n8k16 bf16 MMA with fp32 accumulation (sm_80+). Fragments as
// in the PTX ISA: lane = 4·g + t; a0 = (row g, k 2t..2t+1), a1 = (row g+8, same k), a2 = (row g,
// k 2t+8..2t+9), a3 = (row g+8, k 2t+8..); b0 = (k 2t..2t+1, col g), b1 = (k 2t+8.., col g);
// d0, d1 = (row g, cols 2t, 2t+1), d2, d3 = (row g+8, cols 2t, 2t+1).
__device__ __forceinline__ void mma_bf16_16816(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    return (u32)f32_to_bf16(lo) | ((u32)f32_to_bf16(hi) << 16);
}

// attention_decode_merge for head_dim D known at compile time, with fewer instructions: each head's
// factor for each warp computed once (exp of the warp's max less the head's, times 1 / the head's sum
// with one split), then four dims a thread (16-byte reads of acc; out 8-byte aligned, its rows a
// multiple of 4 elements apart).
template <int WARPS, int G, int D>
__device__ __forceinline__ void attention_decode_merge4(
    const float (*warpMax)[G], const float (*warpSum)[G], const float* warpAcc, int group, int row, int kvh, int split,
    int numSplits, int numHeads, bf16* __restrict__ out, int outStride, float* __restrict__ partialAcc,
    float* __restrict__ partialMax, float* __restrict__ partialSum)
{
    const int tid = threadIdx.x;
    __shared__ float factor[WARPS][G], headMax[G], headSum[G];
    if (tid < group) {
        float m = NEG_INF, l = 0.f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) m = fmaxf(m, warpMax[w][tid]);
        float f[WARPS];
#pragma unroll
        for (int w = 0; w < WARPS; ++w) {
            f[w] = m == NEG_INF ? 0.f : __expf(warpMax[w][tid] - m);
            l += warpSum[w][tid] * f[w];
        }
        const float norm = numSplits > 1 ? 1.f : (l > 0.f ? 1.f / l : 0.f);
#pragma unroll
        for (int w = 0; w < WARPS; ++w) factor[w][tid] = f[w] * norm;
        headMax[tid] = m;
        headSum[tid] = l;
    }
    __syncthreads();
    for (int e = tid; e < group * (D / 4); e += blockDim.x) {
        const int hg = e / (D / 4), d = (e % (D / 4)) * 4;
        float o[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int w = 0; w < WARPS; ++w) {
            const float4 a = *(const float4*)&warpAcc[(w * G + hg) * D + d];
            const float f = factor[w][hg];
            o[0] += a.x * f; o[1] += a.y * f; o[2] += a.z * f; o[3] += a.w * f;
        }
        const int h = kvh * group + hg;
        if (numSplits == 1) {
            uint2 packed;
            packed.x = pack_bf16x2(o[0], o[1]);
            packed.y = pack_bf16x2(o[2], o[3]);
            *(uint2*)(out + (u64)row * outStride + h * D + d) = packed;
        } else {
            const u64 idx = ((u64)row * numHeads + h) * numSplits + split;
            *(float4*)(partialAcc + idx * D + d) = make_float4(o[0], o[1], o[2], o[3]);
            if (d == 0) { partialMax[idx] = headMax[hg]; partialSum[idx] = headSum[hg]; }
        }
    }
}

// A LoRA delta that the kernel consuming a fused GEMM's output adds (LoRADelta in ComputeBackend):
// B [slots, width, R] bf16, scalings [slots, stack] f32, rowSlots [n] and slotRanks [slots] i32;
// module m of a base column c is 0 below o1, 1 below o2, else 2; each output row holds its xa after
// its `width` base columns. A kernel takes LORA_PARAMS (b null: no delta) and builds one with LORA_ARGS.
// The consuming kernels follow cuBLASLt GEMMs, which do not let them start early, so everything
// here is on the critical path, and counted in round trips to L2: the row's slot, its rank and the
// first ranks of B (constant during a step) go before grid_wait; after it, the row's xa (staged in
// shared memory once a block), the op's own inputs and any later ranks of B go out together.
#define LORA_MAX_RANK 256
#define LORA_PARAMS const bf16* __restrict__ loraB, const float* __restrict__ loraScalings, const int* __restrict__ loraRowSlots, \
    const int* __restrict__ loraSlotRanks, int loraR, int loraStack, int loraO1, int loraO2, int loraWidth
#define LORA_ARGS {loraB, loraScalings, loraRowSlots, loraSlotRanks, loraR, loraStack, loraO1, loraO2, loraWidth}
struct LoraDelta {
    const bf16* b;
    const float* scalings;
    const int* rowSlots;
    const int* slotRanks;
    int R, stack, o1, o2, width;
    __device__ __forceinline__ int module(int c) const { return c >= o2 ? 2 : c >= o1 ? 1 : 0; }
    // The row's slot (0 without a delta), and a slot's rank (0: its rows add nothing). A block's
    // threads share a row, so both are the same for all of them. The slot alone addresses B and xa,
    // so those loads need not wait for the rank.
    __device__ __forceinline__ int row_slot(int row) const { return b == nullptr ? 0 : rowSlots[row]; }
    __device__ __forceinline__ int rank(int s) const { return b == nullptr ? 0 : slotRanks[s]; }
    // Stages slot s's xa of every module (stack·R floats, ranks past the slot's too: sum() masks
    // them) into shared `xa` and syncs; call from every thread of the block, with a delta. `load(i)`
    // gives the row's xa element i (the GEMM output's column width + i, or the sum of its K-slices).
    // `xa` must be 16-byte aligned (sum() reads it 4 floats at a time).
    template <typename Load>
    __device__ __forceinline__ void stage(int s, float* xa, Load load) const {
        const u64 first = (u64)s * stack * R;
        for (int t = threadIdx.x; t < stack * R; t += blockDim.x) xa[t] = load(first + t);
        __syncthreads();
    }
    // The B rows of N base columns of slot s, their first 16 ranks loaded ahead into registers (rows
    // of B 16-byte aligned: R % 8 == 0), so the loads can go out together with the kernel's others
    // (B is constant during a step: they may go before grid_wait).
    template <int N>
    struct Cols {
        uint4 v[N][2];
    };
    __device__ __forceinline__ const bf16* row_of(int s, int c) const { return b + ((u64)s * width + c) * R; }
    template <int N>
    __device__ __forceinline__ void fetch(int s, const int (&c)[N], Cols<N>& cols) const {
        if (b == nullptr || (R & 7) != 0) return;
#pragma unroll
        for (int i = 0; i < N; ++i) {
            const bf16* at = row_of(s, c[i]);
            cols.v[i][0] = *(const uint4*)at;
            if (R > 8) cols.v[i][1] = *(const uint4*)(at + 8);
        }
    }
    // What the N base columns c[i] (fetched for slot s) gain at rank r: Σ_{j<r} xa[m·R + j] · B[s][c][j]
    // rounded as PEFT's bf16 lora_B output, times the module's scaling, rounded again. `xa` is the
    // staged slot's (the row's).
    template <int N>
    __device__ __forceinline__ void sum(int s, int r, const int (&c)[N], const Cols<N>& cols, const float* xa, float (&out)[N]) const {
        const float* x[N];
        float acc[N];
#pragma unroll
        for (int i = 0; i < N; ++i) {
            x[i] = xa + module(c[i]) * R;
            acc[i] = 0.f;
        }
        if ((R == 8 || R == 16) && r == R) {  // the whole stride in registers, no rank to mask: 8 FMAs a vector
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                if (8 * h >= R) break;
#pragma unroll
                for (int i = 0; i < N; ++i) {
                    float f[8];
                    unpack_bf16(cols.v[i][h], f);
                    dot8(acc[i], f, x[i] + 8 * h);
                }
            }
        } else if ((R & 7) == 0) {  // a vector per column and 8 ranks; past the first 16, all columns' in flight
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                if (8 * h >= r) break;
#pragma unroll
                for (int i = 0; i < N; ++i) {
                    float f[8];
                    unpack_bf16(cols.v[i][h], f);
#pragma unroll
                    for (int e = 0; e < 8; ++e)
                        if (8 * h + e < r) acc[i] += f[e] * x[i][8 * h + e];
                }
            }
#pragma unroll 2
            for (int j = 16; j < r; j += 8) {
                uint4 v[N];
#pragma unroll
                for (int i = 0; i < N; ++i) v[i] = *(const uint4*)(row_of(s, c[i]) + j);
#pragma unroll
                for (int i = 0; i < N; ++i) {
                    float f[8];
                    unpack_bf16(v[i], f);
#pragma unroll
                    for (int e = 0; e < 8; ++e)
                        if (j + e < r) acc[i] += f[e] * x[i][j + e];
                }
            }
        } else {
            for (int j = 0; j < r; ++j)
#pragma unroll
                for (int i = 0; i < N; ++i) acc[i] += bf16_to_f32(row_of(s, c[i])[j]) * x[i][j];
        }
#pragma unroll
        for (int i = 0; i < N; ++i) out[i] = rounded(acc[i], scalings[s * stack + module(c[i])]);
    }
    // acc += Σ_{e<8} f[e] · x[e], in order; x 16-byte aligned (a staged xa).
    static __device__ __forceinline__ void dot8(float& acc, const float* f, const float* x) {
        const float4 lo = *(const float4*)x, hi = *(const float4*)(x + 4);
        acc += f[0] * lo.x; acc += f[1] * lo.y; acc += f[2] * lo.z; acc += f[3] * lo.w;
        acc += f[4] * hi.x; acc += f[5] * hi.y; acc += f[6] * hi.z; acc += f[7] * hi.w;
    }
    // A column's delta from its sum: rounded as PEFT's bf16 lora_B output, times the scaling, rounded again.
    static __device__ __forceinline__ float rounded(float acc, float scale) { return round_bf16(round_bf16(acc) * scale); }
    template <int N>
    __device__ __forceinline__ void terms(int s, int r, const int (&c)[N], const float* xa, float (&out)[N]) const {
        Cols<N> cols;
        fetch(s, c, cols);
        sum(s, r, c, cols, xa, out);
    }
};
