// silu_mul: out[i][j] = bf16(bf16(silu(gateUp[i][j])) * gateUp[i][I + j]), silu(g) = g / (1 + e^-g) in fp32
// (the two roundings of transformers' bf16 `act_fn(gate) * up`).
// Launch: grid (n, ceil(I / 256)), block (256), one element per thread. Arguments: gateUp [n, stride] bf16
// (stride ≥ 2I), out [n, I] bf16, I, stride.
//
// silu_mul_lora (`--lora-backend fused` decode): gate and up first gain their LoRA delta (LORA_PARAMS),
// rounded as PEFT's bf16 sum. A row reading its slot's B for gate and up (2·I·R bf16) would make
// 29 MB of L2 reads a launch at 32 rows of 8 rank-16 slots, so a block serves one slot's rows
// (blockIdx.y; rowSlots scanned into shared memory) for 256 columns: the slot's rank and B rows
// need no lookup and go before the wait, and the rows' gate, up and xa go out together after it,
// SILU_ROWS at a time. Blocks of a slot without rows in the step return at once.
// Launch: grid (ceil(I / 256), slots), block (256). Arguments: as silu_mul, then n, LORA_PARAMS (a
// stack of 2, 2R ≤ LORA_MAX_RANK).
#include "common.cuh"

#define SILU_ROWS 4
#define SILU_MAX_ROWS 1024

__device__ __forceinline__ float silu_times(float g, float u) { return round_bf16(g / (1.f + __expf(-g))) * u; }

extern "C" __global__ void __launch_bounds__(256) loom_silu_mul(const bf16* gateUp, bf16* out, int width, int stride) {
    grid_enter();
    const int row = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= width) return;
    const bf16* x = gateUp + (u64)row * stride;
    out[(u64)row * width + j] = f32_to_bf16(silu_times(bf16_to_f32(x[j]), bf16_to_f32(x[width + j])));
}

extern "C" __global__ void __launch_bounds__(256) loom_silu_mul_lora(const bf16* gateUp, bf16* out, int width, int stride, int n, LORA_PARAMS) {
    __shared__ float xa[SILU_ROWS][LORA_MAX_RANK];
    __shared__ int rows[SILU_MAX_ROWS];
    __shared__ int count;
    const LoraDelta lora = LORA_ARGS;
    const int slot = blockIdx.y, span = lora.stack * lora.R;
    const int j = blockIdx.x * blockDim.x + threadIdx.x, jc = min(j, width - 1);
    const int c[2] = {jc, width + jc};
    LoraDelta::Cols<2> cols;
    lora.fetch(slot, c, cols);
    const int rank = lora.rank(slot);
    if (threadIdx.x == 0) count = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (lora.rowSlots[i] == slot) rows[atomicAdd(&count, 1)] = i;
    __syncthreads();
    const int found = count;
    if (found == 0) return;  // no dependent waits on this block's writes: it has none
    grid_enter();
    for (int k0 = 0; k0 < found; k0 += SILU_ROWS) {
        const int m = min(SILU_ROWS, found - k0);
        float g[SILU_ROWS], u[SILU_ROWS];
#pragma unroll
        for (int k = 0; k < SILU_ROWS; ++k) {
            const bf16* x = gateUp + (u64)rows[k0 + min(k, m - 1)] * stride;
            g[k] = bf16_to_f32(x[jc]);
            u[k] = bf16_to_f32(x[width + jc]);
        }
        if (rank > 0) {
            if (k0 > 0) __syncthreads();  // the previous rows' xa are read
            for (int t = threadIdx.x; t < m * span; t += blockDim.x) {
                const int k = t / span, e = t - k * span;
                xa[k][e] = bf16_to_f32(gateUp[(u64)rows[k0 + k] * stride + lora.width + (u64)slot * span + e]);
            }
            __syncthreads();
        }
#pragma unroll
        for (int k = 0; k < SILU_ROWS; ++k) {
            if (k >= m) break;
            float gk = g[k], uk = u[k];
            if (rank > 0) {
                float d[2];
                lora.sum<2>(slot, rank, c, cols, xa[k], d);
                gk = round_bf16(gk + d[0]);
                uk = round_bf16(uk + d[1]);
            }
            if (j < width) out[(u64)rows[k0 + k] * width + j] = f32_to_bf16(silu_times(gk, uk));
        }
    }
}
