/// Which steps run from CUDA graphs, as SGLang's `CudaGraphRunner`: a step whose every item is one
/// decode token, of `n` sequences up to the largest bucket, is padded to the smallest bucket
/// `b ≥ n` and run from a graph captured per `(b, LoRA or not)`. It only decides; the engine pads
/// the batch (`ForwardBatch.appendPadding`) and calls `EngineOptions.graphRunner` with the key.
public struct DecodeGraphs: Sendable {
    /// The padded batch sizes, ascending; empty: no step is padded.
    public let batchSizes: [Int]
    /// Keys whose step already ran once eagerly.
    private var warmKeys: Set<String> = []

    public init(batchSizes: [Int]) {
        precondition(batchSizes.allSatisfy { $0 >= 1 }, "graph batch sizes must be positive: \(batchSizes)")
        self.batchSizes = Array(Set(batchSizes)).sorted()
    }

    /// SGLang's buckets: 1, 2, 4, 8, then every multiple of 8 up to `maxBatchSize`, and
    /// `maxBatchSize` itself, so every batch up to it has a bucket.
    public static func defaultBatchSizes(maxBatchSize: Int) -> [Int] {
        guard maxBatchSize >= 1 else { return [] }
        let sizes = [1, 2, 4, 8] + Array(stride(from: 16, through: maxBatchSize, by: 8))
        return sizes.filter { $0 < maxBatchSize } + [maxBatchSize]
    }

    /// The graph key of a padded step: `decode-b16-lora1`.
    public static func key(batchSize: Int, hasLoRA: Bool) -> String {
        "decode-b\(batchSize)-lora\(hasLoRA ? 1 : 0)"
    }

    /// The smallest bucket that holds `n` sequences, or nil past the largest.
    public func batchSize(for n: Int) -> Int? {
        batchSizes.first { $0 >= n }
    }

    /// The bucket `decision` pads to, or nil when it runs as scheduled: a prefill chunk in it, or
    /// more sequences than the largest bucket.
    public func batchSize(for decision: ScheduleDecision) -> Int? {
        guard !decision.items.isEmpty,
              decision.items.allSatisfy({ !$0.isPrefill && $0.tokenCount == 1 && $0.wantsLogits }) else { return nil }
        return batchSize(for: decision.items.count)
    }

    /// Whether a step of `key` runs from its graph, recording the step: the first of each key runs
    /// eagerly, so the step's buffers and cuBLASLt's plans are made outside a capture.
    public mutating func shouldUseGraph(_ key: String) -> Bool {
        !warmKeys.insert(key).inserted
    }

    /// The adapter key the padding rows take: base when the step has base rows, else the first
    /// row's adapter. Padding then never asks for a slot of its own, which a step that already
    /// holds `--max-loras-per-batch` adapters would not have.
    public static func paddingAdapterKey(rowAdapterKeys: [UInt64]) -> UInt64 {
        rowAdapterKeys.contains(0) ? 0 : rowAdapterKeys.first ?? 0
    }
}
