// Kernel timelines without Nsight Systems: a CUDA injection library (CUDA_INJECTION64_PATH) that
// turns on CUPTI's activity trace of kernels (CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, which keeps
// kernels concurrent and records each kernel node of a replayed CUDA graph) and writes one line a
// kernel to $LOOM_TRACE_OUT (default loom-trace.txt):
//   start end stream graphId graphNodeId correlationId gridX,gridY,gridZ block name
// (start and end in ns of the GPU clock; the kernels of one graph launch share its correlationId).
// scripts/gpu/trace/summary.py reads it. Built by scripts/gpu/trace/build.sh against CUPTI 13.0 from
// PyPI; only the few declarations used are repeated here (cupti_activity.h, CUpti_ActivityKernel10).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef int CUptiResult;
typedef void* CUcontext;
typedef struct { uint32_t kind; } CUpti_Activity;
enum { CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL = 10, CUPTI_ACTIVITY_FLAG_FLUSH_FORCED = 1 };

// The head of CUpti_ActivityKernel10 (packed, 8-byte aligned), through graphId.
typedef struct __attribute__((__packed__)) __attribute__((aligned(8))) {
    uint32_t kind;
    uint8_t cacheConfig, sharedMemoryConfig;
    uint16_t registersPerThread;
    uint32_t partitionedGlobalCacheRequested, partitionedGlobalCacheExecuted;
    uint64_t start, end, completed;
    uint32_t deviceId, contextId, streamId;
    int32_t gridX, gridY, gridZ, blockX, blockY, blockZ;
    int32_t staticSharedMemory, dynamicSharedMemory;
    uint32_t localMemoryPerThread, localMemoryTotal, correlationId;
    int64_t gridId;
    const char* name;
    void* reserved0;
    uint64_t queued, submitted;
    uint8_t launchType, isSharedMemoryCarveoutRequested, sharedMemoryCarveoutRequested, padding;
    uint32_t sharedMemoryExecuted;
    uint64_t graphNodeId;
    uint32_t shmemLimitConfig;
    uint32_t graphId;
} Kernel;

CUptiResult cuptiActivityRegisterCallbacks(void (*requested)(uint8_t**, size_t*, size_t*),
                                           void (*completed)(CUcontext, uint32_t, uint8_t*, size_t, size_t));
CUptiResult cuptiActivityEnable(uint32_t kind);
CUptiResult cuptiActivityGetNextRecord(uint8_t* buffer, size_t validBytes, CUpti_Activity** record);
CUptiResult cuptiActivityFlushAll(uint32_t flag);
CUptiResult cuptiGetResultString(CUptiResult result, const char** text);

static FILE* out;
static unsigned long long records, dropped;

static void requested(uint8_t** buffer, size_t* size, size_t* maxRecords) {
    *size = 16 << 20;
    *buffer = aligned_alloc(8, *size);
    *maxRecords = 0;
}

static void completed(CUcontext context, uint32_t stream, uint8_t* buffer, size_t size, size_t valid) {
    (void)context; (void)stream; (void)size;
    CUpti_Activity* record = NULL;
    while (cuptiActivityGetNextRecord(buffer, valid, &record) == 0) {
        if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
        const Kernel* k = (const Kernel*)record;
        if (!out) { dropped++; continue; }
        fprintf(out, "%llu %llu %u %u %llu %u %d,%d,%d %d %s\n", (unsigned long long)k->start, (unsigned long long)k->end,
                k->streamId, k->graphId, (unsigned long long)k->graphNodeId, k->correlationId, k->gridX, k->gridY, k->gridZ,
                k->blockX, k->name ? k->name : "?");
        records++;
    }
    free(buffer);
}

static void finish(void) {
    cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    if (out) {
        fclose(out);
        out = NULL;
    }
    fprintf(stderr, "loom_trace: %llu kernels written, %llu dropped\n", records, dropped);
}

static int check(CUptiResult r, const char* what) {
    if (r == 0) return 0;
    const char* text = "?";
    cuptiGetResultString(r, &text);
    fprintf(stderr, "loom_trace: %s failed: %s\n", what, text);
    return 1;
}

// Called by the CUDA driver at cuInit when CUDA_INJECTION64_PATH names this library.
int InitializeInjection(void) {
    const char* path = getenv("LOOM_TRACE_OUT");
    out = fopen(path ? path : "loom-trace.txt", "w");
    if (!out) {
        perror("loom_trace: fopen");
        return 0;
    }
    if (check(cuptiActivityRegisterCallbacks(requested, completed), "cuptiActivityRegisterCallbacks")) return 0;
    if (check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityEnable(CONCURRENT_KERNEL)")) return 0;
    atexit(finish);
    return 1;
}
