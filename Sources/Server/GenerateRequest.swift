import LoomCore
import Engine
import Foundation
import LoRA

/// A `/generate` body (SGLang's `GenerateReqInput`): one prompt or a batch, as `text` or
/// `input_ids`, with per-prompt or shared `sampling_params`, `lora_path`, `rid` and logprob options.
struct GenerateRequest {
    enum Prompt {
        case text(String)
        case ids([Int])
    }

    struct Item {
        var prompt: Prompt
        var params: SamplingParams
        var adapterName: String?
        var rid: String?
        var returnLogprob: Bool
        var topLogprobsNum: Int
    }

    var items: [Item]
    /// A list was given (`text: [...]` or `input_ids: [[...]]`): the answer is a list.
    var isBatch: Bool
    var stream: Bool
    var returnTextInLogprobs: Bool

    init(_ body: JSON) throws {
        let f = try RequestFields(body, shape: .native)
        let prompts: [Prompt]
        switch (f["text"], f["input_ids"]) {
        case (nil, nil):
            throw APIError(.badRequest, "Either text or input_ids should be provided.", shape: .native)
        case (.some, .some):
            throw APIError(.badRequest, "Only one of text and input_ids should be provided.", shape: .native)
        case (.some(let text), nil):
            if let s = text.stringValue {
                prompts = [.text(s)]
                isBatch = false
            } else if let list = text.arrayValue, list.allSatisfy({ $0.stringValue != nil }) {
                prompts = list.map { .text($0.stringValue!) }
                isBatch = true
            } else {
                throw f.wrongType("text", "a string or a list of strings")
            }
        case (nil, .some(let ids)):
            if let list = ids.arrayValue, list.allSatisfy({ $0.intValue != nil }) {
                prompts = [.ids(list.map { $0.intValue! })]
                isBatch = false
            } else if let lists = ids.arrayValue, lists.allSatisfy({ $0.arrayValue?.allSatisfy { $0.intValue != nil } == true }) {
                prompts = lists.map { .ids($0.arrayValue!.map { $0.intValue! }) }
                isBatch = true
            } else {
                throw f.wrongType("input_ids", "a list of integers or a list of lists of integers")
            }
        }
        if isBatch, prompts.isEmpty {
            throw APIError(.badRequest, "The batch is empty: give at least one prompt.", shape: .native)
        }
        let count = prompts.count
        stream = try f.bool("stream") ?? false
        returnTextInLogprobs = try f.bool("return_text_in_logprobs") ?? false

        let params = try Self.perItem(f, "sampling_params", count, isBatch: isBatch) { v in
            try SamplingParams.decode(v, shape: .native)
        }
        let adapters = try Self.adapterNames(f, count, isBatch: isBatch)
        let rids = try Self.perItem(f, "rid", count, isBatch: isBatch) { v -> String? in
            guard let v, !v.isNull else { return nil }
            guard let s = v.stringValue else { throw f.wrongType("rid", "a string or a list of strings") }
            return s
        }
        let returnLogprob = try Self.perItem(f, "return_logprob", count, isBatch: isBatch) { v -> Bool in
            guard let v, !v.isNull else { return false }
            guard let b = v.boolValue else { throw f.wrongType("return_logprob", "a boolean or a list of booleans") }
            return b
        }
        let topN = try Self.perItem(f, "top_logprobs_num", count, isBatch: isBatch) { v -> Int in
            guard let v, !v.isNull else { return 0 }
            guard let n = v.intValue, n >= 0 else { throw f.wrongType("top_logprobs_num", "a non-negative integer or a list of them") }
            return n
        }
        items = (0..<count).map { i in
            Item(prompt: prompts[i], params: params[i], adapterName: adapters[i], rid: rids[i],
                 returnLogprob: returnLogprob[i] || topN[i] > 0, topLogprobsNum: topN[i])
        }
    }

    /// A field that is one value for all prompts or, in a batch, a list with one per prompt.
    private static func perItem<T>(
        _ f: RequestFields, _ key: String, _ count: Int, isBatch: Bool, _ parse: (JSON?) throws -> T
    ) throws -> [T] {
        if isBatch, let list = f[key]?.arrayValue {
            guard list.count == count else {
                throw APIError(.badRequest, "\(key) has \(list.count) entries for a batch of \(count) prompts.", shape: .native)
            }
            return try list.map(parse)
        }
        let one = try parse(f[key])
        return Array(repeating: one, count: count)
    }

    /// `lora_path`: a name, null, or a list of names and nulls (one per prompt).
    private static func adapterNames(_ f: RequestFields, _ count: Int, isBatch: Bool) throws -> [String?] {
        guard let value = f["lora_path"] else { return Array(repeating: nil, count: count) }
        if let name = value.stringValue { return Array(repeating: name, count: count) }
        guard let list = value.arrayValue, list.allSatisfy({ $0.isNull || $0.stringValue != nil }) else {
            throw f.wrongType("lora_path", "a string, null, or a list of strings and nulls")
        }
        guard list.count == count else {
            throw APIError(.badRequest, "lora_path has \(list.count) entries for \(count) prompt\(count == 1 ? "" : "s"); give one per prompt.", shape: .native)
        }
        return list.map(\.stringValue)
    }
}

extension ServerState {
    /// Tokenizes and validates every prompt, resolves adapters and fans `n > 1` out into `n`
    /// engine requests (seeds `sampling_seed + i`). Order: prompt-major, then sample.
    func prepare(_ request: GenerateRequest) throws -> [PreparedRequest] {
        let refs = try resolveAdapters(request.items.map(\.adapterName), shape: .native)
        var prepared: [PreparedRequest] = []
        for (item, ref) in zip(request.items, refs) {
            let ids: [Int]
            switch item.prompt {
            case .text(let text):
                guard !text.isEmpty else { throw APIError(.badRequest, "The input text is empty.", shape: .native) }
                ids = tokenizer.encode(text)
            case .ids(let given):
                ids = given
            }
            try validatePrompt(ids, params: item.params, shape: .native)
            prepared += fanOut(ids: ids, params: item.params, adapter: ref, rid: item.rid,
                               returnLogprob: item.returnLogprob, topLogprobsNum: item.topLogprobsNum)
        }
        return prepared
    }

    /// Non-empty, every id in the vocabulary, sampling parameters in range, and prompt plus
    /// completion within the context (SGLang's checks and messages).
    func validatePrompt(_ ids: [Int], params: SamplingParams, shape: APIError.Shape) throws {
        guard !ids.isEmpty else { throw APIError(.badRequest, "The input is empty: give a non-empty text or input_ids.", shape: shape) }
        let vocab = service.modelConfig.vocabSize
        if let bad = ids.first(where: { $0 < 0 || $0 >= vocab }) {
            throw APIError(.badRequest, "The input_ids contain \(bad), which is outside the vocabulary [0, \(vocab)).", shape: shape)
        }
        do {
            try params.validate(vocabSize: vocab, maxContext: service.maxContextLength, promptTokenCount: ids.count)
        } catch {
            throw APIError.from(error, shape: shape)
        }
    }

    /// One engine request per sample; with `n > 1` and a seed, sample `i` gets `seed + i`.
    func fanOut(
        ids: [Int], params: SamplingParams, adapter: AdapterRef?, rid: String?, returnLogprob: Bool, topLogprobsNum: Int
    ) -> [PreparedRequest] {
        let n = params.n
        return (0..<n).map { i in
            var p = params
            p.n = 1
            if let seed = params.samplingSeed, n > 1 { p.samplingSeed = seed &+ i }
            let id = rid.map { n == 1 ? $0 : "\($0)_\(i)" } ?? Self.newRequestID()
            return PreparedRequest(engine: EngineRequest(
                id: id, promptIds: ids, adapter: adapter, params: p, returnLogprob: returnLogprob, topLogprobsNum: topLogprobsNum))
        }
    }
}
