/// One rank's view of a tensor-parallel group: collectives over the ranks' tensors of the same
/// shape. NCCL on GPUs; threads sharing memory on the CPU.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Every rank's `tensor` becomes the element-wise sum over ranks (the same on every rank).
    func allReduceSum(_ tensor: DeviceTensor)
    /// `out[i][r·cols + j] = x_r[i][j]` for each rank `r`'s `x` `[n, cols]`, columns past
    /// `out`'s width dropped (a vocabulary padded to a multiple of the group size).
    func allGather(_ x: DeviceTensor, out: DeviceTensor)
}

/// Which slice of a Megatron-sharded model a rank holds.
public struct TensorShard: Sendable, Equatable {
    public var rank: Int
    public var size: Int

    public init(rank: Int, size: Int) {
        precondition(size >= 1 && rank >= 0 && rank < size)
        self.rank = rank
        self.size = size
    }

    public static let whole = TensorShard(rank: 0, size: 1)

    /// Checks that `config` can be split `size` ways, with SGLang-like messages.
    public static func validate(_ config: ModelConfig, size: Int) throws {
        guard size >= 1 else { throw LoomError.invalidArgument("--tp-size must be at least 1") }
        guard config.numHeads % size == 0 else {
            throw LoomError.invalidArgument("--tp-size \(size) must divide the number of attention heads (\(config.numHeads))")
        }
        guard config.numKVHeads % size == 0 || size % config.numKVHeads == 0 else {
            throw LoomError.invalidArgument("--tp-size \(size) and the number of KV heads (\(config.numKVHeads)) must divide one another")
        }
        guard config.intermediateSize % size == 0 else {
            throw LoomError.invalidArgument("--tp-size \(size) must divide intermediate_size (\(config.intermediateSize))")
        }
    }

    /// This rank's query heads.
    public func heads(_ c: ModelConfig) -> Range<Int> {
        let n = c.numHeads / size
        return (rank * n)..<((rank + 1) * n)
    }

    /// This rank's KV heads: a slice when `size ≤ kvHeads`, else one head replicated on `size / kvHeads` ranks.
    public func kvHeads(_ c: ModelConfig) -> Range<Int> {
        if size <= c.numKVHeads {
            let n = c.numKVHeads / size
            return (rank * n)..<((rank + 1) * n)
        }
        let head = rank / (size / c.numKVHeads)
        return head..<(head + 1)
    }

    public func intermediate(_ c: ModelConfig) -> Range<Int> {
        let n = c.intermediateSize / size
        return (rank * n)..<((rank + 1) * n)
    }

    /// Vocabulary rows per rank (the last rank's tail is padding).
    public func vocabPerRank(_ c: ModelConfig) -> Int { (c.vocabSize + size - 1) / size }

    public func vocab(_ c: ModelConfig) -> Range<Int> {
        let n = vocabPerRank(c)
        return min(c.vocabSize, rank * n)..<min(c.vocabSize, (rank + 1) * n)
    }

    /// The config this rank computes with: its heads, KV heads, intermediate width and vocabulary
    /// slice plus one zero row that tokens of other ranks' slices are mapped to.
    public func localConfig(_ c: ModelConfig) -> ModelConfig {
        guard size > 1 else { return c }
        var local = c
        local.numHeads = heads(c).count
        local.numKVHeads = kvHeads(c).count
        local.intermediateSize = intermediate(c).count
        local.vocabSize = vocabPerRank(c) + 1
        return local
    }
}
