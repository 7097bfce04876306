/// Per-step attention metadata, as device tensors of `i32` so a device backend can keep them in
/// persistent buffers (and replay captured graphs). nano-vllm's `Context`.
public struct AttentionMetadata {
    /// `[numSeqs + 1]`: sequence `s` owns query rows `queryStarts[s] ..< queryStarts[s+1]`.
    public var queryStarts: DeviceTensor
    /// `[numSeqs]`: KV length of each sequence after this step (cached + new tokens).
    public var contextLengths: DeviceTensor
    /// `[numSeqs, maxBlocksPerSequence]`: KV block ids of each sequence.
    public var blockTables: DeviceTensor
    public var numSequences: Int
    public var maxQueryLength: Int
    public var maxContextLength: Int
    public var blockSize: Int

    public init(
        queryStarts: DeviceTensor, contextLengths: DeviceTensor, blockTables: DeviceTensor,
        numSequences: Int, maxQueryLength: Int, maxContextLength: Int, blockSize: Int
    ) {
        self.queryStarts = queryStarts
        self.contextLengths = contextLengths
        self.blockTables = blockTables
        self.numSequences = numSequences
        self.maxQueryLength = maxQueryLength
        self.maxContextLength = maxContextLength
        self.blockSize = blockSize
    }
}

/// A LoRA delta that the op reading a GEMM's output adds to it (`--lora-backend fused` at decode):
/// that GEMM's weight carried every slot's A below its own `outOffsets.last!` rows, so each output
/// row `i` holds, after those base columns, `xa[(s·stack + m)·R + j] = A[s][m·R + j] · x[i]` for
/// every slot `s` (summed over the slices where the GEMM left K-slices). The consumer adds to base
/// column `c` of module `m` (`outOffsets[m] ..< outOffsets[m + 1]`), for the row's slot
/// `s = rowSlots[i]` of rank `r = slotRanks[s] > 0`,
/// `scalings[s·stack + m] · Σ_{j < r} xa[(s·stack + m)·R + j] · B[s][c][j]`, each product rounded
/// as PEFT's bf16 `lora_B(lora_A(x)) · scaling` rounds, before what the op does with the column.
public struct LoRADelta {
    /// `[slots, totalOut, R]`.
    public var b: DeviceTensor
    /// `[slots, stack]` f32.
    public var scalings: DeviceTensor
    /// `[≥ n]` i32: each row's slot (a slot of rank 0 adds nothing).
    public var rowSlots: DeviceTensor
    /// `[slots]` i32.
    public var slotRanks: DeviceTensor
    /// The first base column of each stacked module, then the base width.
    public var outOffsets: [Int]

    public init(b: DeviceTensor, scalings: DeviceTensor, rowSlots: DeviceTensor, slotRanks: DeviceTensor, outOffsets: [Int]) {
        self.b = b
        self.scalings = scalings
        self.rowSlots = rowSlots
        self.slotRanks = slotRanks
        self.outOffsets = outOffsets
    }

    public var stack: Int { outOffsets.count - 1 }
    /// The slots' rank stride R.
    public var rank: Int { b.shape[2] }
    /// The base columns; `xa` starts there.
    public var width: Int { outOffsets.last! }
}

/// The per-step LoRA plan as the kernels see it: token rows permuted so that rows of one slot are
/// contiguous, then cut into segments, each served by one slot of the device pool. Built by the
/// `LoRA` target (`sgmv`: one segment per slot; `csgmv`: chunks of at most `--max-lora-chunk-size`).
public struct LoRAKernelPlan {
    /// `[n]`: plan position `p` holds token row `permutation[p]`.
    public var permutation: DeviceTensor
    /// `[numSegments + 1]`: segment `g` covers plan positions `segmentStarts[g] ..< segmentStarts[g+1]`.
    public var segmentStarts: DeviceTensor
    /// `[numSegments]`: the slot of each segment.
    public var segmentSlots: DeviceTensor
    /// `[numSlots]`: each slot's rank (0: no adapter, its segments cost nothing).
    public var slotRanks: DeviceTensor
    public var numSegments: Int
    /// The largest rank among the slots of this batch's segments.
    public var maxRank: Int
    /// A bound on `numSegments` that depends only on the row count, the plan kind and the slot
    /// count, so a captured CUDA graph sized by it replays with any mix of adapters:
    /// `segmentStarts` holds `segmentCapacity + 1` entries, those past `numSegments` equal to the
    /// row count (empty segments).
    public var segmentCapacity: Int
    /// A bound on any segment's length, fixed like `segmentCapacity` (rows for `sgmv`, the chunk
    /// size for `csgmv`).
    public var maxSegmentLength: Int
    /// Whether every shrink output of this step was zeroed before the step (one buffer per layer
    /// and group), so a device adding slices of K into them need not zero each first.
    public var outputsZeroed = false
    /// A slot below which no segment of this step is adapted (0 where the host does not bound it:
    /// graph steps replay with other plans). A fused shrink may leave the columns of lower slots as
    /// they are (zero).
    public var firstAdaptedSlot = 0

    public init(permutation: DeviceTensor, segmentStarts: DeviceTensor, segmentSlots: DeviceTensor, slotRanks: DeviceTensor,
                numSegments: Int, maxRank: Int, segmentCapacity: Int? = nil, maxSegmentLength: Int? = nil, outputsZeroed: Bool = false,
                firstAdaptedSlot: Int = 0) {
        self.permutation = permutation
        self.segmentStarts = segmentStarts
        self.segmentSlots = segmentSlots
        self.slotRanks = slotRanks
        self.numSegments = numSegments
        self.maxRank = maxRank
        self.segmentCapacity = segmentCapacity ?? numSegments
        self.maxSegmentLength = maxSegmentLength ?? permutation.shape[0]
        self.outputsZeroed = outputsZeroed
        self.firstAdaptedSlot = firstAdaptedSlot
    }
}

/// Consecutive token rows `row ..< row + count` of a step that use one adapted slot.
public struct LoRARowRun: Equatable, Sendable {
    public var row, count, slot: Int
    public init(row: Int, count: Int, slot: Int) {
        self.row = row
        self.count = count
        self.slot = slot
    }

    /// The runs of `rowSlots` whose slot has a rank above 0.
    public static func runs(of rowSlots: [Int32], slotRanks: [Int32]) -> [LoRARowRun] {
        var runs: [LoRARowRun] = []
        guard !rowSlots.isEmpty else { return runs }
        var start = 0
        for i in 1...rowSlots.count where i == rowSlots.count || rowSlots[i] != rowSlots[start] {
            let slot = Int(rowSlots[start])
            if slotRanks[slot] > 0 { runs.append(LoRARowRun(row: start, count: i - start, slot: slot)) }
            start = i
        }
        return runs
    }
}

/// A fused LoRA shrink (`loraShrinkFused`'s result) as batched GEMMs over device arrays of
/// pointers, each instance `rows` rows of x against one slot's A (or one module's rows of it):
/// `out[row ..< row + rows][column ..< column + columns] = scaling · x[row ..< row + rows] · A[rows of
/// the slot and module]ᵀ`. `pointers` (i32, pairs of a 64-bit device address) holds the instances'
/// A addresses, then their x addresses, then their out addresses; each `Call` is a range of
/// instances with one width and one scaling (one batched GEMM). Laid out by
/// `LoRAManager.batchedShrink` for steps that no graph replays; the instances of a run longer than
/// a multiple of `rows` overlap, and write the same values twice.
public struct LoRABatchedShrink {
    public struct Call: Equatable, Sendable {
        public var first, count, columns: Int
        public var scaling: Float
        public init(first: Int, count: Int, columns: Int, scaling: Float) {
            self.first = first
            self.count = count
            self.columns = columns
            self.scaling = scaling
        }
    }
    public var instances: Int
    /// The rows of x each instance takes.
    public var rows: Int
    /// K, and the elements between consecutive rows of x and of out.
    public var k: Int, rowStride: Int
    public var calls: [Call]
    public var pointers: DeviceTensor

    public init(instances: Int, rows: Int, k: Int, rowStride: Int, calls: [Call], pointers: DeviceTensor) {
        self.instances = instances
        self.rows = rows
        self.k = k
        self.rowStride = rowStride
        self.calls = calls
        self.pointers = pointers
    }
}

/// The operations a model needs, coarse enough that a device backend runs each as one or two kernels.
///
/// Activations are `f32` on the CPU backend; weights are stored in `weightDType`. Shapes use rows
/// for tokens: `x` is `[n, features]`. Each op's comment gives its meaning as plain Swift.
public protocol ComputeBackend: AnyObject {
    var name: String { get }
    /// The dtype in which weights are kept on this backend.
    var weightDType: DType { get }
    /// The dtype of activations and of the KV cache.
    var activationDType: DType { get }

    /// A new zero-filled tensor.
    func allocate(_ shape: Shape, dtype: DType) throws -> DeviceTensor
    /// Uploads `shape.count` elements of `dtype` from host memory, converting to `weightDType`.
    func uploadWeights(_ source: UnsafeRawPointer, dtype: DType, shape: Shape) throws -> DeviceTensor
    /// Row-major parts stacked by rows into one tensor of `shape` (their bytes, all of `dtype`, hold
    /// `shape.count` elements together): `uploadWeights` of their concatenation, which a backend may
    /// upload part by part without building it on the host.
    func uploadWeights(stacking parts: [UnsafeRawBufferPointer], dtype: DType, shape: Shape) throws -> DeviceTensor
    /// Copies host floats into `tensor` (any float dtype), converting as needed.
    func copy(_ values: [Float], to tensor: DeviceTensor)
    /// Copies host integers into an `i32` tensor.
    func copy(_ values: [Int32], to tensor: DeviceTensor)
    /// Copies rows of `width` host integers into the first `width` columns of an `i32` tensor's
    /// first `values.count / width` rows, in one copy (`tensor[r][0 ..< width] = values[r·width ..< (r + 1)·width]`).
    func copyRows(_ values: [Int32], width: Int, to tensor: DeviceTensor)
    /// The tensor's elements as host floats.
    func download(_ tensor: DeviceTensor) -> [Float]

    /// `out[i] = table[tokens[i]]`.
    func embed(tokens: DeviceTensor, table: DeviceTensor, out: DeviceTensor)
    /// `out[i] = x[i] / sqrt(mean(x[i]²) + eps) * weight`. `out` may be wider than x (`[n, ≥ d]`):
    /// its rows' first d columns are written (a fused GEMM's wide input, `LoRAApplier.inputBuffer`);
    /// so for `addRMSNorm`'s, `attention`'s and `siluMul`'s. The norms' `out` (and `copyColumns`')
    /// may also be copies of such rows, `[copies, n, ≥ d]`, each written (split extensions' inputs,
    /// `DeviceTensor.outputCopies`); `attention`'s and `siluMul`'s may not.
    func rmsNorm(_ x: DeviceTensor, weight: DeviceTensor, eps: Float, out: DeviceTensor)
    /// `residual[i] += x[i]; out[i] = rmsNorm(residual[i])`.
    /// With `lora`, `x` `[n, ≥ d]` is a fused GEMM's output, its delta added to `x[i][0 ..< d]` first.
    func addRMSNorm(residual: DeviceTensor, _ x: DeviceTensor, weight: DeviceTensor, eps: Float, out: DeviceTensor, lora: LoRADelta?)
    /// `out[i] = weight · x[i] + bias` with `weight` `[outFeatures, inFeatures]`, or wider: a weight
    /// `[outFeatures, k]` with `k > inFeatures` (a LoRA-extended weight, `loraShrinkFused`) is read in
    /// its first `inFeatures` columns. `bias` may cover only the first of `out`'s columns.
    func linear(_ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor?, out: DeviceTensor)
    /// `linear` of a weight of `baseRows` rows widened by more (`ConsumerLoRA.weight`: the slots'
    /// A): the same result, and a backend may launch it as it would the base rows alone, so that the
    /// few extra rows do not change how the GEMM is tiled.
    func linear(_ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor?, out: DeviceTensor, tiledAs baseRows: Int)
    /// `linear` (no bias) cut into `S = out.shape[0]` slices of K, left unsummed: with `k = K / S`
    /// (K = x's width), `out[s][i] = x[i][s·k ..< (s+1)·k] · weight[·][s·k ..< (s+1)·k]ᵀ`, `out`
    /// `[S, n, outFeatures]` f32. `addRMSNorm(residual:slices:…)` sums the slices: a device then
    /// runs one GEMM over S·(output tiles) blocks instead of a split-K GEMM and its reduction kernel.
    func linearSlices(_ x: DeviceTensor, weight: DeviceTensor, out: DeviceTensor)
    /// `addRMSNorm` of `x = Σ_s slices[s]` (`slices` `[S, n, d]` f32, from `linearSlices`), the sum
    /// rounded to the activation dtype first, as `linear` rounds its output. With `lora`, `slices` is
    /// `[S, n, ≥ d]` (a fused GEMM's), its delta added to the sum's first `d` columns.
    func addRMSNorm(residual: DeviceTensor, slices: DeviceTensor, weight: DeviceTensor, eps: Float, out: DeviceTensor, lora: LoRADelta?)
    /// Into how many slices of K (`linearSlices`) this backend would rather cut a GEMM of `rows` rows,
    /// `outFeatures` outputs and K = `inFeatures` whose output only goes into `addRMSNorm`; 1: `linear`.
    func residualSliceCount(rows: Int, outFeatures: Int, inFeatures: Int) -> Int
    /// Rotates q `[n, heads·d]` and k `[n, kvHeads·d]` of the stacked projection output `qkv`
    /// `[n, (heads + 2·kvHeads)·d]` in place by `positions[i]·invFreq` (rotate-half layout, as
    /// transformers' Llama), then writes row i's rotated k and its v into the paged caches
    /// `[numBlocks·blockSize, kvHeads·d]` at `slotMapping[i]` (`block·blockSize + offset`); a negative
    /// slot writes no cache row. With `lora`, `qkv` is a fused GEMM's output `[n, ≥ (heads + 2·kvHeads)·d]`
    /// and its delta is added to q, k and v (in `qkv` too) first.
    func ropeAndWriteKV(qkv: DeviceTensor, positions: DeviceTensor, inverseFrequencies: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor,
                        slotMapping: DeviceTensor, numHeads: Int, numKVHeads: Int, headDim: Int, lora: LoRADelta?)
    /// Causal attention of each sequence's query rows (q from `qkv`) over its paged KV; `out` is `[n, ≥ heads·d]`
    /// (its rows' first heads·d columns: a fused GEMM's wide input may take them).
    func attention(qkv: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor, out: DeviceTensor, metadata: AttentionMetadata, numHeads: Int, numKVHeads: Int, headDim: Int)
    /// `out[i][j] = silu(gateUp[i][j]) * gateUp[i][I + j]`, `gateUp` `[n, 2I]`; with `lora`, a fused
    /// GEMM's output `[n, ≥ 2I]` whose delta is added to gate and up first.
    func siluMul(_ gateUp: DeviceTensor, out: DeviceTensor, lora: LoRADelta?)
    /// `out[j] = x[rows[j]]`.
    func gatherRows(_ x: DeviceTensor, rows: DeviceTensor, out: DeviceTensor)
    /// `out[i] = x[i]` in `out`'s dtype (f32 or the activation dtype), rounded to nearest even.
    func convert(_ x: DeviceTensor, out: DeviceTensor)

    /// LoRA shrink: for each segment with slot `s` of rank `r > 0`, each stacked module `m` and plan
    /// position `p` of the segment: `out[p][m·R ..< m·R + r] = A[s][m·R ..< m·R + r] · x[permutation[p]]`,
    /// `A` `[slots, stack·R, in]`, `out` `[n, stack·R]` in plan order (f32 on every backend: a device
    /// adds slices of K into it). Other entries (j ≥ r, rank-0 positions) may be left or zeroed:
    /// expand never reads them.
    func loraShrink(_ x: DeviceTensor, a: DeviceTensor, out: DeviceTensor, plan: LoRAKernelPlan, stack: Int)
    /// LoRA expand: for each segment with slot `s` of rank `r > 0`, stacked module `m` with output
    /// columns `outOffsets[m] ..< outOffsets[m+1]` and plan position `p`:
    /// `out[permutation[p]][col] += scalings[s·stack + m] · B[s][col][0..<r] · shrunk[p][m·R ..< m·R + r]`,
    /// `B` `[slots, totalOut, R]`, `scalings` `[slots, stack]` f32.
    func loraExpand(_ shrunk: DeviceTensor, b: DeviceTensor, out: DeviceTensor, plan: LoRAKernelPlan, scalings: DeviceTensor, outOffsets: [Int])

    /// Fused LoRA shrink: completes the input of a GEMM whose weight carries the slots' B in extra
    /// columns, so that the GEMM adds every row's LoRA delta. `out` `[n, ≥ K + (s + 1)·stack·R]` for
    /// every adapted slot `s` of the plan (a step may cut the columns after its last one) holds x in
    /// its first K columns (written there by the op that made it), `A` `[slots, stack·R, K]`,
    /// `scalings` `[slots, stack]` f32; for each segment with slot `s` of rank `r > 0`, stacked module
    /// `m`, `j < r` and plan position `p` of the segment:
    /// `out[permutation[p]][K + (s·stack + m)·R + j] = scalings[s·stack + m] · A[s][m·R + j] · x[permutation[p]]`,
    /// rounded to `out`'s dtype. Other columns past K are zero before the call (zeroed once per step)
    /// and after it: a backend may compute every slot's columns and zero those of other slots.
    /// `scratch` (f32, `[n, stack·R]`) is zero before the call and left zero after it.
    /// With `moduleStride` > 0 (split extensions, `linearStacked`) each module has its own copy of
    /// the input, `moduleStride` elements after the previous one (x in each copy's first K columns),
    /// and its own extension: module `m`'s value goes to `out[m·moduleStride][permutation[p]][K + s·R + j]`.
    func loraShrinkFused(_ out: DeviceTensor, a: DeviceTensor, scalings: DeviceTensor, plan: LoRAKernelPlan, stack: Int,
                         scratch: DeviceTensor, moduleStride: Int)
    /// Whether `loraShrinkBatched` runs batched shrinks (so that a caller lays them out).
    var runsBatchedShrinks: Bool { get }
    /// The device address of a tensor's first element, for arrays of pointers that kernels read
    /// (`LoRABatchedShrink`); nil on a backend without them.
    func deviceAddress(of tensor: DeviceTensor) -> UInt64?
    /// `loraShrinkFused` as laid out in `shrink` (its out columns of other slots left as they are,
    /// zero), where this backend runs batched shrinks; returns false, having queued nothing, where
    /// it does not.
    func loraShrinkBatched(_ shrink: LoRABatchedShrink) -> Bool
    /// `linear` of `S` modules of equal width `m` stacked in one weight (`[S·m, ≥ k]`), each over its
    /// own input: `out[i][s·m + j] = x[s][i] · weight[s·m + j]ᵀ`, `x` `[S, n, k]`, `out` `[n, S·m]`.
    /// (`--lora-backend fused` with split extensions: gate and up each read x beside their own shrink output.)
    func linearStacked(_ x: DeviceTensor, weight: DeviceTensor, out: DeviceTensor)
    /// `out[i][column ..< column + x.features] = x[i]`: `x`'s rows into some columns of `out`'s rows
    /// (of each copy's, for copies `[copies, n, width]`, `DeviceTensor.outputCopies`).
    func copyColumns(_ x: DeviceTensor, into out: DeviceTensor, column: Int)

    /// Host memory that `uploadAsync` copies from: page-locked on a device, so the copy engine reads
    /// it while kernels run; plain memory on the CPU.
    func allocateHost(byteCount: Int) throws -> HostBuffer
    /// Copies `rows` rows of `rowBytes` bytes, the first at byte `offset` of `source` and each `pitch`
    /// bytes after the last, into the rows of `destination` from element `column` on (raw bytes of
    /// its dtype; rows `destination.shape.rowCount` elements apart). On a device the copy runs on a copy stream,
    /// after the kernels queued so far (which may still read the old contents), and the kernels
    /// queued after the next `fenceUploads()` wait for it; nothing waits on the host.
    func uploadAsync(from source: HostBuffer, offset: Int, pitch: Int, to destination: DeviceTensor, column: Int, rows: Int, rowBytes: Int)
    /// Makes the kernels queued from now on wait for the uploads queued so far.
    func fenceUploads()

    /// Queues `body`'s work on a second stream that starts after the work queued so far, so that it
    /// may run beside the work queued next (a LoRA shrink beside its base GEMM, which reads the same
    /// input); `joinSideStream` makes the work queued after it wait for `body`'s. Work on the side
    /// stream must not write what the main stream's work between the two reads or writes. Returns
    /// false, without running `body`, where there is one stream (the CPU) or where the fork would
    /// cost more than it gives (CUDA outside graph capture, or without `LOOM_SIDE_STREAM=1`): the
    /// caller then queues the work in its usual place.
    func forkSideStream(_ body: () -> Void) -> Bool
    /// Makes the work queued from now on wait for the side stream's (nothing when none was forked).
    func joinSideStream()

    /// Greedy sampling: `out[i] = argmax(logits[i])`, the first index among ties (`out` i32).
    func argmax(_ logits: DeviceTensor, out: DeviceTensor)

    /// Sets every element of `t` to zero (a memset on a device, queued like a kernel).
    func zero(_ t: DeviceTensor)

    /// Waits for all queued work.
    func synchronize()

    /// The device's free and total memory in bytes, or nil for host memory (the CPU backend).
    func memoryInfo() -> (free: Int, total: Int)?

    /// Whether the calling step replays a captured graph: its launches are skipped (only its host
    /// copies, which come first, do anything), so a model step may return once they are queued.
    var isReplayingGraph: Bool { get }
}

extension ComputeBackend {
    public func memoryInfo() -> (free: Int, total: Int)? { nil }

    public var isReplayingGraph: Bool { false }

    public func addRMSNorm(residual: DeviceTensor, _ x: DeviceTensor, weight: DeviceTensor, eps: Float, out: DeviceTensor) {
        addRMSNorm(residual: residual, x, weight: weight, eps: eps, out: out, lora: nil)
    }

    public func addRMSNorm(residual: DeviceTensor, slices: DeviceTensor, weight: DeviceTensor, eps: Float, out: DeviceTensor) {
        addRMSNorm(residual: residual, slices: slices, weight: weight, eps: eps, out: out, lora: nil)
    }

    /// The concatenation built on the host, then `uploadWeights`.
    public func uploadWeights(stacking parts: [UnsafeRawBufferPointer], dtype: DType, shape: Shape) throws -> DeviceTensor {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(shape.count * dtype.byteCount)
        for part in parts { bytes += part }
        precondition(bytes.count == shape.count * dtype.byteCount, "uploadWeights: \(bytes.count) bytes for \(shape) of \(dtype)")
        return try bytes.withUnsafeBytes { try uploadWeights($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, dtype: dtype, shape: shape) }
    }

    public func ropeAndWriteKV(qkv: DeviceTensor, positions: DeviceTensor, inverseFrequencies: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor,
                               slotMapping: DeviceTensor, numHeads: Int, numKVHeads: Int, headDim: Int) {
        ropeAndWriteKV(qkv: qkv, positions: positions, inverseFrequencies: inverseFrequencies, kCache: kCache, vCache: vCache,
                       slotMapping: slotMapping, numHeads: numHeads, numKVHeads: numKVHeads, headDim: headDim, lora: nil)
    }

    /// `linear` of a GEMM input (`LoRAApplier.gemmInput`): `linearStacked` where it holds a copy
    /// for each module (`[S, n, k]`, split extensions; no bias), else `linear`.
    public func linear(gemmInput x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor?, out: DeviceTensor) {
        guard x.shape.rank == 3 else { return linear(x, weight: weight, bias: bias, out: out) }
        precondition(bias == nil, "linear: a bias on a GEMM of stacked inputs \(x.shape)")
        linearStacked(x, weight: weight, out: out)
    }

    public func loraShrinkFused(_ out: DeviceTensor, a: DeviceTensor, scalings: DeviceTensor, plan: LoRAKernelPlan, stack: Int,
                                scratch: DeviceTensor) {
        loraShrinkFused(out, a: a, scalings: scalings, plan: plan, stack: stack, scratch: scratch, moduleStride: 0)
    }

    public func siluMul(_ gateUp: DeviceTensor, out: DeviceTensor) {
        siluMul(gateUp, out: out, lora: nil)
    }

    public var runsBatchedShrinks: Bool { false }

    public func deviceAddress(of tensor: DeviceTensor) -> UInt64? { nil }

    public func loraShrinkBatched(_ shrink: LoRABatchedShrink) -> Bool { false }

    public func linear(_ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor?, out: DeviceTensor, tiledAs baseRows: Int) {
        linear(x, weight: weight, bias: bias, out: out)
    }

    /// The most K-slices `residualSliceCount` asks for over steps of 1 ... `rows` rows: a buffer for
    /// them holds that many `[rows, outFeatures]` f32 slices.
    public func maxResidualSliceCount(rows: Int, outFeatures: Int, inFeatures: Int) -> Int {
        (1...max(rows, 1)).map { residualSliceCount(rows: $0, outFeatures: outFeatures, inFeatures: inFeatures) }.max()!
    }

    /// A view `[S, n, outFeatures]` of the f32 `buffer` for the K-slices of a GEMM of `n` rows
    /// (`linearSlices`), where this backend cuts K (`residualSliceCount` > 1) and `buffer` has room;
    /// nil: one `linear`.
    public func residualSlices(in buffer: DeviceTensor?, rows n: Int, outFeatures: Int, inFeatures: Int) -> DeviceTensor? {
        guard let buffer else { return nil }
        let count = residualSliceCount(rows: n, outFeatures: outFeatures, inFeatures: inFeatures)
        guard count > 1, count * n * outFeatures <= buffer.count else { return nil }
        return buffer.rows(count * n * outFeatures).reshaped(Shape(count, n, outFeatures))
    }

    public func forkSideStream(_ body: () -> Void) -> Bool { false }

    public func joinSideStream() {}

    /// The rows `copyRows` copies, after checking its arguments.
    public func copyRowsCount(_ values: [Int32], width: Int, to tensor: DeviceTensor) -> Int {
        let rows = width > 0 ? values.count / width : 0
        precondition(tensor.dtype == .i32 && width <= tensor.shape.rowCount && values.count == rows * width && rows <= tensor.shape[0],
                     "copying \(values.count) ints in rows of \(width) into \(tensor.dtype) \(tensor.shape)")
        return rows
    }

    /// `uploadAsync` into whole rows, from their first element.
    public func uploadAsync(from source: HostBuffer, offset: Int, pitch: Int, to destination: DeviceTensor, rows: Int, rowBytes: Int) {
        uploadAsync(from: source, offset: offset, pitch: pitch, to: destination, column: 0, rows: rows, rowBytes: rowBytes)
    }
}

/// Host memory owned by a backend (`ComputeBackend.allocateHost`), freed with the last reference.
public final class HostBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let byteCount: Int
    private let release: (UnsafeMutableRawPointer) -> Void

    public init(pointer: UnsafeMutableRawPointer, byteCount: Int, release: @escaping (UnsafeMutableRawPointer) -> Void) {
        self.pointer = pointer
        self.byteCount = byteCount
        self.release = release
    }

    deinit { release(pointer) }
}

