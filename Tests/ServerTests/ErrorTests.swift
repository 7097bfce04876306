import Engine
import Foundation
import Testing

@testable import Server

/// Every refusal is a 400 in SGLang's error shape for its route, and the server keeps serving.
@Suite struct ErrorTests {
    /// `{"object": "error", "message", "type": "Bad Request", "param": null, "code": 400}`.
    func expectValidationError(_ r: TestResponse, contains text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(r.status == 400, sourceLocation: sourceLocation)
        let j = try r.json()
        #expect(j.objectValue?.keys == ["object", "message", "type", "param", "code"], sourceLocation: sourceLocation)
        #expect(j["object"] == "error", sourceLocation: sourceLocation)
        #expect(j["code"] == 400, sourceLocation: sourceLocation)
        #expect(j["param"] == .null, sourceLocation: sourceLocation)
        let message = j["message"]?.stringValue ?? ""
        #expect(message.contains(text), "message: \(message)", sourceLocation: sourceLocation)
    }

    /// `/generate`'s `{"error": {"message": ...}}`.
    func expectNativeError(_ r: TestResponse, contains text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(r.status == 400, sourceLocation: sourceLocation)
        let j = try r.json()
        let message = j["error", "message"]?.stringValue ?? ""
        #expect(message.contains(text), "message: \(message) in \(j.text)", sourceLocation: sourceLocation)
    }

    @Test func malformedJSONAndWrongTypes() async throws {
        try await withServer(try makeService()) { server in
            try expectValidationError(try await server.request("POST", "/generate", body: "{\"text\": ", headers: ["Content-Type": "application/json"]), contains: "JSON decode error")
            try expectValidationError(try await server.request("POST", "/generate", body: "[1, 2]"), contains: "must be a JSON object")
            try expectValidationError(try await server.post("/generate", ["text": 5]), contains: "text must be a string or a list of strings")
            try expectValidationError(try await server.post("/generate", ["text": "hi", "stream": "yes"]), contains: "stream must be a boolean")
            try expectValidationError(try await server.post("/generate", ["text": "hi", "sampling_params": ["temperature": "hot"]]), contains: "sampling_params.temperature must be a number")
            try expectValidationError(try await server.post("/generate", ["text": "hi", "lora_path": 3]), contains: "lora_path must be")
            try expectValidationError(try await server.post("/v1/completions", ["prompt": "hi", "max_tokens": "many"]), contains: "max_tokens must be an integer")
            try expectValidationError(
                try await server.request("POST", "/v1/completions", body: "{\"prompt\": \"x\"}", headers: ["Content-Type": "text/plain"]),
                contains: "Only 'application/json' is allowed")
            // Still serving.
            #expect(try await server.post("/generate", ["text": "hi", "sampling_params": ["max_new_tokens": 1]]).status == 200)
        }
    }

    @Test func unknownAdapterListsLoadedAdapters() async throws {
        try await withServer(try makeService()) { server in
            let r = try await server.post("/generate", ["text": ["a", "b"], "lora_path": ["nope", "sql"]])
            try expectNativeError(r, contains: "The following requested LoRA adapters are not loaded: nope")
            try expectNativeError(r, contains: "Loaded adapters: sql, python")

            let o = try await server.post("/v1/completions", ["model": "stories260k:nope", "prompt": "hi"])
            #expect(o.status == 400)
            let j = try o.json()
            #expect(j["object"] == "error")
            #expect(j["type"] == "BadRequestError")
            #expect(j["message"]?.stringValue?.contains("not loaded: nope") == true)
        }
    }

    @Test func loraNotEnabled() async throws {
        try await withServer(try makeService(lora: false)) { server in
            try expectNativeError(try await server.post("/generate", ["text": "hi", "lora_path": "sql"]), contains: "LoRA is not enabled. Please set `--enable-lora` to enable LoRA.")
            // A null adapter is the base model and fine.
            #expect(try await server.post("/generate", ["text": "hi", "lora_path": nil, "sampling_params": ["max_new_tokens": 1]]).status == 200)
            let load = try await server.post("/load_lora_adapter", ["lora_name": "x", "lora_path": "/x"])
            #expect(load.status == 400)
            #expect(try load.json()["error_message"]?.stringValue?.hasPrefix("LoRA is not enabled") == true)
            #expect(try await server.get("/v1/models").json()["data"]?.arrayValue?.count == 1)
        }
    }

    @Test func promptLongerThanTheContext() async throws {
        try await withServer(try makeService(maxContextLength: 64)) { server in
            let long = Array(repeating: 7, count: 64)
            try expectNativeError(try await server.post("/generate", ["input_ids": JSON(long)]), contains: "is longer than the model's context length (64 tokens)")
            try expectNativeError(
                try await server.post("/generate", ["input_ids": JSON(Array(long.prefix(40))), "sampling_params": ["max_new_tokens": 30]]),
                contains: "Requested token count exceeds the model's maximum context length of 64 tokens")
            let chat = try await server.post("/v1/completions", ["prompt": JSON(long), "max_tokens": 1])
            #expect(chat.status == 400)
            #expect(try chat.json()["message"]?.stringValue?.contains("context length") == true)
        }
    }

    @Test func emptyPromptsAndBadIds() async throws {
        try await withServer(try makeService()) { server in
            try expectNativeError(try await server.post("/generate", ["text": ""]), contains: "empty")
            try expectNativeError(try await server.post("/generate", ["input_ids": []]), contains: "empty")
            try expectNativeError(try await server.post("/generate", ["sampling_params": ["max_new_tokens": 1]]), contains: "Either text or input_ids")
            try expectNativeError(try await server.post("/generate", ["input_ids": [1, 99999]]), contains: "outside the vocabulary")
            try expectNativeError(try await server.post("/generate", ["text": "x", "sampling_params": ["top_p": 2]]), contains: "top_p must be in (0, 1]")
            #expect(try await server.post("/v1/completions", ["prompt": ""]).status == 400)
            #expect(try await server.post("/v1/chat/completions", ["messages": []]).status == 400)
        }
    }

    @Test func engineRefusalsKeepTheirStatusAlsoWhenStreaming() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            service.refusal = EngineError.queueFull(8)
            for stream in [false, true] {
                let r = try await server.post("/generate", ["text": "hi", "stream": .bool(stream)])
                #expect(r.status == 503)
                #expect(r.headers["retry-after"] == "1")
                try #expect(r.json()["error", "message"]?.stringValue?.contains("--max-queued-requests") == true)
                let o = try await server.post("/v1/chat/completions", ["messages": [["role": "user", "content": "hi"]], "stream": .bool(stream)])
                #expect(o.status == 503)
                #expect(try o.json()["type"] == "ServiceUnavailableError")
            }
            service.refusal = EngineError.adapterUnloaded("sql")
            let gone = try await server.post("/generate", ["text": "hi", "lora_path": "sql", "stream": true])
            #expect(gone.status == 400)
            service.refusal = nil
            #expect(try await server.post("/generate", ["text": "hi", "sampling_params": ["max_new_tokens": 1]]).status == 200)
        }
    }

    @Test func unknownRoutesAnswerFastAPIsNotFound() async throws {
        try await withServer(try makeService()) { server in
            let r = try await server.get("/nope")
            #expect(r.status == 404)
            #expect(try r.json() == ["detail": "Not Found"])
        }
    }
}
