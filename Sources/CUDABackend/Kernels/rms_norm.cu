// rms_norm / add_rms_norm: RMSNorm of each row, optionally after adding x into the residual stream.
//   loom_rms_norm:     out[i] = w * bf16(x[i] / sqrt(mean(x[i]^2) + eps))
//   loom_add_rms_norm: residual[i] = bf16(residual[i] + x[i]); out[i] = rmsNorm(residual[i])
// With `slices` (a GEMM's K-slices, linearSlices), x[i] = bf16(sum over s of slices[s][i]) (f32).
// The sum of squares is accumulated in fp32; roundings follow transformers' bf16 LlamaRMSNorm.
// Decode runs one row per block, so the kernel is a latency chain: rows of d % 8 == 0 are read with
// 16-byte loads, each thread keeping its (at most 4) vectors in registers between the two passes.
// With a LoRA delta (LORA_PARAMS, `--lora-backend fused` decode: x or the slices are a fused GEMM's
// output, xa after the first d columns), x[i] first gains it, rounded as PEFT's bf16 sum: in
// loom_norm_lora (below) where d % 16 == 0 and d ≤ 8192, else in loom_norm.
// Launch: grid (n rows), block (min(1024, max(32, roundup32(d / 8)))) for the vector path (d <= 32768),
// else 256. Arguments: residual [n, d] bf16 (rows contiguous), x [n, xStride] bf16, w [d] bf16, out
// [n, outStride] bf16 (the first d columns written: a fused GEMM's wide input takes x beside its
// shrink results), d, eps, add (0/1), slices [count, n, xStride] f32 (`count` 0: none; slices
// `sliceStride` = n·xStride floats apart), xStride, outStride and copies, copyStride (loom_norm only:
// the rows go to `copies` ≥ 1 copies of out, copyStride elements apart, a multiple of 8: split fused
// GEMM inputs), LORA_PARAMS (a stack of 1, stack·R ≤ LORA_MAX_RANK); with a delta, d floats of
// dynamic shared memory.
#include "common.cuh"

#define MAXV 4

// Element `at` of the GEMM output the norm adds: x's, or the sum of the `count` K-slices rounded as
// the GEMM rounds its output.
__device__ __forceinline__ float output_at(const bf16* x, const float* slices, int count, long long sliceStride, u64 at) {
    if (count == 0) return bf16_to_f32(x[at]);
    float v = 0.f;
    for (int s = 0; s < count; ++s) v += slices[s * sliceStride + at];
    return round_bf16(v);
}

__device__ __forceinline__ uint4 pack8(const float* f) {
    u32 w[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) w[e] = (u32)f32_to_bf16(f[2 * e]) | ((u32)f32_to_bf16(f[2 * e + 1]) << 16);
    return make_uint4(w[0], w[1], w[2], w[3]);
}

extern "C" __global__ void __launch_bounds__(1024) loom_norm(bf16* __restrict__ residual, const bf16* __restrict__ x, const bf16* __restrict__ w,
                                     bf16* __restrict__ out, int d, float eps, int add,
                                     const float* __restrict__ slices, int count, long long sliceStride, int xStride, int outStride,
                                     int copies, long long copyStride, LORA_PARAMS) {
    grid_enter();
    const u64 base = (u64)blockIdx.x * d, xBase = (u64)blockIdx.x * xStride, outBase = (u64)blockIdx.x * outStride;
    const bool vectorized = (d & 7) == 0 && d / 8 <= MAXV * (int)blockDim.x
        && (((u64)(residual + base) | (u64)(x + xBase) | (u64)w | (u64)(out + outBase) | (u64)(slices + xBase)) & 15) == 0;
    // The row's delta: its slot's xa (summed over the slices and rounded as the GEMM rounds its
    // output) staged in shared memory, then every column's delta into `deltas` (dynamic shared
    // memory, d floats), the block's threads streaming the slot's B a column each.
    __shared__ __align__(16) float xa[LORA_MAX_RANK];
    extern __shared__ float deltas[];
    const LoraDelta lora = LORA_ARGS;
    const int slot = lora.row_slot(blockIdx.x), rank = lora.rank(slot);
    if (rank > 0) {
        lora.stage(slot, xa, [&](u64 i) { return output_at(x, slices, count, sliceStride, xBase + d + i); });
        const int step = blockDim.x;
        for (int c0 = threadIdx.x; c0 < d; c0 += 2 * step) {
            int c[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) c[i] = min(c0 + i * step, d - 1);
            float o[2];
            lora.terms<2>(slot, rank, c, xa, o);
#pragma unroll
            for (int i = 0; i < 2; ++i)
                if (c0 + i * step < d) deltas[c0 + i * step] = o[i];
        }
        __syncthreads();
    }
    float s = 0.f;
    if (vectorized) {
        const int nv = d >> 3;
        float v[MAXV][8];
#pragma unroll
        for (int k = 0; k < MAXV; ++k) {
            const int i = threadIdx.x + k * blockDim.x;
            if (i < nv) {
                float a[8];
                if (count > 0) {
                    const float4* p = (const float4*)(slices + xBase) + 2 * i;
                    float4 lo = p[0], hi = p[1];
                    for (int s = 1; s < count; ++s) {
                        const float4 l = p[s * sliceStride / 4], h = p[s * sliceStride / 4 + 1];
                        lo.x += l.x; lo.y += l.y; lo.z += l.z; lo.w += l.w;
                        hi.x += h.x; hi.y += h.y; hi.z += h.z; hi.w += h.w;
                    }
                    a[0] = round_bf16(lo.x); a[1] = round_bf16(lo.y); a[2] = round_bf16(lo.z); a[3] = round_bf16(lo.w);
                    a[4] = round_bf16(hi.x); a[5] = round_bf16(hi.y); a[6] = round_bf16(hi.z); a[7] = round_bf16(hi.w);
                } else {
                    unpack_bf16(((const uint4*)(x + xBase))[i], a);
                }
                if (rank > 0)
#pragma unroll
                    for (int e = 0; e < 8; ++e) a[e] = round_bf16(a[e] + deltas[8 * i + e]);
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
                const uint4 packed = pack8(o);
                for (int c = 0; c < copies; ++c) ((uint4*)(out + c * copyStride + outBase))[i] = packed;
            }
        }
        return;
    }
    // Any width: scalar loads; each thread re-reads only the elements it wrote.
    const bf16* src = add ? residual : x;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float a;
        if (count > 0) {
            a = 0.f;
            for (int s = 0; s < count; ++s) a += slices[s * sliceStride + xBase + j];
            a = round_bf16(a);
        } else {
            a = bf16_to_f32(x[xBase + j]);
        }
        if (rank > 0) a = round_bf16(a + deltas[j]);
        if (add) {
            a = round_bf16(bf16_to_f32(residual[base + j]) + a);
            residual[base + j] = f32_to_bf16(a);
        }
        s += a * a;
    }
    const float scale = rsqrtf(block_sum(s) / (float)d + eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const bf16 o = f32_to_bf16(bf16_to_f32(w[j]) * round_bf16(bf16_to_f32(src[base + j]) * scale));
        for (int c = 0; c < copies; ++c) out[c * copyStride + outBase + j] = o;
    }
}

// loom_norm_lora: loom_norm with add and a LoRA delta, for rows of d % 16 == 0 and d ≤ 8192, every
// row (residual, out, x, w) 8-byte aligned and the slices 16-byte. One row alone on one multiprocessor
// would stream its slot's B (d·R bf16) and compute every column's delta there, so a cluster of
// NORM_CLUSTER blocks takes a row (a quarter of its columns each, one thread for each 4). The row's
// slot, its B rows (the first 16 ranks of 4 columns a thread, adjacent threads on adjacent columns,
// so each warp load reads whole lines) and the thread's 4 weights go before the wait; after it the
// row's x, residual and xa go out together, so the delta costs two round trips. The columns' deltas
// meet their owners in shared memory. The blocks' sums of squares meet in one cluster barrier: each
// block stores its sum into every block's `partials` (distributed shared memory) and reads its own
// after the barrier, so no block waits at its exit for the others' reads. The barrier's first phase,
// which guarantees every block of the cluster has started before the stores, is arrived at on entry.
// Launch: grid (NORM_CLUSTER, n rows), block (max(32, roundup32(d / 16))), d / NORM_CLUSTER floats of
// dynamic shared memory; arguments as loom_norm's, less `add`. Without a delta (LORA_PARAMS all zero)
// it is a plain add-and-norm on 4 blocks a row (decode steps of at most 64 rows; `LOOM_NORM_CLUSTER=0`: loom_norm).
#define NORM_CLUSTER 4

__device__ __forceinline__ void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// Stores v at `p` (shared memory) in the cluster's block `rank`.
__device__ __forceinline__ void cluster_store(float* p, u32 rank, float v) {
    const u32 local = (u32)__cvta_generic_to_shared(p);
    u32 remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
    asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(remote), "f"(v) : "memory");
}

extern "C" __global__ void __cluster_dims__(NORM_CLUSTER, 1, 1) __launch_bounds__(512)
loom_norm_lora(bf16* __restrict__ residual, const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ out, int d, float eps,
               const float* __restrict__ slices, int count, long long sliceStride, int xStride, LORA_PARAMS) {
    cluster_arrive_relaxed();  // every block of the cluster has started once this phase completes
    __shared__ __align__(16) float xa[LORA_MAX_RANK];
    __shared__ float partials[NORM_CLUSTER];
    extern __shared__ float deltas[];
    const LoraDelta lora = LORA_ARGS;
    const int row = blockIdx.y, q = d / NORM_CLUSTER, first = blockIdx.x * q;  // the cluster is the row's blocks
    const int i = threadIdx.x, step = blockDim.x;
    const u64 base = (u64)row * d + first, xBase = (u64)row * xStride;
    const bool mine = 4 * i < q;
    const int slot = lora.row_slot(row);
    int c[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) c[e] = first + min(i + e * step, q - 1);
    LoraDelta::Cols<4> cols;
    lora.fetch(slot, c, cols);
    const int rank = lora.rank(slot);
    const uint2 weights = mine ? ((const uint2*)(w + first))[i] : make_uint2(0u, 0u);
    grid_enter();
    float a[4], r[4];
    if (mine) {
        if (count > 0) {
            const float4* p = (const float4*)(slices + xBase + first) + i;
            float4 v = p[0];
            for (int s = 1; s < count; ++s) {
                const float4 t = p[s * sliceStride / 4];
                v.x += t.x; v.y += t.y; v.z += t.z; v.w += t.w;
            }
            a[0] = round_bf16(v.x); a[1] = round_bf16(v.y); a[2] = round_bf16(v.z); a[3] = round_bf16(v.w);
        } else {
            unpack_bf16(((const uint2*)(x + xBase + first))[i], a);
        }
        unpack_bf16(((const uint2*)(residual + base))[i], r);
    }
    // The row's xa (summed over the slices and rounded as the GEMM rounds its output).
    lora.stage(slot, xa, [&](u64 k) { return output_at(x, slices, count, sliceStride, xBase + d + k); });
    if (rank > 0) {
        float dl[4];
        lora.sum<4>(slot, rank, c, cols, xa, dl);
#pragma unroll
        for (int e = 0; e < 4; ++e)
            if (i + e * step < q) deltas[i + e * step] = dl[e];
        __syncthreads();
    }
    float sq = 0.f;
    if (mine) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            if (rank > 0) a[e] = round_bf16(a[e] + deltas[4 * i + e]);
            a[e] = round_bf16(r[e] + a[e]);
            sq += a[e] * a[e];
        }
        ((uint2*)(residual + base))[i] = make_uint2(pack_bf16x2(a[0], a[1]), pack_bf16x2(a[2], a[3]));
    }
    sq = block_sum(sq);
    cluster_wait();
    if (threadIdx.x < NORM_CLUSTER) cluster_store(&partials[blockIdx.x], threadIdx.x, sq);
    cluster_sync();
    float total = 0.f;
#pragma unroll
    for (int b = 0; b < NORM_CLUSTER; ++b) total += partials[b];
    const float scale = rsqrtf(total / (float)d + eps);
    if (mine) {
        float g[4];
        unpack_bf16(weights, g);
        ((uint2*)(out + base))[i] = make_uint2(pack_bf16x2(g[0] * round_bf16(a[0] * scale), g[1] * round_bf16(a[1] * scale)),
                                               pack_bf16x2(g[2] * round_bf16(a[2] * scale), g[3] * round_bf16(a[3] * scale)));
    }
}
