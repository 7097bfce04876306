// rms_norm / add_rms_norm: RMSNorm of each row, optionally after adding x into the residual stream.
//   loom_rms_norm:     out[i] = w * bf16(x[i] / sqrt(mean(x[i]^2) + eps))
//   loom_add_rms_norm: residual[i] = bf16(residual[i] + x[i]); out[i] = rmsNorm(residual[i])
// The sum of squares is accumulated in fp32; roundings follow transformers' bf16 LlamaRMSNorm.
// Decode runs one row per block, so the kernel is a latency chain: rows of d % 8 == 0 are read with
// 16-byte loads, each thread keeping its (at most 4) vectors in registers between the two passes.
// Launch: grid (n rows), block (min(1024, max(32, roundup32(d / 8)))) for the vector path (d <= 32768),
// else 256. Arguments: residual/x/out [n, d] bf16 (rows contiguous), w [d] bf16, d, eps, add (0/1).
#include "common.cuh"

#define MAXV 4

__device__ __forceinline__ uint4 pack8(const float* f) {
    u32 w[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) w[e] = (u32)f32_to_bf16(f[2 * e]) | ((u32)f32_to_bf16(f[2 * e + 1]) << 16);
    return make_uint4(w[0], w[1], w[2], w[3]);
}

extern "C" __global__ void loom_norm(bf16* __restrict__ residual, const bf16* __restrict__ x, const bf16* __restrict__ w,
                                     bf16* __restrict__ out, int d, float eps, int add) {
    grid_enter();
    const u64 base = (u64)blockIdx.x * d;
    const bool vectorized = (d & 7) == 0 && d / 8 <= MAXV * (int)blockDim.x
        && (((u64)(residual + base) | (u64)(x + base) | (u64)w | (u64)(out + base)) & 15) == 0;
    float s = 0.f;
    if (vectorized) {
        const int nv = d >> 3;
        float v[MAXV][8];
#pragma unroll
        for (int k = 0; k < MAXV; ++k) {
            const int i = threadIdx.x + k * blockDim.x;
            if (i < nv) {
                float a[8];
                unpack_bf16(((const uint4*)(x + base))[i], a);
                if (add) {
                    float r[8];
                    unpack_bf16(((const uint4*)(residual + base))[i], r);
#pragma unroll
                    for (int e = 0; e < 8; ++e) a[e] = round_bf16(r[e] + a[e]);
                    ((uint4*)(residual + base))[i] = pack8(a);
                }
#pragma unroll
                for (int e = 0; e < 8; ++e) { v[k][e] = a[e]; s += a[e] * a[e]; }
            }
        }
        const float scale = rsqrtf(block_sum(s) / (float)d + eps);
#pragma unroll
        for (int k = 0; k < MAXV; ++k) {
            const int i = threadIdx.x + k * blockDim.x;
            if (i < nv) {
                float g[8], o[8];
                unpack_bf16(((const uint4*)w)[i], g);
#pragma unroll
                for (int e = 0; e < 8; ++e) o[e] = g[e] * round_bf16(v[k][e] * scale);
                ((uint4*)(out + base))[i] = pack8(o);
            }
        }
        return;
    }
    // Any width: scalar loads; each thread re-reads only the elements it wrote.
    const bf16* src = add ? residual : x;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float a = bf16_to_f32(x[base + j]);
        if (add) {
            a = round_bf16(bf16_to_f32(residual[base + j]) + a);
            residual[base + j] = f32_to_bf16(a);
        }
        s += a * a;
    }
    const float scale = rsqrtf(block_sum(s) / (float)d + eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        out[base + j] = f32_to_bf16(bf16_to_f32(w[j]) * round_bf16(bf16_to_f32(src[base + j]) * scale));
    }
}

// loom_norm_shrink*: loom_norm of one row written into columns 0 ..< d of a GEMM input widened for
// --lora-backend fused, with that row's fused LoRA shrink computed from the rounded normalized row
// while it is still in registers, so q/k/v's and gate/up's shrinks need no kernel of their own.
// Block p takes plan position p (row permutation[p]); a binary search of the plan's segment starts
// gives its slot s and the slot's rank r. For stacked module m and j < r:
//   out[row][d + (s·stack + m)·R + j] = bf16(scalings[s·stack + m] · Σ_k A[s][m·R + j][k] · out[row][k])
// as loraShrinkFused writes them; other columns past d are left alone (zeroed once per step). Each
// thread holds one 16-byte vector of the row (d % 8 == 0, d / 8 <= blockDim.x); A is read CHUNK
// columns at a time, each thread loading its 16 bytes of each column, then a recursive-halving warp
// reduction and a sum over warps in shared memory.
// Launch: grid (n plan positions), block (roundup32(d / 8)): loom_norm_shrink16 up to 512 threads,
// loom_norm_shrink8 up to 1024. Arguments: residual, x, w, eps, add as loom_norm; out [n, outStride]
// bf16; a [slots, stack·R, d] bf16; scalings [slots, stack] f32; permutation [n], segmentStarts
// [capacity + 1], segmentSlots [capacity], slotRanks [slots] (i32); capacity, R, stack.
template <int CHUNK>
__device__ __forceinline__ void norm_shrink(bf16* __restrict__ residual, const bf16* __restrict__ x, const bf16* __restrict__ w,
                                            bf16* __restrict__ out, int d, float eps, int add, int outStride,
                                            const bf16* __restrict__ a, const float* __restrict__ scalings, const int* __restrict__ permutation,
                                            const int* __restrict__ starts, const int* __restrict__ segmentSlots,
                                            const int* __restrict__ slotRanks, int capacity, int R, int stack) {
    grid_enter();
    const int p = blockIdx.x, i = threadIdx.x, nv = d >> 3;
    const u64 row = permutation[p];
    const bool has = i < nv;
    float v[8], o[8];
    float s = 0.f;
    if (has) {
        unpack_bf16(((const uint4*)(x + row * d))[i], v);
        if (add) {
            float r[8];
            unpack_bf16(((const uint4*)(residual + row * d))[i], r);
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] = round_bf16(r[e] + v[e]);
            ((uint4*)(residual + row * d))[i] = pack8(v);
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) s += v[e] * v[e];
    }
    const float scale = rsqrtf(block_sum(s) / (float)d + eps);
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = 0.f;
    if (has) {
        float g[8];
        unpack_bf16(((const uint4*)w)[i], g);
#pragma unroll
        for (int e = 0; e < 8; ++e) o[e] = round_bf16(g[e] * round_bf16(v[e] * scale));
        ((uint4*)(out + row * outStride))[i] = pack8(o);
    }
    // The segment holding position p: the last start <= p (empty segments share their start).
    int lo = 0, hi = capacity;
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (starts[mid] <= p) lo = mid; else hi = mid;
    }
    const int slot = segmentSlots[lo], rank = slotRanks[slot], width = stack * R;
    if (rank == 0) return;
    const bf16* slotA = a + (u64)slot * width * d;
    bf16* wide = out + row * outStride + d + (u64)slot * width;
    __shared__ float sums[32][CHUNK];
    const int warp = i >> 5, lane = i & 31, warps = blockDim.x >> 5;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    for (int c0 = 0; c0 < width; c0 += CHUNK) {
        uint4 av[CHUNK];
#pragma unroll
        for (int c = 0; c < CHUNK; ++c) {
            const int col = c0 + c;
            av[c] = has && col < width && col % R < rank ? __ldg((const uint4*)(slotA + (u64)col * d) + i) : zero;
        }
        float part[CHUNK];
#pragma unroll
        for (int c = 0; c < CHUNK; ++c) {
            float f[8];
            unpack_bf16(av[c], f);
            float t = 0.f;
#pragma unroll
            for (int e = 0; e < 8; ++e) t += f[e] * o[e];
            part[c] = t;
        }
        // Lane l ends with column l % CHUNK summed over the warp.
#pragma unroll
        for (int half = CHUNK / 2, k = 0; half >= 1; half /= 2, ++k) {
            if (half == 8) halve<8>(part, lane);
            if (half == 4) halve<4>(part, lane);
            if (half == 2) halve<2>(part, lane);
            if (half == 1) halve<1>(part, lane);
        }
#pragma unroll
        for (int m = CHUNK; m < 32; m *= 2) part[0] += __shfl_xor_sync(0xffffffffu, part[0], m);
        if (lane < CHUNK) sums[warp][lane] = part[0];
        __syncthreads();
        if (i < CHUNK) {
            const int col = c0 + i;
            if (col < width && col % R < rank) {
                float t = 0.f;
                for (int k = 0; k < warps; ++k) t += sums[k][i];
                wide[col] = f32_to_bf16(t * scalings[slot * stack + col / R]);
            }
        }
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(512) loom_norm_shrink16(
    bf16* residual, const bf16* x, const bf16* w, bf16* out, int d, float eps, int add, int outStride, const bf16* a,
    const float* scalings, const int* permutation, const int* starts, const int* segmentSlots, const int* slotRanks,
    int capacity, int R, int stack) {
    norm_shrink<16>(residual, x, w, out, d, eps, add, outStride, a, scalings, permutation, starts, segmentSlots, slotRanks, capacity, R, stack);
}

extern "C" __global__ void __launch_bounds__(1024) loom_norm_shrink8(
    bf16* residual, const bf16* x, const bf16* w, bf16* out, int d, float eps, int add, int outStride, const bf16* a,
    const float* scalings, const int* permutation, const int* starts, const int* segmentSlots, const int* slotRanks,
    int capacity, int R, int stack) {
    norm_shrink<8>(residual, x, w, out, d, eps, add, outStride, a, scalings, permutation, starts, segmentSlots, slotRanks, capacity, R, stack);
}
