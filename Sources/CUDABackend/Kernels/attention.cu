// attention: causal attention of each query row over its sequence's paged KV, for prefill (ragged
// batches: any number of rows per sequence) and decode alike. One block handles one query row and
// one KV head with all of that head's `group` query heads, so K and V are read once per group;
// the visible tokens are walked in chunks of 128 with an online softmax (fp32), and may be split
// along the sequence across `gridDim.z` blocks whose partial results loom_attention_combine merges.
//   chunk: four threads score each token against every query head of the group, a quarter of the
//   dims each (K read with 16-byte loads, q broadcast from shared memory, two shuffles); one warp per
//   head updates max and sum; then warp w accumulates P·V over tokens w, w + 4, … (8 V rows in
//   flight per warp), lane l owning dims l*DPL ..< (l+1)*DPL (one vector load) when headDim == 32*DPL,
//   else dims l, l + 32, …; the four warps' sums are added through shared memory at the end.
// Entry points loom_attention_d{1,2,4,8}_g{1,2,4,8}: headDim / 32 <= 1, 2, 4, 8 dims per lane, group <= 1, 2, 4, 8.
// Launch: grid (n rows, kvHeads, splits), block (128), dynamic shared memory
// 4 * max(group * (headDim + 128), 4 * headDim) bytes. Limits: group <= 8, headDim <= 256.
// Arguments: qkv [n, qkvStride] bf16 (q of head h at h * headDim), kCache/vCache [slots, kvStride] bf16,
// out [n, outStride] bf16, queryStarts [seqs + 1], contextLengths [seqs], blockTables [seqs, tableWidth] i32,
// numSeqs, numHeads, numKVHeads, headDim, blockSize, scale (1/sqrt(d)), splitTokens (visible tokens
// per split, a multiple of 32; decode splits finely to fill the GPU; 0: each row's visible tokens over the splits); with splits > 1 the partial results go to partialAcc [n, heads, splits, headDim]
// and partialMax / partialSum [n, heads, splits] (f32) instead of out.
#include "common.cuh"

#define CHUNK 128
#define WARPS 4
#define UNROLL 8

template <int DPL, int MAX_GROUP>
__device__ __forceinline__ void attention(
    const bf16* __restrict__ qkv, int qkvStride, const bf16* __restrict__ kCache, const bf16* __restrict__ vCache, int kvStride,
    bf16* __restrict__ out, int outStride, const int* __restrict__ queryStarts, const int* __restrict__ contextLengths,
    const int* __restrict__ blockTables, int tableWidth, int numSeqs, int numHeads, int numKVHeads, int headDim, int blockSize,
    float scale, int splitTokens, float* __restrict__ partialAcc, float* __restrict__ partialMax, float* __restrict__ partialSum)
{
    grid_enter();
    extern __shared__ float smem[];
    __shared__ int slots[CHUNK];
    __shared__ float runMax[8], runSum[8], corr[8];
    const int group = numHeads / numKVHeads;
    float* q = smem;                      // [group][headDim], pre-scaled
    float* scores = q + group * headDim;  // [group][CHUNK]

    const int row = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, numSplits = gridDim.z;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    // The sequence of this row: the last s with queryStarts[s] <= row. In a decode step (one row per
    // sequence) that is the row itself: two independent loads instead of a chain of dependent ones.
    const bool oneRowEach = numSeqs == (int)gridDim.x && queryStarts[row] == row && queryStarts[row + 1] == row + 1;
    int lo = oneRowEach ? row : 0, hi = oneRowEach ? row : numSeqs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (queryStarts[mid] <= row) lo = mid; else hi = mid - 1;
    }
    const int s = lo;
    const int qStart = queryStarts[s], qCount = queryStarts[s + 1] - qStart;
    const int visible = contextLengths[s] - qCount + (row - qStart) + 1;
    // splitTokens 0 (graph replays, where contexts grow): this row's visible tokens shared evenly.
    const int perSplit = splitTokens > 0 ? splitTokens : (((visible + numSplits - 1) / numSplits + 31) & ~31);
    const int begin = split * perSplit;
    const int end = min(visible, begin + perSplit);
    const int* table = blockTables + (u64)s * tableWidth;

    for (int i = tid; i < group * headDim; i += blockDim.x) {
        const int g = i / headDim, d = i - g * headDim;
        q[i] = bf16_to_f32(qkv[(u64)row * qkvStride + (kvh * group + g) * headDim + d]) * scale;
    }
    if (tid < 8) { runMax[tid] = NEG_INF; runSum[tid] = 0.f; }
    float acc[MAX_GROUP][DPL];
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
#pragma unroll
        for (int k = 0; k < DPL; ++k) acc[g][k] = 0.f;
    }
    __syncthreads();
    const bool vectorized = (headDim & 31) == 0 && ((u64)kCache & 15) == 0;
    const bool contiguous = headDim == 32 * DPL && ((u64)vCache & 15) == 0;

    for (int c0 = begin; c0 < end; c0 += CHUNK) {
        const int count = min(CHUNK, end - c0);
        // The chunk's cache slots first, so that no K or V load waits on a block-table load.
        for (int i = tid; i < count; i += blockDim.x) {
            const int t = c0 + i;
            slots[i] = table[t / blockSize] * blockSize + t % blockSize;
        }
        __syncthreads();
        // Scores: four threads per token (a quarter of the dims each, reduced by two shuffles), 32 tokens a pass.
        const int quarter = tid & 3, sub = tid >> 2;
        const int qd = headDim >> 2;  // dims per quarter
        for (int p0 = 0; p0 < count; p0 += CHUNK / 4) {
            const int i = p0 + sub;
            float dots[MAX_GROUP];
#pragma unroll
            for (int g = 0; g < MAX_GROUP; ++g) dots[g] = 0.f;
            if (i < count) {
                const int slot = slots[i];
                const bf16* k = kCache + (u64)slot * kvStride + kvh * headDim + quarter * qd;
                const float* qq = q + quarter * qd;
                if (vectorized) {
                    uint4 kr[DPL];  // qd / 8 <= DPL vectors
#pragma unroll
                    for (int c = 0; c < DPL; ++c) kr[c] = (8 * c < qd) ? *(const uint4*)(k + 8 * c) : make_uint4(0, 0, 0, 0);
#pragma unroll
                    for (int c = 0; c < DPL; ++c) {
                        if (8 * c < qd) {
                            float kf[8];
                            unpack_bf16(kr[c], kf);
#pragma unroll
                            for (int g = 0; g < MAX_GROUP; ++g) {
                                if (g < group) {
                                    const float4* qg = (const float4*)(qq + g * headDim + 8 * c);
                                    const float4 a = qg[0], b = qg[1];
                                    dots[g] += (a.x * kf[0] + a.y * kf[1]) + (a.z * kf[2] + a.w * kf[3])
                                             + ((b.x * kf[4] + b.y * kf[5]) + (b.z * kf[6] + b.w * kf[7]));
                                }
                            }
                        }
                    }
                } else {
                    // Any head size: dims quarter, quarter + 4, … of the row.
                    const bf16* kr = k - quarter * qd;
                    for (int d = quarter; d < headDim; d += 4) {
                        const float kv = bf16_to_f32(kr[d]);
#pragma unroll
                        for (int g = 0; g < MAX_GROUP; ++g) if (g < group) dots[g] += q[g * headDim + d] * kv;
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < MAX_GROUP; ++g) {
                float v = dots[g];
                v += __shfl_xor_sync(0xffffffffu, v, 1);
                v += __shfl_xor_sync(0xffffffffu, v, 2);
                if (g < group && i < count && quarter == 0) scores[g * CHUNK + i] = v;
            }
        }
        __syncthreads();
        for (int g = warp; g < group; g += WARPS) {
            float* sg = scores + g * CHUNK;
            float mx = NEG_INF;
            for (int i = lane; i < count; i += 32) mx = fmaxf(mx, sg[i]);
            mx = warp_max(mx);
            const float newMax = fmaxf(runMax[g], mx);
            float sum = 0.f;
            for (int i = lane; i < count; i += 32) {
                const float p = __expf(sg[i] - newMax);
                sg[i] = p;
                sum += p;
            }
            sum = warp_sum(sum);
            if (lane == 0) {
                const float c = __expf(runMax[g] - newMax);
                corr[g] = c;
                runSum[g] = runSum[g] * c + sum;
                runMax[g] = newMax;
            }
        }
        __syncthreads();
#pragma unroll
        for (int g = 0; g < MAX_GROUP; ++g) {
            if (g < group) {
                const float c = corr[g];
#pragma unroll
                for (int k = 0; k < DPL; ++k) acc[g][k] *= c;
            }
        }
        // P·V: warp w takes tokens w, w + 4, …, UNROLL of them per round with their loads issued first;
        // lane l owns dims l*DPL ..< (l+1)*DPL (one vector load) when headDim == 32*DPL, else l, l + 32, ….
        for (int i0 = warp; i0 < count; i0 += WARPS * UNROLL) {
            float v[UNROLL][DPL];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const int i = i0 + u * WARPS;
                const bf16* row = vCache + (u64)slots[i < count ? i : 0] * kvStride + kvh * headDim;
                if (contiguous) {
                    __align__(16) bf16 raw[DPL];
                    if (DPL == 8) *(uint4*)raw = *(const uint4*)(row + lane * DPL);
                    else if (DPL == 4) *(uint2*)raw = *(const uint2*)(row + lane * DPL);
                    else if (DPL == 2) *(u32*)raw = *(const u32*)(row + lane * DPL);
                    else raw[0] = row[lane];
#pragma unroll
                    for (int k = 0; k < DPL; ++k) v[u][k] = i < count ? bf16_to_f32(raw[k]) : 0.f;
                } else {
#pragma unroll
                    for (int k = 0; k < DPL; ++k) {
                        v[u][k] = (i < count && lane + 32 * k < headDim) ? bf16_to_f32(row[lane + 32 * k]) : 0.f;
                    }
                }
            }
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const int i = i0 + u * WARPS;
                if (i < count) {
#pragma unroll
                    for (int g = 0; g < MAX_GROUP; ++g) {
                        if (g < group) {
                            const float p = scores[g * CHUNK + i];
#pragma unroll
                            for (int k = 0; k < DPL; ++k) acc[g][k] += p * v[u][k];
                        }
                    }
                }
            }
        }
        __syncthreads();
    }

    // Add the four warps' partial sums (through shared memory, one head at a time), then write.
    float* red = smem;  // [WARPS][headDim], reusing q/scores (no longer read)
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
        if (g >= group) break;
#pragma unroll
        for (int k = 0; k < DPL; ++k) {
            const int d = contiguous ? lane * DPL + k : lane + 32 * k;
            if (d < headDim) red[warp * headDim + d] = acc[g][k];
        }
        __syncthreads();
        const int h = kvh * group + g;
        for (int d = tid; d < headDim; d += blockDim.x) {
            float o = 0.f;
#pragma unroll
            for (int w = 0; w < WARPS; ++w) o += red[w * headDim + d];
            if (numSplits == 1) {
                out[(u64)row * outStride + h * headDim + d] = f32_to_bf16(o / runSum[g]);
            } else {
                const u64 idx = ((u64)row * numHeads + h) * numSplits + split;
                partialAcc[idx * headDim + d] = o;
                if (d == 0) { partialMax[idx] = runMax[g]; partialSum[idx] = runSum[g]; }
            }
        }
        __syncthreads();
    }
}

#define ATTENTION_ENTRY(DPL, G)                                                                                        \
    extern "C" __global__ void __launch_bounds__(CHUNK) loom_attention_d##DPL##_g##G(                                    \
        const bf16* qkv, int qkvStride, const bf16* kCache, const bf16* vCache, int kvStride, bf16* out, int outStride, \
        const int* queryStarts, const int* contextLengths, const int* blockTables, int tableWidth, int numSeqs,         \
        int numHeads, int numKVHeads, int headDim, int blockSize, float scale, int splitTokens, float* partialAcc,     \
        float* partialMax, float* partialSum) {                                                                        \
        attention<DPL, G>(qkv, qkvStride, kCache, vCache, kvStride, out, outStride, queryStarts, contextLengths,       \
                          blockTables, tableWidth, numSeqs, numHeads, numKVHeads, headDim, blockSize, scale,           \
                          splitTokens, partialAcc, partialMax, partialSum);                                            \
    }
ATTENTION_ENTRY(1, 1) ATTENTION_ENTRY(1, 2) ATTENTION_ENTRY(1, 4) ATTENTION_ENTRY(1, 8)
ATTENTION_ENTRY(2, 1) ATTENTION_ENTRY(2, 2) ATTENTION_ENTRY(2, 4) ATTENTION_ENTRY(2, 8)
ATTENTION_ENTRY(4, 1) ATTENTION_ENTRY(4, 2) ATTENTION_ENTRY(4, 4) ATTENTION_ENTRY(4, 8)
ATTENTION_ENTRY(8, 1) ATTENTION_ENTRY(8, 2) ATTENTION_ENTRY(8, 4) ATTENTION_ENTRY(8, 8)

// Merges the splits of loom_attention_d*: out = Σ acc_s e^(m_s - M) / Σ l_s e^(m_s - M).
// Launch: grid (n rows, heads), block (128). Arguments as above, plus numSplits.
extern "C" __global__ void loom_attention_combine(const float* partialAcc, const float* partialMax, const float* partialSum,
                                                  bf16* out, int outStride, int numHeads, int headDim, int numSplits) {
    grid_enter();
    const int row = blockIdx.x, h = blockIdx.y;
    const u64 base = ((u64)row * numHeads + h) * numSplits;
    float m = NEG_INF;
    for (int s = 0; s < numSplits; ++s) m = fmaxf(m, partialMax[base + s]);
    float l = 0.f;
    for (int s = 0; s < numSplits; ++s) l += partialSum[base + s] * __expf(partialMax[base + s] - m);
    const float inv = 1.f / l;
    for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
        float o = 0.f;
        for (int s = 0; s < numSplits; ++s) o += partialAcc[(base + s) * headDim + d] * __expf(partialMax[base + s] - m);
        out[(u64)row * outStride + h * headDim + d] = f32_to_bf16(o * inv);
    }
}

