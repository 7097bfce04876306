// convert: out[i] = x[i] in out's dtype (f32 or bf16), rounded to nearest even. Tensor-parallel
// ranks sum row-parallel outputs in f32 and round once here, where one GPU rounds its GEMM output.
// Launch: grid (ceil(count / 256)), block (256). Arguments: x, xIsF32, out, outIsF32, count.
#include "common.cuh"

extern "C" __global__ void loom_convert(const void* x, int xIsF32, void* out, int outIsF32, u64 count) {
    grid_enter();
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    const float v = load_any(x, i, xIsF32);
    if (outIsF32) ((float*)out)[i] = v; else ((bf16*)out)[i] = f32_to_bf16(v);
}
