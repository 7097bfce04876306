// LoRA shrink: for plan position p in a segment whose slot s has rank r > 0, and stacked module m,
//   out[p][m*R + j] = A[s][m*R + j] . x[permutation[p]]   for j < r (fp32 accumulation);
// other entries are left untouched (lora_expand reads only j < r). Segments past the plan's count
// are empty (their start is the row count), so a launch sized by the plan's capacity replays in a
// CUDA graph with any mix of adapters.
// Shapes: x [rows, K] bf16, A [slots, stack*R, K] bf16, out [n, stack*R] in plan order (f32; bf16 for the general kernel),
// permutation [n], segmentStarts [capacity + 1], segmentSlots [capacity], slotRanks [slots] (i32).
// loom_lora_shrink_fused (loraShrinkFused) takes instead of x the GEMM input xOut [rows, outStride] bf16
// (x in columns 0 ..< K, written there by the op that made it; the kernel writes
// scalings[s·stack + m] · A[s][m·R + j] · x at K + (s·stack + m)·R + j), scalings [slots, stack] f32,
// the f32 scratch [n, stack*R] as `out` (zero before and after) and counters (i32 tickets, zero
// before and after), then the segment capacity; the _split entry points then take moduleStride (u64:
// module m's values go to its own copy of the input m · moduleStride elements on, at K + s·R + j).
// Launch of the tensor-core kernels: grid (the plan's compact row tiles (find_row_tile), 1, column
// tiles · kSplit), block 32 · W.
#include "common.cuh"

// The compact row tiles of a plan: tile t is the t-th tileRows-row piece of the segments in order
// (a segment of l rows has ceil(l / tileRows)), so a launch has no blocks for the empty tiles of
// short segments. The plan's segments are at most capacity; its n rows make at most
// ceil(n / tileRows) + capacity - 1 tiles. Each warp reads 32 segments' starts at a time and finds
// tile t's segment g with a prefix sum over its lanes. False past the plan's last tile. Called by
// whole warps (uniform arguments); reads only the plan (before grid_wait).
__device__ __forceinline__ bool find_row_tile(const int* starts, int capacity, int tileRows, int t, int& g, int& p0, int& end) {
    const int lane = threadIdx.x & 31;
    for (int base = 0; base < capacity; base += 32) {
        const int s = base + lane;
        int b = 0, e = 0, n = 0;
        if (s < capacity) {
            b = __ldg(starts + s);
            e = __ldg(starts + s + 1);
            n = (e - b + tileRows - 1) / tileRows;
        }
        int inclusive = n;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int v = __shfl_up_sync(0xffffffffu, inclusive, o);
            if (lane >= o) inclusive += v;
        }
        const int total = __shfl_sync(0xffffffffu, inclusive, 31);
        if (t < total) {
            const int l = __ffs(__ballot_sync(0xffffffffu, t < inclusive)) - 1;
            g = base + l;
            p0 = __shfl_sync(0xffffffffu, b, l) + (t - __shfl_sync(0xffffffffu, inclusive - n, l)) * tileRows;
            end = __shfl_sync(0xffffffffu, e, l);
            return true;
        }
        t -= total;
    }
    return false;
}

// The tensor-core kernel. A block computes the 16·MT rows of row tile blockIdx.x (find_row_tile)
// against 8·NT columns of the slot's stack·R rows of A, over one of `kSplit` slices of K
// (blockIdx.z = column tile + tiles · slice), so that a decode step's few rows still spread the
// reading of A over the whole GPU. Its W warps split the slice in 32-element blocks, add their
// partial tiles in shared memory, and the block adds its sums into out (f32, zeroed before the
// launch) atomically. Each lane loads 8 consecutive elements (16 bytes) of a row per block and feeds
// them to two MMAs as their k = 2t.., 2t+8.. pairs: the same permutation of k for both operands,
// which a dot product does not see. Needs K % 8 == 0 and 16-byte aligned rows.
//
// The fused form (FUSED, loom_lora_shrink_fused) completes the input of a GEMM whose weight carries
// the slots' B in extra columns: x is read from that input's first K columns (xStride = its row
// width), and each sum, times its module's scaling, goes as bf16 to xOut[row][K + slot·stack·R + c]. With a K split, the slices add into `out` (f32 scratch
// in plan order, zero before the launch) and the last slice of a tile to finish (a ticket in
// `counters`) writes the tile and leaves the scratch and its ticket zero again. Tried on the H200 in
// session 22 and dropped (rank 64 at 32 tokens, µs a layer): a tile's slices as one thread-block
// cluster adding through distributed shared memory (57 against 47); 4 steps of A a warp requested
// before grid_wait (with the cluster: no better than 2), or the block's whole slice of A prefetched
// into L2 there (48.0 against 47.1): a decode shrink does not wait on A.
template <int MT, int NT, int W, bool FUSED, bool SPLIT = false>
__device__ __forceinline__ void shrink_mma(const bf16* __restrict__ x, const bf16* __restrict__ a, float* __restrict__ out,
                                           const int* permutation, const int* starts, const int* segmentSlots,
                                           const int* slotRanks, int K, int R, int stack, int kSplit, int capacity,
                                           bf16* xOut = nullptr, int outStride = 0, const float* scalings = nullptr,
                                           int* counters = nullptr, int xStride = 0, u64 moduleStride = 0) {
    __shared__ float partial[W][16 * MT][8 * NT];
    // Before grid_wait, only the plan and A are read: the host and the upload stream write them
    // before the step's kernels, no kernel does. A block's first PRE steps of A are requested there.
    int g, p0, end;
    if (!find_row_tile(starts, capacity, 16 * MT, blockIdx.x, g, p0, end)) return;
    const int width = stack * R, tiles = (width + 8 * NT - 1) / (8 * NT);
    const int tile = blockIdx.z % tiles, c0 = tile * 8 * NT, slice = blockIdx.z / tiles;
    const int sliceLength = ((K + kSplit - 1) / kSplit + 31) & ~31;
    const int kBegin = slice * sliceLength, kEnd = min(K, kBegin + sliceLength);
    const int slot = __ldg(segmentSlots + g), rank = __ldg(slotRanks + slot);
    bool any = false;
    for (int c = c0; c < c0 + 8 * NT && c < width; ++c) any |= (c % R) < rank;
    const bool computes = rank > 0 && any && kBegin < kEnd;
    if (!computes) return;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, t = lane & 3;
    if (xStride == 0) xStride = K;
    const bf16* xr[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int p = p0 + mt * 16 + h * 8 + gq;
            xr[mt][h] = p < end ? x + (u64)__ldg(permutation + p) * xStride : nullptr;
        }
    const bf16* ar[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        const int c = c0 + nt * 8 + gq;
        ar[nt] = c < width ? a + ((u64)slot * width + c) * K : nullptr;
    }
    const uint4 zero = make_uint4(0, 0, 0, 0);
    constexpr int PRE = MT == 1 ? 2 : 1;  // the large tiles have no registers to spare
    uint4 early[PRE][NT];
#pragma unroll
    for (int s = 0; s < PRE; ++s)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int k = kBegin + (warp + s * W) * 32 + t * 8;
            early[s][nt] = computes && k < kEnd && ar[nt] ? __ldg((const uint4*)(ar[nt] + k)) : zero;
        }
    grid_enter();
    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;
    // One 32-element step of K at kb: x's rows against A's columns.
    auto step = [&](int kb, const uint4 (&av)[NT]) {
        const int k = kb + t * 8;
        const bool inside = k < kEnd;
        uint4 xv[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int h = 0; h < 2; ++h) xv[mt][h] = inside && xr[mt][h] ? *(const uint4*)(xr[mt][h] + k) : zero;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                mma_bf16_16816(acc[mt][nt], xv[mt][0].x, xv[mt][1].x, xv[mt][0].y, xv[mt][1].y, av[nt].x, av[nt].y);
                mma_bf16_16816(acc[mt][nt], xv[mt][0].z, xv[mt][1].z, xv[mt][0].w, xv[mt][1].w, av[nt].z, av[nt].w);
            }
    };
#pragma unroll
    for (int s = 0; s < PRE; ++s) {
        const int kb = kBegin + (warp + s * W) * 32;
        if (kb < kEnd) step(kb, early[s]);
    }
#pragma unroll 4
    for (int kb = kBegin + (warp + PRE * W) * 32; kb < kEnd; kb += W * 32) {
        const int k = kb + t * 8;
        uint4 av[NT];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) av[nt] = k < kEnd && ar[nt] ? *(const uint4*)(ar[nt] + k) : zero;
        step(kb, av);
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int r = mt * 16 + gq, col = nt * 8 + 2 * t;
            partial[warp][r][col] = acc[mt][nt][0];
            partial[warp][r][col + 1] = acc[mt][nt][1];
            partial[warp][r + 8][col] = acc[mt][nt][2];
            partial[warp][r + 8][col + 1] = acc[mt][nt][3];
        }
    __syncthreads();
    // Writes a finished sum of plan position p, column c to the fused GEMM input: beside x, or split
    // (SPLIT, the _split entry points), into module c / R's own copy of the input, R columns a slot.
    auto fused_write = [&](int p, int c, float s) {
        const int m = c / R;
        const u64 at = SPLIT ? m * moduleStride + (u64)permutation[p] * outStride + K + (u64)slot * R + (c - m * R)
                             : (u64)permutation[p] * outStride + K + (u64)slot * width + c;
        xOut[at] = f32_to_bf16(s * scalings[slot * stack + m]);
    };
    for (int i = threadIdx.x; i < 16 * MT * 8 * NT; i += W * 32) {
        const int r = i / (8 * NT), col = i % (8 * NT);
        const int p = p0 + r, c = c0 + col;
        if (p >= end || c >= width || (c % R) >= rank) continue;
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < W; ++w) s += partial[w][r][col];
        if (FUSED && kSplit == 1) fused_write(p, c, s);
        else if (kSplit == 1) out[(u64)p * width + c] = s;
        else atomicAdd(out + (u64)p * width + c, s);
    }
    if (!FUSED || kSplit == 1) return;
    __shared__ bool isLast;
    __threadfence();
    __syncthreads();
    int* ticket = counters + (u64)blockIdx.x * tiles + tile;
    if (threadIdx.x == 0) isLast = atomicAdd(ticket, 1) == (K + sliceLength - 1) / sliceLength - 1;
    __syncthreads();
    if (!isLast) return;
    __threadfence();
    for (int i = threadIdx.x; i < 16 * MT * 8 * NT; i += W * 32) {
        const int p = p0 + i / (8 * NT), c = c0 + i % (8 * NT);
        if (p >= end || c >= width || (c % R) >= rank) continue;
        float* sum = out + (u64)p * width + c;
        fused_write(p, c, __ldcg(sum));
        *sum = 0.f;
    }
    if (threadIdx.x == 0) *ticket = 0;
}

// Few rows per segment (decode, csgmv chunks): 16 rows × 16 columns per block, 8 warps along K.
extern "C" __global__ void __launch_bounds__(256) loom_lora_shrink_mma_small(
    const bf16* x, const bf16* a, float* out, const int* permutation, const int* starts, const int* segmentSlots,
    const int* slotRanks, int K, int R, int stack, int kSplit, int capacity) {
    shrink_mma<1, 2, 8, false>(x, a, out, permutation, starts, segmentSlots, slotRanks, K, R, stack, kSplit, capacity);
}

// Long segments (prefill, sgmv): 64 rows × 32 columns per block, 4 warps along K.
extern "C" __global__ void __launch_bounds__(128) loom_lora_shrink_mma_large(
    const bf16* x, const bf16* a, float* out, const int* permutation, const int* starts, const int* segmentSlots,
    const int* slotRanks, int K, int R, int stack, int kSplit, int capacity) {
    shrink_mma<4, 4, 4, false>(x, a, out, permutation, starts, segmentSlots, slotRanks, K, R, stack, kSplit, capacity);
}

// The fused shrinks (loraShrinkFused). Each has a _split twin (moduleStride > 0: gate/up with split
// extensions, each module's values in its own copy of the input), a separate entry point so that the
// kernel without it keeps its registers and schedule.
#define SHRINK_FUSED_ARGS                                                                                                  \
    const bf16 *a, float *scratch, const int *permutation, const int *starts, const int *segmentSlots, const int *slotRanks, \
        int K, int R, int stack, int kSplit, bf16 *xOut, int outStride, const float *scalings, int *counters, int capacity
#define SHRINK_FUSED_CALL(STRIDE)                                                                                          \
    (xOut, a, scratch, permutation, starts, segmentSlots, slotRanks, K, R, stack, kSplit, capacity, xOut, outStride, scalings, \
     counters, outStride, STRIDE)
#define SHRINK_FUSED(NAME, BOUNDS, MT, NT, W)                                                                               \
    extern "C" __global__ void BOUNDS NAME(SHRINK_FUSED_ARGS) { shrink_mma<MT, NT, W, true> SHRINK_FUSED_CALL(0); }          \
    extern "C" __global__ void BOUNDS NAME##_split(SHRINK_FUSED_ARGS, u64 moduleStride) {                                   \
        shrink_mma<MT, NT, W, true, true> SHRINK_FUSED_CALL(moduleStride);                                                 \
    }

// Long segments (a plan of one segment per slot: prefill): 64 rows × 32 columns per block, 4 warps
// along K, so each slot's A is read once per 64 rows.
SHRINK_FUSED(loom_lora_shrink_fused_large, __launch_bounds__(128), 4, 4, 4)
// Decode tiles: 16 rows × 16 columns, 8 warps along K; `scratch` is the f32 scratch of a K split.
// Needs K % 8 == 0, 16-byte aligned rows of xOut.
SHRINK_FUSED(loom_lora_shrink_fused, __launch_bounds__(256), 1, 2, 8)
// The same for steps of many rows, whose blocks take long slices of K (loraShrinkFused at
// `fusedShrinkDeepRows` rows or more): at most 2 blocks a multiprocessor, so ptxas may spend the
// registers (116 against 68) on keeping four steps of loads in flight before their MMAs. On the
// H200 (session 20) fused r64 at 256 tokens 70–72 µs a layer against 72–74; at 32 tokens, with
// short slices, 60 against 54, so short steps keep the kernel above (CUDABackend.fusedShrinkDeepRows).
SHRINK_FUSED(loom_lora_shrink_fused_deep, __launch_bounds__(256, 2), 1, 2, 8)

// The fused shrink of long steps, second half: a cuBLASLt GEMM has written x·Aᵀ of the stack·R
// rows of A of every slot from the step's first adapted one into xOut[row][K + first ..< K + extension]
// (bf16; first and extension whole numbers of slots). Each row keeps its own slot's columns c with
// c % R < rank, times their module's scaling (rounded to bf16 again), and the other columns from
// `first` on become zero (those before it, the slots below the step's first adapted one, the GEMM
// left zero), so that the widened GEMM adds only the row's own adapter. A thread takes 8 columns
// (16 bytes) of one module at a time: needs R % 8 == 0. Launch: grid (segment capacity, row tiles
// of 16), block 256.
extern "C" __global__ void __launch_bounds__(256) loom_lora_shrink_fused_mask(
    const int* permutation, const int* starts, const int* segmentSlots, const int* slotRanks, int K, int R, int stack,
    int first, int extension, bf16* xOut, int outStride, const float* scalings) {
    const int g = blockIdx.x, end = __ldg(starts + g + 1), p0 = __ldg(starts + g) + blockIdx.y * 16;
    if (p0 >= end) return;
    const int rows = min(16, end - p0), slot = __ldg(segmentSlots + g), rank = __ldg(slotRanks + slot), width = stack * R;
    const int pieces = (extension - first) / 8;
    grid_enter();
    for (int i = threadIdx.x; i < rows * pieces; i += blockDim.x) {
        const int r = i / pieces, c = first + (i - r * pieces) * 8;
        uint4* v = (uint4*)(xOut + (u64)__ldg(permutation + p0 + r) * outStride + K + c);
        const int j = c % R;
        uint4 w = make_uint4(0, 0, 0, 0);
        if (c / width == slot && j < rank) {
            const float scale = __ldg(scalings + slot * stack + (c % width) / R);
            w = *v;
            u32* h = (u32*)&w;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float lo = j + 2 * e < rank ? bf16_to_f32((bf16)(h[e] & 0xffff)) * scale : 0.f;
                const float hi = j + 2 * e + 1 < rank ? bf16_to_f32((bf16)(h[e] >> 16)) * scale : 0.f;
                h[e] = (u32)f32_to_bf16(lo) | ((u32)f32_to_bf16(hi) << 16);
            }
        }
        *v = w;
    }
}

// The general kernel for any K and an f32 or bf16 out: one block per plan position and module, one
// warp per output j, lanes along K. Launch: grid (n, stack), block 128.
extern "C" __global__ void loom_lora_shrink(const bf16* x, const bf16* a, void* out, int outIsF32, const int* permutation,
                                            const int* segmentStarts, const int* segmentSlots, const int* slotRanks,
                                            int numSegments, int K, int R, int stack) {
    grid_enter();
    const int p = blockIdx.x, m = blockIdx.y;
    const int g = segment_of(segmentStarts, numSegments, p);
    if (g < 0) return;
    const int slot = segmentSlots[g], rank = slotRanks[slot];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bf16* xr = x + (u64)permutation[p] * K;
    for (int j = warp; j < rank; j += blockDim.x >> 5) {
        const bf16* ar = a + ((u64)slot * stack * R + (u64)m * R + j) * K;
        float s = 0.f;
        for (int k = lane; k < K; k += 32) s += bf16_to_f32(ar[k]) * bf16_to_f32(xr[k]);
        s = warp_sum(s);
        if (lane == 0) {
            const u64 o = (u64)p * stack * R + (u64)m * R + j;
            if (outIsF32) ((float*)out)[o] = s; else ((bf16*)out)[o] = f32_to_bf16(s);
        }
    }
}

// The many-adapter kernel (loom_lora_shrink_segments): decode steps whose rows spread over many
// adapters (csgmv's segments of at most 16 rows, 32 or more of them). Its work is a list of units,
// one per nonempty segment and 8·NT-column tile of the slot's stack·R columns that holds a column
// j < rank, each 32-element steps of K long. Every warp of the grid takes an equal, contiguous
// stretch of the (unit, step) list (stream-K), so the step's A, whatever its mix of ranks and
// segments, streams through warps that each keep four steps of loads in flight; a warp adds its
// partial sums into out (f32, zero before the launch) as it leaves a unit. The tensor-core kernels
// instead give each (segment, tile, K slice) a short-lived block whose start is a chain of plan
// lookups, and launch blocks for the plan's whole capacity. Each block first counts the units of
// every segment (a scan over the plan into shared memory: (capacity + 1) ints, dynamic).
// Needs K % 8 == 0, R % (8·NT) == 0, x and A rows 16-byte aligned, segments of at most 16 rows.
// Launch: grid (any; a few blocks per multiprocessor), block 256, shared (capacity + 1) · 4 bytes.
template <int NT>
__device__ __forceinline__ void shrink_segments(const bf16* __restrict__ x, const bf16* __restrict__ a, float* out,
                                                const int* permutation, const int* starts, const int* segmentSlots,
                                                const int* slotRanks, int K, int R, int stack, int capacity) {
    constexpr int W = 8, TILE = 8 * NT, D = 4;
    extern __shared__ int unitStart[];  // [capacity + 1]: the first unit of each segment
    __shared__ int warpTotals[W];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, t = lane & 3;
    const int tilesPerRank = R / TILE;  // tiles of one module
    auto unitsOf = [&](int g) {
        const int rank = slotRanks[segmentSlots[g]];
        return starts[g + 1] > starts[g] && rank > 0 ? stack * ((min(rank, R) + TILE - 1) / TILE) : 0;
    };
    grid_enter();
    // Exclusive scan of the units per segment: each thread a run of consecutive segments.
    const int per = (capacity + W * 32 - 1) / (W * 32), g0 = tid * per;
    int local = 0;
    for (int g = g0; g < min(capacity, g0 + per); ++g) local += unitsOf(g);
    int inclusive = local;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, inclusive, o);
        if (lane >= o) inclusive += v;
    }
    if (lane == 31) warpTotals[warp] = inclusive;
    __syncthreads();
    int before = inclusive - local;
    for (int w = 0; w < warp; ++w) before += warpTotals[w];
    for (int g = g0; g < min(capacity, g0 + per); ++g) {
        unitStart[g] = before;
        before += unitsOf(g);
    }
    if (tid == W * 32 - 1) unitStart[capacity] = before;
    __syncthreads();

    const int units = unitStart[capacity], stepsPerUnit = (K + 31) / 32;
    const long long total = (long long)units * stepsPerUnit;
    const int warps = gridDim.x * W;
    // Stretches of at least 8 steps, so that a warp's loads in flight pay for its start.
    const long long length = max(8LL, (total + warps - 1) / warps);
    long long s = (long long)(blockIdx.x * W + warp) * length;
    const long long end = min(total, s + length);
    const int width = stack * R;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    while (s < end) {
        const int u = (int)(s / stepsPerUnit), k0 = (int)(s % stepsPerUnit);
        const int steps = (int)min(end - s, (long long)(stepsPerUnit - k0));
        // The unit's segment: the last g with unitStart[g] <= u (segments without units share a start).
        int lo = 0, hi = capacity - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            if (unitStart[mid] <= u) lo = mid; else hi = mid - 1;
        }
        const int g = lo, slot = segmentSlots[g], rank = min(slotRanks[slot], R);
        const int p0 = starts[g], pEnd = starts[g + 1];
        const int tpm = (rank + TILE - 1) / TILE, tileInSegment = u - unitStart[g];
        const int c0 = (tileInSegment / tpm) * R + (tileInSegment % tpm) * TILE;
        const bf16* xr[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int p = p0 + gq + 8 * h;
            xr[h] = p < pEnd ? x + (u64)permutation[p] * K : nullptr;
        }
        const bf16* ar[NT];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int c = c0 + nt * 8 + gq;
            ar[nt] = (c % R) < rank ? a + ((u64)slot * width + c) * K : nullptr;
        }
        float acc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[nt][i] = 0.f;
        for (int i = 0; i < steps; i += D) {
            uint4 av[D][NT], xv[D][2];
#pragma unroll
            for (int d = 0; d < D; ++d) {
                const int k = (k0 + i + d) * 32 + t * 8;
                const bool inside = i + d < steps && k < K;
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) av[d][nt] = inside && ar[nt] ? __ldg((const uint4*)(ar[nt] + k)) : zero;
#pragma unroll
                for (int h = 0; h < 2; ++h) xv[d][h] = inside && xr[h] ? *(const uint4*)(xr[h] + k) : zero;
            }
#pragma unroll
            for (int d = 0; d < D; ++d)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    mma_bf16_16816(acc[nt], xv[d][0].x, xv[d][1].x, xv[d][0].y, xv[d][1].y, av[d][nt].x, av[d][nt].y);
                    mma_bf16_16816(acc[nt], xv[d][0].z, xv[d][1].z, xv[d][0].w, xv[d][1].w, av[d][nt].z, av[d][nt].w);
                }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int p = p0 + gq + 8 * h;
            if (p >= pEnd) continue;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int c = c0 + nt * 8 + 2 * t + e;
                    if ((c % R) < rank) atomicAdd(out + (u64)p * width + c, acc[nt][2 * h + e]);
                }
        }
        s += steps;
    }
}

extern "C" __global__ void __launch_bounds__(256, 3) loom_lora_shrink_segments(
    const bf16* x, const bf16* a, float* out, const int* permutation, const int* starts, const int* segmentSlots,
    const int* slotRanks, int K, int R, int stack, int capacity) {
    shrink_segments<2>(x, a, out, permutation, starts, segmentSlots, slotRanks, K, R, stack, capacity);
}

// The same for pools whose R is a multiple of 8 but not of 16: 8-column tiles.
extern "C" __global__ void __launch_bounds__(256, 3) loom_lora_shrink_segments8(
    const bf16* x, const bf16* a, float* out, const int* permutation, const int* starts, const int* segmentSlots,
    const int* slotRanks, int K, int R, int stack, int capacity) {
    shrink_segments<1>(x, a, out, permutation, starts, segmentSlots, slotRanks, K, R, stack, capacity);
}
