import Foundation
import LoomCore

/// One rank of the model: its weight shard, workspace and communicator.
///
/// Megatron sharding: q/k/v and gate/up are split by output columns (each rank owns heads and a
/// slice of the intermediate width), o and down by input rows with an all-reduce of their
/// outputs; KV heads are split, or replicated when ranks outnumber them; the vocabulary is split
/// by rows for the embedding (tokens of other ranks read a zero row, then an all-reduce) and the
/// LM head (then an all-gather of the logits).
///
/// The row-parallel GEMMs write f32, the all-reduce sums f32 and one conversion rounds the sum to
/// the activation dtype: where one GPU rounds its full-K GEMM output once, the ranks do too, so in
/// bf16 tp > 1 differs from tp = 1 only by the order of f32 additions.
public final class ModelRank {
    public let config: ModelConfig
    public let local: ModelConfig
    public let shard: TensorShard
    public let backend: ComputeBackend
    public internal(set) var weights: LlamaWeights
    public let communicator: Communicator?
    private let inverseFrequencies: DeviceTensor
    private let ws: Workspace
    private let maxBlocksPerSequence: Int
    private var localTokens: [Int32] = []
    /// The step's block tables, packed for `copyRows`.
    private var blockTableRows: [Int32] = []
    /// The step metadata's copies into `ws`, skipped where a buffer already holds the values.
    private var uploads = UploadCache()

    struct Workspace {
        var tokens, positions, slotMapping, logitsRows, queryStarts, contextLengths, blockTables: DeviceTensor
        var residual, normed, qkv, attention, projected, gateUp, activated, finalNormed, localLogits, logits: DeviceTensor
        /// `[n, hidden]` f32: a row-parallel GEMM's partial sums, all-reduced (tp > 1 with activations
        /// narrower than f32 only).
        var reduced: DeviceTensor?
        /// f32, room for `[S, n, hidden]`: o's or down's K-slices, left for the next `addRMSNorm` to
        /// sum (tp = 1, at most `maxSlicedRows` rows, where the backend asks for slices).
        var slices: DeviceTensor?
    }

    /// Slices pay at decode batches, where a GEMM has too few output tiles for the multiprocessors;
    /// beyond this their buffer would grow with the batch for nothing.
    static let maxSlicedRows = 256

    init(config: ModelConfig, shard: TensorShard, weights: LlamaWeights, backend: ComputeBackend, communicator: Communicator?,
         maxTokens n: Int, maxSequences: Int, maxBlocksPerSequence: Int) throws {
        self.config = config
        self.shard = shard
        self.local = shard.localConfig(config)
        self.backend = backend
        self.weights = weights
        self.communicator = communicator
        self.maxBlocksPerSequence = maxBlocksPerSequence
        let inv = config.ropeInverseFrequencies()
        inverseFrequencies = try backend.allocate(Shape(inv.count), dtype: .f32)
        backend.copy(inv, to: inverseFrequencies)
        let f = backend.activationDType
        func ints(_ d: Int...) throws -> DeviceTensor { try backend.allocate(Shape(d), dtype: .i32) }
        func acts(_ d: Int...) throws -> DeviceTensor { try backend.allocate(Shape(d), dtype: f) }
        let c = local
        let lmRows = weights.lmHead.shape[0]
        // Logits stay f32 on every backend: bf16 logits would cost ~0.1 in logprobs and flip near-ties.
        func floats(_ d: Int...) throws -> DeviceTensor { try backend.allocate(Shape(d), dtype: .f32) }
        let localLogits = try floats(n, lmRows)
        let slicedRows = min(n, Self.maxSlicedRows)
        let maxSlices = communicator != nil ? 1 : [c.qSize, c.intermediateSize].map {
            backend.maxResidualSliceCount(rows: slicedRows, outFeatures: c.hiddenSize, inFeatures: $0)
        }.max()!
        ws = Workspace(
            tokens: try ints(n), positions: try ints(n), slotMapping: try ints(n), logitsRows: try ints(n),
            queryStarts: try ints(maxSequences + 1), contextLengths: try ints(maxSequences),
            blockTables: try ints(maxSequences, maxBlocksPerSequence),
            residual: try acts(n, c.hiddenSize), normed: try acts(n, c.hiddenSize), qkv: try acts(n, c.qkvSize),
            attention: try acts(n, c.qSize), projected: try acts(n, c.hiddenSize),
            gateUp: try acts(n, 2 * c.intermediateSize), activated: try acts(n, c.intermediateSize),
            finalNormed: try acts(n, c.hiddenSize),
            localLogits: localLogits,
            logits: shard.size > 1 ? try floats(n, config.vocabSize) : localLogits,
            reduced: shard.size > 1 && f != .f32 ? try floats(n, c.hiddenSize) : nil,
            slices: maxSlices > 1 ? try floats(maxSlices * slicedRows * c.hiddenSize) : nil)
    }

    /// `out = x · weightᵀ` of a row-parallel module, summed over the ranks.
    private func rowParallelLinear(_ x: DeviceTensor, weight: DeviceTensor, out: DeviceTensor) {
        guard let communicator, let reduced = ws.reduced?.rows(x.shape[0]) else {
            backend.linear(x, weight: weight, bias: nil, out: out)
            communicator?.allReduceSum(out)
            return
        }
        backend.linear(x, weight: weight, bias: nil, out: reduced)
        communicator.allReduceSum(reduced)
        backend.convert(reduced, out: out)
    }

    /// This rank's share of one step; returns the full logits (gathered when sharded).
    func forward(_ batch: ForwardBatch, cache: KVCache.Shard, lora: LoRAApplier?) -> DeviceTensor {
        let n = batch.tokenCount, numSeqs = batch.sequenceCount
        let c = local, b = backend, rank = shard.rank
        if shard.size > 1 {
            // Token ids outside this rank's vocabulary slice read the zero row after it.
            let vocab = shard.vocab(config), zeroRow = Int32(shard.vocabPerRank(config))
            localTokens.removeAll(keepingCapacity: true)
            for t in batch.tokens {
                localTokens.append(vocab.contains(Int(t)) ? t - Int32(vocab.lowerBound) : zeroRow)
            }
            uploads.copy(localTokens, to: ws.tokens, on: b)
        } else {
            uploads.copy(batch.tokens, to: ws.tokens, on: b)
        }
        uploads.copy(batch.positions, to: ws.positions, on: b)
        uploads.copy(batch.slotMapping, to: ws.slotMapping, on: b)
        uploads.copy(batch.logitsRows, to: ws.logitsRows, on: b)
        uploads.copy(batch.queryStarts, to: ws.queryStarts, on: b)
        uploads.copy(batch.contextLengths, to: ws.contextLengths, on: b)
        // The block tables in one copy: rows as wide as the longest, zero-padded (attention reads
        // a row only up to its context length). A copy per sequence cost the host and the copy
        // engine one operation each per step.
        let width = batch.blockTables.prefix(numSeqs).reduce(1) { max($0, $1.count) }
        blockTableRows.removeAll(keepingCapacity: true)
        var maxQuery = 0
        for s in 0..<numSeqs {
            blockTableRows += batch.blockTables[s]
            blockTableRows += repeatElement(0, count: width - batch.blockTables[s].count)
            maxQuery = max(maxQuery, Int(batch.queryStarts[s + 1] - batch.queryStarts[s]))
        }
        uploads.copyRows(blockTableRows, width: width, to: ws.blockTables, on: b)
        // A replayed graph step needs only the copies above: walking the layers would build every
        // launch's arguments on the host, with the device idle (about 330 launches a step).
        if b.isReplayingGraph { return ws.logits.rows(batch.logitsRows.count) }
        let metadata = AttentionMetadata(
            queryStarts: ws.queryStarts.rows(numSeqs + 1), contextLengths: ws.contextLengths.rows(numSeqs),
            blockTables: ws.blockTables.rows(numSeqs), numSequences: numSeqs, maxQueryLength: maxQuery,
            maxContextLength: Int(batch.contextLengths.max() ?? 0), blockSize: cache.blockSize)

        let residual = ws.residual.rows(n), normed = ws.normed.rows(n), qkv = ws.qkv.rows(n)
        let attention = ws.attention.rows(n), projected = ws.projected.rows(n)
        let gateUp = ws.gateUp.rows(n), activated = ws.activated.rows(n)
        b.embed(tokens: ws.tokens.rows(n), table: weights.embedding, out: residual)
        // What the next `addRMSNorm` adds into the residual: the last row-parallel output (`projected`,
        // or a fused group's wider output), or its K-slices; with the fused group's delta.
        var pendingX = projected, pendingSlices: DeviceTensor?, pendingDelta: LoRADelta?
        func addRMSNorm(_ weight: DeviceTensor, out: DeviceTensor) {
            if let slices = pendingSlices {
                b.addRMSNorm(residual: residual, slices: slices, weight: weight, eps: c.rmsNormEps, out: out, lora: pendingDelta)
            } else {
                b.addRMSNorm(residual: residual, pendingX, weight: weight, eps: c.rmsNormEps, out: out, lora: pendingDelta)
            }
            (pendingX, pendingSlices, pendingDelta) = (projected, nil, nil)
        }
        communicator?.allReduceSum(residual)
        for (i, layer) in weights.layers.enumerated() {
            // A column-parallel group's GEMM of `x` into `out`; returns its output and the delta the
            // op reading it adds (fused LoRA at decode), or `out` after the adapters' deltas.
            func columnParallel(_ group: ProjectionGroup, _ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor?,
                                out: DeviceTensor) -> (DeviceTensor, LoRADelta?) {
                if let f = lora?.consumerLoRA(rank: rank, layer: i, group: group) {
                    b.linear(x, weight: f.weight, bias: bias, out: f.output, tiledAs: f.delta.width)
                    return (f.output, f.delta)
                }
                lora?.shrinkAhead(rank: rank, layer: i, group: group, input: x)
                b.linear(gemmInput: lora?.gemmInput(rank: rank, layer: i, group: group, input: x) ?? x, weight: weight, bias: bias, out: out)
                lora?.apply(rank: rank, layer: i, group: group, input: x, output: out)
                return (out, nil)
            }
            // o or down: into `projected`, or K-slices left unsummed where nothing else adds into
            // the output (no unfused adapter), or a fused group's output for the norm to add its delta.
            func rowParallel(_ group: ProjectionGroup, _ x: DeviceTensor, weight: DeviceTensor) {
                if let f = lora?.consumerLoRA(rank: rank, layer: i, group: group) {
                    if let slices = f.slices {
                        b.linearSlices(x, weight: f.weight, out: slices)
                        pendingSlices = slices
                    } else {
                        b.linear(x, weight: f.weight, bias: nil, out: f.output, tiledAs: f.delta.width)
                        pendingX = f.output
                    }
                    pendingDelta = f.delta
                    return
                }
                lora?.shrinkAhead(rank: rank, layer: i, group: group, input: x)
                let input = lora?.gemmInput(rank: rank, layer: i, group: group, input: x) ?? x
                let adds = lora?.addsToOutput(rank: rank, layer: i, group: group) ?? false
                if !adds, let slices = b.residualSlices(in: ws.slices, rows: n, outFeatures: weight.shape[0], inFeatures: input.shape.rowCount) {
                    b.linearSlices(input, weight: weight, out: slices)
                    pendingSlices = slices
                    return
                }
                rowParallelLinear(input, weight: weight, out: projected)
                lora?.apply(rank: rank, layer: i, group: group, input: x, output: projected)
            }
            // Each group's input where its GEMM reads it: a fused group's wide input, or the usual buffer.
            func input(_ group: ProjectionGroup, _ buffer: DeviceTensor) -> DeviceTensor {
                lora?.inputBuffer(rank: rank, layer: i, group: group) ?? buffer
            }
            let qkvInput = input(.qkv, normed)
            if i == 0 {
                b.rmsNorm(residual, weight: layer.inputNorm, eps: c.rmsNormEps, out: qkvInput)
            } else {
                addRMSNorm(layer.inputNorm, out: qkvInput)
            }
            let (qkvOut, qkvDelta) = columnParallel(.qkv, qkvInput, weight: layer.qkv, bias: layer.qkvBias, out: qkv)
            b.ropeAndWriteKV(qkv: qkvOut, positions: ws.positions.rows(n), inverseFrequencies: inverseFrequencies, kCache: cache.keys[i],
                             vCache: cache.values[i], slotMapping: ws.slotMapping.rows(n), numHeads: c.numHeads, numKVHeads: c.numKVHeads,
                             headDim: c.headDim, lora: qkvDelta)
            let oInput = input(.o, attention)
            b.attention(qkv: qkvOut, kCache: cache.keys[i], vCache: cache.values[i], out: oInput, metadata: metadata,
                        numHeads: c.numHeads, numKVHeads: c.numKVHeads, headDim: c.headDim)
            rowParallel(.o, oInput, weight: layer.o)
            let gateUpInput = input(.gateUp, normed)
            addRMSNorm(layer.postAttentionNorm, out: gateUpInput)
            let (gateUpOut, gateUpDelta) = columnParallel(.gateUp, gateUpInput, weight: layer.gateUp, bias: nil, out: gateUp)
            let downInput = input(.down, activated)
            b.siluMul(gateUpOut, out: downInput, lora: gateUpDelta)
            rowParallel(.down, downInput, weight: layer.down)
        }
        // The final norm over every row (the last down's delta and slices are per row), then the rows that want logits.
        let m = batch.logitsRows.count
        addRMSNorm(weights.finalNorm, out: normed)
        b.gatherRows(normed, rows: ws.logitsRows.rows(m), out: ws.finalNormed.rows(m))
        b.linear(ws.finalNormed.rows(m), weight: weights.lmHead, bias: nil, out: ws.localLogits.rows(m))
        if let communicator {
            communicator.allGather(ws.localLogits.rows(m), out: ws.logits.rows(m))
        }
        return ws.logits.rows(m)
    }
}
