/// The paged KV cache's block ids `0 ..< numBlocks` of `blockSize` tokens: a free list and
/// reference counts.
///
/// A block's count is the number of its holders: every sequence whose block table lists it, plus
/// one while a `PrefixCache` node holds it. It returns to the free list when the count drops to
/// zero, so a block shared through the prefix cache outlives the sequence that computed it and is
/// freed only once the cache evicts it and no sequence uses it.
public struct BlockManager: Sendable {
    public let numBlocks: Int
    public let blockSize: Int
    private var freeList: [Int32]
    private var refCounts: [Int32]

    public init(numBlocks: Int, blockSize: Int) {
        precondition(numBlocks > 0 && blockSize > 0)
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        // Popped from the end: block 0 is handed out first.
        freeList = (0..<Int32(numBlocks)).reversed()
        refCounts = Array(repeating: 0, count: numBlocks)
    }

    public var numFreeBlocks: Int { freeList.count }
    public var numUsedBlocks: Int { numBlocks - freeList.count }

    /// Blocks that hold `tokenCount` tokens.
    public func blockCount(forTokens tokenCount: Int) -> Int {
        (tokenCount + blockSize - 1) / blockSize
    }

    public func canAllocate(_ count: Int) -> Bool { count <= freeList.count }

    public func refCount(of block: Int32) -> Int { Int(refCounts[Int(block)]) }

    /// `count` fresh blocks with one reference each, or `nil` (and nothing taken) if too few are free.
    public mutating func allocate(_ count: Int) -> [Int32]? {
        guard canAllocate(count) else { return nil }
        let blocks = Array(freeList.suffix(count).reversed())
        freeList.removeLast(count)
        for b in blocks {
            precondition(refCounts[Int(b)] == 0, "block \(b) on the free list is referenced")
            refCounts[Int(b)] = 1
        }
        return blocks
    }

    /// Adds a holder to a block in use.
    public mutating func retain(_ block: Int32) {
        precondition(refCounts[Int(block)] > 0, "retaining free block \(block)")
        refCounts[Int(block)] += 1
    }

    /// Drops a holder; returns true when that freed the block.
    @discardableResult
    public mutating func release(_ block: Int32) -> Bool {
        precondition(refCounts[Int(block)] > 0, "releasing free block \(block)")
        refCounts[Int(block)] -= 1
        guard refCounts[Int(block)] == 0 else { return false }
        freeList.append(block)
        return true
    }

    /// Gives a sequence its block table for `tokenCount` tokens: the prefix-cache hit `cachedBlocks`
    /// first (one more reference each), then fresh blocks. All or nothing.
    public mutating func allocate(for sequence: inout Sequence, cachedBlocks: [Int32], tokenCount: Int) -> Bool {
        precondition(sequence.blockTable.isEmpty, "sequence \(sequence.id) already holds blocks")
        let needed = max(blockCount(forTokens: tokenCount) - cachedBlocks.count, 0)
        guard let fresh = allocate(needed) else { return false }
        for b in cachedBlocks { retain(b) }
        sequence.blockTable = cachedBlocks + fresh
        return true
    }

    /// Blocks a sequence still needs so its table covers `tokenCount` tokens.
    public func blocksNeeded(for sequence: Sequence, tokenCount: Int) -> Int {
        max(blockCount(forTokens: tokenCount) - sequence.blockTable.count, 0)
    }

    /// Grows a sequence's table to cover `tokenCount` tokens (default: all its tokens, i.e. the slot
    /// of the token the next decode step writes). False, with nothing taken, when blocks run out.
    public mutating func appendSlot(for sequence: inout Sequence, tokenCount: Int? = nil) -> Bool {
        let needed = blocksNeeded(for: sequence, tokenCount: tokenCount ?? sequence.tokenCount)
        guard needed > 0 else { return true }
        guard let fresh = allocate(needed) else { return false }
        sequence.blockTable += fresh
        return true
    }

    /// Releases every block of a sequence's table and empties it.
    public mutating func free(_ sequence: inout Sequence) {
        for b in sequence.blockTable { release(b) }
        sequence.blockTable = []
    }

    /// The KV slot of `position` (`block · blockSize + offset`), as `ForwardBatch.slotMapping` holds.
    public func slot(blockTable: [Int32], position: Int) -> Int32 {
        blockTable[position / blockSize] * Int32(blockSize) + Int32(position % blockSize)
    }

    /// The slots of `positions`, in order.
    public func slotMapping(blockTable: [Int32], positions: Range<Int>) -> [Int32] {
        positions.map { slot(blockTable: blockTable, position: $0) }
    }
}
