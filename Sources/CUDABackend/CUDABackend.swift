import Foundation
import LoomCore

/// The GPU backend: weights and activations in bf16 (fp32 accumulation in every kernel), dense
/// projections through cuBLASLt, the other ops as NVRTC-compiled kernels (`Kernels/*.cu`), all on
/// one non-blocking stream. Decode steps can replay CUDA graphs (`withGraph`).
///
/// Activations, the residual stream and the KV cache are bf16, as in transformers' bf16 inference:
/// norms, softmax and every dot product accumulate in fp32, results are rounded once to bf16.
/// The protocol's ops do not throw: a CUDA failure inside an op stops the process with the named
/// `CUDAError` (the context is unusable after a kernel fault anyway); `allocate` and uploads throw.
public final class CUDABackend: ComputeBackend {
    public let name = "cuda"
    public let weightDType = DType.bf16
    public let activationDType = DType.bf16

    let driver: Driver
    let nvrtc: NVRTC
    let blas: CuBLASLt
    let mainStream: OpaquePointer?
    /// `forkSideStream`'s stream: LoRA shrinks beside their base GEMMs.
    let sideStream: OpaquePointer?
    /// Whether launches go to the side stream (inside `forkSideStream`), and whether the side
    /// stream has work the main stream has not joined yet.
    var onSideStream = false, sideForked = false
    /// Where launches, memsets and copies go now.
    var stream: OpaquePointer? { onSideStream ? sideStream : mainStream }
    /// Adapter uploads (`uploadAsync`) run here, ordered against `stream` by events.
    let copyStream: OpaquePointer?
    /// Whether uploads were queued since the last `fenceUploads`, and the host buffers they read
    /// (kept alive until a `synchronize` proves the copies done).
    var uploadsQueued = false
    var uploadSources: [HostBuffer] = []
    let kernels: KernelLibrary
    let blasWorkspace: CUDAStorage
    /// `loraShrinkFused`'s tickets (one i32 per tile of a K-split launch), zero between launches.
    let loraTickets: CUDAStorage
    static let loraTicketCount = 1 << 17
    /// `argmax`'s per-row best keys (u64) and tickets (u32), zero between launches.
    let argmaxScratch: CUDAStorage
    static let argmaxRowCapacity = 1 << 14
    /// The device's primary context, made current on the calling thread by every entry point, so
    /// one thread may drive several backends (ranks of a tensor-parallel group) and each rank's
    /// thread drives its own.
    let context: OpaquePointer?
    /// The device ordinal this backend drives.
    public let ordinal: Int

    public let deviceName: String
    public let computeCapability: (major: Int, minor: Int)
    public let multiprocessorCount: Int
    public let totalMemory: Int

    /// When set, `uploadWeights` ignores the host bytes and fills each tensor on the device: random
    /// uniform values of standard deviation 0.02 for matrices, ones for vectors (norm gains, biases).
    /// Used for benchmarks of a named shape without a checkpoint.
    public var randomWeightSeed: UInt64?
    private var randomTensorCount: UInt64 = 0

    /// Scratch for split attention; old buffers stay alive because captured graphs may point at them.
    var attentionScratch: [CUDAStorage] = []
    /// Whether decode steps (one query row per sequence, head_dim 64 or 128, 3 to 8 query heads per
    /// KV head) run `loom_attention_decode` rather than the general kernel (`LOOM_DECODE_ATTENTION=0`: off).
    public let usesDecodeAttention = ProcessInfo.processInfo.environment["LOOM_DECODE_ATTENTION"] != "0"
    /// Whether that decode kernel is the tensor-core one (`loom_attention_decode_mma`) rather than
    /// the scalar one (`LOOM_DECODE_ATTENTION_MMA=0`); settable so checks run both.
    public var usesDecodeAttentionMMA = ProcessInfo.processInfo.environment["LOOM_DECODE_ATTENTION_MMA"] != "0"
    /// Whether that tensor-core kernel, where a cache page holds whole 16-token steps, looks up one
    /// slot a step and merges its warps four dims a thread (`loom_attention_decode_mma_paged`;
    /// `LOOM_DECODE_ATTENTION_PAGED=0`: the slot-a-token form); settable so checks run both.
    public var usesPagedDecodeAttention = ProcessInfo.processInfo.environment["LOOM_DECODE_ATTENTION_PAGED"] != "0"
    /// Functions whose dynamic shared-memory limit was raised above the default 48 KiB.
    var raisedSharedLimits: Set<String> = []
    /// GEMMs with at most this many rows of x (decode batches) run `loom_gemv` rather than
    /// cuBLASLt (`LOOM_GEMV_ROWS`, 0 to 4; 0 turns it off; settable so checks run both). On the
    /// H200 (session 27, Llama-3.1-8B shape, limits 4 to 1 in turn and reversed) 3 rows ran 703–707
    /// tok/s on it against 652–658 on cuBLASLt, 4 rows 819–820 against 862–873; with gemv.cu's launch
    /// bounds since, 4 rows run 866–880 on it against 876–887, level, so it stops at 3.
    public var maxGEMVRows = ProcessInfo.processInfo.environment["LOOM_GEMV_ROWS"].flatMap { Int($0) }.map { min(4, max(0, $0)) } ?? 3
    /// Into how many K-slices o and down are cut at decode batches (`residualSliceCount`): nil
    /// chooses, `LOOM_RESIDUAL_SLICES=n` fixes n (1: never cut); settable so checks run both paths.
    public var residualSlices = ProcessInfo.processInfo.environment["LOOM_RESIDUAL_SLICES"].flatMap { Int($0) }.map { max(1, $0) }
    /// Whether kernels launch with programmatic dependent launch (sm_90+, a CUDA 12.3 driver;
    /// `LOOM_PDL=0`: off): a kernel's blocks are scheduled while the previous kernel finishes and
    /// wait for it in `grid_wait`, and `loom_gemv` starts reading weights before it waits.
    public let usesProgrammaticLaunch: Bool
    var graphs: [String: OpaquePointer] = [:]
    /// With `recordsGraphSummaries` (benchmarks), each graph's kernels and edges by key, read at
    /// capture (`GraphEdges.summary`).
    public var recordsGraphSummaries = false
    public internal(set) var graphSummaries: [String: [String: Any]] = [:]
    var graphState = GraphState.eager
    public internal(set) var profiler: KernelProfiler?
    /// Every `tuneGEMMs` so far, in order.
    var gemmTuningRecords: [GEMMTuning] = []
    /// Decode attention splits a sequence until about this many blocks per multiprocessor run
    /// (when fewer than half as many (row, KV head) blocks exist): 2 for `loom_attention_decode`
    /// (on the H200 at batch 32, 6,253 tok/s against 6,017 with 4 and 5,895 with 8), 4 for the
    /// general kernel. LOOM_ATTENTION_BLOCKS_PER_SM sets it for both.
    public let attentionBlocksPerSM = ProcessInfo.processInfo.environment["LOOM_ATTENTION_BLOCKS_PER_SM"].flatMap { Int($0) }.map { max(1, $0) }
    /// How many heads of a row one `loom_rope_write_kv` block rotates (`LOOM_ROPE_HEADS`, default 8:
    /// at batch 32 on the H200, 192 blocks of 512 threads end 0.65 µs sooner than 1,536 of 64, and the
    /// decode attention after them starts 0.95 µs sooner); settable so checks run both.
    public var ropeHeadsPerBlock = ProcessInfo.processInfo.environment["LOOM_ROPE_HEADS"].flatMap { Int($0) }.map { max(1, $0) } ?? 8
    /// Whether add-and-norm without a delta over at most `clusterNormRows` rows (decode) runs on a
    /// cluster of 4 blocks a row (`loom_norm_lora` with no delta) rather than a block a row
    /// (`LOOM_NORM_CLUSTER=0`: a block; at batch 32 on the H200, 3.02 µs a launch against 3.28);
    /// settable so checks run both.
    public var usesClusterNorm = ProcessInfo.processInfo.environment["LOOM_NORM_CLUSTER"] != "0"
    /// The most rows `usesClusterNorm` takes (a decode step's); longer steps keep a block a row.
    public let clusterNormRows = 64
    /// Whether SiLU·mul without a delta takes 8 columns a thread (`loom_silu_mul_v8`; `LOOM_SILU_VEC=0`:
    /// one; at batch 32 on the H200, 224 blocks take 2.40 µs where 1,792 of one column a thread took
    /// 2.98); settable so checks run both.
    public var usesVectorSiLU = ProcessInfo.processInfo.environment["LOOM_SILU_VEC"] != "0"

    /// Whether LoRA expands over segments of 8 rows or more on average (a prefill's chunks) stream B
    /// with 16-byte loads (`loom_lora_expand_stream`, for pools whose rank is a multiple of 8;
    /// `LOOM_LORA_EXPAND_STREAM=0`: off).
    public let usesExpandStream = ProcessInfo.processInfo.environment["LOOM_LORA_EXPAND_STREAM"] != "0"

    /// Whether LoRA expands over many short segments (decode over many adapters) walk groups of
    /// segments per block (`loom_lora_expand_segments`; `LOOM_LORA_EXPAND_SEGMENTS=0`: off).
    public let usesExpandSegments = ProcessInfo.processInfo.environment["LOOM_LORA_EXPAND_SEGMENTS"] != "0"

    /// Whether `forkSideStream` uses the side stream (`LOOM_SIDE_STREAM=1`; off by default, its
    /// work then queues on the main stream in order). On the H200 it took csgmv decode with 8
    /// rank-16 adapters from 4,296 to 4,373 tok/s at batch 32 and from 181 to 193 at batch 1; the
    /// S-LoRA recipe at n = 8 gave 0.905 of its run without LoRA with it against 0.904 without.
    public let usesSideStream = ProcessInfo.processInfo.environment["LOOM_SIDE_STREAM"] == "1"

    /// The fewest segments of a decode-like plan whose LoRA shrinks stream through a fixed grid
    /// (`loom_lora_shrink_segments`; `LOOM_LORA_SHRINK_SEGMENTS=N`, 0: off; default 32).
    public let shrinkSegmentsFrom = ProcessInfo.processInfo.environment["LOOM_LORA_SHRINK_SEGMENTS"].flatMap { Int($0) }.map { max(0, $0) } ?? 32

    /// LoRA shrinks split K until about `shrinkBlocksPerSM(rowsPerBlock:)` blocks per multiprocessor
    /// have work: `LOOM_LORA_SHRINK_BLOCKS_PER_SM` for every tile, else 3 for the 16-row tiles and 2
    /// for the 64-row ones. On the H200 (session 19, `bench lora-kernels`, targets alternated on one
    /// machine, µs a layer 2 → 3): fused graph decode r64 at 256 tokens 81.9 → 74.7, 75.0, at 64
    /// tokens 57.3 → 54.2, 54.4, at 32 tokens 55.4 → 53.9, 53.8 (4: 65.4, 65.6); csgmv r64 at 256
    /// tokens 154.3 → 143.4. The 64-row tiles lost at 3: sgmv prefill r16 617.9 → 672.8, sgmv decode
    /// r64 at 256 tokens 236.6 → 250.5.
    public let loraShrinkBlocksPerSM = ProcessInfo.processInfo.environment["LOOM_LORA_SHRINK_BLOCKS_PER_SM"].flatMap { Int($0) }.map { max(1, $0) }

    func shrinkBlocksPerSM(rowsPerBlock: Int, deep: Bool = false) -> Int { loraShrinkBlocksPerSM ?? (rowsPerBlock <= 16 && !deep ? 3 : 2) }

    /// Fused shrinks of 16-row tiles in steps of at least this many rows take
    /// `loom_lora_shrink_fused_deep` (at most 2 blocks a multiprocessor, four steps of loads in
    /// flight; K split for 2 blocks a multiprocessor); shorter steps, whose blocks take short slices
    /// of K, keep `loom_lora_shrink_fused` (`LOOM_FUSED_SHRINK_DEEP_ROWS`, 0: never; default 64).
    /// On the H200 (session 20, `bench lora-kernels --lora-backend fused`, µs a layer, in turn on
    /// one machine, two machines): r64 at 256 tokens 74.2, 71.8 → 70.3, 69.9 (eager shrinks 63.2,
    /// 64.1 → 61.9) and 72.3, 73.7 → 71.4, 71.6 (65.1, 64.7 → 62.7); at 64 tokens and r16 at 256
    /// tokens no change beyond the spread; r64 at 32 tokens, with every step on this kernel, 53.7,
    /// 53.6 → 60.1, 59.7, hence the threshold. In the model (batch 32, 8 × r64) one pair, 4,853 and
    /// 4,884 tok/s: within the spread.
    public let fusedShrinkDeepRows = ProcessInfo.processInfo.environment["LOOM_FUSED_SHRINK_DEEP_ROWS"].flatMap { Int($0) }.map { max(0, $0) } ?? 64

    /// The fused shrink takes 64-row tiles for long segments of wide slots (prefill;
    /// `LOOM_FUSED_SHRINK_LARGE=0`: 16-row tiles throughout, for A/B runs).
    public let fusedShrinkLargeTiles = ProcessInfo.processInfo.environment["LOOM_FUSED_SHRINK_LARGE"] != "0"

    /// How the fused shrink runs on long segments (plans of steps no graph replays, such as prefill;
    /// `LOOM_FUSED_SHRINK_LONG`): `dense`, one cuBLASLt GEMM of x against the A of every slot from the
    /// step's first adapted one, then `loom_lora_shrink_fused_mask` keeps each row's own slot, scaled,
    /// where slots are 64 columns wide or more or segments average 256 rows or more; or `kernels`, the
    /// register-tiled shrink kernels over each segment throughout. The op checks run both. On the H200
    /// (`bench lora-kernels --lora-backend fused`, session 18, the forms alternated on one machine,
    /// µs a layer dense / kernels): 2048 rows over 4 adapters at rank 16 104, 97 / 104, 116 and at
    /// rank 64 223, 207 / 280, 269; 512 rows over 4 at rank 64 108, 103 / 142, 150; 256 rows over 8 at
    /// rank 64 106, 98 / 111, 116; but at rank 16 over segments of 32 to 128 rows the kernels win or
    /// tie (256 rows over 8: 56, 53 / 49, 48). At 256 decode rows of a graph step (every slot's
    /// columns) the dense form lost (r16 37 → 51 µs, r64 80 → 103); graph steps keep the kernels.
    /// A tiled GEMM of each row's own slot through a shared-memory ring (1afa928) lost to the dense
    /// form (r16 126–131 µs, r64 250–267).
    /// `batched` (session 29): where the step's rows come in runs of 64 or more per slot, each run's
    /// rows against its own slot's A only, by cuBLASLt's pointer-array batched GEMMs
    /// (`loraShrinkBatched`, laid out by `LoRAManager`), which write no other slot's columns, so no
    /// mask follows; other plans as `dense`. Standalone on the H200 (`scripts/gpu/probe/shrink.cu`,
    /// 2048 rows over 4 adapters, µs a launch in a graph, batched against dense + mask): rank 64
    /// q/k/v 11.6 against 19.0 + 4.6, o 10.6 against 11.2 + 3.3, gate/up 10.9 against 14.8 + 3.9, down
    /// 26.2 against 27.8 + 3.1; rank 16 within a microsecond of the dense GEMM alone, without its mask.
    public enum FusedShrinkForm: String, CaseIterable, Sendable { case dense, kernels, batched }
    public var fusedShrinkLong = FusedShrinkForm(rawValue: ProcessInfo.processInfo.environment["LOOM_FUSED_SHRINK_LONG"] ?? "") ?? .batched

    enum GraphState {
        case eager
        /// Inside `withGraph` for a new key: the first launch starts the capture.
        case armed
        case capturing
        /// Inside `withGraph` for a known key: launches are skipped, the graph replays at the end.
        case replaying
    }

    /// Opens the driver, NVRTC and cuBLASLt, takes device `ordinal`'s primary context and compiles
    /// (or reads from the cache) every kernel. Throws a `CUDAError` naming what is missing on a
    /// machine without a GPU or toolkit.
    public init(device ordinal: Int = 0) throws {
        let driver = try Driver()
        self.driver = driver
        try driver.check(driver.cuInit(0), "cuInit")
        var count: Int32 = 0
        try driver.check(driver.cuDeviceGetCount(&count), "cuDeviceGetCount")
        guard ordinal < Int(count) else { throw CUDAError.noDevice("device \(ordinal) requested, \(count) present") }
        var device: Int32 = 0
        try driver.check(driver.cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet")
        var context: OpaquePointer?
        try driver.check(driver.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain")
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        self.context = context
        self.ordinal = ordinal
        var nameBuffer = [CChar](repeating: 0, count: 256)
        try driver.check(driver.cuDeviceGetName(&nameBuffer, 256, device), "cuDeviceGetName")
        deviceName = String(decoding: nameBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        func attribute(_ a: Int32) throws -> Int {
            var v: Int32 = 0
            try driver.check(driver.cuDeviceGetAttribute(&v, a, device), "cuDeviceGetAttribute(\(a))")
            return Int(v)
        }
        computeCapability = (try attribute(CUAttribute.computeCapabilityMajor), try attribute(CUAttribute.computeCapabilityMinor))
        multiprocessorCount = try attribute(CUAttribute.multiprocessorCount)
        // A 12.3 driver or newer: graph capture of programmatic launches (decode graphs).
        var driverVersion: Int32 = 0
        _ = driver.cuDriverGetVersion(&driverVersion)
        usesProgrammaticLaunch = driver.cuLaunchKernelEx != nil && computeCapability.major >= 9 && driverVersion >= 12030
            && ProcessInfo.processInfo.environment["LOOM_PDL"] != "0"
        var free = 0, total = 0
        try driver.check(driver.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        totalMemory = total
        var s: OpaquePointer?
        try driver.check(driver.cuStreamCreate(&s, CUAttribute.streamNonBlocking), "cuStreamCreate")
        mainStream = s
        var side: OpaquePointer?
        try driver.check(driver.cuStreamCreate(&side, CUAttribute.streamNonBlocking), "cuStreamCreate(side)")
        sideStream = side
        var c: OpaquePointer?
        try driver.check(driver.cuStreamCreate(&c, CUAttribute.streamNonBlocking), "cuStreamCreate(copy)")
        copyStream = c
        nvrtc = try NVRTC()
        blas = try CuBLASLt()
        kernels = try KernelLibrary(driver: driver, nvrtc: nvrtc, major: computeCapability.major, minor: computeCapability.minor)
        blasWorkspace = try CUDAStorage(driver: driver, byteCount: blas.workspaceBytes)
        loraTickets = try CUDAStorage(driver: driver, byteCount: 4 * Self.loraTicketCount)
        try driver.check(driver.cuMemsetD8Async(loraTickets.pointer, 0, loraTickets.byteCount, mainStream), "cuMemsetD8Async(LoRA tickets)")
        argmaxScratch = try CUDAStorage(driver: driver, byteCount: 12 * Self.argmaxRowCapacity)
        try driver.check(driver.cuMemsetD8Async(argmaxScratch.pointer, 0, argmaxScratch.byteCount, mainStream), "cuMemsetD8Async(argmax scratch)")
    }

    public func memoryInfo() -> (free: Int, total: Int)? {
        activate()
        var free = 0, total = 0
        guard driver.cuMemGetInfo(&free, &total) == 0 else { return nil }
        return (free, total)
    }

    /// Versions, kernel-cache results and each kernel's registers, for reports.
    public var environment: [String: String] {
        var d: [String: String] = [
            "device": deviceName, "compute_capability": "\(computeCapability.major).\(computeCapability.minor)",
            "multiprocessors": "\(multiprocessorCount)", "memory_gib": String(format: "%.1f", Double(totalMemory) / 1_073_741_824),
            "nvrtc": nvrtc.version, "cublaslt": "\(blas.version)", "libcuda": driver.library.name,
            "libnvrtc": nvrtc.library.name, "libcublaslt": blas.library.name,
            "programmatic_launch": "\(usesProgrammaticLaunch)", "gemm_base_tiling": "\(blas.usesBaseTiling)",
        ]
        for (k, v) in kernels.report { d["kernel.\(k)"] = v }
        for (k, v) in kernels.registers { d["registers.\(k)"] = v }
        return d
    }

    /// Stops with the named error: the protocol's ops cannot throw.
    func fail(_ error: Error) -> Never {
        fatalError("\(error)")
    }

    /// Makes this backend's context current on the calling thread (a thread-local store in the driver).
    @inline(__always)
    func activate() {
        must(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent(device \(ordinal))")
    }

    @inline(__always)
    func must(_ status: Int32, _ call: @autoclosure () -> String) {
        if status != 0 { fail(driver.error(status, call())) }
    }

    // MARK: Memory

    public func allocate(_ shape: Shape, dtype: DType) throws -> DeviceTensor {
        precondition(graphState != .capturing, "allocate inside a captured graph step")
        activate()
        let storage = try CUDAStorage(driver: driver, byteCount: shape.count * dtype.byteCount)
        try driver.check(driver.cuMemsetD8Async(storage.pointer, 0, max(storage.byteCount, 256), stream), "cuMemsetD8Async")
        return DeviceTensor(storage: storage, shape: shape, dtype: dtype)
    }

    public func uploadWeights(_ source: UnsafeRawPointer, dtype: DType, shape: Shape) throws -> DeviceTensor {
        let t = try allocate(shape, dtype: .bf16)
        if let seed = randomWeightSeed {
            randomTensorCount += 1
            if shape.rank == 1 {
                fill(t, value: 1)
            } else {
                fillRandom(t, seed: seed &* 1_000_003 &+ randomTensorCount, standardDeviation: 0.02)
            }
            return t
        }
        try upload(source, dtype: dtype, count: shape.count, to: t.devicePointer)
        return t
    }

    /// Each part copied to its rows of the device tensor (bf16 parts straight from their host
    /// memory, an mmap of the checkpoint included); random weights read none of them.
    public func uploadWeights(stacking parts: [UnsafeRawBufferPointer], dtype: DType, shape: Shape) throws -> DeviceTensor {
        precondition(parts.reduce(0) { $0 + $1.count } == shape.count * dtype.byteCount, "uploadWeights: parts for \(shape) of \(dtype)")
        if randomWeightSeed != nil || parts.count == 1 {
            return try uploadWeights(parts.first?.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, dtype: dtype, shape: shape)
        }
        let t = try allocate(shape, dtype: .bf16)
        var offset = 0
        for part in parts where part.count > 0 {
            let count = part.count / dtype.byteCount
            try upload(part.baseAddress!, dtype: dtype, count: count, to: t.devicePointer + UInt64(offset * DType.bf16.byteCount))
            offset += count
        }
        return t
    }

    /// `count` elements of `dtype` from host memory into bf16 at `pointer`. The copy returns once
    /// the driver has staged pageable memory, so `source` may go after it.
    private func upload(_ source: UnsafeRawPointer, dtype: DType, count: Int, to pointer: UInt64) throws {
        if count == 0 { return }
        switch dtype {
        case .bf16:
            try driver.check(driver.cuMemcpyHtoDAsync(pointer, source, count * 2, stream), "cuMemcpyHtoDAsync(weights)")
            return
        case .i32:
            throw LoomError.unsupported("weights of dtype I32 are not supported")
        case .f32, .f16:
            break
        }
        var bits = [UInt16](repeating: 0, count: count)
        if dtype == .f32 {
            let f = source.assumingMemoryBound(to: Float.self)
            for i in 0..<count { bits[i] = HalfConversion.floatToBF16(f[i]) }
        } else {
            let h = source.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { bits[i] = HalfConversion.floatToBF16(HalfConversion.f16ToFloat(h[i])) }
        }
        try bits.withUnsafeBytes {
            try driver.check(driver.cuMemcpyHtoDAsync(pointer, $0.baseAddress!, count * 2, stream), "cuMemcpyHtoDAsync(weights)")
        }
    }

    public func copy(_ values: [Float], to tensor: DeviceTensor) {
        precondition(values.count <= tensor.count, "copying \(values.count) floats into \(tensor.shape)")
        if values.isEmpty { return }
        switch tensor.dtype {
        case .f32:
            upload(values, to: tensor)
        case .bf16:
            upload(values.map(HalfConversion.floatToBF16), to: tensor)
        case .f16:
            upload(values.map(HalfConversion.floatToF16), to: tensor)
        case .i32:
            upload(values.map { Int32($0) }, to: tensor)
        }
    }

    public func copy(_ values: [Int32], to tensor: DeviceTensor) {
        precondition(tensor.dtype == .i32 && values.count <= tensor.count, "copying \(values.count) ints into \(tensor.dtype) \(tensor.shape)")
        if values.isEmpty { return }
        upload(values, to: tensor)
    }

    public func copyRows(_ values: [Int32], width: Int, to tensor: DeviceTensor) {
        let pitch = tensor.shape.rowCount, rows = copyRowsCount(values, width: width, to: tensor)
        precondition(graphState != .capturing, "host copy inside a captured graph step: copies must come before the first kernel")
        if rows == 0 { return }
        activate()
        values.withUnsafeBytes {
            must(driver.memcpy2DAsync(from: .host($0.baseAddress!), sourcePitch: width * 4, toDevice: tensor.devicePointer,
                                      destinationPitch: pitch * 4, widthBytes: width * 4, height: rows, stream: stream),
                 "cuMemcpy2DAsync(host → device, \(width * 4) B × \(rows))")
        }
    }

    /// Queues a host-to-device copy on the stream. The driver stages pageable memory before it
    /// returns, so `values` may go away right after.
    private func upload<T>(_ values: [T], to tensor: DeviceTensor) {
        precondition(graphState != .capturing, "host copy inside a captured graph step: copies must come before the first kernel")
        activate()
        values.withUnsafeBytes {
            must(driver.cuMemcpyHtoDAsync(tensor.devicePointer, $0.baseAddress!, $0.count, stream), "cuMemcpyHtoDAsync(\($0.count) bytes)")
        }
    }

    public func download(_ tensor: DeviceTensor) -> [Float] {
        precondition(graphState == .eager, "download inside a graph step")
        let count = tensor.count
        if count == 0 { return [] }
        activate()
        var bytes = [UInt8](repeating: 0, count: count * tensor.dtype.byteCount)
        bytes.withUnsafeMutableBytes {
            must(driver.cuMemcpyDtoHAsync($0.baseAddress!, tensor.devicePointer, $0.count, stream), "cuMemcpyDtoHAsync")
        }
        synchronize()
        return bytes.withUnsafeBytes { raw in
            switch tensor.dtype {
            case .f32: return Array(raw.bindMemory(to: Float.self))
            case .bf16: return raw.bindMemory(to: UInt16.self).map(HalfConversion.bf16ToFloat)
            case .f16: return raw.bindMemory(to: UInt16.self).map(HalfConversion.f16ToFloat)
            case .i32: return raw.bindMemory(to: Int32.self).map { Float($0) }
            }
        }
    }

    /// The elements of an `i32` tensor (token ids from `argmax`).
    public func downloadInts(_ tensor: DeviceTensor) -> [Int32] {
        precondition(tensor.dtype == .i32 && graphState == .eager)
        var values = [Int32](repeating: 0, count: tensor.count)
        if values.isEmpty { return values }
        activate()
        values.withUnsafeMutableBytes {
            must(driver.cuMemcpyDtoHAsync($0.baseAddress!, tensor.devicePointer, $0.count, stream), "cuMemcpyDtoHAsync")
        }
        synchronize()
        return values
    }

    public func synchronize() {
        activate()
        precondition(!onSideStream, "synchronize inside forkSideStream")
        joinSideStream()
        must(driver.cuStreamSynchronize(mainStream), "cuStreamSynchronize")
        if !uploadsQueued { uploadSources.removeAll() }
    }
}
