// Weight-stream probe: how fast can 132 SMs pull a decode GEMM's weight out of HBM?
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
template <class T> __host__ __device__ __forceinline__ T mn(T a, T b) { return a < b ? a : b; }
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("ERR %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1);} } while (0)

__device__ __forceinline__ uint32_t su32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint64_t* b, int c) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(su32(b)), "r"(c)); }
__device__ __forceinline__ void mbar_expect(uint64_t* b, uint32_t n) { asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(su32(b)), "r"(n) : "memory"); }
__device__ __forceinline__ void mbar_arrive(uint64_t* b) { asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(su32(b)) : "memory"); }
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t ph) {
    asm volatile("{\n.reg .pred P1;\nWAIT_%=:\nmbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n@P1 bra DONE_%=;\nbra WAIT_%=;\nDONE_%=:\n}\n" ::"r"(su32(b)), "r"(ph) : "memory");
}
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t n, uint64_t* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(su32(dst)), "l"(src), "r"(n), "r"(su32(bar)) : "memory");
}
__device__ __forceinline__ void bulk_g2s_ef(void* dst, const void* src, uint32_t n, uint64_t* bar, uint64_t pol) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(su32(dst)), "l"(src), "r"(n), "r"(su32(bar)), "l"(pol) : "memory");
}

// One producer lane, 4 consumer warps that read their stage from shared memory.
template <int EF>
__global__ void __launch_bounds__(160) stream_bulk(const uint8_t* __restrict__ w, size_t total, int stages, uint32_t chunk, unsigned* sink) {
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ uint64_t full[32], empty[32];
    size_t per = (total / gridDim.x + 15) & ~size_t(15);
    size_t begin = per * blockIdx.x, end = mn(total, begin + per);
    if (begin >= end) return;
    int n = int((end - begin + chunk - 1) / chunk);
    if (threadIdx.x == 0) {
        for (int s = 0; s < stages; s++) { mbar_init(&full[s], 1); mbar_init(&empty[s], 4); }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp == 4) {
        if (lane == 0) {
            uint64_t pol;
            asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
            for (int i = 0; i < n; i++) {
                int s = i % stages;
                if (i >= stages) mbar_wait(&empty[s], ((i / stages) - 1) & 1);
                size_t off = begin + size_t(i) * chunk;
                uint32_t nb = uint32_t(mn<size_t>(chunk, end - off));
                mbar_expect(&full[s], nb);
                if (EF) bulk_g2s_ef(smem + size_t(s) * chunk, w + off, nb, &full[s], pol);
                else bulk_g2s(smem + size_t(s) * chunk, w + off, nb, &full[s]);
            }
        }
    } else {
        unsigned acc = 0;
        for (int i = 0; i < n; i++) {
            int s = i % stages;
            mbar_wait(&full[s], (i / stages) & 1);
            const uint4* p = (const uint4*)(smem + size_t(s) * chunk);
            uint4 v = p[threadIdx.x];
            acc ^= v.x ^ v.w;
            __syncwarp();
            if (lane == 0) mbar_arrive(&empty[s]);
        }
        if (acc == 0x12345678u) sink[0] = acc;
    }
}

// Plain loads: each thread keeps U 16-byte loads in flight.
template <int U>
__global__ void stream_ld(const uint4* __restrict__ w, size_t n16, unsigned* sink) {
    size_t per = (n16 + gridDim.x - 1) / gridDim.x;
    size_t begin = per * blockIdx.x, end = mn(n16, begin + per);
    unsigned acc = 0;
    for (size_t i = begin + threadIdx.x; i < end; i += size_t(blockDim.x) * U) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            size_t j = i + size_t(u) * blockDim.x;
            if (j < end) asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v[u].x), "=r"(v[u].y), "=r"(v[u].z), "=r"(v[u].w) : "l"(w + j));
            else v[u] = make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; u++) acc ^= v[u].x ^ v[u].w;
    }
    if (acc == 0x12345678u) sink[0] = acc;
}


// The decode GEMM's access pattern without its arithmetic: a warp's 16-byte loads cover 8 rows x 64 bytes
// (lane g = row, t = 16 bytes), KW k a warp, 8 warps side by side along k, tiles of 8 rows in turn.
template <int KW, int U>
__global__ void __launch_bounds__(256) stream_rows(const uint8_t* __restrict__ w, int N, int K, int ctasPerSlice, unsigned* sink) {
    const int kSlice = 8 * KW, slice = blockIdx.x / ctasPerSlice, c = blockIdx.x % ctasPerSlice;
    const int tiles = N / 8, base = tiles / ctasPerSlice, extra = tiles % ctasPerSlice;
    const int t0 = c * base + mn(c, extra), nt = base + (c < extra ? 1 : 0);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int kw0 = slice * kSlice + warp * KW;
    constexpr int KB = KW / 32;
    unsigned acc = 0;
    for (int i = 0; i < nt; i += U) {
        uint4 v[U][KB];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int b = 0; b < KB; b++) {
                if (i + u < nt) {
                    const uint4* src = (const uint4*)(w + (size_t((t0 + i + u) * 8 + g) * K + kw0) * 2) + t + b * 4;
                    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v[u][b].x), "=r"(v[u][b].y), "=r"(v[u][b].z), "=r"(v[u][b].w) : "l"(src));
                } else v[u][b] = make_uint4(0, 0, 0, 0);
            }
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int b = 0; b < KB; b++) acc ^= v[u][b].x ^ v[u][b].w;
    }
    if (acc == 0x12345678u) sink[0] = acc;
}

// The same bytes as stream_rows, fetched a row at a time: a warp load is 512 contiguous bytes of one
// row (lane l: 16 bytes at 16 l), so each warp loops over the tile's 8 rows (PIECE = 512) or covers
// R rows x (512 / R) bytes a load (PIECE = 128: 4 rows x 128 bytes).
template <int KW, int U, int PIECE>
__global__ void __launch_bounds__(256) stream_pieces(const uint8_t* __restrict__ w, int N, int K, int ctasPerSlice, unsigned* sink) {
    const int kSlice = 8 * KW, slice = blockIdx.x / ctasPerSlice, c = blockIdx.x % ctasPerSlice;
    const int tiles = N / 8, base = tiles / ctasPerSlice, extra = tiles % ctasPerSlice;
    const int t0 = c * base + mn(c, extra), nt = base + (c < extra ? 1 : 0);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int kw0 = slice * kSlice + warp * KW;
    constexpr int LPR = PIECE / 16;            // lanes a row
    constexpr int RPL = 32 / LPR;              // rows a load
    constexpr int LOADS = 8 * (KW * 2) / 512;  // loads a tile
    unsigned acc = 0;
    for (int i = 0; i < nt; i += U) {
        uint4 v[U][LOADS];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int j = 0; j < LOADS; j++) {
                // load j covers rows (j % (8 / RPL)) * RPL + lane / LPR, bytes (j / (8 / RPL)) * PIECE + 16 (lane % LPR)
                const int row = (j % (8 / RPL)) * RPL + lane / LPR;
                const int byte = (j / (8 / RPL)) * PIECE + 16 * (lane % LPR);
                if (i + u < nt) {
                    const uint4* src = (const uint4*)(w + (size_t((t0 + i + u) * 8 + row) * K + kw0) * 2 + byte);
                    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v[u][j].x), "=r"(v[u][j].y), "=r"(v[u][j].z), "=r"(v[u][j].w) : "l"(src));
                } else v[u][j] = make_uint4(0, 0, 0, 0);
            }
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int j = 0; j < LOADS; j++) acc ^= v[u][j].x ^ v[u][j].w;
    }
    if (acc == 0x12345678u) sink[0] = acc;
}

int main() {
    int sms; CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const size_t sizes[] = {6144ull * 4096 * 2, 4096ull * 4096 * 2, 4096ull * 14336 * 2, 28672ull * 4096 * 2};
    const char* names[] = {"qkv 50.3MB", "o 33.5MB", "down 117.4MB", "gate/up 234.9MB"};
    const int NB = 8;  // distinct buffers, rotated
    std::vector<uint8_t*> bufs(NB);
    for (int b = 0; b < NB; b++) { CK(cudaMalloc(&bufs[b], sizes[3])); CK(cudaMemset(bufs[b], b + 1, sizes[3])); }
    unsigned* sink; CK(cudaMalloc(&sink, 64));
    cudaStream_t st; CK(cudaStreamCreate(&st));
    CK(cudaFuncSetAttribute(stream_bulk<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, 220 * 1024));
    CK(cudaFuncSetAttribute(stream_bulk<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, 220 * 1024));
    auto timeit = [&](auto launch) {
        cudaGraph_t g; cudaGraphExec_t ge;
        const int L = 32;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        for (int i = 0; i < L; i++) launch(bufs[i % NB]);
        CK(cudaStreamEndCapture(st, &g));
        CK(cudaGraphInstantiate(&ge, g, 0));
        for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(ge, st));
        cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
        std::vector<float> t;
        for (int r = 0; r < 15; r++) {
            cudaEventRecord(a, st); CK(cudaGraphLaunch(ge, st)); cudaEventRecord(b, st); CK(cudaEventSynchronize(b));
            float ms; cudaEventElapsedTime(&ms, a, b); t.push_back(ms * 1000 / L);
        }
        std::sort(t.begin(), t.end());
        CK(cudaGetLastError());
        cudaGraphExecDestroy(ge); cudaGraphDestroy(g);
        return t[t.size() / 2];
    };
    for (int z = 0; z < 4; z++) {
        size_t S = sizes[z];
        printf("== %s: floor at 4.24 TB/s %.2f us\n", names[z], S / 4.24e6);
        for (int grid_mult : {1, 2}) for (uint32_t chunk : {8192u, 16384u, 32768u}) for (int ring_kb : {96, 192}) {
            int stages = ring_kb * 1024 / chunk; if (stages > 32) continue;
            if (grid_mult == 2 && ring_kb > 100) continue;
            float us = timeit([&](uint8_t* w) { stream_bulk<0><<<sms * grid_mult, 160, size_t(stages) * chunk, st>>>(w, S, stages, chunk, sink); });
            printf("bulk grid %d chunk %5u stages %2d: %7.2f us  %.2f TB/s\n", sms * grid_mult, chunk, stages, us, S / us / 1e6);
        }
        for (uint32_t chunk : {16384u, 32768u}) {
            int stages = 192 * 1024 / chunk;
            float us = timeit([&](uint8_t* w) { stream_bulk<1><<<sms, 160, size_t(stages) * chunk, st>>>(w, S, stages, chunk, sink); });
            printf("bulk evict_first chunk %5u stages %2d: %7.2f us  %.2f TB/s\n", chunk, stages, us, S / us / 1e6);
        }
        {
            int K = z == 2 ? 14336 : 4096, N = int(S / 2 / K);
            int slices = K / 2048;
            int cps = z == 2 ? 18 : 66;
            for (int rep = 0; rep < 2; rep++) {
                float u5 = timeit([&](uint8_t* w) { stream_pieces<256, 2, 512><<<slices * cps, 256, 0, st>>>(w, N, K, cps, sink); });
                printf("pieces 512B/row kw256 U2 grid %d: %7.2f us  %.2f TB/s\n", slices * cps, u5, S / u5 / 1e6);
                u5 = timeit([&](uint8_t* w) { stream_pieces<256, 2, 128><<<slices * cps, 256, 0, st>>>(w, N, K, cps, sink); });
                printf("pieces 128B/row kw256 U2 grid %d: %7.2f us  %.2f TB/s\n", slices * cps, u5, S / u5 / 1e6);
                u5 = timeit([&](uint8_t* w) { stream_pieces<256, 2, 256><<<slices * cps, 256, 0, st>>>(w, N, K, cps, sink); });
                printf("pieces 256B/row kw256 U2 grid %d: %7.2f us  %.2f TB/s\n", slices * cps, u5, S / u5 / 1e6);
                u5 = timeit([&](uint8_t* w) { stream_pieces<256, 1, 512><<<slices * cps * 2, 256, 0, st>>>(w, N, K, cps * 2, sink); });
                printf("pieces 512B/row kw256 U1 grid %d (2/SM): %7.2f us  %.2f TB/s\n", slices * cps * 2, u5, S / u5 / 1e6);
                float us = timeit([&](uint8_t* w) { stream_rows<256, 2><<<slices * cps, 256, 0, st>>>(w, N, K, cps, sink); });
                printf("rows pattern kw256 U2 grid %d: %7.2f us  %.2f TB/s\n", slices * cps, us, S / us / 1e6);
                us = timeit([&](uint8_t* w) { stream_rows<256, 1><<<slices * cps, 256, 0, st>>>(w, N, K, cps, sink); });
                printf("rows pattern kw256 U1 grid %d: %7.2f us  %.2f TB/s\n", slices * cps, us, S / us / 1e6);
                us = timeit([&](uint8_t* w) { stream_rows<256, 2><<<slices * cps * 2, 256, 0, st>>>(w, N, K, cps * 2, sink); });
                printf("rows pattern kw256 U2 grid %d (2/SM): %7.2f us  %.2f TB/s\n", slices * cps * 2, us, S / us / 1e6);
            }
        }
        for (int bpm : {2, 4, 8}) {
            float us = timeit([&](uint8_t* w) { stream_ld<8><<<sms * bpm, 256, 0, st>>>((const uint4*)w, S / 16, sink); });
            printf("ld U8 grid %d x256: %7.2f us  %.2f TB/s\n", sms * bpm, us, S / us / 1e6);
            us = timeit([&](uint8_t* w) { stream_ld<4><<<sms * bpm, 512, 0, st>>>((const uint4*)w, S / 16, sink); });
            printf("ld U4 grid %d x512: %7.2f us  %.2f TB/s\n", sms * bpm, us, S / us / 1e6);
        }
    }
    return 0;
}
