/// Running totals over the steps that computed something: tokens (prefill and decode rows),
/// prefill tokens, sequences, and distinct adapters (the base model not counted). `/metrics`
/// exports them as counters, so a rate over a window gives, e.g., the distinct adapters a step
/// met on average: the figure that decides what a multi-adapter step reads.
public struct StepTotals: Sendable, Equatable {
    public var steps = 0
    public var tokens = 0
    public var prefillTokens = 0
    public var sequences = 0
    public var adapters = 0

    public init() {}

    public mutating func record(_ decision: ScheduleDecision) {
        guard !decision.isEmpty else { return }
        steps += 1
        tokens += decision.tokenCount
        prefillTokens += decision.numPrefillTokens
        sequences += decision.items.count
        adapters += decision.adapterKeys.count { $0 != 0 }
    }
}
