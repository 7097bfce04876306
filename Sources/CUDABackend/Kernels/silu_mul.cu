// silu_mul: out[i][j] = bf16(bf16(silu(gateUp[i][j])) * gateUp[i][I + j]), silu(g) = g / (1 + e^-g) in fp32
// (the two roundings of transformers' bf16 `act_fn(gate) * up`). With a LoRA delta (LORA_PARAMS,
// `--lora-backend fused` decode), gate and up first gain theirs, rounded as PEFT's bf16 sum.
// Launch: grid (ceil(n * I / 256)), block (256), one element per thread. Arguments: gateUp [n, stride] bf16
// (stride ≥ 2I), out [n, I] bf16, n, I, stride, LORA_PARAMS.
#include "common.cuh"

extern "C" __global__ void loom_silu_mul(const bf16* gateUp, bf16* out, int n, int width, int stride, LORA_PARAMS) {
    grid_enter();
    const u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (u64)n * width) return;
    const u64 row = idx / width, j = idx - row * width;
    const bf16* x = gateUp + row * stride;
    float g = bf16_to_f32(x[j]), u = bf16_to_f32(x[width + j]);
    const LoraDelta lora = LORA_ARGS;
    const int2 sr = lora.slot((int)row);
    if (sr.y > 0) {
        const bf16* xa = x + lora.width + sr.x * lora.stack * lora.R;
        g = round_bf16(g + lora.term(sr.x, sr.y, (int)j, xa));
        u = round_bf16(u + lora.term(sr.x, sr.y, width + (int)j, xa));
    }
    out[idx] = f32_to_bf16(round_bf16(g / (1.f + __expf(-g))) * u);
}
