// fill: device-side initialisation, so benchmark weights of a named shape never cross PCIe.
//   loom_fill_random: out[i] = bf16(scale * u), u uniform in [-1, 1) from a hash of (seed, i).
//   loom_fill_value:  out[i] = bf16(value).
// Launch: grid (ceil(count / 256)) (grid-stride loop), block (256). Arguments: out bf16, count, seed/scale or value.
#include "common.cuh"

__device__ __forceinline__ u64 mix(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

extern "C" __global__ void loom_fill_random(bf16* out, u64 count, u64 seed, float scale) {
    grid_enter();
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (u64)gridDim.x * blockDim.x) {
        const u64 h = mix(seed * 0x9E3779B97F4A7C15ull + i);
        const float u = (float)(h >> 40) * (1.f / 8388608.f) - 1.f;
        out[i] = f32_to_bf16(scale * u);
    }
}

extern "C" __global__ void loom_fill_value(bf16* out, u64 count, float value) {
    grid_enter();
    const bf16 v = f32_to_bf16(value);
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (u64)gridDim.x * blockDim.x) out[i] = v;
}
