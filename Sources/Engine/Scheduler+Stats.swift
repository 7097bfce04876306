/// One adapter instance's share of the load (for `vllm:lora_requests_info` and `/get_server_info`).
public struct AdapterLoad: Equatable, Sendable {
    /// 0 for the base model.
    public var adapterKey: UInt64
    public var adapterName: String?
    public var numRunning: Int
    public var numWaiting: Int
}

extension Scheduler {
    public var numRunning: Int { runningIDs.count }
    public var numWaiting: Int { waitingIDs.count }
    public var numFreeBlocks: Int { blockManager.numFreeBlocks }
    /// Blocks the prefix cache holds that no sequence locks: reclaimable on demand.
    public var numEvictableBlocks: Int { prefixCache.numUnlockedBlocks }

    /// The share of KV blocks held by sequences (cached-but-unused blocks count as available, as in
    /// SGLang's `token_usage`).
    public var tokenUsage: Double {
        Double(blockManager.numUsedBlocks - numEvictableBlocks) / Double(config.numBlocks)
    }

    /// Prompt tokens served from the prefix cache over all admitted prompt tokens.
    public var cacheHitRate: Double {
        totalPromptTokens == 0 ? 0 : Double(totalCachedTokens) / Double(totalPromptTokens)
    }

    /// Running and waiting counts per adapter instance, by key (base first).
    public var adapterLoads: [AdapterLoad] {
        var loads: [UInt64: AdapterLoad] = [:]
        func add(_ id: SequenceID, running: Bool) {
            let s = sequences[id]!
            loads[s.adapterKey, default: AdapterLoad(adapterKey: s.adapterKey, adapterName: s.adapterName, numRunning: 0, numWaiting: 0)]
                .numRunning += running ? 1 : 0
            loads[s.adapterKey]!.numWaiting += running ? 0 : 1
        }
        for id in runningIDs { add(id, running: true) }
        for id in waitingIDs { add(id, running: false) }
        return loads.values.sorted { $0.adapterKey < $1.adapterKey }
    }
}
