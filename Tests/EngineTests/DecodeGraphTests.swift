import CPUBackend
import Engine
import Foundation
import LoomCore
import LoRA
import Models
import Testing

/// Decode steps padded to CUDA-graph batch sizes, checked on the CPU: a runner that just runs the
/// step stands in for the GPU's capture and replay, so padding alone is what differs.
@Suite struct DecodeGraphTests {
    // MARK: Buckets

    @Test func defaultBucketsFollowSGLang() {
        #expect(DecodeGraphs.defaultBatchSizes(maxBatchSize: 160) == [1, 2, 4, 8] + Array(stride(from: 16, through: 160, by: 8)))
        #expect(DecodeGraphs.defaultBatchSizes(maxBatchSize: 20) == [1, 2, 4, 8, 16, 20])
        #expect(DecodeGraphs.defaultBatchSizes(maxBatchSize: 8) == [1, 2, 4, 8])
        #expect(DecodeGraphs.defaultBatchSizes(maxBatchSize: 3) == [1, 2, 3])
        #expect(DecodeGraphs.defaultBatchSizes(maxBatchSize: 0) == [])
    }

    @Test func stepsPadToTheSmallestBucketThatHoldsThem() {
        let graphs = DecodeGraphs(batchSizes: DecodeGraphs.defaultBatchSizes(maxBatchSize: 40))
        let sizes = [1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 40, 41].map { graphs.batchSize(for: $0) }
        #expect(sizes == [1, 2, 4, 4, 8, 8, 16, 16, 24, 40, 40, nil])
        #expect(DecodeGraphs(batchSizes: [8, 2, 8]).batchSizes == [2, 8])
        #expect(DecodeGraphs(batchSizes: []).batchSize(for: 1) == nil)
        #expect(DecodeGraphs.key(batchSize: 16, hasLoRA: true) == "decode-b16-lora1")
    }

    @Test func engineCapsBucketsAtMaxRunningRequests() throws {
        var options = EngineOptions()
        options.maxRunningRequests = 12
        options.maxTotalTokens = 1024
        options.graphRunner = { _, _, body in body() }
        #expect(try makeEngine(options: options).graphBatchSizes == [1, 2, 4, 8, 12])
        options.cudaGraphMaxBatchSize = 6
        #expect(try makeEngine(options: options).graphBatchSizes == [1, 2, 4, 6])
        options.cudaGraphBatchSizes = [3, 16, 9]
        #expect(try makeEngine(options: options).graphBatchSizes == [3, 9])
        options.graphRunner = nil
        #expect(try makeEngine(options: options).graphBatchSizes == [])
    }

    @Test func onlyDecodeOnlyStepsArePadded() {
        let graphs = DecodeGraphs(batchSizes: [1, 2, 4, 8])
        func item(_ id: Int, tokens: Int = 1, prefill: Bool = false, logits: Bool = true) -> ScheduleDecision.Item {
            .init(sequenceID: id, adapterKey: 0, startPosition: 7, tokenCount: tokens, wantsLogits: logits, isPrefill: prefill)
        }
        var decode = ScheduleDecision()
        decode.items = (0..<3).map { item($0) }
        #expect(graphs.batchSize(for: decode) == 4)
        var mixed = decode
        mixed.items.append(item(3, tokens: 5, prefill: true))
        #expect(graphs.batchSize(for: mixed) == nil)
        var lastPromptToken = decode
        lastPromptToken.items.append(item(3, prefill: true))
        #expect(graphs.batchSize(for: lastPromptToken) == nil)
        var large = ScheduleDecision()
        large.items = (0..<9).map { item($0) }
        #expect(graphs.batchSize(for: large) == nil)
        #expect(graphs.batchSize(for: ScheduleDecision()) == nil)
    }

    @Test func firstStepOfAKeyRunsEagerly() {
        var graphs = DecodeGraphs(batchSizes: [4])
        let uses = ["decode-b4-lora0", "decode-b4-lora0", "decode-b4-lora1", "decode-b4-lora0"].map { graphs.shouldUseGraph($0) }
        #expect(uses == [false, true, false, true])
    }

    @Test func paddingRowsTakeAnAdapterTheStepAlreadyHolds() {
        #expect(DecodeGraphs.paddingAdapterKey(rowAdapterKeys: [5, 0, 7]) == 0)
        #expect(DecodeGraphs.paddingAdapterKey(rowAdapterKeys: [5, 7, 7]) == 5)
        #expect(DecodeGraphs.paddingAdapterKey(rowAdapterKeys: [0]) == 0)
    }

    @Test func paddingAppendsOneRowSequencesThatWriteNoKV() {
        var batch = ForwardBatch()
        batch.append(tokens: [9], startPosition: 20, blockTable: [3, 4], blockSize: 16)
        batch.appendPadding(count: 2)
        #expect(batch.tokens == [9, 0, 0])
        #expect(batch.positions == [20, 0, 0])
        #expect(batch.slotMapping == [4 * 16 + 4, -1, -1])
        #expect(batch.queryStarts == [0, 1, 2, 3])
        #expect(batch.contextLengths == [21, 1, 1])
        #expect(batch.blockTables == [[3, 4], [0], [0]])
        #expect(batch.logitsRows == [0, 1, 2])
    }

    // MARK: The engine, padded and not

    /// Every call of the runner, by key and rank.
    final class RunnerLog: @unchecked Sendable {
        private let lock = NSLock()
        private var calls: [String: Set<Int>] = [:]

        func record(_ key: String, rank: Int) { lock.withLock { _ = calls[key, default: []].insert(rank) } }
        var keys: [String: Set<Int>] { lock.withLock { calls } }
    }

    /// An engine on stories260K with the fixture adapters, not started yet.
    func makeEngine(options: EngineOptions, slots: Int = 8, tp: Int = 1) throws -> InferenceEngine {
        var lora = LoRAOptions()
        lora.maxLorasPerBatch = slots
        lora.maxLoadedLoras = max(slots, InferenceEngineTests.adapterNames.count)
        let specs = InferenceEngineTests.adapterNames.map { LoRAPathSpec(name: $0, path: fixture("models/stories260k/adapters/\($0)")) }
        return try InferenceEngine(modelPath: fixture("stories260k"), backends: (0..<tp).map { _ in CPUBackend() },
                                   communicators: tp == 1 ? [nil] : CPUCommunicator.group(size: tp), loraOptions: lora,
                                   loraPaths: specs, options: options, modelName: "stories260k")
    }

    /// Greedy outputs of `cases`, all submitted before the engine starts, so they are admitted
    /// together and decode in the same steps.
    func outputs(_ engine: InferenceEngine, _ cases: [InferenceEngineTests.Case], newTokens: Int = 24) async throws -> [[Int]] {
        defer { Task { await engine.shutdown(grace: 0) } }
        var params = SamplingParams()
        params.temperature = 0
        params.maxNewTokens = newTokens
        params.ignoreEos = true
        let streams = try cases.enumerated().map { i, c in
            let ref = try c.adapter.map { try #require(engine.adapters?.lookup($0)) }
            return engine.submit(EngineRequest(id: "g\(i)", promptIds: c.prompt, adapter: ref, params: params))
        }
        engine.start()
        var result: [[Int]] = []
        for stream in streams {
            var ids: [Int] = []
            for try await event in stream {
                if case .tokens(let new, _, _) = event { ids += new }
            }
            result.append(ids)
        }
        return result
    }

    /// 3 running requests pad to 4, 5 to 8; base and adapter rows mixed, and steps of one adapter
    /// only (no base row, every slot taken), where padding must not ask for a slot of its own.
    @Test(arguments: [
        (["r8-all", nil, "r4-qv"] as [String?], 8, 1, "decode-b4-lora1"),
        (["r16-mlp", "r32-attn-rslora", "r64-pattern", nil, "r8-layers"], 8, 1, "decode-b8-lora1"),
        (["r8-all", "r8-all", "r4-qv"], 2, 1, "decode-b4-lora1"),
        ([nil, nil, nil], 8, 1, "decode-b4-lora0"),
        (["r8-all", nil, "r4-qv", "r16-mlp", nil], 8, 2, "decode-b8-lora1"),
    ])
    func paddedDecodeMatchesTheUnpaddedEngine(adapters: [String?], slots: Int, tp: Int, expectedKey: String) async throws {
        // Prompts of 5 tokens: each prefills in one step, then all decode together.
        let cases = adapters.map { name in InferenceEngineTests.cases.first { $0.adapter == name && $0.prompt.count == 5 }! }
        var options = EngineOptions()
        options.maxRunningRequests = 16
        options.maxTotalTokens = 2048
        options.chunkedPrefillSize = 64
        let plain = try await outputs(try makeEngine(options: options, slots: slots, tp: tp), cases)
        let log = RunnerLog()
        options.graphRunner = { rank, key, body in
            log.record(key, rank: rank)
            body()
        }
        let padded = try await outputs(try makeEngine(options: options, slots: slots, tp: tp), cases)
        #expect(padded == plain)
        for (i, c) in cases.enumerated() {
            #expect(padded[i] == Array(c.greedy.prefix(24)), "case \(i) (\(c.adapter ?? "base")) against PEFT")
        }
        // One prefill step, then decode-only steps of them all: one key, on every rank.
        #expect(log.keys == [expectedKey: Set(0..<tp)])
    }

    /// Every PEFT reference case at once through 3 slots and 7-token prefill chunks: decode-only
    /// steps of every size as sequences join and finish, padded, between eager mixed steps.
    @Test func allReferenceCasesMatchPEFTWhenPadded() async throws {
        var options = EngineOptions()
        options.maxRunningRequests = 32
        options.maxTotalTokens = 4096
        options.chunkedPrefillSize = 7
        let log = RunnerLog()
        options.graphRunner = { rank, key, body in
            log.record(key, rank: rank)
            body()
        }
        let cases = InferenceEngineTests.cases
        let got = try await outputs(try makeEngine(options: options, slots: 3), cases, newTokens: 32)
        for (i, c) in cases.enumerated() {
            #expect(got[i] == c.greedy, "case \(i) (\(c.adapter ?? "base"))")
        }
        #expect(!log.keys.isEmpty)
    }
}
