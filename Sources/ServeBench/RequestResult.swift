import Foundation

/// What one request measured. Times are seconds.
public struct RequestResult: Sendable, Equatable {
    public var index: Int
    public var adapter: String?
    /// Prompt tokens: the server's count when the answer carried one, else the intended length.
    public var inputTokens: Int
    public var outputTokens = 0
    /// Send to the first chunk that carried output; nil when none did.
    public var ttft: Double?
    /// Gaps between output chunks, one per token: a chunk of k new tokens adds k gaps of 1/k its delay.
    public var itl: [Double] = []
    /// Send to the end of the stream.
    public var latency = 0.0
    public var success = false
    /// The HTTP status and body, or the transport error, of a failed request.
    public var error: String?
    public var httpStatus: Int?
    /// When it was sent, from the start of the run.
    public var sentAt = 0.0

    public init(index: Int, adapter: String?, inputTokens: Int) {
        self.index = index
        self.adapter = adapter
        self.inputTokens = inputTokens
    }

    /// Time per output token after the first: `(latency − ttft) / (tokens − 1)`, as SGLang defines it.
    public var tpot: Double? {
        guard success, let ttft, outputTokens > 1 else { return nil }
        return (latency - ttft) / Double(outputTokens - 1)
    }
}

/// Builds a `RequestResult` from the chunks of one stream as they arrive.
struct StreamMeasurement {
    private(set) var result: RequestResult
    private let start: Double
    private var lastOutputTime: Double
    private var tokensSoFar = 0
    private let countsChunks: Bool

    /// `countsChunks`: each output chunk is one token unless the chunk gives a count (OpenAI).
    init(request: BenchRequest, start: Double, countsChunks: Bool) {
        result = RequestResult(index: request.index, adapter: request.adapter, inputTokens: request.inputLength)
        self.start = start
        self.lastOutputTime = start
        self.countsChunks = countsChunks
    }

    /// Takes one chunk received at `time`; false when the stream reported an error.
    mutating func take(_ chunk: StreamChunk, at time: Double) -> Bool {
        if let e = chunk.error {
            result.error = "error in stream: \(e)"
            return false
        }
        if let p = chunk.promptTokens, p > 0 { result.inputTokens = p }
        guard chunk.hasOutput else {
            if let n = chunk.completionTokens, n > tokensSoFar { tokensSoFar = n }
            return true
        }
        let total: Int
        if let n = chunk.completionTokens, !countsChunks || n > tokensSoFar {
            total = n
        } else {
            total = tokensSoFar + (countsChunks ? 1 : 0)
        }
        let added = total - tokensSoFar
        if result.ttft == nil {
            result.ttft = time - start
            lastOutputTime = time
            tokensSoFar = max(total, 1)
            return true
        }
        guard added > 0 else { return true }
        let gap = (time - lastOutputTime) / Double(added)
        result.itl.append(contentsOf: repeatElement(gap, count: added))
        lastOutputTime = time
        tokensSoFar = total
        return true
    }

    mutating func finish(at time: Double) -> RequestResult {
        result.latency = time - start
        result.outputTokens = tokensSoFar
        if result.error == nil {
            result.success = true
        }
        return result
    }

    mutating func fail(_ message: String, status: Int?, at time: Double) -> RequestResult {
        result.latency = time - start
        result.outputTokens = tokensSoFar
        result.error = message
        result.httpStatus = status
        result.success = false
        return result
    }
}
