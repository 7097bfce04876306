// silu_mul: out[i][j] = bf16(bf16(silu(gateUp[i][j])) * gateUp[i][I + j]), silu(g) = g / (1 + e^-g) in fp32
// (the two roundings of transformers' bf16 `act_fn(gate) * up`).
// Launch: grid (n, ceil(I / 256)), block (256), one element per thread. Arguments: gateUp [n, stride] bf16
// (stride ≥ 2I), out [n, I] bf16, I, stride.
//
// silu_mul_lora (`--lora-backend fused` decode): gate and up first gain their LoRA delta (LORA_PARAMS),
// rounded as PEFT's bf16 sum. Each row would read its slot's B for gate and up (2·I·R bf16, 29 MB of
// L2 reads a launch at 32 rows of 8 rank-16 slots), so a block takes SILU_ROWS rows in slot order
// (`order`, the plan's permutation) and reads a slot's B once for all of them.
// Launch: grid (ceil(I / 256), ceil(n / SILU_ROWS)), block (256). Arguments: as silu_mul, then n,
// order [n] i32, LORA_PARAMS (a stack of 2, 2R ≤ LORA_MAX_RANK).
#include "common.cuh"

#define SILU_ROWS 4

__device__ __forceinline__ float silu_times(float g, float u) { return round_bf16(g / (1.f + __expf(-g))) * u; }

extern "C" __global__ void __launch_bounds__(256) loom_silu_mul(const bf16* gateUp, bf16* out, int width, int stride) {
    grid_enter();
    const int row = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= width) return;
    const bf16* x = gateUp + (u64)row * stride;
    out[(u64)row * width + j] = f32_to_bf16(silu_times(bf16_to_f32(x[j]), bf16_to_f32(x[width + j])));
}

extern "C" __global__ void __launch_bounds__(256) loom_silu_mul_lora(const bf16* gateUp, bf16* out, int width, int stride, int n,
                                                                     const int* __restrict__ order, LORA_PARAMS) {
    __shared__ float xa[SILU_ROWS][LORA_MAX_RANK];
    const LoraDelta lora = LORA_ARGS;
    const int p0 = blockIdx.y * SILU_ROWS, rows = min(SILU_ROWS, n - p0);
    const int j = blockIdx.x * blockDim.x + threadIdx.x, jc = min(j, width - 1);
    const int c[2] = {jc, width + jc};
    // The rows, their slots and the first slot's B: step metadata and weights, before the wait.
    int row[SILU_ROWS];
    int2 sr[SILU_ROWS];
#pragma unroll
    for (int k = 0; k < SILU_ROWS; ++k) {
        row[k] = k < rows ? order[p0 + k] : 0;
        sr[k] = k < rows ? lora.slot(row[k]) : make_int2(0, 0);
    }
    LoraDelta::Cols<2> cols;
    int fetched = -1;
    if (sr[0].y > 0) {
        lora.fetch(sr[0].x, c, cols);
        fetched = sr[0].x;
    }
    grid_enter();
    float g[SILU_ROWS], u[SILU_ROWS];
#pragma unroll
    for (int k = 0; k < SILU_ROWS; ++k) {
        const bf16* x = gateUp + (u64)row[k] * stride;
        g[k] = k < rows ? bf16_to_f32(x[jc]) : 0.f;
        u[k] = k < rows ? bf16_to_f32(x[width + jc]) : 0.f;
    }
    const int span = lora.stack * lora.R;
#pragma unroll
    for (int k = 0; k < SILU_ROWS; ++k)
        if (k < rows)
            for (int i = threadIdx.x; i < span; i += blockDim.x)
                if (i % lora.R < sr[k].y) xa[k][i] = bf16_to_f32(gateUp[(u64)row[k] * stride + lora.width + (u64)sr[k].x * span + i]);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < SILU_ROWS; ++k) {
        if (k >= rows) break;
        float gk = g[k], uk = u[k];
        if (sr[k].y > 0) {
            if (sr[k].x != fetched) {
                lora.fetch(sr[k].x, c, cols);
                fetched = sr[k].x;
            }
            float d[2];
            lora.sum<2>(sr[k].x, sr[k].y, c, cols, xa[k], d);
            gk = round_bf16(gk + d[0]);
            uk = round_bf16(uk + d[1]);
        }
        if (j < width) out[(u64)row[k] * width + j] = f32_to_bf16(silu_times(gk, uk));
    }
}
