import Models

extension Scheduler {
    /// The step's `ForwardBatch`: each item's tokens, positions, slots and block table, with a
    /// logits row for every item that `wantsLogits`, in item order.
    public func forwardBatch(for decision: ScheduleDecision) -> ForwardBatch {
        var batch = ForwardBatch()
        for item in decision.items {
            guard let seq = sequences[item.sequenceID], seq.status == .running else {
                preconditionFailure("sequence \(item.sequenceID) left the batch before it ran; abort between steps")
            }
            let tokens = (item.startPosition ..< item.startPosition + item.tokenCount).map { Int32(seq.token(at: $0)) }
            batch.append(tokens: tokens, startPosition: item.startPosition, blockTable: seq.blockTable,
                         blockSize: config.blockSize, wantsLogits: item.wantsLogits)
        }
        return batch
    }
}
