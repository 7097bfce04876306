import Foundation
import LoomCore
import ModelFormats

/// Adapter weights resident in host memory, at most `capacity` of them (`--max-loaded-loras`).
///
/// Past the cap the least recently used unpinned adapter's weights are dropped; the adapter stays
/// registered and is read again from its path when a request needs it.
public final class HostAdapterCache: @unchecked Sendable {
    public let capacity: Int
    private let lock = NSLock()
    private var weights: [UInt64: PEFTAdapter] = [:]
    private var pinned: Set<UInt64> = []
    /// Resident uids, least recently used first.
    private var recency: [UInt64] = []
    public private(set) var diskReads = 0

    public init(capacity: Int) {
        precondition(capacity >= 1)
        self.capacity = capacity
    }

    public var residentUIDs: [UInt64] { lock.withLock { recency } }

    public func isResident(_ uid: UInt64) -> Bool { lock.withLock { weights[uid] != nil } }

    /// Inserts freshly loaded weights, evicting the least recently used unpinned adapters beyond
    /// the cap. Fails only when every resident adapter is pinned.
    public func insert(_ ref: AdapterRef, _ adapter: PEFTAdapter) throws {
        try lock.withLock {
            if weights[ref.uid] == nil {
                let residentPinned = recency.filter { pinned.contains($0) }.count
                if ref.pinned && residentPinned >= capacity {
                    throw LoomError.invalidArgument("cannot keep adapter \(ref.name) in memory: all \(capacity) host slots (--max-loaded-loras) hold pinned adapters")
                }
                while recency.count >= capacity {
                    guard let victim = recency.first(where: { !pinned.contains($0) }) else {
                        throw LoomError.invalidArgument("cannot load adapter \(ref.name): all \(capacity) adapters in memory (--max-loaded-loras) are pinned")
                    }
                    drop(victim)
                }
            }
            weights[ref.uid] = adapter
            if ref.pinned { pinned.insert(ref.uid) }
            touch(ref.uid)
        }
    }

    /// The weights of `ref`, read again from `ref.path` when they were dropped.
    public func weights(for ref: AdapterRef, base: ModelConfig) throws -> PEFTAdapter {
        if let hit = lock.withLock({ () -> PEFTAdapter? in
            if let w = weights[ref.uid] { touch(ref.uid); return w }
            return nil
        }) {
            return hit
        }
        let adapter = try PEFTAdapter.load(path: ref.path, base: base)
        lock.withLock { diskReads += 1 }
        try insert(ref, adapter)
        return adapter
    }

    /// Forgets an unloaded adapter.
    public func remove(_ uid: UInt64) {
        lock.withLock { drop(uid) }
    }

    private func drop(_ uid: UInt64) {
        weights[uid] = nil
        pinned.remove(uid)
        recency.removeAll { $0 == uid }
    }

    private func touch(_ uid: UInt64) {
        recency.removeAll { $0 == uid }
        recency.append(uid)
    }
}
