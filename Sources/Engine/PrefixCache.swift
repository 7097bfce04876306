/// What `PrefixCache.match` found: whole cached blocks at the start of a token list.
public struct PrefixMatch: Equatable, Sendable {
    /// The deepest matched node, to `lock` while the blocks are used; `nil` when nothing matched.
    public var node: PrefixCache.NodeID?
    public var blocks: [Int32] = []
    public var matchedTokens: Int = 0
}

/// A radix tree of computed KV blocks, at block granularity, one tree per adapter instance.
///
/// Each node is one full block of token ids with the KV block that holds their keys and values
/// given everything before them on the path. The root is chosen by the adapter key (0 = base; a
/// reloaded adapter has a new key), so KV computed under one adapter is never served to another.
///
/// With the `BlockManager`: a node holds one reference on its block (taken by `insert`, dropped
/// by eviction), and each sequence holds one reference on every block of its table. Sequences
/// `lock` the deepest node of the path they use, which pins that path; eviction takes only
/// unlocked leaves, least recently used first, and a block returns to the free list only when its
/// last holder lets go. A sequence whose own block duplicates a cached one keeps its own; it is
/// freed with the sequence.
public struct PrefixCache: Sendable {
    public typealias NodeID = Int32

    struct Node: Sendable {
        var parent: NodeID = -1
        var depth = 0
        var key: [Int32] = []
        var block: Int32 = -1
        var adapterKey: UInt64 = 0
        var children: [[Int32]: NodeID] = [:]
        var lockCount = 0
        var lastAccess: UInt64 = 0
        var isLive = true
    }

    public let blockSize: Int
    var nodes: [Node] = []
    var freeNodes: [NodeID] = []
    var roots: [UInt64: NodeID] = [:]
    var clock: UInt64 = 0

    /// Blocks the tree holds (one per node).
    public internal(set) var numCachedBlocks = 0
    /// Cached blocks no sequence locks: what `flush` and enough `evict` calls can release.
    public internal(set) var numUnlockedBlocks = 0
    /// Blocks evicted since creation.
    public internal(set) var numEvictedBlocks = 0

    public init(blockSize: Int) {
        precondition(blockSize > 0)
        self.blockSize = blockSize
    }

    /// The longest cached prefix of `tokens` under `adapterKey`, in whole blocks and never the
    /// whole list: the last token is always left to compute, so the model produces its logits.
    /// Marks the matched path as recently used.
    public mutating func match(adapterKey: UInt64, tokens: [Int]) -> PrefixMatch {
        var result = PrefixMatch()
        guard var current = roots[adapterKey] else { return result }
        clock += 1
        let maxBlocks = max(tokens.count - 1, 0) / blockSize
        var key = [Int32](repeating: 0, count: blockSize)
        for b in 0..<maxBlocks {
            for j in 0..<blockSize { key[j] = Int32(truncatingIfNeeded: tokens[b * blockSize + j]) }
            guard let child = nodes[Int(current)].children[key] else { break }
            current = child
            nodes[Int(current)].lastAccess = clock
            result.blocks.append(nodes[Int(current)].block)
        }
        if !result.blocks.isEmpty { result.node = current }
        result.matchedTokens = result.blocks.count * blockSize
        return result
    }

    /// Caches the full blocks among the first `tokenCount` (default: all) of `tokens`, whose KV is
    /// computed in `blocks`, and returns the deepest node of that path (`from` when there is no
    /// full block beyond it).
    ///
    /// Blocks already cached keep their cached copy; new nodes take a reference on the sequence's
    /// block. `from`, a node on this path (the sequence's locked node), skips re-walking its prefix.
    @discardableResult
    public mutating func insert(
        adapterKey: UInt64, tokens: [Int], tokenCount: Int? = nil, blocks: [Int32], from start: NodeID? = nil,
        blockManager: inout BlockManager
    ) -> NodeID? {
        let fullBlocks = min(min(tokenCount ?? tokens.count, tokens.count) / blockSize, blocks.count)
        guard fullBlocks > 0 else { return start }
        clock += 1
        var current: NodeID
        if let start {
            let node = nodes[Int(start)]
            precondition(node.isLive && node.adapterKey == adapterKey, "insert from a node of another tree")
            precondition(node.depth == 0 || node.depth > fullBlocks
                || node.key.elementsEqual(tokens[(node.depth - 1) * blockSize ..< node.depth * blockSize].lazy.map { Int32(truncatingIfNeeded: $0) }),
                "insert from a node that is not on the tokens' path")
            current = start
        } else if let root = roots[adapterKey] {
            current = root
        } else {
            current = newNode(Node(adapterKey: adapterKey))
            roots[adapterKey] = current
        }
        let first = nodes[Int(current)].depth
        for b in first..<max(fullBlocks, first) {
            let key = tokens[b * blockSize ..< (b + 1) * blockSize].map { Int32(truncatingIfNeeded: $0) }
            if let child = nodes[Int(current)].children[key] {
                current = child
            } else {
                blockManager.retain(blocks[b])
                let child = newNode(Node(parent: current, depth: b + 1, key: key, block: blocks[b], adapterKey: adapterKey))
                nodes[Int(current)].children[key] = child
                current = child
                numCachedBlocks += 1
                numUnlockedBlocks += 1
            }
            nodes[Int(current)].lastAccess = clock
        }
        return current
    }

    /// Pins `node` and its ancestors against eviction (counted: each lock needs one `unlock`).
    public mutating func lock(_ node: NodeID?) {
        var current = node ?? -1
        while current >= 0, nodes[Int(current)].parent >= 0 {
            if nodes[Int(current)].lockCount == 0 { numUnlockedBlocks -= 1 }
            nodes[Int(current)].lockCount += 1
            current = nodes[Int(current)].parent
        }
    }

    public mutating func unlock(_ node: NodeID?) {
        var current = node ?? -1
        while current >= 0, nodes[Int(current)].parent >= 0 {
            precondition(nodes[Int(current)].lockCount > 0, "unlocking an unlocked prefix-cache node")
            nodes[Int(current)].lockCount -= 1
            if nodes[Int(current)].lockCount == 0 { numUnlockedBlocks += 1 }
            current = nodes[Int(current)].parent
        }
    }

    /// The number of blocks on the path to `node`.
    public func depth(of node: NodeID) -> Int { nodes[Int(node)].depth }

    /// The block `node` holds.
    public func block(of node: NodeID) -> Int32 { nodes[Int(node)].block }

    /// Whether `node` still exists (it does while it is locked).
    public func contains(_ node: NodeID) -> Bool {
        Int(node) < nodes.count && nodes[Int(node)].isLive && nodes[Int(node)].parent >= 0
    }

    mutating func newNode(_ node: Node) -> NodeID {
        if let id = freeNodes.popLast() {
            nodes[Int(id)] = node
            return id
        }
        nodes.append(node)
        return NodeID(nodes.count - 1)
    }
}
