extension Scheduler {
    /// Samples the next token of a running sequence from its logits row, with its params, its
    /// history and its own random stream (advanced in place, so a seeded sequence draws the same
    /// tokens whatever shares its batches and across preemption). Pass the token to `record`.
    public mutating func sample(
        _ sampler: Sampler, logits: UnsafeBufferPointer<Float>, for id: SequenceID,
        returnLogprob: Bool = false, topLogprobsNum: Int = 0
    ) -> SampledToken {
        precondition(sequences[id]?.status == .running, "sequence \(id) is not running")
        return sampler.sample(logits: logits, for: &sequences[id]!, returnLogprob: returnLogprob, topLogprobsNum: topLogprobsNum)
    }
}
