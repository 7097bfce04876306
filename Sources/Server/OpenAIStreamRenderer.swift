import LoomCore
import Engine
import Foundation

/// OpenAI's streaming chunks: `text_completion` chunks with text deltas, or
/// `chat.completion.chunk` chunks (a role delta first, then content deltas, then an empty delta
/// with the finish reason); with `stream_options.include_usage`, a last chunk with no choices and
/// the usage.
final class OpenAIStreamRenderer: StreamRenderer, @unchecked Sendable {
    let state: ServerState
    let job: ServerState.OpenAIJob
    let isChat: Bool
    let created = Int(Date().timeIntervalSince1970)
    private var sentBytes: [Int]
    private var sentLogprobs: [Int]
    private var started: [Bool]
    private var latest: [GenerationState?]

    init(state: ServerState, job: ServerState.OpenAIJob, isChat: Bool) {
        self.state = state
        self.job = job
        self.isChat = isChat
        let n = job.prepared.count
        sentBytes = Array(repeating: 0, count: n)
        sentLogprobs = Array(repeating: 0, count: n)
        started = Array(repeating: false, count: n)
        latest = Array(repeating: nil, count: n)
    }

    private func chunk(_ choice: JSONObject) -> JSON {
        [
            "id": .string(job.responseID), "object": .string(isChat ? "chat.completion.chunk" : "text_completion"),
            "created": .int(created), "model": .string(job.model), "choices": [.object(choice)],
        ]
    }

    func chunks(index: Int, state s: GenerationState) -> [JSON] {
        latest[index] = s
        var out: [JSON] = []
        let bytes = Array(s.text.utf8)
        var delta = String(decoding: bytes[min(sentBytes[index], bytes.count)...], as: UTF8.self)
        sentBytes[index] = bytes.count
        let newLogprobs = s.logprobs[min(sentLogprobs[index], s.logprobs.count)...]
        sentLogprobs[index] = s.logprobs.count
        let finish = s.finish?.reason
        if isChat {
            if !started[index] {
                started[index] = true
                out.append(chunk([
                    "index": .int(index), "delta": ["role": "assistant", "content": ""], "logprobs": nil,
                    "finish_reason": nil, "matched_stop": nil,
                ]))
            }
            if !delta.isEmpty {
                out.append(chunk([
                    "index": .int(index), "delta": ["content": .string(delta)],
                    "logprobs": job.request.logprobs ? state.chatLogprobs(newLogprobs) : .null,
                    "finish_reason": nil, "matched_stop": nil,
                ]))
            }
            if let finish {
                out.append(chunk([
                    "index": .int(index), "delta": [:], "logprobs": nil,
                    "finish_reason": .string(finish.openAIReason), "matched_stop": finish.matchedStop,
                ]))
            }
        } else {
            if !started[index] {
                started[index] = true
                delta = (job.echoTexts?[index] ?? "") + delta
            }
            if !delta.isEmpty || finish != nil {
                let offset = bytes.count - Array(delta.utf8).count
                out.append(chunk([
                    "index": .int(index), "text": .string(delta),
                    "logprobs": job.request.logprobs ? state.completionLogprobs(newLogprobs, textOffset: max(offset, 0)) : .null,
                    "finish_reason": JSON(finish?.openAIReason), "matched_stop": finish?.matchedStop ?? .null,
                ]))
            }
        }
        return out
    }

    func finalChunks() -> [JSON] {
        guard job.request.includeUsage else { return [] }
        return [[
            "id": .string(job.responseID), "object": .string(isChat ? "chat.completion.chunk" : "text_completion"),
            "created": .int(created), "model": .string(job.model), "choices": [],
            "usage": ServerState.usage(latest.compactMap { $0 }, samplesPerPrompt: job.request.params.n),
        ]]
    }
}
