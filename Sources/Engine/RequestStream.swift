import Foundation
import LoRA
import Tokenization

/// The engine-side state of one request's stream: detokenization, stop strings, and the events
/// it sends. Lives on the engine thread only.
struct RequestStream {
    let request: EngineRequest
    let continuation: AsyncThrowingStream<EngineEvent, Error>.Continuation
    var decoder: IncrementalDecoder
    /// Text decoded but not yet sent: it may be the start of a stop string.
    var held = ""
    let maxStopLength: Int

    init(request: EngineRequest, tokenizer: Tokenizer, continuation: AsyncThrowingStream<EngineEvent, Error>.Continuation) {
        self.request = request
        self.continuation = continuation
        decoder = IncrementalDecoder(tokenizer: tokenizer, skipSpecialTokens: request.params.skipSpecialTokens, promptIds: request.promptIds)
        maxStopLength = request.params.stop.map(\.count).max() ?? 0
    }

    /// Adds a sampled token; returns the stop string it completed, if any (the caller finishes the
    /// sequence). Sends the text that can no longer be part of a stop string.
    mutating func push(_ sampled: SampledToken) -> String? {
        held += decoder.push(sampled.token)
        let logprobs = request.returnLogprob ? [sampled] : []
        if maxStopLength > 0, let (stop, range) = firstStop() {
            let kept = request.params.noStopTrim ? held[..<range.upperBound] : held[..<range.lowerBound]
            held = ""
            continuation.yield(.tokens(ids: [sampled.token], text: String(kept), logprobs: logprobs))
            return stop
        }
        let keep = heldBackLength()
        let sendable = held.dropLast(keep)
        continuation.yield(.tokens(ids: [sampled.token], text: String(sendable), logprobs: logprobs))
        held = String(held.suffix(keep))
        return nil
    }

    /// Sends whatever is held back and the final event.
    mutating func finish(_ info: FinishInfo) {
        let rest: String
        if case .stopString = info.reason { rest = "" } else { rest = held + decoder.flush() }
        held = ""
        if !rest.isEmpty { continuation.yield(.tokens(ids: [], text: rest, logprobs: [])) }
        continuation.yield(.finished(info))
        continuation.finish()
    }

    /// The earliest stop string in the held text.
    private func firstStop() -> (String, Range<String.Index>)? {
        var best: (String, Range<String.Index>)?
        for stop in request.params.stop where !stop.isEmpty {
            if let r = held.range(of: stop), best == nil || r.lowerBound < best!.1.lowerBound { best = (stop, r) }
        }
        return best
    }

    /// Characters at the end of `held` that begin some stop string.
    private func heldBackLength() -> Int {
        guard maxStopLength > 1 else { return 0 }
        for length in stride(from: min(maxStopLength - 1, held.count), through: 1, by: -1) {
            let tail = held.suffix(length)
            if request.params.stop.contains(where: { $0.hasPrefix(tail) }) { return length }
        }
        return 0
    }
}
