// Does q/k/v at 32 rows gain from running as 2-4 concurrent cuBLASLt GEMMs over row blocks of W
// (graph branches), so that more than cuBLASLt's 96 blocks stream at once?
#include <cuda_runtime.h>
#include <cublasLt.h>
#include <cstdio>
#include <vector>
#include <algorithm>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("ERR %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1);} } while (0)
#define LK(x) do { cublasStatus_t e = (x); if (e != CUBLAS_STATUS_SUCCESS) { printf("LT ERR %d at %d\n", int(e), __LINE__); exit(1);} } while (0)
typedef unsigned short bf16r;
__global__ void fill_rand(bf16r* p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995u; h ^= h >> 15;
        float v = (float(h & 0xffff) / 65536.f - 0.5f) * 0.1f;
        p[i] = (bf16r)(__float_as_uint(v) >> 16);
    }
}
struct Plan { cublasLtMatmulDesc_t op; cublasLtMatrixLayout_t la, lb, lc; std::vector<cublasLtMatmulAlgo_t> algos; };
int main() {
    const int M = 32, K = 4096;
    cublasLtHandle_t lt; LK(cublasLtCreate(&lt));
    const int NB = 8;
    struct Shape { const char* name; int N; };
    for (Shape sh : {Shape{"qkv", 6144}, Shape{"o", 4096}}) {
        const int N = sh.N;
        std::vector<bf16r*> ws(NB);
        for (auto& ww : ws) { CK(cudaMalloc(&ww, size_t(N) * K * 2)); fill_rand<<<1024, 256>>>(ww, size_t(N) * K, 7); }
        bf16r* x; CK(cudaMalloc(&x, M * K * 2)); fill_rand<<<64, 256>>>(x, M * K, 3);
        bf16r* y; CK(cudaMalloc(&y, M * N * 2));
        std::vector<void*> wsp(4); for (auto& pp : wsp) CK(cudaMalloc(&pp, 32 << 20));
        std::vector<cudaStream_t> st(4); for (auto& ss : st) CK(cudaStreamCreateWithFlags(&ss, cudaStreamNonBlocking));
        std::vector<cudaEvent_t> ev(8); for (auto& evv : ev) CK(cudaEventCreateWithFlags(&evv, cudaEventDisableTiming));
        auto makePlan = [&](int n) {
            Plan p;
            LK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
            cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
            cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
            cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
            cublasLtMatrixLayoutCreate(&p.la, CUDA_R_16BF, K, n, K);
            cublasLtMatrixLayoutCreate(&p.lb, CUDA_R_16BF, K, M, K);
            cublasLtMatrixLayoutCreate(&p.lc, CUDA_R_16BF, n, M, N);   // a column block of y: ld N
            cublasLtMatmulPreference_t pref; cublasLtMatmulPreferenceCreate(&pref);
            size_t wsz = 32 << 20; cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof(wsz));
            cublasLtMatmulHeuristicResult_t h[16]; int cnt = 0;
            LK(cublasLtMatmulAlgoGetHeuristic(lt, p.op, p.la, p.lb, p.lc, p.lc, pref, 16, h, &cnt));
            for (int i = 0; i < cnt; i++) p.algos.push_back(h[i].algo);
            return p;
        };
        auto timeGraph = [&](auto body) {
            cudaGraph_t g; cudaGraphExec_t ge;
            const int L = 32;
            CK(cudaStreamBeginCapture(st[0], cudaStreamCaptureModeGlobal));
            for (int i = 0; i < L; i++) body(i);
            CK(cudaStreamEndCapture(st[0], &g));
            if (cudaGraphInstantiate(&ge, g, 0) != cudaSuccess) { cudaGetLastError(); return -1.f; }
            for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(ge, st[0]));
            CK(cudaStreamSynchronize(st[0]));
            cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
            std::vector<float> t;
            for (int r = 0; r < 15; r++) {
                cudaEventRecord(a, st[0]); CK(cudaGraphLaunch(ge, st[0])); cudaEventRecord(b, st[0]); CK(cudaEventSynchronize(b));
                float ms; cudaEventElapsedTime(&ms, a, b); t.push_back(ms * 1000 / L);
            }
            std::sort(t.begin(), t.end());
            cudaGraphExecDestroy(ge); cudaGraphDestroy(g);
            return t[t.size() / 2];
        };
        float one = 1, zero = 0;
        for (int parts : {1, 2, 3, 4}) {
            if (N % (parts * 64)) continue;
            int n = N / parts;
            Plan p = makePlan(n);
            float best = 1e9; int bestA = -1;
            for (int a = 0; a < int(p.algos.size()); a++) {
                bool ok = true;
                float us = timeGraph([&](int i) {
                    const bf16r* w = ws[i % NB];
                    if (parts > 1) { CK(cudaEventRecord(ev[0], st[0])); for (int q = 1; q < parts; q++) CK(cudaStreamWaitEvent(st[q], ev[0])); }
                    for (int q = 0; q < parts; q++) {
                        if (cublasLtMatmul(lt, p.op, &one, w + size_t(q) * n * K, p.la, x, p.lb, &zero, y + size_t(q) * n, p.lc, y + size_t(q) * n, p.lc, &p.algos[a], wsp[q], 32 << 20, st[q]) != CUBLAS_STATUS_SUCCESS) ok = false;
                    }
                    if (parts > 1) for (int q = 1; q < parts; q++) { CK(cudaEventRecord(ev[q], st[q])); CK(cudaStreamWaitEvent(st[0], ev[q])); }
                });
                if (!ok || us < 0) continue;
                printf("%s parts %d (n %d) algo %2d: %6.2f us\n", sh.name, parts, n, a, us);
                if (us < best) { best = us; bestA = a; }
            }
            printf("== %s parts %d best %.2f us (algo %d of %zu); floor %.2f\n", sh.name, parts, best, bestA, p.algos.size(), double(N) * K * 2 / 4.24e6);
            fflush(stdout);
        }
        // q (4096) and k/v (2048) as two GEMMs, each its own best algo
    }
    return 0;
}
