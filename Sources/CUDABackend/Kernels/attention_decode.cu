// attention_decode: decode attention (one query row per sequence, headDim 32·DPL, group ≤ G ∈ {4, 8});
// loom_attention_d* (attention.cu) serves every other batch and merges this kernel's splits
// (loom_attention_combine).
#include "common.cuh"

#define WARPS 4

// The warps of a block work independently, no barrier between steps. A step of a warp takes
// TOK = 32 / G tokens: lane l holds dims l·DPL ..< (l+1)·DPL of q (registers, pre-scaled) and loads
// those dims of the step's K and V rows (one 4- or 8-byte load per row, the whole warp one
// contiguous row), forms the 32 partial dots (token, head), and a recursive-halving reduction (31
// shuffles) leaves on lane tok·G + head the score of that pair. Each lane keeps the running max and
// sum of its head's scores (online softmax, fp32); the P·V step broadcasts each probability by
// shuffle. The next two steps' K and V loads are in flight during this step's math (one step ahead
// was 2% slower at batch 1 on the H200). The chunk's cache slots are looked up into shared memory
// first. At the end the four warps merge through
// shared memory and write out (one split) or partials for loom_attention_combine, in
// loom_attention_d*'s format.
// Entry points loom_attention_decode_d{2,4}_g{4,8}. Launch: grid (n rows, kvHeads, splits), block
// (128). Arguments as loom_attention_d*; K and V 16-byte aligned.
#define DECODE_SLOTS 256

template <int DPL> struct KVVec;
template <> struct KVVec<2> { typedef u32 T; };
template <> struct KVVec<4> { typedef uint2 T; };

// One step of a recursive-halving warp reduction of 2·HALF values a lane: the lane keeps the half
// whose index has bit HALF equal to its own lane's, summed with its partner's (lane ^ HALF).
template <int HALF>
__device__ __forceinline__ void halve(float* v, int lane) {
    const bool upper = lane & HALF;
#pragma unroll
    for (int i = 0; i < HALF; ++i) {
        const float send = upper ? v[i] : v[i + HALF];
        const float keep = upper ? v[i + HALF] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, HALF);
    }
}

template <int DPL, int G>
__device__ __forceinline__ void attention_decode(
    const bf16* __restrict__ qkv, int qkvStride, const bf16* __restrict__ kCache, const bf16* __restrict__ vCache, int kvStride,
    bf16* __restrict__ out, int outStride, const int* __restrict__ contextLengths, const int* __restrict__ blockTables,
    int tableWidth, int numHeads, int numKVHeads, int headDim, int blockSize, float scale, int splitTokens,
    float* __restrict__ partialAcc, float* __restrict__ partialMax, float* __restrict__ partialSum)
{
    grid_enter();
    typedef typename KVVec<DPL>::T Vec;
    constexpr int TOK = 32 / G;
    __shared__ int slots[DECODE_SLOTS];
    __shared__ float warpMax[WARPS][G], warpSum[WARPS][G];
    __shared__ float warpAcc[WARPS][G][32 * DPL];
    const int row = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, numSplits = gridDim.z;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int group = numHeads / numKVHeads;
    const int visible = contextLengths[row];
    const int perSplit = splitTokens > 0 ? splitTokens : (((visible + numSplits - 1) / numSplits + 31) & ~31);
    const int begin = split * perSplit;
    const int end = min(visible, begin + perSplit);
    const int* table = blockTables + (u64)row * tableWidth;

    float q[G][DPL], acc[G][DPL];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int k = 0; k < DPL; ++k) {
            q[g][k] = g < group ? bf16_to_f32(qkv[(u64)row * qkvStride + (kvh * group + g) * headDim + lane * DPL + k]) * scale : 0.f;
            acc[g][k] = 0.f;
        }
    const int myToken = lane / G;
    float myMax = NEG_INF, mySum = 0.f;
    const bf16* kBase = kCache + kvh * headDim + lane * DPL;
    const bf16* vBase = vCache + kvh * headDim + lane * DPL;

    for (int c0 = begin; c0 < end; c0 += DECODE_SLOTS) {
        const int count = min(DECODE_SLOTS, end - c0);
        __syncthreads();  // the previous chunk's slots are no longer read
        for (int i = tid; i < count; i += blockDim.x) {
            const int t = c0 + i;
            slots[i] = table[t / blockSize] * blockSize + t % blockSize;
        }
        __syncthreads();
        const int steps = (count + TOK - 1) / TOK;
        Vec kc[TOK], vc[TOK];
        auto load = [&](int j, Vec (&kr)[TOK], Vec (&vr)[TOK]) {
#pragma unroll
            for (int t = 0; t < TOK; ++t) {
                const int i = j * TOK + t;
                const u64 off = (u64)slots[i < count ? i : 0] * kvStride;
                kr[t] = *(const Vec*)(kBase + off);
                vr[t] = *(const Vec*)(vBase + off);
            }
        };
        // Two steps of loads are in flight during the one being computed (kn: the next one).
        Vec kn[TOK], vn[TOK];
        if (warp < steps) load(warp, kc, vc);
        if (warp + WARPS < steps) load(warp + WARPS, kn, vn);
        for (int j = warp; j < steps; j += WARPS) {
            Vec kAhead[TOK], vAhead[TOK];
            const bool more = j + 2 * WARPS < steps;
            if (more) load(j + 2 * WARPS, kAhead, vAhead);
            // Partial dots: value tok·G + g.
            float v[32];
#pragma unroll
            for (int t = 0; t < TOK; ++t) {
                float kf[DPL];
                unpack_bf16(kc[t], kf);
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    float d = 0.f;
#pragma unroll
                    for (int k = 0; k < DPL; ++k) d = fmaf(q[g][k], kf[k], d);
                    v[t * G + g] = d;
                }
            }
            // Recursive halving: lane l ends with the sum over the warp of value l.
            halve<16>(v, lane);
            halve<8>(v, lane);
            halve<4>(v, lane);
            halve<2>(v, lane);
            halve<1>(v, lane);
            const bool valid = j * TOK + myToken < count;
            const float score = valid ? v[0] : NEG_INF;
            float stepMax = score;
#pragma unroll
            for (int o = G; o < 32; o <<= 1) stepMax = fmaxf(stepMax, __shfl_xor_sync(0xffffffffu, stepMax, o));
            const float newMax = fmaxf(myMax, stepMax);
            const float corr = newMax == NEG_INF ? 1.f : __expf(myMax - newMax);
            const float p = valid ? __expf(score - newMax) : 0.f;
            mySum = mySum * corr + p;
            myMax = newMax;
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const float c = __shfl_sync(0xffffffffu, corr, g);
#pragma unroll
                for (int k = 0; k < DPL; ++k) acc[g][k] *= c;
            }
#pragma unroll
            for (int t = 0; t < TOK; ++t) {
                float vf[DPL];
                unpack_bf16(vc[t], vf);
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    const float pg = __shfl_sync(0xffffffffu, p, t * G + g);
#pragma unroll
                    for (int k = 0; k < DPL; ++k) acc[g][k] = fmaf(pg, vf[k], acc[g][k]);
                }
            }
            if (j + WARPS < steps) {
#pragma unroll
                for (int t = 0; t < TOK; ++t) { kc[t] = kn[t]; vc[t] = vn[t]; }
            }
            if (more) {
#pragma unroll
                for (int t = 0; t < TOK; ++t) { kn[t] = kAhead[t]; vn[t] = vAhead[t]; }
            }
        }
    }

    // Each head's sum over its lanes; then the four warps merge.
#pragma unroll
    for (int o = G; o < 32; o <<= 1) mySum += __shfl_xor_sync(0xffffffffu, mySum, o);
    if (lane < G) { warpMax[warp][lane] = myMax; warpSum[warp][lane] = mySum; }
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int k = 0; k < DPL; ++k) warpAcc[warp][g][lane * DPL + k] = acc[g][k];
    __syncthreads();
    attention_decode_merge<WARPS, G>(warpMax, warpSum, &warpAcc[0][0][0], group, headDim, row, kvh, split, numSplits, numHeads,
                                     out, outStride, partialAcc, partialMax, partialSum);
}

#define ATTENTION_DECODE_ENTRY(DPL, G)                                                                                 \
    extern "C" __global__ void __launch_bounds__(128) loom_attention_decode_d##DPL##_g##G(                              \
        const bf16* qkv, int qkvStride, const bf16* kCache, const bf16* vCache, int kvStride, bf16* out, int outStride, \
        const int* queryStarts, const int* contextLengths, const int* blockTables, int tableWidth, int numSeqs,         \
        int numHeads, int numKVHeads, int headDim, int blockSize, float scale, int splitTokens, float* partialAcc,     \
        float* partialMax, float* partialSum) {                                                                        \
        attention_decode<DPL, G>(qkv, qkvStride, kCache, vCache, kvStride, out, outStride, contextLengths, blockTables, \
                                 tableWidth, numHeads, numKVHeads, headDim, blockSize, scale, splitTokens, partialAcc,  \
                                 partialMax, partialSum);                                                              \
    }
ATTENTION_DECODE_ENTRY(2, 4) ATTENTION_DECODE_ENTRY(2, 8) ATTENTION_DECODE_ENTRY(4, 4) ATTENTION_DECODE_ENTRY(4, 8)
