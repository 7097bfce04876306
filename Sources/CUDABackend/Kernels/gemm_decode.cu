// gemm_decode: out = x · Wᵀ for 5 to 64 rows of x (decode batches) on tensor cores, W streamed from
// HBM straight into registers. x [n, k] bf16 (rows k apart), W [m, k] bf16 with rows ldw ≥ k
// elements apart (a LoRA-extended weight is read in its first k columns), out [n, m] bf16 or f32,
// fp32 accumulation; k and ldw multiples of 8, x and W 16-byte aligned.
//
// Reading W is the work at these sizes. A warp owns 32 rows of W (four 8-row MMA tiles), a block's
// four warps 128 rows, and a block one slice of K. Per step of 32 k, lane 4g + t loads 16 bytes of
// row g of each W tile at k 8t ..< 8t+8 (one load instruction: 8 rows × 64 contiguous bytes) and the
// same k of x rows g and g + 8 of each 16-row tile of x. A dot product does not depend on the order
// of k, so those 8 elements serve as the fragments of two m16n8k16 MMAs as loaded (x as A, W as B,
// k permuted alike in both): no shared memory, no shuffles. UNROLL steps of W loads are in flight
// before the first is used; the first UNROLL are requested before grid_wait (W is constant: it must
// not be written by the kernel launched just before).
// With a K split, the slices of one block of rows form a thread-block cluster (1, 1, split): each
// block leaves its sums in shared memory, then each adds its share of the tile over the cluster's
// blocks in block order through distributed shared memory (deterministic; no scratch, no atomics).
// Entry points loom_gemm_decode_m{1,2,3,4}: up to 16·M rows of x.
// Launch: grid (ceil(m / 128), 1, split), block 128, cluster (1, 1, split) when split > 1 (≤ 8).
// Arguments: x, W, out, outIsF32, n, m, k, ldw.
#include "common.cuh"

#define GD_TILES 4  // 8-row tiles of W per warp
#define GD_ROWS 128 // rows of W per block

__device__ __forceinline__ uint4 gd_load_w(const bf16* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

template <int MT>
__device__ __forceinline__ void gemm_decode(const bf16* __restrict__ x, const bf16* __restrict__ w, void* out, int outIsF32,
                                            int n, int m, int k, int ldw) {
    constexpr int UNROLL = MT <= 2 ? 4 : 2;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int split = gridDim.z, slice = blockIdx.z;
    const int sliceLength = ((k + split - 1) / split + 31) & ~31;
    const int kBegin = slice * sliceLength, kEnd = min(k, kBegin + sliceLength);
    const int steps = kEnd > kBegin ? (kEnd - kBegin + 31) / 32 : 0;
    const int rowBase = blockIdx.x * GD_ROWS + warp * 32;
    const bf16* wr[GD_TILES];
#pragma unroll
    for (int j = 0; j < GD_TILES; ++j) wr[j] = w + (u64)min(rowBase + 8 * j + g, m - 1) * ldw + kBegin + 8 * t;
    const bf16* xr[MT][2];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) xr[i][h] = x + (u64)min(16 * i + 8 * h + g, n - 1) * k + kBegin + 8 * t;
    float acc[MT][GD_TILES][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < GD_TILES; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    // Lanes past the slice's end load nothing and add zeros (k is a multiple of 8: a lane's 8 are all in or all out).
    auto inside = [&](int s) { return s < steps && kBegin + 32 * s + 8 * t < kEnd; };
    auto load = [&](int s, uint4 (&a)[GD_TILES]) {
        const bool ok = inside(s);
#pragma unroll
        for (int j = 0; j < GD_TILES; ++j) a[j] = ok ? gd_load_w(wr[j] + 32 * s) : make_uint4(0, 0, 0, 0);
    };
    auto compute = [&](int s, const uint4 (&a)[GD_TILES]) {
        const bool ok = inside(s);
#pragma unroll
        for (int i = 0; i < MT; ++i) {
            const uint4 x0 = ok ? __ldg((const uint4*)(xr[i][0] + 32 * s)) : make_uint4(0, 0, 0, 0);
            const uint4 x1 = ok ? __ldg((const uint4*)(xr[i][1] + 32 * s)) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int j = 0; j < GD_TILES; ++j) {
                mma_bf16_16816(acc[i][j], x0.x, x1.x, x0.y, x1.y, a[j].x, a[j].y);
                mma_bf16_16816(acc[i][j], x0.z, x1.z, x0.w, x1.w, a[j].z, a[j].w);
            }
        }
    };

    uint4 a[UNROLL][GD_TILES];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) load(u, a[u]);
    grid_enter();
    for (int s0 = 0;;) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) compute(s0 + u, a[u]);
        s0 += UNROLL;
        if (s0 >= steps) break;
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) load(s0 + u, a[u]);
    }

    // acc[i][j]: e 0, 1 = (x row 16i + g, W rows rowBase + 8j + 2t, +1); e 2, 3 = x row 16i + g + 8.
    auto store = [&](int row, int col, float v) {
        if (row >= n || col >= m) return;
        const u64 o = (u64)row * m + col;
        if (outIsF32) ((float*)out)[o] = v; else ((bf16*)out)[o] = f32_to_bf16(v);
    };
    if (split == 1) {
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < GD_TILES; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) store(16 * i + g + 8 * (e >> 1), rowBase + 8 * j + 2 * t + (e & 1), acc[i][j][e]);
        return;
    }
    __shared__ __align__(16) float tile[16 * MT][GD_ROWS];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < GD_TILES; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) tile[16 * i + g + 8 * (e >> 1)][warp * 32 + 8 * j + 2 * t + (e & 1)] = acc[i][j][e];
    cluster_sync();
    const int groups = min(n, 16 * MT) * (GD_ROWS / 4);
    for (int q = slice * GD_ROWS + threadIdx.x; q < groups; q += split * GD_ROWS) {
        const float4* p = (const float4*)&tile[0][0] + q;
        float4 s = cluster_load4(p, 0);
        for (int b = 1; b < split; ++b) {
            const float4 v = cluster_load4(p, b);
            s.x += v.x; s.y += v.y; s.z += v.z; s.w += v.w;
        }
        const int row = q / (GD_ROWS / 4), col = blockIdx.x * GD_ROWS + (q % (GD_ROWS / 4)) * 4;
        store(row, col, s.x); store(row, col + 1, s.y); store(row, col + 2, s.z); store(row, col + 3, s.w);
    }
    cluster_sync();  // the others' shared memory stays until every block has read its share
}

#define GEMM_DECODE(M)                                                                                                 \
    extern "C" __global__ void __launch_bounds__(128) loom_gemm_decode_m##M(const bf16* x, const bf16* w, void* out,   \
                                                                            int outIsF32, int n, int m, int k, int ldw) { \
        gemm_decode<M>(x, w, out, outIsF32, n, m, k, ldw);                                                             \
    }

GEMM_DECODE(1)
GEMM_DECODE(2)
GEMM_DECODE(3)
GEMM_DECODE(4)
