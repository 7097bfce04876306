// argmax: greedy sampling on the device, out[i] = the first index of the largest logit of row i.
// Launch: grid (n rows), block (1024). Arguments: logits [n, vocab] (f32 if isF32 else bf16), out [n] i32, vocab.
#include "common.cuh"

extern "C" __global__ void loom_argmax(const void* logits, int isF32, int* out, int vocab) {
    grid_enter();
    const u64 base = (u64)blockIdx.x * vocab;
    float best = NEG_INF;
    int index = 0x7fffffff;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float v = load_any(logits, base + j, isF32);
        if (v > best) { best = v; index = j; }
    }
    __shared__ float values[1024];
    __shared__ int indices[1024];
    values[threadIdx.x] = best;
    indices[threadIdx.x] = index;
    __syncthreads();
    for (int s = blockDim.x >> 1; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            const float v = values[threadIdx.x + s];
            const int k = indices[threadIdx.x + s];
            if (v > values[threadIdx.x] || (v == values[threadIdx.x] && k < indices[threadIdx.x])) {
                values[threadIdx.x] = v;
                indices[threadIdx.x] = k;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = indices[0] == 0x7fffffff ? 0 : indices[0];
}
