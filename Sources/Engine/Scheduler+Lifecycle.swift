extension Scheduler {
    /// Appends a token sampled for a sequence (an item with `wantsLogits`) and decides whether it
    /// finished: `length` at `max_new_tokens` or the context, else `stop` on one of
    /// `stop_token_ids` or (unless `ignore_eos`) EOS, once more than `min_new_tokens` tokens exist.
    /// Returns the finished sequence (its blocks released, its KV left in the prefix cache), or
    /// `nil` while it runs on, or when it is no longer running (aborted meanwhile).
    ///
    /// Stop strings need text, so the caller checks them and calls `finish(_:reason:)`.
    @discardableResult
    public mutating func record(token: Int, for id: SequenceID) -> Sequence? {
        guard sequences[id]?.status == .running else { return nil }
        // In place: a copy taken out of the dictionary would copy the output ids on every token.
        guard let reason = Self.append(token, to: &sequences[id]!, config: config) else { return nil }
        return finish(id, reason: reason)
    }

    /// Appends a sampled token to a running sequence; returns why it ends, if it does.
    private static func append(_ token: Int, to seq: inout Sequence, config: SchedulerConfig) -> FinishReason? {
        precondition(seq.numComputedTokens == seq.tokenCount, "sequence \(seq.id) has no logits to sample from this step")
        let limit = min(seq.params.maxNewTokens ?? .max, config.maxModelLength - seq.promptIds.count)
        if seq.outputIds.count >= limit { return .length(seq.outputIds.count) }
        seq.outputIds.append(token)
        if seq.outputIds.count >= limit { return .length(seq.outputIds.count) }
        if seq.outputIds.count > seq.params.minNewTokens,
           seq.params.stopTokenIds.contains(token) || (!seq.params.ignoreEos && config.eosTokenIds.contains(token)) {
            return .stopToken(token)
        }
        return nil
    }

    /// Ends a sequence now (a stop string matched, or any other reason), releasing its blocks.
    /// Returns its final record, or `nil` if it is unknown or already finished.
    @discardableResult
    public mutating func finish(_ id: SequenceID, reason: FinishReason) -> Sequence? {
        guard var seq = sequences.removeValue(forKey: id) else { return nil }
        if seq.status == .running {
            releaseBlocks(&seq)
            runningIDs.removeAll { $0 == id }
        } else {
            waitingIDs.removeAll { $0 == id }
        }
        seq.status = .finished
        seq.finishReason = reason
        return seq
    }

    /// Ends a sequence whose client went away; its blocks are free when this returns.
    @discardableResult
    public mutating func abort(_ id: SequenceID, message: String = "Aborted by the client.") -> Sequence? {
        finish(id, reason: .abort(message))
    }

    /// Sends a running sequence back to the front of the waiting queue, keeping its output and
    /// random stream; its computed full blocks stay in the prefix cache, so readmission recomputes
    /// only what was evicted meanwhile.
    mutating func preempt(_ id: SequenceID) {
        var seq = sequences[id]!
        releaseBlocks(&seq)
        seq.status = .waiting
        seq.numComputedTokens = 0
        seq.numPreemptions += 1
        numPreemptions += 1
        sequences[id] = seq
        runningIDs.removeAll { $0 == id }
        waitingIDs.insert(id, at: 0)
    }

    /// Caches a running sequence's computed full blocks and moves its lock to the deepest one.
    mutating func cacheComputedBlocks(_ id: SequenceID) {
        guard config.enablePrefixCache else { return }
        var seq = sequences[id]!
        cacheComputedBlocks(&seq)
        sequences[id] = seq
    }

    mutating func cacheComputedBlocks(_ seq: inout Sequence) {
        guard config.enablePrefixCache else { return }
        let fullBlocks = seq.numComputedTokens / config.blockSize
        guard fullBlocks > (seq.cacheNode.map { prefixCache.depth(of: $0) } ?? 0) else { return }
        let node = prefixCache.insert(
            adapterKey: seq.adapterKey, tokens: seq.allTokenIds, tokenCount: fullBlocks * config.blockSize,
            blocks: seq.blockTable, from: seq.cacheNode, blockManager: &blockManager)
        guard node != seq.cacheNode else { return }
        prefixCache.lock(node)
        prefixCache.unlock(seq.cacheNode)
        seq.cacheNode = node
    }

    /// Caches what the sequence computed, drops its lock and its block references.
    mutating func releaseBlocks(_ seq: inout Sequence) {
        cacheComputedBlocks(&seq)
        prefixCache.unlock(seq.cacheNode)
        seq.cacheNode = nil
        blockManager.free(&seq)
    }

    /// SGLang's `/flush_cache`: drops every prefix-cache entry no running sequence uses; returns
    /// the blocks freed.
    @discardableResult
    public mutating func flushCache() -> Int {
        prefixCache.flush(blockManager: &blockManager)
    }

    /// Drops the unlocked prefix-cache entries of an unloaded adapter instance; returns the blocks freed.
    @discardableResult
    public mutating func removeCachedBlocks(adapterKey: UInt64) -> Int {
        prefixCache.remove(adapterKey: adapterKey, blockManager: &blockManager)
    }
}
