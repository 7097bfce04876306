import Engine
import Foundation
import LoRA

/// One engine request the server has prepared (tokenized, adapter resolved, validated).
struct PreparedRequest: Sendable {
    var engine: EngineRequest
    /// The adapter's name for metrics and logs; nil for the base model.
    var adapterName: String? { engine.adapter?.name }
}

/// What one engine request has produced so far.
struct GenerationState: Sendable {
    let id: String
    let adapterName: String?
    let promptIds: [Int]
    var outputIds: [Int] = []
    var text = ""
    var logprobs: [SampledToken] = []
    var finish: FinishInfo?
    let start = ContinuousClock.now
    var firstTokenAt: ContinuousClock.Instant?

    init(_ request: PreparedRequest) {
        id = request.engine.id
        adapterName = request.adapterName
        promptIds = request.engine.promptIds
    }

    var isFinished: Bool { finish != nil }

    /// Seconds since the request was submitted.
    var elapsed: Double { (ContinuousClock.now - start).seconds }

    mutating func apply(_ event: EngineEvent) {
        switch event {
        case .tokens(let ids, let piece, let lps):
            if firstTokenAt == nil, !ids.isEmpty { firstTokenAt = .now }
            outputIds += ids
            text += piece
            logprobs += lps
        case .finished(let info):
            finish = info
        }
    }
}

/// Thrown when a generation outlives `--request-timeout`; its engine requests are aborted.
struct RequestTimedOut: Error, CustomStringConvertible {
    var seconds: Double
    var description: String {
        "The request did not finish within the server's request timeout (\(seconds) seconds) and was aborted."
    }
}

/// Thrown when an engine stream ends without a `.finished` event.
struct EngineStreamEnded: Error, CustomStringConvertible {
    var id: String
    var description: String { "the engine ended request \(id) without a finish reason" }
}

extension ServerState {
    /// Submits all requests in order, then runs them to the end concurrently; results come back
    /// in input order. Cancelling the calling task aborts every unfinished request.
    func generateAll(_ requests: [PreparedRequest]) async throws -> [GenerationState] {
        let streams = requests.map { service.submit($0.engine) }
        let timeout = configuration.requestTimeout
        return try await withTaskCancellationHandler {
            try await withThrowingTaskGroup(of: (Int, GenerationState)?.self) { group in
                if let timeout {
                    group.addTask {
                        try await Task.sleep(for: .seconds(timeout))
                        throw RequestTimedOut(seconds: timeout)
                    }
                }
                for (i, (request, events)) in zip(requests, streams).enumerated() {
                    group.addTask {
                        var state = GenerationState(request)
                        for try await event in events {
                            state.apply(event)
                            if state.isFinished { break }
                        }
                        guard state.isFinished else { throw EngineStreamEnded(id: state.id) }
                        self.recordFinished(state)
                        return (i, state)
                    }
                }
                var results = [GenerationState?](repeating: nil, count: requests.count)
                var remaining = requests.count
                do {
                    while remaining > 0, let next = try await group.next() {
                        guard let (i, state) = next else { continue }
                        results[i] = state
                        remaining -= 1
                    }
                } catch {
                    // A timeout (or an engine error): abort whatever is still running.
                    for r in requests { self.service.abort(id: r.engine.id) }
                    throw error
                }
                group.cancelAll()  // the timer
                return results.map { $0! }
            }
        } onCancel: {
            for r in requests { self.service.abort(id: r.engine.id) }
        }
    }

    /// Starts all requests and merges their events into one stream of `(index, state)` snapshots,
    /// one per engine event. `cancel()` on the merger aborts what is unfinished.
    func streamAll(_ requests: [PreparedRequest]) -> EventMerger {
        let merger = EventMerger(ids: requests.map(\.engine.id), service: service)
        let streams = requests.map { service.submit($0.engine) }
        for (i, (request, events)) in zip(requests, streams).enumerated() {
            merger.add(Task {
                var state = GenerationState(request)
                do {
                    for try await event in events {
                        state.apply(event)
                        merger.yield(index: i, state: state)
                        if state.isFinished { break }
                    }
                    if Task.isCancelled { return }
                    guard state.isFinished else { throw EngineStreamEnded(id: state.id) }
                    self.recordFinished(state)
                    merger.finished(index: i)
                } catch {
                    merger.fail(error)
                }
            })
        }
        if let timeout = configuration.requestTimeout {
            merger.setTimer(Task {
                try? await Task.sleep(for: .seconds(timeout))
                if !Task.isCancelled { merger.fail(RequestTimedOut(seconds: timeout)) }
            })
        }
        return merger
    }

    func recordFinished(_ state: GenerationState) {
        guard let finish = state.finish else { return }
        let end = ContinuousClock.now
        metrics.recordFinished(
            adapter: state.adapterName, finish: finish, e2e: end - state.start,
            timeToFirstToken: state.firstTokenAt.map { $0 - state.start })
        logger.debug(
            "request finished",
            metadata: [
                "request.id": .string(state.id), "adapter": .string(state.adapterName ?? ""),
                "finish": .string(finish.reason.type), "completion_tokens": .stringConvertible(finish.completionTokens),
            ])
    }
}

/// Merges the event streams of several engine requests (a batch, or `n > 1`) into one sequence
/// of snapshots, in arrival order.
final class EventMerger: @unchecked Sendable {
    let updates: AsyncThrowingStream<(index: Int, state: GenerationState), Error>
    private let continuation: AsyncThrowingStream<(index: Int, state: GenerationState), Error>.Continuation
    private let lock = NSLock()
    private var tasks: [Task<Void, Never>] = []
    private var unfinished: Set<Int>
    private let ids: [String]
    private let service: any InferenceService

    init(ids: [String], service: any InferenceService) {
        (updates, continuation) = AsyncThrowingStream.makeStream()
        self.ids = ids
        self.service = service
        unfinished = Set(ids.indices)
        if ids.isEmpty { continuation.finish() }
    }

    private var timer: Task<Void, Never>?

    fileprivate func add(_ task: Task<Void, Never>) { lock.withLock { tasks.append(task) } }

    /// The `--request-timeout` task, cancelled once every request finished or was cancelled.
    fileprivate func setTimer(_ task: Task<Void, Never>) {
        let isOver = lock.withLock {
            timer = task
            return unfinished.isEmpty
        }
        if isOver { task.cancel() }
    }

    fileprivate func yield(index: Int, state: GenerationState) { continuation.yield((index, state)) }

    fileprivate func finished(index: Int) {
        let done = lock.withLock {
            unfinished.remove(index)
            return unfinished.isEmpty
        }
        if done {
            continuation.finish()
            lock.withLock { timer }?.cancel()
        }
    }

    fileprivate func fail(_ error: any Error) {
        continuation.finish(throwing: error)
        cancel()
    }

    /// Aborts every unfinished request (client gone, or an error) and ends the merged stream.
    func cancel() {
        let (pending, running) = lock.withLock { () -> ([Int], [Task<Void, Never>]) in
            let p = Array(unfinished)
            unfinished.removeAll()
            return (p, tasks + (timer.map { [$0] } ?? []))
        }
        for i in pending { service.abort(id: ids[i]) }
        for t in running { t.cancel() }
        continuation.finish()
    }
}
