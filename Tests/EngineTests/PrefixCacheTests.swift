import Testing
@testable import Engine

/// A cache of 4-token blocks over a 32-block pool, with helpers that play a sequence's part.
private struct Fixture {
    var blocks = BlockManager(numBlocks: 32, blockSize: 4)
    var cache = PrefixCache(blockSize: 4)

    /// Computes `tokens` in fresh blocks (as a sequence would), caches them, frees the sequence's
    /// references; returns the blocks (now held by the cache alone).
    mutating func compute(_ tokens: [Int], adapter: UInt64 = 0) -> [Int32] {
        let fresh = blocks.allocate(blocks.blockCount(forTokens: tokens.count))!
        cache.insert(adapterKey: adapter, tokens: tokens, blocks: fresh, blockManager: &blocks)
        for b in fresh { blocks.release(b) }
        return fresh
    }
}

@Test func matchesWholeBlocksOfTheSameAdapterOnly() {
    var f = Fixture()
    let prompt = Array(100..<110)  // two full blocks and a partial one
    let computed = f.compute(prompt, adapter: 0)
    #expect(f.cache.numCachedBlocks == 2)
    #expect(f.blocks.numFreeBlocks == 30, "the partial block is not cached")

    let hit = f.cache.match(adapterKey: 0, tokens: prompt + [1, 2])
    #expect(hit.blocks == Array(computed.prefix(2)) && hit.matchedTokens == 8 && hit.node != nil)
    // Same tokens, another adapter: nothing; a reloaded adapter has a new key: nothing.
    #expect(f.cache.match(adapterKey: 7, tokens: prompt).matchedTokens == 0)
    _ = f.compute(prompt, adapter: 7)
    #expect(f.cache.match(adapterKey: 7, tokens: prompt).matchedTokens == 8)
    #expect(f.cache.match(adapterKey: 8, tokens: prompt).matchedTokens == 0)
    // A divergence inside the second block keeps only the first.
    var other = prompt
    other[5] = 0
    #expect(f.cache.match(adapterKey: 0, tokens: other).matchedTokens == 4)
}

@Test func neverMatchesTheWholePrompt() {
    var f = Fixture()
    let prompt = Array(0..<8)
    _ = f.compute(prompt)
    // Eight tokens are cached, but the last must be computed for logits: one block matches.
    #expect(f.cache.match(adapterKey: 0, tokens: prompt).matchedTokens == 4)
    #expect(f.cache.match(adapterKey: 0, tokens: prompt + [8]).matchedTokens == 8)
    #expect(f.cache.match(adapterKey: 0, tokens: [0]).matchedTokens == 0)
    #expect(f.cache.match(adapterKey: 0, tokens: []).matchedTokens == 0)
}

@Test func evictionSkipsLockedPathsAndFreesBlocks() {
    var f = Fixture()
    let a = Array(0..<12), b = Array(50..<62)
    _ = f.compute(a)
    _ = f.compute(b)
    #expect(f.blocks.numFreeBlocks == 26 && f.cache.numUnlockedBlocks == 6)
    let held = f.cache.match(adapterKey: 0, tokens: a + [99])
    f.cache.lock(held.node)
    #expect(f.cache.numUnlockedBlocks == 3)
    #expect(f.cache.evict(100, blockManager: &f.blocks) == 3)
    #expect(f.blocks.numFreeBlocks == 29 && f.cache.numCachedBlocks == 3)
    #expect(f.cache.match(adapterKey: 0, tokens: a + [99]).blocks == held.blocks, "the locked path survives")
    #expect(f.cache.match(adapterKey: 0, tokens: b + [99]).matchedTokens == 0)
    #expect(f.cache.flush(blockManager: &f.blocks) == 0, "flush keeps locked blocks too")
    f.cache.unlock(held.node)
    #expect(f.cache.flush(blockManager: &f.blocks) == 3)
    #expect(f.blocks.numFreeBlocks == 32 && f.cache.numCachedBlocks == 0 && f.cache.numUnlockedBlocks == 0)
}

@Test func evictsLeastRecentlyUsedLeavesFirst() {
    var f = Fixture()
    let a = Array(0..<4), b = Array(10..<14), c = Array(20..<24)
    _ = f.compute(a)
    _ = f.compute(b)
    _ = f.compute(c)
    _ = f.cache.match(adapterKey: 0, tokens: a + [1])  // a is now the most recent
    f.cache.evict(1, blockManager: &f.blocks)
    #expect(f.cache.match(adapterKey: 0, tokens: b + [1]).matchedTokens == 0)
    #expect(f.cache.match(adapterKey: 0, tokens: c + [1]).matchedTokens == 4)  // c is now newer than a
    f.cache.evict(1, blockManager: &f.blocks)
    #expect(f.cache.match(adapterKey: 0, tokens: a + [1]).matchedTokens == 0)
    #expect(f.cache.match(adapterKey: 0, tokens: c + [1]).matchedTokens == 4)
}

@Test func evictionShortensAPathFromItsEnd() {
    var f = Fixture()
    let long = Array(0..<12)
    _ = f.compute(long)
    #expect(f.cache.evict(1, blockManager: &f.blocks) == 1)
    #expect(f.cache.match(adapterKey: 0, tokens: long + [1]).matchedTokens == 8)
    #expect(f.cache.evict(2, blockManager: &f.blocks) == 2)
    #expect(f.cache.numCachedBlocks == 0 && f.cache.roots.isEmpty && f.blocks.numFreeBlocks == 32)
}

@Test func duplicateBlocksStayWithTheirSequence() {
    var f = Fixture()
    let prompt = Array(0..<9)
    let first = f.compute(prompt)
    // A second sequence computed the same prefix in its own blocks before it could share.
    let second = f.blocks.allocate(3)!
    let node = f.cache.insert(adapterKey: 0, tokens: prompt, blocks: second, blockManager: &f.blocks)
    #expect(f.cache.block(of: node!) == first[1], "the cached copy is kept")
    #expect(f.cache.numCachedBlocks == 2)
    for b in second {
        let freed = f.blocks.release(b)
        #expect(freed, "the duplicate is the sequence's alone")
    }
    #expect(f.blocks.numFreeBlocks == 30)
}

@Test func insertContinuesFromALockedNode() {
    var f = Fixture()
    let tokens = Array(0..<13)
    let table = f.blocks.allocate(4)!
    let shallow = f.cache.insert(adapterKey: 0, tokens: tokens, tokenCount: 4, blocks: table, blockManager: &f.blocks)
    #expect(f.cache.depth(of: shallow!) == 1)
    f.cache.lock(shallow)
    let deep = f.cache.insert(adapterKey: 0, tokens: tokens, tokenCount: 12, blocks: table, from: shallow, blockManager: &f.blocks)
    #expect(f.cache.depth(of: deep!) == 3 && f.cache.block(of: deep!) == table[2])
    #expect(f.cache.match(adapterKey: 0, tokens: tokens).blocks == Array(table.prefix(3)))
    f.cache.lock(deep)
    f.cache.unlock(shallow)
    #expect(f.cache.evict(10, blockManager: &f.blocks) == 0)
    f.cache.unlock(deep)
    for b in table { f.blocks.release(b) }
    #expect(f.cache.flush(blockManager: &f.blocks) == 3 && f.blocks.numFreeBlocks == 32)
}

@Test func removingAnAdapterDropsOnlyItsEntries() {
    var f = Fixture()
    let prompt = Array(0..<9)
    _ = f.compute(prompt, adapter: 1)
    _ = f.compute(prompt, adapter: 2)
    #expect(f.cache.remove(adapterKey: 1, blockManager: &f.blocks) == 2)
    #expect(f.cache.match(adapterKey: 1, tokens: prompt).matchedTokens == 0)
    #expect(f.cache.match(adapterKey: 2, tokens: prompt).matchedTokens == 8)
    #expect(f.cache.numEvictedBlocks == 2)
}
