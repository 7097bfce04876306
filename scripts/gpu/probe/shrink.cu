// Session 29's probe: the fused backend's prefill LoRA shrink (x · Aᵀ into the widened GEMM's
// input) as one dense cuBLASLt GEMM against every adapted slot's A (what Loom ran before), against
// cuBLASLt's pointer-array batched GEMM over the segments (each segment, or each fixed-size chunk
// of one, against its own slot's A only; what Loom runs since). Llama-3.1-8B shapes, 2048 prefill
// rows over 4 adapters (the `bench lora-kernels` prefill row), ranks 16 and 64. The batched form's
// output is checked against the dense form's own-slot columns: bit-equal where neither splits K
// (K 4096 here), last-bit differences where one does (down, K 14336); rows a form leaves out show
// as differences, since the columns are cleared before each form runs.
// Built and run by run.sh on the device.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)
#define LK(x) do { cublasStatus_t e = (x); if (e != CUBLAS_STATUS_SUCCESS) { printf("%s:%d cublasLt status %d\n", __FILE__, __LINE__, int(e)); exit(1); } } while (0)

using bf16 = __nv_bfloat16;

__global__ void fill_rand(bf16* p, size_t n, unsigned seed, float scale) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        unsigned h = unsigned(i) * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995; h ^= h >> 15;
        p[i] = __float2bfloat16(((h & 0xffff) / 65535.0f - 0.5f) * scale);
    }
}

// What the mask costs Loom's dense form: keep the row's own slot's columns (scaled), zero the rest.
__global__ void mask(bf16* wide, int ld, int k, int width, int slots, int segRows, float scale) {
    int row = blockIdx.x, own = row / segRows;
    for (int c = threadIdx.x; c < slots * width; c += blockDim.x) {
        bf16* p = wide + size_t(row) * ld + k + c;
        *p = (c / width == own) ? __float2bfloat16(__bfloat162float(*p) * scale) : __float2bfloat16(0.f);
    }
}

// Powers of two, so that scaling after the GEMM's rounding equals scaling inside it.
static float slotScale(int slot) { const float s[] = {0.5f, 2.f, 0.25f, 1.f}; return s[slot % 4]; }

int main() {
    const int rows = 2048, segs = 4, slotsInPool = 8;
    cudaStream_t st; CK(cudaStreamCreate(&st));
    cublasLtHandle_t lt; LK(cublasLtCreate(&lt));
    size_t wsz = 32 << 20; void* ws; CK(cudaMalloc(&ws, wsz));
    const int NX = 4;  // x buffers rotated so a replay does not find x in L2 from the last one
    struct Shape { const char* name; int k, perRank; };
    Shape shapes[] = {{"q/k/v", 4096, 3}, {"o", 4096, 1}, {"gate/up", 4096, 2}, {"down", 14336, 1}};
    auto timeGraph = [&](auto body, int L) {
        cudaGraph_t g; cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        for (int i = 0; i < L; i++) body(i);
        CK(cudaStreamEndCapture(st, &g));
        CK(cudaGraphInstantiate(&ge, g, 0));
        for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(ge, st));
        CK(cudaStreamSynchronize(st));
        cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
        std::vector<float> t;
        for (int r = 0; r < 11; r++) {
            cudaEventRecord(a, st); CK(cudaGraphLaunch(ge, st)); cudaEventRecord(b, st); CK(cudaEventSynchronize(b));
            float ms; cudaEventElapsedTime(&ms, a, b); t.push_back(ms * 1000 / L);
        }
        std::sort(t.begin(), t.end());
        cudaGraphExecDestroy(ge); cudaGraphDestroy(g);
        return t[t.size() / 2];
    };
    for (int rank : {16, 64}) {
        for (auto& s : shapes) {
            int width = s.perRank * rank, ld = s.k + slotsInPool * width, k = s.k;
            std::vector<bf16*> xs(NX);
            for (auto& x : xs) { CK(cudaMalloc(&x, size_t(rows) * ld * 2)); fill_rand<<<1024, 256>>>(x, size_t(rows) * ld, 7 + (&x - xs.data()), 2.f); }
            bf16* a; CK(cudaMalloc(&a, size_t(slotsInPool) * width * k * 2)); fill_rand<<<1024, 256>>>(a, size_t(slotsInPool) * width * k, 99, 0.1f);
            bf16* ref; CK(cudaMalloc(&ref, size_t(rows) * ld * 2));
            CK(cudaDeviceSynchronize());

            // Dense: every adapted slot (4) for every row, D[4·width, rows] at column k of the wide rows.
            auto dense = [&](bf16* x) {
                cublasLtMatmulDesc_t op; LK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
                cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
                cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
                cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
                int n = segs * width;
                cublasLtMatrixLayout_t la, lb, lc;
                cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, n, k);
                cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, rows, ld);
                cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, n, rows, ld);
                cublasLtMatmulPreference_t pref; cublasLtMatmulPreferenceCreate(&pref);
                cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof(wsz));
                cublasLtMatmulHeuristicResult_t h; int found = 0;
                LK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &h, &found));
                if (!found) { printf("dense: no algorithm\n"); exit(1); }
                float one = 1, zero = 0;
                LK(cublasLtMatmul(lt, op, &one, a, la, x, lb, &zero, x + k, lc, x + k, lc, &h.algo, ws, wsz, st));
                cublasLtMatmulPreferenceDestroy(pref); cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb);
                cublasLtMatrixLayoutDestroy(lc); cublasLtMatmulDescDestroy(op);
            };
            // Batched over chunks of `chunk` rows: instance i is rows [i·chunk, +chunk) of segment
            // i·chunk / 512 against that segment's slot only, into that slot's columns.
            // modules > 1: an instance per (chunk, module), rank columns each (split extensions: in
            // Loom each module's columns go to its own copy of the input; here beside each other).
            // alphas: a device vector of scalings per instance (CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST).
            struct Batched { int chunk, modules; bool alphas, noSplit; int count; void** dA; void** dB; void** dD; float* dAlpha; };
            // tail > 0: segments of 512 - tail rows (the rest of each 512 unused), chunked with the
            // last chunk of each segment overlapping the one before (ends at the segment's end).
            auto makeBatched = [&](int chunk, bf16* x, int modules, bool alphas, bool noSplit, int tail) {
                int segRows = rows / segs - tail, perSeg = (segRows + chunk - 1) / chunk;
                int count = segs * perSeg * modules, n = width / modules;
                Batched b{chunk, modules, alphas, noSplit, count, nullptr, nullptr, nullptr, nullptr};
                std::vector<void*> pa(count), pb(count), pd(count);
                std::vector<float> al(size_t(count) * n);
                for (int i = 0; i < count; i++) {
                    int c = i / modules, seg = c / perSeg, j = c % perSeg, m = i % modules, slot = seg;
                    int row = seg * (rows / segs) + std::min(j * chunk, segRows - chunk);
                    pa[i] = a + (size_t(slot) * width + size_t(m) * n) * k;
                    pb[i] = x + size_t(row) * ld;
                    pd[i] = x + size_t(row) * ld + k + size_t(slot) * width + size_t(m) * n;
                    for (int c = 0; c < n; c++) al[size_t(i) * n + c] = slotScale(slot);
                }
                CK(cudaMalloc(&b.dAlpha, al.size() * 4));
                CK(cudaMemcpy(b.dAlpha, al.data(), al.size() * 4, cudaMemcpyHostToDevice));
                CK(cudaMalloc(&b.dA, count * 8)); CK(cudaMalloc(&b.dB, count * 8)); CK(cudaMalloc(&b.dD, count * 8));
                CK(cudaMemcpy(b.dA, pa.data(), count * 8, cudaMemcpyHostToDevice));
                CK(cudaMemcpy(b.dB, pb.data(), count * 8, cudaMemcpyHostToDevice));
                CK(cudaMemcpy(b.dD, pd.data(), count * 8, cudaMemcpyHostToDevice));
                return b;
            };
            auto runBatched = [&](Batched& b, bool print) {
                int count = b.count, n = width / b.modules;
                cublasLtMatmulDesc_t op; LK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
                cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
                cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
                cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
                cublasLtMatrixLayout_t la, lb, lc;
                cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, n, k);
                cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, b.chunk, ld);
                cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, n, b.chunk, ld);
                if (b.alphas) {
                    cublasLtPointerMode_t pm = CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST;
                    int64_t stride = n;
                    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof(pm)));
                    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_ALPHA_VECTOR_BATCH_STRIDE, &stride, sizeof(stride)));
                }
                uint32_t mode = CUBLASLT_BATCH_MODE_POINTER_ARRAY;
                for (auto l : {la, lb, lc}) {
                    LK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
                    LK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_MODE, &mode, sizeof(mode)));
                }
                cublasLtMatmulPreference_t pref; cublasLtMatmulPreferenceCreate(&pref);
                cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof(wsz));
                if (b.noSplit) { uint32_t none = 0; LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &none, sizeof(none))); }
                cublasLtMatmulHeuristicResult_t h; int found = 0;
                cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &h, &found);
                if (hs != CUBLAS_STATUS_SUCCESS || !found) { if (print) printf("    chunk %d: no algorithm (status %d)\n", b.chunk, int(hs)); return false; }
                float one = 1, zero = 0;
                const void* alpha = b.alphas ? (const void*)b.dAlpha : (const void*)&one;
                cublasStatus_t ms = cublasLtMatmul(lt, op, alpha, b.dA, la, b.dB, lb, &zero, b.dD, lc, b.dD, lc, &h.algo, ws, wsz, st);
                if (ms != CUBLAS_STATUS_SUCCESS) { if (print) printf("    chunk %d: matmul status %d\n", b.chunk, int(ms)); return false; }
                cublasLtMatmulPreferenceDestroy(pref); cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb);
                cublasLtMatrixLayoutDestroy(lc); cublasLtMatmulDescDestroy(op);
                return true;
            };
            // Reference: dense into x[0], copied out; then the batched forms into x[0] and compared on own-slot columns.
            dense(xs[0]);
            CK(cudaMemcpyAsync(ref, xs[0], size_t(rows) * ld * 2, cudaMemcpyDeviceToDevice, st));
            CK(cudaStreamSynchronize(st));
            std::vector<bf16> hr(size_t(rows) * ld), hb(size_t(rows) * ld);
            CK(cudaMemcpy(hr.data(), ref, hr.size() * 2, cudaMemcpyDeviceToHost));
            float usDense = timeGraph([&](int i) { dense(xs[i % NX]); }, 8);
            float usMask = timeGraph([&](int i) { mask<<<rows, 256, 0, st>>>(xs[i % NX], ld, k, width, segs, rows / segs, 0.5f); }, 8);
            double xBytes = double(rows) * k * 2, floorUs = xBytes / 4.24e6;
            printf("r%-3d %-8s k %5d width %3d | dense 4 slots %7.2f us, its mask %6.2f us | x floor %6.2f us\n", rank, s.name, k, width, usDense, usMask, floorUs);
            struct Form { int chunk, modules; bool alphas, noSplit; int tail; };
            std::vector<Form> forms = {{512, 1, false, false, 0}, {64, 1, false, false, 0}, {64, 1, false, true, 0}, {64, 1, false, true, 37},
                                       {128, 1, false, true, 37}};
            if (s.perRank > 1) { forms.push_back({64, s.perRank, false, true, 0}); forms.push_back({64, s.perRank, false, true, 37}); }
            for (auto f : forms) {
                int chunk = f.chunk;
                std::vector<Batched> bs;
                for (int j = 0; j < NX; j++) bs.push_back(makeBatched(chunk, xs[j], f.modules, f.alphas, f.noSplit, f.tail));
                int segRows = rows / segs - f.tail;
                // Clear the extension columns, so that rows a form leaves out show as differences.
                CK(cudaMemset2DAsync(xs[0] + k, size_t(ld) * 2, 0, size_t(slotsInPool) * width * 2, rows, st));
                if (!runBatched(bs[0], true)) continue;
                CK(cudaStreamSynchronize(st));
                CK(cudaMemcpy(hb.data(), xs[0], hb.size() * 2, cudaMemcpyDeviceToHost));
                double maxDiff = 0; long mismatches = 0;
                for (int r = 0; r < rows; r++) {
                    int slot = r / (rows / segs);
                    if (r % (rows / segs) >= segRows) continue;
                    for (int c = 0; c < width; c++) {
                        size_t i = size_t(r) * ld + k + size_t(slot) * width + c;
                        double d = std::abs(__bfloat162float(hr[i]) * (f.alphas ? slotScale(slot) : 1.f) - __bfloat162float(hb[i]));
                        maxDiff = std::max(maxDiff, d); if (d > 0) mismatches++;
                    }
                }
                float us = timeGraph([&](int i) { runBatched(bs[i % NX], false); }, 8);
                printf("    batched, %4d instances of %3d rows x %3d columns%s%s%s: %7.2f us | own columns vs dense%s: max |diff| %.3g, %ld differ\n",
                       bs[0].count, chunk, width / f.modules, f.alphas ? ", alpha vectors" : "", f.noSplit ? ", no split-K" : "",
                       f.tail ? ", segments of 475 rows (last chunk overlaps)" : "", us,
                       f.alphas ? " times the slot's scaling" : "", maxDiff, mismatches);
                for (auto& b : bs) { cudaFree(b.dA); cudaFree(b.dB); cudaFree(b.dD); cudaFree(b.dAlpha); }
            }
            for (auto x : xs) cudaFree(x);
            cudaFree(a); cudaFree(ref);
            fflush(stdout);
        }
    }
    return 0;
}
