// gemm_tma: out = x · Wᵀ for 5 to 64 rows of x (decode batches) on tensor cores, W streamed by the
// Tensor Memory Accelerator (sm_90+), whole or in K-slices: x [n, ·] and W [m, ·] bf16 described by
// 2-D tensor maps (cuTensorMapEncodeTiled: 64 k × 64 rows of W, 64 k × 8T rows of x, 128-byte
// swizzle, zeros past the ends), fp32 accumulation. Block (·, s) sums k in s·kSlice ..< (s+1)·kSlice
// (kSlice a multiple of 64 unless S = 1) and writes
//   outF32 = 1: out[s][i][j] f32 ([S, n, m], the slices `linearSlices` leaves for addRMSNorm to sum;
//               S = 1 is a plain f32 product),
//   outF32 = 0: out[i][j] rounded to bf16 (S must be 1).
// Decode reads W once and x (a few KB) from L2, so the kernel is a W stream: a block owns 64 rows of
// W, its four consumer warps 16 rows each, as the rows of m16n8k16 MMAs whose columns are x's rows.
// A fifth warp's first lane is the producer: one TMA copy of W and one of x fill a stage of a ring of
// STAGES, and an mbarrier per stage counts their bytes in (full) and the consumer warps out (empty).
// W is constant, so the producer requests the ring's first STAGES steps of W before grid_wait, while
// the kernel before still runs (programmatic launch): cuBLASLt's GEMMs cannot. x's come after it.
// Entry points loom_gemm_tma_t{2,4,8}: n ≤ 16, 32, 64 (T n8-tiles of x's rows).
// Launch: grid (ceil(m / 64), S), block 160, STAGES·(8 + T)·1024 + 1024 bytes of dynamic shared memory.
// Arguments: W's map, x's map (each 128 bytes, by value), out, outF32, n, m, kSlice.
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
                                         int n, int m, int kSlice) {
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
    const int row0 = blockIdx.x * TG_ROWS, k0 = blockIdx.y * kSlice;
    const int steps = (kSlice + TG_BK - 1) / TG_BK;

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
            const int first = min(STAGES, steps);
            for (int s = 0; s < first; ++s) {
                mbar_expect(full + 8 * s, STAGE_BYTES);
                tma_load(base + s * STAGE_BYTES, wMap, full + 8 * s, k0 + s * TG_BK, row0);
            }
            grid_enter();
            for (int s = 0; s < first; ++s) tma_load(base + s * STAGE_BYTES + W_BYTES, xMap, full + 8 * s, k0 + s * TG_BK, 0);
            for (int s = STAGES; s < steps; ++s) {
                const int st = s % STAGES;
                mbar_wait(empty + 8 * st, ((s / STAGES) - 1) & 1);
                mbar_expect(full + 8 * st, STAGE_BYTES);
                tma_load(base + st * STAGE_BYTES, wMap, full + 8 * st, k0 + s * TG_BK, row0);
                tma_load(base + st * STAGE_BYTES + W_BYTES, xMap, full + 8 * st, k0 + s * TG_BK, 0);
            }
        } else {
            grid_enter();
        }
        return;
    }
    grid_enter();  // the consumers write out, which a kernel before may still read

    float acc[T][4];
#pragma unroll
    for (int j = 0; j < T; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    const int g = lane >> 2, t = lane & 3;
    const int aRow = warp * 16 + (lane & 15), aHalf = lane >> 4;
    const int bRow = (lane >> 4) * 8 + (lane & 7), bHalf = (lane >> 3) & 1;
    for (int s = 0; s < steps; ++s) {
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

    // acc[j]: rows g and g+8 of the warp's 16, x rows 8j + 2t and 8j + 2t + 1.
    float* outF = (float*)out + (u64)blockIdx.y * n * m;
    bf16* outB = (bf16*)out;
#pragma unroll
    for (int j = 0; j < T; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int row = row0 + warp * 16 + g + 8 * (e >> 1), i = 8 * j + 2 * t + (e & 1);
            if (row < m && i < n) {
                if (outF32) outF[(u64)i * m + row] = acc[j][e];
                else outB[(u64)i * m + row] = f32_to_bf16(acc[j][e]);
            }
        }
    }
#endif
}

#define GEMM_TMA(T, STAGES) \
    extern "C" __global__ void __launch_bounds__(160, 2) loom_gemm_tma_t##T( \
        const __grid_constant__ TensorMap wMap, const __grid_constant__ TensorMap xMap, void* __restrict__ out, int outF32, int n, int m, \
        int kSlice) { \
        gemm_tma<T, STAGES>(&wMap, &xMap, out, outF32, n, m, kSlice); \
    }
GEMM_TMA(2, 8)
GEMM_TMA(4, 8)
GEMM_TMA(8, 6)
