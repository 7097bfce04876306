// add_bias: out[i][c] = bf16(out[i][c] + bias[c]) after a projection (Qwen2's q/k/v bias).
// Launch: grid (ceil(n * width / 256)), block (256). Arguments: out [n, stride ≥ width] bf16, bias [width] bf16, n, width, stride.
#include "common.cuh"

extern "C" __global__ void loom_add_bias(bf16* out, const bf16* bias, int n, int width, int stride) {
    grid_enter();
    const u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (u64)n * width) return;
    const u64 row = idx / width;
    const int c = (int)(idx - row * width);
    bf16* o = out + row * stride + c;
    *o = f32_to_bf16(bf16_to_f32(*o) + bf16_to_f32(bias[c]));
}
