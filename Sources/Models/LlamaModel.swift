import Foundation
import LoomCore
import ModelFormats

/// The Llama-family decoder (Llama 2/3, Mistral, Qwen2), written once against `ComputeBackend`.
///
/// Buffers for activations and step metadata are allocated once for `maxTokens` rows and
/// `maxSequences` sequences; `forward` allocates nothing on the backend.
public final class LlamaModel {
    public let config: ModelConfig
    public let backend: ComputeBackend
    public let weights: LlamaWeights
    public let maxTokens: Int
    public let maxSequences: Int
    public let maxBlocksPerSequence: Int

    private let inverseFrequencies: DeviceTensor
    private let ws: Workspace

    struct Workspace {
        var tokens, positions, slotMapping, logitsRows, queryStarts, contextLengths, blockTables: DeviceTensor
        var residual, normed, qkv, attention, projected, gateUp, activated, logitsInput, finalNormed, logits: DeviceTensor
    }

    public convenience init(directory: String, backend: ComputeBackend, maxTokens: Int = 512, maxSequences: Int = 64, maxBlocksPerSequence: Int? = nil, blockSize: Int = 16) throws {
        let config = try ModelConfig.load(directory: directory)
        let store = try WeightStore(directory: directory)
        let weights = try LlamaWeights.load(from: store, config: config, backend: backend)
        try self.init(config: config, weights: weights, backend: backend, maxTokens: maxTokens, maxSequences: maxSequences,
                      maxBlocksPerSequence: maxBlocksPerSequence ?? (config.maxPositionEmbeddings + blockSize - 1) / blockSize)
    }

    public init(config: ModelConfig, weights: LlamaWeights, backend: ComputeBackend, maxTokens: Int, maxSequences: Int, maxBlocksPerSequence: Int) throws {
        self.config = config
        self.backend = backend
        self.weights = weights
        self.maxTokens = maxTokens
        self.maxSequences = maxSequences
        self.maxBlocksPerSequence = maxBlocksPerSequence
        let inv = config.ropeInverseFrequencies()
        inverseFrequencies = try backend.allocate(Shape(inv.count), dtype: .f32)
        backend.copy(inv, to: inverseFrequencies)
        let f = backend.activationDType
        func ints(_ n: Int...) throws -> DeviceTensor { try backend.allocate(Shape(n), dtype: .i32) }
        func acts(_ n: Int...) throws -> DeviceTensor { try backend.allocate(Shape(n), dtype: f) }
        let c = config, n = maxTokens
        ws = Workspace(
            tokens: try ints(n), positions: try ints(n), slotMapping: try ints(n), logitsRows: try ints(n),
            queryStarts: try ints(maxSequences + 1), contextLengths: try ints(maxSequences),
            blockTables: try ints(maxSequences, maxBlocksPerSequence),
            residual: try acts(n, c.hiddenSize), normed: try acts(n, c.hiddenSize), qkv: try acts(n, c.qkvSize),
            attention: try acts(n, c.qSize), projected: try acts(n, c.hiddenSize),
            gateUp: try acts(n, 2 * c.intermediateSize), activated: try acts(n, c.intermediateSize),
            logitsInput: try acts(n, c.hiddenSize), finalNormed: try acts(n, c.hiddenSize), logits: try acts(n, c.vocabSize))
    }

    /// Runs one step and returns the logits `[batch.logitsRows.count, vocab]` (a view of a
    /// workspace buffer, valid until the next call).
    public func forward(_ batch: ForwardBatch, cache: KVCache, lora: LoRAApplier? = nil) -> DeviceTensor {
        let n = batch.tokenCount, numSeqs = batch.sequenceCount
        precondition(n > 0 && n <= maxTokens, "a step of \(n) tokens exceeds the \(maxTokens)-token workspace")
        precondition(numSeqs <= maxSequences, "a step of \(numSeqs) sequences exceeds \(maxSequences)")
        precondition(batch.positions.count == n && batch.slotMapping.count == n && batch.queryStarts.count == numSeqs + 1)
        let c = config, b = backend
        b.copy(batch.tokens, to: ws.tokens)
        b.copy(batch.positions, to: ws.positions)
        b.copy(batch.slotMapping, to: ws.slotMapping)
        b.copy(batch.logitsRows, to: ws.logitsRows)
        b.copy(batch.queryStarts, to: ws.queryStarts)
        b.copy(batch.contextLengths, to: ws.contextLengths)
        var maxQuery = 0
        for s in 0..<numSeqs {
            let table = batch.blockTables[s]
            precondition(table.count <= maxBlocksPerSequence, "a block table of \(table.count) exceeds \(maxBlocksPerSequence)")
            b.copy(table, to: ws.blockTables.rows(s, 1).reshaped(Shape(maxBlocksPerSequence)))
            maxQuery = max(maxQuery, Int(batch.queryStarts[s + 1] - batch.queryStarts[s]))
        }
        let metadata = AttentionMetadata(
            queryStarts: ws.queryStarts.rows(numSeqs + 1), contextLengths: ws.contextLengths.rows(numSeqs),
            blockTables: ws.blockTables.rows(numSeqs), numSequences: numSeqs, maxQueryLength: maxQuery,
            maxContextLength: Int(batch.contextLengths.max() ?? 0), blockSize: cache.blockSize)

        let residual = ws.residual.rows(n), normed = ws.normed.rows(n), qkv = ws.qkv.rows(n)
        let attention = ws.attention.rows(n), projected = ws.projected.rows(n)
        let gateUp = ws.gateUp.rows(n), activated = ws.activated.rows(n)
        b.embed(tokens: ws.tokens.rows(n), table: weights.embedding, out: residual)
        for (i, layer) in weights.layers.enumerated() {
            if i == 0 {
                b.rmsNorm(residual, weight: layer.inputNorm, eps: c.rmsNormEps, out: normed)
            } else {
                b.addRMSNorm(residual: residual, projected, weight: layer.inputNorm, eps: c.rmsNormEps, out: normed)
            }
            b.linear(normed, weight: layer.qkv, bias: layer.qkvBias, out: qkv)
            lora?.apply(layer: i, group: .qkv, input: normed, output: qkv)
            b.rope(qkv: qkv, positions: ws.positions.rows(n), inverseFrequencies: inverseFrequencies,
                   numHeads: c.numHeads, numKVHeads: c.numKVHeads, headDim: c.headDim)
            b.writeKV(qkv: qkv, kCache: cache.keys[i], vCache: cache.values[i], slotMapping: ws.slotMapping.rows(n),
                      numHeads: c.numHeads, numKVHeads: c.numKVHeads, headDim: c.headDim)
            b.attention(qkv: qkv, kCache: cache.keys[i], vCache: cache.values[i], out: attention, metadata: metadata,
                        numHeads: c.numHeads, numKVHeads: c.numKVHeads, headDim: c.headDim)
            b.linear(attention, weight: layer.o, bias: nil, out: projected)
            lora?.apply(layer: i, group: .o, input: attention, output: projected)
            b.addRMSNorm(residual: residual, projected, weight: layer.postAttentionNorm, eps: c.rmsNormEps, out: normed)
            b.linear(normed, weight: layer.gateUp, bias: nil, out: gateUp)
            lora?.apply(layer: i, group: .gateUp, input: normed, output: gateUp)
            b.siluMul(gateUp, out: activated)
            b.linear(activated, weight: layer.down, bias: nil, out: projected)
            lora?.apply(layer: i, group: .down, input: activated, output: projected)
        }
        let m = batch.logitsRows.count
        b.gatherRows(residual, rows: ws.logitsRows.rows(m), out: ws.logitsInput.rows(m))
        b.gatherRows(projected, rows: ws.logitsRows.rows(m), out: ws.normed.rows(m))
        b.addRMSNorm(residual: ws.logitsInput.rows(m), ws.normed.rows(m), weight: weights.finalNorm, eps: c.rmsNormEps, out: ws.finalNormed.rows(m))
        let logits = ws.logits.rows(m)
        b.linear(ws.finalNormed.rows(m), weight: weights.lmHead, bias: nil, out: logits)
        return logits
    }
}
