extension PrefixCache {
    /// Evicts least-recently-used unlocked leaves until `blocksNeeded` blocks went back to the
    /// free list (or nothing more is evictable); returns how many did.
    ///
    /// A parent whose last child goes becomes a leaf and a candidate in turn, so a long unused
    /// path is released from its end. Locked nodes, and so their ancestors, are never touched.
    @discardableResult
    public mutating func evict(_ blocksNeeded: Int, blockManager: inout BlockManager) -> Int {
        evict(blocksNeeded, adapterKey: nil, blockManager: &blockManager)
    }

    /// Drops everything unlocked (SGLang's `/flush_cache`); returns the blocks freed.
    @discardableResult
    public mutating func flush(blockManager: inout BlockManager) -> Int {
        evict(.max, adapterKey: nil, blockManager: &blockManager)
    }

    /// Drops everything unlocked cached under one adapter instance (after it is unloaded, its KV can
    /// never match again); returns the blocks freed.
    @discardableResult
    public mutating func remove(adapterKey: UInt64, blockManager: inout BlockManager) -> Int {
        evict(.max, adapterKey: adapterKey, blockManager: &blockManager)
    }

    mutating func evict(_ blocksNeeded: Int, adapterKey: UInt64?, blockManager: inout BlockManager) -> Int {
        guard blocksNeeded > 0 else { return 0 }
        var heap = LRUHeap()
        for id in nodes.indices where isEvictable(NodeID(id)) && (adapterKey == nil || nodes[id].adapterKey == adapterKey) {
            heap.push(nodes[id].lastAccess, NodeID(id))
        }
        var freed = 0
        while freed < blocksNeeded, let leaf = heap.pop() {
            let node = nodes[Int(leaf)]
            let parent = node.parent
            nodes[Int(parent)].children[node.key] = nil
            if blockManager.release(node.block) { freed += 1 }
            discard(leaf)
            numCachedBlocks -= 1
            numUnlockedBlocks -= 1
            numEvictedBlocks += 1
            if nodes[Int(parent)].parent >= 0 {
                if isEvictable(parent) { heap.push(nodes[Int(parent)].lastAccess, parent) }
            } else if nodes[Int(parent)].children.isEmpty {
                roots[nodes[Int(parent)].adapterKey] = nil
                discard(parent)
            }
        }
        return freed
    }

    func isEvictable(_ id: NodeID) -> Bool {
        let node = nodes[Int(id)]
        return node.isLive && node.parent >= 0 && node.children.isEmpty && node.lockCount == 0
    }

    mutating func discard(_ id: NodeID) {
        nodes[Int(id)] = Node(isLive: false)
        freeNodes.append(id)
    }
}

/// A binary min-heap of (last access, node), ties to the lower node id, so eviction order is
/// deterministic.
struct LRUHeap {
    private var items: [(UInt64, PrefixCache.NodeID)] = []

    private static func less(_ a: (UInt64, PrefixCache.NodeID), _ b: (UInt64, PrefixCache.NodeID)) -> Bool {
        a.0 != b.0 ? a.0 < b.0 : a.1 < b.1
    }

    mutating func push(_ access: UInt64, _ id: PrefixCache.NodeID) {
        items.append((access, id))
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard Self.less(items[i], items[p]) else { break }
            items.swapAt(i, p)
            i = p
        }
    }

    mutating func pop() -> PrefixCache.NodeID? {
        guard !items.isEmpty else { return nil }
        let top = items[0].1
        items.swapAt(0, items.count - 1)
        items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && Self.less(items[l], items[m]) { m = l }
            if r < items.count && Self.less(items[r], items[m]) { m = r }
            guard m != i else { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}
