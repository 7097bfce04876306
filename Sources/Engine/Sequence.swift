/// A sequence's id, unique among the engine's live sequences.
public typealias SequenceID = Int

/// Where a sequence is in its life.
public enum SequenceStatus: Sendable, Equatable {
    /// Queued (new, or preempted and waiting to be recomputed); holds no KV blocks.
    case waiting
    /// Holds KV blocks and takes part in every step until it finishes.
    case running
    case finished
}

/// Why a sequence stopped, as SGLang's `meta_info.finish_reason` reports it.
public enum FinishReason: Equatable, Sendable {
    /// EOS or one of `stop_token_ids` was sampled (`{"type": "stop", "matched": id}`).
    case stopToken(Int)
    /// A stop string appeared in the detokenized text (`{"type": "stop", "matched": "..."}`).
    case stopString(String)
    /// `max_new_tokens` (or the context) was reached (`{"type": "length", "length": n}`).
    case length(Int)
    /// The client went away, or the request can never fit (`{"type": "abort", "message": ...}`).
    case abort(String)

    /// SGLang's `finish_reason.type`.
    public var type: String {
        switch self {
        case .stopToken, .stopString: "stop"
        case .length: "length"
        case .abort: "abort"
        }
    }
}

/// One generation's state: a plain record the `Scheduler` owns and updates.
///
/// `numComputedTokens` tokens have their KV in `blockTable`; the next step computes
/// `tokens[numComputedTokens ..< tokenCount]` (a prefill chunk, or the last sampled token when
/// decoding), so prefill, chunked prefill, decode and recompute after preemption are one rule.
public struct Sequence: Sendable, Equatable {
    public let id: SequenceID
    public let promptIds: [Int]
    public internal(set) var outputIds: [Int] = []
    /// The adapter *instance* (0 = base): the registry's id for one load of an adapter. It keys the
    /// prefix cache and counts toward `max-loras-per-batch`; a reload gets a new key.
    public let adapterKey: UInt64
    /// The adapter's name, for metrics and logs; `nil` for the base model.
    public let adapterName: String?
    public let params: SamplingParams
    /// Seconds on the caller's clock; only reported, order is the queue's.
    public let arrivalTime: Double
    public internal(set) var status: SequenceStatus = .waiting
    public internal(set) var finishReason: FinishReason?
    public internal(set) var numComputedTokens = 0
    /// Prompt tokens found in the prefix cache at first admission (SGLang's `cached_tokens`).
    public internal(set) var numCachedTokens = 0
    public internal(set) var blockTable: [Int32] = []
    /// Steps in which an adapter limit kept this sequence waiting (see `SchedulerConfig.maxSkipSteps`).
    public internal(set) var numSkippedSteps = 0
    public internal(set) var numPreemptions = 0
    /// Whether the sequence was ever admitted (its cached-token count is then fixed).
    public internal(set) var wasAdmitted = false
    /// The sequence's random stream; the sampler advances it.
    public var rng: SamplingRNG
    /// The deepest prefix-cache node this sequence locks (its cached path), if any.
    var cacheNode: PrefixCache.NodeID?

    public init(
        id: SequenceID, promptIds: [Int], params: SamplingParams = SamplingParams(), adapterKey: UInt64 = 0,
        adapterName: String? = nil, arrivalTime: Double = 0, rng: SamplingRNG? = nil
    ) {
        self.id = id
        self.promptIds = promptIds
        self.params = params
        self.adapterKey = adapterKey
        self.adapterName = adapterName
        self.arrivalTime = arrivalTime
        self.rng = rng ?? SamplingRNG(samplingSeed: params.samplingSeed)
    }

    /// Prompt plus output tokens.
    public var tokenCount: Int { promptIds.count + outputIds.count }

    /// Prompt then output; no copy while there is no output.
    public var allTokenIds: [Int] { outputIds.isEmpty ? promptIds : promptIds + outputIds }

    /// The token at `position` of prompt + output.
    public func token(at position: Int) -> Int {
        position < promptIds.count ? promptIds[position] : outputIds[position - promptIds.count]
    }

    /// More than one token left to compute: the sequence is (re)filling its KV.
    public var isPrefilling: Bool { tokenCount - numComputedTokens > 1 }

    public var isFinished: Bool { status == .finished }
}
