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

    /// The rows of the plan's longest segment (0 for an empty plan).
    public var longestSegment: Int { zip(segmentStarts.dropFirst(), segmentStarts).map { Int($0 - $1) }.max() ?? 0 }

    /// A bound on the segment count of any plan of `rows` rows over `slots` slots: every segment
    /// but the last of a slot is full, so `csgmv` has at most `rows / chunkSize + slots` of them.
    public static func segmentCapacity(rows: Int, slots: Int, kind: LoRABackendKind, chunkSize: Int) -> Int {
        switch kind {
        case .sgmv: min(rows, slots)
        case .csgmv, .fused: min(rows, (rows + chunkSize - 1) / chunkSize + slots)
        }
    }

    /// A bound on the length of any segment of a plan of `rows` rows.
    public static func maxSegmentLength(rows: Int, kind: LoRABackendKind, chunkSize: Int) -> Int {
        kind == .sgmv ? rows : min(rows, chunkSize)
    }

    /// `segmentStarts` extended with empty segments (starts equal to the row count) to `capacity + 1`
    /// entries, and `segmentSlots` with slot 0 to `capacity`.
    public func padded(toCapacity capacity: Int) -> (starts: [Int32], slots: [Int32]) {
        precondition(capacity >= segmentCount, "\(segmentCount) segments exceed the capacity \(capacity)")
        let rows = Int32(permutation.count)
        return (segmentStarts + Array(repeating: rows, count: capacity - segmentCount),
                segmentSlots + Array(repeating: 0, count: capacity - segmentCount))
    }
}
