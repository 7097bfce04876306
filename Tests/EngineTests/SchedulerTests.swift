import LoomCore
import Testing
@testable import Engine

@Test func sequencesRunToTheirLimitAndReleaseEverything() {
    var h = SchedulerHarness(SchedulerHarness.config())
    let a = h.add(prompt: Array(0..<10), maxNewTokens: 3)
    let b = h.add(prompt: Array(20..<25), maxNewTokens: 5)
    let first = h.step()
    #expect(first.items.map(\.sequenceID) == [a, b])
    #expect(first.items.map(\.tokenCount) == [10, 5] && first.items.allSatisfy { $0.isPrefill && $0.wantsLogits })
    let second = h.step()
    #expect(second.items.map(\.tokenCount) == [1, 1] && second.items.allSatisfy { !$0.isPrefill && $0.wantsLogits })
    #expect(second.items.map(\.startPosition) == [10, 5])
    h.drain()
    #expect(h.finished[a]?.outputIds == [1, 1, 1] && h.finished[a]?.finishReason == .length(3))
    #expect(h.finished[b]?.finishReason == .length(5) && h.finished[b]?.status == .finished)
    h.expectIdle()
}

@Test func forwardBatchCarriesPositionsAndSlots() {
    var h = SchedulerHarness(SchedulerHarness.config())
    let a = h.add(prompt: Array(0..<6))
    h.step()
    let decision = h.scheduler.schedule()
    let batch = h.scheduler.forwardBatch(for: decision)
    let table = h.scheduler[a]!.blockTable
    #expect(batch.tokens == [1] && batch.positions == [6] && batch.contextLengths == [7])
    #expect(batch.slotMapping == [table[1] * 4 + 2] && batch.blockTables == [table] && batch.logitsRows == [0])
    #expect(decision.rowAdapterKeys == [0])
}

@Test func recordStopsOnStopTokensOnlyAfterMinNewTokens() {
    var h = SchedulerHarness(SchedulerHarness.config { $0.eosTokenIds = [2] })
    let plain = h.add(prompt: [5, 6], maxNewTokens: 10)
    let patient = h.add(prompt: [5, 6], maxNewTokens: 10) { $0.minNewTokens = 2 }
    let ignoring = h.add(prompt: [5, 6], maxNewTokens: 10) { $0.ignoreEos = true; $0.stopTokenIds = [9] }
    h.step { _ in 2 }
    #expect(h.finished[plain]?.finishReason == .stopToken(2))
    h.step { _ in 2 }
    #expect(h.finished[patient] == nil, "two tokens are not more than min_new_tokens = 2")
    h.step { _ in 2 }
    #expect(h.finished[patient]?.finishReason == .stopToken(2) && h.finished[patient]?.outputIds == [2, 2, 2])
    #expect(h.finished[ignoring] == nil)
    h.step { _ in 9 }
    #expect(h.finished[ignoring]?.finishReason == .stopToken(9))
    h.expectIdle()
}

@Test func lengthLimitsIncludeTheContext() {
    var h = SchedulerHarness(SchedulerHarness.config(maxModelLength: 8))
    let zero = h.add(prompt: [1, 2], maxNewTokens: 0)
    let unbounded = h.add(prompt: [1, 2, 3, 4, 5], maxNewTokens: nil)
    h.drain()
    #expect(h.finished[zero]?.finishReason == .length(0) && h.finished[zero]?.outputIds == [])
    #expect(h.finished[unbounded]?.finishReason == .length(3) && h.finished[unbounded]?.tokenCount == 8)
    #expect(throws: LoomError.self) { try h.scheduler.add(Sequence(id: 99, promptIds: Array(0..<8))) }
    #expect(throws: LoomError.self) { try h.scheduler.add(Sequence(id: 98, promptIds: [])) }
    h.expectIdle()
}

@Test func stopStringsFinishFromOutside() {
    var h = SchedulerHarness(SchedulerHarness.config())
    let a = h.add(prompt: Array(0..<9), maxNewTokens: 50)
    h.step()
    h.step()
    let done = h.scheduler.finish(a, reason: .stopString("\n"))
    #expect(done?.finishReason == .stopString("\n") && done?.outputIds.count == 2)
    #expect(h.scheduler.finish(a, reason: .stopString("\n")) == nil)
    #expect(h.scheduler.record(token: 1, for: a) == nil)
    h.expectIdle()
}

@Test func abortReleasesBlocksAtOnce() {
    var h = SchedulerHarness(SchedulerHarness.config { $0.maxRunningRequests = 1; $0.enablePrefixCache = false })
    let running = h.add(prompt: Array(0..<10), maxNewTokens: 100)
    let waiting = h.add(prompt: Array(0..<10), maxNewTokens: 100)
    h.step()
    h.step()
    #expect(h.scheduler.numRunning == 1 && h.scheduler.numWaiting == 1 && h.scheduler.numFreeBlocks < 64)
    let aborted = h.scheduler.abort(running)
    #expect(aborted?.finishReason == .abort("Aborted by the client.") && aborted?.blockTable == [])
    #expect(h.scheduler.numFreeBlocks == 64)
    #expect(h.scheduler.record(token: 1, for: running) == nil)
    #expect(h.scheduler.abort(waiting)?.status == .finished)
    #expect(h.scheduler.abort(waiting) == nil && !h.scheduler.hasWork)
    #expect(h.scheduler.schedule().isEmpty)
    h.expectIdle()
}

@Test func prefixHitsOnlyWithinTheSameAdapterInstance() {
    var h = SchedulerHarness(SchedulerHarness.config())
    let prompt = Array(0..<18)
    let first = h.add(prompt: prompt, adapter: 1, maxNewTokens: 2)
    h.drain()
    #expect(h.finished[first]?.numCachedTokens == 0)
    let same = h.add(prompt: prompt, adapter: 1)
    let other = h.add(prompt: prompt, adapter: 2)
    let base = h.add(prompt: prompt, adapter: 0)
    let step = h.step()
    #expect(step.items.first { $0.sequenceID == same }?.startPosition == 16)
    #expect(step.items.first { $0.sequenceID == other }?.startPosition == 0)
    h.drain()
    #expect(h.finished[same]?.numCachedTokens == 16)
    #expect(h.finished[other]?.numCachedTokens == 0 && h.finished[base]?.numCachedTokens == 0)
    // The adapter was reloaded: a new key, so none of the old KV is reused.
    let reloaded = h.add(prompt: prompt, adapter: 3)
    // A prompt that is exactly a cached prefix still computes its last block.
    let exact = h.add(prompt: Array(0..<16), adapter: 1)
    h.drain()
    #expect(h.finished[reloaded]?.numCachedTokens == 0)
    #expect(h.finished[exact]?.numCachedTokens == 12)
    #expect(h.scheduler.totalCachedTokens == 28 && h.scheduler.totalPromptTokens == 18 * 5 + 16)
    h.expectIdle()
}

@Test func chunkedPrefillSplitsALongPromptOverSteps() {
    var h = SchedulerHarness(SchedulerHarness.config { $0.chunkedPrefillSize = 8 })
    let long = h.add(prompt: Array(0..<20), maxNewTokens: 2)
    let d1 = h.step()
    #expect(d1.items.map { [$0.startPosition, $0.tokenCount] } == [[0, 8]] && !d1.items[0].wantsLogits)
    let d2 = h.step()
    #expect(d2.items.map { [$0.startPosition, $0.tokenCount] } == [[8, 8]] && !d2.items[0].wantsLogits)
    #expect(h.scheduler[long]!.outputIds.isEmpty)
    let short = h.add(prompt: [1, 2, 3, 4, 5], maxNewTokens: 2)
    let d3 = h.step()
    // The running prefill goes first; the newcomer gets what is left of the budget (8 - 4).
    #expect(d3.items.map(\.sequenceID) == [long, short])
    #expect(d3.items.map { [$0.startPosition, $0.tokenCount] } == [[16, 4], [0, 4]])
    #expect(d3.items.map(\.wantsLogits) == [true, false])
    let d4 = h.step()
    #expect(d4.items.map { [$0.startPosition, $0.tokenCount] } == [[20, 1], [4, 1]])
    #expect(d4.items.map(\.isPrefill) == [false, true])
    h.drain()
    #expect(h.finished[long]?.outputIds.count == 2 && h.finished[short]?.outputIds.count == 2)
    h.expectIdle()
}

@Test func decodeTokensAreReservedFromTheStepLimit() {
    var h = SchedulerHarness(SchedulerHarness.config {
        $0.chunkedPrefillSize = 8
        $0.maxBatchTokens = 6
        $0.maxRunningRequests = 3
    })
    h.add(prompt: [1, 2], maxNewTokens: 10)
    h.add(prompt: [3, 4], maxNewTokens: 10)
    h.step()
    h.add(prompt: Array(0..<12), maxNewTokens: 2)
    let d = h.step()
    // Two decodes, so the prefill gets 6 - 2 = 4 tokens.
    #expect(d.items.map(\.tokenCount) == [1, 1, 4] && d.tokenCount == 6)
    h.drain()
    h.expectIdle()
}

@Test func stepTotalsCountTokensSequencesAndDistinctAdapters() {
    var h = SchedulerHarness(SchedulerHarness.config())
    h.add(prompt: Array(0..<10))
    h.add(prompt: Array(0..<5), adapter: 7)
    h.add(prompt: Array(0..<3), adapter: 7)
    h.add(prompt: Array(0..<4), adapter: 9)
    let first = h.step(), second = h.step()
    #expect(first.items.allSatisfy(\.isPrefill) && second.items.allSatisfy { !$0.isPrefill })
    var expected = StepTotals()
    expected.steps = 2
    expected.tokens = 22 + 4
    expected.prefillTokens = 22
    expected.sequences = 8
    expected.adapters = 4  // 7 and 9 in each step; the base model is not counted
    #expect(h.scheduler.stepTotals == expected)
    // An empty decision counts nothing.
    h.drain()
    let totals = h.scheduler.stepTotals
    _ = h.scheduler.schedule()
    #expect(h.scheduler.stepTotals == totals)
}
