import Foundation
import LoomCore
import ModelFormats

/// The Llama-family decoder (Llama 2/3, Mistral, Qwen2), written once against `ComputeBackend`.
///
/// With tensor parallelism the model holds one `ModelRank` per device (Megatron sharding, see
/// `ModelRank`); `forward` drives them all, one thread each, and returns rank 0's full logits.
/// Buffers are allocated once for `maxTokens` rows and `maxSequences` sequences.
public final class LlamaModel {
    /// The whole model's config (each rank computes with `TensorShard.localConfig`).
    public let config: ModelConfig
    public let ranks: [ModelRank]
    public let maxTokens: Int
    public let maxSequences: Int
    public let maxBlocksPerSequence: Int
    private let workers: RankWorkers?

    /// Rank 0's backend: where the logits of `forward` live.
    public var backend: ComputeBackend { ranks[0].backend }
    public var tensorParallelSize: Int { ranks.count }
    /// Rank 0's weights.
    public var weights: LlamaWeights { ranks[0].weights }

    public convenience init(directory: String, backend: ComputeBackend, maxTokens: Int = 512, maxSequences: Int = 64, maxBlocksPerSequence: Int? = nil, blockSize: Int = 16) throws {
        try self.init(directory: directory, backends: [backend], communicators: [nil], maxTokens: maxTokens, maxSequences: maxSequences,
                      maxBlocksPerSequence: maxBlocksPerSequence, blockSize: blockSize)
    }

    /// Loads a model split over `backends.count` ranks, with one communicator per rank.
    /// `progress(loaded, total)` counts layers over all ranks as they load.
    public convenience init(directory: String, backends: [ComputeBackend], communicators: [Communicator?], maxTokens: Int = 512, maxSequences: Int = 64, maxBlocksPerSequence: Int? = nil, blockSize: Int = 16,
                            progress: ((_ loaded: Int, _ total: Int) -> Void)? = nil) throws {
        let config = try ModelConfig.load(directory: directory)
        let store = try WeightStore(directory: directory)
        try TensorShard.validate(config, size: backends.count)
        let total = config.numLayers * backends.count
        let weights = try backends.indices.map { r in
            try LlamaWeights.load(from: store, config: config, backend: backends[r], shard: TensorShard(rank: r, size: backends.count),
                                  progress: { progress?(r * config.numLayers + $0, total) })
        }
        try self.init(config: config, weights: weights, backends: backends, communicators: communicators, maxTokens: maxTokens,
                      maxSequences: maxSequences,
                      maxBlocksPerSequence: maxBlocksPerSequence ?? (config.maxPositionEmbeddings + blockSize - 1) / blockSize)
    }

    public convenience init(config: ModelConfig, weights: LlamaWeights, backend: ComputeBackend, maxTokens: Int, maxSequences: Int, maxBlocksPerSequence: Int) throws {
        try self.init(config: config, weights: [weights], backends: [backend], communicators: [nil], maxTokens: maxTokens,
                      maxSequences: maxSequences, maxBlocksPerSequence: maxBlocksPerSequence)
    }

    public init(config: ModelConfig, weights: [LlamaWeights], backends: [ComputeBackend], communicators: [Communicator?], maxTokens: Int, maxSequences: Int, maxBlocksPerSequence: Int) throws {
        precondition(weights.count == backends.count && communicators.count == backends.count && !backends.isEmpty)
        precondition(backends.count == 1 || communicators.allSatisfy { $0 != nil }, "tensor parallelism needs a communicator per rank")
        self.config = config
        self.maxTokens = maxTokens
        self.maxSequences = maxSequences
        self.maxBlocksPerSequence = maxBlocksPerSequence
        ranks = try backends.indices.map { r in
            try ModelRank(config: config, shard: TensorShard(rank: r, size: backends.count), weights: weights[r], backend: backends[r],
                          communicator: communicators[r], maxTokens: maxTokens, maxSequences: maxSequences,
                          maxBlocksPerSequence: maxBlocksPerSequence)
        }
        workers = backends.count > 1 ? RankWorkers(count: backends.count - 1) : nil
    }

    /// Runs one step on every rank and returns the logits `[batch.logitsRows.count, vocab]` on
    /// rank 0 (a view of a workspace buffer, valid until the next call).
    /// `around`, if given, wraps each rank's share of the step on that rank's thread (e.g. a per-rank
    /// CUDA graph: `{ r, body in backends[r].withGraph(key: k, body) }`).
    public func forward(_ batch: ForwardBatch, cache: KVCache, lora: LoRAApplier? = nil,
                        around: ((Int, () -> DeviceTensor) -> DeviceTensor)? = nil) -> DeviceTensor {
        precondition(cache.shards.count == ranks.count, "a KV cache of \(cache.shards.count) shards for \(ranks.count) ranks")
        let n = batch.tokenCount, numSeqs = batch.sequenceCount
        precondition(n > 0 && n <= maxTokens, "a step of \(n) tokens exceeds the \(maxTokens)-token workspace")
        precondition(numSeqs <= maxSequences, "a step of \(numSeqs) sequences exceeds \(maxSequences)")
        precondition(batch.positions.count == n && batch.slotMapping.count == n && batch.queryStarts.count == numSeqs + 1)
        for table in batch.blockTables {
            precondition(table.count <= maxBlocksPerSequence, "a block table of \(table.count) exceeds \(maxBlocksPerSequence)")
        }
        let step = { (r: Int) -> DeviceTensor in
            let body = { self.ranks[r].forward(batch, cache: cache.shards[r], lora: lora) }
            return around.map { $0(r, body) } ?? body()
        }
        guard let workers else {
            return step(0)
        }
        var result: DeviceTensor?
        workers.run { r in
            let logits = step(r)
            if r == 0 { result = logits }
        }
        return result!
    }
}

/// Threads that run ranks 1 … n of a step while the caller runs rank 0; collectives need every
/// rank running at once, so these are dedicated threads, not a shared pool.
final class RankWorkers: @unchecked Sendable {
    /// What the threads share; they hold it, not the workers, so they can outlive them and exit.
    private final class Shared: @unchecked Sendable {
        let start: [DispatchSemaphore]
        let done = DispatchSemaphore(value: 0)
        var job: ((Int) -> Void)?
        var isStopped = false

        init(count: Int) { start = (0..<count).map { _ in DispatchSemaphore(value: 0) } }
    }

    private let shared: Shared

    init(count: Int) {
        let shared = Shared(count: count)
        self.shared = shared
        for i in 0..<count {
            let thread = Thread {
                while true {
                    shared.start[i].wait()
                    if shared.isStopped { return }
                    shared.job?(i + 1)
                    shared.done.signal()
                }
            }
            thread.name = "loom-rank-\(i + 1)"
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    deinit {
        shared.isStopped = true
        for s in shared.start { s.signal() }
    }

    /// Runs `body(rank)` for every rank and returns when all are done.
    func run(_ body: @escaping (Int) -> Void) {
        shared.job = body
        for s in shared.start { s.signal() }
        body(0)
        for _ in shared.start { shared.done.wait() }
        shared.job = nil
    }
}

extension LlamaModel: ProjectionWeights {
    public var numLayers: Int { config.numLayers }

    public func projection(rank: Int, layer: Int, group: ProjectionGroup) -> DeviceTensor {
        ranks[rank].weights.layers[layer][keyPath: LayerWeights.weight(of: group)]
    }

    public func replaceProjection(rank: Int, layer: Int, group: ProjectionGroup, with weight: DeviceTensor) {
        let old = projection(rank: rank, layer: layer, group: group)
        precondition(weight.shape[0] == old.shape[0] && weight.shape[1] >= old.shape[1] && weight.dtype == old.dtype,
                     "replaceProjection: \(weight.shape) for \(old.shape)")
        ranks[rank].weights.layers[layer][keyPath: LayerWeights.weight(of: group)] = weight
    }
}

extension LayerWeights {
    /// The weight a projection group multiplies by.
    static func weight(of group: ProjectionGroup) -> WritableKeyPath<LayerWeights, DeviceTensor> {
        switch group {
        case .qkv: \.qkv
        case .o: \.o
        case .gateUp: \.gateUp
        case .down: \.down
        }
    }
}
