import LoomCore

/// The paged KV cache: per rank and layer, K and V of `[numBlocks · blockSize, kvHeads · headDim]`
/// (the rank's KV heads). Block ids are shared by all ranks.
public final class KVCache {
    public struct Shard {
        public let keys: [DeviceTensor]
        public let values: [DeviceTensor]
        public let blockSize: Int
    }

    public let numBlocks: Int
    public let blockSize: Int
    public let shards: [Shard]
    /// Rank 0's tensors.
    public var keys: [DeviceTensor] { shards[0].keys }
    public var values: [DeviceTensor] { shards[0].values }

    /// A cache for an unsharded model on `backend`.
    public convenience init(config: ModelConfig, numBlocks: Int, blockSize: Int, backend: ComputeBackend) throws {
        try self.init(configs: [config], backends: [backend], numBlocks: numBlocks, blockSize: blockSize)
    }

    /// A cache for every rank of `model`.
    public convenience init(model: LlamaModel, numBlocks: Int, blockSize: Int) throws {
        try self.init(configs: model.ranks.map(\.local), backends: model.ranks.map(\.backend), numBlocks: numBlocks, blockSize: blockSize)
    }

    init(configs: [ModelConfig], backends: [ComputeBackend], numBlocks: Int, blockSize: Int) throws {
        precondition(numBlocks > 0 && blockSize > 0)
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        shards = try zip(configs, backends).map { config, backend in
            let shape = Shape(numBlocks * blockSize, config.kvSize)
            return Shard(
                keys: try (0..<config.numLayers).map { _ in try backend.allocate(shape, dtype: backend.activationDType) },
                values: try (0..<config.numLayers).map { _ in try backend.allocate(shape, dtype: backend.activationDType) },
                blockSize: blockSize)
        }
    }

    /// Bytes one token's K and V take over all layers, in `dtype`.
    public static func bytesPerToken(_ config: ModelConfig, dtype: DType) -> Int {
        2 * config.numLayers * config.kvSize * dtype.byteCount
    }
}
