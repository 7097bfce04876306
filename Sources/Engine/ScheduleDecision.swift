/// One step's work: which sequences compute which tokens. The engine runs it, samples a token for
/// every item with `wantsLogits` (in item order: the `logitsRows` of `Scheduler.forwardBatch`),
/// and passes each to `Scheduler.record(token:for:)` before the next `schedule()`.
public struct ScheduleDecision: Sendable, Equatable {
    public struct Item: Sendable, Equatable {
        public var sequenceID: SequenceID
        public var adapterKey: UInt64
        /// The first position computed, `numComputedTokens` before the step.
        public var startPosition: Int
        /// Tokens computed this step: a prefill chunk, or 1 when decoding.
        public var tokenCount: Int
        /// The chunk reaches the sequence's last token: sample from its logits.
        public var wantsLogits: Bool
        /// A prefill chunk (of a prompt, or a recompute after preemption) rather than a decode.
        public var isPrefill: Bool

        public init(sequenceID: SequenceID, adapterKey: UInt64, startPosition: Int, tokenCount: Int, wantsLogits: Bool, isPrefill: Bool) {
            self.sequenceID = sequenceID
            self.adapterKey = adapterKey
            self.startPosition = startPosition
            self.tokenCount = tokenCount
            self.wantsLogits = wantsLogits
            self.isPrefill = isPrefill
        }
    }

    /// Running sequences first (oldest first), then those admitted this step.
    public var items: [Item] = []
    /// Sequences sent back to waiting this step to free blocks (their KV will be recomputed).
    public var preempted: [SequenceID] = []
    /// Sequences the scheduler itself finished this step (one that can never fit the cache is
    /// aborted); the engine ends their streams.
    public var finished: [Sequence] = []

    public init() {}

    public var isEmpty: Bool { items.isEmpty }
    public var tokenCount: Int { items.reduce(0) { $0 + $1.tokenCount } }
    public var numPrefillTokens: Int { items.reduce(0) { $0 + ($1.isPrefill ? $1.tokenCount : 0) } }

    /// The batch's distinct adapters, in order of first appearance.
    public var adapterKeys: [UInt64] {
        var seen = Set<UInt64>()
        return items.compactMap { seen.insert($0.adapterKey).inserted ? $0.adapterKey : nil }
    }
}

extension ScheduleDecision {
    /// Each token row's adapter key, in batch order, for the LoRA plan's segments.
    public var rowAdapterKeys: [UInt64] {
        items.flatMap { Array(repeating: $0.adapterKey, count: $0.tokenCount) }
    }
}
