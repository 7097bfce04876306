import LoomCore
import Engine
import Foundation
import Tokenization

/// SGLang's `/generate` output objects: `{"text", "output_ids", "meta_info"}`.
struct GenerateOutputOptions {
    var returnLogprob: Bool
    var topLogprobsNum: Int
    var returnTextInLogprobs: Bool
}

extension FinishReason {
    /// SGLang's `meta_info.finish_reason` object.
    var json: JSON {
        switch self {
        case .stopToken(let id): ["type": "stop", "matched": .int(id)]
        case .stopString(let s): ["type": "stop", "matched": .string(s)]
        case .length(let n): ["type": "length", "length": .int(n)]
        case .abort(let message): ["type": "abort", "message": .string(message)]
        }
    }

    /// OpenAI's `finish_reason` string.
    var openAIReason: String {
        switch self {
        case .stopToken, .stopString: "stop"
        case .length: "length"
        case .abort: "abort"
        }
    }

    /// SGLang's `matched_stop` on OpenAI choices: the stop token id or string, else null.
    var matchedStop: JSON {
        switch self {
        case .stopToken(let id): .int(id)
        case .stopString(let s): .string(s)
        case .length, .abort: .null
        }
    }
}

extension ServerState {
    /// One output object; `index` is added for items of a streamed batch, as SGLang does.
    func generateOutput(_ state: GenerationState, options: GenerateOutputOptions, index: Int?) -> JSON {
        var o: JSONObject = [
            "text": .string(state.text),
            "output_ids": JSON(state.outputIds),
            "meta_info": .object(metaInfo(state, options: options)),
        ]
        if let index { o["index"] = .int(index) }
        return .object(o)
    }

    func metaInfo(_ state: GenerationState, options: GenerateOutputOptions) -> JSONObject {
        var m: JSONObject = [
            "id": .string(state.id),
            "finish_reason": state.finish?.reason.json ?? .null,
            "prompt_tokens": .int(state.finish?.promptTokens ?? state.promptIds.count),
            "weight_version": "default",
            "completion_tokens": .int(state.finish?.completionTokens ?? state.outputIds.count),
            "cached_tokens": .int(state.finish?.cachedTokens ?? 0),
            "e2e_latency": .double(state.elapsed),
        ]
        if options.returnLogprob {
            // Prompt logprobs are not computed by the engine; the entries keep SGLang's shape.
            m["input_token_logprobs"] = .array(state.promptIds.map { [.null, .int($0), .null] })
            m["output_token_logprobs"] = .array(state.logprobs.map { logprobTriple($0.logprob, $0.token, options) })
            if options.topLogprobsNum > 0 {
                m["input_top_logprobs"] = .array(state.promptIds.map { _ in .null })
                m["output_top_logprobs"] = .array(state.logprobs.map { t in
                    .array(t.topLogprobs.map { logprobTriple($0.logprob, $0.token, options) })
                })
            }
        }
        return m
    }

    /// `[logprob, token_id, text or null]`.
    private func logprobTriple(_ logprob: Float?, _ token: Int, _ options: GenerateOutputOptions) -> JSON {
        [JSON(logprob), .int(token), options.returnTextInLogprobs ? .string(tokenizer.decode([token], skipSpecialTokens: false)) : .null]
    }
}
