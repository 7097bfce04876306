// gemm_tma: out = x · Wᵀ for 5 to 64 rows of x (decode batches) on tensor cores, W streamed by the
// Tensor Memory Accelerator (sm_90+), whole or in K-slices: x [n, ·] and W [m, ·] bf16 described by
// 2-D tensor maps (cuTensorMapEncodeTiled: 64 k × 64 rows of W, 64 k × 8T rows of x, 128-byte
// swizzle, zeros past the ends), fp32 accumulation. A tile is 64 rows of W in one K-slice s (k in
// s·kSlice ..< (s+1)·kSlice; kSlice a multiple of 64 unless S = 1); its output goes to
//   outF32 = 1: out[s][i][j] f32 ([S, n, m], the slices `linearSlices` leaves for addRMSNorm to sum;
//               S = 1 is a plain f32 product),
//   outF32 = 0: out[i][j] rounded to bf16 (S must be 1).
// Decode reads W once and x (a few KB) from L2, so the kernel is a W stream, split evenly over the
// grid whatever the shape (stream-K): the tiles' 64-wide k steps, tile after tile, are cut into
// gridDim.x equal runs, one a block. A block's four consumer warps own 16 rows of a tile each, as the
// rows of m16n8k16 MMAs whose columns are x's rows; a fifth warp's first lane is the producer: one
// TMA copy of W and one of x fill a stage of a ring of STAGES, and an mbarrier per stage counts their
// bytes in (full) and the consumer warps out (empty). W is constant, so the producer requests the
// ring's first steps of W before grid_wait, while the kernel before still runs (programmatic
// launch): cuBLASLt's GEMMs cannot. x's come after it.
// A tile cut between blocks is finished by the block holding its last step: each earlier block
// leaves its part in `partials` (its slot, per warp) and raises its warp's flag; the finishing warp
// waits for the flags of the blocks before it, adds their parts in block order (the same sums every
// launch) and clears the flags for the next launch. A block waits only for lower blocks, which never
// wait for it.
// Entry points loom_gemm_tma_t{2,4,8}: n ≤ 16, 32, 64 (T n8-tiles of x's rows).
// Launch: grid (G ≤ tiles · steps), block 160, STAGES·(8 + T)·1024 + 1024 bytes of dynamic shared
// memory; partials G·4·T·128 floats, flags 4·G ints, zero before the first launch.
// Arguments: W's map, x's map (each 128 bytes, by value), out, outF32, n, m, kSlice, mTiles (tiles of
// 64 rows a slice), tiles (mTiles · S), partials, flags.
#include "common.cuh"
#define TG_ROWS 64
#define TG_BK 64

struct __align__(64) TensorMap { u64 words[16]; };

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
// Arrives once and adds `bytes` to the transactions the phase waits for.
__device__ __forceinline__ void mbar_expect(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    asm volatile(
        "{\n\t.reg .pred done;\n"
        "WAIT:\n\t"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n\t"
        "@!done bra WAIT;\n}" ::"r"(bar), "r"(parity) : "memory");
}
// The box at (k, row) of the tensor `map` into shared memory at dst; its bytes complete on `bar`.
__device__ __forceinline__ void tma_load(u32 dst, const TensorMap* map, u32 bar, int k, int row) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];"
                 ::"r"(dst), "l"((u64)map), "r"(bar), "r"(k), "r"(row) : "memory");
}
#endif

template <int T, int STAGES>
__device__ __forceinline__ void gemm_tma(const TensorMap* wMap, const TensorMap* xMap, void* __restrict__ out, int outF32,
                                         int n, int m, int kSlice, int mTiles, int tiles, float* __restrict__ partials, int* flags) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int W_BYTES = TG_ROWS * TG_BK * 2;
    constexpr int X_BYTES = 8 * T * TG_BK * 2;
    constexpr int STAGE_BYTES = W_BYTES + X_BYTES;
    extern __shared__ unsigned char dynamic[];
    __shared__ __align__(8) u64 bars[2 * STAGES];  // full[STAGES], then empty[STAGES]
    // The 128-byte swizzle repeats every 1024 bytes: stages start on such a boundary.
    const u32 base = (shared_address(dynamic) + 1023) & ~1023u;
    const u32 full = shared_address(bars), empty = full + 8 * STAGES;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int steps = (kSlice + TG_BK - 1) / TG_BK, total = tiles * steps, blocks = gridDim.x, b = blockIdx.x;
    const int begin = (int)((long long)b * total / blocks), end = (int)((long long)(b + 1) * total / blocks);

    if (tid == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(full + 8 * s, 1);
            mbar_init(empty + 8 * s, 4);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    if (warp == 4) {
        if (lane == 0) {
            // Step `it` of the run: tile it / steps (slice, 64 rows), k step it % steps.
            auto k = [&](int it) { return (it / steps / mTiles) * kSlice + (it % steps) * TG_BK; };
            auto row = [&](int it) { return (it / steps % mTiles) * TG_ROWS; };
            const int first = min(begin + STAGES, end);
            for (int it = begin; it < first; ++it) {
                const int st = it - begin;
                mbar_expect(full + 8 * st, STAGE_BYTES);
                tma_load(base + st * STAGE_BYTES, wMap, full + 8 * st, k(it), row(it));
            }
            grid_enter();
            for (int it = begin; it < first; ++it) {
                const int st = it - begin;
                tma_load(base + st * STAGE_BYTES + W_BYTES, xMap, full + 8 * st, k(it), 0);
            }
            for (int it = first; it < end; ++it) {
                const int s = it - begin, st = s % STAGES;
                mbar_wait(empty + 8 * st, ((s / STAGES) - 1) & 1);
                mbar_expect(full + 8 * st, STAGE_BYTES);
                tma_load(base + st * STAGE_BYTES, wMap, full + 8 * st, k(it), row(it));
                tma_load(base + st * STAGE_BYTES + W_BYTES, xMap, full + 8 * st, k(it), 0);
            }
        } else {
            grid_enter();
        }
        return;
    }
    grid_enter();  // the consumers write out and the partials, which a kernel before may still read

    const int g = lane >> 2, t = lane & 3;
    const int aRow = warp * 16 + (lane & 15), aHalf = lane >> 4;
    const int bRow = (lane >> 4) * 8 + (lane & 7), bHalf = (lane >> 3) & 1;
    // This warp's part of a tile in a block's slot: [j][e][lane], lanes adjacent.
    auto part = [&](int block) { return partials + ((u64)block * 4 + warp) * (T * 4 * 32) + lane; };
    int s = 0;  // steps consumed: the ring's position
    for (int it = begin; it < end;) {
        const int tile = it / steps, kBegin = it % steps, kEnd = min(steps, kBegin + end - it);
        float acc[T][4];
#pragma unroll
        for (int j = 0; j < T; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
        for (int kStep = kBegin; kStep < kEnd; ++kStep, ++s) {
            const int st = s % STAGES;
            mbar_wait(full + 8 * st, (s / STAGES) & 1);
            const u32 w = base + st * STAGE_BYTES, xs = w + W_BYTES;
#pragma unroll
            for (int kk = 0; kk < TG_BK / 16; ++kk) {
                u32 a0, a1, a2, a3;
                const int ac = 2 * kk + aHalf;
                ldmatrix_x4(w + aRow * 128 + ((ac ^ (aRow & 7)) << 4), a0, a1, a2, a3);
#pragma unroll
                for (int j = 0; j < T; j += 2) {
                    const int r = 8 * j + bRow, c = 2 * kk + bHalf;
                    u32 b0, b1, b2, b3;
                    ldmatrix_x4(xs + r * 128 + ((c ^ (r & 7)) << 4), b0, b1, b2, b3);
                    mma_bf16_16816(acc[j], a0, a1, a2, a3, b0, b1);
                    mma_bf16_16816(acc[j + 1], a0, a1, a2, a3, b2, b3);
                }
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(empty + 8 * st);
        }
        it += kEnd - kBegin;

        int* flag = flags + b * 4 + warp;
        if (kEnd < steps) {
            // The tile goes on in the next block: leave this part for the block that finishes it.
            float* p = part(b);
#pragma unroll
            for (int j = 0; j < T; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) asm volatile("st.global.cg.f32 [%0], %1;" ::"l"(p + (j * 4 + e) * 32), "f"(acc[j][e]) : "memory");
            __threadfence();
            __syncwarp();
            if (lane == 0) asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(flag), "r"(1) : "memory");
            continue;
        }
        if (kBegin > 0) {
            // The tile began in earlier blocks: add their parts, nearest first.
            const int tileStart = tile * steps;
            const int firstBlock = (int)(((long long)(tileStart + 1) * blocks - 1) / total);
            for (int other = b - 1; other >= firstBlock; --other) {
                int* otherFlag = flags + other * 4 + warp;
                if (lane == 0) {
                    int ready = 0;
                    do asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(ready) : "l"(otherFlag) : "memory");
                    while (!ready);
                }
                __syncwarp();
                __threadfence();
                const float* p = part(other);
#pragma unroll
                for (int j = 0; j < T; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        float v;
                        asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p + (j * 4 + e) * 32) : "memory");
                        acc[j][e] += v;
                    }
                __syncwarp();
                if (lane == 0) *otherFlag = 0;
            }
        }

        // acc[j]: rows g and g+8 of the warp's 16, x rows 8j + 2t and 8j + 2t + 1.
        const int slice = tile / mTiles, row0 = (tile % mTiles) * TG_ROWS;
        float* outF = (float*)out + (u64)slice * n * m;
        bf16* outB = (bf16*)out;
#pragma unroll
        for (int j = 0; j < T; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = row0 + warp * 16 + g + 8 * (e >> 1), i = 8 * j + 2 * t + (e & 1);
                if (r < m && i < n) {
                    if (outF32) outF[(u64)i * m + r] = acc[j][e];
                    else outB[(u64)i * m + r] = f32_to_bf16(acc[j][e]);
                }
            }
        }
    }
#endif
}

#define GEMM_TMA(T, STAGES) \
    extern "C" __global__ void __launch_bounds__(160, 2) loom_gemm_tma_t##T( \
        const __grid_constant__ TensorMap wMap, const __grid_constant__ TensorMap xMap, void* __restrict__ out, int outF32, int n, int m, \
        int kSlice, int mTiles, int tiles, float* __restrict__ partials, int* flags) { \
        gemm_tma<T, STAGES>(&wMap, &xMap, out, outF32, n, m, kSlice, mTiles, tiles, partials, flags); \
    }
GEMM_TMA(2, 8)
GEMM_TMA(4, 8)
GEMM_TMA(8, 6)
