import LoomCore

/// The paged KV cache: per layer, K and V of `[numBlocks · blockSize, kvHeads · headDim]`.
public final class KVCache {
    public let numBlocks: Int
    public let blockSize: Int
    public let keys: [DeviceTensor]
    public let values: [DeviceTensor]

    public init(config: ModelConfig, numBlocks: Int, blockSize: Int, backend: ComputeBackend) throws {
        precondition(numBlocks > 0 && blockSize > 0)
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        let shape = Shape(numBlocks * blockSize, config.kvSize)
        keys = try (0..<config.numLayers).map { _ in try backend.allocate(shape, dtype: backend.activationDType) }
        values = try (0..<config.numLayers).map { _ in try backend.allocate(shape, dtype: backend.activationDType) }
    }

    /// Bytes one token's K and V take over all layers, in `dtype`.
    public static func bytesPerToken(_ config: ModelConfig, dtype: DType) -> Int {
        2 * config.numLayers * config.kvSize * dtype.byteCount
    }
}
