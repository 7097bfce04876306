/// How one step's token rows map onto slot segments: rows stably sorted by slot, then cut into
/// one segment per slot (`sgmv`) or chunks of at most `chunkSize` rows (`csgmv`).
public struct BatchPlan: Equatable, Sendable {
    /// Plan position → token row.
    public var permutation: [Int32]
    /// `segments + 1` plan offsets.
    public var segmentStarts: [Int32]
    public var segmentSlots: [Int32]

    public init(rowSlots: [Int], kind: LoRABackendKind, chunkSize: Int) {
        precondition(chunkSize >= 1)
        let order = rowSlots.indices.sorted { (rowSlots[$0], $0) < (rowSlots[$1], $1) }
        permutation = order.map(Int32.init)
        segmentStarts = [0]
        segmentSlots = []
        var p = 0
        while p < order.count {
            let slot = rowSlots[order[p]]
            var end = p
            while end < order.count && rowSlots[order[end]] == slot { end += 1 }
            var start = p
            while start < end {
                let stop = kind == .sgmv ? end : min(end, start + chunkSize)
                segmentStarts.append(Int32(stop))
                segmentSlots.append(Int32(slot))
                start = stop
            }
            p = end
        }
    }

    public var segmentCount: Int { segmentSlots.count }
}
