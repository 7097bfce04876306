// gemm_skinny: out = x · Wᵀ for 5 to 32 rows of x (decode batches) on tensor cores, x [n, k] bf16,
// W [m, k] bf16, out [n, m] bf16 or f32, fp32 accumulation. As with loom_gemv, streaming W is the
// whole cost; cuBLASLt's kernels for these shapes reach about half the HBM bandwidth on the small
// projections. A block owns SK_BM = 64 rows of W (16 per warp) and one range of k (split k when
// there are too few row tiles to fill the GPU). It streams W and x through a SK_STAGES-deep
// cp.async pipeline of SK_BK = 64 columns: a stage is 64 rows × 128 bytes of W, each 128-byte
// line read by 8 neighbouring threads, plus the same columns of x (L2-resident). Shared rows are
// swizzled (16-byte chunk c of row r at c ^ (r & 7)) so ldmatrix reads them without bank
// conflicts; each warp then runs m16n8k16 MMAs with its 16 W rows as A and up to four 8-token
// tiles of x as B. W's first stages are requested before grid_wait (W is constant).
// With split k, each block writes its f32 partial sums to `partial` [splits, n, m]; the last
// block of a row tile to finish (counted in `counters`, which it resets for the next launch) adds
// the splits in order 0, 1, … and writes `out`, so the result does not depend on timing.
// Needs k % 64 == 0 and 16-byte aligned x and W.
// Entry points loom_gemm_skinny_t{1,2,3,4}: ceil(n / 8) token tiles.
// Launch: grid (ceil(m / 64), splits), block (128), dynamic shared memory SK_STAGES * (64 + 8 * tiles)
// * 128 bytes. Arguments: x, W, out, outIsF32, partial (f32, splits * n * m; unused with one
// split), counters (i32, one per row tile, zero before the first launch), n, m, k, kTilesPerSplit.
#include "common.cuh"

#define SK_BM 64
#define SK_BK 64
#define SK_STAGES 4

__device__ __forceinline__ u32 shared_address(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// Copies 16 bytes global → shared, bypassing L1; with valid false it writes 16 zero bytes.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int PENDING>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory"); }

__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], u32 address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}

__device__ __forceinline__ void ldmatrix_x2(u32 (&r)[2], u32 address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(address));
}

// The byte offset of 16-byte chunk `chunk` (0 ..< 8) of row `row` in a swizzled [rows][64] bf16 tile.
__device__ __forceinline__ u32 swizzled(int row, int chunk) { return (u32)(row * 128 + ((chunk ^ (row & 7)) << 4)); }

template <int TILES>
__device__ __forceinline__ void gemm_skinny(const bf16* __restrict__ x, const bf16* __restrict__ w, void* out, int outIsF32,
                                            float* __restrict__ partial, int* __restrict__ counters, int n, int m, int k,
                                            int kTilesPerSplit) {
    constexpr int XROWS = 8 * TILES;
    constexpr u32 W_BYTES = SK_BM * SK_BK * 2, STAGE_BYTES = W_BYTES + XROWS * SK_BK * 2;
    extern __shared__ __align__(128) unsigned char smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int m0 = blockIdx.x * SK_BM, split = blockIdx.y, splits = gridDim.y;
    const int kTiles = k / SK_BK;
    const int kt0 = split * kTilesPerSplit, kt1 = min(kTiles, kt0 + kTilesPerSplit);
    const u32 base = shared_address(smem);

    auto loadW = [&](int stage, int kt) {
#pragma unroll
        for (int i = 0; i < SK_BM * 8 / 128; i++) {
            const int id = tid + 128 * i, row = id >> 3, chunk = id & 7;
            const bf16* src = w + (u64)min(m0 + row, m - 1) * k + kt * SK_BK + chunk * 8;
            cp_async16(base + stage * STAGE_BYTES + swizzled(row, chunk), src, true);
        }
    };
    auto loadX = [&](int stage, int kt) {
        for (int id = tid; id < XROWS * 8; id += 128) {
            const int row = id >> 3, chunk = id & 7;
            const bf16* src = x + (u64)min(row, n - 1) * k + kt * SK_BK + chunk * 8;
            cp_async16(base + stage * STAGE_BYTES + W_BYTES + swizzled(row, chunk), src, row < n);
        }
    };

#pragma unroll
    for (int s = 0; s < SK_STAGES - 1; s++)
        if (kt0 + s < kt1) loadW(s, kt0 + s);
    grid_enter();
#pragma unroll
    for (int s = 0; s < SK_STAGES - 1; s++) {
        if (kt0 + s < kt1) loadX(s, kt0 + s);
        cp_async_commit();
    }

    float acc[TILES][4];
#pragma unroll
    for (int q = 0; q < TILES; q++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[q][e] = 0.f;

    // ldmatrix row addresses: lane L feeds row L % 8 of matrix L / 8.
    const int mi = lane >> 3, mr = lane & 7;
    const int aRow = warp * 16 + (mi & 1) * 8 + mr, aChunk = mi >> 1;  // A: (rows 0-7 | 8-15) × (k 0-7 | 8-15)
    const int bRow = (mi >> 1) * 8 + mr, bChunk = mi & 1;               // B: tokens of two tiles × (k 0-7 | 8-15)
    for (int kt = kt0; kt < kt1; kt++) {
        cp_async_wait<SK_STAGES - 2>();
        __syncthreads();
        const int next = kt + SK_STAGES - 1;
        if (next < kt1) {
            loadW((next - kt0) % SK_STAGES, next);
            loadX((next - kt0) % SK_STAGES, next);
        }
        cp_async_commit();
        const u32 stage = base + ((kt - kt0) % SK_STAGES) * STAGE_BYTES;
#pragma unroll
        for (int s = 0; s < SK_BK / 16; s++) {
            u32 a[4];
            ldmatrix_x4(a, stage + swizzled(aRow, 2 * s + aChunk));
#pragma unroll
            for (int q = 0; q < TILES; q += 2) {
                if (q + 1 < TILES) {
                    u32 b[4];
                    ldmatrix_x4(b, stage + W_BYTES + swizzled(8 * q + bRow, 2 * s + bChunk));
                    mma_bf16_16816(acc[q], a[0], a[1], a[2], a[3], b[0], b[1]);
                    mma_bf16_16816(acc[q + 1], a[0], a[1], a[2], a[3], b[2], b[3]);
                } else {
                    u32 b[2];
                    ldmatrix_x2(b, stage + W_BYTES + swizzled(8 * q + mr, 2 * s + (mi & 1)));
                    mma_bf16_16816(acc[q], a[0], a[1], a[2], a[3], b[0], b[1]);
                }
            }
        }
    }
    cp_async_wait<0>();

    // acc[q]: (W row g, tokens 2t, 2t+1) and (W row g + 8, same tokens) of token tile q.
    const int g = lane >> 2, t = lane & 3;
    const int rowA = m0 + warp * 16 + g;
    if (splits == 1) {
#pragma unroll
        for (int q = 0; q < TILES; q++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int row = rowA + (e >> 1) * 8, token = 8 * q + 2 * t + (e & 1);
                if (row < m && token < n) {
                    const u64 o = (u64)token * m + row;
                    if (outIsF32) ((float*)out)[o] = acc[q][e]; else ((bf16*)out)[o] = f32_to_bf16(acc[q][e]);
                }
            }
        return;
    }
#pragma unroll
    for (int q = 0; q < TILES; q++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int row = rowA + (e >> 1) * 8, token = 8 * q + 2 * t + (e & 1);
            if (row < m && token < n) partial[((u64)split * n + token) * m + row] = acc[q][e];
        }
    __threadfence();
    __syncthreads();
    int* last = (int*)smem;  // the pipeline's buffers are free now
    if (tid == 0) *last = atomicAdd(&counters[blockIdx.x], 1) == splits - 1;
    __syncthreads();
    if (!*last) return;
    __threadfence();
    const int rows = min(SK_BM, m - m0);
    for (int i = tid; i < rows * n; i += 128) {
        const int token = i / rows, row = m0 + i - token * rows;
        float s = 0.f;
        for (int p = 0; p < splits; p++) s += __ldcg(partial + ((u64)p * n + token) * m + row);
        const u64 o = (u64)token * m + row;
        if (outIsF32) ((float*)out)[o] = s; else ((bf16*)out)[o] = f32_to_bf16(s);
    }
    if (tid == 0) counters[blockIdx.x] = 0;
}

#define GEMM_SKINNY(T)                                                                                                   \
    extern "C" __global__ void __launch_bounds__(128) loom_gemm_skinny_t##T(                                             \
        const bf16* x, const bf16* w, void* out, int outIsF32, float* partial, int* counters, int n, int m, int k,       \
        int kTilesPerSplit) {                                                                                            \
        gemm_skinny<T>(x, w, out, outIsF32, partial, counters, n, m, k, kTilesPerSplit);                                 \
    }

GEMM_SKINNY(1)
GEMM_SKINNY(2)
GEMM_SKINNY(3)
GEMM_SKINNY(4)
