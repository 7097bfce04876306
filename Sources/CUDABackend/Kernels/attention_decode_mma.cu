// attention_decode_mma: decode attention on tensor cores (one query row per sequence, head_dim D of
// 64 or 128, a GQA group of at most G ∈ {4, 8} query heads per KV head). Same arguments, grid and
// results as loom_attention_decode (attention_decode.cu), whose split partials loom_attention_combine
// merges; block (128) and 64·D·STAGES·4 bytes of dynamic shared memory.
//
// The group's query heads are the rows of an m16n8k16 MMA (rows ≥ group are zero), so a warp takes 16
// tokens a step with a few MMAs instead of scalar dots and shuffle reductions:
//   S (heads × 16 tokens) = Q · Kᵀ: Q's fragments stay in registers; K's come from shared memory by
//     ldmatrix (B fragments, tokens as columns);
//   online softmax on S's accumulators in fp32: lane (g, t) holds head g's scores of tokens 2t, 2t+1,
//     8+2t, 9+2t; the head's max and sum need two shuffles;
//   O (heads × D) += P · V: S's accumulators, rounded to bf16, are P's A fragments as they lie (the
//     FlashAttention-2 layout); V's B fragments come by ldmatrix.trans.
// Each warp copies its own steps' K and V rows (cp.async, 16 bytes a lane, rows XOR-swizzled in
// 16-byte chunks so ldmatrix reads without bank conflicts) STAGES steps ahead into its own ring; no
// block barrier between steps. The chunk's cache slots are looked up into shared memory first. At the
// end the four warps merge through shared memory, as in loom_attention_decode.
// Entry points loom_attention_decode_mma_d{64,128}_g{4,8}, and loom_attention_decode_mma_paged_* for
// caches whose pages hold whole 16-token steps (block size a multiple of 16): one slot a step, looked
// up beside the context length where the split's start is known without it, and the warps merged
// four dims a thread with each head's factors computed once. At batch 32 its time is the K/V stream
// out of HBM plus about 5 µs of fixed latency (benchmarks/README.md, "Session 27"): 23% fewer
// instructions a warp did not shorten it.
#include "common.cuh"

#define MMA_WARPS 4
#define MMA_TILE 16
#define MMA_STAGES 3
#define MMA_SLOTS 512

__device__ __forceinline__ u32 shared_address(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// 16 bytes from global to shared; src_bytes 0 writes zeros (a token past the end).
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int srcBytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(srcBytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

__device__ __forceinline__ void ldmatrix_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}

template <int D, int G, bool PAGED>
__device__ __forceinline__ void attention_decode_mma(
    const bf16* __restrict__ qkv, int qkvStride, const bf16* __restrict__ kCache, const bf16* __restrict__ vCache, int kvStride,
    bf16* __restrict__ out, int outStride, const int* __restrict__ contextLengths, const int* __restrict__ blockTables,
    int tableWidth, int numHeads, int numKVHeads, int blockSize, float scale, int splitTokens,
    float* __restrict__ partialAcc, float* __restrict__ partialMax, float* __restrict__ partialSum)
{
    constexpr int CHUNKS = D / 8;                        // 16-byte chunks of a K or V row
    constexpr int TILE_BYTES = MMA_TILE * D * 2;         // one step's K (or V) rows
    constexpr int STAGE_BYTES = 2 * TILE_BYTES;          // K then V
    constexpr int KSTEPS = D / 16, NTILES = D / 8;
    extern __shared__ __align__(128) unsigned char ring[];  // [warp][stage][K | V]
    __shared__ int slots[MMA_SLOTS];
    __shared__ float warpMax[MMA_WARPS][G], warpSum[MMA_WARPS][G];

    const int row = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, numSplits = gridDim.z;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int group = numHeads / numKVHeads;
    const int* table = blockTables + (u64)row * tableWidth;
    // PAGED (blockSize a multiple of MMA_TILE): a step's 16 tokens lie in one page, so a step needs
    // one slot, its first. The first chunk's step slots are requested beside the context length
    // where the split's start is known without it (one split, or splitTokens given).
    const bool startKnown = numSplits == 1 || splitTokens > 0;
    int firstSlot = 0;
    if (PAGED && startKnown && tid < MMA_SLOTS / MMA_TILE) {
        const int tok = (numSplits == 1 ? 0 : split * splitTokens) + tid * MMA_TILE, page = tok / blockSize;
        if (page < tableWidth) firstSlot = table[page] * blockSize + (tok - page * blockSize);
    }
    const int visible = contextLengths[row];
    const int perSplit = splitTokens > 0 ? splitTokens : (((visible + numSplits - 1) / numSplits + 31) & ~31);
    const int begin = split * perSplit;
    const int end = min(visible, begin + perSplit);

    // Q's A fragments: row g = head g of the group (zero past the group), k = dims; read once the
    // kernel before (RoPE) has finished.
    u32 qa[KSTEPS][2];
    bool waited = false;
    auto wait = [&]() {
        if (waited) return;
        waited = true;
        grid_enter();
        const bf16* q = qkv + (u64)row * qkvStride + (kvh * group + g) * D + 2 * t;
#pragma unroll
        for (int s = 0; s < KSTEPS; ++s) {
            qa[s][0] = g < group ? *(const u32*)(q + 16 * s) : 0u;
            qa[s][1] = g < group ? *(const u32*)(q + 16 * s + 8) : 0u;
        }
    };
    float acc[NTILES][4];
#pragma unroll
    for (int n = 0; n < NTILES; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    float myMax = NEG_INF, mySum = 0.f;  // head g's, over this lane's tokens (the sum; the max is the quad's)
    const float scaleLog2 = scale * 1.4426950408889634f;

    unsigned char* myRing = ring + warp * MMA_STAGES * STAGE_BYTES;
    const u32 ringBase = shared_address(myRing);
    const bf16* kHead = kCache + kvh * D;
    const bf16* vHead = vCache + kvh * D;

    for (int c0 = begin; c0 < end; c0 += MMA_SLOTS) {
        const int count = min(MMA_SLOTS, end - c0);
        __syncthreads();  // the previous chunk's slots are no longer read
        if (PAGED) {
            if (tid * MMA_TILE < count) {
                const int tok = c0 + tid * MMA_TILE, page = tok / blockSize;
                slots[tid] = c0 == begin && startKnown ? firstSlot : table[page] * blockSize + (tok - page * blockSize);
            }
        } else {
            for (int i = tid; i < count; i += blockDim.x) {
                const int tok = c0 + i;
                slots[i] = table[tok / blockSize] * blockSize + tok % blockSize;
            }
        }
        __syncthreads();
        // The step's metadata (context lengths, block tables) and the cache rows of earlier steps
        // are written before the step's kernels start; only the newest token's K and V (RoPE's)
        // and q need the wait. So the first chunk's slots and the warp's first steps of older tokens
        // are fetched before it, while RoPE still runs.
        const int steps = (count + MMA_TILE - 1) / MMA_TILE;
        const int mine = steps > warp ? (steps - warp + MMA_WARPS - 1) / MMA_WARPS : 0;  // this warp's steps
        // Copies the warp's i-th step (tokens (warp + i·WARPS)·TILE …) into stage i % STAGES.
        auto load = [&](int i) {
            if (i < mine) {
                const int step = warp + i * MMA_WARPS, base = step * MMA_TILE;
                const u32 stage = ringBase + (i % MMA_STAGES) * STAGE_BYTES;
                const u64 first = PAGED ? (u64)slots[step] * kvStride : 0;
#pragma unroll
                for (int e = lane; e < MMA_TILE * CHUNKS; e += 32) {
                    const int tok = e / CHUNKS, chunk = e % CHUNKS;
                    const bool valid = base + tok < count;
                    const u64 off = PAGED ? first + (u64)(valid ? tok : 0) * kvStride + chunk * 8
                                          : (u64)slots[valid ? base + tok : 0] * kvStride + chunk * 8;
                    const u32 dst = tok * (D * 2) + ((chunk ^ (tok & 7)) << 4);
                    cp_async16(stage + dst, kHead + off, valid ? 16 : 0);
                    cp_async16(stage + TILE_BYTES + dst, vHead + off, valid ? 16 : 0);
                }
            }
            cp_async_commit();  // an empty group past the end keeps the count of groups uniform
        };
        // Whether the warp's first steps all end before the newest token (visible - 1).
        const bool early = c0 + (warp + (MMA_STAGES - 2) * MMA_WARPS + 1) * MMA_TILE <= visible - 1;
        if (!early) wait();
#pragma unroll
        for (int i = 0; i < MMA_STAGES - 1; ++i) load(i);
        wait();
        for (int i = 0; i < mine; ++i) {
            load(i + MMA_STAGES - 1);
            cp_async_wait<MMA_STAGES - 1>();
            __syncwarp();
            const u32 kTile = ringBase + (i % MMA_STAGES) * STAGE_BYTES, vTile = kTile + TILE_BYTES;
            const int base = (warp + i * MMA_WARPS) * MMA_TILE;

            // S = Q · Kᵀ over two 8-token column tiles. ldmatrix x4: matrices (tokens 0-7, chunk 2s),
            // (0-7, 2s+1), (8-15, 2s), (8-15, 2s+1): lane l gives row l & 7 of matrix l >> 3.
            float s0[4] = {0.f, 0.f, 0.f, 0.f}, s1[4] = {0.f, 0.f, 0.f, 0.f};
            {
                const int m = lane >> 3, r = lane & 7, tok = (m >> 1) * 8 + r;
#pragma unroll
                for (int s = 0; s < KSTEPS; ++s) {
                    const int chunk = 2 * s + (m & 1);
                    u32 b0, b1, b2, b3;
                    ldmatrix_x4(kTile + tok * (D * 2) + ((chunk ^ (tok & 7)) << 4), b0, b1, b2, b3);
                    mma_bf16_16816(s0, qa[s][0], 0u, qa[s][1], 0u, b0, b1);
                    mma_bf16_16816(s1, qa[s][0], 0u, qa[s][1], 0u, b2, b3);
                }
            }
            // Online softmax (base 2) on row g: tokens 2t, 2t+1 (s0) and 8+2t, 9+2t (s1).
            const int t0 = base + 2 * t;
            float sc[4] = {t0 < count ? s0[0] * scaleLog2 : NEG_INF, t0 + 1 < count ? s0[1] * scaleLog2 : NEG_INF,
                           t0 + 8 < count ? s1[0] * scaleLog2 : NEG_INF, t0 + 9 < count ? s1[1] * scaleLog2 : NEG_INF};
            float stepMax = fmaxf(fmaxf(sc[0], sc[1]), fmaxf(sc[2], sc[3]));
            stepMax = fmaxf(stepMax, __shfl_xor_sync(0xffffffffu, stepMax, 1));
            stepMax = fmaxf(stepMax, __shfl_xor_sync(0xffffffffu, stepMax, 2));
            const float newMax = fmaxf(myMax, stepMax);
            const float corr = newMax == NEG_INF ? 1.f : exp2f(myMax - newMax);
            float p[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) p[e] = sc[e] == NEG_INF ? 0.f : exp2f(sc[e] - newMax);
            mySum = mySum * corr + ((p[0] + p[1]) + (p[2] + p[3]));
            myMax = newMax;
#pragma unroll
            for (int n = 0; n < NTILES; ++n) { acc[n][0] *= corr; acc[n][1] *= corr; }
            const u32 pa0 = pack_bf16x2(p[0], p[1]), pa2 = pack_bf16x2(p[2], p[3]);

            // O += P · V. ldmatrix x4 trans: matrices (tokens 0-7, chunk c), (8-15, c), (0-7, c+1),
            // (8-15, c+1) give b0, b1 of dims 8c.. and of dims 8c+8...
            {
                const int m = lane >> 3, r = lane & 7, tok = (m & 1) * 8 + r;
#pragma unroll
                for (int c = 0; c < CHUNKS; c += 2) {
                    const int chunk = c + (m >> 1);
                    u32 b0, b1, b2, b3;
                    ldmatrix_x4_trans(vTile + tok * (D * 2) + ((chunk ^ (tok & 7)) << 4), b0, b1, b2, b3);
                    mma_bf16_16816(acc[c], pa0, 0u, pa2, 0u, b0, b1);
                    mma_bf16_16816(acc[c + 1], pa0, 0u, pa2, 0u, b2, b3);
                }
            }
            __syncwarp();  // every lane is done with this stage before a later load overwrites it
        }
        cp_async_wait<0>();
    }

    wait();  // a split without tokens still waits before it writes
    // Head g's sum over its quad; then the four warps merge through shared memory (the ring, now
    // idle), the max in natural-log units as the scalar kernel keeps it.
    mySum += __shfl_xor_sync(0xffffffffu, mySum, 1);
    mySum += __shfl_xor_sync(0xffffffffu, mySum, 2);
    __syncthreads();
    float* warpAcc = (float*)ring;  // [warp][G][D]
    if (g < G) {
        if (t == 0) { warpMax[warp][g] = myMax * 0.6931471805599453f; warpSum[warp][g] = mySum; }
#pragma unroll
        for (int n = 0; n < NTILES; ++n) {
            warpAcc[(warp * G + g) * D + 8 * n + 2 * t] = acc[n][0];
            warpAcc[(warp * G + g) * D + 8 * n + 2 * t + 1] = acc[n][1];
        }
    }
    __syncthreads();
    if (PAGED) {
        attention_decode_merge4<MMA_WARPS, G, D>(warpMax, warpSum, warpAcc, group, row, kvh, split, numSplits, numHeads, out, outStride,
                                                 partialAcc, partialMax, partialSum);
    } else {
        attention_decode_merge<MMA_WARPS, G>(warpMax, warpSum, warpAcc, group, D, row, kvh, split, numSplits, numHeads, out, outStride,
                                             partialAcc, partialMax, partialSum);
    }
}

#define ATTENTION_DECODE_MMA_ENTRY(NAME, D, G, PAGED)                                                                   \
    extern "C" __global__ void __launch_bounds__(128) NAME##_d##D##_g##G(                                               \
        const bf16* qkv, int qkvStride, const bf16* kCache, const bf16* vCache, int kvStride, bf16* out, int outStride, \
        const int* queryStarts, const int* contextLengths, const int* blockTables, int tableWidth, int numSeqs,         \
        int numHeads, int numKVHeads, int headDim, int blockSize, float scale, int splitTokens, float* partialAcc,      \
        float* partialMax, float* partialSum) {                                                                         \
        attention_decode_mma<D, G, PAGED>(qkv, qkvStride, kCache, vCache, kvStride, out, outStride, contextLengths,     \
                                          blockTables, tableWidth, numHeads, numKVHeads, blockSize, scale, splitTokens, \
                                          partialAcc, partialMax, partialSum);                                          \
    }
ATTENTION_DECODE_MMA_ENTRY(loom_attention_decode_mma, 64, 4, false) ATTENTION_DECODE_MMA_ENTRY(loom_attention_decode_mma, 64, 8, false)
ATTENTION_DECODE_MMA_ENTRY(loom_attention_decode_mma, 128, 4, false) ATTENTION_DECODE_MMA_ENTRY(loom_attention_decode_mma, 128, 8, false)
ATTENTION_DECODE_MMA_ENTRY(loom_attention_decode_mma_paged, 64, 4, true) ATTENTION_DECODE_MMA_ENTRY(loom_attention_decode_mma_paged, 64, 8, true)
ATTENTION_DECODE_MMA_ENTRY(loom_attention_decode_mma_paged, 128, 4, true) ATTENTION_DECODE_MMA_ENTRY(loom_attention_decode_mma_paged, 128, 8, true)
