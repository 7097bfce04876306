// silu_mul: out[i][j] = bf16(bf16(silu(gateUp[i][j])) * gateUp[i][I + j]), silu(g) = g / (1 + e^-g) in fp32
// (the two roundings of transformers' bf16 `act_fn(gate) * up`).
// Launch: grid (ceil(n * I / 256)), block (256), one element per thread. Arguments: gateUp [n, 2I] bf16,
// out [n, I] bf16, n, I.
#include "common.cuh"

extern "C" __global__ void loom_silu_mul(const bf16* gateUp, bf16* out, int n, int width) {
    grid_enter();
    const u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (u64)n * width) return;
    const u64 row = idx / width, j = idx - row * width;
    const float g = bf16_to_f32(gateUp[row * 2 * width + j]);
    const float u = bf16_to_f32(gateUp[row * 2 * width + width + j]);
    out[idx] = f32_to_bf16(round_bf16(g / (1.f + __expf(-g))) * u);
}
