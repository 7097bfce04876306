// LoRA expand: out[permutation[p]][c] += scaling[s*stack + m] * B[s][c] . shrunk[p][m*R ..< m*R + r] for
// plan position p of a segment with slot s of rank r > 0, where module m owns column c
// (o_m <= c < o_{m+1}, o_0 = 0). Entries of shrunk at j >= r are never read. Segments past the plan's
// count are empty, so a launch sized by the plan's capacity replays with any mix of adapters.
// Shapes: shrunk [n, stack*R] in plan order, B [slots, totalOut, R] bf16, out [rows, totalOut] bf16,
// scalings [slots * stack] (f32 or bf16), permutation [n], segmentStarts [capacity + 1],
// segmentSlots [capacity], slotRanks [slots] (i32).
#include "common.cuh"

// Two consecutive bf16 of `row` at j, j+1 as one word, zero where j or j+1 >= rank.
__device__ __forceinline__ u32 load_pair(const bf16* row, int j, int rank) {
    if (row == nullptr || j >= rank) return 0u;
    const u32 v = *(const u32*)(row + j);
    return j + 1 < rank ? v : (v & 0xffffu);
}

// load_pair through the read-only cache (B before grid_wait).
__device__ __forceinline__ u32 load_pair_nc(const bf16* row, int j, int rank) {
    if (row == nullptr || j >= rank) return 0u;
    const u32 v = __ldg((const unsigned int*)(row + j));
    return j + 1 < rank ? v : (v & 0xffffu);
}

// Two consecutive f32 of `row` at j, j+1 rounded to bf16 and packed, zero where j or j+1 >= rank.
__device__ __forceinline__ u32 load_pair(const float* row, int j, int rank) {
    if (row == nullptr || j >= rank) return 0u;
    const float2 v = *(const float2*)(row + j);
    return pack_bf16x2(v.x, j + 1 < rank ? v.y : 0.f);
}

// Two consecutive bf16 outputs (one word) plus `scaling` times their two sums, packed again.
__device__ __forceinline__ u32 add_scaled(u32 v, float scaling, float lo, float hi) {
    return pack_bf16x2(bf16_to_f32((bf16)(v & 0xffffu)) + scaling * lo, bf16_to_f32((bf16)(v >> 16)) + scaling * hi);
}

// The tensor-core kernel. A block covers rows 16·MT·blockIdx.y ..< +16·MT of segment blockIdx.x and
// the output columns blockIdx.z·columnsPerBlock ..< +columnsPerBlock; its W warps take 32-column
// groups of that range in turn (four 8-column tiles, each inside one module: module offsets are
// multiples of 8), so a prefill's blocks each stream a long stretch of B and of the output while a
// decode step's spread over the GPU. K = the slot's rank, in steps of 16; the shrunk rows' fragments
// are loaded once per group and step when the group's four tiles share a module.
// Needs R even, f32 shrunk (rounded to bf16 as it is read, as PEFT's bf16 lora_A output),
// totalOut and every offset multiples of 8.
template <int MT, int W>
__device__ __forceinline__ void expand_mma(const float* __restrict__ shrunk, const bf16* __restrict__ b, bf16* out,
                                           const void* scalings, int scalingsIsF32, const int* permutation,
                                           const int* starts, const int* segmentSlots, const int* slotRanks,
                                           int totalOut, int R, int stack, int o1, int o2, int o3, int columnsPerBlock) {
    // Before grid_wait, only the plan and B are read (the host and the upload stream write them
    // before the step's kernels, no kernel does): the block's first step of B is requested while
    // the kernel before it (the shrink) finishes.
    const int g = blockIdx.x;
    const int end = __ldg(starts + g + 1);
    const int p0 = __ldg(starts + g) + blockIdx.y * 16 * MT;
    if (p0 >= end) return;
    const int slot = __ldg(segmentSlots + g), rank = __ldg(slotRanks + slot);
    if (rank == 0) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, t = lane & 3;
    const int width = stack * R;
    const int cBegin = blockIdx.z * columnsPerBlock, cEnd = min(totalOut, cBegin + columnsPerBlock);
    // B's rows of the warp's 32 columns at cw (null past cEnd), and their words at k0 and k0 + 8.
    auto b_rows = [&](int cw, const bf16* (&br)[4]) {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
            const int c = cw + nt * 8;
            br[nt] = c + gq < cEnd ? b + ((u64)slot * totalOut + c + gq) * R : nullptr;
        }
    };
    u32 early0[4], early1[4];
    {
        const bf16* br[4];
        b_rows(cBegin + warp * 32, br);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
            early0[nt] = load_pair_nc(br[nt], 2 * t, rank);
            early1[nt] = load_pair_nc(br[nt], 2 * t + 8, rank);
        }
    }
    grid_enter();

    const float* yr[MT][2];
    int rows[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int p = p0 + mt * 16 + h * 8 + gq;
            yr[mt][h] = p < end ? shrunk + (u64)p * width : nullptr;
            rows[mt][h] = p < end ? permutation[p] : -1;
        }

    for (int cw = cBegin + warp * 32; cw < cEnd; cw += W * 32) {
        int module[4];
        const bf16* br[4];
        b_rows(cw, br);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
            const int c = cw + nt * 8;
            module[nt] = (stack > 1 && c >= o1) + (stack > 2 && c >= o2) + (stack > 3 && c >= o3);
        }
        const bool shared = module[0] == module[3];
        float acc[MT][4][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;

        for (int kb = 0; kb < rank; kb += 16) {
            const int k0 = kb + 2 * t, k1 = k0 + 8;
            u32 b0[4], b1[4];
            const bool early = kb == 0 && cw == cBegin + warp * 32;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                b0[nt] = early ? early0[nt] : load_pair(br[nt], k0, rank);
                b1[nt] = early ? early1[nt] : load_pair(br[nt], k1, rank);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                u32 a[4];
                if (shared) {
                    const int yo = module[0] * R;
                    const float* ya = yr[mt][0] ? yr[mt][0] + yo : nullptr;
                    const float* yb = yr[mt][1] ? yr[mt][1] + yo : nullptr;
                    a[0] = load_pair(ya, k0, rank); a[1] = load_pair(yb, k0, rank); a[2] = load_pair(ya, k1, rank); a[3] = load_pair(yb, k1, rank);
                }
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) {
                    if (!shared) {
                        const int yo = module[nt] * R;
                        const float* ya = yr[mt][0] ? yr[mt][0] + yo : nullptr;
                        const float* yb = yr[mt][1] ? yr[mt][1] + yo : nullptr;
                        a[0] = load_pair(ya, k0, rank); a[1] = load_pair(yb, k0, rank); a[2] = load_pair(ya, k1, rank); a[3] = load_pair(yb, k1, rank);
                    }
                    mma_bf16_16816(acc[mt][nt], a[0], a[1], a[2], a[3], b0[nt], b1[nt]);
                }
            }
        }
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
            const int col = cw + nt * 8 + 2 * t;
            if (col >= cEnd) continue;
            const float scaling = load_any(scalings, (u64)slot * stack + module[nt], scalingsIsF32);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int row = rows[mt][h];
                    if (row < 0) continue;
                    u32* o = (u32*)(out + (u64)row * totalOut + col);
                    *o = add_scaled(*o, scaling, acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
                }
        }
    }
}

// Eight consecutive bf16 (one 16-byte word) with the elements at `valid` and past zeroed.
__device__ __forceinline__ uint4 keep_first(uint4 v, int valid) {
    if (valid >= 8) return v;
    u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = 2 * i + 1 < valid ? w[i] : 2 * i < valid ? (w[i] & 0xffffu) : 0u;
    return make_uint4(w[0], w[1], w[2], w[3]);
}

// The chunk kernel (loom_lora_expand_stream, for segments of 8 rows or more on average: a prefill's
// chunks): 16 rows of one segment against a stretch of columns, B streamed with 16-byte loads. Per 32 of the slot's
// rank, lane 4g + t loads k 8t ..< 8t+8 of column g of each 8-column tile and the same k of shrunk
// rows g and g + 8 (f32, rounded to bf16 as read); a dot product does not see the order of k, so
// those serve as the fragments of two MMAs as loaded (k permuted alike in both operands). A warp
// takes 64 columns at a time: the eight tiles' B loads and the output words it will add to are all
// in flight together (expand_mma waits on 4-byte loads one group at a time). Needs
// R % 8 == 0, B and shrunk 16-byte aligned.
template <int W>
__device__ __forceinline__ void expand_stream(const float* __restrict__ shrunk, const bf16* __restrict__ b, bf16* out,
                                              const void* scalings, int scalingsIsF32, const int* permutation,
                                              const int* starts, const int* segmentSlots, const int* slotRanks,
                                              int totalOut, int R, int stack, int o1, int o2, int o3, int columnsPerBlock) {
    constexpr int NT = 8;
    grid_enter();
    const int g = blockIdx.x;
    const int end = starts[g + 1];
    const int p0 = starts[g] + blockIdx.y * 16;
    if (p0 >= end) return;
    const int slot = segmentSlots[g], rank = slotRanks[slot];
    if (rank == 0) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, t = lane & 3;
    const int width = stack * R;
    const int cBegin = blockIdx.z * columnsPerBlock, cEnd = min(totalOut, cBegin + columnsPerBlock);
    const float* yr[2];
    int rows[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int p = p0 + h * 8 + gq;
        yr[h] = p < end ? shrunk + (u64)p * width : nullptr;
        rows[h] = p < end ? permutation[p] : -1;
    }
    const bf16* bSlot = b + (u64)slot * totalOut * R;

    for (int cw = cBegin + warp * 8 * NT; cw < cEnd; cw += W * 8 * NT) {
        int module[NT];
        bool live[NT];
        u32 old[NT][2];
        float acc[NT][4];
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            const int c = cw + 8 * j;
            live[j] = c < cEnd;  // totalOut and columnsPerBlock are multiples of 8: a live tile is whole
            module[j] = (stack > 1 && c >= o1) + (stack > 2 && c >= o2) + (stack > 3 && c >= o3);
#pragma unroll
            for (int h = 0; h < 2; ++h) old[j][h] = live[j] && rows[h] >= 0 ? *(const u32*)(out + (u64)rows[h] * totalOut + c + 2 * t) : 0u;
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
        }
        for (int kc = 0; kc < rank; kc += 32) {
            const int k = kc + 8 * t, valid = min(8, rank - k);
            uint4 bv[NT];
#pragma unroll
            for (int j = 0; j < NT; ++j)
                bv[j] = live[j] && valid > 0 ? keep_first(__ldg((const uint4*)(bSlot + (u64)(cw + 8 * j + gq) * R + k)), valid)
                                             : make_uint4(0, 0, 0, 0);
            int loaded = -1;
            u32 a[2][4];
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                if (module[j] != loaded) {
                    loaded = module[j];
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        float f[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
                        if (yr[h] != nullptr && valid > 0) {
                            const float4 lo = *(const float4*)(yr[h] + loaded * R + k), hi = *(const float4*)(yr[h] + loaded * R + k + 4);
                            f[0] = lo.x; f[1] = lo.y; f[2] = lo.z; f[3] = lo.w; f[4] = hi.x; f[5] = hi.y; f[6] = hi.z; f[7] = hi.w;
                        }
#pragma unroll
                        for (int i = 0; i < 4; ++i) a[h][i] = pack_bf16x2(2 * i < valid ? f[2 * i] : 0.f, 2 * i + 1 < valid ? f[2 * i + 1] : 0.f);
                    }
                }
                mma_bf16_16816(acc[j], a[0][0], a[1][0], a[0][1], a[1][1], bv[j].x, bv[j].y);
                mma_bf16_16816(acc[j], a[0][2], a[1][2], a[0][3], a[1][3], bv[j].z, bv[j].w);
            }
        }
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            if (!live[j]) continue;
            const float scaling = load_any(scalings, (u64)slot * stack + module[j], scalingsIsF32);
            const int col = cw + 8 * j + 2 * t;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                if (rows[h] < 0) continue;
                *(u32*)(out + (u64)rows[h] * totalOut + col) = add_scaled(old[j][h], scaling, acc[j][2 * h], acc[j][2 * h + 1]);
            }
        }
    }
}

// Decode: 16 rows per block, 4 warps, B streamed (expand_stream).
extern "C" __global__ void __launch_bounds__(128, 4) loom_lora_expand_stream(
    const float* shrunk, const bf16* b, bf16* out, const void* scalings, int scalingsIsF32, const int* permutation,
    const int* starts, const int* segmentSlots, const int* slotRanks, int totalOut, int R, int stack, int o1, int o2, int o3,
    int columnsPerBlock) {
    expand_stream<4>(shrunk, b, out, scalings, scalingsIsF32, permutation, starts, segmentSlots, slotRanks, totalOut, R, stack, o1, o2, o3, columnsPerBlock);
}

// The many-adapter decode kernel (loom_lora_expand_segments): a block owns 128 output columns (inside
// one module: offsets are multiples of 128) and SEGS segments of at most 16 rows (csgmv's decode
// chunks), blockIdx.y, + gridDim.y, + 2·gridDim.y, …: a plan's segments with rows come first and its
// empty ones last, so striding spreads the rows over every block row whatever the count of adapters
// (consecutive groups left most blocks idle at 29 adapters in 106 segments of capacity). It walks
// its segments with the next one's B and output words already requested. Its prologue stages the
// segments' plan entries, row indices and shrunk values (bf16, zero past each segment's rank) in
// shared memory. Per segment a warp streams its 32 columns × the rank of B with 16-byte loads, k
// permuted as in expand_stream. expand_mma gives each (segment, column stretch) its own short-lived
// block, whose start (a chain of dependent plan lookups) and 4-byte loads left HBM at a fifth of its
// bandwidth with 64 adapters a step (Nsight Compute).
// Needs R % 8 == 0 and R <= 64, totalOut and module offsets multiples of 128, segments of at most 16
// rows, B and shrunk 16-byte aligned. Launch: grid (totalOut / 128, ceil(capacity / SEGS)), block 128.
#define SEGS 8
__device__ __forceinline__ void expand_segments(const float* __restrict__ shrunk, const bf16* __restrict__ b, bf16* out,
                                                const void* scalings, int scalingsIsF32, const int* permutation,
                                                const int* starts, const int* segmentSlots, const int* slotRanks,
                                                int totalOut, int R, int stack, int o1, int o2, int o3, int capacity) {
    __shared__ int sStart[SEGS], sEnd[SEGS], sSlot[SEGS], sRank[SEGS];
    __shared__ int sRow[SEGS * 16];
    __shared__ __align__(16) bf16 sY[SEGS * 16][64];
    __shared__ int anyRows;
    grid_enter();
    const int tid = threadIdx.x, stride = gridDim.y;
    const int count = min(SEGS, (capacity - (int)blockIdx.y + stride - 1) / stride);
    const int c0 = blockIdx.x * 128;
    const int module = (stack > 1 && c0 >= o1) + (stack > 2 && c0 >= o2) + (stack > 3 && c0 >= o3);
    const int width = stack * R;
    if (tid == 0) anyRows = 0;
    __syncthreads();
    if (tid < count) {
        const int g = blockIdx.y + tid * stride, slot = segmentSlots[g];
        sStart[tid] = starts[g];
        sEnd[tid] = starts[g + 1];
        sSlot[tid] = slot;
        sRank[tid] = slotRanks[slot];
        if (sEnd[tid] > sStart[tid] && sRank[tid] > 0) anyRows = 1;
    }
    __syncthreads();
    if (!anyRows) return;  // the same for the whole block
    for (int e = tid; e < count * 16; e += 128) {
        const int i = e >> 4, p = sStart[i] + (e & 15);
        sRow[e] = p < sEnd[i] ? permutation[p] : -1;
    }
    // Eight values of a row at a time (R % 8 == 0): two 16-byte loads, one 16-byte store.
    const int words = R >> 3;
    for (int e = tid; e < count * 16 * words; e += 128) {
        const int r = e / words, j = (e - r * words) * 8, i = r >> 4, p = sStart[i] + (r & 15);
        float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (p < sEnd[i] && j < sRank[i]) {
            const float4* src = (const float4*)(shrunk + (u64)p * width + module * R + j);
            const float4 lo = src[0], hi = src[1];
            v[0] = lo.x; v[1] = lo.y; v[2] = lo.z; v[3] = lo.w; v[4] = hi.x; v[5] = hi.y; v[6] = hi.z; v[7] = hi.w;
#pragma unroll
            for (int q = 0; q < 8; ++q) if (j + q >= sRank[i]) v[q] = 0.f;
        }
        uint4 packed;
        packed.x = (u32)f32_to_bf16(v[0]) | ((u32)f32_to_bf16(v[1]) << 16);
        packed.y = (u32)f32_to_bf16(v[2]) | ((u32)f32_to_bf16(v[3]) << 16);
        packed.z = (u32)f32_to_bf16(v[4]) | ((u32)f32_to_bf16(v[5]) << 16);
        packed.w = (u32)f32_to_bf16(v[6]) | ((u32)f32_to_bf16(v[7]) << 16);
        *(uint4*)&sY[r][j] = packed;
    }
    __syncthreads();

    const int warp = tid >> 5, lane = tid & 31, gq = lane >> 2, t = lane & 3;
    const int col = c0 + warp * 32;
    // Issues segment s's B (two 32-element steps of rank, zero past it), the output words its rows
    // will add to, and its scaling.
    auto load = [&](int s, uint4 (&bv)[2][4], u32 (&old)[4][2], float& scaling) {
        if (s >= count) return;
        const int start = sStart[s], end = sEnd[s], rank = sRank[s];
        if (start == end || rank == 0) return;
        const bf16* bs = b + ((u64)sSlot[s] * totalOut + col + gq) * R;
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const int k = 32 * c + 8 * t;
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[c][j] = k < rank ? __ldg((const uint4*)(bs + (u64)8 * j * R + k)) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = sRow[s * 16 + gq + 8 * h];
#pragma unroll
            for (int j = 0; j < 4; ++j) old[j][h] = row >= 0 ? *(const u32*)(out + (u64)row * totalOut + col + 8 * j + 2 * t) : 0u;
        }
        scaling = load_any(scalings, (u64)sSlot[s] * stack + module, scalingsIsF32);
    };
    auto compute = [&](int s, const uint4 (&bv)[2][4], const u32 (&old)[4][2], float scaling) {
        if (s >= count) return;
        const int start = sStart[s], end = sEnd[s], rank = sRank[s];
        if (start == end || rank == 0) return;
        float acc[4][4];
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            if (32 * c >= rank) break;
            const int k = 32 * c + 8 * t, valid = min(8, rank - k);
            uint4 y[2];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int p = start + gq + 8 * h;
                y[h] = p < end && valid > 0 ? *(const uint4*)&sY[s * 16 + gq + 8 * h][k] : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const uint4 w = keep_first(bv[c][j], valid);
                mma_bf16_16816(acc[j], y[0].x, y[1].x, y[0].y, y[1].y, w.x, w.y);
                mma_bf16_16816(acc[j], y[0].z, y[1].z, y[0].w, y[1].w, w.z, w.w);
            }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = sRow[s * 16 + gq + 8 * h];
            if (row < 0) continue;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                *(u32*)(out + (u64)row * totalOut + col + 8 * j + 2 * t) = add_scaled(old[j][h], scaling, acc[j][2 * h], acc[j][2 * h + 1]);
            }
        }
    };
    uint4 bA[2][4], bB[2][4];
    u32 oA[4][2], oB[4][2];
    float sA = 0.f, sB = 0.f;
#pragma unroll
    for (int c = 0; c < 2; ++c)
#pragma unroll
        for (int j = 0; j < 4; ++j) { bA[c][j] = make_uint4(0, 0, 0, 0); bB[c][j] = make_uint4(0, 0, 0, 0); }
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) { oA[j][h] = 0u; oB[j][h] = 0u; }
    load(0, bA, oA, sA);
    for (int s = 0; s < count; s += 2) {
        load(s + 1, bB, oB, sB);
        compute(s, bA, oA, sA);
        load(s + 2, bA, oA, sA);
        compute(s + 1, bB, oB, sB);
    }
}

extern "C" __global__ void __launch_bounds__(128, 4) loom_lora_expand_segments(
    const float* shrunk, const bf16* b, bf16* out, const void* scalings, int scalingsIsF32, const int* permutation,
    const int* starts, const int* segmentSlots, const int* slotRanks, int totalOut, int R, int stack, int o1, int o2, int o3,
    int capacity) {
    expand_segments(shrunk, b, out, scalings, scalingsIsF32, permutation, starts, segmentSlots, slotRanks, totalOut, R, stack, o1, o2, o3, capacity);
}

// Few rows per segment: 16 rows per block, 4 warps.
extern "C" __global__ void __launch_bounds__(128) loom_lora_expand_mma_small(
    const float* shrunk, const bf16* b, bf16* out, const void* scalings, int scalingsIsF32, const int* permutation,
    const int* starts, const int* segmentSlots, const int* slotRanks, int totalOut, int R, int stack, int o1, int o2, int o3,
    int columnsPerBlock) {
    expand_mma<1, 4>(shrunk, b, out, scalings, scalingsIsF32, permutation, starts, segmentSlots, slotRanks, totalOut, R, stack, o1, o2, o3, columnsPerBlock);
}

// Long segments: 64 rows per block, 4 warps.
extern "C" __global__ void __launch_bounds__(128) loom_lora_expand_mma_large(
    const float* shrunk, const bf16* b, bf16* out, const void* scalings, int scalingsIsF32, const int* permutation,
    const int* starts, const int* segmentSlots, const int* slotRanks, int totalOut, int R, int stack, int o1, int o2, int o3,
    int columnsPerBlock) {
    expand_mma<4, 4>(shrunk, b, out, scalings, scalingsIsF32, permutation, starts, segmentSlots, slotRanks, totalOut, R, stack, o1, o2, o3, columnsPerBlock);
}

// The general kernel (any shape, f32 or bf16 shrunk): one thread per output column.
// Launch: grid (n plan positions, ceil(totalOut / 128)), block 128.
extern "C" __global__ void loom_lora_expand(const void* shrunk, int shrunkIsF32, const bf16* b, bf16* out,
                                            const void* scalings, int scalingsIsF32, const int* permutation,
                                            const int* segmentStarts, const int* segmentSlots, const int* slotRanks,
                                            int numSegments, int totalOut, int R, int stack, int o1, int o2, int o3) {
    grid_enter();
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
