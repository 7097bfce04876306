// gemv: out = x · Wᵀ for one to four rows of x (small decode batches), x [n, k] bf16, W [m, k]
// bf16 with rows ldw ≥ k elements apart (a LoRA-extended weight is read in its first k columns), out [n, m] bf16 or f32, fp32 accumulation. Reading W is all that matters at these sizes:
// a block owns GEMV_ROWS rows of W and its 128 threads walk them with 16-byte loads, thread i
// reading k 8i ..< 8i+8 of every 1024, so one warp's load reads 512 contiguous bytes of a row and
// the block 2 KB; UNROLL such steps of all its rows are in flight before the first is used. x (a
// few KB, shared by every block) comes through L1. Each (row, token) sum is reduced across the
// warp, then across the four warps in shared memory. Rows whose k is not a multiple of 8 or not
// 16-byte aligned take a plain loop (small models). The first 16 bytes of each of a thread's rows
// are requested before grid_wait, overlapping the previous kernel under programmatic launch: W
// must not be written by the kernel launched just before (weights are written only at load).
// Entry points loom_gemv_n{1,2,3,4}: n rows of x.
// Launch: grid (ceil(m / GEMV_ROWS)), block (128). Arguments: x, W, out, outIsF32, m, k, ldw.
#include "common.cuh"

#define GEMV_ROWS 4

__device__ __forceinline__ uint4 load_stream(const uint4* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

template <int N>
__device__ __forceinline__ void gemv(const bf16* __restrict__ x, const bf16* __restrict__ w, void* out, int outIsF32, int m, int k, int ldw) {
    constexpr int UNROLL = N <= 2 ? 4 : 2;
    __shared__ float partial[4][GEMV_ROWS * N];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = blockIdx.x * GEMV_ROWS;
    float acc[GEMV_ROWS][N];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int t = 0; t < N; t++) acc[r][t] = 0.f;

    if (((k | ldw) & 7) == 0 && (((u64)x | (u64)w) & 15) == 0) {
        const int vectors = k >> 3;  // 16-byte pieces per row
        const uint4* wr[GEMV_ROWS];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) wr[r] = (const uint4*)(w + (u64)min(row0 + r, m - 1) * ldw);
        const uint4* xr = (const uint4*)x;
        int v = threadIdx.x;
        auto accumulate = [&](const uint4 (&a)[UNROLL][GEMV_ROWS]) {
#pragma unroll
            for (int u = 0; u < UNROLL; u++) {
#pragma unroll
                for (int t = 0; t < N; t++) {
                    float xf[8];
                    unpack_bf16(__ldg(xr + (u64)t * vectors + v + 128 * u), xf);
#pragma unroll
                    for (int r = 0; r < GEMV_ROWS; r++) {
                        float wf[8];
                        unpack_bf16(a[u][r], wf);
#pragma unroll
                        for (int e = 0; e < 8; e++) acc[r][t] = fmaf(wf[e], xf[e], acc[r][t]);
                    }
                }
            }
        };
        // W is constant: the first step's first piece of each row is requested before grid_wait,
        // so under programmatic launch it is in flight while the kernel computing x finishes.
        uint4 head[GEMV_ROWS];
        const bool full = v + 128 * (UNROLL - 1) < vectors;
        if (full) {
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) head[r] = load_stream(wr[r] + v);
        }
        grid_enter();
        if (full) {
            uint4 a[UNROLL][GEMV_ROWS];
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) a[0][r] = head[r];
#pragma unroll
            for (int u = 1; u < UNROLL; u++)
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; r++) a[u][r] = load_stream(wr[r] + v + 128 * u);
            accumulate(a);
            v += 128 * UNROLL;
        }
        for (; v + 128 * (UNROLL - 1) < vectors; v += 128 * UNROLL) {
            uint4 a[UNROLL][GEMV_ROWS];
#pragma unroll
            for (int u = 0; u < UNROLL; u++)
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; r++) a[u][r] = load_stream(wr[r] + v + 128 * u);
            accumulate(a);
        }
        for (; v < vectors; v += 128) {
            uint4 a[GEMV_ROWS];
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) a[r] = load_stream(wr[r] + v);
#pragma unroll
            for (int t = 0; t < N; t++) {
                float xf[8];
                unpack_bf16(__ldg(xr + (u64)t * vectors + v), xf);
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; r++) {
                    float wf[8];
                    unpack_bf16(a[r], wf);
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[r][t] = fmaf(wf[e], xf[e], acc[r][t]);
                }
            }
        }
    } else {
        // Any k and alignment: one element per thread and step (small models only).
        grid_enter();
        for (int i = threadIdx.x; i < k; i += 128) {
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) {
                const float wv = bf16_to_f32(w[(u64)min(row0 + r, m - 1) * ldw + i]);
#pragma unroll
                for (int t = 0; t < N; t++) acc[r][t] = fmaf(wv, bf16_to_f32(x[(u64)t * k + i]), acc[r][t]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int t = 0; t < N; t++) {
            const float s = warp_sum(acc[r][t]);
            if (lane == 0) partial[warp][r * N + t] = s;
        }
    __syncthreads();
    if (threadIdx.x < GEMV_ROWS * N) {
        const int r = threadIdx.x / N, t = threadIdx.x - r * N;
        const float s = (partial[0][threadIdx.x] + partial[1][threadIdx.x]) + (partial[2][threadIdx.x] + partial[3][threadIdx.x]);
        if (row0 + r < m) {
            const u64 o = (u64)t * m + row0 + r;
            if (outIsF32) ((float*)out)[o] = s; else ((bf16*)out)[o] = f32_to_bf16(s);
        }
    }
}

// Each entry's launch bounds set ptxas's register budget, and with it how far ahead a thread's W
// loads are issued. On the H200 (session 27, Llama-3.1-8B shape, bench decode in turn and reversed):
// n1 and n3 at (128, 1) (120 and 118 registers) ran 260.8-263.9 and 727-733 tok/s against 251.0-251.9
// and 704-706 with the default budget (56 and 80 registers); n2 at (128, 1) (140 registers) lost,
// 455-460 against 474-479; n4 at (128, 5) (96 registers, five blocks a multiprocessor) ran 866-880
// against 815-823 at 110 registers, level with cuBLASLt at 4 rows (which the backend uses there).
#define GEMV(N, ...)                                                                                                   \
    extern "C" __global__ void __launch_bounds__(__VA_ARGS__) loom_gemv_n##N(const bf16* x, const bf16* w, void* out,   \
                                                                            int outIsF32, int m, int k, int ldw) {     \
        gemv<N>(x, w, out, outIsF32, m, k, ldw);                                                                      \
    }

GEMV(1, 128, 1)
GEMV(2, 128)
GEMV(3, 128, 1)
GEMV(4, 128, 5)
