// gemm_skinny: out = x · Wᵀ for 5 to 64 rows of x (decode batches) on tensor cores, whole or in
// K-slices: x [n, ·] bf16 with rows ldx apart, W [m, ·] bf16 with rows ldw apart (a LoRA-extended
// weight is read in its first S·kSlice columns), fp32 accumulation. Block (·, s) sums k in
// s·kSlice ..< (s+1)·kSlice and writes
//   outF32 = 1: out[s][i][j] f32 ([S, n, m], the slices `linearSlices` leaves for addRMSNorm to sum;
//               S = 1 is a plain f32 product),
//   outF32 = 0: out[i][j] rounded to bf16 (S must be 1).
// Decode reads W once and x (a few KB) from L2, so the kernel is a W stream: a block owns 64 rows of
// W and its four warps 16 rows each, as the rows of m16n8k16 MMAs whose columns are x's rows. W's
// and x's 64-wide steps of k come by cp.async into a ring of STAGES steps (rows XOR-swizzled in
// 16-byte chunks for ldmatrix); one block barrier a step. W is constant, so its first STAGES-1
// steps are requested before grid_wait, while the kernel before still runs (programmatic launch);
// cuBLASLt's GEMMs cannot do that. Rows past m read row m-1 and are not written; rows of x past n
// and k past the slice read zeros (kSlice a multiple of 8; x, W 16-byte aligned, ldx, ldw multiples of 8).
// Entry points loom_gemm_skinny_t{2,4,8}: n ≤ 16, 32, 64 (T n8-tiles of x's rows).
// Launch: grid (ceil(m / 64), S), block 128, STAGES·(64 + 8·T)·128 bytes of dynamic shared memory.
// Arguments: x, ldx, W, ldw, out, outF32, n, m, kSlice.
#include "common.cuh"

#define SK_ROWS 64
#define SK_BK 64
#define SK_STAGES 4

template <int T>
__device__ __forceinline__ void gemm_skinny(const bf16* __restrict__ x, int ldx, const bf16* __restrict__ w, int ldw,
                                            void* __restrict__ out, int outF32, int n, int m, int kSlice) {
    constexpr int W_BYTES = SK_ROWS * SK_BK * 2;
    constexpr int X_ROWS = 8 * T;
    constexpr int STAGE_BYTES = W_BYTES + X_ROWS * SK_BK * 2;
    extern __shared__ __align__(128) unsigned char ring[];
    const u32 base = shared_address(ring);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int row0 = blockIdx.x * SK_ROWS;
    const int steps = (kSlice + SK_BK - 1) / SK_BK;
    const bf16* wSlice = w + (u64)blockIdx.y * kSlice;
    const bf16* xSlice = x + (u64)blockIdx.y * kSlice;

    // A step's 64 k of `rows` rows from `src` (row r at src + r·ld) into the stage at `dst`: 8
    // chunks of 16 bytes a row, chunk c of row r at (c ^ (r & 7)).
    auto load = [&](u32 dst, const bf16* src, int ld, int rows, int valid, int step) {
        const int k = step * SK_BK;
        for (int e = tid; e < rows * 8; e += 128) {
            const int r = e >> 3, c = e & 7;
            const bool ok = r < valid && k + c * 8 < kSlice;
            cp_async16(dst + r * 128 + ((c ^ (r & 7)) << 4), ok ? src + (u64)r * ld + k + c * 8 : src, ok ? 16 : 0);
        }
    };
    auto stage = [&](int step) { return base + (step % SK_STAGES) * STAGE_BYTES; };
    const bf16* wRows = wSlice + (u64)min(row0, m - 1) * ldw;
    const int wValid = min(SK_ROWS, m - row0);  // rows past m: zeros (their outputs are not written)

    // W's first steps before the wait; x's after it. One commit group per step from here on:
    // group 0 holds W's prologue steps and x's step 0, group s x's step s.
    for (int s = 0; s < SK_STAGES - 1 && s < steps; ++s) load(stage(s), wRows, ldw, SK_ROWS, wValid, s);
    grid_enter();
    for (int s = 0; s < SK_STAGES - 1; ++s) {
        if (s < steps) load(stage(s) + W_BYTES, xSlice, ldx, X_ROWS, n, s);
        cp_async_commit();
    }

    float acc[T][4];
#pragma unroll
    for (int j = 0; j < T; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    const int aRow = warp * 16 + (lane & 15), aHalf = lane >> 4;
    const int bRow = (lane >> 4) * 8 + (lane & 7), bHalf = (lane >> 3) & 1;
    for (int s = 0; s < steps; ++s) {
        cp_async_wait<SK_STAGES - 2>();  // step s's group (and every older one) has landed
        __syncthreads();                 // …for every thread; and step s-1's stage is free to refill
        const int next = s + SK_STAGES - 1;
        if (next < steps) {
            load(stage(next), wRows, ldw, SK_ROWS, wValid, next);
            load(stage(next) + W_BYTES, xSlice, ldx, X_ROWS, n, next);
        }
        cp_async_commit();
        const u32 st = stage(s);
#pragma unroll
        for (int kk = 0; kk < SK_BK / 16; ++kk) {
            u32 a0, a1, a2, a3;
            const int ac = 2 * kk + aHalf;
            ldmatrix_x4(st + aRow * 128 + ((ac ^ (aRow & 7)) << 4), a0, a1, a2, a3);
#pragma unroll
            for (int j = 0; j < T; j += 2) {
                const int r = 8 * j + bRow, c = 2 * kk + bHalf;
                u32 b0, b1, b2, b3;
                ldmatrix_x4(st + W_BYTES + r * 128 + ((c ^ (r & 7)) << 4), b0, b1, b2, b3);
                mma_bf16_16816(acc[j], a0, a1, a2, a3, b0, b1);
                mma_bf16_16816(acc[j + 1], a0, a1, a2, a3, b2, b3);
            }
        }
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
}

#define SKINNY(T) \
    extern "C" __global__ void __launch_bounds__(128) loom_gemm_skinny_t##T( \
        const bf16* __restrict__ x, int ldx, const bf16* __restrict__ w, int ldw, void* __restrict__ out, int outF32, int n, int m, int kSlice) { \
        gemm_skinny<T>(x, ldx, w, ldw, out, outF32, n, m, kSlice); \
    }
SKINNY(2)
SKINNY(4)
SKINNY(8)
