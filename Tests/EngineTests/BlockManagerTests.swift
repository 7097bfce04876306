import Models
import Testing
@testable import Engine

@Test func allocationIsAllOrNothingAndReturnsToIdle() {
    var blocks = BlockManager(numBlocks: 4, blockSize: 16)
    #expect(blocks.blockCount(forTokens: 0) == 0 && blocks.blockCount(forTokens: 16) == 1 && blocks.blockCount(forTokens: 17) == 2)
    let first = blocks.allocate(3)
    #expect(first == [0, 1, 2])
    #expect(blocks.numFreeBlocks == 1 && blocks.canAllocate(1) && !blocks.canAllocate(2))
    #expect(blocks.allocate(2) == nil)
    #expect(blocks.numFreeBlocks == 1, "a failed allocation takes nothing")
    for b in first! {
        let freed = blocks.release(b)
        #expect(freed)
    }
    #expect(blocks.numFreeBlocks == 4 && blocks.numUsedBlocks == 0)
}

@Test func sharedBlocksAreFreedByTheirLastHolder() {
    var blocks = BlockManager(numBlocks: 8, blockSize: 4)
    // A "cache" holds two blocks computed by a finished sequence.
    let cached = blocks.allocate(2)!
    var a = Sequence(id: 1, promptIds: Array(0..<10))
    var b = Sequence(id: 2, promptIds: Array(0..<9))
    #expect(blocks.allocate(for: &a, cachedBlocks: cached, tokenCount: a.tokenCount))
    #expect(blocks.allocate(for: &b, cachedBlocks: cached, tokenCount: b.tokenCount))
    #expect(a.blockTable.count == 3 && b.blockTable.count == 3)
    #expect(Array(a.blockTable.prefix(2)) == cached && Array(b.blockTable.prefix(2)) == cached)
    #expect(blocks.refCount(of: cached[0]) == 3)
    #expect(blocks.numFreeBlocks == 4)
    blocks.free(&a)
    #expect(a.blockTable.isEmpty && blocks.refCount(of: cached[0]) == 2 && blocks.numFreeBlocks == 5)
    blocks.free(&b)
    #expect(blocks.numFreeBlocks == 6)
    for c in cached {
        let freed = blocks.release(c)
        #expect(freed)
    }
    #expect(blocks.numFreeBlocks == 8)
}

@Test func appendSlotGrowsOnlyAtBlockBoundaries() {
    var blocks = BlockManager(numBlocks: 3, blockSize: 4)
    var s = Sequence(id: 1, promptIds: [1, 2, 3])
    #expect(blocks.allocate(for: &s, cachedBlocks: [], tokenCount: s.tokenCount))
    #expect(s.blockTable.count == 1)
    s.outputIds = [4]
    #expect(blocks.appendSlot(for: &s) && s.blockTable.count == 1)
    s.outputIds = [4, 5]
    #expect(blocks.appendSlot(for: &s) && s.blockTable.count == 2)
    #expect(blocks.appendSlot(for: &s, tokenCount: 12) && s.blockTable.count == 3)
    #expect(!blocks.appendSlot(for: &s, tokenCount: 13))
    #expect(s.blockTable.count == 3 && blocks.numFreeBlocks == 0)
    blocks.free(&s)
    #expect(blocks.numFreeBlocks == 3)
}

@Test func slotsAgreeWithForwardBatch() {
    let blocks = BlockManager(numBlocks: 10, blockSize: 4)
    let table: [Int32] = [7, 2, 5]
    var batch = ForwardBatch()
    batch.append(tokens: [1, 2, 3, 4, 5, 6], startPosition: 3, blockTable: table, blockSize: 4)
    #expect(blocks.slotMapping(blockTable: table, positions: 3..<9) == batch.slotMapping)
    #expect(blocks.slot(blockTable: table, position: 4) == 2 * 4 + 0)
    #expect(blocks.slot(blockTable: table, position: 11) == 5 * 4 + 3)
}
