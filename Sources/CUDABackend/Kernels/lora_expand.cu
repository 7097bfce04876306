// lora_expand: out[permutation[p]][c] += scaling[s*stack + m] * B[s][c] . shrunk[p][m*R ..< m*R + r] for plan
// position p of a segment with slot s of rank r > 0, where module m owns column c (o_m <= c < o_{m+1}, o_0 = 0).
// A straightforward version (the fast segmented kernels are issue 6): one thread per output column.
// Launch: grid (n plan positions, ceil(totalOut / 128)), block (128). Arguments: shrunk [n, stack*R] (f32 or bf16),
// B [slots, totalOut, R] bf16, out [n, totalOut] bf16, scalings [slots * stack] (f32 or bf16), permutation [n], segmentStarts,
// segmentSlots, slotRanks (i32), numSegments, totalOut, R, stack, module offsets o1, o2, o3.
#include "common.cuh"

extern "C" __global__ void loom_lora_expand(const void* shrunk, int shrunkIsF32, const bf16* b, bf16* out,
                                            const void* scalings, int scalingsIsF32, const int* permutation,
                                            const int* segmentStarts, const int* segmentSlots, const int* slotRanks,
                                            int numSegments, int totalOut, int R, int stack, int o1, int o2, int o3) {
    const int p = blockIdx.x;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= totalOut) return;
    const int g = segment_of(segmentStarts, numSegments, p);
    if (g < 0) return;
    const int slot = segmentSlots[g], rank = slotRanks[slot];
    if (rank == 0) return;
    const int m = (stack > 1 && c >= o1) + (stack > 2 && c >= o2) + (stack > 3 && c >= o3);
    const float scaling = load_any(scalings, (u64)slot * stack + m, scalingsIsF32);
    const bf16* br = b + ((u64)slot * totalOut + c) * R;
    const u64 yBase = (u64)p * stack * R + (u64)m * R;
    float s = 0.f;
    for (int j = 0; j < rank; ++j) s += bf16_to_f32(br[j]) * load_any(shrunk, yBase + j, shrunkIsF32);
    const u64 o = (u64)permutation[p] * totalOut + c;
    out[o] = f32_to_bf16(bf16_to_f32(out[o]) + scaling * s);
}
