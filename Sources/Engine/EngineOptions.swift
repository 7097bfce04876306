import Foundation
import LoomCore

/// Sizes of the serving engine, with SGLang's flag names where they exist.
public struct EngineOptions: Sendable {
    /// `--max-running-requests`.
    public var maxRunningRequests = 64
    /// `--max-total-tokens`: KV cache capacity in tokens; nil sizes it from `memFractionStatic`.
    public var maxTotalTokens: Int?
    /// `--mem-fraction-static`: the share of memory for weights and KV cache when `maxTotalTokens` is nil.
    public var memFractionStatic = 0.2
    /// `--chunked-prefill-size`: most prompt tokens computed in one step.
    public var chunkedPrefillSize = 2048
    /// `--context-length`: overrides the model's `max_position_embeddings` (only downwards).
    public var contextLength: Int?
    public var blockSize = 16
    /// Steps a request may be skipped for its adapter before the scheduler admits it first.
    public var maxSkipSteps = 64
    public var enablePrefixCache = true
    /// `--max-queued-requests`: waiting requests past which `submit` refuses (nil: unbounded).
    public var maxQueuedRequests: Int?
    /// Runs one tensor-parallel rank's share of a padded decode step from a graph, on that rank's
    /// thread: the first call with a `key` captures `body`, later calls replay it (CUDA:
    /// `CUDABackend.withGraph`). nil: no graphs and no padding (the CPU backend, `--disable-cuda-graph`).
    public var graphRunner: GraphRunner?
    /// `--cuda-graph-max-bs`: the largest decode step run from a graph (at most `maxRunningRequests`).
    public var cudaGraphMaxBatchSize = 160
    /// `--cuda-graph-bs`: the padded batch sizes (nil: `DecodeGraphs.defaultBatchSizes`).
    public var cudaGraphBatchSizes: [Int]?

    public init() {}
}

/// `(rank, key, body)`: runs `body`, one rank's share of a step, from the graph of `key`.
public typealias GraphRunner = @Sendable (_ rank: Int, _ key: String, _ body: () -> Void) -> Void

/// Why the engine refused a request before queueing it.
public enum EngineError: Error, CustomStringConvertible, Equatable {
    /// The waiting queue is full (`--max-queued-requests`): HTTP 503 with Retry-After.
    case queueFull(Int)
    /// The engine is shutting down.
    case shuttingDown
    /// A request named an adapter that was unloaded meanwhile.
    case adapterUnloaded(String)

    public var description: String {
        switch self {
        case .queueFull(let n): "The server is busy: \(n) requests are waiting (--max-queued-requests). Retry later."
        case .shuttingDown: "The server is shutting down."
        case .adapterUnloaded(let name): "LoRA adapter \(name) is not loaded"
        }
    }
}
