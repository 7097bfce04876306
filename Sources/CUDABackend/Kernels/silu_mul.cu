// silu_mul: out[i][j] = bf16(bf16(silu(gateUp[i][j])) * gateUp[i][I + j]), silu(g) = g / (1 + e^-g) in fp32
// (the two roundings of transformers' bf16 `act_fn(gate) * up`).
// Launch: grid (n, ceil(I / 256)), block (256), one element per thread. Arguments: gateUp [n, stride] bf16
// (stride ≥ 2I), out [n, outStride] bf16 (the first I columns written: a fused GEMM's wide input takes x
// beside its shrink results), I, stride, outStride.
// loom_silu_mul_v8: the same, 8 columns a thread by 16-byte loads and stores, for I, stride and
// outStride multiples of 8 and 16-byte aligned rows; grid (n, ceil(I / 2048)), block (256). A decode
// step of 32 rows of I = 14,336 is then 224 blocks, one wave, where the scalar form's 1,792 were two.
//
// silu_mul_lora (`--lora-backend fused` decode): gate and up first gain their LoRA delta (LORA_PARAMS),
// rounded as PEFT's bf16 sum. A row reading its slot's B for gate and up (2·I·R bf16) would make
// 29 MB of L2 reads a launch at 32 rows of 8 rank-16 slots, so a block serves one slot's rows
// (blockIdx.y; rowSlots scanned into shared memory) for 512 columns: the slot's rank and B rows
// need no lookup and go before the wait, and the rows' gate, up and xa go out together after it,
// SILU_ROWS at a time. Blocks of a slot without rows in the step return at once.
// Launch: grid (ceil(I / 512), slots), block (256). Arguments: gateUp, out, I, stride, then n,
// outStride (out may be down's wide input, where down takes the widened K while gate/up adds its
// delta here), LORA_PARAMS (a stack of 2, 2R ≤ LORA_MAX_RANK).
#include "common.cuh"

#define SILU_ROWS 4
#define SILU_MAX_ROWS 1024

__device__ __forceinline__ float silu_times(float g, float u) { return round_bf16(g / (1.f + __expf(-g))) * u; }

extern "C" __global__ void __launch_bounds__(256) loom_silu_mul(const bf16* gateUp, bf16* out, int width, int stride, int outStride) {
    grid_enter();
    const int row = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= width) return;
    const bf16* x = gateUp + (u64)row * stride;
    out[(u64)row * outStride + j] = f32_to_bf16(silu_times(bf16_to_f32(x[j]), bf16_to_f32(x[width + j])));
}

extern "C" __global__ void __launch_bounds__(256) loom_silu_mul_v8(const bf16* gateUp, bf16* out, int width, int stride, int outStride) {
    grid_enter();
    const int row = blockIdx.x, j = 8 * (blockIdx.y * blockDim.x + threadIdx.x);
    if (j >= width) return;
    const bf16* x = gateUp + (u64)row * stride;
    float g[8], u[8];
    unpack_bf16(*(const uint4*)(x + j), g);
    unpack_bf16(*(const uint4*)(x + width + j), u);
    u32 w[4];
#pragma unroll
    for (int e = 0; e < 4; ++e)
        w[e] = (u32)f32_to_bf16(silu_times(g[2 * e], u[2 * e])) | ((u32)f32_to_bf16(silu_times(g[2 * e + 1], u[2 * e + 1])) << 16);
    *(uint4*)(out + (u64)row * outStride + j) = make_uint4(w[0], w[1], w[2], w[3]);
}

// The rows' gate and up (4 columns each: j, j + 256 of gate, then of up) with their deltas, SILU_ROWS at a
// time from `rows` (one for RB = 0), written out. RB > 0: the pool's rank stride RB (8 or 16) is the slot's rank, so B
// is unpacked into registers once for all rows and nothing is masked; RB = 0: LoraDelta::sum per row.
template <int RB>
__device__ __forceinline__ void silu_rows(const LoraDelta& lora, const bf16* gateUp, bf16* out, int width, int stride, int outStride, int slot, int rank,
                                          const int* rows, int found, const int (&j)[2], const int (&c)[4],
                                          const LoraDelta::Cols<4>& cols, float (*xa)[LORA_MAX_RANK]) {
    constexpr int ROWS = RB > 0 ? SILU_ROWS : 1;  // one at a time where sum() holds more registers
    const int span = lora.stack * lora.R;
    float b[RB > 0 ? 4 : 1][RB > 0 ? RB : 1];
    float scale[2] = {0.f, 0.f};
    if (RB > 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int h = 0; h < RB / 8; ++h) unpack_bf16(cols.v[i][h], &b[i][8 * h]);
        scale[0] = lora.scalings[slot * lora.stack];
        scale[1] = lora.scalings[slot * lora.stack + 1];
    }
    for (int k0 = 0; k0 < found; k0 += ROWS) {
        const int m = min(ROWS, found - k0);
        float gu[ROWS][4];
#pragma unroll
        for (int k = 0; k < ROWS; ++k) {
            const bf16* x = gateUp + (u64)rows[k0 + min(k, m - 1)] * stride;
#pragma unroll
            for (int e = 0; e < 4; ++e) gu[k][e] = bf16_to_f32(x[c[e]]);
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
        for (int k = 0; k < ROWS; ++k) {
            if (k >= m) break;
            if (rank > 0) {
                float d[4];
                if (RB > 0) {
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const float* x = xa[k] + (i >> 1) * RB;  // gate's xa, then up's
                        float acc = 0.f;
#pragma unroll
                        for (int q = 0; q < RB; q += 8) LoraDelta::dot8(acc, &b[i][q], x + q);
                        d[i] = LoraDelta::rounded(acc, scale[i >> 1]);
                    }
                } else {
                    lora.sum<4>(slot, rank, c, cols, xa[k], d);
                }
#pragma unroll
                for (int e = 0; e < 4; ++e) gu[k][e] = round_bf16(gu[k][e] + d[e]);
            }
#pragma unroll
            for (int h = 0; h < 2; ++h)
                if (j[h] < width) out[(u64)rows[k0 + k] * outStride + j[h]] = f32_to_bf16(silu_times(gu[k][h], gu[k][2 + h]));
        }
    }
}

extern "C" __global__ void __launch_bounds__(256, 2) loom_silu_mul_lora(const bf16* gateUp, bf16* out, int width, int stride, int n, int outStride, LORA_PARAMS) {
    __shared__ __align__(16) float xa[SILU_ROWS][LORA_MAX_RANK];
    __shared__ int rows[SILU_MAX_ROWS];
    __shared__ int count;
    const LoraDelta lora = LORA_ARGS;
    const int slot = blockIdx.y;
    // Columns j and j + 256 of gate and of up.
    int j[2], c[4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        j[h] = blockIdx.x * 512 + h * 256 + threadIdx.x;
        c[h] = min(j[h], width - 1);
        c[2 + h] = width + c[h];
    }
    LoraDelta::Cols<4> cols;
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
    if (lora.R == 16 && rank == 16) {
        silu_rows<16>(lora, gateUp, out, width, stride, outStride, slot, rank, rows, found, j, c, cols, xa);
    } else if (lora.R == 8 && rank == 8) {
        silu_rows<8>(lora, gateUp, out, width, stride, outStride, slot, rank, rows, found, j, c, cols, xa);
    } else {
        silu_rows<0>(lora, gateUp, out, width, stride, outStride, slot, rank, rows, found, j, c, cols, xa);
    }
}
