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

    public init() {}
}

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
