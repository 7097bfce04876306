import LoomCore

/// Decides each step's work; the engine loop acts on the decisions. A value type with no device:
/// it owns the sequences, the `BlockManager` and the `PrefixCache`.
///
/// Each `schedule()`:
/// 1. caches the full blocks that earlier steps computed (so later requests can share them);
/// 2. continues every running sequence, oldest first: one decode token each (reserved from the
///    step's token limit), or the next chunk of a prefill within `chunkedPrefillSize`. When a
///    sequence needs a block and none is free, unlocked prefix-cache blocks are evicted, then the
///    newest running sequence is preempted (its blocks freed, its full blocks left in the prefix
///    cache, its tokens recomputed on readmission), down to the sequence itself;
/// 3. admits waiting sequences in arrival order (preempted ones first) while there is room:
///    `maxRunningRequests`, `maxLorasPerBatch` distinct adapters (base counts as one), prefill
///    budget, and KV blocks for all its tokens, prefix-cache hits counted and eviction tried.
///    A sequence whose adapter does not fit is skipped, not blocking those behind it; one that
///    lacks blocks stops admission (otherwise long prompts would starve behind short ones).
///
/// No starvation: a sequence skipped for its adapter more than `maxSkipSteps` times makes the
/// scheduler admit only sequences of that sequence's adapter until it is admitted. The guard
/// holds back even adapters already running: otherwise a steady stream for a running adapter
/// would keep it resident forever. With no new admissions the running adapters drain, so the
/// sequence is admitted at most a drain time (its rivals' remaining tokens) after the bound.
///
/// Contract with the engine: run every decision before the next `schedule()` (tokens scheduled
/// count as computed), `record` the sampled tokens, and call `abort` / `finish` between steps.
public struct Scheduler: Sendable {
    public let config: SchedulerConfig
    public internal(set) var blockManager: BlockManager
    public internal(set) var prefixCache: PrefixCache
    var sequences: [SequenceID: Sequence] = [:]
    /// Waiting sequences in admission order.
    public internal(set) var waitingIDs: [SequenceID] = []
    /// Running sequences, oldest admission first.
    public internal(set) var runningIDs: [SequenceID] = []
    public internal(set) var numSteps = 0
    /// Totals over the non-empty decisions (`/metrics`).
    public internal(set) var stepTotals = StepTotals()
    public internal(set) var numPreemptions = 0
    /// Prompt tokens of admitted sequences, and those of them served from the prefix cache.
    public internal(set) var totalPromptTokens = 0
    public internal(set) var totalCachedTokens = 0

    public init(config: SchedulerConfig) {
        precondition(config.maxRunningRequests >= 1 && config.maxLorasPerBatch >= 1 && config.chunkedPrefillSize >= 1)
        precondition(config.stepTokenLimit >= config.maxRunningRequests,
                     "a step of \(config.stepTokenLimit) tokens cannot decode \(config.maxRunningRequests) sequences")
        self.config = config
        blockManager = BlockManager(numBlocks: config.numBlocks, blockSize: config.blockSize)
        prefixCache = PrefixCache(blockSize: config.blockSize)
    }

    public subscript(id: SequenceID) -> Sequence? { sequences[id] }

    public var hasWork: Bool { !waitingIDs.isEmpty || !runningIDs.isEmpty }

    /// Queues a new sequence. Throws when it could never run: empty, too long for the context, or
    /// needing more KV blocks than the cache has.
    public mutating func add(_ sequence: Sequence) throws {
        precondition(sequence.status == .waiting && sequence.blockTable.isEmpty && sequence.outputIds.isEmpty)
        guard sequences[sequence.id] == nil else { throw LoomError.invalidArgument("sequence \(sequence.id) is already scheduled") }
        guard !sequence.promptIds.isEmpty else { throw LoomError.invalidArgument("the prompt is empty") }
        guard sequence.promptIds.count < config.maxModelLength else {
            throw LoomError.invalidArgument(
                "The input (\(sequence.promptIds.count) tokens) is longer than the model's context length (\(config.maxModelLength) tokens).")
        }
        let blocks = blockManager.blockCount(forTokens: sequence.promptIds.count + 1)
        guard blocks <= config.numBlocks else {
            throw LoomError.outOfMemory("the prompt needs \(blocks) KV blocks; the cache has \(config.numBlocks)")
        }
        sequences[sequence.id] = sequence
        waitingIDs.append(sequence.id)
    }

    /// The next step's work (empty when there is none).
    public mutating func schedule() -> ScheduleDecision {
        numSteps += 1
        var decision = ScheduleDecision()
        for id in runningIDs { cacheComputedBlocks(id) }
        let numDecoding = runningIDs.reduce(0) { $0 + (sequences[$1]!.isPrefilling ? 0 : 1) }
        var prefillBudget = min(config.chunkedPrefillSize, config.stepTokenLimit - numDecoding)
        continueRunning(&decision, prefillBudget: &prefillBudget)
        admitWaiting(&decision, prefillBudget: &prefillBudget)
        stepTotals.record(decision)
        return decision
    }

    /// Step 2: decode or continue the prefill of every running sequence, preempting under pressure.
    mutating func continueRunning(_ decision: inout ScheduleDecision, prefillBudget: inout Int) {
        var i = 0
        while i < runningIDs.count {
            let id = runningIDs[i]
            var seq = sequences[id]!
            let remaining = seq.tokenCount - seq.numComputedTokens
            precondition(remaining >= 1, "running sequence \(id) has nothing to compute")
            let chunk = remaining == 1 ? 1 : min(remaining, prefillBudget)
            guard chunk > 0 else {
                i += 1
                continue
            }
            let target = seq.numComputedTokens + chunk
            var fits = true
            while blockManager.blocksNeeded(for: seq, tokenCount: target) > blockManager.numFreeBlocks {
                let short = blockManager.blocksNeeded(for: seq, tokenCount: target) - blockManager.numFreeBlocks
                if prefixCache.evict(short, blockManager: &blockManager) >= short { continue }
                guard i < runningIDs.count - 1 else {
                    fits = false
                    break
                }
                let victim = runningIDs.last!
                preempt(victim)
                decision.preempted.append(victim)
            }
            guard fits else {
                if runningIDs.count == 1 {
                    // Alone, with every other block free or cached and still short: it never fits.
                    let needed = blockManager.blockCount(forTokens: target)
                    decision.finished.append(
                        finish(id, reason: .abort("the sequence needs \(needed) KV blocks; the cache has \(config.numBlocks)"))!)
                } else {
                    preempt(id)
                    decision.preempted.append(id)
                }
                continue
            }
            let grown = blockManager.appendSlot(for: &seq, tokenCount: target)
            precondition(grown)
            decision.items.append(.init(
                sequenceID: id, adapterKey: seq.adapterKey, startPosition: seq.numComputedTokens, tokenCount: chunk,
                wantsLogits: target == seq.tokenCount, isPrefill: remaining > 1 || seq.numComputedTokens < seq.promptIds.count))
            if remaining > 1 { prefillBudget -= chunk }
            seq.numComputedTokens = target
            sequences[id] = seq
            i += 1
        }
    }

    /// Step 3: admit waiting sequences (see the type's comment for the rules).
    mutating func admitWaiting(_ decision: inout ScheduleDecision, prefillBudget: inout Int) {
        var adapters = Set(runningIDs.map { sequences[$0]!.adapterKey })
        var starving = waitingIDs.first { sequences[$0]!.numSkippedSteps > config.maxSkipSteps }
        var index = 0
        while index < waitingIDs.count, runningIDs.count < config.maxRunningRequests, prefillBudget > 0 {
            let id = waitingIDs[index]
            var seq = sequences[id]!
            let adapterFits = adapters.contains(seq.adapterKey) || adapters.count < config.maxLorasPerBatch
            let guardAllows = starving.map { sequences[$0]!.adapterKey == seq.adapterKey } ?? true
            guard adapterFits && guardAllows else {
                sequences[id]!.numSkippedSteps += 1
                index += 1
                continue
            }
            let totalBlocks = blockManager.blockCount(forTokens: seq.tokenCount)
            guard totalBlocks <= config.numBlocks else {
                decision.finished.append(
                    finish(id, reason: .abort("the sequence needs \(totalBlocks) KV blocks; the cache has \(config.numBlocks)"))!)
                continue
            }
            let match = config.enablePrefixCache
                ? prefixCache.match(adapterKey: seq.adapterKey, tokens: seq.allTokenIds) : PrefixMatch()
            prefixCache.lock(match.node)
            let short = totalBlocks - match.blocks.count - blockManager.numFreeBlocks
            if short > 0 { prefixCache.evict(short, blockManager: &blockManager) }
            guard blockManager.allocate(for: &seq, cachedBlocks: match.blocks, tokenCount: seq.tokenCount) else {
                prefixCache.unlock(match.node)
                break
            }
            seq.cacheNode = match.node
            seq.numComputedTokens = match.matchedTokens
            if !seq.wasAdmitted {
                seq.wasAdmitted = true
                seq.numCachedTokens = match.matchedTokens
                totalPromptTokens += seq.promptIds.count
                totalCachedTokens += match.matchedTokens
            }
            seq.status = .running
            let remaining = seq.tokenCount - seq.numComputedTokens
            let chunk = min(remaining, prefillBudget)
            decision.items.append(.init(
                sequenceID: id, adapterKey: seq.adapterKey, startPosition: seq.numComputedTokens, tokenCount: chunk,
                wantsLogits: chunk == remaining, isPrefill: true))
            seq.numComputedTokens += chunk
            prefillBudget -= chunk
            sequences[id] = seq
            waitingIDs.remove(at: index)
            runningIDs.append(id)
            adapters.insert(seq.adapterKey)
            if starving == id { starving = nil }
        }
    }
}
