import LoomCore
import Testing
@testable import Engine

@Test func admitsAtMostMaxLorasAdaptersAndSkipsWithoutBlocking() {
    var h = SchedulerHarness(SchedulerHarness.config { $0.maxLorasPerBatch = 2 })
    let a1 = h.add(prompt: [1, 2], adapter: 1, maxNewTokens: 2)
    let b1 = h.add(prompt: [1, 2], adapter: 2, maxNewTokens: 10)
    let c1 = h.add(prompt: [1, 2], adapter: 3, maxNewTokens: 2)
    let a2 = h.add(prompt: [1, 2], adapter: 1, maxNewTokens: 2)
    let base = h.add(prompt: [1, 2], adapter: 0, maxNewTokens: 2)
    let b2 = h.add(prompt: [1, 2], adapter: 2, maxNewTokens: 10)
    let d1 = h.step()
    // Adapters 3 and base do not fit; those behind them still get in.
    #expect(d1.items.map(\.sequenceID) == [a1, b1, a2, b2])
    #expect(d1.adapterKeys == [1, 2])
    #expect(h.scheduler[c1]?.numSkippedSteps == 1 && h.scheduler[base]?.numSkippedSteps == 1)
    #expect(h.scheduler.adapterLoads == [
        AdapterLoad(adapterKey: 0, adapterName: nil, numRunning: 0, numWaiting: 1),
        AdapterLoad(adapterKey: 1, adapterName: "adapter-1", numRunning: 2, numWaiting: 0),
        AdapterLoad(adapterKey: 2, adapterName: "adapter-2", numRunning: 2, numWaiting: 0),
        AdapterLoad(adapterKey: 3, adapterName: "adapter-3", numRunning: 0, numWaiting: 1),
    ])
    h.step()  // adapter 1's sequences finish
    let d3 = h.step()
    // Its slot goes to the oldest skipped request (c1); the base request still does not fit.
    #expect(d3.items.contains { $0.sequenceID == c1 } && !d3.items.contains { $0.sequenceID == base })
    #expect(Set(d3.adapterKeys) == [2, 3])
    h.drain()
    #expect(h.finished.count == 6)
    h.expectIdle()
}

/// Feeds the running adapters one new short request per step while a request for another adapter
/// waits; returns the step at which that request was first scheduled.
private func starvedAdmissionStep(maxSkipSteps: Int, adapters: [UInt64], maxLoras: Int, steps: Int) -> Int? {
    var h = SchedulerHarness(SchedulerHarness.config(numBlocks: 1024) {
        $0.maxLorasPerBatch = maxLoras
        $0.maxSkipSteps = maxSkipSteps
    })
    for adapter in adapters { h.add(prompt: [1, 2, 3], adapter: adapter, maxNewTokens: 3) }
    let starved = h.add(prompt: [4, 5, 6], adapter: 99, maxNewTokens: 3)
    for s in 0..<steps where h.admissionStep(of: starved) == nil {
        h.add(prompt: [7, 8, 9], adapter: adapters[s % adapters.count], maxNewTokens: 3)
        h.step()
    }
    return h.admissionStep(of: starved)
}

@Test func starvationBoundAdmitsALongSkippedRequest() {
    let bound = 8
    // Skipped bound + 1 times, then the running adapters drain (three tokens each) and it gets in.
    let single = starvedAdmissionStep(maxSkipSteps: bound, adapters: [1], maxLoras: 1, steps: 100)
    #expect(single != nil && single! <= bound + 1 + 3)
    let pair = starvedAdmissionStep(maxSkipSteps: bound, adapters: [1, 2], maxLoras: 2, steps: 100)
    #expect(pair != nil && pair! <= bound + 1 + 3)
    // Control: with the bound out of reach the same streams starve it.
    #expect(starvedAdmissionStep(maxSkipSteps: 10_000, adapters: [1], maxLoras: 1, steps: 60) == nil)
    #expect(starvedAdmissionStep(maxSkipSteps: 10_000, adapters: [1, 2], maxLoras: 2, steps: 60) == nil)
}

@Test func aRequestShortOfBlocksHoldsTheQueue() {
    var h = SchedulerHarness(SchedulerHarness.config(numBlocks: 6) { $0.enablePrefixCache = false })
    let a = h.add(prompt: Array(0..<16), maxNewTokens: 3)
    let b = h.add(prompt: Array(0..<12), maxNewTokens: 1)
    let c = h.add(prompt: [1], maxNewTokens: 1)
    let d = h.step()
    // b needs three blocks and two are free; c would fit but waits its turn (FCFS on memory).
    #expect(d.items.map(\.sequenceID) == [a])
    #expect(h.scheduler[b]?.numSkippedSteps == 0 && h.scheduler[c]?.status == .waiting)
    h.drain()
    #expect(Set(h.finished.keys) == [a, b, c])
    h.expectIdle()
}

@Test func preemptsTheNewestUnderBlockPressureAndResumes() {
    // Nine 4-token blocks; three 8-token prompts take six and grow a block every four tokens.
    var h = SchedulerHarness(SchedulerHarness.config(numBlocks: 9) { $0.enablePrefixCache = false })
    let a = h.add(prompt: Array(0..<8), maxNewTokens: 10)
    let b = h.add(prompt: Array(10..<18), maxNewTokens: 10)
    let c = h.add(prompt: Array(20..<28), maxNewTokens: 10)
    h.drain()
    let preempted = h.decisions.flatMap(\.preempted)
    #expect(preempted.first == c && !preempted.contains(a))
    #expect(h.scheduler.numPreemptions == preempted.count)
    for id in [a, b, c] {
        #expect(h.finished[id]?.outputIds.count == 10 && h.finished[id]?.finishReason == .length(10))
    }
    // Readmitted, c recomputes its prompt and the output it had, from position 0.
    let p = h.decisions.firstIndex { $0.preempted.contains(c) }!
    let outputsBefore = h.decisions[..<p].flatMap(\.items).filter { $0.sequenceID == c && $0.wantsLogits }.count
    let resume = h.decisions[p...].flatMap(\.items).first { $0.sequenceID == c }
    #expect(resume?.startPosition == 0 && resume?.tokenCount == 8 + outputsBefore && resume?.isPrefill == true)
    #expect(h.finished[c]!.numPreemptions >= 1)
    h.expectIdle()
}

@Test func preemptedSequencesResumeFromThePrefixCache() {
    var h = SchedulerHarness(SchedulerHarness.config(numBlocks: 6))
    let a = h.add(prompt: Array(0..<8), maxNewTokens: 10)
    let b = h.add(prompt: Array(10..<18), maxNewTokens: 10)
    h.drain()
    let p = h.decisions.firstIndex { $0.preempted.contains(b) }
    #expect(p != nil)
    let resume = h.decisions[p!...].flatMap(\.items).first { $0.sequenceID == b }
    #expect((resume?.startPosition ?? 0) > 0, "the preempted sequence's cached blocks are reused")
    #expect(h.finished[a]?.outputIds.count == 10 && h.finished[b]?.outputIds.count == 10)
    // Only the first admission's hit counts as the prompt's cached tokens.
    #expect(h.finished[b]?.numCachedTokens == 0)
    h.expectIdle()
}

@Test func aSequenceThatCanNeverFitIsRefusedOrAborted() {
    var h = SchedulerHarness(SchedulerHarness.config(numBlocks: 3))
    #expect(throws: LoomError.self) { try h.scheduler.add(Sequence(id: 50, promptIds: Array(0..<12))) }
    let a = h.add(prompt: Array(0..<8), maxNewTokens: 100)
    h.drain()
    // Twelve tokens fill the three blocks; the thirteenth cannot be placed.
    #expect(h.finished[a]?.finishReason == .abort("the sequence needs 4 KV blocks; the cache has 3"))
    #expect(h.finished[a]?.outputIds.count == 5)
    h.expectIdle()
}

@Test func countersReportLoad() {
    var h = SchedulerHarness(SchedulerHarness.config(numBlocks: 10) { $0.maxRunningRequests = 1 })
    let first = h.add(prompt: Array(0..<8), adapter: 5, maxNewTokens: 2)
    let second = h.add(prompt: Array(0..<8), adapter: 5, maxNewTokens: 2)
    h.step()
    #expect(h.scheduler.numRunning == 1 && h.scheduler.numWaiting == 1)
    #expect(h.scheduler.numFreeBlocks == 8 && h.scheduler.tokenUsage == 0.2)
    #expect(h.scheduler.adapterLoads == [AdapterLoad(adapterKey: 5, adapterName: "adapter-5", numRunning: 1, numWaiting: 1)])
    h.drain()
    #expect(h.finished[first]?.numCachedTokens == 0 && h.finished[second]?.numCachedTokens == 4)
    #expect(h.scheduler.numEvictableBlocks == 2 && h.scheduler.tokenUsage == 0)
    #expect(h.scheduler.adapterLoads.isEmpty && h.scheduler.cacheHitRate == 0.25)
    h.expectIdle()
}

@Test func seededSequencesDrawTheSameTokensAcrossPreemption() {
    let sampler = Sampler(vocabSize: 16, eosTokenIds: [])
    let row = (0..<16).map { Float($0 % 5) * 0.3 }
    func run(numBlocks: Int) -> (outputs: [[Int]], preemptions: Int) {
        var h = SchedulerHarness(SchedulerHarness.config(numBlocks: numBlocks) { $0.enablePrefixCache = false })
        let ids = (0..<3).map { i in
            h.add(prompt: Array(i * 10 ..< i * 10 + 8), maxNewTokens: 10) { $0.samplingSeed = 42 + i }
        }
        var steps = 0
        while h.scheduler.hasWork && steps < 200 {
            h.step(sampler: sampler, logits: row)
            steps += 1
        }
        return (ids.map { h.finished[$0]?.outputIds ?? [] }, h.scheduler.numPreemptions)
    }
    let roomy = run(numBlocks: 64), tight = run(numBlocks: 9)
    #expect(roomy.preemptions == 0 && tight.preemptions > 0)
    #expect(roomy.outputs == tight.outputs && roomy.outputs.allSatisfy { $0.count == 10 })
    #expect(Set(roomy.outputs).count == 3, "different seeds draw different tokens")
}
