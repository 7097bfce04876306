import Foundation
import LoomCore
import LoRA

/// One generation request as the engine sees it: token ids, a resolved adapter, sampling
/// parameters. The server has validated and tokenized it; the engine never sees JSON.
public struct EngineRequest: Sendable {
    /// Unique per request (SGLang's `rid`); `abort(id:)` uses it.
    public var id: String
    public var promptIds: [Int]
    /// nil: the base model.
    public var adapter: AdapterRef?
    public var params: SamplingParams
    public var returnLogprob: Bool
    public var topLogprobsNum: Int

    public init(id: String, promptIds: [Int], adapter: AdapterRef?, params: SamplingParams, returnLogprob: Bool = false, topLogprobsNum: Int = 0) {
        self.id = id
        self.promptIds = promptIds
        self.adapter = adapter
        self.params = params
        self.returnLogprob = returnLogprob
        self.topLogprobsNum = topLogprobsNum
    }
}

/// What the engine reports for a finished request.
public struct FinishInfo: Sendable, Equatable {
    /// SGLang's `finish_reason` (`FinishReason` is declared with `Sequence`).
    public var reason: FinishReason
    public var promptTokens: Int
    public var completionTokens: Int
    /// Prompt tokens served from the prefix cache.
    public var cachedTokens: Int

    public init(reason: FinishReason, promptTokens: Int, completionTokens: Int, cachedTokens: Int) {
        self.reason = reason
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
    }
}

/// A stream event of one request.
public enum EngineEvent: Sendable, Equatable {
    /// New tokens and the text they completed (text may be "" while a character is incomplete
    /// or a possible stop string is held back). `logprobs` has one entry per token when requested.
    case tokens(ids: [Int], text: String, logprobs: [SampledToken])
    case finished(FinishInfo)
}

/// Counters for `/get_server_info`, `/metrics` and the soak test's leak checks.
public struct EngineStats: Sendable, Equatable {
    public var running = 0
    public var waiting = 0
    public var totalBlocks = 0
    public var freeBlocks = 0
    /// Blocks held only by the prefix cache (reclaimable).
    public var cachedBlocks = 0
    public var blockSize = 0
    /// Running and waiting requests per adapter name ("" for the base model).
    public var runningByAdapter: [String: Int] = [:]
    public var waitingByAdapter: [String: Int] = [:]
    /// Uid per device slot; nil: empty.
    public var slotOccupants: [UInt64?] = []
    /// In-flight requests per adapter name.
    public var inFlightByAdapter: [String: Int] = [:]
    public var generatedTokens = 0
    public var steps = 0
    /// Totals over the steps that computed something.
    public var stepTotals = StepTotals()

    public init() {}
}

/// What the HTTP server needs from the engine. `InferenceEngine` implements it.
public protocol InferenceService: AnyObject, Sendable {
    /// The model's config, name and tokenizer-independent limits.
    var modelConfig: ModelConfig { get }
    /// The served model's name (`/v1/models`, `/get_model_info`).
    var modelName: String { get }
    var modelPath: String { get }
    /// The longest prompt + completion the engine accepts.
    var maxContextLength: Int { get }
    var adapters: AdapterRegistry? { get }

    /// Queues a request; events arrive on the stream until `.finished`. Cancelling the stream's
    /// consumer (dropping it) aborts the request within one step.
    func submit(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error>
    /// Aborts a request by id; its blocks and adapter are released within one step.
    func abort(id: String)
    /// Loads an adapter (`/load_lora_adapter`): errors are `LoomError` with SGLang's messages.
    func loadAdapter(_ spec: LoRAPathSpec) async throws
    /// Unloads an adapter; new requests naming it are refused at once, and the call returns when
    /// its in-flight requests have finished.
    func unloadAdapter(name: String) async throws
    /// Drops the prefix cache (`/flush_cache`); false when requests are running.
    func flushCache() -> Bool
    var stats: EngineStats { get }
    /// Stops accepting requests, finishes in-flight ones within `grace` seconds, aborts the rest.
    func shutdown(grace: Double) async
}
