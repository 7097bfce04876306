/// Running totals over the steps that computed something: tokens (prefill and decode rows),
/// prefill tokens, sequences, and distinct adapters (the base model not counted), and where the
/// engine thread's time went. `/metrics` exports them as counters, so a rate over a window gives,
/// e.g., the distinct adapters a step met on average (the figure that decides what a
/// multi-adapter step reads) or the milliseconds a step spent queueing its kernels.
public struct StepTotals: Sendable, Equatable {
    public var steps = 0
    public var tokens = 0
    public var prefillTokens = 0
    public var sequences = 0
    public var adapters = 0
    /// Steps replayed from a captured CUDA graph.
    public var graphSteps = 0
    /// Seconds of the engine thread per phase of a step, summed.
    public var seconds = StepSeconds()

    public init() {}

    public mutating func record(_ decision: ScheduleDecision) {
        guard !decision.isEmpty else { return }
        steps += 1
        tokens += decision.tokenCount
        prefillTokens += decision.numPrefillTokens
        sequences += decision.items.count
        adapters += decision.adapterKeys.count { $0 != 0 }
    }

    /// Adds the engine thread's time over one step that computed something.
    public mutating func record(_ step: StepSeconds, replayedGraph: Bool) {
        if replayedGraph { graphSteps += 1 }
        seconds += step
    }
}

/// The phases of a step on the engine thread. The device runs the step's kernels while the thread
/// queues them (`launch`) and until the sampled tokens come back (`wait`): a step whose `wait` is
/// near zero is bound by the host, not the GPU.
public struct StepSeconds: Sendable, Equatable {
    /// Choosing the step's work and building its batch.
    public var schedule = 0.0
    /// Making the step's adapters resident and copying its LoRA plan.
    public var prepare = 0.0
    /// Queueing the model's kernels (or replaying its graph).
    public var launch = 0.0
    /// Waiting for the step's sampled tokens or logits.
    public var wait = 0.0
    /// Sampling on the host, detokenizing and streaming.
    public var output = 0.0

    public init() {}

    /// The phases with their names, as `/metrics` labels them.
    public var phases: [(name: String, seconds: Double)] {
        [("schedule", schedule), ("prepare", prepare), ("launch", launch), ("wait", wait), ("output", output)]
    }

    public static func += (totals: inout StepSeconds, step: StepSeconds) {
        totals.schedule += step.schedule
        totals.prepare += step.prepare
        totals.launch += step.launch
        totals.wait += step.wait
        totals.output += step.output
    }
}
