import LoomCore
import Engine
import Foundation

/// The parts of `/v1/completions` and `/v1/chat/completions` bodies that both share: the model
/// (and so the adapter), sampling, streaming and logprob options, with OpenAI's names and
/// defaults plus SGLang's extensions (`top_k`, `min_p`, `repetition_penalty`, `min_tokens`,
/// `stop_token_ids`, `ignore_eos`, `skip_special_tokens`, `no_stop_trim`, `lora_path`, `rid`).
struct OpenAIRequest {
    var model: String?
    var params: SamplingParams
    var stream: Bool
    var includeUsage: Bool
    /// Completions: `logprobs` (a count); chat: `logprobs: true` with `top_logprobs`.
    var logprobs: Bool
    var topLogprobs: Int
    var loraPath: String?
    var rid: String?

    init(_ f: RequestFields, isChat: Bool) throws {
        model = try f.string("model")
        var p = SamplingParams()
        let maxTokens = try f.int("max_completion_tokens") ?? f.int("max_tokens")
        p.maxNewTokens = maxTokens ?? (isChat ? nil : 16)
        if let t = try f.double("temperature") { p.temperature = Float(t) }
        if let v = try f.double("top_p") { p.topP = Float(v) }
        if let v = try f.int("top_k") { p.topK = v }
        if let v = try f.double("min_p") { p.minP = Float(v) }
        if let v = try f.double("presence_penalty") { p.presencePenalty = Float(v) }
        if let v = try f.double("frequency_penalty") { p.frequencyPenalty = Float(v) }
        if let v = try f.double("repetition_penalty") { p.repetitionPenalty = Float(v) }
        if let v = try f.int("min_tokens") { p.minNewTokens = v }
        if let v = try f.strings("stop") { p.stop = v }
        if let v = try f.ints("stop_token_ids") { p.stopTokenIds = v }
        if let v = try f.bool("ignore_eos") { p.ignoreEos = v }
        if let v = try f.bool("skip_special_tokens") { p.skipSpecialTokens = v }
        if let v = try f.bool("no_stop_trim") { p.noStopTrim = v }
        if let v = try f.int("n") { p.n = v }
        p.samplingSeed = try f.int("seed")
        params = p
        stream = try f.bool("stream") ?? false
        if let options = f["stream_options"] {
            guard let o = options.objectValue else { throw f.wrongType("stream_options", "an object") }
            includeUsage = o["include_usage"]?.boolValue ?? false
        } else {
            includeUsage = false
        }
        if isChat {
            logprobs = try f.bool("logprobs") ?? false
            topLogprobs = try f.int("top_logprobs") ?? 0
            if topLogprobs < 0 || topLogprobs > 20 {
                throw APIError(.badRequest, "top_logprobs must be between 0 and 20, got \(topLogprobs).", shape: .openAI)
            }
        } else {
            let n = try f.int("logprobs")
            logprobs = n != nil
            topLogprobs = n ?? 0
            if topLogprobs < 0 || topLogprobs > 5 {
                throw APIError(.badRequest, "logprobs must be between 0 and 5, got \(topLogprobs).", shape: .openAI)
            }
        }
        loraPath = try f.string("lora_path")
        rid = try f.string("rid")
        if try f.int("best_of").map({ $0 > 1 }) ?? false {
            throw APIError(.badRequest, "best_of is not supported.", shape: .openAI)
        }
        for unsupported in ["regex", "json_schema", "ebnf", "response_format", "logit_bias", "tools"] where f[unsupported] != nil {
            if unsupported == "response_format", f[unsupported]?["type"]?.stringValue == "text" { continue }
            if unsupported == "logit_bias", f[unsupported]?.objectValue?.isEmpty == true { continue }
            if unsupported == "tools", f[unsupported]?.arrayValue?.isEmpty == true { continue }
            throw APIError(.badRequest, "\(unsupported) is not supported by this server.", shape: .openAI)
        }
    }
}

extension ServerState {
    /// The adapter a request names: `"model": "base:adapter"`, or `"model": "<adapter name>"`
    /// alone (vLLM's way), else the `lora_path` field; the model field wins, as in SGLang.
    func openAIAdapterName(_ r: OpenAIRequest) -> String? {
        if let model = r.model {
            if let colon = model.firstIndex(of: ":") {
                let adapter = String(model[model.index(after: colon)...])
                if !adapter.isEmpty { return adapter }
            } else if model != servedModelName, service.adapters?.lookup(model) != nil {
                return model
            }
        }
        return r.loraPath
    }

    /// The `usage` object: prompt tokens once per prompt (not per sample), as SGLang counts.
    static func usage(_ results: [GenerationState], samplesPerPrompt: Int) -> JSON {
        let prompt = results.enumerated().filter { $0.offset % max(samplesPerPrompt, 1) == 0 }
            .reduce(0) { $0 + ($1.element.finish?.promptTokens ?? $1.element.promptIds.count) }
        let completion = results.reduce(0) { $0 + ($1.finish?.completionTokens ?? $1.outputIds.count) }
        let cached = results.reduce(0) { $0 + ($1.finish?.cachedTokens ?? 0) }
        return [
            "prompt_tokens": .int(prompt), "total_tokens": .int(prompt + completion), "completion_tokens": .int(completion),
            "prompt_tokens_details": cached > 0 ? ["cached_tokens": .int(cached)] : .null,
        ]
    }
}
