// silu_mul: out[i][j] = bf16(bf16(silu(gateUp[i][j])) * gateUp[i][I + j]), silu(g) = g / (1 + e^-g) in fp32
// (the two roundings of transformers' bf16 `act_fn(gate) * up`). With a LoRA delta (LORA_PARAMS,
// `--lora-backend fused` decode), gate and up first gain theirs, rounded as PEFT's bf16 sum.
// Launch: grid (n, ceil(I / 256)), block (256), one element per thread. Arguments: gateUp [n, stride] bf16
// (stride ≥ 2I), out [n, I] bf16, I, stride, LORA_PARAMS.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) loom_silu_mul(const bf16* gateUp, bf16* out, int width, int stride, LORA_PARAMS) {
    __shared__ float xa[2 * LORA_MAX_RANK];
    grid_enter();
    const int row = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
    const bf16* x = gateUp + (u64)row * stride;
    const LoraDelta lora = LORA_ARGS;
    const int2 sr = lora.slot(row);
    lora.stage(sr, xa, [&](u64 i) { return bf16_to_f32(x[lora.width + i]); });
    if (j >= width) return;
    float g = bf16_to_f32(x[j]), u = bf16_to_f32(x[width + j]);
    if (sr.y > 0) {
        const int c[2] = {j, width + j};
        float d[2];
        lora.terms<2>(sr.x, sr.y, c, xa, d);
        g = round_bf16(g + d[0]);
        u = round_bf16(u + d[1]);
    }
    out[(u64)row * width + j] = f32_to_bf16(round_bf16(g / (1.f + __expf(-g))) * u);
}
