import Engine
import Foundation
import Testing

@testable import Server

/// `POST /generate` through real HTTP: shapes, batches, adapters, `n`, logprobs, streaming.
@Suite struct GenerateTests {
    @Test func singleTextPromptAnswersOneObject() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let r = try await server.post("/generate", ["text": "Once upon a time", "sampling_params": ["max_new_tokens": 5, "temperature": 0]])
            #expect(r.status == 200)
            #expect(r.headers["content-type"] == "application/json")
            let j = try r.json()
            let prompt = service.tokenizer.encode("Once upon a time")
            let expected = service.expectedTokens(prompt: prompt, count: 5)
            #expect(j["output_ids"] == JSON(expected))
            #expect(j["text"]?.stringValue == service.tokenizer.decode(expected))
            #expect(j.objectValue?.keys == ["text", "output_ids", "meta_info"])
            #expect(j["meta_info", "finish_reason"] == ["type": "length", "length": 5])
            #expect(j["meta_info", "prompt_tokens"] == .int(prompt.count))
            #expect(j["meta_info", "completion_tokens"] == 5)
            #expect(j["meta_info", "cached_tokens"] == 0)
            #expect(j["meta_info", "id"]?.stringValue?.count == 32)
            #expect(service.submitted.first?.adapter == nil)
        }
    }

    @Test func inputIdsAndBatches() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let single = try await server.post("/generate", ["input_ids": [1, 10, 20], "sampling_params": ["max_new_tokens": 3]])
            #expect(try single.json()["output_ids"] == JSON(service.expectedTokens(prompt: [1, 10, 20], count: 3)))

            let batch = try await server.post("/generate", ["input_ids": [[1, 10], [1, 30, 40]], "sampling_params": ["max_new_tokens": 2]])
            let items = try #require(try batch.json().arrayValue)
            #expect(items.count == 2)
            #expect(items[0]["output_ids"] == JSON(service.expectedTokens(prompt: [1, 10], count: 2)))
            #expect(items[1]["output_ids"] == JSON(service.expectedTokens(prompt: [1, 30, 40], count: 2)))

            let texts = try await server.post("/generate", ["text": ["Hello", "World"], "sampling_params": [["max_new_tokens": 1], ["max_new_tokens": 2]]])
            let t = try #require(try texts.json().arrayValue)
            #expect(t[0]["meta_info", "completion_tokens"] == 1)
            #expect(t[1]["meta_info", "completion_tokens"] == 2)
        }
    }

    /// SGLang's documented seed scenario: the same prompt with `["<adapter>", null]`.
    @Test func adapterListWithNullMixesAdapterAndBase() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let prompt = "List 3 countries and their capitals."
            let r = try await server.post("/generate", [
                "text": [.string(prompt), .string(prompt)], "sampling_params": ["max_new_tokens": 8, "temperature": 0],
                "lora_path": ["sql", nil],
            ])
            #expect(r.status == 200)
            let items = try #require(try r.json().arrayValue)
            let ids = service.tokenizer.encode(prompt)
            let sqlUID = try #require(service.adapters?.lookup("sql")?.uid)
            #expect(items[0]["output_ids"] == JSON(service.expectedTokens(prompt: ids, adapterUID: sqlUID, count: 8)))
            #expect(items[1]["output_ids"] == JSON(service.expectedTokens(prompt: ids, count: 8)))
            #expect(items[0]["text"] != items[1]["text"])
            let adapters = service.submitted.map { $0.adapter?.name }
            #expect(adapters == ["sql", nil])

            let two = try await server.post("/generate", ["text": [.string(prompt), .string(prompt)], "lora_path": ["sql", "python"], "sampling_params": ["max_new_tokens": 2]])
            let pair = try #require(try two.json().arrayValue)
            #expect(pair[0]["output_ids"] != pair[1]["output_ids"])

            let shared = try await server.post("/generate", ["text": ["a b", "c d"], "lora_path": "python", "sampling_params": ["max_new_tokens": 1]])
            #expect(shared.status == 200)
            #expect(service.submitted.suffix(2).allSatisfy { $0.adapter?.name == "python" })
        }
    }

    @Test func adapterListLengthMustMatchTheBatch() async throws {
        try await withServer(try makeService()) { server in
            let r = try await server.post("/generate", ["text": ["a", "b", "c"], "lora_path": ["sql", nil]])
            #expect(r.status == 400)
            #expect(try r.json()["error", "message"]?.stringValue?.contains("lora_path has 2 entries for 3 prompts") == true)
        }
    }

    @Test func nFansOutWithConsecutiveSeeds() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let r = try await server.post("/generate", [
                "text": "Hi", "sampling_params": ["n": 3, "max_new_tokens": 2, "temperature": 0.8, "sampling_seed": 42],
            ])
            let items = try #require(try r.json().arrayValue)
            #expect(items.count == 3)
            #expect(service.submitted.map { $0.params.samplingSeed } == [42, 43, 44])
            #expect(service.submitted.allSatisfy { $0.params.n == 1 })
            #expect(Set(items.map { $0["output_ids"]! }).count == 3)
            #expect(Set(items.compactMap { $0["meta_info", "id"]?.stringValue }).count == 3)

            // A batch with n: prompt-major order.
            let b = try await server.post("/generate", ["input_ids": [[1, 5], [1, 9]], "sampling_params": ["n": 2, "max_new_tokens": 1]])
            let bi = try #require(try b.json().arrayValue)
            #expect(bi.count == 4)
            #expect(service.submitted.suffix(4).map(\.promptIds) == [[1, 5], [1, 5], [1, 9], [1, 9]])
        }
    }

    @Test func logprobsAreTriples() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let r = try await server.post("/generate", [
                "input_ids": [1, 50], "sampling_params": ["max_new_tokens": 2], "return_logprob": true, "top_logprobs_num": 2,
                "return_text_in_logprobs": true,
            ])
            let meta = try #require(try r.json()["meta_info"])
            let out = try #require(meta["output_token_logprobs"]?.arrayValue)
            #expect(out.count == 2)
            let first = service.expectedTokens(prompt: [1, 50], count: 2)[0]
            #expect(out[0][1] == .int(first))
            #expect(out[0][0]?.doubleValue == Double(-Float(first % 7) / 4))
            #expect(out[0][2]?.stringValue == service.tokenizer.decode([first], skipSpecialTokens: false))
            let top = try #require(meta["output_top_logprobs"]?.arrayValue)
            #expect(top.count == 2)
            #expect(top[0].arrayValue?.count == 2)
            #expect(meta["input_token_logprobs"]?.arrayValue?.count == 2)
            #expect(service.submitted[0].returnLogprob && service.submitted[0].topLogprobsNum == 2)

            let plain = try await server.post("/generate", ["input_ids": [1, 50], "sampling_params": ["max_new_tokens": 2], "return_logprob": true])
            let pm = try #require(try plain.json()["meta_info"])
            #expect(pm["output_token_logprobs"]?[0]?[2] == .null)
            #expect(pm["output_top_logprobs"] == nil)
        }
    }

    @Test func stopTokenAndStopStringFinishReasons() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let tokens = service.expectedTokens(prompt: [1, 100, 200], count: 4)
            let r = try await server.post("/generate", ["input_ids": [1, 100, 200], "sampling_params": ["max_new_tokens": 10, "stop_token_ids": [.int(tokens[1])]]])
            let j = try r.json()
            #expect(j["meta_info", "finish_reason"] == ["type": "stop", "matched": .int(tokens[1])])
            #expect(j["output_ids"] == JSON(Array(tokens[0...1])))

            let prompt = service.tokenizer.encode("the cat sat on the mat and the dog ran")
            let full = service.tokenizer.decode(service.expectedTokens(prompt: prompt, count: 10))
            let letters = Array(full.unicodeScalars.enumerated().filter { $0.offset > 2 && $0.element.properties.isAlphabetic && $0.element.isASCII })
            let stop = String(try #require(letters.first).element)
            let s = try await server.post("/generate", ["input_ids": JSON(prompt), "sampling_params": ["max_new_tokens": 10, "stop": .string(stop)]])
            let sj = try s.json()
            #expect(sj["meta_info", "finish_reason"] == ["type": "stop", "matched": .string(stop)])
            #expect(sj["text"]?.stringValue?.contains(stop) == false)
        }
    }

    @Test func streamingSendsCumulativeChunksThenDone() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let r = try await server.post("/generate", ["input_ids": [1, 60, 70], "sampling_params": ["max_new_tokens": 4], "stream": true])
            #expect(r.status == 200)
            #expect(r.headers["content-type"] == "text/event-stream")
            #expect(r.text.hasSuffix("data: [DONE]\n\n"))
            let events = r.events
            #expect(events.last == "[DONE]")
            let chunks = try events.dropLast().map { try JSON.parse($0) }
            #expect(chunks.count == 5)  // four tokens, then the finish
            let expected = service.expectedTokens(prompt: [1, 60, 70], count: 4)
            for (k, chunk) in chunks.prefix(4).enumerated() {
                #expect(chunk["output_ids"] == JSON(Array(expected[...k])))
                #expect(chunk["meta_info", "finish_reason"] == .null)
                #expect(chunk["meta_info", "completion_tokens"] == .int(k + 1))
                #expect(chunk["index"] == nil)
            }
            #expect(chunks.last?["meta_info", "finish_reason"] == ["type": "length", "length": 4])
            #expect(chunks.last?["text"]?.stringValue == service.tokenizer.decode(expected))
        }
    }

    @Test func streamingBatchCarriesIndexes() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            let r = try await server.post("/generate", ["text": ["One", "Two"], "lora_path": [nil, "sql"], "sampling_params": ["max_new_tokens": 3], "stream": true])
            let chunks = try r.events.dropLast().map { try JSON.parse($0) }
            let finals = chunks.filter { $0["meta_info", "finish_reason"] != .null }
            #expect(Set(finals.compactMap { $0["index"]?.intValue }) == [0, 1])
            #expect(chunks.allSatisfy { $0["index"] != nil })
        }
    }

    @Test func engineAbortIsReportedAsAbortFinishReason() async throws {
        let service = try makeService()
        service.tokenDelay = .milliseconds(20)
        try await withServer(service) { server in
            async let response = server.post("/generate", ["input_ids": [1, 2, 3], "rid": "to-abort", "sampling_params": ["max_new_tokens": 200]])
            #expect(await eventually { service.runningCount == 1 })
            service.abort(id: "to-abort")
            let j = try await response.json()
            #expect(j["meta_info", "id"] == "to-abort")
            #expect(j["meta_info", "finish_reason", "type"] == "abort")
            #expect(j["meta_info", "finish_reason", "message"]?.stringValue?.isEmpty == false)
        }
    }
}
