// rope_write_kv: rotates the q and k heads of the stacked qkv rows in place (rotate-half layout,
// as transformers' Llama) and writes each row's rotated k and its v into the paged caches. For head
// h and j < d/2, with a = pos * invFreq[j] computed in fp32,
//   x1' = x1 cos a - x2 sin a,  x2' = x2 cos a + x1 sin a   (x1 = v[j], x2 = v[j + d/2]),
// rounded where transformers' bf16 `q * cos + rotate_half(q) * sin` rounds: cos and sin to bf16
// (as its rotary embedding returns them, and SGLang's cos/sin cache holds them), each product, the sum.
// One thread per (row, head, j): a short latency chain for decode. Blocks y < heads + kvHeads
// rotate; a K head's block also stores its rotated head at cache slot slotMapping[row]; blocks
// y >= heads + kvHeads copy a V head into the cache. A negative slot writes no cache row.
// With a LoRA delta (LORA_PARAMS, `--lora-backend fused` decode), q, k and v first gain theirs
// (v in qkv too), rounded as PEFT's bf16 sum.
// Launch: grid (n rows, ceil((heads + 2 * kvHeads) / H)), block (max(32, roundup32(headDim / 2)), H): a
// block rotates H heads of its row (threadIdx.y picks the head). Arguments:
// qkv [n, stride] bf16, positions [n] i32, invFreq [d/2] f32, stride (elements per row), headDim,
// kCache/vCache [slots, kvHeads * headDim] bf16, slotMapping [n] i32, numHeads, numKVHeads, LORA_PARAMS.
#include "common.cuh"

extern "C" __global__ void loom_rope_write_kv(bf16* __restrict__ qkv, const int* __restrict__ positions, const float* __restrict__ invFreq,
                                              int stride, int headDim, bf16* __restrict__ kCache, bf16* __restrict__ vCache,
                                              const int* __restrict__ slotMapping, int numHeads, int numKVHeads, LORA_PARAMS) {
    __shared__ __align__(16) float xa[3 * LORA_MAX_RANK];
    const int row = blockIdx.x, j = threadIdx.x, total = numHeads + 2 * numKVHeads;
    const int hy = blockIdx.y * blockDim.y + threadIdx.y, h = min(hy, total - 1);  // past the last head: no writes
    const int half = headDim >> 1, jc = min(j, half - 1);
    // The decode attention after it waits for this whole grid before it reads q or the newest K/V
    // rows, so its blocks may be scheduled now: its prologue (context lengths, block tables) and the
    // older cache rows it copies before its wait then overlap this kernel rather than follow it.
    grid_release();
    const LoraDelta lora = LORA_ARGS;
    // The row's slot and its B rows: step metadata and weights, before the wait; so are the cache
    // slot and the angle.
    const int lslot = lora.row_slot(row);
    const int col[2] = {h * headDim + jc, h * headDim + jc + half};
    LoraDelta::Cols<2> cols;
    lora.fetch(lslot, col, cols);  // nothing without a delta
    const int rank = lora.rank(lslot);
    const int slot = h >= numHeads ? slotMapping[row] : -1;
    const int position = positions[row];
    const float frequency = invFreq[jc];
    grid_wait();
    bf16* v = qkv + (u64)row * stride + h * headDim;
    float x1 = bf16_to_f32(v[jc]), x2 = bf16_to_f32(v[jc + half]);
    float s, c;
    sincosf((float)position * frequency, &s, &c);
    if (lora.b != nullptr) {
        const bf16* xaRow = qkv + (u64)row * stride + lora.width;
        lora.stage(lslot, xa, [&](u64 i) { return bf16_to_f32(xaRow[i]); });
    }
    if (j >= half || hy >= total) return;
    const u64 cacheRow = (u64)slot * numKVHeads * headDim;
    if (rank > 0) {
        float d[2];
        lora.sum<2>(lslot, rank, col, cols, xa, d);
        x1 = round_bf16(x1 + d[0]);
        x2 = round_bf16(x2 + d[1]);
    }
    if (h >= numHeads + numKVHeads) {  // a V head: copy
        if (rank > 0) {
            v[j] = f32_to_bf16(x1);
            v[j + half] = f32_to_bf16(x2);
        }
        if (slot < 0) return;
        bf16* dst = vCache + cacheRow + (h - numHeads - numKVHeads) * headDim;
        dst[j] = f32_to_bf16(x1);
        dst[j + half] = f32_to_bf16(x2);
        return;
    }
    c = round_bf16(c);
    s = round_bf16(s);
    const bf16 o1 = f32_to_bf16(round_bf16(x1 * c) - round_bf16(x2 * s));
    const bf16 o2 = f32_to_bf16(round_bf16(x2 * c) + round_bf16(x1 * s));
    v[j] = o1;
    v[j + half] = o2;
    if (slot >= 0) {  // a K head
        bf16* dst = kCache + cacheRow + (h - numHeads) * headDim;
        dst[j] = o1;
        dst[j + half] = o2;
    }
}
