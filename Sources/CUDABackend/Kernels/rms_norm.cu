// rms_norm / add_rms_norm: RMSNorm of each row, optionally after adding x into the residual stream.
//   loom_rms_norm:     out[i] = w * bf16(x[i] / sqrt(mean(x[i]^2) + eps))
//   loom_add_rms_norm: residual[i] = bf16(residual[i] + x[i]); out[i] = rmsNorm(residual[i])
// With `slices` (a GEMM's K-slices, linearSlices), x[i] = bf16(sum over s of slices[s][i]) (f32).
// The sum of squares is accumulated in fp32; roundings follow transformers' bf16 LlamaRMSNorm.
// Decode runs one row per block, so the kernel is a latency chain: rows of d % 8 == 0 are read with
// 16-byte loads, each thread keeping its (at most 4) vectors in registers between the two passes.
// With a LoRA delta (LORA_PARAMS, `--lora-backend fused` decode: x or the slices are a fused GEMM's
// output, xa after the first d columns), x[i] first gains it, rounded as PEFT's bf16 sum: in
// loom_norm_lora (below) where a row is at most 512 16-byte vectors, else in loom_norm.
// Launch: grid (n rows), block (min(1024, max(32, roundup32(d / 8)))) for the vector path (d <= 32768),
// else 256. Arguments: residual/out [n, d] bf16 (rows contiguous), x [n, xStride] bf16, w [d] bf16, d,
// eps, add (0/1), slices [count, n, xStride] f32 (`count` 0: none; slices `sliceStride` = n·xStride
// floats apart), xStride, LORA_PARAMS (a stack of 1, stack·R ≤ LORA_MAX_RANK); with a delta, d floats
// of dynamic shared memory.
#include "common.cuh"

#define MAXV 4

__device__ __forceinline__ uint4 pack8(const float* f) {
    u32 w[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) w[e] = (u32)f32_to_bf16(f[2 * e]) | ((u32)f32_to_bf16(f[2 * e + 1]) << 16);
    return make_uint4(w[0], w[1], w[2], w[3]);
}

extern "C" __global__ void __launch_bounds__(1024) loom_norm(bf16* __restrict__ residual, const bf16* __restrict__ x, const bf16* __restrict__ w,
                                     bf16* __restrict__ out, int d, float eps, int add,
                                     const float* __restrict__ slices, int count, long long sliceStride, int xStride, LORA_PARAMS) {
    grid_enter();
    const u64 base = (u64)blockIdx.x * d, xBase = (u64)blockIdx.x * xStride;
    const bool vectorized = (d & 7) == 0 && d / 8 <= MAXV * (int)blockDim.x
        && (((u64)(residual + base) | (u64)(x + xBase) | (u64)w | (u64)(out + base) | (u64)(slices + xBase)) & 15) == 0;
    // The row's delta: its slot's xa (summed over the slices and rounded as the GEMM rounds its
    // output) staged in shared memory, then every column's delta into `deltas` (dynamic shared
    // memory, d floats), the block's threads streaming the slot's B a column each.
    __shared__ float xa[LORA_MAX_RANK];
    extern __shared__ float deltas[];
    const LoraDelta lora = LORA_ARGS;
    const int2 sr = lora.slot(blockIdx.x);
    if (sr.y > 0) {
        lora.stage(sr, xa, [&](u64 i) {
            const u64 at = xBase + d + i;
            float v = 0.f;
            if (count > 0) {
                for (int k = 0; k < count; ++k) v += slices[k * sliceStride + at];
            } else {
                v = bf16_to_f32(x[at]);
            }
            return round_bf16(v);
        });
        const int step = blockDim.x;
        for (int c0 = threadIdx.x; c0 < d; c0 += 2 * step) {
            int c[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) c[i] = min(c0 + i * step, d - 1);
            float o[2];
            lora.terms<2>(sr.x, sr.y, c, xa, o);
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
                if (sr.y > 0)
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
                ((uint4*)(out + base))[i] = pack8(o);
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
        if (sr.y > 0) a = round_bf16(a + deltas[j]);
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

// loom_norm_lora: loom_norm's vector path with add and a LoRA delta, for rows of d % 8 == 0 and at
// most 512 vectors, every row (residual, out, x or the slices, w) 16-byte aligned. Each thread owns
// one vector: it computes its 8 columns' deltas itself from B rows loaded before the wait (8
// columns × the first 16 ranks in registers, hence 512 threads at most), and its x, residual and
// the row's xa go out together after it: one round trip where loom_norm's delta takes five.
// Launch: grid (n rows), block (max(32, roundup32(d / 8))); arguments as loom_norm's, less `add`.
extern "C" __global__ void __launch_bounds__(512) loom_norm_lora(bf16* __restrict__ residual, const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                                 bf16* __restrict__ out, int d, float eps, const float* __restrict__ slices, int count,
                                                                 long long sliceStride, int xStride, LORA_PARAMS) {
    __shared__ float xa[LORA_MAX_RANK];
    const LoraDelta lora = LORA_ARGS;
    const int i = threadIdx.x, nv = d >> 3;
    const u64 base = (u64)blockIdx.x * d, xBase = (u64)blockIdx.x * xStride;
    const bool mine = i < nv;
    const int2 sr = lora.slot(blockIdx.x);
    int c[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) c[e] = mine ? 8 * i + e : 0;
    LoraDelta::Cols<8> cols;
    if (sr.y > 0 && mine) lora.fetch(sr.x, c, cols);
    grid_enter();
    float a[8], r[8];
    if (mine) {
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
        unpack_bf16(((const uint4*)(residual + base))[i], r);
    }
    // The row's xa (summed over the slices and rounded as the GEMM rounds its output).
    lora.stage(sr, xa, [&](u64 k) {
        const u64 at = xBase + d + k;
        float v = 0.f;
        if (count > 0) {
            for (int s = 0; s < count; ++s) v += slices[s * sliceStride + at];
        } else {
            v = bf16_to_f32(x[at]);
        }
        return round_bf16(v);
    });
    float sq = 0.f;
    if (mine) {
        if (sr.y > 0) {
            float dl[8];
            lora.sum<8>(sr.x, sr.y, c, cols, xa, dl);
#pragma unroll
            for (int e = 0; e < 8; ++e) a[e] = round_bf16(a[e] + dl[e]);
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            a[e] = round_bf16(r[e] + a[e]);
            sq += a[e] * a[e];
        }
        ((uint4*)(residual + base))[i] = pack8(a);
    }
    const float scale = rsqrtf(block_sum(sq) / (float)d + eps);
    if (mine) {
        float g[8], o[8];
        unpack_bf16(((const uint4*)w)[i], g);
#pragma unroll
        for (int e = 0; e < 8; ++e) o[e] = g[e] * round_bf16(a[e] * scale);
        ((uint4*)(out + base))[i] = pack8(o);
    }
}
