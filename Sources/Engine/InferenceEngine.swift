import Foundation
import LoomCore
import LoRA
import ModelFormats
import Models
import Tokenization

/// The serving loop: continuous batching on a thread of its own (it blocks on the device), fed by
/// `submit` from any thread. The `Scheduler` decides each step; this class acts on its decisions.
public final class InferenceEngine: InferenceService, @unchecked Sendable {
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    public let lora: LoRAManager?
    public let options: EngineOptions
    public let modelName: String
    public let modelPath: String
    public let maxContextLength: Int
    /// The batch sizes decode steps are padded to and run from graphs (empty without a graph runner).
    public let graphBatchSizes: [Int]
    public var modelConfig: ModelConfig { model.config }
    public var adapters: AdapterRegistry? { lora?.registry }

    let cache: KVCache
    let sampler: Sampler
    /// Token ids sampled on the device (greedy rows), one per logits row of a step.
    let sampledIDs: DeviceTensor
    /// Engine-thread state.
    var scheduler: Scheduler
    var streams: [SequenceID: RequestStream] = [:]
    var sequenceByRequest: [String: SequenceID] = [:]
    var refs: [UInt64: AdapterRef] = [:]
    var decodeGraphs: DecodeGraphs

    /// Shared state, guarded by `condition`.
    let condition = NSCondition()
    var inbox: [(EngineRequest, AsyncThrowingStream<EngineEvent, Error>.Continuation)] = []
    var abortRequests: [String] = []
    var removedAdapterKeys: [UInt64] = []
    var flushRequested = false
    var isStopping = false
    var isStopped = false
    var snapshot = EngineStats()
    var nextSequenceID = 0
    var pendingGenerated = 0
    var thread: Thread?

    /// Loads the model and tokenizer from `modelPath` and sizes the KV cache.
    public init(model: LlamaModel, tokenizer: Tokenizer, lora: LoRAManager?, options: EngineOptions, modelName: String, modelPath: String) throws {
        self.model = model
        self.tokenizer = tokenizer
        self.lora = lora
        self.options = options
        self.modelName = modelName
        self.modelPath = modelPath
        let c = model.config
        maxContextLength = min(options.contextLength ?? c.maxPositionEmbeddings, c.maxPositionEmbeddings, model.maxBlocksPerSequence * options.blockSize)
        let totalTokens = try options.maxTotalTokens ?? Self.defaultTotalTokens(model: model, options: options)
        guard totalTokens >= options.blockSize else {
            throw LoomError.invalidArgument("--max-total-tokens \(totalTokens) is smaller than one KV block (\(options.blockSize) tokens)")
        }
        let numBlocks = totalTokens / options.blockSize
        cache = try KVCache(model: model, numBlocks: numBlocks, blockSize: options.blockSize)
        var config = SchedulerConfig(numBlocks: numBlocks, blockSize: options.blockSize, maxModelLength: maxContextLength)
        config.maxRunningRequests = min(options.maxRunningRequests, model.maxSequences)
        config.maxLorasPerBatch = lora?.options.maxLorasPerBatch ?? 1
        config.chunkedPrefillSize = options.chunkedPrefillSize
        config.maxBatchTokens = model.maxTokens
        config.maxSkipSteps = options.maxSkipSteps
        config.eosTokenIds = Array(Set(c.eosTokenIds + (tokenizer.eosTokenId.map { [$0] } ?? [])))
        config.enablePrefixCache = options.enablePrefixCache
        scheduler = Scheduler(config: config)
        let largestGraph = min(options.cudaGraphMaxBatchSize, config.maxRunningRequests)
        let graphSizes = options.cudaGraphBatchSizes ?? DecodeGraphs.defaultBatchSizes(maxBatchSize: largestGraph)
        decodeGraphs = DecodeGraphs(batchSizes: options.graphRunner == nil ? [] : graphSizes.filter { $0 <= config.maxRunningRequests })
        graphBatchSizes = decodeGraphs.batchSizes
        sampler = Sampler(vocabSize: c.vocabSize, eosTokenIds: config.eosTokenIds)
        sampledIDs = try model.backend.allocate(Shape(model.maxTokens), dtype: .i32)
        snapshot = currentStats()
    }

    /// Builds the model's workspace for the engine's step sizes, then the engine.
    public convenience init(modelPath: String, backend: ComputeBackend, loraOptions: LoRAOptions?, loraPaths: [LoRAPathSpec], options: EngineOptions, modelName: String? = nil) throws {
        try self.init(modelPath: modelPath, backends: [backend], communicators: [nil], loraOptions: loraOptions,
                      loraPaths: loraPaths, options: options, modelName: modelName)
    }

    /// The same, with the model and the adapter slots split over tensor-parallel ranks.
    public convenience init(modelPath: String, backends: [ComputeBackend], communicators: [Communicator?], loraOptions: LoRAOptions?, loraPaths: [LoRAPathSpec], options: EngineOptions, modelName: String? = nil,
                            progress: ((_ loadedLayers: Int, _ totalLayers: Int) -> Void)? = nil) throws {
        let config = try ModelConfig.load(directory: modelPath)
        let context = min(options.contextLength ?? config.maxPositionEmbeddings, config.maxPositionEmbeddings)
        let stepTokens = options.chunkedPrefillSize + options.maxRunningRequests
        let model = try LlamaModel(directory: modelPath, backends: backends, communicators: communicators, maxTokens: stepTokens,
                                   maxSequences: options.maxRunningRequests,
                                   maxBlocksPerSequence: (context + options.blockSize - 1) / options.blockSize, blockSize: options.blockSize,
                                   progress: progress)
        let tokenizer = try Tokenizer(directory: URL(fileURLWithPath: modelPath))
        let lora = try loraOptions.map {
            try LoRAManager(options: $0, model: model, maxTokens: stepTokens, initial: loraPaths)
        }
        try self.init(model: model, tokenizer: tokenizer, lora: lora, options: options,
                      modelName: modelName ?? modelPath, modelPath: modelPath)
    }

    /// The KV cache's tokens when `--max-total-tokens` is not given, never more than every running
    /// request at full context needs. On a device, SGLang's rule: what is free once the weights,
    /// adapters and workspaces are allocated, less the `1 − --mem-fraction-static` share of the
    /// device kept for activations, over each rank's bytes per token (the smallest rank decides).
    /// On the host: `--mem-fraction-static` of physical memory.
    static func defaultTotalTokens(model: LlamaModel, options: EngineOptions) throws -> Int {
        let context = min(options.contextLength ?? model.config.maxPositionEmbeddings, model.config.maxPositionEmbeddings)
        let cap = context * options.maxRunningRequests
        var budget = Int.max
        for rank in model.ranks {
            guard let memory = rank.backend.memoryInfo() else { continue }
            let perToken = KVCache.bytesPerToken(rank.local, dtype: rank.backend.activationDType)
            let tokens = kvTokens(freeBytes: memory.free, totalBytes: memory.total, fraction: options.memFractionStatic, bytesPerToken: perToken)
            guard tokens >= options.blockSize else {
                throw LoomError.invalidArgument(String(
                    format: "Not enough memory for the KV cache on rank %d: %.1f GiB free of %.1f GiB after loading, and --mem-fraction-static %.2f keeps %.1f GiB aside. Please try to increase --mem-fraction-static, or set --max-total-tokens.",
                    rank.shard.rank, Double(memory.free) / 1_073_741_824, Double(memory.total) / 1_073_741_824, options.memFractionStatic,
                    Double(memory.total) * (1 - options.memFractionStatic) / 1_073_741_824))
            }
            budget = min(budget, tokens)
        }
        if budget == .max {
            let perToken = KVCache.bytesPerToken(model.config, dtype: model.backend.activationDType)
            budget = Int(Double(ProcessInfo.processInfo.physicalMemory) * options.memFractionStatic) / max(perToken, 1)
        }
        return max(options.blockSize, min(budget, cap))
    }

    /// SGLang's KV budget on a device: `free − total · (1 − fraction)` bytes, in tokens (0 when negative).
    public static func kvTokens(freeBytes: Int, totalBytes: Int, fraction: Double, bytesPerToken: Int) -> Int {
        max(0, freeBytes - Int(Double(totalBytes) * (1 - fraction))) / max(bytesPerToken, 1)
    }

    // MARK: Lifecycle

    /// Starts the loop thread.
    public func start() {
        condition.withLock {
            guard thread == nil else { return }
            let t = Thread { [weak self] in self?.run() }
            t.name = "loom-engine"
            t.stackSize = 16 << 20
            thread = t
            t.start()
        }
    }

    public func shutdown(grace: Double) async {
        condition.withLock {
            isStopping = true
            condition.broadcast()
        }
        let deadline = Date().addingTimeInterval(grace)
        while Date() < deadline {
            let idle = condition.withLock { snapshot.running + snapshot.waiting == 0 && inbox.isEmpty }
            if idle { break }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        condition.withLock {
            isStopped = true
            condition.broadcast()
        }
        while condition.withLock({ thread != nil }) {
            try? await Task.sleep(nanoseconds: 5_000_000)
        }
    }

    // MARK: Requests

    public func submit(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error> {
        let (stream, continuation) = AsyncThrowingStream<EngineEvent, Error>.makeStream()
        if let ref = request.adapter {
            guard let registry = lora?.registry else {
                continuation.finish(throwing: LoomError.invalidArgument("LoRA is not enabled: start the server with --enable-lora or --lora-paths"))
                return stream
            }
            registry.acquire(ref.uid)
            guard registry.lookup(ref.name)?.uid == ref.uid else {
                registry.release(ref.uid)
                continuation.finish(throwing: EngineError.adapterUnloaded(ref.name))
                return stream
            }
        }
        let refused: Error? = condition.withLock {
            if isStopping { return EngineError.shuttingDown }
            if let limit = options.maxQueuedRequests, snapshot.waiting + inbox.count >= limit { return EngineError.queueFull(limit) }
            inbox.append((request, continuation))
            condition.signal()
            return nil
        }
        if let refused {
            if let ref = request.adapter { lora?.registry.release(ref.uid) }
            continuation.finish(throwing: refused)
            return stream
        }
        let id = request.id
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.abort(id: id) }
        }
        return stream
    }

    public func abort(id: String) {
        condition.withLock {
            abortRequests.append(id)
            condition.signal()
        }
    }

    public func loadAdapter(_ spec: LoRAPathSpec) async throws {
        guard let lora else { throw LoomError.invalidArgument("LoRA is not enabled: start the server with --enable-lora or --lora-paths") }
        try await Task.detached { _ = try lora.load(spec) }.value
    }

    public func unloadAdapter(name: String) async throws {
        guard let lora else { throw LoomError.invalidArgument("LoRA is not enabled: start the server with --enable-lora or --lora-paths") }
        let ref = try lora.beginUnload(name: name)
        while lora.registry.inFlightCount(ref.uid) > 0 {
            try? await Task.sleep(nanoseconds: 2_000_000)
        }
        lora.finishUnload(ref)
        condition.withLock {
            removedAdapterKeys.append(ref.uid)
            condition.signal()
        }
    }

    public func flushCache() -> Bool {
        condition.withLock {
            guard snapshot.running + snapshot.waiting == 0, inbox.isEmpty else { return false }
            flushRequested = true
            condition.signal()
            return true
        }
    }

    /// The last step's counters, plus the registry's in-flight counts read now (the registry is
    /// thread-safe, so the decode loop need not walk every registered adapter each step).
    public var stats: EngineStats {
        var s = condition.withLock { snapshot }
        if let registry = lora?.registry {
            for ref in registry.adapters {
                let n = registry.inFlightCount(ref.uid)
                if n > 0 { s.inFlightByAdapter[ref.name] = n }
            }
        }
        return s
    }
}
