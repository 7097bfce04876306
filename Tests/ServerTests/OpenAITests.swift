import Engine
import Foundation
import Testing

@testable import Server

/// `/v1/completions`, `/v1/chat/completions` and `/v1/models` in OpenAI's shapes.
@Suite struct OpenAITests {
    @Test func completionShapeAndUsage() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let r = try await server.post("/v1/completions", ["model": "stories260k", "prompt": "Once upon", "max_tokens": 4, "temperature": 0])
            #expect(r.status == 200)
            let j = try r.json()
            #expect(j["object"] == "text_completion")
            #expect(j["model"] == "stories260k")
            #expect(j["id"]?.stringValue?.hasPrefix("cmpl-") == true)
            let prompt = service.tokenizer.encode("Once upon")
            let expected = service.expectedTokens(prompt: prompt, count: 4)
            #expect(j["choices"]?[0]?["text"]?.stringValue == service.tokenizer.decode(expected))
            #expect(j["choices"]?[0]?["finish_reason"] == "length")
            #expect(j["choices"]?[0]?["index"] == 0)
            #expect(j["usage"] == ["prompt_tokens": .int(prompt.count), "total_tokens": .int(prompt.count + 4), "completion_tokens": 4, "prompt_tokens_details": nil])
            #expect(service.submitted[0].params.maxNewTokens == 4)
            #expect(service.submitted[0].params.temperature == 0)

            // Default max_tokens is OpenAI's 16; prompts as ids and lists; n.
            let d = try await server.post("/v1/completions", ["prompt": [[1, 5, 6], [1, 7]], "n": 2])
            let choices = try #require(try d.json()["choices"]?.arrayValue)
            #expect(choices.count == 4)
            #expect(choices.map { $0["index"]!.intValue! } == [0, 1, 2, 3])
            #expect(service.submitted.suffix(4).allSatisfy { $0.params.maxNewTokens == 16 })
            #expect(try d.json()["usage", "prompt_tokens"] == 5)
        }
    }

    @Test func adapterSelectionEchoesTheModel() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let a = try await server.post("/v1/completions", ["model": "stories260k:sql", "prompt": "Hi", "max_tokens": 1])
            #expect(try a.json()["model"] == "stories260k:sql")
            #expect(service.submitted.last?.adapter?.name == "sql")

            let b = try await server.post("/v1/chat/completions", ["model": "python", "messages": [["role": "user", "content": "Hi"]], "max_tokens": 1])
            #expect(try b.json()["model"] == "python")
            #expect(service.submitted.last?.adapter?.name == "python")

            let c = try await server.post("/v1/completions", ["model": "stories260k", "prompt": "Hi", "max_tokens": 1, "lora_path": "sql"])
            #expect(c.status == 200)
            #expect(service.submitted.last?.adapter?.name == "sql")

            let base = try await server.post("/v1/completions", ["model": "stories260k", "prompt": "Hi", "max_tokens": 1])
            #expect(base.status == 200)
            #expect(service.submitted.last?.adapter == nil)

            // The model field wins over lora_path, as in SGLang.
            _ = try await server.post("/v1/completions", ["model": "stories260k:python", "prompt": "Hi", "max_tokens": 1, "lora_path": "sql"])
            #expect(service.submitted.last?.adapter?.name == "python")
        }
    }

    @Test func chatUsesTheFallbackTemplateWithoutOne() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let r = try await server.post("/v1/chat/completions", [
                "model": "stories260k", "messages": [["role": "system", "content": "Tell stories."], ["role": "user", "content": "A cat"]],
                "max_tokens": 3,
            ])
            #expect(r.status == 200)
            let j = try r.json()
            #expect(j["object"] == "chat.completion")
            #expect(j["id"]?.stringValue?.hasPrefix("chatcmpl-") == true)
            #expect(j["choices"]?[0]?["message", "role"] == "assistant")
            let prompt = service.tokenizer.encode("System: Tell stories.\nUser: A cat\nAssistant:")
            #expect(service.submitted[0].promptIds == prompt)
            #expect(j["choices"]?[0]?["message", "content"]?.stringValue == service.tokenizer.decode(service.expectedTokens(prompt: prompt, count: 3)))
            #expect(j["usage", "prompt_tokens"] == .int(prompt.count))
        }
    }

    @Test func chatRendersTheModelsTemplate() async throws {
        let service = try makeService()
        let template = ChatTemplate(
            source: "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] | trim }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
            bosToken: "<s>", eosToken: "</s>")
        try await withServer(service, chatTemplate: template) { server in
            let r = try await server.post("/v1/chat/completions", [
                "messages": [["role": "user", "content": [["type": "text", "text": " Once "], ["type": "text", "text": "upon"]]]], "max_tokens": 2,
            ])
            #expect(r.status == 200)
            #expect(try r.json()["model"] == "stories260k")
            let rendered = "<s>[user] Once \nupon\n[assistant]"
            #expect(service.submitted[0].promptIds == service.tokenizer.encode(rendered, addSpecialTokens: false))

            let bad = ChatTemplate(source: "{% for m in messages %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endfor %}")
            try await withServer(service, chatTemplate: bad) { s2 in
                let e = try await s2.post("/v1/chat/completions", ["messages": [["role": "user", "content": "x"]]])
                #expect(e.status == 400)
                #expect(try e.json()["message"] == "Only user and assistant roles are supported!")
            }
        }
    }

    @Test func completionStreaming() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let r = try await server.post("/v1/completions", ["prompt": "Once", "max_tokens": 3, "stream": true, "stream_options": ["include_usage": true]])
            #expect(r.headers["content-type"] == "text/event-stream")
            #expect(r.events.last == "[DONE]")
            let chunks = try r.events.dropLast().map { try JSON.parse($0) }
            #expect(chunks.allSatisfy { $0["object"] == "text_completion" })
            let text = chunks.compactMap { $0["choices"]?[0]?["text"]?.stringValue }.joined()
            let prompt = service.tokenizer.encode("Once")
            #expect(text == service.tokenizer.decode(service.expectedTokens(prompt: prompt, count: 3)))
            #expect(chunks.dropLast().last?["choices"]?[0]?["finish_reason"] == "length")
            #expect(chunks.last?["choices"] == [])
            #expect(chunks.last?["usage", "completion_tokens"] == 3)
        }
    }

    @Test func chatStreamingWithN() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let r = try await server.post("/v1/chat/completions", [
                "messages": [["role": "user", "content": "Hi"]], "max_tokens": 2, "stream": true, "n": 2, "temperature": 0.7, "seed": 5,
            ])
            let chunks = try r.events.dropLast().map { try JSON.parse($0) }
            #expect(chunks.allSatisfy { $0["object"] == "chat.completion.chunk" })
            for index in 0..<2 {
                let mine = chunks.filter { $0["choices"]?[0]?["index"] == .int(index) }
                #expect(mine.first?["choices"]?[0]?["delta"] == ["role": "assistant", "content": ""])
                #expect(mine.last?["choices"]?[0]?["delta"] == [:])
                #expect(mine.last?["choices"]?[0]?["finish_reason"] == "length")
                let content = mine.compactMap { $0["choices"]?[0]?["delta", "content"]?.stringValue }.joined()
                let prompt = service.submitted[index].promptIds
                #expect(content == service.tokenizer.decode(service.expectedTokens(prompt: prompt, count: 2, seedShift: 5 + index)))
            }
            #expect(service.submitted.map { $0.params.samplingSeed } == [5, 6])
        }
    }

    @Test func logprobsInOpenAIShapes() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let c = try await server.post("/v1/completions", ["prompt": [1, 40], "max_tokens": 2, "logprobs": 2])
            let lp = try #require(try c.json()["choices"]?[0]?["logprobs"])
            #expect(lp["tokens"]?.arrayValue?.count == 2)
            #expect(lp["token_logprobs"]?.arrayValue?.count == 2)
            #expect(lp["top_logprobs"]?[0]?.objectValue?.keys.count == 2)
            #expect(lp["text_offset"]?[0] == 0)

            let chat = try await server.post("/v1/chat/completions", ["messages": [["role": "user", "content": "Hi"]], "max_tokens": 2, "logprobs": true, "top_logprobs": 3])
            let content = try #require(try chat.json()["choices"]?[0]?["logprobs", "content"]?.arrayValue)
            #expect(content.count == 2)
            #expect(content[0]["top_logprobs"]?.arrayValue?.count == 3)
            #expect(content[0]["bytes"]?.arrayValue != nil)
            #expect(service.submitted.last?.topLogprobsNum == 3)
        }
    }

    @Test func modelsListsTheBaseAndEveryAdapter() async throws {
        try await withServer(try makeService(), configure: { $0.servedModelName = "stories" }) { server in
            let j = try await server.get("/v1/models").json()
            #expect(j["object"] == "list")
            let data = try #require(j["data"]?.arrayValue)
            #expect(data.map { $0["id"]!.stringValue! } == ["stories", "sql", "python"])
            #expect(data[0]["parent"] == .null)
            #expect(data[0]["max_model_len"] == 512)
            #expect(data[1]["root"] == "/adapters/sql")
            #expect(data[1]["parent"] == "stories")
            #expect(data[2]["object"] == "model")

            #expect(try await server.get("/v1/models/sql").json()["root"] == "/adapters/sql")
            #expect(try await server.get("/v1/models/stories").json()["id"] == "stories")
            let missing = try await server.get("/v1/models/nope")
            #expect(missing.status == 404)
            #expect(try missing.json()["error", "code"] == "model_not_found")

            _ = try await server.post("/load_lora_adapter", ["lora_name": "new", "lora_path": "/adapters/new"])
            #expect(try await server.get("/v1/models").json()["data"]?.arrayValue?.count == 4)
        }
    }

    @Test func hubStyleModelNamesWithSlashes() async throws {
        let service = try makeService()
        try await withServer(service, configure: { $0.servedModelName = "org/stories-260k" }) { server in
            #expect(try await server.get("/v1/models/org/stories-260k").json()["id"] == "org/stories-260k")
            let r = try await server.post("/v1/completions", ["model": "org/stories-260k:sql", "prompt": "Hi", "max_tokens": 1])
            #expect(try r.json()["model"] == "org/stories-260k:sql")
            #expect(service.submitted.last?.adapter?.name == "sql")
        }
    }

    @Test func stopAndMatchedStop() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let tokens = service.expectedTokens(prompt: [1, 100], count: 5)
            let r = try await server.post("/v1/completions", ["prompt": [1, 100], "max_tokens": 5, "stop_token_ids": [.int(tokens[2])]])
            let choice = try #require(try r.json()["choices"]?[0])
            #expect(choice["finish_reason"] == "stop")
            #expect(choice["matched_stop"] == .int(tokens[2]))
        }
    }
}
