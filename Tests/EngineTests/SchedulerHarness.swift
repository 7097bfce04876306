import Testing
@testable import Engine

/// Plays the engine loop around a `Scheduler`: schedule, build the batch, "sample" a token for
/// every item that wants logits, record it; and checks the block accounting after every step.
struct SchedulerHarness {
    var scheduler: Scheduler
    var finished: [SequenceID: Sequence] = [:]
    var decisions: [ScheduleDecision] = []
    private var nextID = 0

    init(_ config: SchedulerConfig) {
        scheduler = Scheduler(config: config)
    }

    static func config(
        numBlocks: Int = 64, blockSize: Int = 4, maxModelLength: Int = 1024, _ change: (inout SchedulerConfig) -> Void = { _ in }
    ) -> SchedulerConfig {
        var c = SchedulerConfig(numBlocks: numBlocks, blockSize: blockSize, maxModelLength: maxModelLength)
        change(&c)
        return c
    }

    /// Queues a sequence; returns its id.
    @discardableResult
    mutating func add(
        prompt: [Int], adapter: UInt64 = 0, maxNewTokens: Int? = 4, _ change: (inout SamplingParams) -> Void = { _ in }
    ) -> SequenceID {
        var params = SamplingParams()
        params.maxNewTokens = maxNewTokens
        change(&params)
        let id = nextID
        nextID += 1
        try! scheduler.add(Sequence(id: id, promptIds: prompt, params: params, adapterKey: adapter,
                                    adapterName: adapter == 0 ? nil : "adapter-\(adapter)"))
        return id
    }

    /// One engine step; `token` picks each sampled token (default: 1, never a stop token here).
    @discardableResult
    mutating func step(token: (Sequence) -> Int = { _ in 1 }) -> ScheduleDecision {
        step { scheduler, id in token(scheduler[id]!) }
    }

    /// One engine step that samples each token with `sampler` from the same logits row.
    @discardableResult
    mutating func step(sampler: Sampler, logits: [Float]) -> ScheduleDecision {
        step { scheduler, id in logits.withUnsafeBufferPointer { scheduler.sample(sampler, logits: $0, for: id).token } }
    }

    mutating func step(pick: (inout Scheduler, SequenceID) -> Int) -> ScheduleDecision {
        let decision = scheduler.schedule()
        let batch = scheduler.forwardBatch(for: decision)
        #expect(batch.tokenCount == decision.tokenCount)
        #expect(batch.logitsRows.count == decision.items.filter(\.wantsLogits).count)
        #expect(decision.tokenCount <= scheduler.config.stepTokenLimit)
        #expect(decision.numPrefillTokens <= scheduler.config.chunkedPrefillSize)
        #expect(decision.adapterKeys.count <= scheduler.config.maxLorasPerBatch)
        #expect(scheduler.numRunning <= scheduler.config.maxRunningRequests)
        for s in decision.finished { finished[s.id] = s }
        for item in decision.items where item.wantsLogits {
            let token = pick(&scheduler, item.sequenceID)
            if let done = scheduler.record(token: token, for: item.sequenceID) {
                finished[done.id] = done
            }
        }
        decisions.append(decision)
        checkAccounting()
        return decision
    }

    /// Steps until nothing is left (at most `limit` steps).
    mutating func drain(limit: Int = 1000) {
        var steps = 0
        while scheduler.hasWork && steps < limit {
            step()
            steps += 1
        }
        #expect(!scheduler.hasWork, "the scheduler did not drain in \(limit) steps")
    }

    /// Every block's reference count is the number of running tables listing it plus one if a
    /// cache node holds it; free blocks are exactly those with no holder.
    func checkAccounting(sourceLocation: SourceLocation = #_sourceLocation) {
        let bm = scheduler.blockManager
        var expected = [Int](repeating: 0, count: bm.numBlocks)
        for id in scheduler.runningIDs {
            for b in scheduler[id]!.blockTable { expected[Int(b)] += 1 }
        }
        for id in scheduler.waitingIDs { #expect(scheduler[id]!.blockTable.isEmpty, sourceLocation: sourceLocation) }
        for node in scheduler.prefixCache.nodes where node.isLive && node.parent >= 0 { expected[Int(node.block)] += 1 }
        for b in 0..<bm.numBlocks {
            #expect(bm.refCount(of: Int32(b)) == expected[b], "block \(b)", sourceLocation: sourceLocation)
        }
        #expect(bm.numFreeBlocks == expected.filter { $0 == 0 }.count, sourceLocation: sourceLocation)
    }

    /// After everything finished: no block is held but by the cache, and a flush frees them all.
    mutating func expectIdle(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(scheduler.numRunning == 0 && scheduler.numWaiting == 0, sourceLocation: sourceLocation)
        #expect(scheduler.numFreeBlocks + scheduler.numEvictableBlocks == scheduler.config.numBlocks, sourceLocation: sourceLocation)
        scheduler.flushCache()
        #expect(scheduler.numFreeBlocks == scheduler.config.numBlocks, sourceLocation: sourceLocation)
        #expect(scheduler.prefixCache.numCachedBlocks == 0, sourceLocation: sourceLocation)
    }

    /// The step index (0-based) at which a sequence was first scheduled, if it was.
    func admissionStep(of id: SequenceID) -> Int? {
        decisions.firstIndex { $0.items.contains { $0.sequenceID == id } }
    }
}
