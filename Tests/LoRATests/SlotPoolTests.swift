import LoomCore
import LoRA
import Testing

@Suite struct SlotPoolTests {
    @Test func fillsEmptySlotsThenEvictsLeastRecentlyUsed() throws {
        var pool = SlotPool(slotCount: 3, policy: .lru)
        var (slots, loads) = try pool.assign([1, 2])
        #expect(loads.count == 2 && Set(slots.values) == [0, 1])
        (_, loads) = try pool.assign([0])          // the base takes a slot, with nothing to copy
        #expect(loads.isEmpty)
        #expect(pool.slot(of: 0) == 2)
        #expect(pool.occupants.compactMap { $0 }.sorted() == [0, 1, 2])
        _ = try pool.assign([1])                   // 1 is now more recent than 2
        (slots, loads) = try pool.assign([3])
        #expect(loads == [SlotPool.Load(uid: 3, slot: slots[3]!)])
        #expect(pool.slot(of: 2) == nil, "2 was the least recently used")
        #expect(pool.slot(of: 1) != nil && pool.slot(of: 0) != nil)
    }

    /// Adapters fill the lowest empty slots, the base the highest.
    @Test func baseTakesTheLastEmptySlot() throws {
        var pool = SlotPool(slotCount: 8, policy: .lru)
        let (slots, loads) = try pool.assign([0, 5, 9])
        #expect(slots == [0: 7, 5: 0, 9: 1])
        #expect(loads == [SlotPool.Load(uid: 5, slot: 0), SlotPool.Load(uid: 9, slot: 1)])
    }

    @Test func fifoEvictsTheOldestLoadedEvenIfUsedRecently() throws {
        var pool = SlotPool(slotCount: 2, policy: .fifo)
        _ = try pool.assign([1])
        _ = try pool.assign([2])
        _ = try pool.assign([1])
        _ = try pool.assign([3])
        #expect(pool.slot(of: 1) == nil)
        #expect(pool.slot(of: 2) != nil)
    }

    @Test func neverEvictsAdaptersOfTheBatchOrPinnedOnes() throws {
        var pool = SlotPool(slotCount: 3, policy: .lru)
        _ = try pool.assign([1], pinned: [1])
        _ = try pool.assign([2, 3])
        // 1 is the LRU but pinned; 2 and 3 are in this batch with 4: no victim exists.
        #expect(throws: LoomError.self) { try pool.assign([2, 3, 4]) }
        let (_, loads) = try pool.assign([4, 3])
        #expect(loads.map(\.uid) == [4])
        #expect(pool.slot(of: 1) != nil && pool.slot(of: 3) != nil && pool.slot(of: 2) == nil)
    }

    @Test func refusesABatchLargerThanThePool() {
        var pool = SlotPool(slotCount: 2, policy: .lru)
        #expect(throws: LoomError.invalidArgument("a batch of 3 distinct adapters exceeds --max-loras-per-batch 2")) {
            try pool.assign([0, 1, 2])
        }
    }

    @Test func removedAdapterFreesItsSlot() throws {
        var pool = SlotPool(slotCount: 2, policy: .lru)
        _ = try pool.assign([1, 2])
        pool.remove(1)
        let (_, loads) = try pool.assign([2, 5])
        #expect(loads.map(\.uid) == [5])
        #expect(pool.slot(of: 2) != nil)
    }
}

@Suite struct BatchPlanTests {
    @Test func sgmvMakesOneSegmentPerSlotInStableOrder() {
        let plan = BatchPlan(rowSlots: [2, 0, 2, 1, 0, 2], kind: .sgmv, chunkSize: 2)
        #expect(plan.permutation == [1, 4, 3, 0, 2, 5])
        #expect(plan.segmentStarts == [0, 2, 3, 6])
        #expect(plan.segmentSlots == [0, 1, 2])
    }

    @Test func csgmvCutsEachSlotRunIntoChunks() {
        let plan = BatchPlan(rowSlots: [2, 0, 2, 1, 0, 2, 2, 2], kind: .csgmv, chunkSize: 2)
        #expect(plan.permutation == [1, 4, 3, 0, 2, 5, 6, 7])
        #expect(plan.segmentStarts == [0, 2, 3, 5, 7, 8])
        #expect(plan.segmentSlots == [0, 1, 2, 2, 2])
    }

    @Test func emptyBatchHasNoSegments() {
        let plan = BatchPlan(rowSlots: [], kind: .csgmv, chunkSize: 16)
        #expect(plan.segmentCount == 0 && plan.segmentStarts == [0])
    }

    /// A graph captured for a row count replays with any adapter mix: the capacity and the longest
    /// segment bound every plan of that many rows, the worst mixes included.
    @Test(arguments: [LoRABackendKind.sgmv, .csgmv, .fused])
    func capacityBoundsEveryPlan(kind: LoRABackendKind) {
        var state: UInt64 = 7
        func next(_ n: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(n))
        }
        for rows in [1, 2, 15, 16, 17, 31, 33, 256] {
            for slots in [1, 3, 8] {
                for chunk in [1, 4, 16] {
                    let capacity = BatchPlan.segmentCapacity(rows: rows, slots: slots, kind: kind, chunkSize: chunk)
                    let longest = BatchPlan.maxSegmentLength(rows: rows, kind: kind, chunkSize: chunk)
                    // Random mixes, and each slot holding chunk + 1 rows (one row past a chunk: the most segments).
                    var mixes = (0..<20).map { _ in (0..<rows).map { _ in next(slots) } }
                    mixes.append((0..<rows).map { ($0 / (chunk + 1)) % slots })
                    for rowSlots in mixes {
                        let plan = BatchPlan(rowSlots: rowSlots, kind: kind, chunkSize: chunk)
                        #expect(plan.segmentCount <= capacity, "rows \(rows) slots \(slots) chunk \(chunk)")
                        let lengths = zip(plan.segmentStarts.dropFirst(), plan.segmentStarts).map { Int($0 - $1) }
                        #expect(lengths.allSatisfy { $0 <= longest } && plan.longestSegment == lengths.max() ?? 0)
                        let padded = plan.padded(toCapacity: capacity)
                        #expect(padded.starts.count == capacity + 1 && padded.slots.count == capacity)
                        #expect(padded.starts.dropFirst(plan.segmentCount).allSatisfy { $0 == Int32(rows) })
                    }
                }
            }
        }
    }
}

@Suite struct LoRAPathSpecTests {
    @Test func parsesSGLangsThreeForms() throws {
        #expect(try LoRAPathSpec(parsing: "/a/b") == LoRAPathSpec(name: "/a/b", path: "/a/b"))
        #expect(try LoRAPathSpec(parsing: "sql=/a/b") == LoRAPathSpec(name: "sql", path: "/a/b"))
        #expect(try LoRAPathSpec(parsing: #"{"lora_name": "x", "lora_path": "/p", "pinned": true}"#)
                == LoRAPathSpec(name: "x", path: "/p", pinned: true))
        #expect(throws: LoomError.self) { try LoRAPathSpec(parsing: #"{"lora_name": 3}"#) }
        #expect(throws: LoomError.self) { try LoRAPathSpec(parsing: "=/p") }
    }

    @Test func backendNamesAcceptTritonAsSgmv() throws {
        #expect(try LoRABackendKind(flag: "triton") == .sgmv)
        #expect(try LoRABackendKind(flag: "csgmv") == .csgmv)
        #expect(try LoRABackendKind(flag: "fused") == .fused)
        #expect(throws: LoomError.invalidArgument("--lora-backend cutlass is not supported (csgmv, sgmv, triton, fused)")) {
            try LoRABackendKind(flag: "cutlass")
        }
    }
}
