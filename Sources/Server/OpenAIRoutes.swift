import LoomCore
import Engine
import Foundation
import Hummingbird
import LoRA

/// The OpenAI-compatible API: `/v1/completions`, `/v1/chat/completions`, `/v1/models`.
extension ServerState {
    func addOpenAIRoutes(to router: Router<BasicRequestContext>) {
        router.post("/v1/completions") { request, _ in try await self.completions(request) }
        router.post("/v1/chat/completions") { request, _ in try await self.chatCompletions(request) }
        router.get("/v1/models") { _, _ in Response.json(self.modelList) }
        // `**`: model ids may contain slashes (hub ids), as SGLang's `{model:path}` allows.
        router.get("/v1/models/**") { _, context in
            let id = context.parameters.getCatchAll().joined(separator: "/")
            guard let card = self.modelCards.first(where: { $0["id"]?.stringValue == id }) else {
                return Response.json(
                    ["error": ["message": .string("The model '\(id)' does not exist"), "type": "invalid_request_error", "param": "model", "code": "model_not_found"]],
                    status: .notFound)
            }
            return Response.json(card)
        }
    }

    /// A parsed OpenAI request, ready to run: prompts fanned out, one response id.
    struct OpenAIJob {
        var request: OpenAIRequest
        var prepared: [PreparedRequest]
        var responseID: String
        var model: String
        /// Completions with `echo`: the prompt text of each prepared request.
        var echoTexts: [String]?
    }

    func completions(_ request: Request) async throws -> Response {
        let job: OpenAIJob
        do {
            try checkAcceptingRequests(shape: .openAI)
            try request.requireJSONContentType()
            let f = try RequestFields(try await request.jsonBody(limit: configuration.maxBodySize), shape: .openAI)
            let r = try OpenAIRequest(f, isChat: false)
            let prompts = try completionPrompts(f)
            if let suffix = try f.string("suffix"), !suffix.isEmpty {
                throw APIError(.badRequest, "suffix is not supported.", shape: .openAI)
            }
            let echo = try f.bool("echo") ?? false
            job = try makeJob(r, prompts: prompts, prefix: "cmpl", echo: echo)
        } catch {
            metrics.recordRejected(route: "/v1/completions")
            throw APIError.from(error, shape: .openAI)
        }
        if job.request.stream {
            let renderer = OpenAIStreamRenderer(state: self, job: job, isChat: false)
            return try await SSE.response(merger: streamAll(job.prepared), renderer: renderer, errorShape: .openAI)
        }
        let results = try await runJob(job)
        let choices: [JSON] = results.enumerated().map { i, s in
            [
                "index": .int(i), "text": .string((job.echoTexts?[i] ?? "") + s.text),
                "logprobs": job.request.logprobs ? completionLogprobs(s.logprobs, textOffset: 0) : .null,
                "finish_reason": JSON(s.finish?.reason.openAIReason), "matched_stop": s.finish?.reason.matchedStop ?? .null,
            ]
        }
        return Response.json([
            "id": .string(job.responseID), "object": "text_completion", "created": .int(Int(Date().timeIntervalSince1970)),
            "model": .string(job.model), "choices": .array(choices),
            "usage": Self.usage(results, samplesPerPrompt: job.request.params.n),
        ])
    }

    func chatCompletions(_ request: Request) async throws -> Response {
        let job: OpenAIJob
        do {
            try checkAcceptingRequests(shape: .openAI)
            try request.requireJSONContentType()
            let f = try RequestFields(try await request.jsonBody(limit: configuration.maxBodySize), shape: .openAI)
            let r = try OpenAIRequest(f, isChat: true)
            let ids = try chatPrompt(f)
            job = try makeJob(r, prompts: [ids], prefix: "chatcmpl", echo: false)
        } catch {
            metrics.recordRejected(route: "/v1/chat/completions")
            throw APIError.from(error, shape: .openAI)
        }
        if job.request.stream {
            let renderer = OpenAIStreamRenderer(state: self, job: job, isChat: true)
            return try await SSE.response(merger: streamAll(job.prepared), renderer: renderer, errorShape: .openAI)
        }
        let results = try await runJob(job)
        let choices: [JSON] = results.enumerated().map { i, s in
            [
                "index": .int(i),
                "message": ["role": "assistant", "content": .string(s.text), "reasoning_content": nil, "tool_calls": nil],
                "logprobs": job.request.logprobs ? chatLogprobs(s.logprobs) : .null,
                "finish_reason": JSON(s.finish?.reason.openAIReason), "matched_stop": s.finish?.reason.matchedStop ?? .null,
            ]
        }
        return Response.json([
            "id": .string(job.responseID), "object": "chat.completion", "created": .int(Int(Date().timeIntervalSince1970)),
            "model": .string(job.model), "choices": .array(choices),
            "usage": Self.usage(results, samplesPerPrompt: job.request.params.n),
        ])
    }

    private func runJob(_ job: OpenAIJob) async throws -> [GenerationState] {
        do {
            return try await generateAll(job.prepared)
        } catch {
            throw APIError.from(error, shape: .openAI)
        }
    }

    private func makeJob(_ r: OpenAIRequest, prompts: [[Int]], prefix: String, echo: Bool) throws -> OpenAIJob {
        let ref = try resolveAdapters([openAIAdapterName(r)], shape: .openAI)[0]
        let responseID = r.rid ?? "\(prefix)-\(Self.newRequestID())"
        var prepared: [PreparedRequest] = []
        for (p, ids) in prompts.enumerated() {
            try validatePrompt(ids, params: r.params, shape: .openAI)
            prepared += fanOut(
                ids: ids, params: r.params, adapter: ref, rid: prompts.count == 1 ? responseID : "\(responseID)-\(p)",
                returnLogprob: r.logprobs, topLogprobsNum: r.topLogprobs)
        }
        let echoTexts = echo ? prompts.flatMap { ids in Array(repeating: tokenizer.decode(ids), count: r.params.n) } : nil
        return OpenAIJob(request: r, prepared: prepared, responseID: responseID, model: r.model ?? servedModelName, echoTexts: echoTexts)
    }

    /// `prompt`: a string, a list of strings, a list of token ids, or a list of lists of ids.
    private func completionPrompts(_ f: RequestFields) throws -> [[Int]] {
        guard let prompt = f["prompt"] else { throw APIError.validation("prompt is required.") }
        if let s = prompt.stringValue { return [try encodeCompletion(s)] }
        guard let list = prompt.arrayValue, !list.isEmpty else {
            throw APIError(.badRequest, "prompt must not be empty.", shape: .openAI)
        }
        if list.allSatisfy({ $0.stringValue != nil }) { return try list.map { try encodeCompletion($0.stringValue!) } }
        if list.allSatisfy({ $0.intValue != nil }) { return [list.map { $0.intValue! }] }
        if list.allSatisfy({ $0.arrayValue?.allSatisfy { $0.intValue != nil } == true }) {
            return list.map { $0.arrayValue!.map { $0.intValue! } }
        }
        throw f.wrongType("prompt", "a string, a list of strings, a list of token ids or a list of lists of token ids")
    }

    private func encodeCompletion(_ text: String) throws -> [Int] {
        guard !text.isEmpty else { throw APIError(.badRequest, "The prompt is empty.", shape: .openAI) }
        return tokenizer.encode(text)
    }

    /// Renders `messages` through the chat template and tokenizes the result.
    private func chatPrompt(_ f: RequestFields) throws -> [Int] {
        guard let messages = f["messages"]?.arrayValue else {
            throw f.wrongType("messages", "a list of messages")
        }
        guard !messages.isEmpty else { throw APIError(.badRequest, "messages must not be empty.", shape: .openAI) }
        var normalized: [JSON] = []
        for (i, m) in messages.enumerated() {
            guard var o = m.objectValue, o["role"]?.stringValue != nil else {
                throw APIError.validation("messages[\(i)] must be an object with a string role.")
            }
            switch o["content"] {
            case .string?, .null?, nil: break
            case .array(let parts)?:
                var texts: [String] = []
                for part in parts {
                    guard part["type"]?.stringValue == "text", let t = part["text"]?.stringValue else {
                        throw APIError(.badRequest, "messages[\(i)]: only text content parts are supported.", shape: .openAI)
                    }
                    texts.append(t)
                }
                o["content"] = .string(texts.joined(separator: "\n"))
            default:
                throw APIError.validation("messages[\(i)].content must be a string or a list of content parts.")
            }
            if o["content"] == nil || o["content"] == .null { o["content"] = "" }
            normalized.append(.object(o))
        }
        let addGenerationPrompt = try f.bool("add_generation_prompt") ?? true
        var extra = JSONObject()
        if let kwargs = f["chat_template_kwargs"] {
            guard let o = kwargs.objectValue else { throw f.wrongType("chat_template_kwargs", "an object") }
            extra = o
        }
        let text: String
        do {
            text = try chatTemplate.render(messages: normalized, addGenerationPrompt: addGenerationPrompt, extra: extra)
        } catch let e as TemplateError {
            throw APIError(.badRequest, e.description, shape: .openAI)
        }
        let ids = tokenizer.encode(text, addSpecialTokens: chatTemplate.isFallback)
        guard !ids.isEmpty else { throw APIError(.badRequest, "The chat template produced an empty prompt.", shape: .openAI) }
        return ids
    }

    // MARK: Logprobs

    func tokenText(_ id: Int) -> String { tokenizer.decode([id], skipSpecialTokens: false) }

    /// The legacy completions `logprobs` object.
    func completionLogprobs(_ tokens: ArraySlice<SampledToken>, textOffset: Int) -> JSON {
        var offset = textOffset
        var offsets: [JSON] = []
        for t in tokens {
            offsets.append(.int(offset))
            offset += tokenText(t.token).count
        }
        return [
            "text_offset": .array(offsets),
            "token_logprobs": .array(tokens.map { JSON($0.logprob) }),
            "tokens": .array(tokens.map { .string(tokenText($0.token)) }),
            "top_logprobs": .array(tokens.map { t in
                var o = JSONObject()
                for c in t.topLogprobs where o[tokenText(c.token)] == nil { o[tokenText(c.token)] = JSON(c.logprob) }
                return .object(o)
            }),
        ]
    }

    func completionLogprobs(_ tokens: [SampledToken], textOffset: Int) -> JSON {
        completionLogprobs(tokens[...], textOffset: textOffset)
    }

    /// The chat `logprobs` object: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
    func chatLogprobs(_ tokens: some Collection<SampledToken>) -> JSON {
        func entry(_ token: Int, _ logprob: Float?) -> JSONObject {
            let text = tokenText(token)
            return ["token": .string(text), "logprob": JSON(logprob), "bytes": JSON(Array(text.utf8).map(Int.init))]
        }
        return ["content": .array(tokens.map { t in
            var o = entry(t.token, t.logprob)
            o["top_logprobs"] = .array(t.topLogprobs.map { .object(entry($0.token, $0.logprob)) })
            return .object(o)
        })]
    }

    // MARK: Models

    var modelCards: [JSON] {
        let created = JSON.int(startTime)
        var cards: [JSON] = [[
            "id": .string(servedModelName), "object": "model", "created": created, "owned_by": "sglang",
            "root": .string(servedModelName), "parent": nil, "max_model_len": .int(service.maxContextLength),
        ]]
        for a in service.adapters?.adapters ?? [] {
            cards.append([
                "id": .string(a.name), "object": "model", "created": created, "owned_by": "sglang",
                "root": .string(a.path), "parent": .string(servedModelName), "max_model_len": .int(service.maxContextLength),
            ])
        }
        return cards
    }

    var modelList: JSON { ["object": "list", "data": .array(modelCards)] }
}
