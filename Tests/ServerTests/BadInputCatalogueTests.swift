import Foundation
import Testing

@testable import Server

/// Malformed and hostile requests against `loom serve` on the real engine (stories260K with the
/// demo adapters), through real HTTP on loopback. Each must get its 4xx with a clear message,
/// while a well-formed greedy request sent alongside gives exactly the tokens it gives alone.
@Suite(.enabled(if: LoomServeProcess.binary != nil, "the loom binary is not built next to the tests"))
struct BadInputCatalogueTests {
    /// One hostile request and what it must get back.
    struct Case: CustomStringConvertible, Sendable {
        var name: String
        var method = "POST"
        var path: String
        var body: [UInt8]?
        var headers: [String: String] = [:]
        var status: Int
        var message: String

        var description: String { name }

        static func json(_ name: String, _ path: String, _ body: JSON, _ status: Int, _ message: String) -> Case {
            Case(name: name, path: path, body: body.serialized(), status: status, message: message)
        }

        static func raw(_ name: String, _ path: String, _ body: String, _ status: Int, _ message: String, headers: [String: String] = [:]) -> Case {
            Case(name: name, path: path, body: Array(body.utf8), headers: headers, status: status, message: message)
        }

        static func generate(_ name: String, _ body: JSON, _ message: String, status: Int = 400) -> Case {
            json(name, "/generate", body, status, message)
        }

        static func sampling(_ name: String, _ params: JSON, _ message: String) -> Case {
            generate(name, ["text": "Once upon a time", "sampling_params": params], message)
        }

        static func load(_ name: String, _ adapter: String, _ path: String, _ message: String) -> Case {
            json(name, "/load_lora_adapter", ["lora_name": .string(adapter), "lora_path": .string(path)], 400, message)
        }
    }

    /// The catalogue. `dir` holds the broken adapter folders `makeBrokenAdapters` wrote.
    static func catalogue(dir: String) -> [Case] {
        let fixtures = TestSupport.url("Fixtures").path
        return [
            // Broken JSON and bodies.
            .raw("broken JSON", "/generate", "{bad json", 400, "JSON decode error"),
            .raw("truncated JSON", "/generate", "{\"text\": \"Once", 400, "JSON decode error"),
            .raw("empty body", "/generate", "", 400, "body is empty"),
            .raw("a list, not an object", "/generate", "[1, 2]", 400, "must be a JSON object"),
            .raw("NaN literal", "/generate", "{\"text\": \"hi\", \"sampling_params\": {\"temperature\": NaN}}", 400, "JSON decode error"),
            .raw("number overflowing to infinity", "/generate", "{\"text\": \"hi\", \"sampling_params\": {\"temperature\": 1e400}}", 400, "out of range"),
            .raw("body over --max-request-body-bytes", "/generate", "{\"text\": \"" + String(repeating: "a", count: 70_000) + "\"}", 413, "larger than 65536 bytes"),
            .raw("OpenAI body without a JSON content type", "/v1/completions", "{\"prompt\": \"hi\"}", 400, "Only 'application/json'", headers: ["Content-Type": "text/plain"]),
            // Wrong types.
            .generate("text is a number", ["text": 5], "text must be a string or a list of strings"),
            .generate("sampling_params is a string", ["text": "hi", "sampling_params": "x"], "sampling_params must be an object"),
            .sampling("max_new_tokens is a string", ["max_new_tokens": "ten"], "max_new_tokens must be an integer"),
            .generate("stream is a string", ["text": "hi", "stream": "yes"], "stream must be a boolean"),
            .generate("lora_path is a number", ["text": "hi", "lora_path": 5], "lora_path must be a string"),
            .generate("input_ids hold a float", ["input_ids": [1.5]], "input_ids must be a list of integers"),
            .json("chat messages is a string", "/v1/chat/completions", ["messages": "hi"], 400, "messages must be a list"),
            // Huge numbers.
            .sampling("max_new_tokens 1e30", ["max_new_tokens": 1e30], "max_new_tokens must be an integer"),
            .sampling("max_new_tokens Int.max", ["max_new_tokens": .int(Int.max)], "exceeds the model's maximum context length"),
            .sampling("sampling_seed 2^70", ["sampling_seed": 1.2e21], "sampling_seed must be an integer"),
            .generate("input id outside the vocabulary", ["input_ids": [1_000_000_000]], "outside the vocabulary"),
            .sampling("n of 100000", ["n": 100_000], "n must be in [1, 64]"),
            // Negative or absurd sampling parameters.
            .sampling("negative temperature", ["temperature": -1], "temperature must be a non-negative"),
            .sampling("top_p 0", ["top_p": 0], "top_p must be in (0, 1]"),
            .sampling("top_p 1.5", ["top_p": 1.5], "top_p must be in (0, 1]"),
            .sampling("top_k 0", ["top_k": 0], "top_k must be -1"),
            .sampling("min_p 2", ["min_p": 2], "min_p must be in [0, 1]"),
            .sampling("frequency_penalty 100", ["frequency_penalty": 100], "frequency_penalty must be in [-2, 2]"),
            .sampling("presence_penalty -3", ["presence_penalty": -3], "presence_penalty must be in [-2, 2]"),
            .sampling("repetition_penalty 0", ["repetition_penalty": 0], "repetition_penalty must be in (0, 2]"),
            .sampling("negative max_new_tokens", ["max_new_tokens": -1], "max_new_tokens must be at least 0"),
            .sampling("min_new_tokens above max_new_tokens", ["min_new_tokens": 5, "max_new_tokens": 2], "min_new_tokens must be in [0, max_new_tokens(2)]"),
            .sampling("negative stop token id", ["stop_token_ids": [-5]], "stop_token_ids must be in"),
            .sampling("empty stop string", ["stop": [""]], "stop strings must not be empty"),
            .generate("negative top_logprobs_num", ["text": "hi", "top_logprobs_num": -1], "top_logprobs_num must be a non-negative integer"),
            .json("OpenAI negative max_tokens", "/v1/completions", ["prompt": "hi", "max_tokens": -3], 400, "max_new_tokens must be at least 0"),
            // Empty prompts.
            .generate("empty text", ["text": ""], "The input text is empty"),
            .generate("empty batch", ["text": []], "The batch is empty"),
            .generate("empty input_ids", ["input_ids": []], "The input is empty"),
            .generate("neither text nor input_ids", ["sampling_params": ["max_new_tokens": 1]], "Either text or input_ids should be provided"),
            .json("no chat messages", "/v1/chat/completions", ["messages": []], 400, "messages must not be empty"),
            // Prompts over the context (512 tokens).
            .generate("prompt over the context", ["input_ids": JSON(Array(repeating: 1, count: 600))], "longer than the model's context length"),
            .sampling("prompt plus max_new_tokens over the context", ["max_new_tokens": 600], "exceeds the model's maximum context length of 512 tokens"),
            .json("OpenAI max_tokens over the context", "/v1/completions", ["prompt": "hi", "max_tokens": 600], 400, "exceeds the model's maximum context length"),
            // Unknown adapters and adapter names with path characters.
            .generate("unknown adapter", ["text": "hi", "lora_path": "nope"], "not loaded: nope\\nLoaded adapters: pirate, dragon"),
            .generate("adapter name with ../", ["text": "hi", "lora_path": "../../etc/passwd"], "not loaded: ../../etc/passwd"),
            .generate("adapter given by its folder", ["text": "hi", "lora_path": .string(fixtures + "/demo-adapters/pirate")], "not loaded"),
            .generate("lora_path list of the wrong length", ["text": "hi", "lora_path": ["pirate", nil]], "lora_path has 2 entries for 1 prompt"),
            .json("OpenAI unknown adapter", "/v1/completions", ["model": "stories260k:nope", "prompt": "hi"], 400, "nope"),
            // Loads that must fail.
            .load("load of a missing folder", "x", dir + "/missing", "not found"),
            .load("load of a corrupt safetensors", "x", dir + "/corrupt", "bad header"),
            .load("load of a truncated safetensors", "x", dir + "/truncated", "truncated file?"),
            .load("load of an oversized header", "x", dir + "/oversized", "declared length 1099511627776"),
            .load("load of a tensor shape that overflows", "x", dir + "/overflow", "inconsistent with the"),
            .load("load of a non-PEFT folder", "x", dir + "/not-peft", "adapter_config.json"),
            .load("load of a prefix-tuning adapter", "x", dir + "/prefix-tuning", "peft_type PREFIX_TUNING is not supported"),
            .load("load of an unreadable adapter_config.json", "x", dir + "/bad-config", "adapter_config.json"),
            .load("load of a file instead of a folder", "x", fixtures + "/demo-adapters/pirate/adapter_config.json", "is a file; an adapter is a folder"),
            .load("load of a rank over the pool's", "x", fixtures + "/models/stories260k/adapters/r64-pattern", "rank 64 is incompatible"),
            .load("load of an empty path", "x", "", "not found"),
            .load("load under a name with ../", "../evil", fixtures + "/demo-adapters/pirate", "looks like a path"),
            .load("load under an empty name", "", fixtures + "/demo-adapters/pirate", "lora_name must not be empty"),
            .load("load under a name with a colon", "a:b", fixtures + "/demo-adapters/pirate", "reserved for the 'model:adapter' syntax"),
            .load("load under a name with a newline", "a\nb", fixtures + "/demo-adapters/pirate", "control characters"),
            .load("double load", "pirate", fixtures + "/demo-adapters/pirate", "because it is already loaded"),
            .json("load without lora_name", "/load_lora_adapter", ["lora_path": "x"], 400, "lora_name is required"),
            .json("load with a numeric lora_name", "/load_lora_adapter", ["lora_name": 5, "lora_path": "x"], 400, "lora_name must be a string"),
            .json("load with pinned a string", "/load_lora_adapter", ["lora_name": "x", "lora_path": "x", "pinned": "yes"], 400, "pinned must be a boolean"),
            // Unloads that must fail.
            .json("unload of an unknown adapter", "/unload_lora_adapter", ["lora_name": "nope"], 400, "LoRA adapter nope is not loaded"),
            .json("unload of a path-like name", "/unload_lora_adapter", ["lora_name": "../pirate"], 400, "is not loaded"),
            .json("unload without a name", "/unload_lora_adapter", [:], 400, "lora_name is required"),
            // Routes.
            .json("unknown route", "/generate_everything", ["text": "hi"], 404, "Not Found"),
        ]
    }

    /// Well-formed greedy requests that run beside the hostile ones; each must give the same
    /// tokens as when it runs alone.
    static let companions: [JSON] = [
        ["text": "Once upon a time", "sampling_params": ["temperature": 0, "max_new_tokens": 24, "ignore_eos": true]],
        ["text": "Lily and Tom went to the", "lora_path": "pirate", "stream": true,
         "sampling_params": ["temperature": 0, "max_new_tokens": 24, "ignore_eos": true]],
        ["text": "One day, a little dog", "lora_path": "dragon", "sampling_params": ["temperature": 0, "max_new_tokens": 24, "ignore_eos": true]],
        ["text": "The sun was shining and", "lora_path": "dragon", "stream": true,
         "sampling_params": ["temperature": 0, "max_new_tokens": 24, "ignore_eos": true]],
    ]

    @Test func everyHostileRequestGetsAClearClientErrorAndOthersAreUnaffected() async throws {
        let dir = try Self.makeBrokenAdapters()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try LoomServeProcess(LoomServeProcess.demoAdapters + ["--max-request-body-bytes", "65536"])
        let cases = Self.catalogue(dir: dir)
        #expect(cases.count >= 40)

        var alone: [[Int]] = []
        for c in Self.companions { alone.append(try await Self.outputIDs(server.post("/generate", c))) }

        for (i, c) in cases.enumerated() {
            let companion = Self.companions[i % Self.companions.count]
            async let hostile = server.request(c.method, c.path, body: c.body, headers: c.headers)
            async let wellFormed = server.post("/generate", companion)
            let (bad, good) = try await (hostile, wellFormed)
            #expect(bad.status == c.status, "\(c): \(bad.status) \(bad.text.prefix(300))")
            #expect(bad.text.contains(c.message), "\(c): \(bad.text.prefix(400))")
            #expect(try Self.outputIDs(good) == alone[i % alone.count], "\(c): the concurrent well-formed request changed")
        }

        // Still serving, nothing leaked, the adapters as they were.
        #expect(try await server.get("/health").status == 200)
        let (isIdle, state) = try await server.waitUntilIdle()
        #expect(isIdle, "\(state)")
        #expect(state["loaded_adapters"]?.objectValue?.keys.sorted() == ["dragon", "pirate"])
        _ = try await server.terminate()
    }

    /// Unloading an adapter while a request streams from it: new requests for it are refused at
    /// once, the stream finishes with the tokens it gives alone, and the unload then succeeds.
    @Test func unloadDuringStreaming() async throws {
        let server = try LoomServeProcess(LoomServeProcess.demoAdapters)
        let victim = TestSupport.url("Fixtures/models/stories260k/adapters/r8-all").path
        #expect(try await server.post("/load_lora_adapter", ["lora_name": "victim", "lora_path": .string(victim)]).status == 200)
        let request: JSON = ["text": "Once upon a time", "lora_path": "victim", "stream": true,
                             "sampling_params": ["temperature": 0, "max_new_tokens": 480, "ignore_eos": true]]
        let alone = try Self.outputIDs(try await server.post("/generate", request))

        let connection = try TestConnection(port: server.port)
        let isDone = DoneFlag()
        let streamed = Task {
            try await TestHTTP.onThread { () -> TestResponse in
                defer { isDone.set() }
                try connection.send(method: "POST", path: "/generate", headers: ["Content-Type": "application/json"], body: request.serialized())
                let head = try connection.readHead()
                return TestResponse(status: head.status, headers: head.headers, body: try connection.readBody(headers: head.headers))
            }
        }
        // Unload once the stream is in flight (on a fast machine it may already be over: the
        // checks below hold either way).
        _ = await eventuallyAsync(30) {
            let inFlight = (try? await server.engineState()["in_flight_by_adapter", "victim"])??.intValue ?? 0
            return inFlight > 0 || isDone.value
        }
        async let unload = server.post("/unload_lora_adapter", ["lora_name": "victim"])
        #expect(await eventuallyAsync {
            let r = try? await server.post("/generate", ["text": "hi", "lora_path": "victim"])
            return r?.status == 400 && r?.text.contains("not loaded") == true
        })
        #expect(try Self.outputIDs(try await streamed.value) == alone)
        let unloaded = try await unload
        #expect(unloaded.status == 200, "\(unloaded.text)")
        #expect(try unloaded.json()["loaded_adapters"]?.objectValue?.keys.sorted() == ["dragon", "pirate"])
        let after = try await server.post("/generate", ["text": "hi", "lora_path": "victim"])
        #expect(after.status == 400 && after.text.contains("not loaded"))
        #expect(try await server.waitUntilIdle().isIdle)
        _ = try await server.terminate()
    }

    /// The tokens of a `/generate` answer, plain or streamed.
    static func outputIDs(_ r: TestResponse) throws -> [Int] {
        guard r.status == 200 else { throw TestHTTPError.malformed("status \(r.status): \(r.text.prefix(300))") }
        if r.headers["content-type"]?.hasPrefix("text/event-stream") == true {
            let last = try #require(r.events.last { $0 != "[DONE]" })
            #expect(r.events.last == "[DONE]")
            return try #require(try JSON.parse(Array(last.utf8))["output_ids"]?.arrayValue?.compactMap(\.intValue))
        }
        return try #require(try r.json()["output_ids"]?.arrayValue?.compactMap(\.intValue))
    }

    /// Writes the broken adapter folders into a fresh temporary folder and returns its path.
    static func makeBrokenAdapters() throws -> String {
        let fm = FileManager.default
        let dir = NSTemporaryDirectory() + "loom-broken-adapters-\(UUID().uuidString)"
        let good = TestSupport.url("Fixtures/demo-adapters/pirate")
        let config = try Data(contentsOf: good.appendingPathComponent("adapter_config.json"))
        let weights = try Data(contentsOf: good.appendingPathComponent("adapter_model.safetensors"))
        func folder(_ name: String, config: Data?, weights: Data?) throws {
            let f = dir + "/" + name
            try fm.createDirectory(atPath: f, withIntermediateDirectories: true)
            if let config { try config.write(to: URL(fileURLWithPath: f + "/adapter_config.json")) }
            if let weights { try weights.write(to: URL(fileURLWithPath: f + "/adapter_model.safetensors")) }
        }
        func header(_ length: UInt64, _ json: String) -> Data {
            withUnsafeBytes(of: length.littleEndian) { Data($0) } + Data(json.utf8)
        }
        // Garbage whose first 8 bytes read as a header length above Int.max.
        try folder("corrupt", config: config, weights: Data((0..<5000).map { UInt8(truncatingIfNeeded: 255 &- $0 &* 7) }))
        try folder("truncated", config: config, weights: weights.prefix(weights.count / 2))
        try folder("oversized", config: config, weights: header(1 << 40, "{}"))
        let overflow = #"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#
        try folder("overflow", config: config, weights: header(UInt64(overflow.utf8.count), overflow))
        try folder("not-peft", config: nil, weights: nil)
        try Data(#"{"architectures": ["LlamaForCausalLM"]}"#.utf8).write(to: URL(fileURLWithPath: dir + "/not-peft/config.json"))
        var prefix = try JSONSerialization.jsonObject(with: config) as! [String: Any]
        prefix["peft_type"] = "PREFIX_TUNING"
        try folder("prefix-tuning", config: try JSONSerialization.data(withJSONObject: prefix), weights: weights)
        try folder("bad-config", config: Data("{\"r\": 8, ".utf8), weights: weights)
        return dir
    }
}

/// Set once, read from any thread.
final class DoneFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stored = false
    func set() { lock.withLock { stored = true } }
    var value: Bool { lock.withLock { stored } }
}

/// Polls an async condition until it holds or `seconds` pass.
func eventuallyAsync(_ seconds: Double = 60, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await condition()
}
