import Engine
import Foundation
import LoRA
import LoomCore
import ModelFormats
import Tokenization

/// A deterministic stand-in for the engine, so the HTTP layer can be tested on its own.
///
/// Output token `k` of a request is `3 + (prompt[k % prompt.count] + shift) % (vocab - 3)`, where
/// `shift` is `7 × adapter uid` (plus the seed when sampling with a temperature), so every adapter
/// and every seeded sample gives a different, predictable continuation. Stop token ids and stop
/// strings end a sequence as the engine would; `tokenDelay` slows it down for streaming tests.
final class FakeInferenceService: InferenceService, @unchecked Sendable {
    let modelConfig: ModelConfig
    let modelName = "stories260k"
    let modelPath: String
    let maxContextLength: Int
    let adapters: AdapterRegistry?
    let tokenizer: Tokenizer
    let maxLorasPerBatch = 4

    private let lock = NSLock()
    private var _tokenDelay: Duration = .zero
    private var _submitted: [EngineRequest] = []
    private var _aborted: [String] = []
    private var _dropped: [String] = []
    private var running: [String: String] = [:]
    private var abortRequested: Set<String> = []
    private var _shutdownGrace: Double?
    private var flushCount = 0
    private var _refusal: (any Error)?
    private var _stepTotals = StepTotals()

    var tokenDelay: Duration {
        get { lock.withLock { _tokenDelay } }
        set { lock.withLock { _tokenDelay = newValue } }
    }
    /// When set, `submit` refuses every request with this error, as the engine does when its
    /// queue is full or it is stopping.
    var refusal: (any Error)? {
        get { lock.withLock { _refusal } }
        set { lock.withLock { _refusal = newValue } }
    }
    /// What `stats` reports as the engine's step totals.
    var stepTotals: StepTotals {
        get { lock.withLock { _stepTotals } }
        set { lock.withLock { _stepTotals = newValue } }
    }
    var submitted: [EngineRequest] { lock.withLock { _submitted } }
    var aborted: [String] { lock.withLock { _aborted } }
    var dropped: [String] { lock.withLock { _dropped } }
    var runningCount: Int { lock.withLock { running.count } }
    var shutdownGrace: Double? { lock.withLock { _shutdownGrace } }

    /// `adapters: nil` serves without LoRA; otherwise the named adapters are registered at start.
    init(adapters initial: [(String, String)]? = [("sql", "/adapters/sql"), ("python", "/adapters/python")], maxContextLength: Int = 512) throws {
        modelPath = TestSupport.url("Fixtures/stories260k").path
        modelConfig = try ModelConfig.load(directory: modelPath)
        tokenizer = try Tokenizer(directory: URL(fileURLWithPath: modelPath))
        self.maxContextLength = maxContextLength
        if let initial {
            let registry = AdapterRegistry()
            for (name, path) in initial {
                try registry.register(name: name, path: path, pinned: false, maxRank: 8, targetModules: [.q, .v])
            }
            adapters = registry
        } else {
            adapters = nil
        }
    }

    /// The continuation the fake produces (without stop handling).
    func expectedTokens(prompt: [Int], adapterUID: UInt64 = 0, count: Int, seedShift: Int = 0) -> [Int] {
        let shift = Int(adapterUID) * 7 + seedShift
        let v = modelConfig.vocabSize - 3
        return (0..<count).map { k in 3 + ((prompt[k % prompt.count] + shift) % v + v) % v }
    }

    func submit(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error> {
        if let refusal {
            return AsyncThrowingStream { $0.finish(throwing: refusal) }
        }
        lock.withLock {
            _submitted.append(request)
            running[request.id] = request.adapter?.name ?? ""
        }
        let (stream, continuation) = AsyncThrowingStream<EngineEvent, Error>.makeStream()
        let task = Task { await self.generate(request, continuation) }
        continuation.onTermination = { [weak self] reason in
            task.cancel()
            guard let self else { return }
            self.lock.withLock {
                if case .cancelled = reason { self._dropped.append(request.id) }
                self.running[request.id] = nil
            }
        }
        return stream
    }

    private func generate(_ request: EngineRequest, _ continuation: AsyncThrowingStream<EngineEvent, Error>.Continuation) async {
        let p = request.params
        let prompt = request.promptIds
        let limit = min(p.maxNewTokens ?? maxContextLength, maxContextLength - prompt.count)
        let seedShift = p.temperature > 0 ? (p.samplingSeed ?? 0) : 0
        let tokens = expectedTokens(prompt: prompt, adapterUID: request.adapter?.uid ?? 0, count: max(limit, 0), seedShift: seedShift)
        var decoder = IncrementalDecoder(tokenizer: tokenizer, skipSpecialTokens: p.skipSpecialTokens, promptIds: prompt)
        var text = ""
        var reason = FinishReason.length(limit)
        var produced = 0
        for t in tokens {
            let delay = tokenDelay
            if delay > .zero { try? await Task.sleep(for: delay) }
            if Task.isCancelled { return }
            if lock.withLock({ abortRequested.contains(request.id) }) {
                reason = .abort("Abort requested")
                break
            }
            produced += 1
            var piece = decoder.push(t)
            let lps = request.returnLogprob || request.topLogprobsNum > 0
                ? [SampledToken(token: t, logprob: -Float(t % 7) / 4, topLogprobs: (0..<request.topLogprobsNum).map {
                    TokenLogprob(token: (t + $0) % modelConfig.vocabSize, logprob: -Float($0) / 2)
                })]
                : []
            if p.stopTokenIds.contains(t) {
                continuation.yield(.tokens(ids: [t], text: "", logprobs: lps))
                reason = .stopToken(t)
                break
            }
            if let s = p.stop.first(where: { (text + piece).contains($0) }) {
                let full = text + piece
                let cut = full.range(of: s)!
                piece = String(full[..<(p.noStopTrim ? cut.upperBound : cut.lowerBound)].dropFirst(text.count))
                continuation.yield(.tokens(ids: [t], text: piece, logprobs: lps))
                reason = .stopString(s)
                break
            }
            text += piece
            continuation.yield(.tokens(ids: [t], text: piece, logprobs: lps))
        }
        continuation.yield(.finished(FinishInfo(reason: reason, promptTokens: prompt.count, completionTokens: produced, cachedTokens: 0)))
        continuation.finish()
        lock.withLock { running[request.id] = nil }
    }

    func abort(id: String) {
        lock.withLock {
            _aborted.append(id)
            abortRequested.insert(id)
        }
    }

    func loadAdapter(_ spec: LoRAPathSpec) async throws {
        guard let adapters else { throw LoomError.invalidArgument("LoRA is not enabled") }
        if spec.path.contains("corrupt") {
            throw LoomError.invalidFile(path: spec.path + "/adapter_model.safetensors", reason: "the header is not valid JSON")
        }
        if spec.path.contains("rank999") {
            throw LoomError.invalidArgument(
                "LoRA adapter \(spec.name) with rank 999 is incompatible with the current LoRA memory pool configuration.")
        }
        if spec.pinned && adapters.pinnedCount >= maxLorasPerBatch - 1 {
            throw LoomError.invalidArgument("Already have \(adapters.pinnedCount) pinned adapters, max allowed is \(maxLorasPerBatch - 1)")
        }
        try adapters.register(name: spec.name, path: spec.path, pinned: spec.pinned, maxRank: 8, targetModules: [.q, .v])
    }

    func unloadAdapter(name: String) async throws {
        guard let adapters else { throw LoomError.invalidArgument("LoRA is not enabled") }
        try adapters.unregister(name: name)
    }

    func flushCache() -> Bool {
        lock.withLock {
            flushCount += 1
            return running.isEmpty
        }
    }

    var stats: EngineStats {
        lock.withLock {
            var s = EngineStats()
            s.running = running.count
            s.totalBlocks = 64
            s.freeBlocks = 64 - running.count
            s.blockSize = 16
            for (_, adapter) in running { s.runningByAdapter[adapter, default: 0] += 1 }
            s.inFlightByAdapter = s.runningByAdapter
            s.slotOccupants = [nil, 1, nil, nil]
            s.stepTotals = _stepTotals
            return s
        }
    }

    func shutdown(grace: Double) async {
        lock.withLock { _shutdownGrace = grace }
        let deadline = ContinuousClock.now + .milliseconds(Int(grace * 1000))
        while runningCount > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        lock.withLock { abortRequested.formUnion(running.keys) }
    }
}
