import LoomCore

/// The device slot pool as a pure state machine: which adapter uid sits in which of the
/// `--max-loras-per-batch` slots. The base model (uid 0) takes a slot too, of rank 0, as in SGLang.
///
/// `assign` decides; the caller copies the weights of each returned load into its slot.
public struct SlotPool: Sendable {
    public struct Load: Sendable, Equatable {
        public var uid: UInt64
        public var slot: Int

        public init(uid: UInt64, slot: Int) {
            self.uid = uid
            self.slot = slot
        }
    }

    struct Entry: Sendable {
        var uid: UInt64
        var pinned: Bool
        var loadedAt: Int
        var lastUsed: Int
    }

    public let slotCount: Int
    public let policy: EvictionPolicy
    private var entries: [Entry?]
    private var clock = 0

    public init(slotCount: Int, policy: EvictionPolicy) {
        precondition(slotCount >= 1)
        self.slotCount = slotCount
        self.policy = policy
        entries = Array(repeating: nil, count: slotCount)
    }

    /// The slot holding `uid`, if any.
    public func slot(of uid: UInt64) -> Int? { entries.firstIndex { $0?.uid == uid } }

    /// Uids by slot (nil: empty).
    public var occupants: [UInt64?] { entries.map { $0?.uid } }

    /// Makes every uid of `batch` resident. Adapters of the batch and pinned adapters are never
    /// evicted; empty slots are used first, then the `policy` victim.
    /// - Returns: each uid's slot, and the loads the caller must perform.
    public mutating func assign(_ batch: Set<UInt64>, pinned: Set<UInt64> = []) throws -> (slots: [UInt64: Int], loads: [Load]) {
        guard batch.count <= slotCount else {
            throw LoomError.invalidArgument("a batch of \(batch.count) distinct adapters exceeds --max-loras-per-batch \(slotCount)")
        }
        clock += 1
        var slots: [UInt64: Int] = [:]
        var loads: [Load] = []
        for uid in batch {
            if let s = slot(of: uid) {
                entries[s]!.lastUsed = clock
                slots[uid] = s
            }
        }
        for uid in batch.sorted() where slots[uid] == nil {
            let s = try victim(protecting: batch, base: uid == 0)
            entries[s] = Entry(uid: uid, pinned: pinned.contains(uid), loadedAt: clock, lastUsed: clock)
            slots[uid] = s
            if uid != 0 { loads.append(Load(uid: uid, slot: s)) }
        }
        return (slots, loads)
    }

    /// Empties the slot of an unloaded adapter.
    public mutating func remove(_ uid: UInt64) {
        if let s = slot(of: uid) { entries[s] = nil }
    }

    /// The base takes the last empty slot and adapters the first ones, so that a step's adapters sit
    /// in the lowest slots: a fused step that no graph replays reads the widened weights' columns
    /// only up to its last adapted slot.
    private func victim(protecting batch: Set<UInt64>, base: Bool) throws -> Int {
        if let empty = base ? entries.lastIndex(where: { $0 == nil }) : entries.firstIndex(where: { $0 == nil }) { return empty }
        let candidates = entries.indices.filter { i in
            let e = entries[i]!
            return !e.pinned && !batch.contains(e.uid)
        }
        let key: (Int) -> Int = { i in policy == .lru ? entries[i]!.lastUsed : entries[i]!.loadedAt }
        guard let best = candidates.min(by: { key($0) < key($1) }) else {
            throw LoomError.invalidArgument("no LoRA slot can be freed: every slot holds a pinned adapter or one of this batch")
        }
        return best
    }
}
